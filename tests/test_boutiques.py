"""The Boutiques descriptor in examples/ matches the command line."""

import json
from pathlib import Path

from bids_iron.boutiques import descriptor
from bids_iron.cli import build_parser

COPY = Path(__file__).resolve().parents[1] / "examples" / "bids-iron.boutiques.json"


def test_descriptor_lists_every_option():
    ids = {i["id"] for i in descriptor()["inputs"]}
    for action in build_parser()._actions:
        if action.dest not in ("help", "version"):
            assert action.dest in ids, action.dest
    flags = {i.get("command-line-flag") for i in descriptor()["inputs"]}
    assert "--participant-label" in flags and "--templateflow-home" in flags


def test_committed_copy_is_current():
    assert json.loads(COPY.read_text()) == json.loads(json.dumps(descriptor())), (
        "regenerate with: python -m bids_iron.boutiques > examples/bids-iron.boutiques.json")
