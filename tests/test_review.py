"""CAC review without Airflow: the gates' judgement, four eyes, the export after approval,
and the upload refusing every bypass (real ledger, real S3 API, real files)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from crossborder import landing, ledger, review, steps, synthetic
from crossborder.errors import ExportRefused, PolicyInvalid
from crossborder.localenv import US_BUCKET, LocalEnv

DATASET, DAY = "adas_events", "2026-11-23"
CONFIG = review.load_config()
LI, ZHANG, CHEN = (a["id"] for a in CONFIG.approvers)
REF = "CAC-SA-2026-000123"


def answer(who: str | None, option: str = review.APPROVE, ref: str | None = REF, reason=None):
    """A gate's answer as the HITL operator returns it."""
    return {
        "chosen_options": [option],
        "params_input": {"cac_reference": ref, "reason": reason},
        "responded_by_user": {"id": who, "name": who} if who else None,
        "responded_at": "2026-11-24T03:00:00+00:00",
    }


# --- configuration and judgement -----------------------------------------------------------


def test_shipped_configuration_asks_two_of_three_approvers_and_rejects_after_seven_days():
    assert CONFIG.approvals_required == 2 and len(CONFIG.approver_ids) == 3
    assert CONFIG.response_timeout == timedelta(days=7)
    assert CONFIG.reference_is_valid(REF)
    assert not CONFIG.reference_is_valid("CAC-2026-123") and not CONFIG.reference_is_valid(None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("approvers: [{id: a, name: A}]\nreference_pattern: x\n", "four eyes"),
        ("approvers: [{id: a, name: A}, {id: b, name: B}]\nreference_pattern: '('\n", "review"),
        ("approvers: []\n", "reference_pattern"),
    ],
)
def test_a_configuration_that_cannot_give_four_eyes_is_refused(tmp_path, text, message):
    path = tmp_path / "review.yaml"
    path.write_text(text)
    with pytest.raises(PolicyInvalid, match=message):
        review.load_config(path)


@pytest.mark.parametrize(
    ("given", "excluded", "why"),
    [
        (answer(LI, review.REJECT, reason="camera clips not blurred"), set(), "rejected by"),
        (answer(LI, review.REJECT), set(), "no reason given"),
        (answer(None, review.REJECT), set(), "timeout"),
        (answer("mallory"), set(), "not a configured approver"),
        (answer(LI), {LI}, "may not approve twice"),
        (answer(LI, ref="CAC-XX-2026-1"), set(), "without a valid CAC reference"),
        (answer(LI, ref=None), set(), "without a valid CAC reference"),
    ],
)
def test_only_a_configured_approver_with_a_reference_approves(given, excluded, why):
    approval, reason = review.judge_answer(given, CONFIG, excluded=excluded)
    assert approval is None and why in reason


def test_a_valid_answer_is_an_approval_with_who_when_and_reference():
    approval, why = review.judge_answer(answer(ZHANG), CONFIG, excluded={LI})
    assert why == "" and approval.to_dict() == {
        "by": ZHANG,
        "at": "2026-11-24T03:00:00+00:00",
        "cac_reference": REF,
    }


def test_recorded_approvals_count_once_per_approver_and_never_for_the_trigger():
    one = {"by": LI, "at": "t", "cac_reference": REF}
    with pytest.raises(ExportRefused, match="holds 1"):
        review.require_approved([one, dict(one)], CONFIG, dataset=DATASET, day=DAY)
    two = [one, {"by": ZHANG, "at": "t", "cac_reference": REF}]
    assert len(review.require_approved(two, CONFIG, dataset=DATASET, day=DAY)) == 2
    with pytest.raises(ExportRefused):
        review.require_approved(two, CONFIG, dataset=DATASET, day=DAY, excluded={ZHANG})


# --- the review flow on real data ----------------------------------------------------------


@pytest.fixture
def env(tmp_path, s3_endpoint, s3_client):
    local = LocalEnv(tmp_path / "env", s3_endpoint)
    if US_BUCKET in {b["Name"] for b in s3_client.list_buckets().get("Buckets", [])}:
        for key in landing.list_keys(s3_client, US_BUCKET, ""):
            s3_client.delete_object(Bucket=US_BUCKET, Key=key)
    local.prepare()
    return local


@pytest.fixture
def case(env):
    """adas_events for DAY, through the daily steps to the hand-over, and the review opened."""
    synthetic.generate_partition(env.source, DATASET, date.fromisoformat(DAY), rows=1_000)
    cfg = env.settings()
    extracted = steps.extract(cfg, DATASET, DAY, "daily-1")
    quality = steps.validate(cfg, extracted, "daily-1")
    staged = steps.anonymize(cfg, extracted, "daily-1")
    verification = steps.verify(cfg, staged, "daily-1")
    decision = steps.decide(cfg, DATASET, DAY, "daily-1", quality, staged, verification)
    assert decision["route"] == "cac_review"
    handover = {
        "extracted": extracted,
        "quality": quality,
        "staged": staged,
        "verification": verification,
    }
    steps.record_held(cfg, DATASET, DAY, "daily-1", decision, handover)
    return steps.open_review(cfg, DATASET, DAY, "daily-1", "review-1", CHEN)


GATES = ("first_approval", "second_approval")


def _judge(env: LocalEnv, answers: list[dict], review_run: str = "review-1") -> dict:
    """What the gates and the judge tasks do: each answer into the ledger, then judged."""
    cfg = env.settings()
    for gate, given in zip(GATES, answers, strict=False):
        steps.record_answer(cfg, DATASET, DAY, "daily-1", review_run, gate, given)
    return steps.judge_gates(cfg, DATASET, DAY, "daily-1", review_run, list(GATES[: len(answers)]))


def _export(env: LocalEnv, case: dict) -> dict:
    cfg = env.settings()
    parts = steps.plan_upload(cfg, case["staged"], case["decision"])
    objects = [steps.upload_part(cfg, part) for part in parts]
    return steps.publish(
        cfg,
        DATASET,
        DAY,
        case["export_run_id"],
        objects,
        case["quality"],
        case["staged"],
        case["verification"],
        case["decision"],
        {"rows": case["rows_in"]},
    )


def _keys(env: LocalEnv) -> list[str]:
    return landing.list_keys(env.s3_client(), US_BUCKET, landing.partition_prefix(DATASET, DAY))


def _attempt(env: LocalEnv) -> dict:
    return ledger.latest_attempt(ledger.connect(env.ledger_url), DATASET, DAY)


def test_the_approver_sees_what_would_leave_why_and_the_checks(case):
    assert case["subject"].startswith(f"CAC review: {DATASET} {DAY}")
    body = case["body"]
    assert "categories.camera_media" in body and "| `clip_uri` | important | keep |" in body
    assert "| `vin` | personal | pseudonymize (namespace=vin) |" in body
    assert "Quality suite `adas_events.raw`: **passed**" in body
    assert "Anonymization verification: **review**" in body  # small k groups go to review


def test_two_approvals_export_with_the_approvals_in_manifest_and_ledger(env, case):
    first = _judge(env, [answer(LI)])
    assert (first["approved"], first["rejected"]) == (False, False)  # one more gate to go
    both = _judge(env, [answer(LI), answer(ZHANG)])
    assert both["approved"]
    result = _export(env, case)
    assert result["route"] == "cac_review"
    manifest = json.loads(
        landing.get_bytes(env.s3_client(), US_BUCKET, landing.manifest_key(DATASET, DAY))
    )
    assert [a["by"] for a in manifest["approvals"]] == [LI, ZHANG]
    assert {a["cac_reference"] for a in manifest["approvals"]} == {REF}
    row = _attempt(env)
    assert (row["state"], row["route"]) == ("exported", "cac_review")
    assert row["approvals"] == manifest["approvals"]
    # the reviewed partition's vehicles now count toward the year's thresholds
    with ledger.connect(env.ledger_url).connect() as conn:
        counted = conn.execute(
            sa.select(sa.func.count()).where(ledger.exported_subjects.c.attempt_id == row["id"])
        ).scalar_one()
    assert counted == len(set(pq.read_table(case["staged"]["files"][0]["path"])["vin"].to_pylist()))


@pytest.mark.parametrize(
    ("answers", "why"),
    [
        ([answer(LI, review.REJECT, reason="faces visible in clips")], "faces visible"),
        ([answer(None, review.REJECT)], "timeout"),
        ([answer(LI), answer(LI)], "may not approve twice"),
        ([answer(CHEN)], "may not approve twice or approve a review they triggered"),
        ([answer(LI), answer(ZHANG, ref="not-a-reference")], "without a valid CAC reference"),
    ],
)
def test_a_review_without_two_valid_approvals_is_recorded_and_nothing_leaves(
    env, case, answers, why
):
    outcome = _judge(env, answers)
    assert outcome["rejected"] and why in outcome["why"]
    row = _attempt(env)
    assert row["state"] == "rejected" and why in row["error"]
    assert row["approvals"] == []
    with pytest.raises(ExportRefused, match="holds 0"):
        _export(env, case)
    assert _keys(env) == []
    events = ledger.list_events(ledger.connect(env.ledger_url), DATASET, DAY)
    kinds = [e["detail"]["kind"] for e in events if e["kind"] == "alert"]
    assert ("review_timeout" if why == "timeout" else "review_rejected") in kinds


# --- bypasses ------------------------------------------------------------------------------


def _forge_approvals(env: LocalEnv, approvals: list[dict]) -> None:
    engine = ledger.connect(env.ledger_url)
    ledger.update_attempt(engine, _attempt(env)["id"], approvals=approvals)


@pytest.mark.parametrize(
    "approvals",
    [
        [],
        [{"by": LI, "at": "t", "cac_reference": REF}],
        [{"by": LI, "at": "t", "cac_reference": REF}] * 2,
        [{"by": LI, "at": "t", "cac_reference": REF}, {"by": "mallory", "at": "t",
                                                        "cac_reference": REF}],
        [{"by": LI, "at": "t", "cac_reference": REF}, {"by": CHEN, "at": "t",
                                                        "cac_reference": REF}],
        [{"by": LI, "at": "t", "cac_reference": "x"}, {"by": ZHANG, "at": "t",
                                                        "cac_reference": REF}],
    ],
)  # fmt: skip
def test_upload_refuses_review_data_without_two_valid_recorded_approvals(env, case, approvals):
    _forge_approvals(env, approvals)  # whatever is written there, the rules still apply
    with pytest.raises(ExportRefused, match="recorded approvals"):
        steps.plan_upload(env.settings(), case["staged"], case["decision"])
    assert _keys(env) == []


def test_inputs_claiming_cleared_do_not_export_review_data(env, case):
    forged = {**case["decision"], "route": "cleared"}
    with pytest.raises(ExportRefused, match="routed 'cac_review'"):
        steps.plan_upload(env.settings(), case["staged"], forged)
    with pytest.raises(ExportRefused):
        steps.publish(
            env.settings(), DATASET, DAY, "daily-1", [], case["quality"], case["staged"],
            case["verification"], forged, {"rows": 1},
        )  # fmt: skip
    assert _keys(env) == []


def test_blocked_data_never_leaves_even_with_approvals(env, case):
    _forge_approvals(
        env,
        [
            {"by": LI, "at": "t", "cac_reference": REF},
            {"by": ZHANG, "at": "t", "cac_reference": REF},
        ],
    )
    engine = ledger.connect(env.ledger_url)
    ledger.update_attempt(engine, _attempt(env)["id"], route="blocked")
    for route in ("blocked", "cac_review", "cleared"):
        with pytest.raises(ExportRefused):
            steps.plan_upload(env.settings(), case["staged"], {**case["decision"], "route": route})
    assert _keys(env) == []


def test_a_newer_daily_run_supersedes_the_review(env, case):
    _judge(env, [answer(LI), answer(ZHANG)])
    ledger.begin_attempt(ledger.connect(env.ledger_url), DATASET, DAY, "daily-2")
    with pytest.raises(ExportRefused, match="latest attempt"):
        steps.plan_upload(env.settings(), case["staged"], case["decision"])
    with pytest.raises(ExportRefused, match="not the day's latest export attempt"):
        steps.open_review(env.settings(), DATASET, DAY, "daily-1", "review-2", None)


# --- reminders -----------------------------------------------------------------------------


def test_open_reviews_are_reminded_once_per_period_with_a_link(env, case):
    cfg = env.settings()
    soon = datetime.now(UTC) + timedelta(hours=1)
    assert steps.remind_open_reviews(cfg, "http://ui.example", now=soon) == []
    later = datetime.now(UTC) + CONFIG.remind_after + timedelta(minutes=1)
    (reminded,) = steps.remind_open_reviews(cfg, "http://ui.example", now=later)
    assert reminded == {"dataset": DATASET, "day": DAY, "review_run_id": "review-1"}
    assert steps.remind_open_reviews(cfg, "http://ui.example", now=later) == []
    events = ledger.list_events(ledger.connect(env.ledger_url), DATASET, DAY)
    alert = [e["detail"] for e in events if e["kind"] == "alert"][-1]
    assert alert["kind"] == "review_reminder"
    assert "http://ui.example/dags/cn_cac_review/runs/review-1/required_actions" in alert["cause"]
    _judge(env, [answer(LI, review.REJECT, reason="no")])
    much_later = later + 2 * CONFIG.remind_after
    assert steps.remind_open_reviews(cfg, "http://ui.example", now=much_later) == []


def test_review_configuration_file_is_part_of_the_repository():
    assert Path(review.config_path()).is_file()


def test_a_malformed_reference_reaches_the_judgement_instead_of_failing_the_gate():
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk.exceptions import ParamValidationError

    from crossborder.review_dag import _gate

    gate = _gate("first_approval", CONFIG)
    malformed = {"cac_reference": "CAC-XX-1", "reason": None}
    with pytest.raises(ParamValidationError):  # Airflow's own check would fail the task
        HITLOperator.validate_params_input(gate, malformed)
    gate.validate_params_input(malformed)  # ours passes the answer on to the judgement
    approval, why = review.judge_answer(
        {**answer(LI), "params_input": malformed}, CONFIG, excluded=set()
    )
    assert approval is None and "without a valid CAC reference" in why
    with pytest.raises(ValueError, match="does not match params"):
        gate.validate_params_input({"cac_reference": REF})  # a missing field still fails


# --- review findings: stale approvals, forged answers, settled states, second reviews ---------


def test_re_staging_voids_the_approvals_of_earlier_staging(env, case):
    assert _judge(env, [answer(LI), answer(ZHANG)])["approved"]
    cfg = env.settings()
    extracted = steps.extract(cfg, DATASET, DAY, "daily-1")  # on-call clears the daily run
    steps.anonymize(cfg, extracted, "daily-1")
    assert _attempt(env)["approvals"] == []
    with pytest.raises(ExportRefused):
        steps.plan_upload(cfg, case["staged"], case["decision"])
    assert _keys(env) == []


def test_only_the_files_handed_over_can_leave_with_the_approvals(env, case):
    assert _judge(env, [answer(LI), answer(ZHANG)])["approved"]
    swapped = {
        **case["staged"],
        "files": [{**f, "sha256": "0" * 64} for f in case["staged"]["files"]],
    }
    with pytest.raises(ExportRefused, match="not the ones handed over"):
        steps.plan_upload(env.settings(), swapped, case["decision"])


def test_the_judgement_reads_answers_from_the_ledger_not_from_its_inputs(env, case):
    # nothing recorded by the gates: whatever a task's XCom claims, there is no approval
    outcome = steps.judge_gates(env.settings(), DATASET, DAY, "daily-1", "review-1", list(GATES))
    assert outcome["rejected"] and "timeout" in outcome["why"]


def test_a_settled_attempt_is_never_reopened_by_a_re_run(env, case):
    _judge(env, [answer(LI, review.REJECT, reason="faces")])
    with pytest.raises(ExportRefused, match="already rejected"):
        steps.record_held(env.settings(), DATASET, DAY, "daily-1", case["decision"], {"x": 1})
    assert _attempt(env)["state"] == "rejected" and "faces" in _attempt(env)["error"]


def test_a_second_review_run_for_the_same_hand_over_is_refused(env, case):
    again = steps.open_review(env.settings(), DATASET, DAY, "daily-1", "review-1", CHEN)
    assert again["attempt_id"] == case["attempt_id"]  # re-running the same review is fine
    with pytest.raises(ExportRefused, match="already open"):
        steps.open_review(env.settings(), DATASET, DAY, "daily-1", "review-2", None)


def test_a_review_alert_for_an_unknown_daily_run_creates_no_attempt(env, case):
    from crossborder import alerts

    wrong = alerts.Alert(DATASET, DAY, "open_review", "export_refused", "x", "daily-typo")
    alerts.emit(wrong, env.ledger_url, fail_attempt=True, existing_only=True)
    assert _attempt(env)["dag_run_id"] == "daily-1"  # still the day's latest


def test_the_review_configuration_must_match_the_two_gates(tmp_path):
    text = (
        review.config_path().read_text().replace("approvals_required: 2", "approvals_required: 3")
    )
    path = tmp_path / "review.yaml"
    path.write_text(text)
    with pytest.raises(PolicyInvalid, match="approvals_required: 2"):
        review.load_config(path)
