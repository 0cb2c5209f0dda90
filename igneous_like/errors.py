"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input: a missing layer, wrong mip, bad URL... Printed as one line, never a traceback."""


class TaskError(Exception):
    """A task failed for a reason worth naming (a corrupt chunk, a missing file)."""
