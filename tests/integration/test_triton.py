"""``engine: triton`` against a real tritonserver (nvidia-pytriton's bundle) on this CPU.

The repository is what ``ichnet-node triton-repo`` writes for the bundled weights; the server loads
its Python-backend model (the bundle has no ONNX Runtime backend; the ONNX stage models' configs go
through the server's own parser, which stops only at the missing backend). Checked: parity with the torch
float32 reference on the real head CT (the project's float32 engine tolerances: subject
probabilities within 1e-3, labels equal on >= 99.9 % of voxels), a server with other weights or
none at all is a transient failure, and a node with ``engine: triton`` between Orthanc and the
server delivers SEG + SR, keeps the jobs that arrive while the server is down (``/healthz`` 503
naming inference) and completes them when it is back. Results of a re-sent series carry the same
UIDs (derived from the series and the weights), so Orthanc keeps one SEG and one SR; the node's
three ``SENDING -> DONE`` transitions count the deliveries.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from dicom_node.config import TritonSection
from dicom_node.triton_engine import TritonEngine
from dicom_node.workflow import read_datasets
from ichnet_core.export import Stage, cached_export
from ichnet_core.imaging.volume import build_volume
from ichnet_core.inference.base import EngineTransientError
from ichnet_core.inference.torch_engine import TorchEngine
from ichnet_core.models.weights import load_weights
from ichnet_core.serving.triton_repo import write_repository
from tests.ichnet_core.inference.tiny import make_tiny_weights
from tests.integration.conftest import NodeFactory, failed_so_far
from tests.integration.node_process import NodeProcess, reserve_ports, wait_until
from tests.integration.orthanc import ORTHANC_BINARY, Orthanc, orthanc_available, start_orthanc
from tests.integration.triton import (
    TritonEnvironment,
    TritonServer,
    TritonUnavailable,
    load_once,
    start_triton,
    triton_environment,
)

#: The first run also makes var/triton-env (a virtualenv with nvidia-pytriton and torch): minutes.
pytestmark = [pytest.mark.integration, pytest.mark.shared_data, pytest.mark.timeout(1500)]

PROBABILITY_ATOL: Final[float] = 1e-3
MIN_LABEL_AGREEMENT: Final[float] = 0.999
ORTHANC_AE: Final[str] = "ORTHANC"
NODE_MODALITY: Final[str] = "ichnet"
RESULTS_TIMEOUT_S: Final[float] = 240.0


@pytest.fixture(scope="module")
def triton_env() -> TritonEnvironment:
    try:
        return triton_environment()
    except TritonUnavailable as exc:
        pytest.skip(f"no tritonserver can run here: {exc}")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, engine_cache_dir: Path) -> Path:
    """``ichnet-node triton-repo`` for the bundled weights."""
    weights = load_weights()
    out = tmp_path_factory.mktemp("triton") / "repository"
    write_repository(weights, cached_export(weights, engine_cache_dir), out)
    return out


@pytest.fixture(scope="module")
def server(
    triton_env: TritonEnvironment, repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    grpc_port, http_port = reserve_ports(2)
    running = start_triton(triton_env, repository, log, ports=(grpc_port, http_port))
    yield running
    running.stop()


def test_triton_serves_the_real_study_like_the_float32_reference(
    server: TritonServer, head_ct_dir: Path, record_property: Any
) -> None:
    weights = load_weights()
    datasets, _ = read_datasets(sorted(head_ct_dir.glob("*.dcm")))
    volume = build_volume(datasets)
    served = TritonEngine(weights, TritonSection(url=server.url)).predict(volume)
    reference = TorchEngine(weights).predict(volume)
    difference = float(np.abs(served.subject_probabilities - reference.subject_probabilities).max())
    agreement = float(np.mean(served.labels == reference.labels))
    record_property("subject_probability_max_difference", difference)
    record_property("label_agreement", agreement)
    assert difference <= PROBABILITY_ATOL
    assert agreement >= MIN_LABEL_AGREEMENT
    np.testing.assert_allclose(
        served.slice_probabilities, reference.slice_probabilities, atol=PROBABILITY_ATOL
    )


def test_other_weights_and_no_server_are_transient(server: TritonServer, tmp_path: Path) -> None:
    other = make_tiny_weights(tmp_path)
    engine = TritonEngine(other, TritonSection(url=server.url, timeout_s=10))
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(EngineTransientError, match="redeploy"):
        engine.run_network(x)
    [closed] = reserve_ports(1)
    nowhere = TritonEngine(load_weights(), TritonSection(url=f"127.0.0.1:{closed}", timeout_s=5))
    with pytest.raises(EngineTransientError, match="UNAVAILABLE"):
        nowhere.run_network(np.zeros((2, 3, 96, 96), np.float32))


def test_stage_model_configs_pass_tritonservers_own_parser(
    triton_env: TritonEnvironment, repository: Path
) -> None:
    """The bundle has no ONNX Runtime backend, so the stage models cannot load here; the server
    still reads every config.pbtxt first (a bad field fails there, "failed to read text proto")
    and only then looks for the backend."""
    stages = tuple(f"ichnet_{stage.value}" for stage in Stage)
    output = load_once(triton_env, repository, stages, tuple(reserve_ports(2)))
    assert "failed to read text proto" not in output and "Error parsing" not in output, output
    for model in stages:
        assert re.search(
            rf"load failed for model '{model}'.*unable to find backend library for backend "
            r"'onnxruntime'",
            output,
        ), output[-3000:]


def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as rsp:
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _unhealthy(port: int) -> tuple[int, dict[str, Any]] | None:
    status, report = _healthz(port)
    return (status, report) if status == 503 else None


def _states(node: NodeProcess) -> list[str]:
    return [job["state"] for job in node.jobs()]


def _results(orthanc: Orthanc, study_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for series in orthanc.series_of_study(study_id):
        modality = series["MainDicomTags"].get("Modality", "")
        counts[modality] = counts.get(modality, 0) + len(series["Instances"])
    return counts


def test_node_with_triton_delivers_and_rides_out_a_triton_outage(
    triton_env: TritonEnvironment,
    repository: Path,
    node_factory: NodeFactory,
    head_ct_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if not orthanc_available():
        pytest.skip(f"{ORTHANC_BINARY} not installed (Debian package 'orthanc')")
    dicom_port, http_port, grpc_port, triton_http, metrics_port = reserve_ports(5)
    node = node_factory(
        peers=[{"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": dicom_port}],
        complete_after_s=1.0,
        node={"metrics_port": metrics_port},
        engine="triton",
        triton={"url": f"127.0.0.1:{grpc_port}", "timeout_s": 60},
    )
    orthanc_dir = tmp_path / "orthanc"
    orthanc_dir.mkdir()
    orthanc = start_orthanc(
        orthanc_dir,
        ae_title=ORTHANC_AE,
        dicom_port=dicom_port,
        http_port=http_port,
        modalities={NODE_MODALITY: [node.ae_title, "127.0.0.1", node.port]},
    )
    log = tmp_path / "tritonserver.log"
    triton = start_triton(triton_env, repository, log, ports=(grpc_port, triton_http))
    try:
        node.start()
        uploads = [orthanc.upload(p) for p in sorted(head_ct_dir.glob("*.dcm"))]
        [study_id] = {u["ParentStudy"] for u in uploads}
        [ct_series] = {u["ParentSeries"] for u in uploads}  # sent alone: not the SEG/SR back

        orthanc.store_to_modality(NODE_MODALITY, [ct_series])
        wait_until(lambda: _results(orthanc, study_id).get("SR"), RESULTS_TIMEOUT_S, "SEG + SR")
        assert _results(orthanc, study_id)["SEG"] == 1

        triton.stop()  # the model server goes away; the study arrives twice meanwhile
        orthanc.store_to_modality(NODE_MODALITY, [ct_series])
        wait_until(lambda: _states(node) == ["DONE", "RUNNING"], 60, "job 2 claimed")
        orthanc.store_to_modality(NODE_MODALITY, [ct_series])
        wait_until(lambda: _states(node) == ["DONE", "RUNNING", "QUEUED"], 60, "job 3 queued")
        node.wait_for_log(r"inference: round failed", RESULTS_TIMEOUT_S)
        _, report = wait_until(lambda: _unhealthy(metrics_port), 60, "/healthz 503")
        assert report["failing"] == ["inference"], report
        assert _states(node) == ["DONE", "RUNNING", "QUEUED"]  # waiting, none failed or lost

        triton = start_triton(triton_env, repository, log, ports=(grpc_port, triton_http))
        wait_until(lambda: _states(node) == ["DONE"] * 3, RESULTS_TIMEOUT_S, "every job DONE")
        assert len(re.findall(r"SENDING -> DONE", node.log())) == 3  # Orthanc took all three
        wait_until(lambda: _healthz(metrics_port)[0] == 200, 60, "/healthz 200 again")
    finally:
        triton.stop()
        orthanc.stop()
        if failed_so_far(request):
            print(f"\n===== tritonserver log =====\n{triton.log()[-5000:]}")
            print(f"\n===== Orthanc log =====\n{orthanc.log()[-3000:]}")
