"""The one base class of JSQA's errors about inputs, settings and environment.

The command line prints a :class:`JSQAError` as one line and exits 2; any other
exception is a bug and keeps its traceback.
"""


class JSQAError(Exception):
    """An error about the user's input, settings or environment, not a bug."""
