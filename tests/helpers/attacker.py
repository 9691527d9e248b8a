"""What an attacker's edited run folder or recipe would make Side-Step call: it leaves a marker file, so a test
can assert that it never ran."""

import os
from pathlib import Path

MARKER_ENV = "SIDESTEP_TEST_MARKER"


def payload(*args, **kwargs):
    Path(os.environ[MARKER_ENV]).write_text("the attacker's code ran")
    return "pwned"
