"""The admin's status page in a real browser: headless Chromium (Debian ``chromium``) renders
``/status`` of a running node after it analysed a synthetic study with a bleed; the screenshot
must show the research banner and the thumbnail's overlay colours, and the page must not
show the patient's name."""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np
import pytest
from PIL import Image

from dicom_node.config import parse_config
from dicom_node.jobs import JobState
from dicom_node.results.seg import COMPARTMENT_RGB
from dicom_node.service import NodeService
from dicom_node.status_page import STATUS_PATH, THUMBNAIL_NAME
from ichnet_core.inference.engine import create_engine
from ichnet_core.models.weights import load_weights
from ichnet_core.synthetic import SyntheticConfig, generate_case, to_datasets
from tests.dicom_node.test_service import (
    JOB_TIMEOUT_S,
    NODE_AE,
    PACS_AE,
    STOP_TIMEOUT_S,
    ResultPeer,
    _wait_for_job,
    result_peer,
)
from tests.dicom_node.test_service_comparison import _send
from tests.integration.node_process import reserve_ports

pytestmark = pytest.mark.integration
_ = result_peer  # the fixture, imported for this module

PATIENT_NAME: Final[str] = "Doe^Jane"
#: The page's research banner colour (status_page._STYLE: #780000).
BANNER_RGB: Final = (120, 0, 0)
SCREENSHOT_TIMEOUT_S: Final[float] = 120.0


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip("chromium not installed (Debian package 'chromium')")


@pytest.fixture
def node(tmp_path: Path, result_peer: ResultPeer) -> Iterator[NodeService]:
    port, metrics_port = reserve_ports(2)
    weights = load_weights()
    config = parse_config(
        {
            "node": {
                "ae_title": NODE_AE,
                "port": port,
                "storage_dir": str(tmp_path / "storage"),
                "metrics_port": metrics_port,
            },
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": result_peer.port}],
            "series": {"complete_after_s": 3.0},
        }
    )
    service = NodeService(config, weights=weights, engine=create_engine("torch", weights))
    service.start()
    yield service
    if any(t.name == "ichnet-worker" for t in threading.enumerate()):
        service.stop(STOP_TIMEOUT_S)


def test_status_page_renders_jobs_and_overlay_thumbnail_without_patient_names(
    node: NodeService, tmp_path: Path
) -> None:
    chromium = _chromium()
    config = SyntheticConfig(rows=256, columns=256, hemorrhage_volume_ml=(40.0, 45.0))
    datasets = to_datasets(generate_case(12, config, subtypes=("CPH",)), patient_name=PATIENT_NAME)
    _send(node.port, datasets)
    job = _wait_for_job(node, lambda j: j.state is JobState.DONE, "DONE", JOB_TIMEOUT_S)

    url = f"http://127.0.0.1:{node.config.node.metrics_port}{STATUS_PATH}"
    with urllib.request.urlopen(url, timeout=10) as response:
        page = response.read().decode("utf-8")
    row = f"<td>{job.id}</td><td>DONE</td><td>{job.series_instance_uid}</td><td>{PACS_AE}</td>"
    assert f"{row}<td>1</td>" in page, "the job's result version, as jobs list shows it"
    assert f"job {job.id} (version 1): ICH " in page
    assert "not for diagnostic use" in page
    assert "Doe" not in page and "Jane" not in page
    with urllib.request.urlopen(f"{url}/thumbnail/{job.id}.png", timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
    thumbnail = node.layout.result_dir(job.id) / THUMBNAIL_NAME
    assert thumbnail.stat().st_mode & 0o777 == 0o600, "patient pixels: private like all results"

    screenshot = tmp_path / "status.png"
    run = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1000,800",
            f"--screenshot={screenshot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=SCREENSHOT_TIMEOUT_S,
        check=False,
    )
    assert screenshot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    banner = np.all(pixels == BANNER_RGB, axis=-1)
    assert banner.sum() > 5000, "the research banner is drawn"
    # The thumbnail's overlay: CPH red blended over grey, far redder than anything else.
    red = COMPARTMENT_RGB["CPH"]
    overlay = (pixels[..., 0] - pixels[..., 1] > 60) & (pixels[..., 1] < 180) & ~banner
    assert red[0] > red[1]
    assert overlay.sum() > 20, "the thumbnail with the bleed overlay is shown"
