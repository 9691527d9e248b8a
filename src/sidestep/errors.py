"""The one exception type a user ever sees: it carries a single line saying what to fix."""


class SidestepError(Exception):
    """Bad input (config value, file, folder). Entry points print it as one line and exit non-zero."""


class ConfigError(SidestepError):
    """A config value is out of range or inconsistent; the message names the key."""


class DataError(SidestepError):
    """A dataset folder or sample file is unusable; the message names the file."""
