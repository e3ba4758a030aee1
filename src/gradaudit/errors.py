"""The exception types a caller may want to tell apart: bad input (``UsageError``) and a method's non-finite result."""


class UsageError(ValueError):
    """Bad input (an argument, a file, a run folder, a missing optional package): the message is the whole
    story, so the command line prints it as one ``gradaudit: error:`` line. Any other exception is a bug
    of ours and keeps its traceback."""


class NonFiniteAttribution(ValueError):
    """A method's attribution holds a NaN or an infinity; ``example`` is the first such row of the batch it was
    given, so a caller that explains a dataset in batches can name the dataset's row."""

    def __init__(self, message: str, example: int):
        super().__init__(message)
        self.example = example
