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


def to_log_file(message: str, level: int = logging.INFO, name: str = "sidestep") -> None:
    """A record for the log files only (`<run>/train.log`), of what the console shows its own way (the setup table,
    the progress bar, the last line on stderr), so the log holds everything the console said."""
    record = logging.getLogger(name).makeRecord(name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def say(text: str) -> None:
    """One line of Side-Step's own: as written (a path with brackets is not markup) and never folded, so a path in
    it can be copied whole."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


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
def exit_on_user_error(log_file: bool = True) -> Iterator[None]:
    """Bad input becomes one line on stderr and exit code 2 (an interrupted run: its own message and 130/143);
    Ctrl-C outside training exits 130. Bugs still raise. `log_file`: the line also ends the run's log (not outside a
    run: after a sweep, the last job's log is still open)."""
    try:
        yield
    except SidestepError as err:
        log.debug("user error", exc_info=True)
        code = getattr(err, "exit_code", 2)
        message = plain(str(err))
        level = logging.ERROR if code == 2 else logging.WARNING
        _say_last(f"error: {message}" if code == 2 else message, level, log_file)
        sys.exit(code)
    except KeyboardInterrupt:
        _say_last("interrupted", logging.WARNING, log_file)
        sys.exit(130)


def _say_last(line: str, level: int, log_file: bool) -> None:
    print(line, file=sys.stderr)
    if log_file:
        to_log_file(line, level)
