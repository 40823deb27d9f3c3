"""Independent proof that a staged partition is anonymized, before anything is encrypted.

This step shares no code path with the transforms it checks (``anonymize``,
``scrub``): it reads the staged files back and runs four checks of its own.

1. The dataset's second Great Expectations suite, ``expectations/<dataset>.anonymized.json``,
   written independently of the policy: only the allow-listed columns, pseudonym format,
   coordinate and time precision, no personal-information shape in any string column.
2. A full scan of every string column with the PII detectors (``crossborder.pii``).
3. k-anonymity recomputed over the policy's quasi-identifiers, on dictionary codes.
4. No exported grid cell overlapping a sensitive area, tested with shapely.

Any residue raises AnonymizationResidue naming the column, the detector and the count,
never the value. Small k-anonymity groups that the policy sends to review are not a
residue: the summary's status is then ``review`` and classify routes to CAC review.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from crossborder.digest import sha256_file
from crossborder.errors import AnonymizationResidue, IntegrityMismatch, QualityFailed
from crossborder.parallel import map_files, run_jobs
from crossborder.policy import Policy, sensitive_areas_bytes
from crossborder.spill import Spill, records, total_rows


@dataclass(frozen=True)
class Residue:
    check: str  # suite, pii, k_anonymity, sensitive_areas
    column: str | None
    detector: str
    count: int

    def describe(self) -> str:
        where = f"{self.column}: " if self.column else ""
        return f"{where}{self.detector} in {self.count:,} rows ({self.check})"


@dataclass(frozen=True)
class Verification:
    suite: dict[str, Any]
    pii: dict[str, dict[str, int]]
    k_anonymity: dict[str, Any] | None
    sensitive_areas: dict[str, Any] | None
    residues: tuple[Residue, ...]

    @property
    def status(self) -> str:
        if self.residues:
            return "failed"
        if self.k_anonymity and self.k_anonymity["rows_below_k"]:
            return "review"  # the policy sends small groups to CAC review
        return "passed"

    def summary(self) -> dict[str, Any]:
        """What the ledger, XCom and the manifest keep: verdicts and counts, no values."""
        return {
            "status": self.status,
            "suite": self.suite,
            "pii": self.pii,
            "k_anonymity": self.k_anonymity,
            "sensitive_areas": self.sensitive_areas,
            "residues": [asdict(r) for r in self.residues],
        }


def verify_partition(
    policy: Policy, staged: dict[str, Any], report_dir: Path | None = None
) -> Verification:
    """Run every check on the staged files; raise AnonymizationResidue if any finds residue."""
    dataset, day = staged["dataset"], staged["day"]
    files = _unchanged_files(staged)
    suite, residues = _suite(dataset, day, files, report_dir)
    # The file scans and the whole-partition counts share one pool of workers.
    checks = [
        partial(check_k_anonymity, policy, files),
        partial(check_sensitive_areas, policy, files),
    ]
    jobs = [*checks, *(partial(_scan_file, file) for file in files)]
    k_anonymity, areas, *scanned = run_jobs(jobs)
    pii: dict[str, dict[str, int]] = {}
    for per_file in scanned:
        _add_counts(pii, per_file)
    residues += [
        Residue("pii", column, detector, count)
        for column, found in pii.items()
        for detector, count in found.items()
        if count
    ]
    if k_anonymity and k_anonymity["rows_below_k"] and k_anonymity["on_small_groups"] != "review":
        residues.append(
            Residue(
                "k_anonymity",
                ",".join(k_anonymity["quasi_identifiers"]),
                f"groups smaller than k={k_anonymity['k']}",
                k_anonymity["rows_below_k"],
            )
        )
    if areas and areas["points_inside"]:
        residues.append(
            Residue("sensitive_areas", areas["columns"], "cell overlapping a sensitive area",
                    areas["points_inside"])
        )  # fmt: skip
    result = Verification(suite, pii, k_anonymity, areas, tuple(residues))
    if result.residues:
        error = AnonymizationResidue(
            "anonymization did not hold, nothing leaves China: "
            + "; ".join(r.describe() for r in result.residues),
            dataset=dataset,
            day=day,
        )
        error.result = result.summary()
        raise error
    return result


def _unchanged_files(staged: dict[str, Any]) -> list[str]:
    """The staged files, refused if any differs from what anonymize wrote: what is
    verified is byte for byte what will be encrypted."""
    digests = map_files(lambda item: sha256_file(Path(item["path"]))[0], staged["files"])
    for item, digest in zip(staged["files"], digests, strict=True):
        if digest != item["sha256"]:
            raise IntegrityMismatch(
                "staged file changed after anonymization: re-run from anonymize",
                dataset=staged["dataset"],
                day=staged["day"],
                file=item["path"],
            )
    return [item["path"] for item in staged["files"]]


def _suite(
    dataset: str, day: str, files: list[str], report_dir: Path | None
) -> tuple[dict[str, Any], list[Residue]]:
    """The anonymized-stage GX suite; a missing suite is a residue (fail closed)."""
    from crossborder.quality import has_suite, validate_partition

    if not has_suite(dataset, "anonymized"):
        missing = Residue("suite", None, f"no expectations/{dataset}.anonymized.json", 1)
        return {"status": "no_suite", "suite": None}, [missing]
    try:
        summary = validate_partition(
            dataset, day, files, stage="anonymized", report_dir=report_dir, redact_samples=True
        ).summary()
    except QualityFailed as exc:
        summary = exc.result or {"status": "failed", "critical": []}
    failures = summary.get("critical", [])
    residues = [
        Residue("suite", f.get("column"), f["expectation"], f.get("unexpected_count") or 1)
        for f in failures
    ]
    if summary.get("status") != "passed" and not residues:
        residues.append(Residue("suite", None, "suite did not pass", 1))
    summary = {**summary, "critical": [_without_samples(f) for f in failures]}
    summary["warnings"] = [_without_samples(w) for w in summary.get("warnings", [])]
    return summary, residues


def _without_samples(failure: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in failure.items() if k != "sample"}


def _scan_file(file: str) -> dict[str, dict[str, int]]:
    import pyarrow.parquet as pq

    from crossborder import pii

    totals: dict[str, dict[str, int]] = {}
    staged = pq.ParquetFile(file)
    for group in range(staged.num_row_groups):
        _add_counts(totals, pii.scan_table(staged.read_row_group(group)))
    return totals


def _add_counts(totals: dict[str, dict[str, int]], found: dict[str, dict[str, int]]) -> None:
    from crossborder.pii import DETECTORS

    for column, counts in found.items():
        into = totals.setdefault(column, dict.fromkeys(DETECTORS, 0))
        for detector, count in counts.items():
            into[detector] += count


def check_k_anonymity(policy: Policy, files: list[str]) -> dict[str, Any] | None:
    """The smallest group over the quasi-identifiers (distinct subjects, or rows).

    Every key column is dictionary-encoded across the files (nulls are a value), each
    row's (quasi-identifiers, subject) becomes one int64 in mixed radix, and each file is
    reduced to its distinct keys with row counts. Those are spilled to disk by group
    (``crossborder.spill``) and counted one bucket at a time: memory stays flat.
    """
    import numpy as np

    rules = policy.anonymity
    if rules is None:
        return None
    qis = list(rules.quasi_identifiers)
    keys = qis + ([rules.subject] if rules.subject else [])
    dictionaries = _dictionaries(files, keys)
    radices = [len(dictionaries[c]) for c in keys]
    # The subject is the last digit of the key: dropping it gives the group.
    radix = radices[-1] if rules.subject else 1
    subjects_seen = np.zeros(radix, dtype=bool)
    groups = groups_below_k = rows_below_k = 0
    k_achieved = None
    with Spill(total_rows(files), _KEY_RECORD, "group") as spill:
        for key, rows in _rows_per_key(files, keys, dictionaries, radices):
            spill.add(records(_KEY_RECORD, group=key // radix, key=key, rows=rows))
        for bucket in spill.buckets():
            distinct, inverse = np.unique(bucket["key"], return_inverse=True)
            rows_per_key = np.bincount(inverse, weights=bucket["rows"])
            _, group, distinct_per_group = np.unique(
                distinct // radix, return_inverse=True, return_counts=True
            )
            rows = np.bincount(group, weights=rows_per_key).astype(np.int64)
            sizes = distinct_per_group if rules.subject else rows  # subjects, or rows
            small = sizes < rules.k
            groups += len(sizes)
            groups_below_k += int(small.sum())
            rows_below_k += int(rows[small].sum())
            smallest = int(sizes.min())
            k_achieved = smallest if k_achieved is None else min(k_achieved, smallest)
            subjects_seen[distinct % radix] = True
    return {
        "k": rules.k,
        "quasi_identifiers": qis,
        "subject": rules.subject,
        "on_small_groups": rules.on_small_groups,
        "k_achieved": k_achieved,
        "groups": groups,
        "groups_below_k": groups_below_k,
        "rows_below_k": rows_below_k,
        "subjects": int(subjects_seen.sum()) if rules.subject else None,
    }


_KEY_RECORD = [("group", "<u8"), ("key", "<i8"), ("rows", "<i8")]


def _dictionaries(files: list[str], columns: list[str]) -> dict[str, Any]:
    """Each column's distinct values across the files (null included), as an Arrow array:
    a value's code is its position."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0]) if files else None
    known = {c: pa.array([], schema.field(c).type) if schema else pa.array([]) for c in columns}
    for file in files:
        table = pq.read_table(file, columns=columns)
        for column in columns:
            found = pc.unique(table.column(column)).cast(known[column].type)
            known[column] = pc.unique(pa.concat_arrays([known[column], found]))
    return known


def _rows_per_key(
    files: list[str],
    columns: list[str],
    dictionaries: dict[str, Any],
    radices: list[int],
) -> Iterator[tuple[Any, Any]]:
    """Per file: (distinct int64 keys, rows per key); a key's digits are the columns'
    codes, the last column the lowest digit."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if np.prod([float(r) for r in radices]) >= 2**63:
        raise ValueError(f"too many distinct values in {columns} for one int64 key")
    for file in files:
        table = pq.read_table(file, columns=columns)
        key = np.zeros(table.num_rows, dtype=np.int64)
        for column, radix in zip(columns, radices, strict=True):
            code = pc.index_in(
                table.column(column), value_set=dictionaries[column], skip_nulls=False
            )
            if code.null_count:  # a value the first pass did not see: the file changed
                raise ValueError(f"{file}: {column} changed while k was counted")
            key = key * radix + code.to_numpy().astype(np.int64)
        yield np.unique(key, return_counts=True)


def check_sensitive_areas(policy: Policy, files: list[str]) -> dict[str, Any] | None:
    """Exported grid cells (value to value + grid) that overlap a sensitive area."""
    import pyarrow.parquet as pq
    import shapely

    pair = policy.location_pair()
    if pair is None or policy.sensitive_areas is None:
        return None
    lat_name, lon_name = pair[0].name, pair[1].name
    grid = pair[0].options["grid_deg"]
    areas = _areas(sensitive_areas_bytes(policy))
    inside = 0
    for file in files:
        table = pq.read_table(file, columns=[lat_name, lon_name]).drop_null()
        # Distinct cells with their row counts (Arrow's hash grouping; a sort is 10x slower).
        cells = table.group_by([lon_name, lat_name]).aggregate([([], "count_all")])
        lon, lat = (cells.column(c).to_numpy() for c in (lon_name, lat_name))
        counts = cells.column("count_all").to_numpy()
        boxes = shapely.box(lon, lat, lon + grid, lat + grid)
        inside += int(counts[shapely.intersects(boxes, areas)].sum())
    return {
        "file": policy.sensitive_areas.name,
        "columns": f"{lat_name},{lon_name}",
        "points_inside": inside,
    }


def _areas(data: bytes) -> Any:
    """All polygons of the GeoJSON as one prepared shapely geometry."""
    import shapely
    from shapely.geometry import shape

    document = json.loads(data.decode("utf-8"))
    union = shapely.union_all([shape(f["geometry"]) for f in document["features"]])
    shapely.prepare(union)
    return union
