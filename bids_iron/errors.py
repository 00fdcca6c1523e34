"""Errors that the command line turns into a one-line message (no traceback)."""


class BidsIronError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The message names the file (or option) at fault and says how to fix it.
    """


class InputError(BidsIronError):
    """An input file is missing, unreadable or inconsistent."""
