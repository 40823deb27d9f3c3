"""Re-identification for authorised investigations: China side only, never exported.

A pseudonym is a keyed HMAC, so it cannot be reversed; with the key (which never leaves
China) the VINs of the Shanghai store are pseudonymized again and matched. Every lookup
is written to the export ledger with its case reference and requester, so the record
shows who re-identified what and why. No DAG calls this module.

    python -m crossborder.reidentify --source DIR --dataset vehicle_telemetry \\
        --from 2026-11-01 --to 2026-11-24 --case INV-2026-042 --requested-by alice \\
        --ledger-url sqlite:///ledger.db --key-file /secure/pseudonymization.key PSEUDONYM...
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path

from crossborder import ledger
from crossborder.anonymize import pseudonym, pseudonymization_key
from crossborder.extract import partition_path

KEY_FILE_ENV = "CROSSBORDER_PSEUDONYMIZATION_KEY_FILE"


def days_between(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    if end < start:
        raise ValueError(f"--to {last} is before --from {first}")
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def reidentify(
    pseudonyms: Iterable[str],
    key: bytes,
    source_root: Path,
    dataset: str,
    days: Sequence[str],
    *,
    column: str = "vin",
    namespace: str = "vin",
) -> dict[str, str]:
    """Map each pseudonym found in the given days' partitions back to its value."""
    import pyarrow.parquet as pq

    wanted = set(pseudonyms)
    found: dict[str, str] = {}
    for day in days:
        for file in sorted(partition_path(source_root, dataset, day).glob("part-*.parquet")):
            for value in pq.read_table(file, columns=[column])[column].unique().to_pylist():
                if value is not None and (p := pseudonym(key, namespace, value)) in wanted:
                    found[p] = value
            if len(found) == len(wanted):
                return found
    return found


def _key(path: str | None) -> bytes:
    path = path or os.environ.get(KEY_FILE_ENV)
    if not path:
        raise SystemExit(f"give --key-file or set {KEY_FILE_ENV}")
    return pseudonymization_key(Path(path).read_bytes())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossborder.reidentify",
        description="Map pseudonyms back to VINs for an authorised investigation (China only).",
    )
    parser.add_argument("pseudonyms", nargs="+")
    parser.add_argument("--source", type=Path, required=True, help="Shanghai source root")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--from", dest="first", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, help="last day, YYYY-MM-DD")
    parser.add_argument("--case", required=True, help="investigation / authorisation reference")
    parser.add_argument("--requested-by", required=True)
    parser.add_argument("--ledger-url", required=True, help="the export ledger (audit record)")
    parser.add_argument("--key-file", help=f"pseudonymization key; default ${KEY_FILE_ENV}")
    parser.add_argument("--column", default="vin")
    parser.add_argument("--namespace", default="vin")
    args = parser.parse_args(argv)
    days = days_between(args.first, args.last)
    found = reidentify(
        args.pseudonyms,
        _key(args.key_file),
        args.source,
        args.dataset,
        days,
        column=args.column,
        namespace=args.namespace,
    )
    audit = {
        "case": args.case,
        "requested_by": args.requested_by,
        "days": [days[0], days[-1]],
        "pseudonyms": sorted(set(args.pseudonyms)),
        "found": len(found),
    }
    engine = ledger.connect(args.ledger_url)
    ledger.record_event(engine, args.dataset, days[0], "reidentification", audit)
    for value in args.pseudonyms:
        print(f"{value}\t{found.get(value, 'NOT FOUND')}")
    return 0 if len(found) == len(set(args.pseudonyms)) else 1


if __name__ == "__main__":
    sys.exit(main())
