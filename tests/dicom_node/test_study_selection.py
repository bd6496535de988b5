"""One analysed series per study (dicom_node.study_selection) on a real spool and job queue.

The series are written into an :class:`InstanceStore` and counted on a :class:`JobStore` as the
C-STORE path does; the test then plays the worker: claim the next job, decide, and leave it
SKIPPED or (standing in for the analysis) SENDING -> DONE.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset

from dicom_node.config import SelectionSection, parse_config
from dicom_node.header_evidence import KernelClass
from dicom_node.jobs import JobState, JobStore
from dicom_node.selection import SeriesProfile
from dicom_node.storage import InstanceStore
from dicom_node.study_selection import StudySelector, rank_key
from tests.dicom_node.head_study import HeadStudy, renew_uids

PEER = "PACS"


class Node:
    """Spool + queue + selector, and the worker's decision loop."""

    def __init__(self, storage_dir: Path, rules: SelectionSection) -> None:
        self.store = InstanceStore(storage_dir)
        self.jobs = JobStore.for_storage_dir(storage_dir)
        self.selector = StudySelector(self.store, self.jobs, rules)
        self.now = 1000.0

    def receive(self, *series: Sequence[Dataset]) -> None:
        """Store the series and queue their jobs together, as the assembler does per study."""
        for datasets in series:
            for ds in datasets:
                self.store.store_dataset(ds)
                self.now += 0.01
                self.jobs.record_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, PEER, self.now)
        for job in self.jobs.list_jobs([JobState.RECEIVED]):
            self.jobs.mark_queued(job.id)

    def work(self) -> dict[str, tuple[JobState, str | None]]:
        """Process every queued job; returns series UID -> (final state, reason)."""
        while (job := self.jobs.claim_next(self.now)) is not None:
            decision = self.selector.decide(job)
            if decision.analyse:
                version = self.jobs.next_result_version(
                    job.study_instance_uid, job.series_instance_uid
                )
                outbox = self.store.storage_dir / "outbox" / str(job.id)
                self.jobs.mark_sending(job.id, outbox, result_version=version)
                self.jobs.mark_done(job.id)
            else:
                self.jobs.mark_skipped(job.id, decision.reason)
        return {j.series_instance_uid: (j.state, j.reason) for j in self.jobs.list_jobs()}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path / "storage", SelectionSection())
    yield node
    node.jobs.close()


def _uid(datasets: Sequence[Dataset]) -> str:
    return str(datasets[0].SeriesInstanceUID)


def _instead(winner: Sequence[Dataset], why: str = "soft-tissue kernel, 5.0 mm") -> str:
    return f"skipped: series {_uid(winner)} of this study was analysed instead ({why})"


@pytest.mark.parametrize("order", [("soft", "bone", "thin"), ("bone", "thin", "soft")])
def test_the_soft_tissue_series_is_chosen_whatever_the_order(
    node: Node, synthetic_head_study: HeadStudy, order: tuple[str, ...]
) -> None:
    study = synthetic_head_study
    names = [*order, "coronal", "scout"]
    node.receive(*(study.series[name] for name in names))
    outcome = node.work()
    assert outcome[_uid(study.soft)] == (JobState.DONE, None)
    assert outcome[_uid(study.bone)] == (JobState.SKIPPED, _instead(study.soft))
    assert outcome[_uid(study.thin)] == (JobState.SKIPPED, _instead(study.soft))
    state, reason = outcome[_uid(study.coronal)]
    assert state is JobState.SKIPPED and reason is not None
    assert "not an axial series" in reason
    assert outcome[_uid(study.scout)] == (
        JobState.SKIPPED,
        "skipped: a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER): "
        "projection images are never analysed",
    )


def test_a_better_series_arriving_later_is_analysed_as_a_new_result(
    node: Node, synthetic_head_study: HeadStudy, caplog: pytest.LogCaptureFixture
) -> None:
    study = synthetic_head_study
    node.receive(study.bone)
    assert node.work()[_uid(study.bone)] == (JobState.DONE, None)
    with caplog.at_level(logging.INFO, logger="dicom_node.study_selection"):
        node.receive(study.soft)
        assert node.work()[_uid(study.soft)] == (JobState.DONE, None)
    assert (
        f"study {study.soft[0].StudyInstanceUID}: series {_uid(study.soft)} is analysed as a new "
        f"result: it ranks above series {_uid(study.bone)} analysed before "
        "(soft-tissue kernel, 5.0 mm over sharp kernel, 5.0 mm)"
    ) in caplog.text


def test_a_worse_series_arriving_later_is_skipped_naming_the_analysed_one(
    node: Node, synthetic_head_study: HeadStudy
) -> None:
    study = synthetic_head_study
    node.receive(study.soft)
    node.work()
    node.receive(study.thin)
    assert node.work()[_uid(study.thin)] == (JobState.SKIPPED, _instead(study.soft))


def test_per_study_all_analyses_every_suitable_series(
    tmp_path: Path, synthetic_head_study: HeadStudy
) -> None:
    study = synthetic_head_study
    node = Node(tmp_path / "all", parse_config({"selection": {"per_study": "all"}}).selection)
    try:
        node.receive(study.soft, study.bone, study.thin, study.scout)
        outcome = node.work()
    finally:
        node.jobs.close()
    assert [outcome[_uid(study.series[n])][0] for n in ("soft", "bone", "thin", "scout")] == [
        JobState.DONE,
        JobState.DONE,
        JobState.DONE,
        JobState.SKIPPED,
    ]


def test_prefer_thickness_mm_picks_the_thin_series_when_asked(
    tmp_path: Path, synthetic_head_study: HeadStudy
) -> None:
    study = synthetic_head_study
    rules = parse_config({"selection": {"prefer_thickness_mm": 1.0}}).selection
    node = Node(tmp_path / "thin", rules)
    try:
        node.receive(study.soft, study.thin)
        outcome = node.work()
    finally:
        node.jobs.close()
    assert outcome[_uid(study.thin)] == (JobState.DONE, None)
    assert outcome[_uid(study.soft)] == (
        JobState.SKIPPED,
        _instead(study.thin, "soft-tissue kernel, 1.25 mm"),
    )


def test_a_partial_reconstruction_loses_to_full_coverage(
    tmp_path: Path, synthetic_head_study: HeadStudy
) -> None:
    # A posterior-fossa series ("BASE 3MM"): the lowest 8 slices (40 mm), 3 mm thick, the
    # preferred thickness; the full 5 mm series still wins on coverage.
    study = synthetic_head_study
    base = renew_uids(study.soft[:8])
    for ds in base:
        ds.SliceThickness = "3"
    rules = parse_config({"selection": {"prefer_thickness_mm": 3.0}}).selection
    node = Node(tmp_path / "base", rules)
    try:
        node.receive(base, study.soft)
        outcome = node.work()
    finally:
        node.jobs.close()
    assert outcome[_uid(study.soft)] == (JobState.DONE, None)
    assert outcome[_uid(base)] == (JobState.SKIPPED, _instead(study.soft))


def _profile(**changes: Any) -> SeriesProfile:
    values: dict[str, Any] = {
        "kernel": KernelClass.SOFT,
        "kernel_evidence": "",
        "thickness_mm": 5.0,
        "coverage_mm": 140.0,
        "original": True,
        "axial_deviation_deg": 0.0,
        "slice_count": 28,
    }
    values.update(changes)
    return SeriesProfile(**values)


def test_rank_order_kernel_coverage_thickness_original_axial() -> None:
    ranked = sorted(
        [
            ("g-derived", _profile(original=False)),
            ("c-sharp", _profile(kernel=KernelClass.SHARP)),
            ("d-unknown", _profile(kernel=KernelClass.UNKNOWN)),
            ("e-partial", _profile(coverage_mm=50.0)),
            ("f-thin", _profile(thickness_mm=1.0, slice_count=140)),
            ("h-tilted", _profile(axial_deviation_deg=20.0)),
            ("a-best", _profile()),
            ("b-best-fewer-slices", _profile(slice_count=27)),
        ],
        key=lambda item: rank_key(item[0], item[1], 5.0),
    )
    assert [name for name, _ in ranked] == [
        "a-best",
        "b-best-fewer-slices",
        "h-tilted",
        "g-derived",
        "f-thin",
        "e-partial",
        "d-unknown",
        "c-sharp",
    ]
