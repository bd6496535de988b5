"""What happens to one complete series: select → volume → infer → SEG + SR (+ SC) + result.json.

Both the node (one job per received series) and ``ichnet-node infer`` (a folder on disk) call
:func:`analyse_series`; it computes everything in memory and writes nothing, so each caller decides
where results go (the node's outbox, or the user's output folder). A series that is not suitable
raises :class:`SeriesSkipped` carrying the one-line reason that ends up in the log and on the job.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.config import SelectionSection
from dicom_node.results import (
    HemorrhageVolumes,
    ModelIdentity,
    ResultUids,
    Timings,
    build_result,
    build_seg,
    build_sr,
    measure_hemorrhage,
)
from dicom_node.results.comparison import PriorResult, compare, study_datetime
from dicom_node.results.sc import build_key_images
from dicom_node.selection import SelectionResult, select_series
from ichnet_core.imaging.pixels import PixelDataError, number_of_frames
from ichnet_core.imaging.volume import Volume, VolumeError, build_volume
from ichnet_core.inference.engine import InferenceEngine
from ichnet_core.models.weights import ModelWeights
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: Result series get numbers far above what scanners use, so they sort after the source series.
SEG_SERIES_NUMBER_BASE: Final[int] = 9000
SR_SERIES_NUMBER_BASE: Final[int] = 9500
SC_SERIES_NUMBER_BASE: Final[int] = 10000
_SERIES_NUMBER_SPAN: Final[int] = 500


class SeriesSkipped(Exception):
    """The series is not suitable for ICHNet; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SeriesAnalysis:
    """Everything produced for one series, not yet written anywhere."""

    volume: Volume
    prediction: Prediction
    volumes: HemorrhageVolumes
    seg: Dataset
    sr: Dataset
    result: dict[str, Any]
    timings: Timings
    #: Secondary-capture key images (empty unless asked for).
    key_images: tuple[Dataset, ...] = ()

    @property
    def hemorrhage_volume_ml(self) -> float:
        """Total hemorrhage volume in mL."""
        return self.volumes.total_ml


def model_identity(weights: ModelWeights) -> ModelIdentity:
    """How the result objects name the model behind ``weights``."""
    return ModelIdentity(
        name=weights.model_name,
        version=weights.version,
        weights_sha256=weights.sha256,
        training_data=weights.training_data,
    )


def read_datasets(
    paths: Iterable[Path], *, headers_only: bool = False
) -> tuple[list[Dataset], list[str]]:
    """Read DICOM Part 10 files; returns the datasets and one line per unreadable file.

    Pixel data is read as stored (decoding happens in :func:`build_volume`), so a series is
    read once for selection and volume building alike. ``headers_only`` stops before the pixel
    data: enough for the series rules, whose image check reads its few slices from the files.
    """
    datasets: list[Dataset] = []
    problems: list[str] = []
    for path in sorted(paths):
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=headers_only))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            problems.append(f"{path.name}: not readable as DICOM ({exc})")
    return datasets, problems


def series_size_problem(headers: Sequence[Dataset], max_voxels: int) -> str | None:
    """Why a series is too large to analyse within one job's memory budget, or ``None``.

    Counted from the headers (``read_datasets(..., headers_only=True)``) so a series that is
    refused never has its pixel data read: ``limits.max_series_voxels`` bounds everything a
    job allocates in proportion to the series (stored pixels, HU volume, labels, the SEG).
    """
    voxels = 0
    for ds in headers:
        try:
            frames = number_of_frames(ds)
        except PixelDataError:
            frames = 1  # the volume builder names the damaged value; only the size counts here
        voxels += int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * frames
    if voxels <= max_voxels:
        return None
    return (
        f"skipped: the series has {voxels} voxels ({len(headers)} instances), more than "
        f"limits.max_series_voxels {max_voxels} (one job's memory budget; counted from the "
        "headers, no pixel data read)"
    )


def _series_number(source: Dataset, base: int) -> int:
    number = source.get("SeriesNumber")
    try:
        offset = int(number) % _SERIES_NUMBER_SPAN if number is not None else 0
    except (TypeError, ValueError):
        offset = 0
    return base + offset


def analyse_series(
    datasets: Sequence[Dataset],
    *,
    engine: InferenceEngine,
    weights: ModelWeights,
    rules: SelectionSection,
    selection: SelectionResult | None = None,
    key_images: bool = False,
    prior: PriorResult | None = None,
    result_version: int = 1,
    uids: ResultUids | None = None,
) -> SeriesAnalysis:
    """Run the whole analysis of one series in memory.

    Parameters
    ----------
    datasets:
        The instances of one series, in any order, with pixel data.
    engine:
        The inference engine (its ``name`` goes into result.json).
    weights:
        The weights the engine runs (model identification, result UIDs, operating points).
    rules:
        Series selection rules.
    selection:
        The caller's accepted selection of this series (the node decides per study, the CLI
        before it loads the model); ``None`` applies ``rules`` here.
    key_images:
        Also build the secondary-capture key images (a peer's ``outputs`` has ``sc``).
    prior:
        The patient's previous result (:meth:`dicom_node.priors.PriorIndex.latest_before`):
        result.json ``comparison`` and the SR report the change against it.
    result_version:
        Which analysis of this series it is (the node's job store counts them).
    uids:
        The result objects' UIDs; ``None`` (the node, ``infer``) makes new ones
        (:meth:`ResultUids.new`). Tests that pin the output pass fixed ones.

    Raises
    ------
    SeriesSkipped
        The selection rules refuse the series, or its volume cannot be built.
    """
    if selection is None:
        selection = select_series(datasets, rules)
    if not selection.accepted:
        raise SeriesSkipped(selection.reason)

    started = time.perf_counter()
    try:
        volume = build_volume(datasets)
    except VolumeError as exc:
        raise SeriesSkipped(f"volume cannot be built: {exc}") from exc
    built = time.perf_counter()
    prediction = engine.predict(volume)
    inferred = time.perf_counter()

    volumes = measure_hemorrhage(volume, prediction)
    operating_points = weights.operating_points
    model = model_identity(weights)
    if uids is None:
        uids = ResultUids.new(volume.series_instance_uid, model, result_version)
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    source = volume.datasets[0]
    current = study_datetime(source)
    comparison = (
        compare(volumes, current, prior) if prior is not None and current is not None else None
    )
    seg = build_seg(
        volume,
        prediction,
        model,
        series_instance_uid=uids.seg_series_instance_uid,
        sop_instance_uid=uids.seg_sop_instance_uid,
        series_number=_series_number(source, SEG_SERIES_NUMBER_BASE),
        content_datetime=now,
    )
    sr = build_sr(
        volume,
        prediction,
        seg,
        model,
        volumes=volumes,
        operating_points=operating_points,
        series_instance_uid=uids.sr_series_instance_uid,
        sop_instance_uid=uids.sr_sop_instance_uid,
        series_number=_series_number(source, SR_SERIES_NUMBER_BASE),
        content_datetime=now,
        comparison=comparison,
        prior=prior if comparison is not None else None,
    )
    present = operating_points.present(prediction.subject_probabilities)
    images = (
        build_key_images(
            volume,
            prediction,
            model,
            volumes=volumes,
            seg_sop_instance_uid=uids.seg_sop_instance_uid,
            series_number=_series_number(source, SC_SERIES_NUMBER_BASE),
            present=present,
            content_datetime=now,
        )
        if key_images
        else []
    )
    timings = Timings(
        volume=built - started,
        inference=inferred - built,
        results=time.perf_counter() - inferred,
    )
    result = build_result(
        volume,
        prediction,
        volumes=volumes,
        operating_points=operating_points,
        engine=engine.name,
        model=model,
        timings=timings,
        comparison=comparison,
        result_version=result_version,
    )
    logger.info(
        "series %s: ICH p=%.3f (%s at operating point %.3g), hemorrhage %.2f mL "
        "(volume %.2fs, inference %.2fs, results %.2fs)",
        volume.series_instance_uid,
        float(prediction.subject_probabilities[0]),
        "present" if result["present"]["any"] else "absent",
        operating_points.subject["any"],
        volumes.total_ml,
        timings.volume,
        timings.inference,
        timings.results,
    )
    return SeriesAnalysis(volume, prediction, volumes, seg, sr, result, timings, tuple(images))
