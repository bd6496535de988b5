"""The running node posts notifications next to sending results, and a failing endpoint
never holds the results back (real DICOM in and out, real HTTP endpoints on loopback)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from dicom_node.audit import read_audit
from dicom_node.config import parse_config
from dicom_node.jobs import JobState
from dicom_node.layout import StorageLayout
from dicom_node.notifications.messages import JSON_MESSAGE_KEYS
from dicom_node.service import NodeService
from tests.dicom_node.http_hook import HookServer, hook_server
from tests.dicom_node.test_service import (
    JOB_TIMEOUT_S,
    NODE_AE,
    PACS_AE,
    STOP_TIMEOUT_S,
    ResultPeer,
    _send,
    _wait_for_job,
    result_peer,
)

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]
_ = result_peer  # the fixture, imported for this module

FAILING_STATUS: Final[int] = 503


@pytest.fixture
def hooks() -> Iterator[tuple[HookServer, HookServer]]:
    with hook_server([200]) as good, hook_server([FAILING_STATUS]) as failing:
        yield good, failing


def test_json_and_fhir_notifications_arrive_and_a_failing_endpoint_is_retried(
    tmp_path: Path,
    free_port: int,
    result_peer: ResultPeer,
    engine_cache_dir: Path,
    head_ct_dir: Path,
    hooks: tuple[HookServer, HookServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, failing = hooks
    config = parse_config(
        {
            "node": {"ae_title": NODE_AE, "port": free_port, "storage_dir": str(tmp_path)},
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": result_peer.port}],
            "model": {"cache_dir": str(engine_cache_dir)},
            "sender": {"max_attempts": 20, "initial_backoff_s": 0.2, "max_backoff_s": 0.4},
            "notifications": [
                {"url": good.url, "send_on": "all", "format": "json"},
                {"url": good.url, "send_on": "all", "format": "fhir"},
                {"url": failing.url, "send_on": "all", "format": "json"},
            ],
        }
    )
    node = NodeService(config)
    node.start()
    try:
        with caplog.at_level(logging.INFO, logger="dicom_node"):
            _send(node.port, sorted(head_ct_dir.glob("*.dcm")))
            released = time.monotonic()
            job = _wait_for_job(node, lambda j: j.state is JobState.DONE, "DONE", JOB_TIMEOUT_S)
            received = good.wait_for(2, 30.0)
            attempts = failing.wait_for(3, 30.0)
            deadline = time.monotonic() + 10.0  # the audit line follows the endpoint's answer
            while len(_audited(tmp_path, failing.url)) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        node.stop(STOP_TIMEOUT_S)

    assert len(result_peer.received) == 2, "SEG and SR reached the PACS"
    by_type = {r.content_type: json.loads(r.body) for r in received}
    message = by_type["application/json"]
    assert tuple(message) == JSON_MESSAGE_KEYS
    result = json.loads((tmp_path / "results" / str(job.id) / "result.json").read_text())
    assert message["series_instance_uid"] == result["series_instance_uid"]
    assert message["volumes_ml"] == result["volumes_ml"]
    report = DiagnosticReport.model_validate(by_type["application/fhir+json"])
    assert report.status == "preliminary"
    print(f"\nrelease -> notification: {min(r.at for r in received) - released:.2f} s")

    assert len(attempts) >= 3, "the failing endpoint was tried again"
    assert "HTTP 503" in caplog.text
    audited = _audited(tmp_path, failing.url)
    assert len(audited) >= 3 and {r["status"] for r in audited} == {"retry"}
    assert all(r["reason"].startswith(f"job {job.id}: result version 1, ") for r in audited)
    assert message["result_version"] == result["result_version"] == job.result_version == 1
    # Everything the results branch adds under storage_dir is private (DESIGN.md).
    layout = StorageLayout(tmp_path)
    for path in (layout.priors_db, layout.result_dir(job.id) / "thumbnail.png"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (layout.notifications, layout.result_dir(job.id)):
        assert path.stat().st_mode & 0o777 == 0o700, path
    good_lines = _audited(tmp_path, good.url)
    assert [r["status"] for r in good_lines] == ["sent", "sent"], "json and fhir posts audited"
    assert all(r["series_instance_uid"] == result["series_instance_uid"] for r in good_lines)


def _audited(storage_dir: Path, url: str) -> list[dict[str, Any]]:
    """The node's notification_sent audit lines for one target."""
    path = StorageLayout(storage_dir).audit_log
    if not path.is_file():
        return []
    return [
        r
        for r in read_audit(path)
        if r["event"] == "notification_sent" and r["peer_address"] == url
    ]
