"""Prometheus metrics of the receiving side: instances, bytes, associations, store latency.

Every metric lives in a :class:`~prometheus_client.CollectorRegistry` owned by one
:class:`NodeMetrics` object, never in prometheus-client's global default registry: two nodes in
one process (as in the tests) would otherwise share and corrupt each other's counters.
"""

from __future__ import annotations

import threading
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from dicom_node.status import StoreStatus

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

    def instance_answered(self, status: StoreStatus, n_bytes: int, duration_s: float) -> None:
        """Count one answered C-STORE; bytes are counted only for stored instances."""
        self.instances_received.labels(status=status.name.lower()).inc()
        if status == StoreStatus.SUCCESS:
            self.bytes_received.inc(n_bytes)
        self.store_latency.observe(duration_s)


def start_metrics_server(
    port: int, bind: str, registry: CollectorRegistry
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` at ``http://bind:port/metrics`` from a daemon thread.

    Returns
    -------
    tuple[WSGIServer, threading.Thread]
        The server (``shutdown()`` + ``server_close()`` stop it) and its thread.
    """
    return start_http_server(port, addr=bind, registry=registry)
