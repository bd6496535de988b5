"""``ichnet-node jobs list|show|retry|resend --config FILE`` on a real storage folder.

The storage is built with the node's own classes (job database, spool, result folders), then
the console entry point runs as an operator would call it; the effects are read back from disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from dicom_node.audit import AuditLog, read_audit
from dicom_node.cli import EXIT_OK, EXIT_UNUSABLE, main
from dicom_node.jobs import JobState, JobStore
from dicom_node.outbox import Outbox, pending_files
from dicom_node.storage import InstanceStore
from tests.dicom_node.instances import STUDY_UID, ct_slice

PEER = "PACS"


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """Three finished jobs: 1 DONE (results kept, sent), 2 SKIPPED, 3 FAILED while sending."""
    root = tmp_path / "storage"
    spool = InstanceStore(root)
    kept = Outbox.kept_results(root)
    outbox = Outbox.for_storage_dir(root)
    with JobStore.for_storage_dir(root, audit=AuditLog.for_storage_dir(root)) as jobs:
        for series, end in (("1.2.3.1", "done"), ("1.2.3.2", "skip"), ("1.2.3.3", "fail")):
            ds = ct_slice(f"{series}.1")
            ds.SeriesInstanceUID = series
            spool.store_dataset(ds)
            job_id = jobs.record_instance(STUDY_UID, series, PEER, 10.0)
            jobs.mark_queued(job_id)
            jobs.claim_next(11.0)
            if end == "skip":
                jobs.mark_skipped(job_id, "SeriesDescription 'CHEST', not a head")
                continue
            kept.prepare(job_id)
            kept.add(job_id, ct_slice("2.25.1001"), "seg")
            kept.add(job_id, ct_slice("2.25.1002"), "sr")
            sent = outbox.refill(job_id, pending_files(kept.job_dir(job_id)))
            jobs.mark_sending(job_id, sent, result_version=1)
            if end == "done":
                for path in pending_files(sent):
                    path.unlink()
                jobs.mark_done(job_id)
            else:
                jobs.mark_failed(job_id, "peer PACS returned Refused: Out of Resources (0xA700)")
    return root


@pytest.fixture
def config(tmp_path: Path, storage: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "node": {"storage_dir": str(storage)},
                "peers": [{"ae_title": PEER, "host": "127.0.0.1", "port": 4242}],
            }
        )
    )
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["jobs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_one_line_per_job_in_the_design_order(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "list", "--config", str(config))
    assert code == EXIT_OK
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["1", "DONE", "1.2.3.1", PEER, "1", ""],
        ["2", "SKIPPED", "1.2.3.2", PEER, "-", "SeriesDescription 'CHEST', not a head"],
        [
            "3",
            "FAILED",
            "1.2.3.3",
            PEER,
            "1",
            "peer PACS returned Refused: Out of Resources (0xA700)",
        ],
    ]


def test_show_names_state_reason_files_and_unsent_results(
    config: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "show", "3", "--config", str(config))
    assert code == EXIT_OK
    fields = dict(line.split(": ", 1) for line in out.splitlines())
    assert fields["state"] == "FAILED"
    assert fields["reason"].endswith("(0xA700)")
    assert fields["result_version"] == "1"
    assert fields["unsent_results"] == "00-seg.dcm, 01-sr.dcm"
    assert fields["spool"].startswith("1 instance(s) in ")
    assert fields["results"] == str(storage / "results" / "3")


def test_retry_queues_a_new_job_for_the_series(
    config: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "retry", "2", "--config", str(config))
    assert code == EXIT_OK
    assert out.startswith("job 4 QUEUED: analyses series 1.2.3.2 again (re-run of job 2)")
    with JobStore.for_storage_dir(storage) as jobs:
        new = jobs.get(4)
        assert (new.state, new.series_instance_uid, new.calling_ae) == (
            JobState.QUEUED,
            "1.2.3.2",
            PEER,
        )
        assert jobs.get(2).state is JobState.SKIPPED
        # The node's worker (polling the queue) would give it the series' next version.
        assert jobs.next_result_version(STUDY_UID, "1.2.3.2") == 1
        assert jobs.next_result_version(STUDY_UID, "1.2.3.3") == 2

    code, _, err = _run(capsys, "retry", "1", "--config", str(config))
    assert code == EXIT_UNUSABLE
    assert "job 1 is DONE; only a FAILED or SKIPPED job can be retried" in err


def test_resend_puts_the_kept_objects_back_in_the_outbox(
    config: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "resend", "1", "--config", str(config))
    assert code == EXIT_OK
    assert out.startswith("job 1 SENDING: result version 1 goes to PACS again")
    outbox = storage / "outbox" / "1"
    assert [p.name for p in pending_files(outbox)] == ["00-seg.dcm", "01-sr.dcm"]
    # The very objects sent before: same bytes, same SOP Instance UIDs.
    for name in ("00-seg.dcm", "01-sr.dcm"):
        assert (outbox / name).read_bytes() == (storage / "results" / "1" / name).read_bytes()
    assert dcmread(outbox / "00-seg.dcm").SOPInstanceUID == "2.25.1001"
    with JobStore.for_storage_dir(storage) as jobs:
        job = jobs.get(1)
        assert (job.state, job.attempts, job.outbox_dir) == (JobState.SENDING, 0, outbox)

    code, _, err = _run(capsys, "resend", "2", "--config", str(config))
    assert code == EXIT_UNUSABLE
    assert "job 2 is SKIPPED" in err


def test_unknown_jobs_and_missing_ids_are_named(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "show", "99", "--config", str(config))
    assert code == EXIT_UNUSABLE
    assert "no job with id 99" in err
    with pytest.raises(SystemExit):
        main(["jobs", "retry", "--config", str(config)])
    assert "jobs retry needs JOB" in capsys.readouterr().err


def test_the_ends_of_jobs_are_in_the_audit_trail(
    config: Path, storage: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [r["event"] for r in read_audit(storage / "audit" / "audit.jsonl")]
    assert events == ["job_done", "job_skipped", "job_failed"]
