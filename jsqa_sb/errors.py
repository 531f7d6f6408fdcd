"""The one base class of JSQA's errors about inputs, settings and environment.

The command line prints a :class:`JSQAError` as one line and exits 2; any other
exception is a bug and keeps its traceback.
"""


class JSQAError(Exception):
    """An error about the user's input, settings or environment, not a bug."""


def one_line(err: BaseException) -> str:
    r"""The message of ``err`` on one line (the exception's name if it has none).

    Example
    -------
    >>> one_line(ValueError("bad\n  value"))
    'bad value'
    """
    return " ".join(str(err).split()) or type(err).__name__


def signal_name(signum: int) -> str:
    """The name of a signal number (``SIGTERM``), or ``signal N`` for an unknown one.

    Example
    -------
    >>> signal_name(15)
    'SIGTERM'
    """
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
