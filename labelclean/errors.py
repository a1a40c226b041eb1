"""The one exception type users see.

Every problem with the user's input or options is raised as
:class:`LabelcleanError` with a one-line message that names the problem; the CLI
prints it and exits with status 2 instead of showing a traceback. Anything else
that escapes is a bug in labelclean.

The one line is enforced here, not at every ``raise``: a message quoting the
user's data (a 20 MB CSV cell, a file name with a newline) is shown on one line
of at most :data:`MAX_MESSAGE` characters (:func:`one_line`).
"""

#: The longest message a :class:`LabelcleanError` shows, in characters.
MAX_MESSAGE = 1000


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one bounded line: line breaks shown as ``\\n``, control
    characters escaped, and the middle of an over-long line cut (``…``)."""
    s = str(text)
    if len(s) > 4 * limit:  # never escape megabytes only to cut them
        s = s[: 2 * limit] + s[-2 * limit:]
        cut = True
    else:
        cut = False
    s = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in s)
    if len(s) > limit or cut:
        half = (limit - 1) // 2
        s = s[:half] + "…" + s[-half:]
    return s


class LabelcleanError(Exception):
    """A problem with the input or the options, explained in one line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class WithheldWarning(UserWarning):
    """A run ended without convincing phase-II evidence and flagged nothing
    (``result.verdict`` says why); pipelines can turn it into an error with
    ``warnings.simplefilter("error", WithheldWarning)``."""
