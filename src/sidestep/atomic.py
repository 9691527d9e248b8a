"""Write a file or folder under a temporary name and rename it into place, so a crash never leaves half of one.

Before the rename, the contents and the directory entries are flushed to disk (fsync), so the promise also holds
for a power cut: after it, the target is either the old version or the complete new one. A full or read-only disk
is raised as an `OSError` naming the target, whichever library was writing (`write_errors`).
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from sidestep.write_errors import writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Flush a file's contents, or a folder's entries, to disk. Windows cannot open a folder for that: skipped."""
    path = Path(path)
    if path.is_dir() and sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (deepest first), then `root` itself."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def publish(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` onto `target` durably: contents first, then the parent's new entry."""
    if tmp.is_dir():
        fsync_tree(tmp)
    else:
        fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target` whole."""
    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private; the finished one gets the usual permissions
            if target.exists():
                os.replace(target, old)
            publish(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # also frees the space a full disk needs for the run's status
            if old.exists() and not target.exists():
                os.replace(old, target)
            raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`. `durable=False`: renamed without
    waiting for the disk (fsync), for a file rewritten often whose last version a power cut may cost."""
    target = Path(target)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # temporary files are private; the finished one gets the usual permissions
            if durable:
                publish(tmp, target)
            else:
                os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def save_safetensors(tensors, target: Path, metadata=None) -> None:
    """`safetensors.torch.save`, atomic, with the usual permissions (its `save_file` writes a private 0600 file),
    and the same bytes for the same tensors and metadata."""
    from safetensors.torch import save  # here: it loads torch, which the run records and reports never need

    with atomic_file(target) as tmp:
        tmp.write_bytes(sorted_metadata(save(tensors, metadata=metadata)))


def sorted_metadata(data: bytes) -> bytes:
    """A safetensors file with its header's `__metadata__` in key order: the library writes a hash map, whose order
    changes from one call to the next, so two identical exports would differ byte for byte. Tensor offsets count
    from the end of the header, so they hold whatever its length; it stays padded to 8 bytes, as the format asks."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if len(header.get("__metadata__") or {}) < 2:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text = text.ljust(-(-len(text) // 8) * 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]
