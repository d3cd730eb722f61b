"""The one exception type the CLI turns into a one-line error and exit code 2."""

from __future__ import annotations


class CpcdrlError(Exception):
    """A user-facing error: bad input, missing file, unreachable host...

    The message is one line and says what is wrong and, where it can, how to fix it.
    """
