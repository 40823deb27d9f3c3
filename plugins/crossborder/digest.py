"""SHA-256 of files, read in 1 MiB chunks: the one hashing helper every step shares."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path | str) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file, without holding it in memory."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
