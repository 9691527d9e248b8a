"""The sha256 of a file, read in chunks: songs, sample files, checkpoints and adapters can be hundreds of MB."""

import hashlib
from pathlib import Path


def file_hash(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 hex digest of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
