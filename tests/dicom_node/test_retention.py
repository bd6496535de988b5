"""Retention: files of expired DONE/SKIPPED jobs go, everything unfinished stays.

Real spool files (InstanceStore), a real job database (JobStore) and real result folders
(Outbox); only the clock is chosen by the test, so "168 hours later" takes no time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.jobs import JobState, JobStore
from dicom_node.layout import StorageLayout
from dicom_node.outbox import Outbox
from dicom_node.priors import PriorIndex
from dicom_node.retention import (
    PURGE_PREFIX,
    Retention,
    remove_series_folder,
    restore_interrupted,
)
from dicom_node.status_page import THUMBNAIL_NAME
from dicom_node.storage import InstanceStore
from tests.dicom_node.instances import STUDY_UID, ct_slice

HOUR = 3600.0
PEER = "PACS"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Node:
    """The storage parts retention works on, under one folder."""

    def __init__(self, root: Path, clock: Clock) -> None:
        self.clock = clock
        self.jobs = JobStore.for_storage_dir(root, clock=clock)
        self.spool = InstanceStore(root)
        self.outbox = Outbox.for_storage_dir(root)
        self.kept = Outbox.kept_results(root)
        self.busy: set[tuple[str, str]] = set()
        self.retention = Retention(
            self.jobs,
            self.spool,
            self.outbox,
            self.kept,
            retention_hours=168,
            busy=lambda study, series: (study, series) in self.busy,
        )

    def receive(self, series: str, n: int = 2, first: int = 1) -> int:
        job_id = 0
        for index in range(first, first + n):
            ds = ct_slice(f"{series}.{index}")
            ds.SeriesInstanceUID = series
            self.spool.store_dataset(ds)
            job_id = self.jobs.record_instance(STUDY_UID, series, PEER, self.clock.now)
        return job_id

    def finish(self, job_id: int, state: JobState) -> None:
        """Drive a RECEIVED job to ``state`` the way the node does, with result folders."""
        self.jobs.mark_queued(job_id)
        claimed = self.jobs.claim_next(self.clock.now)
        assert claimed is not None and claimed.id == job_id
        if state is JobState.SKIPPED:
            self.jobs.mark_skipped(job_id, "not a head")
            return
        self.kept.prepare(job_id)
        self.kept.add(job_id, ct_slice(), "seg")
        outbox = self.outbox.refill(job_id, sorted(self.kept.job_dir(job_id).glob("*.dcm")))
        self.jobs.mark_sending(job_id, outbox, result_version=1)
        if state is JobState.DONE:
            self.jobs.mark_done(job_id)
        elif state is JobState.FAILED:
            self.jobs.mark_failed(job_id, "peer refused")

    def series_files(self, series: str) -> list[Path]:
        return self.spool.series_paths(STUDY_UID, series)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "storage", Clock())


def test_only_expired_done_and_skipped_jobs_lose_their_files(node: Node) -> None:
    done = node.receive("1.2.3.1")
    node.finish(done, JobState.DONE)
    skipped = node.receive("1.2.3.2")
    node.finish(skipped, JobState.SKIPPED)
    failed = node.receive("1.2.3.3")
    node.finish(failed, JobState.FAILED)
    sending = node.receive("1.2.3.4")
    node.finish(sending, JobState.SENDING)
    node.receive("1.2.3.5")  # instances still arriving
    # A series analysed (DONE) whose late instances made a second job that is still open.
    reanalysed = node.receive("1.2.3.6")
    node.finish(reanalysed, JobState.DONE)

    node.clock.now += 167 * HOUR
    late = node.receive("1.2.3.6", n=1, first=3)
    assert node.retention.run_once(node.clock.now).jobs_purged == 0, "nothing is 168 h old yet"

    node.clock.now += 2 * HOUR
    report = node.retention.run_once(node.clock.now)

    assert (report.jobs_purged, report.series_removed) == (3, 2)
    assert node.series_files("1.2.3.1") == [] and node.series_files("1.2.3.2") == []
    assert not node.kept.job_dir(done).exists()
    assert node.jobs.get(done).purged_at == node.clock.now
    assert node.jobs.get(done).state is JobState.DONE, "the row stays for 'jobs list'"
    # Unfinished, FAILED and the re-analysed series keep every file.
    assert len(node.series_files("1.2.3.3")) == 2 and node.kept.job_dir(failed).is_dir()
    assert len(node.series_files("1.2.3.4")) == 2 and node.outbox.job_dir(sending).is_dir()
    assert len(node.series_files("1.2.3.5")) == 2
    assert len(node.series_files("1.2.3.6")) == 3, "the open job of the series needs them all"
    assert node.jobs.get(late).state is JobState.RECEIVED
    assert node.jobs.get(reanalysed).purged_at is not None  # its results folder went
    assert not node.kept.job_dir(reanalysed).exists()
    # A second round finds nothing more to do.
    assert node.retention.run_once(node.clock.now).jobs_purged == 0


def test_a_jobs_thumbnail_goes_with_its_results_and_the_prior_index_stays(
    node: Node, tmp_path: Path
) -> None:
    """Files the results branch added: ``results/<job>/thumbnail.png`` belongs to the job's
    results; ``priors.sqlite3`` (identifiers and volumes only) outlives them, so a follow-up
    study months later is still compared; pending notifications are not retention's."""
    root = tmp_path / "storage"
    layout = StorageLayout(root)
    done = node.receive("1.2.3.1")
    node.finish(done, JobState.DONE)
    thumbnail = layout.result_dir(done) / THUMBNAIL_NAME
    thumbnail.write_bytes(b"png")
    priors = PriorIndex(layout.priors_db)
    priors.close()
    pending = layout.notifications / "0000000001-00.json"
    pending.parent.mkdir()
    pending.write_text("{}")

    node.clock.now += 169 * HOUR
    assert node.retention.run_once(node.clock.now).jobs_purged == 1

    assert not thumbnail.exists() and not layout.result_dir(done).exists()
    assert layout.priors_db.is_file()
    assert pending.is_file()


def test_a_series_that_receives_instances_during_removal_keeps_its_folder(node: Node) -> None:
    job = node.receive("1.2.3.1")
    node.finish(job, JobState.SKIPPED)
    node.clock.now += 200 * HOUR
    node.busy.add((STUDY_UID, "1.2.3.1"))  # the tracker saw a new instance of the series
    report = node.retention.run_once(node.clock.now)
    assert report.series_removed == 0
    assert len(node.series_files("1.2.3.1")) == 2, "given back after the rename"
    assert not list(node.spool.incoming_dir.glob(f"*/{PURGE_PREFIX}*"))


def test_a_new_job_recorded_after_the_decision_gives_the_folder_back(node: Node) -> None:
    node.receive("1.2.3.1")
    folder = node.spool.series_dir(STUDY_UID, "1.2.3.1")

    def new_job_arrives(study: str, series: str) -> bool:
        # The instance landed in the (renamed) folder and its job was recorded just before
        # retention looked: exactly the interleaving the rename-then-check order handles.
        return True

    assert remove_series_folder(node.spool, STUDY_UID, "1.2.3.1", new_job_arrives) is False
    assert sorted(p.name for p in folder.iterdir()) == ["1.2.3.1.1.dcm", "1.2.3.1.2.dcm"]


def test_a_removal_interrupted_by_a_crash_is_given_back_at_start(node: Node) -> None:
    node.receive("1.2.3.1")
    folder = node.spool.series_dir(STUDY_UID, "1.2.3.1")
    hidden = folder.with_name(f"{PURGE_PREFIX}1.2.3.1-0123abcd")
    folder.rename(hidden)  # where a SIGKILL between rename and delete leaves it
    assert restore_interrupted(node.spool) == 1
    assert len(node.series_files("1.2.3.1")) == 2
    assert not hidden.exists()
