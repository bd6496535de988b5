"""Prometheus metrics of the node, and the HTTP endpoint serving ``/metrics`` and ``/healthz``.

Every metric lives in a :class:`~prometheus_client.CollectorRegistry` owned by one
:class:`NodeMetrics` object, never in prometheus-client's global default registry: two nodes in
one process (as in the tests) would otherwise share and corrupt each other's counters.

Counters are incremented where things happen (C-STORE answers, associations, transport
refusals, loop errors, failed send attempts). Gauges of state (jobs by state, age of the oldest
QUEUED job, free disk under ``storage_dir``, health per part) are read at scrape time by
:class:`NodeStateCollector`, so they are never stale.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dicom_node.jobs import JobState
from dicom_node.status import StoreStatus

if TYPE_CHECKING:
    from dicom_node.health import HealthReport
    from dicom_node.jobs import JobStore
    from dicom_node.status_page import StatusPage

logger = logging.getLogger(__name__)

#: The two paths the endpoint answers; anything else is 404.
METRICS_PATH: Final[str] = "/metrics"
HEALTHZ_PATH: Final[str] = "/healthz"

#: Store latency buckets (seconds): an fsync'ed 0.5 MB slice takes milliseconds on a local SSD;
#: the upper buckets catch a slow or failing disk.
STORE_LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


class NodeMetrics:
    """The node's counters and histograms, in their own registry.

    Parameters
    ----------
    registry:
        Where to register; a fresh :class:`~prometheus_client.CollectorRegistry` when ``None``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.instances_received = Counter(
            "ichnet_instances_received",
            "C-STORE requests answered, by response status (StoreStatus name).",
            ["status"],
            registry=self.registry,
        )
        self.bytes_received = Counter(
            "ichnet_received_bytes",
            "Data set bytes of C-STORE requests stored successfully.",
            registry=self.registry,
        )
        self.associations_accepted = Counter(
            "ichnet_associations_accepted",
            "Associations accepted.",
            registry=self.registry,
        )
        self.associations_rejected = Counter(
            "ichnet_associations_rejected",
            "Associations rejected, by A-ASSOCIATE-RJ reason.",
            ["reason"],
            registry=self.registry,
        )
        self.store_latency = Histogram(
            "ichnet_store_duration_seconds",
            "Time from a complete C-STORE request to its response: parse, validate, fsync, rename.",
            buckets=STORE_LATENCY_BUCKETS_S,
            registry=self.registry,
        )

        self.transport_refusals = Counter(
            "ichnet_transport_refusals",
            "Connections aborted at the transport before buffering: PDU or message above limits.",
            ["reason"],
            registry=self.registry,
        )
        self.tls_handshake_failures = Counter(
            "ichnet_tls_handshake_failures",
            "Incoming TLS handshakes that failed (no or untrusted client certificate, plain TCP).",
            registry=self.registry,
        )
        self.loop_errors = Counter(
            "ichnet_loop_errors",
            "Exceptions a service loop survived (it backs off and retries), by loop.",
            ["loop"],
            registry=self.registry,
        )
        self.send_failures = Counter(
            "ichnet_send_failures",
            "Failed attempts to send results: retry (transient, rescheduled) or failed (final).",
            ["outcome"],
            registry=self.registry,
        )

    def instance_answered(self, status: StoreStatus, n_bytes: int, duration_s: float) -> None:
        """Count one answered C-STORE; bytes are counted only for stored instances."""
        self.instances_received.labels(status=status.name.lower()).inc()
        if status == StoreStatus.SUCCESS:
            self.bytes_received.inc(n_bytes)
        self.store_latency.observe(duration_s)


class NodeStateCollector(Collector):
    """Gauges read at scrape time: jobs by state, oldest QUEUED job, free disk, health.

    Parameters
    ----------
    jobs:
        The job queue.
    storage_dir:
        Where received data lives (free space is that file system's).
    health:
        Returns the current :class:`~dicom_node.health.HealthReport`.
    clock:
        Wall-clock seconds, the clock of the jobs' timestamps.
    """

    def __init__(
        self,
        jobs: JobStore,
        storage_dir: Path,
        health: Callable[[], HealthReport],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jobs = jobs
        self._storage_dir = storage_dir
        self._health = health
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        yield from self._job_metrics()
        free = GaugeMetricFamily(
            "ichnet_storage_free_bytes", "Free bytes on the file system of storage_dir."
        )
        try:
            free.add_metric([], float(shutil.disk_usage(self._storage_dir).free))
            yield free
        except OSError as exc:
            logger.warning("metrics: cannot read free space of %s: %s", self._storage_dir, exc)
        up = GaugeMetricFamily(
            "ichnet_component_up",
            "1 when the part is healthy (as /healthz), else 0.",
            labels=["part"],
        )
        report = self._health()
        for part in report.parts:
            up.add_metric([part], 0.0 if part in report.failing else 1.0)
        yield up

    def _job_metrics(self) -> Iterator[Metric]:
        try:
            counts = self._jobs.count_by_state()
            queued = self._jobs.list_jobs([JobState.QUEUED])
        except Exception as exc:  # a locked or broken database must not break the scrape
            logger.warning("metrics: cannot read the job queue: %s", exc)
            return
        by_state = GaugeMetricFamily("ichnet_jobs", "Jobs by state.", labels=["state"])
        for state, count in counts.items():
            by_state.add_metric([state.value], float(count))
        yield by_state
        oldest = GaugeMetricFamily(
            "ichnet_oldest_queued_job_age_seconds",
            "Seconds the oldest QUEUED job has waited for the worker (0 when none waits).",
        )
        waited = max((self._clock() - job.updated_at for job in queued), default=0.0)
        oldest.add_metric([], max(0.0, waited))
        yield oldest


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never blocks ``/healthz``."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics endpoint: " + format, *args)


def metrics_app(
    registry: CollectorRegistry,
    health: Callable[[], HealthReport] | None = None,
    status_page: StatusPage | None = None,
) -> Callable[..., Iterable[bytes]]:
    """WSGI app: ``/metrics`` (Prometheus text), ``/healthz`` (200/503 + JSON), the read-only
    ``/status`` page (given ``status_page``), else 404."""
    prometheus = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            return prometheus(environ, start_response)
        if path == HEALTHZ_PATH and health is not None:
            report = health()
            body = (json.dumps(report.as_json(), indent=1) + "\n").encode()
            status = "200 OK" if report.healthy else "503 Service Unavailable"
            if not report.healthy:
                logger.warning(
                    "healthz: unhealthy: %s",
                    "; ".join(f"{name}: {report.parts[name]}" for name in report.failing),
                )
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        if status_page is not None and status_page.handles(path):
            return status_page(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [f"not found; try {METRICS_PATH} or {HEALTHZ_PATH}\n".encode()]

    return app


def start_metrics_server(
    port: int,
    bind: str,
    registry: CollectorRegistry,
    health: Callable[[], HealthReport] | None = None,
    status_page: StatusPage | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` (and, given ``health``, ``/healthz``; given ``status_page``, ``/status``)
    at ``http://bind:port`` from a daemon thread.

    Returns
    -------
    tuple[WSGIServer, threading.Thread]
        The server (``shutdown()`` + ``server_close()`` stop it) and its thread.
    """
    server = make_server(
        bind,
        port,
        metrics_app(registry, health, status_page),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(
        target=server.serve_forever, name=f"ichnet-metrics-{port}", daemon=True
    )
    thread.start()
    return server, thread
