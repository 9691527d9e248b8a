"""Terminal output: one rich console, plain mode when asked or when output is not a terminal."""

import contextlib
import logging
import os
import sys
from typing import Iterator

import rich
from rich.logging import RichHandler

from sidestep.errors import SidestepError, plain

# rich's global console: `rich.reconfigure` changes its settings in place, so every module's reference stays good
console = rich.get_console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    rich.reconfigure(width=200)  # piped into a log file: do not wrap tables at 80 columns
log = logging.getLogger("sidestep")
SKIP_HINT = "(ui.yes=true skips this question)"  # every confirmation says how not to be asked


def log_handler() -> logging.Handler:
    """Console log handler (Hydra's job_logging builds it): rich in a terminal, one plain line per record otherwise."""
    if console.is_terminal:
        return RichHandler(console=console, show_path=False, show_time=False, markup=False)
    return _plain_handler()


def _plain_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    return handler


def is_plain(requested: bool) -> bool:
    return requested or not console.is_terminal


def use_plain(requested: bool) -> bool:
    """`ui.plain=true` (the seed's `--plain`) makes a terminal get what a pipe gets: no colour or styles, plain log
    lines (and, in the callers, no live display). Returns whether output is plain."""
    if requested and console.is_terminal:
        rich.reconfigure(color_system=None)  # rich then writes text without any escape codes
        root = logging.getLogger()
        root.handlers = [_plain_handler() if isinstance(h, RichHandler) else h for h in root.handlers]
    return is_plain(requested)


def is_interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty() and console.is_terminal


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit code 2 (an interrupted run: its own message and 130/143);
    Ctrl-C outside training exits 130. Bugs still raise."""
    try:
        yield
    except SidestepError as err:
        log.debug("user error", exc_info=True)
        code = getattr(err, "exit_code", 2)
        message = plain(str(err))
        print(f"error: {message}" if code == 2 else message, file=sys.stderr)
        sys.exit(code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
