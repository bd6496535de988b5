"""A stream of studies sent to ``ichnet-node serve`` while it is SIGKILLed at chosen moments.

The campaign plays a PACS that keeps sending studies (dcmtk ``storescu``) and resends whatever
was not acknowledged once the node is back, as a real PACS would. It kills the node with SIGKILL
(no handler runs) at seeded-random moments of four phases and restarts it each time:

* ``receive``: a storescu association is in flight (the kill lands after a seeded number of
  instances reached the spool, so some instances are acknowledged and some are not);
* ``acked``: every instance of a study was acknowledged, its job is still RECEIVED (the quiet
  period of ``series.complete_after_s`` has not passed);
* ``inference``: a job is RUNNING (selection, volume, inference, SEG/SR written to the outbox);
* ``sending``: a job is SENDING (the peer, storescp with ``--sleep-during``, is mid C-STORE).

The phase a kill *really* fell in is read afterwards, from the dead node's job database and the
senders' state, not assumed from the target: a kill can count in several phases (a study being
received while another is analysed).

This module only drives and observes; :mod:`tests.integration.test_fault_injection` states what
must hold afterwards.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom import dcmwrite

from dicom_node.jobs import TERMINAL_STATES, JobState
from dicom_node.layout import StorageLayout
from ichnet_core.synthetic import SyntheticConfig, generate_case
from ichnet_core.synthetic.dicom import to_datasets
from tests.dicom_node.dcmtk import require_tool, storescu_args
from tests.integration.conftest import NODE_AE, PACS_AE
from tests.integration.node_process import NodeProcess, wait_until

#: The four moments the issue names, in the order a study passes them.
PHASES: Final[tuple[str, ...]] = ("receive", "acked", "inference", "sending")
#: Small studies keep 50 restarts affordable on 2 cores: 64x64, 8 mm apart (16-20 slices); the
#: node's selection and volume rules still accept them (axial head CT, slices <= 10 mm thick:
#: no overlapping/gapped reconstruction, whose thickness could pass 10 mm).
STUDY_CONFIG: Final[SyntheticConfig] = SyntheticConfig(
    rows=64, columns=64, slice_spacing_mm=(8.0, 8.0), slice_overlap_probability=0.0
)
#: Longest wait for a job to reach the targeted state (a quiet period plus a queue of
#: inferences on a busy 2-core machine).
STATE_TIMEOUT_S: Final[float] = 180.0
#: The stream pauses new studies while this many jobs wait for or are in inference: a PACS
#: sending faster than the node analyses would only grow a queue that every kill interrupts.
MAX_BACKLOG: Final[int] = 3
#: A resend is interrupted on purpose only if it has this many files (else it is too quick).
MIN_FILES_TO_INTERRUPT: Final[int] = 4
#: Poll interval while waiting for the moment to kill.
_POLL_S: Final[float] = 0.005
_SENDING_FILE: Final = re.compile(r"Sending file: (.+)$")
_STORE_SUCCESS: Final[str] = "Received Store Response (Success)"


@dataclass
class Study:
    """One synthetic study (one series) as the PACS holds it, and what the node acknowledged."""

    number: int
    study_instance_uid: str
    series_instance_uid: str
    #: SOP Instance UID -> the source file storescu sends.
    sources: dict[str, Path]
    acknowledged: set[str] = field(default_factory=set)
    associations: int = 0

    @property
    def unacknowledged(self) -> list[Path]:
        return sorted(p for uid, p in self.sources.items() if uid not in self.acknowledged)

    @property
    def complete(self) -> bool:
        return len(self.acknowledged) == len(self.sources)


def make_study(directory: Path, number: int, seed: int) -> Study:
    """Generate study ``number`` (seed ``seed``; every other one with a hemorrhage) as files."""
    datasets = to_datasets(generate_case(seed, STUDY_CONFIG, hemorrhage=number % 2 == 0))
    directory.mkdir(parents=True)
    sources: dict[str, Path] = {}
    for index, dataset in enumerate(datasets):
        path = directory / f"CT{index:03d}.dcm"
        dcmwrite(path, dataset, enforce_file_format=True)
        sources[str(dataset.SOPInstanceUID)] = path
    return Study(
        number,
        str(datasets[0].StudyInstanceUID),
        str(datasets[0].SeriesInstanceUID),
        sources,
    )


class Association:
    """One storescu run in the background: the PACS sending a study's unacknowledged files."""

    def __init__(self, study: Study, port: int, log_path: Path) -> None:
        self.study = study
        self.files = study.unacknowledged
        self.log_path = log_path
        study.associations += 1
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    require_tool("storescu"),
                    *storescu_args(port, self.files, PACS_AE, NODE_AE, "-v"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TCP_NODELAY": "1"},
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self) -> int:
        """Wait for storescu; record which files got a success status; returns how many."""
        self.process.wait(120)
        uid_of = {path: uid for uid, path in self.study.sources.items()}
        current: Path | None = None
        acknowledged = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            sending = _SENDING_FILE.search(line)
            if sending:
                current = Path(sending.group(1).strip())
            elif _STORE_SUCCESS in line and current is not None:
                self.study.acknowledged.add(uid_of[current])
                acknowledged += 1
                current = None
        return acknowledged

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: the phase aimed at and the phases the node was really in."""

    number: int
    target: str
    phases: frozenset[str]
    #: Job states at the kill (``job 3 RUNNING``, ...) and interrupted associations.
    detail: str
    #: From the SIGKILL until the restarted node listened again.
    restart_s: float


@dataclass
class Campaign:
    """Drive ``node`` through ``kills`` SIGKILLs; studies are generated on demand."""

    node: NodeProcess
    work_dir: Path
    rng: random.Random
    #: Seconds a job stays RECEIVED after its last instance (the node's quiet period).
    complete_after_s: float
    #: Upper bound of the random delay once a job is RUNNING / SENDING.
    inference_window_s: float
    sending_window_s: float
    studies: list[Study] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    _association_count: int = 0

    # -- the PACS --------------------------------------------------------------------------

    def fresh_study(self) -> Study:
        number = len(self.studies)
        study = make_study(self.work_dir / "studies" / f"{number:03d}", number, 1000 + number)
        self.studies.append(study)
        return study

    def start_association(self, study: Study) -> Association:
        self._association_count += 1
        log = self.work_dir / "storescu" / f"{self._association_count:04d}.log"
        log.parent.mkdir(exist_ok=True)
        return Association(study, self.node.port, log)

    def send(self, study: Study) -> None:
        """Send what the node has not acknowledged and wait; the node is up, so all must be."""
        association = self.start_association(study)
        association.finish()
        if not study.complete:
            pytest.fail(
                f"study {study.number}: node up but {len(study.unacknowledged)} instance(s) "
                f"not acknowledged\n{association.log()}"
            )

    def interrupted(self) -> list[Study]:
        """Studies the PACS started but the node has not acknowledged entirely (to resend)."""
        return [s for s in self.studies if s.associations and not s.complete]

    # -- the node --------------------------------------------------------------------------

    def spooled(self, study: Study) -> int:
        series = (
            StorageLayout(self.node.storage_dir).incoming
            / study.study_instance_uid
            / study.series_instance_uid
        )
        try:
            return sum(1 for p in series.iterdir() if p.suffix == ".dcm")
        except FileNotFoundError:
            return 0

    def jobs(self) -> list[dict[str, Any]]:
        return self.node.jobs()

    def _backlog(self) -> int:
        waiting = {JobState.RECEIVED.value, JobState.QUEUED.value, JobState.RUNNING.value}
        return sum(1 for job in self.jobs() if job["state"] in waiting)

    def _open(self, states: set[str]) -> bool:
        return any(job["state"] in states for job in self.jobs())

    def _wait_for_job_in(self, state: JobState) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((j for j in self.jobs() if j["state"] == state.value), None)

        job: dict[str, Any] = wait_until(found, STATE_TIMEOUT_S, f"a job in {state.value}")
        return job

    # -- one kill --------------------------------------------------------------------------

    def kill_once(self, target: str) -> Kill:
        """Arrange ``target``, SIGKILL the node at a random moment of it, restart the node."""
        associations: list[Association] = []
        for study in self.interrupted():
            # The PACS resends what was not acknowledged; a resend can itself be interrupted.
            if (
                target == "receive"
                and not associations
                and len(study.unacknowledged) >= MIN_FILES_TO_INTERRUPT
            ):
                associations.append(self.start_association(study))
            else:
                self.send(study)
        if target == "receive":
            if not associations:
                associations.append(self.start_association(self.fresh_study()))
            self._wait_inside_receive(associations[0])
        elif target == "acked":
            if not self._received_complete_study():
                self.send(self.fresh_study())
            time.sleep(self.rng.uniform(0.0, 0.6 * self.complete_after_s))
        else:
            before_sending = {JobState.RECEIVED.value, JobState.QUEUED.value}
            before_sending.add(JobState.RUNNING.value)
            waiting_for = JobState.RUNNING if target == "inference" else JobState.SENDING
            if target == "sending":
                before_sending.add(JobState.SENDING.value)
            if not self._open(before_sending):
                self.send(self.fresh_study())
            elif self._backlog() < MAX_BACKLOG and self.rng.random() < 0.5:
                # The stream goes on: another study arrives while the node works.
                associations.append(self.start_association(self.fresh_study()))
            self._wait_for_job_in(waiting_for)
            window = self.inference_window_s if target == "inference" else self.sending_window_s
            time.sleep(self.rng.uniform(0.0, window))
        in_flight = [a for a in associations if a.running()]
        killed_at = time.monotonic()
        self.node.kill()
        for association in associations:
            association.finish()
        return self._record(target, in_flight, killed_at)

    def _wait_inside_receive(self, association: Association) -> None:
        """Until a seeded number of the association's files reached the spool (or it ended)."""
        study = association.study
        start = self.spooled(study)
        needed = start + self.rng.randint(1, len(association.files) - 1)
        while association.running() and self.spooled(study) < needed:
            time.sleep(_POLL_S)

    def _received_complete_study(self) -> bool:
        complete = {s.study_instance_uid for s in self.studies if s.complete}
        return any(
            j["state"] == JobState.RECEIVED.value and j["study_instance_uid"] in complete
            for j in self.jobs()
        )

    def _record(self, target: str, in_flight: list[Association], killed_at: float) -> Kill:
        """Read the phases from the dead node's job database and the senders, then restart."""
        phases: set[str] = set()
        details: list[str] = []
        for association in in_flight:
            if not association.study.complete:
                phases.add("receive")
                details.append(
                    f"study {association.study.number} receiving "
                    f"({len(association.study.acknowledged)}/{len(association.study.sources)} "
                    "acknowledged)"
                )
        complete = {s.study_instance_uid for s in self.studies if s.complete}
        by_state = {
            JobState.RUNNING.value: "inference",
            JobState.SENDING.value: "sending",
            JobState.QUEUED.value: "queued",
        }
        for job in self.jobs():
            state = job["state"]
            if state in {s.value for s in TERMINAL_STATES}:
                continue
            if state == JobState.RECEIVED.value:
                if job["study_instance_uid"] in complete:
                    phases.add("acked")
                else:
                    continue
            else:
                phases.add(by_state[state])
            details.append(f"job {job['id']} {state}")
        self.node.start()
        kill = Kill(
            len(self.kills) + 1,
            target,
            frozenset(phases),
            ", ".join(details) or "idle",
            time.monotonic() - killed_at,
        )
        self.kills.append(kill)
        return kill

    # -- the whole campaign ----------------------------------------------------------------

    def run(self, kills: int, progress: Callable[[Kill], None]) -> None:
        """``kills`` kills with a balanced, seeded-random order of target phases."""
        targets = [PHASES[i % len(PHASES)] for i in range(kills)]
        self.rng.shuffle(targets)
        for target in targets:
            progress(self.kill_once(target))

    def drain(self, timeout_s: float) -> None:
        """No more kills: resend what is left and wait until every job is final."""
        for study in self.interrupted():
            self.send(study)
        final = {s.value for s in TERMINAL_STATES}
        wait_until(
            lambda: all(j["state"] in final for j in self.jobs()),
            timeout_s,
            "every job to reach DONE, FAILED or SKIPPED (a job stuck in "
            f"{sorted({j['state'] for j in self.jobs()} - final)})",
        )

    def phase_counts(self) -> Counter[str]:
        return Counter(phase for kill in self.kills for phase in kill.phases)
