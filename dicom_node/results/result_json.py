"""result.json: the machine-readable summary of one series (schema in ../shared/DESIGN.md).

Other tools read this file (the CLI's ``infer`` writes it next to seg.dcm and sr.dcm), so the keys
are a contract: ``study_instance_uid``, ``series_instance_uid``, ``subject`` (probability per
class name), ``slices`` (one entry per slice in volume order, i.e. along the slice normal, each
with its ``sop_instance_uid``), ``hemorrhage_volume_ml``, ``engine``, ``model`` {name, version,
weights_sha256} and ``timings_s`` {volume, inference, results}; and, added 2026-12,
``present`` (subject-level decision per output at the weights' operating points, the same the SR
states), ``operating_points`` (those thresholds), ``volumes_ml`` (``hemorrhage`` = the total,
then one value per compartment, ``null`` for weights without compartments), ``result_version``
(1 for the first analysis of a series, one more for each later one), ``comparison`` (the
patient's prior result, or ``null``; :mod:`dicom_node.results.comparison`). One key beyond
DESIGN.md: ``operating_points_source`` says where the thresholds come from, so a reader can tell
thresholds chosen on validation data from the 0.5 fallback of weights that carry none.

The file is written atomically (temporary file in the same folder, fsync, rename), so a reader
never sees half a file, even when the node is killed mid-write.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from dicom_node.results.checks import check_prediction, check_volume_ml
from dicom_node.results.device import ModelIdentity
from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.durable import write_atomic
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import CLASS_NAMES
from ichnet_core.operating_points import OperatingPoints
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: File name of result.json, in the node's ``results/<job>/`` and in ``infer``'s output folder.
RESULT_JSON_NAME: Final[str] = "result.json"
#: Permissions of result.json (rw-------): it names series and findings of a patient, so it is
#: patient data like everything else under storage_dir (DESIGN.md).
RESULT_FILE_MODE: Final[int] = 0o600


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds spent per stage of one job (result.json ``timings_s``)."""

    volume: float
    inference: float
    results: float

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f"Timing {name!r} must be finite and >= 0 s; found {value}.")


def build_result(
    volume: Volume,
    prediction: Prediction,
    *,
    volumes: HemorrhageVolumes,
    operating_points: OperatingPoints,
    engine: str,
    model: ModelIdentity,
    timings: Timings,
    comparison: Mapping[str, Any] | None = None,
    result_version: int = 1,
) -> dict[str, Any]:
    """The result.json content for one series, as plain JSON types.

    Parameters
    ----------
    volume:
        The analysed series (UIDs, slice order).
    prediction:
        Model output for ``volume``.
    volumes:
        Total and per-compartment hemorrhage volume in mL, finite and >= 0.
    operating_points:
        The weights' decision thresholds (``present``, ``operating_points``).
    engine:
        Name of the inference engine that ran (e.g. ``"onnxruntime"``).
    model:
        Identification of the model.
    timings:
        Seconds spent building the volume, inferring and writing results.
    comparison:
        ``comparison`` with the patient's prior result
        (:func:`dicom_node.results.comparison.compare`); ``None`` when there is none.
    result_version:
        1 for the first analysis of the series, one more for each later one.

    Returns
    -------
    dict
        The DESIGN.md keys (and ``operating_points_source``).

    Raises
    ------
    ValueError
        When the prediction does not match the volume, or a value is out of range.
    """
    check_prediction(volume, prediction)
    check_volume_ml(volumes.total_ml)
    for value in (volumes.compartments_ml or {}).values():
        check_volume_ml(value)
    if not engine:
        raise ValueError("The engine name of result.json must not be empty.")
    if isinstance(result_version, bool) or result_version < 1:
        raise ValueError(f"result_version starts at 1; found {result_version!r}.")
    slices = [
        {"sop_instance_uid": uid, **probabilities}
        for uid, probabilities in zip(
            volume.sop_instance_uids, prediction.slice_dicts(), strict=True
        )
    ]
    subject = prediction.subject_dict()
    return {
        "study_instance_uid": volume.study_instance_uid,
        "series_instance_uid": volume.series_instance_uid,
        "subject": subject,
        "slices": slices,
        "hemorrhage_volume_ml": float(volumes.total_ml),
        "engine": engine,
        "model": {
            "name": model.name,
            "version": model.version,
            "weights_sha256": model.weights_sha256,
        },
        "timings_s": asdict(timings),
        "present": operating_points.present(subject),
        "operating_points": {name: operating_points.subject[name] for name in CLASS_NAMES},
        "operating_points_source": operating_points.source,
        "volumes_ml": volumes.to_json(),
        "result_version": int(result_version),
        "comparison": dict(comparison) if comparison is not None else None,
    }


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` atomically.

    The JSON is encoded before anything touches the disk, and with ``allow_nan=False``: NaN is
    not JSON, and other tools would fail on it later and far from the cause.

    Raises
    ------
    ValueError
        When ``result`` holds NaN or infinity.
    TypeError
        When ``result`` holds a value JSON cannot represent.
    OSError
        When the folder cannot be written; no partial file is left behind.
    """
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    write_atomic(path, text.encode("utf-8"), mode=RESULT_FILE_MODE)
    logger.info(
        "Wrote %s for series %s.", path, result.get("series_instance_uid", "<no series UID>")
    )
