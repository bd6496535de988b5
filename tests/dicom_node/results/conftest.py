"""Fixtures for the result writers: the real GE head CT as a Volume, and plausible predictions.

The predictions are fake but shaped like real ones: "brain" is soft tissue (0..80 HU) inside the
skull, a hemorrhage is a compact blob on a few mid-brain slices, probabilities are consistent with
the mask. A negative prediction has brain but no hemorrhage voxel at all. The compartment
predictions are the same masks as weights with compartments would give them: the blob split
into an epidural and a subdural part plus a few intraventricular slices, every hemorrhage pixel
in exactly one compartment.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from dicom_node.results.device import ModelIdentity
from dicom_node.results.seg import build_seg
from dicom_node.results.sr import build_sr
from dicom_node.results.uids import ResultUids
from dicom_node.results.volumes import HemorrhageVolumes, measure_hemorrhage
from ichnet_core.imaging.volume import Volume, build_volume
from ichnet_core.labels import BRAIN, CLASS_NAMES, HEMORRHAGE, NO_COMPARTMENT, NON_BRAIN, SUBTYPES
from ichnet_core.operating_points import OperatingPoints
from ichnet_core.prediction import Prediction

#: Soft-tissue window that stands in for "brain" in the fake masks (HU).
BRAIN_HU_RANGE = (0.0, 80.0)
#: HU above which a pixel is bone; the skull's filled interior bounds the fake brain.
BONE_HU = 300.0
#: Radius (pixels) and slice span of the fake hemorrhage blob.
BLOB_RADIUS_PX = 18
BLOB_HALF_SLICES = 2
#: Fixed content time, so the objects of one test run are reproducible.
CONTENT_DATETIME = datetime.datetime(2024, 1, 2, 3, 4, 5)
SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002

MODEL = ModelIdentity(
    name="ICHNet",
    version="0.1.0-test",
    weights_sha256="0123456789abcdef" * 4,
    training_data="synthetic",
)


@pytest.fixture(scope="session")
def source_datasets(head_ct_dir: Path) -> list[pydicom.Dataset]:
    """The 28 source slices of the real study, as read from disk (file order)."""
    return [pydicom.dcmread(path) for path in sorted(head_ct_dir.glob("*.dcm"))]


@pytest.fixture(scope="session")
def head_volume(source_datasets: list[pydicom.Dataset]) -> Volume:
    """The real tilted GE head CT as a Volume, built by the node's own ``build_volume``."""
    return build_volume(source_datasets)


def _brain_mask(hu: np.ndarray) -> np.ndarray:
    """Soft tissue inside the filled skull outline, per slice."""
    inside = np.zeros(hu.shape, dtype=bool)
    for index, plane in enumerate(hu):
        skull = ndimage.binary_closing(plane > BONE_HU, iterations=3)
        filled = ndimage.binary_fill_holes(skull)
        inside[index] = ndimage.binary_erosion(filled & ~skull, iterations=2)
    low, high = BRAIN_HU_RANGE
    return inside & (hu >= low) & (hu <= high)


def _labels(volume: Volume, with_hemorrhage: bool) -> np.ndarray:
    brain = _brain_mask(volume.hu)
    labels = np.full(volume.hu.shape, NON_BRAIN, dtype=np.uint8)
    labels[brain] = BRAIN
    if with_hemorrhage:
        centre_slice = int(np.argmax(brain.sum(axis=(1, 2))))
        rows, cols = np.nonzero(brain[centre_slice])
        centre = (int(np.median(rows)), int(np.median(cols)))
        yy, xx = np.ogrid[: volume.hu.shape[1], : volume.hu.shape[2]]
        disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= BLOB_RADIUS_PX**2
        for index in range(centre_slice - BLOB_HALF_SLICES, centre_slice + BLOB_HALF_SLICES + 1):
            labels[index][disc & brain[index]] = HEMORRHAGE
    return labels


def _probabilities(labels: np.ndarray, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """Slice/subject probabilities consistent with the mask (CPH-like when positive)."""
    has_blood = (labels == HEMORRHAGE).any(axis=(1, 2))
    slices = np.full((labels.shape[0], len(CLASS_NAMES)), 0.02, dtype=np.float32)
    if positive:
        slices[has_blood, CLASS_NAMES.index("any")] = 0.96
        slices[has_blood, CLASS_NAMES.index("CPH")] = 0.91
        slices[has_blood, CLASS_NAMES.index("SDH")] = 0.40
    subject = slices.max(axis=0)
    return slices, subject


def _prediction(volume: Volume, positive: bool) -> Prediction:
    labels = _labels(volume, with_hemorrhage=positive)
    slices, subject = _probabilities(labels, positive)
    return Prediction(labels=labels, slice_probabilities=slices, subject_probabilities=subject)


@pytest.fixture(scope="session")
def positive_prediction(head_volume: Volume) -> Prediction:
    """A hemorrhage blob on five mid-brain slices; CPH and SDH probabilities above/below 0.5."""
    return _prediction(head_volume, positive=True)


@pytest.fixture(scope="session")
def negative_prediction(head_volume: Volume) -> Prediction:
    """Brain but not a single hemorrhage voxel; all probabilities low."""
    return _prediction(head_volume, positive=False)


#: Compartments of the fake compartment prediction (the rest of SUBTYPES stays empty).
COMPARTMENTS_PRESENT = ("IVH", "EDH", "SDH")


def _with_compartments(prediction: Prediction) -> Prediction:
    """``prediction`` as weights with compartments give it: the blob's left columns EDH, its
    right columns SDH, its lowest slice IVH."""
    hemorrhage = prediction.labels == HEMORRHAGE
    compartments = np.full(prediction.labels.shape, NO_COMPARTMENT, dtype=np.uint8)
    if hemorrhage.any():
        slices, _, columns = np.nonzero(hemorrhage)
        middle = int(np.median(columns))
        left = np.zeros_like(hemorrhage)
        left[:, :, :middle] = True
        compartments[hemorrhage & left] = 1 + SUBTYPES.index("EDH")
        compartments[hemorrhage & ~left] = 1 + SUBTYPES.index("SDH")
        compartments[slices.min()][hemorrhage[slices.min()]] = 1 + SUBTYPES.index("IVH")
    return Prediction(
        labels=prediction.labels,
        slice_probabilities=prediction.slice_probabilities,
        subject_probabilities=prediction.subject_probabilities,
        compartments=compartments,
    )


@pytest.fixture(scope="session")
def compartment_prediction(positive_prediction: Prediction) -> Prediction:
    """The positive blob split into IVH, EDH and SDH compartments."""
    return _with_compartments(positive_prediction)


@pytest.fixture(scope="session")
def compartment_negative_prediction(negative_prediction: Prediction) -> Prediction:
    """Weights with compartments on a scan without hemorrhage: no compartment anywhere."""
    return _with_compartments(negative_prediction)


#: Operating points of the fake weights: ICH and CPH need more than 0.5, SDH less (0.40 at
#: 0.35 is Present here, Absent at the default 0.5).
OPERATING_POINTS = OperatingPoints(
    subject={"any": 0.31, "CPH": 0.95, "IVH": 0.35, "EDH": 0.2, "SDH": 0.35, "SAH": 0.25},
    source="validation split of the test fixtures",
)


def hemorrhage_volume_ml(volume: Volume, prediction: Prediction) -> float:
    """DESIGN.md's volume rule, computed here independently of the writers."""
    counts = (prediction.labels == HEMORRHAGE).sum(axis=(1, 2))
    return float((counts * volume.voxel_volumes_ml()).sum())


@dataclass(frozen=True)
class WrittenResults:
    """A SEG and SR built for one prediction and written to disk."""

    prediction: Prediction
    uids: ResultUids
    volume_ml: float
    volumes: HemorrhageVolumes
    operating_points: OperatingPoints | None
    seg_path: Path
    sr_path: Path


def _write_results(
    volume: Volume,
    prediction: Prediction,
    directory: Path,
    operating_points: OperatingPoints | None = None,
) -> WrittenResults:
    uids = ResultUids.derive(volume.series_instance_uid, MODEL)
    seg = build_seg(
        volume,
        prediction,
        MODEL,
        series_instance_uid=uids.seg_series_instance_uid,
        sop_instance_uid=uids.seg_sop_instance_uid,
        series_number=SEG_SERIES_NUMBER,
        content_datetime=CONTENT_DATETIME,
    )
    volume_ml = hemorrhage_volume_ml(volume, prediction)
    volumes = measure_hemorrhage(volume, prediction)
    sr = build_sr(
        volume,
        prediction,
        seg,
        MODEL,
        volumes=volumes,
        operating_points=operating_points,
        series_instance_uid=uids.sr_series_instance_uid,
        sop_instance_uid=uids.sr_sop_instance_uid,
        series_number=SR_SERIES_NUMBER,
        content_datetime=CONTENT_DATETIME,
    )
    seg_path, sr_path = directory / "seg.dcm", directory / "sr.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    sr.save_as(sr_path, enforce_file_format=True)
    return WrittenResults(prediction, uids, volume_ml, volumes, operating_points, seg_path, sr_path)


@pytest.fixture(scope="session")
def positive_results(
    head_volume: Volume, positive_prediction: Prediction, tmp_path_factory: pytest.TempPathFactory
) -> WrittenResults:
    """SEG + SR of the positive prediction, written to a temporary folder."""
    return _write_results(head_volume, positive_prediction, tmp_path_factory.mktemp("positive"))


@pytest.fixture(scope="session")
def negative_results(
    head_volume: Volume, negative_prediction: Prediction, tmp_path_factory: pytest.TempPathFactory
) -> WrittenResults:
    """SEG + SR of the all-negative prediction, written to a temporary folder."""
    return _write_results(head_volume, negative_prediction, tmp_path_factory.mktemp("negative"))


@pytest.fixture(scope="session")
def compartment_results(
    head_volume: Volume,
    compartment_prediction: Prediction,
    tmp_path_factory: pytest.TempPathFactory,
) -> WrittenResults:
    """SEG + SR of the compartment prediction at :data:`OPERATING_POINTS`."""
    return _write_results(
        head_volume,
        compartment_prediction,
        tmp_path_factory.mktemp("compartments"),
        OPERATING_POINTS,
    )


@pytest.fixture(scope="session")
def compartment_negative_results(
    head_volume: Volume,
    compartment_negative_prediction: Prediction,
    tmp_path_factory: pytest.TempPathFactory,
) -> WrittenResults:
    """SEG + SR of weights with compartments on a scan without hemorrhage."""
    return _write_results(
        head_volume,
        compartment_negative_prediction,
        tmp_path_factory.mktemp("compartments-negative"),
        OPERATING_POINTS,
    )


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a DICOM command-line tool, skipping the test with the reason when it is missing."""
    executable = shutil.which(tool)
    if executable is None:
        pytest.skip(f"{tool} not found on PATH (install dicom3tools / dcmtk to run this check)")
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def dciodvfy_errors(path: Path) -> set[str]:
    """The distinct ``Error`` messages dciodvfy reports for ``path`` (skips if not installed)."""
    completed = run_tool("dciodvfy", str(path))
    lines = (completed.stdout + completed.stderr).splitlines()
    return {line.strip() for line in lines if line.strip().startswith("Error")}


@pytest.fixture
def dciodvfy() -> Callable[[Path], set[str]]:
    """``dciodvfy_errors`` for tests (fixtures work under every pytest import mode)."""
    return dciodvfy_errors


@pytest.fixture
def dsrdump() -> Callable[[Path], subprocess.CompletedProcess[str]]:
    """Run dcmtk's dsrdump on a file (skips when dcmtk is not installed)."""
    return lambda path: run_tool("dsrdump", str(path))


@pytest.fixture(scope="session")
def model() -> ModelIdentity:
    """The model identity every result in these tests is written for."""
    return MODEL


@pytest.fixture(scope="session")
def source_baseline_errors(head_ct_dir: Path) -> set[str]:
    """dciodvfy errors the source slices already have (the writers must not add others)."""
    errors: set[str] = set()
    for path in sorted(head_ct_dir.glob("*.dcm"))[:2]:
        errors |= dciodvfy_errors(path)
    return errors
