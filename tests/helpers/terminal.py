"""A command in a pseudo-terminal (pexpect), for what only a terminal shows: questions, live displays."""

HANG_GUARD = 600  # seconds: never what a test waits for (each waits on the text it expects), only a bound on a wrong
# expectation, which would otherwise wait for ever and hold CI to its own limit
