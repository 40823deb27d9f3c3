"""The daily export, one function per DAG task.

Each step takes the plain Settings plus (dataset, day, run id), does its work, records
it in the export ledger and returns a small JSON-able summary (what the task pushes to
XCom). Large data moves only through files. Every step is idempotent for a run: running
it again gives the same files, objects and ledger row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from crossborder import alerts, ledger, review, routing, ui
from crossborder.anonymize import anonymize_partition, evidence_for_manifest, staging_path
from crossborder.classify import Decision
from crossborder.errors import AnonymizationResidue, CrossborderError, ExportRefused, QualityFailed
from crossborder.extract import SHANGHAI, Extract
from crossborder.policy import load_policy
from crossborder.quality import for_manifest, has_suite, validate_partition
from crossborder.reports import report_dir
from crossborder.rules import load_rules
from crossborder.settings import Settings


def _attempt(settings: Settings, dataset: str, day: str, run_id: str) -> int:
    return ledger.begin_attempt(ledger.connect(settings.ledger_url), dataset, day, run_id)


def _record(settings: Settings, attempt_id: int, **fields: Any) -> None:
    ledger.update_attempt(ledger.connect(settings.ledger_url), attempt_id, **fields)


@contextmanager
def _failure_recorded(settings: Settings, attempt_id: int) -> Iterator[None]:
    """A typed error marks the attempt ``failed`` with its reason, then propagates."""
    try:
        yield
    except CrossborderError as exc:
        _record(settings, attempt_id, state="failed", error=f"{exc.kind}: {exc}")
        raise


def partition_ready(
    settings: Settings,
    dataset: str,
    day: str,
    run_id: str,
    expected_by: str,
    now: datetime | None = None,
) -> bool:
    """Is the day's partition complete? Past ``expected_by`` (HH:MM Shanghai, the next
    morning) a missing partition alerts on-call, once per run, while the export waits.
    """
    from crossborder.source import source_of

    source = source_of(settings)
    if source.is_ready(dataset, day):
        return True
    next_morning = date.fromisoformat(day) + timedelta(days=1)
    due = datetime.combine(next_morning, time.fromisoformat(expected_by), SHANGHAI)
    if (now or datetime.now(SHANGHAI)) >= due:
        folder = source.location(dataset, day)
        cause = f"no _SUCCESS marker in {folder} by {expected_by} Shanghai time; still waiting"
        _alert_once(
            settings,
            alerts.Alert(dataset, day, "wait_for_partition", "partition_late", cause, run_id),
        )
    return False


def _alert_once(settings: Settings, alert: alerts.Alert) -> None:
    """Emit an alert unless this run already raised one of the same kind."""
    engine = ledger.connect(settings.ledger_url)
    attempt_id = ledger.begin_attempt(engine, alert.dataset, alert.day, alert.run_id)
    if not _alerted(engine, alert.dataset, alert.day, alert.kind, attempt_id):
        _alert(settings, alert)


def _alert(settings: Settings, alert: alerts.Alert) -> None:
    alerts.emit(alert, settings.ledger_url, channels=settings.alert_channels)


def extract(settings: Settings, dataset: str, day: str, run_id: str) -> dict[str, Any]:
    """List the partition's files; an object-store source is first mirrored to a local
    folder (``crossborder.source``), so every later step reads local files."""
    from crossborder.source import source_of

    attempt_id = _attempt(settings, dataset, day, run_id)
    with _failure_recorded(settings, attempt_id):
        found = source_of(settings).extract(dataset, day)
    _record(settings, attempt_id, rows_in=found.rows)
    return found.to_dict()


def _personal_columns(dataset: str) -> list[str] | None:
    """Columns whose samples must be masked; None (mask all) if the policy cannot say."""
    try:
        return [c.name for c in load_policy(dataset).columns if c.data_class != "none"]
    except CrossborderError:
        return None


def validate(settings: Settings, extracted: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Run the quality suite; critical failures quarantine the partition, warnings alert."""
    found = Extract.from_dict(extracted)
    dataset, day = found.dataset, found.day
    attempt_id = _attempt(settings, dataset, day, run_id)
    if not has_suite(dataset):
        summary = {"status": "no_suite", "suite": None}
        _record(settings, attempt_id, quality=summary)
        return summary
    report = report_dir(settings.staging_root, dataset, run_id)
    engine = ledger.connect(settings.ledger_url)
    with _failure_recorded(settings, attempt_id):
        found.check_unchanged()
        try:
            result = validate_partition(
                dataset,
                day,
                [f.path for f in found.files],
                masked_columns=_personal_columns(dataset),
                report_dir=report,
                history=ledger.trailing_quality(engine, dataset, day),
            )
        except QualityFailed as exc:
            _record(
                settings, attempt_id, quality={**exc.result, "report": str(report / "index.html")}
            )
            raise
    summary = {**result.summary(), "report": str(report / "index.html")}
    _record(settings, attempt_id, quality=summary)
    if result.warnings:
        cause = "; ".join(f"{f.where}: {f.describe()}" for f in result.warnings)
        _alert_once(
            settings, alerts.Alert(dataset, day, "validate", "quality_warning", cause, run_id)
        )
    return summary


def anonymize(settings: Settings, extracted: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Stage the policy's view of the partition; a draft policy stages nothing."""
    found = Extract.from_dict(extracted)
    attempt_id = _attempt(settings, found.dataset, found.day, run_id)
    with _failure_recorded(settings, attempt_id):
        policy = load_policy(found.dataset)
    _record(settings, attempt_id, policy_version=policy.version)
    if not policy.is_active:
        return {"status": "skipped", "policy_version": policy.version, "files": []}
    with _failure_recorded(settings, attempt_id):
        staged = anonymize_partition(
            policy, found, settings.staging_root, settings.pseudonymization_key
        )
    # What is staged now is new: any route or approval given for earlier staging is void.
    _record(settings, attempt_id, anonymization=staged.anonymization, route=None, approvals=[])
    return {"status": "staged", **staged.to_dict()}


def verify(settings: Settings, staged: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Prove the anonymization held; residue fails the step and nothing leaves China."""
    from crossborder.verify import verify_partition

    if staged["status"] != "staged":
        return {"status": "skipped"}
    dataset, day = staged["dataset"], staged["day"]
    attempt_id = _attempt(settings, dataset, day, run_id)
    report = report_dir(settings.staging_root, dataset, run_id) / "anonymized"
    with _failure_recorded(settings, attempt_id):
        policy = load_policy(dataset)
        try:
            summary = verify_partition(policy, staged, report_dir=report).summary()
        except AnonymizationResidue as exc:
            evidence = {**staged["anonymization"], "verification": exc.result}
            _record(settings, attempt_id, anonymization=evidence)
            raise
    _record(
        settings, attempt_id, anonymization={**staged["anonymization"], "verification": summary}
    )
    return summary


def decide(
    settings: Settings,
    dataset: str,
    day: str,
    run_id: str,
    quality: dict[str, Any],
    staged: dict[str, Any],
    verification: dict[str, Any],
) -> dict[str, Any]:
    """Route the partition against the rules and the year's subject counts; a cleared
    route reserves its subjects in the ledger. The whole decision is kept as an event."""
    attempt_id = _attempt(settings, dataset, day, run_id)
    engine = ledger.connect(settings.ledger_url)
    with _failure_recorded(settings, attempt_id):
        found = routing.decide(
            engine,
            load_policy(dataset),
            load_rules(),
            day,
            quality,
            staged,
            verification,
            attempt_id,
        )
    decision = found.to_dict()
    _record(settings, attempt_id, route=decision["route"], reasons=decision["reasons"])
    recorded = ledger.list_events(engine, dataset, day)
    if not any(
        (e["kind"], e["attempt_id"], e["detail"]) == ("decision", attempt_id, decision)
        for e in recorded
    ):
        ledger.record_event(engine, dataset, day, "decision", decision, attempt_id)
    return decision


def record_held(
    settings: Settings,
    dataset: str,
    day: str,
    run_id: str,
    decision: dict[str, Any],
    handover: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a partition that does not leave now: blocked, or awaiting CAC review.

    For review, ``handover`` (extracted, quality, staged, verification) is kept in the
    ledger with the decision: the review run reads the case from there.
    """
    attempt_id = _attempt(settings, dataset, day, run_id)
    engine = ledger.connect(settings.ledger_url)
    settled = ledger.get_attempt(engine, attempt_id)["state"]
    if settled in ("exported", "received", "rejected"):
        raise ExportRefused(
            f"this run's attempt is already {settled}: trigger a new run to export the day again",
            dataset=dataset,
            day=day,
        )
    route = decision["route"]
    state = "awaiting_review" if route == "cac_review" else "blocked"
    if route == "cac_review":
        if not handover:
            raise ExportRefused("a review needs the hand-over of the run", dataset=dataset, day=day)
        ledger.record_event(
            ledger.connect(settings.ledger_url),
            dataset,
            day,
            review.HANDOVER_EVENT,
            {**handover, "decision": decision},
            attempt_id,
        )
    _record(settings, attempt_id, state=state, rows_out=0, objects=0, error=None)
    reasons = "; ".join(f"{r['text']} [{r['rule']}]" for r in decision["reasons"])
    if route == "cac_review":
        cause = f"needs CAC review before anything leaves China: {reasons}"
        kind = "review_required"
    else:
        cause, kind = f"blocked, nothing leaves China: {reasons}", "partition_blocked"
    _alert(settings, alerts.Alert(dataset, day, "record_held", kind, cause, run_id))
    return {"dataset": dataset, "day": day, "route": route, "reasons": reasons}


def _require_exportable(
    settings: Settings, staged: dict[str, Any], decision: dict[str, Any]
) -> list[dict[str, Any]]:
    """The upload's own check, whatever its inputs say: the ledger's latest attempt for the
    day must hold the same route for exactly what was staged, and a ``cac_review`` route
    needs four-eyes approvals recorded there. Returns the approvals that count."""
    dataset, day = staged["dataset"], staged["day"]
    found = Decision.from_dict(decision)
    if found.policy_version != staged["policy_version"]:
        raise ExportRefused(
            f"the decision was made under {found.policy_version}, the data was staged under "
            f"{staged['policy_version']}",
            dataset=dataset,
            day=day,
        )
    if found.route not in ("cleared", "cac_review"):
        raise ExportRefused(f"route is {found.route!r}: it never leaves", dataset=dataset, day=day)
    engine = ledger.connect(settings.ledger_url)
    latest = ledger.latest_attempt(engine, dataset, day) or {}
    recorded = (latest.get("route"), latest.get("policy_version"))
    if recorded != (found.route, found.policy_version):
        raise ExportRefused(
            f"the ledger's latest attempt for the day was routed {recorded[0]!r} under "
            f"{recorded[1]}, not {found.route!r} under {found.policy_version}",
            dataset=dataset,
            day=day,
        )
    if found.route == "cleared":
        return []
    events = [
        e for e in ledger.list_events(engine, dataset, day) if e["attempt_id"] == latest["id"]
    ]
    handed = [e["detail"]["staged"] for e in events if e["kind"] == review.HANDOVER_EVENT]
    if not handed or _fingerprint(handed[-1]) != _fingerprint(staged):
        raise ExportRefused(
            "the files are not the ones handed over for review", dataset=dataset, day=day
        )
    triggered = {e["detail"].get("triggered_by") for e in events if e["kind"] == "review_opened"}
    return review.require_approved(
        latest["approvals"] or [],
        review.load_config(),
        dataset=dataset,
        day=day,
        excluded=triggered - {None},
    )


def _fingerprint(staged: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["name"], f["sha256"]) for f in staged["files"])


def plan_upload(
    settings: Settings, staged: dict[str, Any], decision: dict[str, Any]
) -> list[dict[str, Any]]:
    """Prepare the U.S. prefix (abort stale uploads, withdraw a differing manifest)."""
    from crossborder import crypto, landing

    dataset, day = staged["dataset"], staged["day"]
    if _require_exportable(settings, staged, decision):
        # A reviewed partition leaves now: its subjects count for the year from here on
        # (before the upload, so a failed upload over-counts: the safe direction).
        engine = ledger.connect(settings.ledger_url)
        attempt = ledger.latest_attempt(engine, dataset, day) or {}
        routing.record_approved_export(
            engine, load_policy(dataset), load_rules(), staged, attempt["id"]
        )
    public = settings.require("recipient_public_pem", dataset=dataset, day=day)
    parts = [
        {
            "dataset": dataset,
            "day": day,
            "name": f["name"],
            "path": f["path"],
            "rows": f["rows"],
            "plaintext_sha256": f["sha256"],
            "key": landing.object_key(dataset, day, f["name"]),
        }
        for f in staged["files"]
    ]
    landing.prepare_partition(
        settings.s3_client(),
        settings.us_bucket,
        dataset,
        day,
        {p["key"]: p["plaintext_sha256"] for p in parts},
        crypto.key_id(public),
    )
    return parts


def upload_part(settings: Settings, part: dict[str, Any]) -> dict[str, Any]:
    from crossborder import landing

    dataset, day = part["dataset"], part["day"]
    public = settings.require("recipient_public_pem", dataset=dataset, day=day)
    workdir = staging_path(settings.staging_root, dataset, day) / "_encrypted"
    workdir.mkdir(parents=True, exist_ok=True)
    return landing.upload_encrypted(
        settings.s3_client(),
        settings.us_bucket,
        part["key"],
        Path(part["path"]),
        public,
        workdir,
        expected_plaintext_sha256=part["plaintext_sha256"],
    )


def publish(
    settings: Settings,
    dataset: str,
    day: str,
    run_id: str,
    objects: list[dict[str, Any]],
    quality: dict[str, Any],
    staged: dict[str, Any],
    verification: dict[str, Any],
    decision: dict[str, Any],
    extracted: dict[str, Any],
) -> dict[str, Any]:
    """Write the signed manifest last: the commit marker of the export."""
    from crossborder import crypto, landing
    from crossborder.manifest import build_manifest

    approvals = _require_exportable(settings, staged, decision)
    signing = settings.require("signing_private_pem", dataset=dataset, day=day)
    public = settings.require("recipient_public_pem", dataset=dataset, day=day)
    attempt_id = _attempt(settings, dataset, day, run_id)
    objects = sorted(objects, key=lambda o: o["key"])
    manifest = build_manifest(
        dataset=dataset,
        partition_date=day,
        route=decision["route"],
        policy_version=staged["policy_version"],
        dag_run_id=run_id,
        rows_in=extracted["rows"],
        rows_out=staged["rows"],
        quality=for_manifest(quality),
        objects=objects,
        encryption=crypto.encryption_info(public),
        approvals=approvals,
        anonymization=evidence_for_manifest(
            {**staged["anonymization"], "verification": verification}
        ),
        lineage=_lineage(settings, dataset, day, attempt_id),
        extra={
            "reasons": decision["reasons"],
            "rules_version": decision.get("rules_version"),
            "columns": staged["columns"],
        },
    )
    published = landing.publish_manifest(
        settings.s3_client(), settings.us_bucket, dataset, day, manifest, signing
    )
    _record(
        settings,
        attempt_id,
        state="exported",
        rows_out=staged["rows"],
        objects=len(objects),
        bytes_out=sum(o["size"] for o in objects),
        manifest_uri=published.uri,
        manifest_sha256=published.sha256,
        error=None,
    )
    return {
        "dataset": dataset,
        "day": day,
        "route": decision["route"],
        "manifest": published.uri,
        "objects": len(objects),
    }


def _lineage(settings: Settings, dataset: str, day: str, attempt_id: int) -> dict[str, Any]:
    """Which manifest of the day this is, and the one it replaces (a re-export)."""
    earlier = ledger.earlier_exports(ledger.connect(settings.ledger_url), dataset, day, attempt_id)
    if not earlier:
        return {"export": 1, "supersedes": None}
    last = earlier[-1]
    published = {row["manifest_sha256"] for row in earlier}
    return {
        "export": len(published) + 1,
        "supersedes": {
            "manifest_sha256": last["manifest_sha256"],
            "dag_run_id": last["dag_run_id"],
            "policy_version": last["policy_version"],
        },
    }


# --- CAC review (cn_cac_review) ------------------------------------------------------------


def _review_attempt(
    engine: Any, dataset: str, day: str, export_run_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The day's latest attempt, which must be ``export_run_id``'s, and its events."""
    attempt = ledger.latest_attempt(engine, dataset, day)
    if not attempt or attempt["dag_run_id"] != export_run_id:
        raise ExportRefused(
            f"run {export_run_id} is not the day's latest export attempt", dataset=dataset, day=day
        )
    events = [
        e for e in ledger.list_events(engine, dataset, day) if e["attempt_id"] == attempt["id"]
    ]
    return attempt, events


def open_review(
    settings: Settings,
    dataset: str,
    day: str,
    export_run_id: str,
    review_run_id: str,
    triggered_by: str | None,
) -> dict[str, Any]:
    """The case the gates show, from the hand-over of the daily run awaiting review.
    One review run per hand-over: a second one is refused (re-running the same is fine)."""
    engine = ledger.connect(settings.ledger_url)
    attempt, events = _review_attempt(engine, dataset, day, export_run_id)
    if attempt["state"] != "awaiting_review":
        raise ExportRefused(
            f"the attempt is {attempt['state']}, not awaiting review", dataset=dataset, day=day
        )
    handover = [e for e in events if e["kind"] == review.HANDOVER_EVENT][-1]
    opened = [
        e["detail"] for e in events if e["kind"] == "review_opened" and e["id"] > handover["id"]
    ]
    if any(o["review_run_id"] != review_run_id for o in opened):
        raise ExportRefused(
            f"review run {opened[0]['review_run_id']} is already open for this hand-over",
            dataset=dataset,
            day=day,
        )
    if not opened:
        detail = {"review_run_id": review_run_id, "triggered_by": triggered_by}
        ledger.record_event(engine, dataset, day, "review_opened", detail, attempt["id"])
    case = review.case_from_handover(handover["detail"])
    return {
        **case,
        "attempt_id": attempt["id"],
        "export_run_id": export_run_id,
        "subject": review.subject(case),
        "body": review.body(case),
    }


def record_answer(
    settings: Settings,
    dataset: str,
    day: str,
    export_run_id: str,
    review_run_id: str,
    gate: str,
    answer: dict[str, Any],
) -> None:
    """Keep a gate's answer in the ledger, as Airflow handed it to the gate itself (never
    from XCom, which users with the right to edit XComs could rewrite)."""
    engine = ledger.connect(settings.ledger_url)
    attempt, _ = _review_attempt(engine, dataset, day, export_run_id)
    detail = {"review_run_id": review_run_id, "gate": gate, "answer": answer}
    ledger.record_event(engine, dataset, day, "review_answer", detail, attempt["id"])


def judge_gates(
    settings: Settings,
    dataset: str,
    day: str,
    export_run_id: str,
    review_run_id: str,
    gates: list[str],
) -> dict[str, Any]:
    """Judge the gates answered so far, from the ledger. A failed gate rejects the review
    (recorded, alerted, nothing uploaded); once enough gates approve, the approvals go
    into the ledger."""
    config = review.load_config()
    engine = ledger.connect(settings.ledger_url)
    attempt, events = _review_attempt(engine, dataset, day, export_run_id)
    mine = [e["detail"] for e in events if e["detail"].get("review_run_id") == review_run_id]
    excluded = {o["triggered_by"] for o in mine if "triggered_by" in o} - {None}
    answers = {d["gate"]: d["answer"] for d in mine if "gate" in d}  # the latest per gate
    approvals = []
    for gate in gates:
        answer = answers.get(gate, {})
        approval, why = review.judge_answer(answer, config, excluded=excluded)
        if approval is None:
            timed_out = not answer.get("responded_by_user")
            return _reject_review(settings, attempt, why, timed_out=timed_out)
        excluded |= {approval.by, (answer.get("responded_by_user") or {}).get("name")}
        approvals.append(approval.to_dict())
    complete = len(approvals) >= config.approvals_required
    if complete:
        ledger.update_attempt(engine, attempt["id"], approvals=approvals)
        ledger.record_event(
            engine, dataset, day, "review_approved", {"approvals": approvals}, attempt["id"]
        )
    return {"approved": complete, "rejected": False, "approvals": approvals}


def _reject_review(
    settings: Settings, attempt: dict[str, Any], why: str, *, timed_out: bool
) -> dict[str, Any]:
    dataset, day = attempt["dataset"], attempt["partition_date"]
    engine = ledger.connect(settings.ledger_url)
    ledger.update_attempt(engine, attempt["id"], state="rejected", error=f"review: {why}")
    ledger.record_event(engine, dataset, day, "review_rejected", {"why": why}, attempt["id"])
    kind = "review_timeout" if timed_out else "review_rejected"
    cause = f"CAC review ended without approval, nothing leaves China: {why}"
    _alert(settings, alerts.Alert(dataset, day, "judge_gates", kind, cause, attempt["dag_run_id"]))
    return {"approved": False, "rejected": True, "why": why}


def remind_open_reviews(
    settings: Settings, base_url: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Alert again for each partition still awaiting review ``remind_after`` after its
    hand-over or its last reminder, with the link to its gates (or to the review DAG if
    no review run has opened yet)."""
    config = review.load_config()
    engine = ledger.connect(settings.ledger_url)
    now = now or datetime.now(UTC)
    reminded = []
    for attempt in ledger.attempts_in_state(engine, "awaiting_review"):
        dataset, day = attempt["dataset"], attempt["partition_date"]
        kinds = (review.HANDOVER_EVENT, "review_opened", "review_reminder")
        events = [
            e
            for e in ledger.list_events(engine, dataset, day)
            if e["attempt_id"] == attempt["id"] and e["kind"] in kinds
        ]
        if not events or now - _happened(events[-1]) < config.remind_after:
            continue
        opened = [e["detail"]["review_run_id"] for e in events if e["kind"] == "review_opened"]
        run_id = opened[-1] if opened else None
        link = ui.absolute(
            base_url, ui.review_url(run_id) if run_id else ui.dag_url(ui.REVIEW_DAG_ID)
        )
        waiting = now - _happened(events[0])
        cause = f"CAC review open for {waiting.days} days {waiting.seconds // 3600} h: {link}"
        reminder_alert = alerts.Alert(
            dataset, day, "remind", "review_reminder", cause, attempt["dag_run_id"], link
        )
        _alert(settings, reminder_alert)
        reminder = {"link": link, "at": now.isoformat()}
        ledger.record_event(engine, dataset, day, "review_reminder", reminder, attempt["id"])
        reminded.append({"dataset": dataset, "day": day, "review_run_id": run_id})
    return reminded


def _happened(event: dict[str, Any]) -> datetime:
    """When an event happened: a reminder says when it was due (the check's "now");
    SQLite hands timestamps back without their zone, and they were written in UTC."""
    if "at" in event["detail"]:
        return datetime.fromisoformat(event["detail"]["at"])
    moment = event["at"]
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def reconcile_receipts(settings: Settings) -> list[dict[str, Any]]:
    """Mark exported attempts ``received`` when the U.S. receipt vouches for their manifest."""
    from crossborder import landing

    engine = ledger.connect(settings.ledger_url)
    s3 = settings.s3_client()
    reconciled = []
    for row in ledger.exported_awaiting_receipt(engine):
        dataset, day = row["dataset"], row["partition_date"]
        receipt = landing.read_receipt(s3, settings.us_bucket, dataset, day)
        if not receipt or receipt.get("manifest_sha256") != row["manifest_sha256"]:
            continue
        ledger.update_attempt(engine, row["id"], state="received", receipt=receipt)
        ledger.record_event(engine, dataset, day, "received", receipt, attempt_id=row["id"])
        reconciled.append({"dataset": dataset, "day": day, "attempt": row["attempt"]})
    return reconciled


def check_export_deadlines(
    settings: Settings,
    base_url: str,
    now: datetime | None = None,
    policies: Path | None = None,
) -> list[dict[str, Any]]:
    """Alert once per dataset and day when the day's export is not finished by the
    policy's ``export_time`` (Shanghai, the next morning). A day held for review, blocked
    or rejected is not late: its own alert has already gone out. Draft and invalid
    policies export nothing, so they have no deadline."""
    from crossborder.policy import policy_files, read_schedule

    now = (now or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
    engine = ledger.connect(settings.ledger_url)
    overdue = []
    for path in policy_files(policies):
        schedule = read_schedule(path)
        if schedule["status"] != "active":
            continue
        dataset, due_at = schedule["dataset"], time.fromisoformat(schedule["export_time"])
        # The latest day whose export is already due.
        day = now.date() - timedelta(days=1 if now.time() >= due_at else 2)
        attempt = ledger.latest_attempt(engine, dataset, day.isoformat())
        state = attempt["state"] if attempt else "not started"
        if state in ("exported", "received", "awaiting_review", "blocked", "rejected"):
            continue
        if _alerted(engine, dataset, day.isoformat(), "export_overdue"):
            continue
        run_id = attempt["dag_run_id"] if attempt else ""
        dag_id = ui.export_dag_id(dataset)
        link = ui.absolute(base_url, ui.run_url(dag_id, run_id) if run_id else ui.dag_url(dag_id))
        error = f" ({attempt['error']})" if attempt and attempt["error"] else ""
        cause = (
            f"the export of {day} was due by {schedule['export_time']} Shanghai time and is "
            f"not finished: {state}{error}"
        )
        alert = alerts.Alert(dataset, day.isoformat(), "deadline", "export_overdue", cause,
                             run_id or "none", link)  # fmt: skip
        alerts.emit(alert, settings.ledger_url, channels=settings.alert_channels,
                    existing_only=True)  # fmt: skip
        overdue.append({"dataset": dataset, "day": day.isoformat(), "state": state})
    return overdue


def _alerted(engine: Any, dataset: str, day: str, kind: str, attempt_id: int | None = None) -> bool:
    """Has an alert of ``kind`` been raised for the day (by ``attempt_id``, if given)?"""
    return any(
        e["kind"] == "alert"
        and e["detail"]["kind"] == kind
        and attempt_id in (None, e["attempt_id"])
        for e in ledger.list_events(engine, dataset, day)
    )
