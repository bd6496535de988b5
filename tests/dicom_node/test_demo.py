"""``ichnet-node demo``: a synthetic study through a real node on loopback, SEG + SR back."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import pytest
from PIL import Image

from dicom_node.demo import run_demo
from ichnet_core.labels import CLASS_NAMES


@pytest.mark.integration
def test_demo_round_trip(tmp_path: Path, engine_cache_dir: Path) -> None:
    # Reuse the session's engine cache so the ONNX export is not made again for the demo.
    shutil.copytree(engine_cache_dir, tmp_path / "engine-cache", dirs_exist_ok=True)
    summary = run_demo(tmp_path)

    pacs = Path(str(summary["pacs_dir"]))
    seg = hd.seg.segread(pacs / "seg.dcm")
    sr = hd.sr.srread(pacs / "sr.dcm")
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == sr.StudyInstanceUID
    subject = summary["subject"]
    assert isinstance(subject, dict) and set(subject) == set(CLASS_NAMES)
    assert all(0.0 <= float(p) <= 1.0 for p in subject.values())
    assert float(summary["ground_truth_volume_ml"]) > 0.0  # the demo case has a hemorrhage
    assert float(summary["hemorrhage_volume_ml"]) >= 0.0
    assert float(summary["seconds_last_instance_to_results"]) > 0.0
    # The printed findings are the decisions at the weights' operating points (as in the SR).
    points, present = summary["operating_points"], summary["present"]
    assert isinstance(points, dict) and isinstance(present, dict)
    assert present == {name: float(subject[name]) >= points[name] for name in CLASS_NAMES}
    volumes = summary["volumes_ml"]
    truth = summary["ground_truth_volumes_ml"]
    assert isinstance(volumes, dict) and isinstance(truth, dict)
    assert volumes["hemorrhage"] == summary["hemorrhage_volume_ml"]
    assert sum(truth.values()) == pytest.approx(float(summary["ground_truth_volume_ml"]))
    with Image.open(str(summary["overlay"])) as overlay:
        assert overlay.size == (512, 512)
