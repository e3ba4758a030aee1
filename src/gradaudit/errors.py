"""The one exception type that means "the user's input is wrong", not "gradaudit has a bug"."""


class UsageError(ValueError):
    """Bad input (an argument, a file, a run folder, a missing optional package): the message is the whole
    story, so the command line prints it as one ``gradaudit: error:`` line. Any other exception is a bug
    of ours and keeps its traceback."""
