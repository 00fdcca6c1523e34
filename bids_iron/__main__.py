"""``python -m bids_iron``: the same as the ``bids-iron`` command."""

import sys

from .cli import main

sys.exit(main())
