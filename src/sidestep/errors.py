"""The one exception type a user ever sees: it carries a single line saying what to fix."""

import re

# CSI/OSC escape sequences (colours, cursor moves) and other control characters a library may put in a message.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")


class SidestepError(Exception):
    """Bad input (config value, file, folder). Entry points print it as one line and exit non-zero."""


class ConfigError(SidestepError):
    """A config value is out of range or inconsistent; the message names the key."""


class DataError(SidestepError):
    """A dataset folder or sample file is unusable; the message names the file."""


class Interrupted(SidestepError):
    """Training stopped on a signal after saving; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def plain(text: str) -> str:
    """`text` without terminal escapes or control characters (newlines kept), safe to print to any console."""
    return _ESCAPES.sub("", text.encode("utf-8", "replace").decode("utf-8"))


def first_line(err: BaseException) -> str:
    """The whole first non-empty line of an exception's message, as plain text (never cut mid-word)."""
    lines = [line.strip() for line in plain(str(err)).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
