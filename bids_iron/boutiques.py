"""A Boutiques descriptor of the ``bids-iron`` command, generated from its argument parser.

``python -m bids_iron.boutiques > examples/bids-iron.boutiques.json`` refreshes the copy
kept in the repository (a test checks that they agree), so the descriptor never drifts from
the command line.
"""

import argparse
import json
import sys
from pathlib import Path

from . import CODE_URL, __version__


def _input(action):
    """One Boutiques input from one argparse action (None for help/version)."""
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    key = action.dest.upper()
    name = (max(action.option_strings, key=len).lstrip("-").replace("-", " ")
            if action.option_strings else action.dest.replace("_", " "))
    entry = {"id": action.dest, "name": name,
             "description": (action.help or "").replace("%(default)s", str(action.default)),
             "value-key": f"[{key}]", "optional": not action.required and bool(action.option_strings)}
    if action.option_strings:
        entry["command-line-flag"] = max(action.option_strings, key=len)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        entry["type"] = "Flag"
        return entry
    kind = action.type
    if kind is Path:
        entry["type"] = "File"
        if action.nargs in ("+", "*"):
            entry["list"] = True
        return entry
    entry["type"] = "Number" if kind in (int, float) or getattr(kind, "__name__", "") in (
        "_positive_int", "_field_strength") else "String"
    if entry["type"] == "Number" and (kind is int or getattr(kind, "__name__", "") == "_positive_int"):
        entry["integer"] = True
    if action.choices:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1:
        entry["list"] = True
    if action.default not in (None, argparse.SUPPRESS, (), []):
        entry["default-value"] = list(action.default) if isinstance(action.default, tuple) \
            else str(action.default) if entry["type"] == "String" else action.default
    return entry


def descriptor():
    """The Boutiques descriptor (dict) of ``bids-iron``."""
    from .cli import build_parser

    parser = build_parser()
    inputs = [i for i in (_input(a) for a in parser._actions) if i is not None]
    return {
        "name": "bids-iron",
        "tool-version": __version__,
        "description": parser.description,
        "url": CODE_URL,
        "schema-version": "0.5",
        "command-line": "bids-iron " + " ".join(i["value-key"] for i in inputs),
        "container-image": {"type": "docker", "image": "bids-iron/bids-iron:" + __version__},
        "inputs": inputs,
        "output-files": [{"id": "derivatives", "name": "BIDS derivatives",
                          "path-template": "[OUTPUT_DIR]", "optional": False}],
    }


def main():
    json.dump(descriptor(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
