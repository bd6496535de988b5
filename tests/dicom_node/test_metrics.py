"""Metrics live in their own registry and are served over HTTP for Prometheus."""

from __future__ import annotations

import urllib.request

from dicom_node.metrics import NodeMetrics, start_metrics_server
from dicom_node.status import StoreStatus


def test_instances_bytes_and_latency_are_counted() -> None:
    metrics = NodeMetrics()
    metrics.instance_answered(StoreStatus.SUCCESS, 1000, 0.004)
    metrics.instance_answered(StoreStatus.REFUSED_OUT_OF_RESOURCES, 500, 0.002)
    registry = metrics.registry
    assert registry.get_sample_value("ichnet_instances_received_total", {"status": "success"}) == 1
    assert (
        registry.get_sample_value(
            "ichnet_instances_received_total", {"status": "refused_out_of_resources"}
        )
        == 1
    )
    assert registry.get_sample_value("ichnet_received_bytes_total") == 1000  # stored only
    assert registry.get_sample_value("ichnet_store_duration_seconds_count") == 2
    assert registry.get_sample_value("ichnet_store_duration_seconds_bucket", {"le": "0.0025"}) == 1


def test_two_nodes_in_one_process_do_not_share_counters() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.associations_accepted.inc()
    assert second.registry.get_sample_value("ichnet_associations_accepted_total") == 0


def test_metrics_endpoint_serves_the_registry(free_port: int) -> None:
    metrics = NodeMetrics()
    metrics.associations_rejected.labels(reason="calling_ae_title_not_recognized").inc()
    server, thread = start_metrics_server(free_port, "127.0.0.1", metrics.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{free_port}/metrics", timeout=10) as rsp:
            body = rsp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert (
        'ichnet_associations_rejected_total{reason="calling_ae_title_not_recognized"} 1.0' in body
    )
