"""The error every layer raises for bad user input, below everything that reads that input."""


class ConfigError(ValueError):
    """A problem with the user's input: reported as one line, exit code 2."""
