"""Encryption throughput on this machine, next to a plain copy of the same bytes.

    PYTHONPATH=plugins .venv/bin/python scripts/bench_encryption.py [--mib 256]

Absolute MB/s depend on the machine; the ratio to a plain copy is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from crossborder import crypto


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the test file in MiB")
    size = parser.parse_args().mib << 20
    private, public = crypto.generate_recipient_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        plain, copied = Path(tmp) / "plain", Path(tmp) / "copy"
        encrypted, decrypted = Path(tmp) / "encrypted", Path(tmp) / "decrypted"
        with plain.open("wb") as fh:
            for _ in range(size >> 20):
                fh.write(os.urandom(1 << 20))
        results = {
            "plain copy": _timed(lambda: shutil.copyfile(plain, copied)),
            "encrypt": _timed(lambda: crypto.encrypt_file(plain, encrypted, public)),
            "decrypt": _timed(lambda: crypto.decrypt_file(encrypted, decrypted, private)),
        }
        assert decrypted.read_bytes() == plain.read_bytes()
    floor = results["plain copy"]
    print(f"{size >> 20} MiB, {crypto.ALGORITHM.name}, frames of {crypto.FRAME_LENGTH >> 20} MiB")
    for name, seconds in results.items():
        rate = size / seconds / 1e6
        print(f"  {name:<10} {rate:8.1f} MB/s  {seconds:6.2f} s  {seconds / floor:5.1f}x copy")


if __name__ == "__main__":
    main()
