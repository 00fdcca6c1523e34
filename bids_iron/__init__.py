"""bids-iron: brain iron (R2*, local field shift, QSM) from multi-echo GRE, as a BIDS-App."""

__version__ = "0.1.0"
CODE_URL = "https://github.com/bids-iron/bids-iron"
