"""The running node: SCP + assembler + worker + sender, wired around the durable job queue.

Threads and what they own:

* pynetdicom's server threads answer C-ECHO/C-STORE; after each durable write they record the
  instance on the job queue and the series tracker (:meth:`NodeService._on_stored`).
* the assembler turns series that went quiet (``series.complete_after_s``) into QUEUED jobs;
* one worker claims QUEUED jobs and runs :func:`analyse_series` (one inference at a time: the
  model uses every core), then writes SEG + SR into the outbox and marks the job SENDING;
* the sender delivers due outbox folders to the peer that sent the series, with backoff.

Every state lives on disk (spool, SQLite, outbox), so :meth:`NodeService.start` after a crash
resumes everything: RUNNING jobs are rerun, RECEIVED series complete after a fresh quiet period,
SENDING outboxes are resent, and spool files no job has seen get a job.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pydicom

from dicom_node import app
from dicom_node.config import NodeConfig, engine_cache_dir
from dicom_node.handlers import ReceiveMonitor
from dicom_node.jobs import Job, JobStore, JobStoreError
from dicom_node.metrics import NodeMetrics, start_metrics_server
from dicom_node.outbox import Outbox
from dicom_node.results import write_result
from dicom_node.sender import ResultSender
from dicom_node.series_tracker import SeriesKey, SeriesTracker
from dicom_node.storage import InstanceStore, StoredInstance
from dicom_node.workflow import SeriesSkipped, analyse_series, read_datasets
from ichnet_core.inference.engine import InferenceEngine, create_engine
from ichnet_core.models.weights import ModelWeights, load_weights

logger = logging.getLogger(__name__)

#: Folder under storage_dir that keeps each job's result.json (what was found, for admins).
RESULTS_DIR_NAME: Final[str] = "results"
#: Longest idle wait of the worker and sender loops; a wake-up event normally cuts it short.
IDLE_WAIT_S: Final[float] = 1.0
#: Tolerance when comparing a spool file's mtime with a job's last_instance_at.
_MTIME_SLACK_S: Final[float] = 1e-3


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
        storage_dir = Path(config.node.storage_dir)
        self.weights = weights or load_weights(config.model.weights, config.model.weights_sha256)
        self.engine = engine or create_engine(
            config.engine,
            self.weights,
            chunk_slices=config.model.chunk_slices,
            cache_dir=engine_cache_dir(config),
        )
        self.store = InstanceStore(storage_dir)
        self.jobs = JobStore.for_storage_dir(storage_dir)
        self.outbox = Outbox.for_storage_dir(storage_dir)
        self.results_dir = storage_dir / RESULTS_DIR_NAME
        self.tracker = SeriesTracker(config.series.complete_after_s)
        self.metrics = NodeMetrics()
        self.sender = ResultSender(
            config.sender,
            config.node.ae_title,
            acse_timeout_s=config.node.acse_timeout_s,
            dimse_timeout_s=config.node.dimse_timeout_s,
            network_timeout_s=config.node.network_timeout_s,
            clock=clock,
        )
        self._clock = clock
        self._stopping = threading.Event()
        self._work_ready = threading.Event()
        self._send_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._metrics_server = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Recover unfinished work, then start receiving, processing and sending."""
        removed = self.store.remove_partial_files()
        if removed:
            logger.info("removed %d partial spool file(s) of an interrupted write", removed)
        self._recover()
        self._server = app.start(
            self.config, self.store, self._on_stored, ReceiveMonitor(self.metrics)
        )
        node = self.config.node
        if node.metrics_port is not None:
            self._metrics_server, _ = start_metrics_server(
                node.metrics_port, node.bind, self.metrics.registry
            )
        for name, target in (
            ("assembler", self._assembler_loop),
            ("worker", self._worker_loop),
            ("sender", self._sender_loop),
        ):
            thread = threading.Thread(target=target, name=f"ichnet-{name}", daemon=True)
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

    @property
    def port(self) -> int:
        """The TCP port the SCP listens on."""
        if self._server is None:
            raise RuntimeError("the node is not started")
        return int(self._server.server_address[1])

    # -- receiving ---------------------------------------------------------------------------

    def _on_stored(self, instance: StoredInstance) -> None:
        """Called by the C-STORE handler once the instance is durable on disk."""
        self.jobs.record_instance(
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.calling_ae_title,
            self._clock(),
        )
        self.tracker.instance_received(
            SeriesKey(instance.study_instance_uid, instance.series_instance_uid),
            instance.sop_instance_uid,
            instance.calling_ae_title,
        )

    def _recover(self) -> None:
        """Resume what a previous run left: the job queue first, then the spool."""
        report = self.jobs.recover(self._clock())
        for job in report.received:
            self._track_series_on_disk(
                job.study_instance_uid, job.series_instance_uid, job.calling_ae
            )
        for series in self.store.iter_series():
            latest = self.jobs.latest_job(series.study_instance_uid, series.series_instance_uid)
            if (
                latest is not None
                and series.newest_mtime <= latest.last_instance_at + _MTIME_SLACK_S
            ):
                continue
            calling_ae = (
                latest.calling_ae if latest is not None else self._calling_ae_of(series.paths)
            )
            logger.info(
                "spool holds unseen instances of series %s: starting a job",
                series.series_instance_uid,
            )
            for _ in series.paths:
                self.jobs.record_instance(
                    series.study_instance_uid, series.series_instance_uid, calling_ae, self._clock()
                )
            self._track_series_on_disk(
                series.study_instance_uid, series.series_instance_uid, calling_ae
            )
        logger.info(
            "recovered: %d rerun, %d failed, %d receiving, %d queued, %d sending",
            len(report.requeued),
            len(report.failed),
            len(report.received),
            len(report.queued),
            len(report.sending),
        )
        if report.queued or report.requeued:
            self._work_ready.set()

    def _track_series_on_disk(self, study: str, series: str, calling_ae: str) -> None:
        key = SeriesKey(study, series)
        for path in self.store.series_paths(study, series):
            self.tracker.instance_received(key, path.stem, calling_ae)

    @staticmethod
    def _calling_ae_of(paths: tuple[Path, ...]) -> str:
        """Who sent a spooled series: SourceApplicationEntityTitle of its first file's meta."""
        for path in paths:
            try:
                meta = pydicom.filereader.read_file_meta_info(path)
            except (OSError, ValueError):
                continue
            title = str(meta.get("SourceApplicationEntityTitle", "")).strip()
            if title:
                return title
        return ""

    # -- loops -------------------------------------------------------------------------------

    def _assembler_loop(self) -> None:
        interval = max(0.05, self.config.series.poll_interval_s)
        while not self._stopping.wait(interval):
            try:
                self._queue_complete_series()
            except Exception:  # a database hiccup must not end completion for good
                logger.exception("assembler: could not queue completed series; retrying")

    def _queue_complete_series(self) -> None:
        for completed in self.tracker.pop_complete():
            job = self.jobs.received_job(*completed.key)
            if job is None:
                continue
            self.jobs.mark_queued(job.id)
            logger.info(
                "series %s complete: %d instance(s), job %d queued",
                completed.key.series_instance_uid,
                completed.instance_count,
                job.id,
            )
            self._work_ready.set()

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            job = self.jobs.claim_next(self._clock())
            if job is None:
                self._work_ready.wait(IDLE_WAIT_S)
                self._work_ready.clear()
                continue
            try:
                self._process(job)
            except Exception as exc:  # the outbox or results folder cannot be written, ...
                # One job must never end the worker: without it nothing received is analysed.
                logger.exception("job %d: processing failed", job.id)
                self._record_failure(job.id, f"processing failed: {type(exc).__name__}: {exc}")

    def _record_failure(self, job_id: int, reason: str) -> None:
        """Mark a job FAILED; if the queue cannot even record that, the job stays RUNNING and
        is rerun at the next start."""
        try:
            self.jobs.mark_failed(job_id, reason)
        except (JobStoreError, sqlite3.Error):
            logger.exception("job %d: cannot record the failure (%s)", job_id, reason)

    def _process(self, job: Job) -> None:
        """Analyse one claimed job; leaves it SENDING, SKIPPED or FAILED."""
        paths = self.store.series_paths(job.study_instance_uid, job.series_instance_uid)
        datasets, unreadable = read_datasets(paths)
        for line in unreadable:
            logger.warning("job %d: %s", job.id, line)
        try:
            if not datasets:
                raise SeriesSkipped("no readable instance of the series is in the spool")
            analysis = analyse_series(
                datasets, engine=self.engine, weights=self.weights, rules=self.config.selection
            )
        except SeriesSkipped as exc:
            self.jobs.mark_skipped(job.id, exc.reason)
            return
        except Exception as exc:  # one bad series must never stop the node
            logger.exception("job %d: analysis failed", job.id)
            self.jobs.mark_failed(job.id, f"analysis failed: {type(exc).__name__}: {exc}")
            return
        self.outbox.prepare(job.id)
        self.outbox.add(job.id, analysis.seg, "seg")
        self.outbox.add(job.id, analysis.sr, "sr")
        job_results = self.results_dir / str(job.id)
        job_results.mkdir(parents=True, exist_ok=True)
        write_result(job_results / "result.json", analysis.result)
        timings = analysis.timings
        self.jobs.set_timings(
            job.id,
            {"volume": timings.volume, "inference": timings.inference, "results": timings.results},
        )
        self.jobs.mark_sending(job.id, self.outbox.job_dir(job.id))
        self._send_ready.set()

    def _sender_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                for job in self.jobs.due_for_sending(self._clock()):
                    if self._stopping.is_set():
                        return
                    self.sender.deliver(self.jobs, job, self.config.peer(job.calling_ae))
            except Exception:  # the outbox stays on disk; the next round retries it
                logger.exception("sender: delivery round failed; retrying")
            self._send_ready.wait(IDLE_WAIT_S)
            self._send_ready.clear()
