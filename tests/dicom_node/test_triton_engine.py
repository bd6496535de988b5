"""``engine: triton`` without a server: config, construction, and outages as transient failures.

These run everywhere (no tritonserver needed): a closed port on loopback is a real unreachable
server. The served case (parity, outage and recovery end to end) is tests/integration/test_triton.py.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from dicom_node import triton_engine
from dicom_node.config import ConfigError, TritonSection, parse_config
from dicom_node.jobs import JobState
from dicom_node.service import NodeService
from dicom_node.status import StoreStatus
from dicom_node.triton_engine import TritonEngine, node_engine
from ichnet_core.inference.base import EngineTransientError, EngineUnavailableError
from ichnet_core.inference.engine import create_engine
from ichnet_core.models.weights import ModelWeights, load_weights

pytest.importorskip("tritonclient.grpc")


def _closed_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture(scope="module")
def weights() -> ModelWeights:
    return load_weights()


def test_config_section_defaults_and_checks() -> None:
    config = parse_config({"engine": "triton"})
    assert config.engine == "triton"
    assert (config.triton.url, config.triton.model, config.triton.timeout_s) == (
        "127.0.0.1:8001",
        "ichnet",
        600.0,
    )
    with pytest.raises(ConfigError, match=r"triton\.url"):
        parse_config({"triton": {"url": "http://triton:8001"}})
    with pytest.raises(ConfigError, match=r"triton\.timeout_s"):
        parse_config({"triton": {"timeout_s": 0}})


def test_an_unreachable_server_is_transient_and_the_node_still_starts(
    weights: ModelWeights,
) -> None:
    config = parse_config(
        {"engine": "triton", "triton": {"url": f"127.0.0.1:{_closed_port()}", "timeout_s": 5}}
    )
    started = time.monotonic()
    engine = node_engine(config, weights)  # no connection is made here
    assert isinstance(engine, TritonEngine) and time.monotonic() - started < 5
    assert engine.input_size == weights.config.input_size
    with pytest.raises(EngineTransientError, match="UNAVAILABLE"):
        engine.run_network(np.zeros((3, 3, 96, 96), np.float32))
    with pytest.raises(EngineUnavailableError, match="triton"):
        create_engine("triton", weights)  # ichnet_core does no networking


def test_a_series_too_large_for_one_message_is_refused_before_sending(
    weights: ModelWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = TritonEngine(weights, TritonSection(url=f"127.0.0.1:{_closed_port()}"))
    monkeypatch.setattr(triton_engine, "MAX_MESSAGE_BYTES", 10 * 3 * 96 * 96 * 4)
    with pytest.raises(ValueError, match="gRPC message"):
        engine.run_network(np.zeros((11, 3, 96, 96), np.float32))
    with pytest.raises(ValueError, match=r"\[S>=1, 3, H, W\]"):
        engine.run_network(np.zeros((3, 96, 96), np.float32))


@pytest.fixture
def node(tmp_path: Path, engine_cache_dir: Path, weights: ModelWeights) -> Iterator[NodeService]:
    port, metrics_port = _closed_port(), _closed_port()
    config: dict[str, Any] = {
        "node": {
            "ae_title": "ICHNET",
            "port": port,
            "metrics_port": metrics_port,
            "storage_dir": str(tmp_path / "storage"),
        },
        "peers": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
        "series": {"complete_after_s": 0.5, "poll_interval_s": 0.1},
        "engine": "triton",
        "triton": {"url": f"127.0.0.1:{_closed_port()}", "timeout_s": 5},
        "model": {"cache_dir": str(engine_cache_dir)},
    }
    service = NodeService(parse_config(config), weights=weights)
    service.start()
    yield service
    service.stop(30)


def _inference_errors(service: NodeService) -> float:
    labels = {"loop": "inference"}
    return service.metrics.registry.get_sample_value("ichnet_loop_errors_total", labels) or 0.0


@pytest.mark.shared_data
def test_jobs_wait_while_triton_is_unreachable(node: NodeService, head_ct_dir: Path) -> None:
    """The job stays RUNNING (nothing FAILED or lost) and the worker reports inference failing."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, pydicom.uid.ImplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ICHNET")
    assert assoc.is_established
    try:
        for path in sorted(head_ct_dir.glob("*.dcm")):
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == StoreStatus.SUCCESS
    finally:
        assoc.release()
    deadline = time.monotonic() + 120
    while _inference_errors(node) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    report = node.health.report()
    assert "inference" in report.failing, report
    assert "UNAVAILABLE" in report.parts["inference"]
    [job] = node.jobs.list_jobs()
    assert job.state is JobState.RUNNING
