"""Errors that are the user's to fix: bad input, missing data, unreachable storage."""


class MtgError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The message names the file, field or value at fault and, where there is one, what to do.
    """
