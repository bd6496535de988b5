"""The unlabelled real-CT check: brain volume rule, report and overlay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ichnet_core.labels import BRAIN, CLASS_NAMES
from ichnet_core.synthetic import SyntheticConfig, generate_case, write_series
from training.real_ct import brain_volume_ml, check, read_series


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = generate_case(11, SyntheticConfig(rows=128, columns=128), hemorrhage=False)
    folder = tmp_path_factory.mktemp("series")
    write_series(case, folder)
    (folder / "README.txt").write_text("not DICOM: must be ignored")
    return folder


def test_brain_volume_counts_brain_voxels_times_voxel_volume(series_dir: Path) -> None:
    volume = read_series(series_dir)
    labels = np.zeros(volume.hu.shape, dtype=np.uint8)
    labels[0, :10, :10] = BRAIN  # 100 voxels on the first slice
    labels[-1, :5, :4] = BRAIN  # 20 voxels on the last slice
    area = volume.pixel_spacing[0] * volume.pixel_spacing[1]
    expected = (100 * volume.slice_extent_mm[0] + 20 * volume.slice_extent_mm[-1]) * area / 1000
    assert brain_volume_ml(labels, volume) == pytest.approx(expected)


def test_check_writes_a_report_and_an_overlay(series_dir: Path, tmp_path: Path) -> None:
    report = check(series_dir, None, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == report
    assert set(report["subject"]) == set(CLASS_NAMES)
    assert report["brain_volume_ml"] >= 0.0 and report["hemorrhage_volume_ml"] >= 0.0
    assert (tmp_path / "overlay.png").stat().st_size > 0
