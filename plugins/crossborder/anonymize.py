"""Apply a dataset's policy to each source file and stage the result in China.

Only the columns the policy allows are written (allow-list); each goes through its
transform. Files are processed row group by row group (only the pseudonymized ids are
read for a whole file at once), so memory stays flat however large the partition is;
files are staged in worker processes (``crossborder.parallel``).
Rows in a grid cell that overlaps a sensitive area are dropped; when the policy says so,
rows in k-anonymity groups smaller than k (counted over all files first) are dropped
too. Staged files are the exact plaintext that will be encrypted, and the returned
evidence says what was done to them. Proving that it held is ``verify``'s job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from crossborder.digest import sha256_file
from crossborder.errors import KeyUnavailable, PartitionInvalid
from crossborder.extract import Extract, partition_path
from crossborder.parallel import map_runs
from crossborder.policy import (
    TIME_UNITS,
    ColumnRule,
    Policy,
    sensitive_areas_bytes,
)
from crossborder.spill import Spill, records, total_rows, value_hashes

PSEUDONYM_BYTES = 16  # 128 bits of HMAC-SHA256: no collisions among any realistic fleet
PSEUDONYM_LENGTH = 26  # base32 of 16 bytes, padding removed
MIN_KEY_BYTES = 32
SHANGHAI_TZ = "Asia/Shanghai"
_CELL_STRIDE = 1 << 32  # (lat cell, lon cell) packed into one int64 code


@dataclass(frozen=True)
class StagedFile:
    name: str
    path: str
    rows: int
    size: int
    sha256: str


@dataclass(frozen=True)
class Staged:
    dataset: str
    day: str
    policy_version: str
    columns: tuple[str, ...]
    files: tuple[StagedFile, ...]
    anonymization: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows}


def staging_path(staging_root: Path, dataset: str, day: str) -> Path:
    return partition_path(staging_root, dataset, day)  # same layout as the source


# --- pseudonyms ---------------------------------------------------------------------


def pseudonym(key: bytes, namespace: str, value: str) -> str:
    """Keyed, stable pseudonym: the same value gives the same pseudonym in every dataset
    and day under one key; without the key (which stays in China) it cannot be reversed.
    """
    digest = hmac.new(key, f"{namespace}\x00{value}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:PSEUDONYM_BYTES]).decode("ascii").rstrip("=").lower()


_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def pseudonyms(key: bytes, namespace: str, values: list[str]) -> list[str]:
    """``pseudonym`` of many values at once: one HMAC call each, base32 in numpy."""
    import numpy as np

    if not values:
        return []
    prefix = f"{namespace}\x00".encode()
    digests = b"".join(
        hmac.digest(key, prefix + value.encode(), "sha256")[:PSEUDONYM_BYTES] for value in values
    )
    # 16 bytes padded to 20 are 32 five-bit groups; 26 carry the digest, as b32encode.
    padded = np.zeros((len(values), 20), dtype=np.uint8)
    padded[:, :PSEUDONYM_BYTES] = np.frombuffer(digests, np.uint8).reshape(-1, PSEUDONYM_BYTES)
    groups = np.unpackbits(padded, axis=1).reshape(len(values), 32, 5)
    indices = groups @ np.array([16, 8, 4, 2, 1], dtype=np.uint8)
    letters = np.frombuffer(_BASE32.encode(), np.uint8)[indices[:, :PSEUDONYM_LENGTH]]
    text = letters.tobytes().decode("ascii")
    return [text[i : i + PSEUDONYM_LENGTH] for i in range(0, len(text), PSEUDONYM_LENGTH)]


def pseudonymization_key(raw: bytes | None, dataset: str | None = None) -> bytes:
    """The key as every caller must use it: surrounding whitespace (a trailing newline
    from a secret file) removed, and long enough that it cannot be guessed offline."""
    key = (raw or b"").strip()
    if not key:
        raise KeyUnavailable("pseudonymization_key is not configured", dataset=dataset)
    if len(key) < MIN_KEY_BYTES:
        raise KeyUnavailable(
            f"pseudonymization_key has {len(key)} bytes; at least {MIN_KEY_BYTES} are required",
            dataset=dataset,
        )
    return key


def pseudonym_key_id(key: bytes) -> str:
    """Names the key in the evidence (so a key rotation is visible) without revealing it."""
    return "hmac-sha256:" + hmac.new(key, b"key id", hashlib.sha256).hexdigest()[:16]


# --- transforms: one column in, one column out -----------------------------------------


@dataclass
class _Findings:
    """What staging found, per file and then for the partition."""

    scrubbed: Counter[str] = field(default_factory=Counter)
    rows_in_sensitive_areas: int = 0
    rows_suppressed: int = 0

    def add(self, other: _Findings) -> None:
        self.scrubbed.update(other.scrubbed)
        self.rows_in_sensitive_areas += other.rows_in_sensitive_areas
        self.rows_suppressed += other.rows_suppressed


@dataclass
class _Run:
    """One partition's anonymization: settings shared by its files, and what was found."""

    policy: Policy
    key: bytes | None
    areas: list[Any]
    blocked_cells: Any = None  # codes of the grid cells that overlap a sensitive area
    pseudonyms: dict[str, _Pseudonyms] = field(default_factory=dict)
    small_groups: Any = None  # hashes of the k-anonymity groups whose rows are suppressed
    found: _Findings = field(default_factory=_Findings)


def _keep(rule: ColumnRule, column: Any, run: _Run) -> Any:
    return column


@dataclass
class _Pseudonyms:
    """The values of one namespace pseudonymized so far, and their pseudonyms (Arrow)."""

    values: Any
    names: Any


def _pseudonymize(rule: ColumnRule, column: Any, run: _Run) -> Any:
    """The column's pseudonyms, dictionary-encoded (``_plain`` decodes them). Each distinct
    value is HMACed once per run of files; known values are found with Arrow's hash
    lookup, not in Python."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    assert run.key is not None  # anonymize_partition checked it before any file
    namespace = rule.options.get("namespace", rule.name)
    encoded = column.combine_chunks().dictionary_encode()
    dictionary = encoded.dictionary.cast(pa.string())
    known = run.pseudonyms.get(namespace) or _Pseudonyms(dictionary[:0], pa.array([], pa.string()))
    position = pc.index_in(dictionary, value_set=known.values)
    unknown = pc.is_null(position).to_numpy(zero_copy_only=False)
    position = position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if unknown.any():
        new = dictionary.filter(pa.array(unknown))
        position[unknown] = len(known.values) + np.arange(len(new))
        names = pa.array(pseudonyms(run.key, namespace, new.to_pylist()), pa.string())
        known = _Pseudonyms(
            pa.concat_arrays([known.values, new]), pa.concat_arrays([known.names, names])
        )
        run.pseudonyms[namespace] = known
    return pa.DictionaryArray.from_arrays(encoded.indices, known.names.take(pa.array(position)))


def _generalize_time(rule: ColumnRule, column: Any, run: _Run) -> Any:
    """Floor in Shanghai time (a day starts at Shanghai midnight), nulls kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type) and column.type.tz not in (None, SHANGHAI_TZ):
        column = column.cast(pa.timestamp(column.type.unit, tz=SHANGHAI_TZ))
    unit, multiple = TIME_UNITS[rule.options["unit"]]
    return pc.floor_temporal(column, multiple=multiple, unit=unit)


def _generalize_location(rule: ColumnRule, column: Any, run: _Run) -> Any:
    """Floor to the grid, rounded to the grid's decimals so values print exactly (31.23)."""
    from decimal import Decimal

    import pyarrow.compute as pc

    grid = rule.options["grid_deg"]
    decimals = max(0, -int(Decimal(str(grid)).as_tuple().exponent))
    cells = pc.floor(pc.add(pc.divide(column, grid), 1e-9))  # as geo.cell_index: same cell
    # cell * (grid * 10^d) is a whole number; dividing it by 10^d gives the double closest
    # to the decimal (31.22), where multiplying by the grid would give 31.220000000000002.
    scaled = pc.round(pc.multiply(cells, grid * 10**decimals))
    return pc.divide(scaled, float(10**decimals)).cast(column.type)


def _bucket(rule: ColumnRule, column: Any, run: _Run) -> Any:
    """The lower bound of the value's range: 123,456 km in 10,000-km buckets is 120,000."""
    import pyarrow as pa
    import pyarrow.compute as pc

    width = rule.options["width"]
    buckets = pc.floor(pc.divide(column.cast(pa.float64()), width))
    return pc.multiply(buckets, width).cast(column.type)


def _scrub_text(rule: ColumnRule, column: Any, run: _Run) -> Any:
    from crossborder.scrub import scrub_array

    scrubbed, counts = scrub_array(column)
    run.found.scrubbed.update(counts)
    return scrubbed


# The transforms the pipeline runs ("drop" is simply not written).
TRANSFORMS: dict[str, Callable[[ColumnRule, Any, _Run], Any]] = {
    "keep": _keep,
    "pseudonymize": _pseudonymize,
    "generalize_time": _generalize_time,
    "generalize_location": _generalize_location,
    "bucket": _bucket,
    "scrub_text": _scrub_text,
}


# Transforms run on a file's whole column at once: a call costs the ids seen so far (the
# memo's hash lookup), not only its rows, so once per file rather than per row group.
WHOLE_FILE_TRANSFORMS = frozenset({"pseudonymize"})


def _transform(rule: ColumnRule, table: Any, run: _Run) -> Any:
    return TRANSFORMS[rule.transform](rule, table[rule.name], run)


def _plain(column: Any) -> Any:
    """A column as staged: dictionary-encoded transform results decoded to their values."""
    import pyarrow as pa

    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


# --- the partition ----------------------------------------------------------------------


def anonymize_partition(
    policy: Policy, extract: Extract, staging_root: Path, pseudonym_key: bytes | None = None
) -> Staged:
    """Write the policy's view of every source file to the CN staging folder."""
    from crossborder.geo import parse_sensitive_areas

    pseudonymizes = any(c.transform == "pseudonymize" for c in policy.columns)
    key = pseudonymization_key(pseudonym_key, policy.dataset) if pseudonymizes else None
    areas = []
    if policy.sensitive_areas:
        data = sensitive_areas_bytes(policy)
        areas = parse_sensitive_areas(data, str(policy.sensitive_areas))
    out_dir = staging_path(staging_root, extract.dataset, extract.day)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f.name for f in extract.files}
    for stale in out_dir.glob("part-*.parquet"):
        if stale.name not in wanted:
            stale.unlink()
    extract.check_unchanged()
    run = _Run(policy, key, areas, _blocked_cells(policy, areas))
    sources = [_Source(Path(f.path), extract.dataset, extract.day) for f in extract.files]
    paths = [out_dir / f.name for f in extract.files]
    k_evidence = _count_k_groups(run, sources) if policy.anonymity else None

    def stage(index: int) -> tuple[_Findings, StagedFile]:
        found = _stage_file(run, sources[index], paths[index])
        return found, _describe(paths[index])  # hashed while the file is in the page cache

    staged = map_runs(stage, range(len(paths)))  # pseudonyms made for a file serve the next
    for found, _ in staged:
        run.found.add(found)
    if k_evidence:
        k_evidence["rows_suppressed"] = run.found.rows_suppressed
    files = tuple(described for _, described in staged)
    return Staged(
        dataset=extract.dataset,
        day=extract.day,
        policy_version=policy.version,
        columns=tuple(policy.exported_columns),
        files=files,
        anonymization=_evidence(run, k_evidence),
    )


def _blocked_cells(policy: Policy, areas: list[Any]) -> Any:
    import numpy as np

    from crossborder.geo import cells_touching

    pair = policy.location_pair()
    if not areas or pair is None:
        return None
    cells = cells_touching(areas, pair[0].options["grid_deg"])
    return np.array([i * _CELL_STRIDE + j for i, j in cells], dtype=np.int64)


def _describe(path: Path) -> StagedFile:
    import pyarrow.parquet as pq

    sha256, size = sha256_file(path)
    return StagedFile(path.name, str(path), pq.ParquetFile(path).metadata.num_rows, size, sha256)


def _evidence(run: _Run, k_evidence: dict[str, Any] | None) -> dict[str, Any]:
    policy = run.policy
    areas = None
    if policy.sensitive_areas:
        areas = {
            "file": policy.sensitive_areas.name,
            "sha256": policy.sensitive_areas_sha256,
            "areas": len(run.areas),
            "cells_withheld": 0 if run.blocked_cells is None else len(run.blocked_cells),
            "rows_dropped": run.found.rows_in_sensitive_areas,
        }
    return {
        "policy_version": policy.version,
        "columns": policy.transforms(),
        "pseudonym_key_id": pseudonym_key_id(run.key) if run.key else None,
        "scrubbed": dict(sorted(run.found.scrubbed.items())),
        "sensitive_areas": areas,
        "k_anonymity": k_evidence,
    }


@dataclass(frozen=True)
class _Source:
    path: Path
    dataset: str
    day: str

    def open(self, policy: Policy) -> Any:
        """The Parquet file, refused if a column the policy names is missing."""
        import pyarrow.parquet as pq

        source = pq.ParquetFile(self.path)
        missing = [c for c in policy.exported_columns if c not in source.schema_arrow.names]
        if missing:
            raise PartitionInvalid(
                f"columns named by the policy are missing: {missing}",
                dataset=self.dataset,
                day=self.day,
                file=str(self.path),
            )
        return source


def _stage_file(shared: _Run, src: _Source, dst: Path) -> _Findings:
    """Stage one file and return what it found, for the caller to add up: files may be
    staged in other processes."""
    run = replace(shared, found=_Findings())
    source = src.open(run.policy)
    empty = source.schema_arrow.empty_table().select(run.policy.exported_columns)
    _write(dst, _staged_row_groups(run, source), lambda: _apply(run, empty))
    return run.found


def _staged_row_groups(run: _Run, source: Any) -> Iterator[Any]:
    """The file's row groups as staged, ``WHOLE_FILE_TRANSFORMS`` done for the file first
    (a worker's pseudonym memo holds ~1M ids after one file of a 20M-row day)."""
    rules = [c for c in run.policy.columns if c.transform in WHOLE_FILE_TRANSFORMS]
    per_file = {}
    if rules:
        whole_file = source.read(columns=[r.name for r in rules])
        per_file = {r.name: _transform(r, whole_file, run) for r in rules}
        del whole_file
    others = [c for c in run.policy.exported_columns if c not in per_file]
    start = 0
    for index in range(source.num_row_groups):
        table = source.read_row_group(index, columns=others)
        done = {
            name: _plain(column.slice(start, table.num_rows)) for name, column in per_file.items()
        }
        start += table.num_rows
        yield _apply(run, table, done)


def _write(dst: Path, tables: Any, empty: Callable[[], Any]) -> None:
    """Write tables to ``dst`` atomically (temp file, then rename): never half a file."""
    import pyarrow.parquet as pq

    tmp = dst.with_name(f".{dst.name}.tmp")
    writer = None
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:  # no row groups: still a valid file with the schema
            pq.write_table(empty(), tmp, compression="zstd")
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written file left behind
        raise
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(dst)


def _apply(run: _Run, table: Any, done: dict[str, Any] | None = None) -> Any:
    """The policy's view of a table; ``done`` holds columns already transformed."""
    import pyarrow as pa

    done = done or {}
    inside = _in_sensitive_areas(run, table)
    exported = [c for c in run.policy.columns if c.transform != "drop"]
    out = pa.table(
        [done[c.name] if c.name in done else _plain(_transform(c, table, run)) for c in exported],
        names=[c.name for c in exported],
    )
    if inside is not None and inside.any():
        run.found.rows_in_sensitive_areas += int(inside.sum())
        out = out.filter(pa.array(~inside))
    return _suppress(run, out)


def _in_sensitive_areas(run: _Run, table: Any) -> Any:
    """Rows whose grid cell overlaps a sensitive area: no exported cell touches one."""
    import numpy as np

    from crossborder.geo import cell_index

    pair = run.policy.location_pair()
    if run.blocked_cells is None or pair is None:
        return None
    lat_rule, lon_rule = pair
    grid = lat_rule.options["grid_deg"]
    rows = cell_index(table.column(lat_rule.name).to_numpy(), grid) * _CELL_STRIDE + cell_index(
        table.column(lon_rule.name).to_numpy(), grid
    )
    return np.isin(rows, run.blocked_cells)


# --- k-anonymity --------------------------------------------------------------------------
#
# Before anything is staged, one pass over the quasi-identifiers (as transformed) and the
# subject counts every group's distinct subjects (or rows) across all files. Rows become
# 64-bit hashes (group, subject), spilled to disk by group (crossborder.spill), so memory
# stays flat; staging then drops the rows of groups smaller than k. The subject is hashed
# as read: a policy's subject must be pseudonymized, which is one to one. A hash collision
# could only merge two groups; verify recounts k on exact values, so it cannot go unseen.

_GROUP_RECORD = [("group", "<u8"), ("subject", "<u8"), ("rows", "<i8")]


def _count_k_groups(run: _Run, sources: list[_Source]) -> dict[str, Any]:
    """Group sizes over the partition; sets ``run.small_groups`` when they are suppressed."""
    import numpy as np

    rules = run.policy.anonymity
    assert rules is not None
    groups = below_k = 0
    small = []
    with Spill(total_rows([str(s.path) for s in sources]), _GROUP_RECORD, "group") as spill:

        def count(index: int) -> None:
            spill.add(_group_records(run, sources[index]), part=index)

        map_runs(count, range(len(sources)))
        for bucket in spill.buckets():
            group, sizes = _group_sizes(_distinct(bucket), counting_subjects=bool(rules.subject))
            groups += len(group)
            below_k += int((sizes < rules.k).sum())
            small.append(group[sizes < rules.k])
    if below_k and rules.on_small_groups == "suppress":
        run.small_groups = np.concatenate(small)
    return {
        "k": rules.k,
        "quasi_identifiers": list(rules.quasi_identifiers),
        "subject": rules.subject,
        "on_small_groups": rules.on_small_groups,
        "groups": groups,
        "groups_below_k": below_k,
        "rows_suppressed": 0,
    }


def _group_records(shared: _Run, src: _Source) -> Any:
    """One file's distinct (group hash, subject hash) with rows, outside sensitive areas."""
    import numpy as np
    import pyarrow as pa

    run = replace(shared, found=_Findings())  # counting scrubs nothing twice
    rules = run.policy.anonymity
    assert rules is not None
    pair = run.policy.location_pair() or ()
    names = [*rules.quasi_identifiers, *([rules.subject] if rules.subject else [])]
    columns = list(dict.fromkeys([*names, *(rule.name for rule in pair)]))
    source = src.open(run.policy)
    parts = [np.empty(0, _GROUP_RECORD)]
    for index in range(source.num_row_groups):
        table = source.read_row_group(index, columns=columns)
        inside = _in_sensitive_areas(run, table)
        if inside is not None and inside.any():
            table = table.filter(pa.array(~inside))
        found = records(
            _GROUP_RECORD,
            group=_group_hashes(run, _transformed(run, table, rules.quasi_identifiers)),
            subject=value_hashes(table.column(rules.subject)) if rules.subject else 0,
            rows=np.ones(table.num_rows, np.int64),
        )
        parts.append(_distinct(found))
    return _distinct(np.concatenate(parts))


def _transformed(run: _Run, table: Any, names: Any) -> Any:
    import pyarrow as pa

    rules = [run.policy.column(name) for name in names]
    return pa.table([_plain(_transform(r, table, run)) for r in rules], names=list(names))


def _group_hashes(run: _Run, table: Any) -> Any:
    """64-bit hash of each row's quasi-identifiers, as staged; null is a value."""
    import pandas as pd

    assert run.policy.anonymity is not None
    qis = list(run.policy.anonymity.quasi_identifiers)
    return pd.util.hash_pandas_object(table.select(qis).to_pandas(), index=False).to_numpy()


def _distinct(found_records: Any) -> Any:
    """Records with one row per (group, subject), rows added up (Arrow's hash grouping)."""
    found = _as_table(found_records).group_by(["group", "subject"]).aggregate([("rows", "sum")])
    return records(
        _GROUP_RECORD,
        group=found.column("group").to_numpy(),
        subject=found.column("subject").to_numpy(),
        rows=found.column("rows_sum").to_numpy(),
    )


def _group_sizes(distinct: Any, counting_subjects: bool) -> tuple[Any, Any]:
    """(group hashes, size): distinct subjects per group, or its rows."""
    found = _as_table(distinct).group_by("group").aggregate([([], "count_all"), ("rows", "sum")])
    sizes = found.column("count_all" if counting_subjects else "rows_sum").to_numpy()
    return found.column("group").to_numpy(), sizes


def _as_table(columns: Any) -> Any:
    import pyarrow as pa

    return pa.table({name: columns[name] for name in columns.dtype.names})


def _suppress(run: _Run, table: Any) -> Any:
    """The table without the rows of groups smaller than k (when the policy suppresses)."""
    import numpy as np
    import pyarrow as pa

    if run.small_groups is None or table.num_rows == 0:
        return table
    small = np.isin(_group_hashes(run, table), run.small_groups)
    run.found.rows_suppressed += int(small.sum())
    return table.filter(pa.array(~small)) if small.any() else table


def evidence_for_manifest(evidence: dict[str, Any]) -> dict[str, Any]:
    """The evidence the U.S. side may see. How many rows were withheld near sensitive
    areas is itself vehicle flow in those areas (important data): it stays in the ledger.
    """
    areas = evidence.get("sensitive_areas")
    if not areas:
        return evidence
    return {**evidence, "sensitive_areas": {"file": areas["file"], "sha256": areas["sha256"]}}
