"""A write that failed for want of space or permission, as one `OSError` naming what could not be written, whichever
library was writing: Python's own files, `torch.save` (a RuntimeError from its zip writer on a full disk) or
safetensors (its Rust I/O error, with the errno in its text). Entry points then print `describe` as one line.
"""

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Iterator, Optional

from sidestep.errors import first_line

FULL, READ_ONLY, NO_PATH = (errno.ENOSPC, errno.EDQUOT), (errno.EROFS, errno.EACCES, errno.EPERM), (errno.ENOENT, errno.ENOTDIR)
WRITE_ERRNOS = FULL + READ_ONLY + NO_PATH
TORCH_SHORT_WRITE = ("unexpected pos", "file write failed")  # torch.save's zip writer when the disk fills up
RUST_OS_ERROR = re.compile(r"Os \{ code: (\d+)")


def is_write_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in WRITE_ERRNOS


def write_error(err: BaseException, target: Path) -> Optional[OSError]:
    """`err` as `OSError(errno, strerror, target)` when it says the disk is full, read-only or the path is gone."""
    code = getattr(err, "errno", None) if isinstance(err, OSError) else None
    text = str(err)
    if code is None and isinstance(err, RuntimeError) and any(s in text for s in TORCH_SHORT_WRITE):
        code = errno.ENOSPC
    match = RUST_OS_ERROR.search(text) if code is None else None
    if match:
        code = int(match.group(1))
    return OSError(code, os.strerror(code), str(target)) if code in WRITE_ERRNOS else None


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """A failure to write inside the block is raised as `OSError(errno, strerror, target)`; other errors pass."""
    try:
        yield
    except Exception as err:
        converted = write_error(err, target)
        if converted is None:
            raise
        raise converted from err


def describe(err: BaseException) -> str:
    """The one-line reason for a failure; a full disk or a folder that refuses writing says what to do."""
    if not is_write_error(err) or not err.filename:
        return first_line(err)
    advice = {**dict.fromkeys(FULL, "free some disk space or train into another folder"),
              **dict.fromkeys(READ_ONLY, "train into a folder you may write"),
              **dict.fromkeys(NO_PATH, "check the path")}[err.errno]
    verb = "cannot reach" if err.errno in NO_PATH else "cannot write"
    return f"{verb} {err.filename}: {err.strerror}; {advice} (hydra.run.dir=...)"
