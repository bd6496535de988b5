"""One analysed series per study (``selection.per_study: one``).

A PACS forwards a whole head CT study: the axial soft-tissue reconstruction, the same slices
with a bone kernel, thin reconstructions, coronal and sagittal reformats, the localizer, a dose
report. Analysing each one that passes the series rules would send two or three SEG/SR sets per
study, one of them computed on a bone kernel whose noise a model trained on soft-tissue images
reads as blood. So among the accepted series of a study the node analyses the best one, ranked
by :func:`rank_key`, and ends the others SKIPPED naming the series analysed instead.

When: the assembler queues the series of a study together, once no series of it is still
arriving (``NodeService._queue_complete_series``), so the choice adds nothing to the completion
rule's wait. The worker then meets the study's jobs one after the other; :class:`StudySelector`
compares each with the study's other series that are queued, running or already analysed, so
every job reaches the same choice. A series that arrives after the study was decided is compared
with the series analysed before: better -> analysed as a new result (and logged as such), not
better -> SKIPPED naming the series analysed before.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from dicom_node.config import SelectionSection
from dicom_node.header_evidence import KernelClass
from dicom_node.jobs import Job, JobState, JobStore
from dicom_node.selection import SelectionResult, SeriesProfile, select_series
from dicom_node.storage import InstanceStore
from dicom_node.workflow import read_datasets

logger = logging.getLogger(__name__)

#: A series covering at least this length along the slice normal covers a whole head (skull
#: base to vertex is 12-16 cm in adults); a posterior-fossa reconstruction covers far less.
FULL_COVERAGE_MM: Final[float] = 100.0
#: Jobs in these states compete for their study: waiting, being analysed, or analysed.
_COMPETING: Final[frozenset[JobState]] = frozenset(
    {JobState.QUEUED, JobState.RUNNING, JobState.SENDING, JobState.DONE}
)
_ANALYSED: Final[frozenset[JobState]] = frozenset({JobState.SENDING, JobState.DONE})
_KERNEL_RANK: Final[dict[KernelClass, int]] = {
    KernelClass.SOFT: 0,
    KernelClass.UNKNOWN: 1,
    KernelClass.SHARP: 2,
}
#: Selection results kept in memory (a study's series are compared once per job).
_CACHE_SIZE: Final[int] = 64


def rank_key(
    series_instance_uid: str, profile: SeriesProfile, prefer_thickness_mm: float
) -> tuple[int, bool, float, bool, int, int, str]:
    """Sort key of an accepted series; the smallest is analysed.

    In order: soft-tissue kernel before unknown before sharp; full coverage
    (:data:`FULL_COVERAGE_MM`) first; slice thickness nearest ``prefer_thickness_mm``; an
    original reconstruction before a derived reformat; the more nearly axial; more slices; and
    the Series Instance UID, so the order is total and every job of a study agrees on it.
    """
    return (
        _KERNEL_RANK[profile.kernel],
        profile.coverage_mm < FULL_COVERAGE_MM,
        round(abs(profile.thickness_mm - prefer_thickness_mm), 1),
        not profile.original,
        round(profile.axial_deviation_deg),
        -profile.slice_count,
        series_instance_uid,
    )


@dataclass(frozen=True)
class StudyDecision:
    """Whether the job's series is analysed; ``reason`` is the skip reason when it is not."""

    analyse: bool
    reason: str
    selection: SelectionResult


@dataclass(frozen=True)
class _Candidate:
    """An accepted series of the study."""

    series_instance_uid: str
    profile: SeriesProfile
    analysed: bool


class StudySelector:
    """Series rules for one job's series and, with ``per_study: one``, the study-level choice.

    Reads the spool (headers of every file, pixels of at most five slices per series) and the
    job queue; writes nothing. Results are cached per series and invalidated when the series'
    files in the spool change.
    """

    def __init__(self, store: InstanceStore, jobs: JobStore, rules: SelectionSection) -> None:
        self._store = store
        self._jobs = jobs
        self._rules = rules
        self._cache: OrderedDict[tuple[str, str, str], tuple[tuple[int, int], SelectionResult]] = (
            OrderedDict()
        )

    def evaluate(self, study_uid: str, series_uid: str, calling_ae: str) -> SelectionResult:
        """The series rules on the series as the spool holds it now."""
        paths = self._store.series_paths(study_uid, series_uid)
        signature = (len(paths), max((p.stat().st_mtime_ns for p in paths), default=0))
        key = (study_uid, series_uid, calling_ae)  # overrides may name the calling AE
        cached = self._cache.get(key)
        if cached is not None and cached[0] == signature:
            self._cache.move_to_end(key)
            return cached[1]
        headers, _ = read_datasets(paths, headers_only=True)
        if not headers:
            result = SelectionResult(
                False, "skipped: no readable instance of the series is in the spool"
            )
        else:
            result = select_series(headers, self._rules, calling_ae=calling_ae)
        self._cache[key] = (signature, result)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def decide(self, job: Job) -> StudyDecision:
        """Analyse the job's series, or skip it with the reason."""
        study, series = job.study_instance_uid, job.series_instance_uid
        own = self.evaluate(study, series, job.calling_ae)
        if not own.accepted or own.profile is None or self._rules.per_study == "all":
            return StudyDecision(own.accepted, own.reason, own)
        candidates = [_Candidate(series, own.profile, analysed=False), *self._competitors(job)]
        prefer = self._rules.prefer_thickness_mm
        best = min(candidates, key=lambda c: rank_key(c.series_instance_uid, c.profile, prefer))
        if best.series_instance_uid != series:
            return StudyDecision(
                False,
                f"skipped: series {best.series_instance_uid} of this study was analysed instead "
                f"({best.profile.summary()})",
                own,
            )
        earlier = [c for c in candidates if c.analysed]
        if earlier:
            logger.info(
                "study %s: series %s is analysed as a new result: it ranks above series %s "
                "analysed before (%s over %s)",
                study,
                series,
                ", ".join(c.series_instance_uid for c in earlier),
                own.profile.summary(),
                "; ".join(c.profile.summary() for c in earlier),
            )
        elif len(candidates) > 1:
            logger.info(
                "study %s: series %s chosen among %d suitable series (%s)",
                study,
                series,
                len(candidates),
                own.profile.summary(),
            )
        return StudyDecision(True, own.reason, own)

    def _competitors(self, job: Job) -> list[_Candidate]:
        """The study's other accepted series with a job that is queued, running or analysed
        (series whose files the retention already removed are not compared)."""
        latest: dict[str, Job] = {}
        analysed: set[str] = set()
        for other in self._jobs.jobs_of_study(job.study_instance_uid):
            uid = other.series_instance_uid
            if uid == job.series_instance_uid or other.state not in _COMPETING:
                continue
            latest[uid] = other
            if other.state in _ANALYSED:
                analysed.add(uid)
        candidates = []
        for uid, other in latest.items():
            if not self._store.series_paths(other.study_instance_uid, uid):
                continue
            result = self.evaluate(other.study_instance_uid, uid, other.calling_ae)
            if result.accepted and result.profile is not None:
                candidates.append(_Candidate(uid, result.profile, analysed=uid in analysed))
        return candidates
