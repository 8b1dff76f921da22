"""Errors in what the user gave. The command line prints these as one line (exit status 1);
any other exception is a failure of the program and keeps its traceback (exit status 2)."""


class UserError(ValueError):
    """Bad input: a file, image, checkpoint, setting, option or backend choice. One-line message."""


class ConfigError(UserError):
    """A model, training or data setting out of range, unknown, or of the wrong type."""


class DatasetError(UserError):
    """A dataset folder that is missing, empty or inconsistent."""
