"""The running node: SCP + assembler + worker + sender, wired around the durable job queue.

Threads and what they own:

* pynetdicom's server threads answer C-ECHO/C-STORE; after each durable write they record the
  instance on the job queue and the series tracker (:meth:`NodeService._on_stored`).
* the assembler turns complete series into QUEUED jobs: settled after their association's
  release (``series.settle_after_release_s``) or quiet (``series.complete_after_s``), see
  :mod:`dicom_node.series_tracker`;
* one worker claims QUEUED jobs and runs :func:`analyse_series` (one inference at a time: the
  model uses every core) with the series' next ``result_version``, then writes the results
  (:mod:`dicom_node.publish`: kept copy, outbox, result.json, thumbnail, prior index,
  notification queue) and marks the job SENDING;
* the sender delivers due outbox folders to the peer that sent the series, with backoff, and
  audits each delivery;
* the notifier posts ``notifications:`` (queued on disk when a result is ready) and retention
  removes expired jobs' files, each on its own thread (:mod:`dicom_node.side_loops`), so
  neither ever delays results to the PACS.

Every state lives on disk (spool, SQLite, outbox), so :meth:`NodeService.start` after a crash
resumes everything (:mod:`dicom_node.recovery`): RUNNING jobs are rerun, RECEIVED series
complete after a fresh quiet period, SENDING outboxes are resent, and spool files no job has
seen get a job.

Self-healing: the loops run under :meth:`NodeService._run_loop`, which survives any
exception of a round (a "database is locked" in ``claim_next`` or ``mark_queued``, a full
disk, a bug), logs it, counts it (``ichnet_loop_errors_total``), backs off exponentially
(:data:`LOOP_BACKOFF_INITIAL_S` doubling up to :data:`LOOP_BACKOFF_MAX_S`) and tries again;
nothing a failed round was holding is dropped (series to queue, failures to record). Each loop
reports to a :class:`~dicom_node.health.LoopMonitor`, so ``/healthz`` names a loop that is dead,
failing or stuck.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from dicom_node import app
from dicom_node.associations import ReceiveMonitor
from dicom_node.audit import AuditLog
from dicom_node.config import NodeConfig, Peer
from dicom_node.free_space import FreeSpaceGuard
from dicom_node.health import HealthCheck, HealthReport, LoopMonitor
from dicom_node.jobs import IllegalTransitionError, Job, JobStore, JobStoreError, UnknownJobError
from dicom_node.metrics import NodeMetrics, NodeStateCollector, start_metrics_server
from dicom_node.notifications.notifier import Notifier
from dicom_node.notifications.queue import NotificationQueue
from dicom_node.outbox import Outbox
from dicom_node.priors import PriorIndex, find_prior
from dicom_node.publish import ResultPublisher
from dicom_node.recovery import recover
from dicom_node.retention import Retention
from dicom_node.sender import ResultSender, SendOutcomeKind
from dicom_node.series_tracker import CompletedSeries, SeriesKey, SeriesTracker
from dicom_node.side_loops import NotifierLoop, RetentionLoop, audit_send
from dicom_node.status_page import StatusPage
from dicom_node.storage import InstanceStore, StoredInstance, restrict_storage_dir
from dicom_node.study_selection import StudySelector
from dicom_node.tls import client_context
from dicom_node.transport import GuardedAssociationServer
from dicom_node.triton_engine import node_engine
from dicom_node.workflow import (
    SeriesSkipped,
    analyse_series,
    read_datasets,
    series_size_problem,
)
from ichnet_core.inference.base import EngineTransientError, InferenceEngine
from ichnet_core.models.weights import ModelWeights, load_weights

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

logger = logging.getLogger(__name__)

#: Longest idle wait of the worker and sender loops; a wake-up event normally cuts it short.
IDLE_WAIT_S: Final[float] = 1.0
#: Wait after a loop round failed for the first time; doubles with each further failure ...
LOOP_BACKOFF_INITIAL_S: Final[float] = 0.5
#: ... up to this.
LOOP_BACKOFF_MAX_S: Final[float] = 30.0
#: Loop names as ``/healthz`` and the metrics use them, with their threads' names.
_LOOP_THREADS: Final[dict[str, str]] = {
    "assembling": "ichnet-assembler",
    "inference": "ichnet-worker",
    "sending": "ichnet-sender",
    "notifying": "ichnet-notifier",
    "retention": "ichnet-retention",
}


def loop_backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th consecutive failed round (1 = first)."""
    return min(LOOP_BACKOFF_INITIAL_S * 2.0 ** min(failures - 1, 32), LOOP_BACKOFF_MAX_S)


class NodeService:
    """One ICHNet node. ``start()`` returns at once; ``stop()`` shuts it down gracefully.

    Parameters
    ----------
    config:
        Validated node configuration.
    weights, engine:
        Already loaded weights / built engine (tests and the demo share one); loaded from
        ``config.model`` and ``config.engine`` when omitted.
    clock:
        Wall-clock seconds for job timestamps and retry schedules.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        weights: ModelWeights | None = None,
        engine: InferenceEngine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.layout = config.node.layout
        storage_dir = self.layout.root
        restrict_storage_dir(storage_dir)
        self.audit = AuditLog.for_storage_dir(storage_dir, config.logging.audit_syslog)
        self.weights = weights or load_weights(config.model.weights, config.model.weights_sha256)
        self.engine = engine or node_engine(config, self.weights)
        self.store = InstanceStore(storage_dir)
        self.jobs = JobStore.for_storage_dir(storage_dir, audit=self.audit)
        self.outbox = Outbox.for_storage_dir(storage_dir)
        self.kept_results = Outbox.kept_results(storage_dir)
        self.priors = PriorIndex(self.layout.priors_db)
        self.results_dir = self.layout.results
        self.tracker = SeriesTracker(
            config.series.complete_after_s,
            settle_after_release_s=config.series.settle_after_release_s,
        )
        self.selector = StudySelector(self.store, self.jobs, config.selection)
        self.metrics = NodeMetrics()
        tls = config.node.tls
        self.sender = ResultSender(
            config.sender,
            config.node.ae_title,
            acse_timeout_s=config.node.acse_timeout_s,
            dimse_timeout_s=config.node.dimse_timeout_s,
            network_timeout_s=config.node.network_timeout_s,
            clock=clock,
            tls_context=(
                client_context(tls)
                if tls is not None and any(p.tls for p in config.peers)
                else None
            ),
        )
        self._clock = clock
        self._stopping = threading.Event()
        self._work_ready = threading.Event()
        self._send_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: GuardedAssociationServer | None = None
        self._metrics_server: WSGIServer | None = None
        self.loops = {name: LoopMonitor(name) for name in _LOOP_THREADS}
        self.notifier = NotifierLoop(
            Notifier(
                config.notifications,
                NotificationQueue(self.layout.notifications),
                config.sender,
                clock=clock,
                audit=self.audit,
                ae_title=config.node.ae_title,
            ),
            self.loops["notifying"],
            self._stopping,
        )
        self.publisher = ResultPublisher(
            self.layout, self.outbox, self.kept_results, self.priors, self.notifier.notifier
        )
        self.health = HealthCheck(
            lambda: self._server is not None and self._server.is_serving,
            self.loops,
            self.jobs.path,
            FreeSpaceGuard(storage_dir, config.storage.min_free_bytes).problem,
        )
        self.metrics.registry.register(
            NodeStateCollector(self.jobs, storage_dir, self.health.report, clock)
        )
        #: Instances stored but not yet counted on a job (the queue was locked); oldest first.
        self._unrecorded_instances: list[tuple[str, str, str, float]] = []
        self._unrecorded_lock = threading.Lock()
        #: Completed series whose job could not be queued yet (retried each assembler round).
        self._to_queue: dict[SeriesKey, CompletedSeries] = {}
        #: Jobs whose FAILED state could not be recorded yet (retried each worker round).
        self._unrecorded_failures: dict[int, str] = {}
        #: A RUNNING job whose engine could not answer (a Triton server down): retried first.
        self._waiting_job: Job | None = None
        self.retention = RetentionLoop(
            Retention(
                self.jobs,
                self.store,
                self.outbox,
                self.kept_results,
                config.storage.retention_hours,
                self._series_busy,
            ),
            config.storage.retention_interval_s,
            clock,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Recover unfinished work, then start receiving, processing and sending."""
        removed = self.store.remove_partial_files()
        if removed:
            logger.info("removed %d partial spool file(s) of an interrupted write", removed)
        if recover(self.jobs, self.store, self.tracker, self._clock):
            self._work_ready.set()
        self._server = app.start(
            self.config,
            self.store,
            self._on_stored,
            ReceiveMonitor(self.metrics, on_ended=self._on_association_ended, audit=self.audit),
            self.metrics,
            audit=self.audit,
        )
        node = self.config.node
        if node.metrics_port is not None:
            self._metrics_server, _ = start_metrics_server(
                node.metrics_port,
                node.bind,
                self.metrics.registry,
                self.health.report,
                StatusPage(self.jobs, self.layout, self.config.peers, node.ae_title),
            )
        rounds: dict[str, tuple[Callable[[], None], float]] = {
            "assembling": (self._queue_complete_series, self.config.series.poll_interval_s),
            "inference": (self._worker_round, 0.0),
            "sending": (self._sender_round, 0.0),
            "notifying": (self.notifier.round, 0.0),
            "retention": (self.retention.round, IDLE_WAIT_S),
        }
        for name, (round_, interval_s) in rounds.items():
            monitor = self.loops[name]
            thread = threading.Thread(
                target=self._run_loop,
                args=(monitor, round_, interval_s),
                name=_LOOP_THREADS[name],
                daemon=True,
            )
            monitor.thread = thread
            thread.start()
            self._threads.append(thread)
        logger.info(
            "node %s listening on %s:%d (engine %s, weights %s, %s)",
            node.ae_title,
            node.bind,
            node.port,
            self.engine.name,
            self.weights.sha256[:12],
            self.weights.trained_on,
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop accepting associations, let the current job finish (or persist), stop threads.

        A job still RUNNING when ``timeout_s`` runs out stays RUNNING on disk and is rerun at
        the next start, so stopping never loses work.
        """
        logger.info("stopping node %s", self.config.node.ae_title)
        if self._server is not None:
            self._server.shutdown()
        self._stopping.set()
        self._work_ready.set()
        self._send_ready.set()
        self.notifier.wake()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning(
                    "%s still busy at shutdown; its job resumes at next start", thread.name
                )
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.jobs.close()
        self.priors.close()

    @property
    def port(self) -> int:
        """The TCP port the SCP listens on."""
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(self._server.server_address[1])

    def health_report(self) -> HealthReport:
        """What ``/healthz`` answers now (see :mod:`dicom_node.health`)."""
        return self.health.report()

    # -- receiving ---------------------------------------------------------------------------

    def _on_stored(self, instance: StoredInstance) -> None:
        """Called by the C-STORE handler once the instance is durable on disk.

        The tracker (memory) is fed first; if the job queue cannot record the instance now (a
        locked database) the record waits in ``_unrecorded_instances`` and the assembler
        writes it before it queues anything, so the series still completes and is analysed.
        """
        self.tracker.instance_received(
            SeriesKey(instance.study_instance_uid, instance.series_instance_uid),
            instance.sop_instance_uid,
            instance.calling_ae_title,
            header=instance.slice_header,
            association=(instance.peer_address, instance.peer_port),
        )
        record = (
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.calling_ae_title,
            self._clock(),
        )
        try:
            self.jobs.record_instance(*record)
        except (JobStoreError, sqlite3.Error) as exc:
            logger.warning(
                "job queue cannot record SOP Instance %s now (%s); the assembler retries",
                instance.sop_instance_uid,
                exc,
            )
            with self._unrecorded_lock:
                self._unrecorded_instances.append(record)

    def _on_association_ended(self, association: tuple[str, int], released: bool) -> None:
        """An association that stored instances ended: its series may settle (if released)."""
        self.tracker.association_ended(association, released=released)

    # -- loops -------------------------------------------------------------------------------

    def _run_loop(
        self, monitor: LoopMonitor, round_: Callable[[], None], interval_s: float
    ) -> None:
        """Run ``round_`` until stopped; an exception never ends the loop.

        A failed round is logged (with its traceback the first time, in one line while it keeps
        failing), counted and followed by :func:`loop_backoff`; the first round that succeeds
        again is logged too. ``interval_s`` is the pause after a successful round (rounds that
        wait for work themselves pass 0).
        """
        while not self._stopping.is_set():
            monitor.beat()
            try:
                round_()
            except Exception as exc:
                failures = monitor.failed(exc)
                self.metrics.loop_errors.labels(loop=monitor.name).inc()
                delay = loop_backoff(failures)
                if failures == 1:
                    logger.exception("%s: round failed; retrying in %.1f s", monitor.name, delay)
                else:
                    logger.error(
                        "%s: still failing after %d attempts (%s: %s); retrying in %.1f s",
                        monitor.name,
                        failures,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                self._stopping.wait(delay)
                continue
            recovered = monitor.succeeded()
            if recovered:
                logger.info("%s: working again after %d failed round(s)", monitor.name, recovered)
            if interval_s > 0:
                self._stopping.wait(max(0.05, interval_s))

    def _queue_complete_series(self) -> None:
        """Assembler round: quiet series -> QUEUED jobs.

        Instances the C-STORE path could not record are recorded first. Series popped from the
        tracker wait in ``_to_queue`` until their job is queued, so a failing ``mark_queued``
        (a locked database) delays them but never loses them; one that receives more instances
        meanwhile is back in the tracker and waits for its new quiet period instead.

        A study's jobs are queued in one transaction and, with ``selection.per_study: one``,
        only once none of its series is still arriving, so the worker's study-level choice
        (:mod:`dicom_node.study_selection`) sees them all.
        """
        self._record_pending_instances()
        for completed in self.tracker.pop_complete():
            self._to_queue[completed.key] = completed
        if not self._to_queue:
            return
        arriving = {activity.key for activity in self.tracker.pending()}
        studies_arriving = (
            {key.study_instance_uid for key in arriving}
            if self.config.selection.per_study == "one"
            else set()
        )
        ready: dict[str, list[SeriesKey]] = {}
        for key in list(self._to_queue):
            if key in arriving:
                del self._to_queue[key]
            elif key.study_instance_uid not in studies_arriving:
                ready.setdefault(key.study_instance_uid, []).append(key)
        for keys in ready.values():
            jobs = {key: self.jobs.received_job(*key) for key in keys}
            self.jobs.mark_queued_together([job.id for job in jobs.values() if job is not None])
            for key in keys:
                job = jobs[key]
                if job is not None:
                    completed = self._to_queue[key]
                    logger.info(
                        "series %s complete (%s): %d instance(s), job %d queued",
                        key.series_instance_uid,
                        "gap-free stack, association released"
                        if completed.rule == "settled"
                        else "quiet period",
                        completed.instance_count,
                        job.id,
                    )
                del self._to_queue[key]
            self._work_ready.set()

    def _record_pending_instances(self) -> None:
        """Count instances the C-STORE path could not record; stops at the first failure."""
        while True:
            with self._unrecorded_lock:
                if not self._unrecorded_instances:
                    return
                record = self._unrecorded_instances[0]
            self.jobs.record_instance(*record)
            with self._unrecorded_lock:
                self._unrecorded_instances.pop(0)

    def _worker_round(self) -> None:
        """Worker round: claim one QUEUED job and process it, or wait for work."""
        self._record_pending_failures()
        job = self._waiting_job or self.jobs.claim_next(self._clock())
        self._waiting_job = None
        if job is None:
            self._work_ready.wait(IDLE_WAIT_S)
            self._work_ready.clear()
            return
        with self.loops["inference"].busy(f"job {job.id}"):
            try:
                self._process(job)
            except EngineTransientError:
                # The job stays RUNNING (rerun from the spool after a restart) and is retried
                # first; the loop logs, backs off and /healthz reports inference as failing.
                self._waiting_job = job
                raise
            except Exception as exc:  # the outbox or results folder cannot be written, ...
                # One job must never end the worker: without it nothing received is analysed.
                logger.exception("job %d: processing failed", job.id)
                self._record_failure(job.id, f"processing failed: {type(exc).__name__}: {exc}")

    def _record_failure(self, job_id: int, reason: str) -> None:
        """Mark a job FAILED; if the queue cannot record that now, keep it and retry at the
        next worker rounds (and, should the node stop first, the job stays RUNNING on disk and
        is rerun at the next start)."""
        try:
            self.jobs.mark_failed(job_id, reason)
        except (JobStoreError, sqlite3.Error):
            logger.exception("job %d: cannot record the failure (%s); will retry", job_id, reason)
            self._unrecorded_failures[job_id] = reason

    def _record_pending_failures(self) -> None:
        for job_id, reason in list(self._unrecorded_failures.items()):
            # A job decided otherwise meanwhile has nothing left to record; any other error
            # propagates and this round is retried after a backoff.
            with contextlib.suppress(IllegalTransitionError, UnknownJobError):
                self.jobs.mark_failed(job_id, reason)
            del self._unrecorded_failures[job_id]

    def _process(self, job: Job) -> None:
        """Analyse one claimed job; leaves it SENDING, SKIPPED or FAILED."""
        paths = self.store.series_paths(job.study_instance_uid, job.series_instance_uid)
        rules = self.config.selection
        if len(paths) > rules.max_slices:
            # The slice-count rule of selection.py, decided from the spool alone: reading a
            # 2000-slice series only to refuse it would cost a gigabyte of pixel data.
            self.jobs.mark_skipped(
                job.id,
                f"{len(paths)} slices, more than selection.max_slices {rules.max_slices} "
                "(counted in the spool; no pixel data read)",
            )
            return
        decision = self.selector.decide(job)
        if not decision.analyse:
            self.jobs.mark_skipped(job.id, decision.reason)
            return
        headers, _ = read_datasets(paths, headers_only=True)
        too_large = series_size_problem(headers, self.config.limits.max_series_voxels)
        if too_large is not None:
            self.jobs.mark_skipped(job.id, too_large)
            return
        peer = self.config.peer(job.calling_ae)
        outputs = peer.outputs if peer is not None else Peer.model_fields["outputs"].default
        datasets, unreadable = read_datasets(paths)
        for line in unreadable:
            logger.warning("job %d: %s", job.id, line)
        version = self.jobs.next_result_version(job.study_instance_uid, job.series_instance_uid)
        try:
            if not datasets:
                raise SeriesSkipped("no readable instance of the series is in the spool")
            analysis = analyse_series(
                datasets,
                engine=self.engine,
                weights=self.weights,
                rules=self.config.selection,
                selection=decision.selection,
                key_images="sc" in outputs,
                prior=find_prior(self.priors, datasets[0]),
                result_version=version,
            )
        except SeriesSkipped as exc:
            self.jobs.mark_skipped(job.id, exc.reason)
            return
        except EngineTransientError:
            raise  # not the series' fault: the worker keeps the job and retries it
        except Exception as exc:  # one bad series must never stop the node
            logger.exception("job %d: analysis failed", job.id)
            self.jobs.mark_failed(job.id, f"analysis failed: {type(exc).__name__}: {exc}")
            return
        if self.publisher.publish(job.id, analysis, outputs):
            self.notifier.wake()
        timings = analysis.timings
        self.jobs.set_timings(
            job.id,
            {"volume": timings.volume, "inference": timings.inference, "results": timings.results},
        )
        self.jobs.mark_sending(job.id, self.outbox.job_dir(job.id), result_version=version)
        self._send_ready.set()

    def _sender_round(self) -> None:
        """Sender round: deliver every due outbox, then wait for the next one."""
        with self.loops["sending"].busy("delivering results"):
            for job in self.jobs.due_for_sending(self._clock()):
                if self._stopping.is_set():
                    return
                peer = self.config.peer(job.calling_ae)
                outcome = self.sender.deliver(self.jobs, job, peer)
                audit_send(self.audit, self.config.node.ae_title, peer, job, outcome)
                if outcome.kind is SendOutcomeKind.RETRY:
                    self.metrics.send_failures.labels(outcome="retry").inc()
                elif outcome.kind is SendOutcomeKind.FAILED:
                    self.metrics.send_failures.labels(outcome="failed").inc()
        self._send_ready.wait(IDLE_WAIT_S)
        self._send_ready.clear()

    def _series_busy(self, study: str, series: str) -> bool:
        """Whether instances of the series are arriving or waiting to be queued (retention
        leaves such a series' spool alone)."""
        key = SeriesKey(study, series)
        if key in self._to_queue or any(a.key == key for a in self.tracker.pending()):
            return True
        with self._unrecorded_lock:
            return any((r[0], r[1]) == key for r in self._unrecorded_instances)
