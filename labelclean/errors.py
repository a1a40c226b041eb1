"""The one exception type users see.

Every problem with the user's input or options is raised as
:class:`LabelcleanError` with a one-line message that names the problem; the CLI
prints it and exits with status 2 instead of showing a traceback. Anything else
that escapes is a bug in labelclean.
"""


class LabelcleanError(Exception):
    """A problem with the input or the options, explained in one line."""


class WithheldWarning(UserWarning):
    """A run ended without convincing phase-II evidence and flagged nothing
    (``result.verdict`` says why); pipelines can turn it into an error with
    ``warnings.simplefilter("error", WithheldWarning)``."""
