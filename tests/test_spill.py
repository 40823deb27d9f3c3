"""Spilled buckets: equal keys together, order kept, the temporary files removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crossborder import spill
from crossborder.spill import Spill, value_hashes

DTYPE = [("key", "<u8"), ("seq", "<i8")]


def _records(keys: list[int], first: int = 0) -> np.ndarray:
    records = np.empty(len(keys), dtype=DTYPE)
    records["key"], records["seq"] = keys, np.arange(first, first + len(keys))
    return records


def test_equal_keys_share_a_bucket_and_keep_their_order(monkeypatch):
    monkeypatch.setattr(spill, "ROWS_PER_BUCKET", 4)
    keys = [7, 3, 7, 12, 3, 5, 7, 0, 12, 9]
    with Spill(20, DTYPE, "key") as bucketed:
        assert bucketed.count == 5
        bucketed.add(_records(keys))
        bucketed.add(_records(keys, first=len(keys)))
        buckets = list(bucketed.buckets())
    seen = np.concatenate(buckets)
    assert sorted(seen["seq"].tolist()) == list(range(20))  # every record, once
    for bucket in buckets:
        assert len(set(bucket["key"] % 5)) == 1
        for key in set(bucket["key"].tolist()):
            seq = bucket["seq"][bucket["key"] == key]
            assert (np.diff(seq) > 0).all()  # in the order added
    owners = {key: i for i, b in enumerate(buckets) for key in b["key"].tolist()}
    assert len(owners) == len(set(keys))  # no key in two buckets


def test_the_spill_folder_is_removed_afterwards():
    with Spill(10, DTYPE, "key") as bucketed:
        bucketed.add(_records([1, 2, 3]))
        folder = Path(bucketed._folder.name)
        assert any(folder.iterdir())
    assert not folder.exists()


def test_value_hashes_treat_null_as_one_value_across_chunks():
    hashes = value_hashes(pa.chunked_array([["a", None, "b"], ["a", None]]))
    assert hashes[0] == hashes[3] and hashes[1] == hashes[4]
    assert len({hashes[0], hashes[1], hashes[2]}) == 3
    assert (value_hashes(pa.array(["b", "a"])) == hashes[[2, 0]]).all()  # same in every file


@pytest.mark.parametrize(
    "values",
    [["a", None, "None", "", "车"], [7, None, 0, -1, 2**40], [1.5, None, float("nan"), 0.0, -0.0]],
)
def test_value_hashes_are_the_same_with_or_without_nulls_and_either_way(values):
    """A file with a null and one without must hash a value alike: a column of integers
    with a null must not be hashed as floats."""
    with_nulls = pa.array(values)
    without = pa.array([v for v in values if v is not None], with_nulls.type)
    for distinct_first in (True, False):
        hashes = value_hashes(with_nulls, distinct_first=distinct_first)
        assert (value_hashes(without, distinct_first=distinct_first) == np.delete(hashes, 1)).all()
        assert hashes[1] not in np.delete(hashes, 1)  # null is a value of its own
    assert (value_hashes(with_nulls) == value_hashes(with_nulls, distinct_first=False)).all()
