"""Notifications: the messages (DESIGN.md JSON, FHIR R4 DiagnosticReport) and their delivery
to a real local HTTP endpoint, with retries from the on-disk queue."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom import Dataset

from dicom_node.audit import AuditLog, read_audit
from dicom_node.config import NotificationTarget, SenderSection, parse_config
from dicom_node.notifications import NotificationQueue, build_fhir_report, build_json_message
from dicom_node.notifications.messages import JSON_MESSAGE_KEYS, wants
from dicom_node.notifications.notifier import Notifier
from tests.dicom_node.http_hook import hook_server

RESULT = {
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
    "subject": {"any": 0.97, "CPH": 0.1, "IVH": 0.02, "EDH": 0.9, "SDH": 0.4, "SAH": 0.01},
    "present": {"any": True, "CPH": False, "IVH": False, "EDH": True, "SDH": False, "SAH": False},
    "volumes_ml": {"hemorrhage": 23.1, "CPH": 0.0, "IVH": 0.0, "EDH": 22.8, "SDH": 0.3, "SAH": 0.0},
    "slices": [],
    "result_version": 2,
}
NEGATIVE = {**RESULT, "present": dict.fromkeys(RESULT["present"], False)}
RETRIES = SenderSection(max_attempts=3, initial_backoff_s=1.0, max_backoff_s=4.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _source() -> Dataset:
    source = Dataset()
    source.AccessionNumber = "ACC123"
    source.PatientID = "P-1"
    source.IssuerOfPatientID = "HOSPITAL"
    source.PatientName = "Doe^Jane"
    source.PatientBirthDate = "19500101"
    source.StudyDate = "20261204"
    source.StudyTime = "081500.123"
    return source


def test_json_message_has_exactly_the_design_keys() -> None:
    message = build_json_message(RESULT, _source())
    assert tuple(message) == JSON_MESSAGE_KEYS
    assert message["accession_number"] == "ACC123"
    assert message["result_version"] == 2, "the result's (the job's) version, not a constant"
    assert message["comparison"] is None
    assert message["volumes_ml"] == RESULT["volumes_ml"]


def test_fhir_report_is_a_valid_preliminary_diagnostic_report_naming_the_study() -> None:
    report = build_fhir_report(RESULT, _source(), issued=datetime.datetime(2026, 12, 4, 9, 0))
    parsed = DiagnosticReport.model_validate(report)  # raises if the structure is wrong
    assert parsed.status == "preliminary"
    assert report["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{RESULT['study_instance_uid']}",
    }
    assert report["effectiveDateTime"] == "2026-12-04"  # no TimezoneOffsetFromUTC: date only
    with_zone = _source()
    with_zone.TimezoneOffsetFromUTC = "+0100"
    dated = build_fhir_report(RESULT, with_zone, issued=datetime.datetime(2026, 12, 4, 9, 0))
    assert dated["effectiveDateTime"] == "2026-12-04T08:15:00+01:00"
    assert report["subject"]["identifier"]["value"] == "P-1"
    assert "Doe" not in json.dumps(report) and "1950" not in json.dumps(report)
    codes = {c["coding"][0]["code"] for c in report["conclusionCode"]}
    assert codes == {"1386000"}  # ICH; EDH has no verified SNOMED code (local code left out)
    assert "22.8 mL" in report["conclusion"] and "not for diagnostic use" in report["conclusion"]


def test_send_on_positive_skips_negative_results() -> None:
    assert wants("positive", RESULT) and not wants("positive", NEGATIVE)
    assert wants("all", NEGATIVE)


def test_notification_urls_must_be_http() -> None:
    config = parse_config({"notifications": [{"url": "https://ris.example.org/hooks/ich"}]})
    [target] = config.notifications
    assert (target.send_on, target.format) == ("positive", "json")
    with pytest.raises(ValueError, match=r"notifications\[0\]\.url: must be an http"):
        parse_config({"notifications": [{"url": "ftp://ris"}]})


def test_delivered_to_a_local_endpoint_in_both_formats(tmp_path: Path) -> None:
    with hook_server() as hook:
        targets = [
            NotificationTarget(url=hook.url, format="json"),
            NotificationTarget(url=hook.url, format="fhir", send_on="all"),
        ]
        notifier = Notifier(targets, NotificationQueue(tmp_path / "q"), RETRIES, FakeClock())
        assert notifier.enqueue(7, RESULT, _source()) == 2
        assert notifier.deliver_due() == 2
        received = hook.wait_for(2, 5.0)
    by_type = {r.content_type: json.loads(r.body) for r in received}
    assert tuple(by_type["application/json"]) == JSON_MESSAGE_KEYS
    DiagnosticReport.model_validate(by_type["application/fhir+json"])
    assert notifier.queue.pending() == []


def test_a_failing_endpoint_is_retried_with_backoff_from_disk_and_audited(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    queue_dir = tmp_path / "q"
    audit = AuditLog(tmp_path / "audit" / "audit.jsonl")
    with hook_server([503, 200]) as hook:
        notifier = Notifier(
            [NotificationTarget(url=hook.url)],
            NotificationQueue(queue_dir),
            RETRIES,
            clock,
            audit=audit,
            ae_title="ICHNET",
        )
        notifier.enqueue(8, RESULT, _source())
        assert notifier.deliver_due() == 0
        [pending] = NotificationQueue(queue_dir).pending()  # on disk, as a restart sees it
        assert (pending.attempts, pending.last_error) == (1, "HTTP 503 Service Unavailable")
        assert pending.result_version == 2
        assert notifier.deliver_due() == 0  # not due yet: no second request
        assert len(hook.received) == 1
        clock.now = pending.next_attempt_at
        restarted = Notifier(
            [NotificationTarget(url=hook.url)],
            NotificationQueue(queue_dir),
            RETRIES,
            clock,
            audit=audit,
            ae_title="ICHNET",
        )
        assert restarted.deliver_due() == 1
        assert len(hook.received) == 2
    records = read_audit(audit.path)
    assert [r["event"] for r in records] == ["notification_sent"] * 2
    assert [r["status"] for r in records] == ["retry", "sent"]
    for record in records:  # DESIGN.md's fields, no patient data
        assert set(record) == {
            "time",
            "event",
            "calling_ae",
            "called_ae",
            "peer_address",
            "study_instance_uid",
            "series_instance_uid",
            "status",
            "reason",
        }
        assert record["calling_ae"] == "ICHNET" and record["called_ae"] is None
        assert record["peer_address"] == hook.url
        assert record["study_instance_uid"] == RESULT["study_instance_uid"]
        assert record["series_instance_uid"] == RESULT["series_instance_uid"]
    assert records[0]["reason"] == "job 8: result version 2, HTTP 503 Service Unavailable"
    assert str(records[1]["reason"]).startswith("job 8: result version 2, HTTP 200")
    assert audit.path.stat().st_mode & 0o777 == 0o600
    assert queue_dir.stat().st_mode & 0o777 == 0o700


def test_without_max_attempts_a_post_is_given_up_after_the_senders_horizon(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    horizon = SenderSection(give_up_after_hours=1.0, initial_backoff_s=600.0, max_backoff_s=600.0)
    assert horizon.max_attempts is None
    with hook_server([503]) as hook:
        notifier = Notifier(
            [NotificationTarget(url=hook.url)], NotificationQueue(tmp_path / "q"), horizon, clock
        )
        notifier.enqueue(11, RESULT, _source())
        queued_at = clock.now
        for _ in range(20):
            notifier.deliver_due()
            pending = notifier.queue.pending()
            if not pending:
                break
            clock.now = pending[0].next_attempt_at
    assert notifier.queue.pending() == [], "given up once the next try would pass 1 h"
    # Tries every 600-750 s (jitter) while the next one stays within the hour: 5 to 7 in all.
    assert 5 <= len(hook.received) <= 7
    assert clock.now - queued_at <= 3600.0


def test_a_refusing_endpoint_is_given_up_at_once_and_an_absent_one_after_max_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    with hook_server([400]) as hook:
        notifier = Notifier(
            [NotificationTarget(url=hook.url)], NotificationQueue(tmp_path / "a"), RETRIES, clock
        )
        notifier.enqueue(9, RESULT, _source())
        notifier.deliver_due()
        assert notifier.queue.pending() == [] and len(hook.received) == 1
        closed_url = hook.url
    gone = Notifier(
        [NotificationTarget(url=closed_url, timeout_s=2.0)],
        NotificationQueue(tmp_path / "b"),
        RETRIES,
        clock,
    )
    gone.enqueue(10, RESULT, _source())
    with caplog.at_level(logging.ERROR):
        for _ in range(RETRIES.max_attempts):
            clock.now += RETRIES.max_backoff_s * 2
            gone.deliver_due()
    assert gone.queue.pending() == []
    assert "given up after 3 attempt(s)" in caplog.text
