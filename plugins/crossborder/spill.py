"""Whole-partition checks in flat memory: rows spilled to disk in buckets by a key.

A check that must see every row of a partition together (ids unique across files, a
vehicle's odometer over the day, distinct vehicles per k-anonymity group) writes small
fixed-size records for each file to temporary bucket files, chosen by a 64-bit key, then
reads one bucket at a time. Equal keys land in the same bucket, so a bucket holds
everything the check needs about its keys, and memory follows the bucket's size, not
the partition's. A partition up to ``ROWS_PER_BUCKET`` rows is one bucket.

The records are derived from the data (hashes, times, values): the files are written in
the system's temporary folder of the China-side worker and removed when the check ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROWS_PER_BUCKET = 2_000_000  # ~32-48 MB of records per bucket for the checks here


def total_rows(files: list[str]) -> int:
    """Rows in the files, from their Parquet footers (nothing else is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(file).metadata.num_rows for file in files)


class Spill:
    """Records (a numpy structured dtype) bucketed by their ``key`` field, on disk."""

    def __init__(self, rows: int, dtype: Any, key: str) -> None:
        import numpy as np

        self.dtype = np.dtype(dtype)
        self.key = key
        self.count = max(1, -(-rows // ROWS_PER_BUCKET))
        self._folder = tempfile.TemporaryDirectory(prefix="crossborder-spill-")
        self._paths = [Path(self._folder.name) / f"bucket-{i:04d}" for i in range(self.count)]

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *_: object) -> None:
        self._folder.cleanup()

    def add(self, records: Any, part: int = 0) -> None:
        """Append records to their buckets, keeping their order within each bucket.

        Each ``part`` has files of its own, so worker processes (forked with this object)
        can add theirs at once; a bucket reads its parts in part order.
        """
        import numpy as np

        bucket = records[self.key] % np.uint64(self.count)
        order = np.argsort(bucket, kind="stable")
        ends = np.searchsorted(bucket[order], np.arange(1, self.count + 1, dtype=np.uint64))
        start = 0
        for path, end in zip(self._paths, ends, strict=True):
            if end > start:
                with path.with_suffix(f".{part:06d}").open("ab") as sink:
                    records[order[start:end]].tofile(sink)
            start = end

    def buckets(self) -> Iterator[Any]:
        """Each bucket's records in the order they were added; empty buckets skipped."""
        import numpy as np

        for path in self._paths:
            parts = sorted(path.parent.glob(f"{path.name}.*"))
            if parts:
                yield np.concatenate([np.fromfile(p, dtype=self.dtype) for p in parts])


def records(dtype: Any, **fields: Any) -> Any:
    """A numpy structured array of ``dtype`` from equally long columns (or scalars)."""
    import numpy as np

    length = max((len(v) for v in fields.values() if np.ndim(v)), default=0)
    found = np.empty(length, dtype=dtype)
    for name, values in fields.items():
        found[name] = values
    return found


def value_hashes(values: Any, *, distinct_first: bool = True) -> Any:
    """64-bit hashes of an Arrow column (null is a value), the same for a value in every
    file. ``distinct_first`` hashes each distinct value once, which pays when values
    repeat (VINs); for columns of distinct ids, hashing every row is cheaper."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not distinct_first:
        return _hashes(values)
    encoded = pc.dictionary_encode(values, null_encoding="encode")
    return _hashes(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]


_NULL_HASH = 2**64 - 1  # as pandas hashes a missing value


def _hashes(values: Any) -> Any:
    """pandas' hash of each value, straight from the values: pandas' Series hashing would
    first find the distinct values again (twice the time on a column of ids)."""
    import numpy as np
    import pandas as pd

    if not values.null_count:  # nulls would turn integers into floats, which hash otherwise
        return pd.util.hash_array(values.to_numpy(zero_copy_only=False), categorize=False)
    hashes = np.full(len(values), _NULL_HASH, np.uint64)
    hashes[values.is_valid().to_numpy(zero_copy_only=False)] = _hashes(values.drop_null())
    return hashes
