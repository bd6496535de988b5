"""result.json: DESIGN.md schema, slice order, atomic writing."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dicom_node.results.device import ModelIdentity
from dicom_node.results.result_json import Timings, build_result, write_result
from dicom_node.results.volumes import HemorrhageVolumes, measure_hemorrhage
from ichnet_core.imaging.measure import label_volume_ml
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import CLASS_NAMES, SUBTYPES
from ichnet_core.operating_points import OperatingPoints
from ichnet_core.prediction import Prediction

from .conftest import OPERATING_POINTS

#: DESIGN.md's first keys, then the ones added 2026-12 (plus operating_points_source).
TOP_LEVEL_KEYS = [
    "study_instance_uid",
    "series_instance_uid",
    "subject",
    "slices",
    "hemorrhage_volume_ml",
    "engine",
    "model",
    "timings_s",
    "present",
    "operating_points",
    "operating_points_source",
    "volumes_ml",
    "result_version",
    "comparison",
]
TIMINGS = Timings(volume=1.5, inference=0.25, results=0.125)


def _result(
    volume: Volume,
    prediction: Prediction,
    model: ModelIdentity,
    operating_points: OperatingPoints | None = None,
    volumes: HemorrhageVolumes | None = None,
) -> dict:
    return build_result(
        volume,
        prediction,
        volumes=volumes or HemorrhageVolumes(total_ml=12.3, compartments_ml=None),
        operating_points=operating_points or OperatingPoints.default(),
        engine="onnxruntime",
        model=model,
        timings=TIMINGS,
    )


def test_result_has_exactly_the_design_schema(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    result = _result(head_volume, positive_prediction, model)

    assert list(result) == TOP_LEVEL_KEYS
    assert result["comparison"] is None  # no prior given
    assert result["study_instance_uid"] == head_volume.study_instance_uid
    assert result["series_instance_uid"] == head_volume.series_instance_uid
    assert list(result["subject"]) == list(CLASS_NAMES)
    assert all(type(v) is float for v in result["subject"].values())
    assert result["hemorrhage_volume_ml"] == 12.3
    assert result["engine"] == "onnxruntime"
    assert result["model"] == {
        "name": model.name,
        "version": model.version,
        "weights_sha256": model.weights_sha256,
    }
    assert result["timings_s"] == {"volume": 1.5, "inference": 0.25, "results": 0.125}
    for entry in result["slices"]:
        assert list(entry) == ["sop_instance_uid", *CLASS_NAMES]
        assert all(type(entry[name]) is float for name in CLASS_NAMES)


def test_slices_follow_the_volume_order_along_the_normal(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    result = _result(head_volume, positive_prediction, model)
    uids = [entry["sop_instance_uid"] for entry in result["slices"]]
    position_of = dict(zip(head_volume.sop_instance_uids, head_volume.positions, strict=True))

    along_normal = [float(np.dot(head_volume.normal, position_of[uid])) for uid in uids]

    assert uids == list(head_volume.sop_instance_uids)
    assert along_normal == sorted(along_normal)
    blood = [entry["any"] for entry in result["slices"]]
    np.testing.assert_allclose(blood, positive_prediction.slice_probabilities[:, 0])


def test_write_result_round_trips_and_replaces_atomically(
    tmp_path: Path, head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    path = tmp_path / "result.json"
    path.write_text("old content that must disappear")
    result = _result(head_volume, positive_prediction, model)

    write_result(path, result)

    assert json.loads(path.read_text()) == result
    assert os.listdir(tmp_path) == ["result.json"]


def test_write_result_refuses_nan_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"

    with pytest.raises(ValueError, match="Out of range float"):
        write_result(path, {"hemorrhage_volume_ml": math.nan})

    assert os.listdir(tmp_path) == []


def test_invalid_values_are_rejected(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    with pytest.raises(ValueError, match="Timing 'inference'"):
        Timings(volume=0.0, inference=-1.0, results=0.0)
    with pytest.raises(ValueError, match="finite number of mL"):
        _result(
            head_volume,
            positive_prediction,
            model,
            volumes=HemorrhageVolumes(total_ml=math.inf, compartments_ml=None),
        )
    bad = Prediction(
        labels=positive_prediction.labels,
        slice_probabilities=positive_prediction.slice_probabilities,
        subject_probabilities=positive_prediction.subject_probabilities + 1.0,
    )
    with pytest.raises(
        ValueError, match=r"Subject probabilities must be finite and within \[0, 1\]"
    ):
        _result(head_volume, bad, model)


def test_present_and_operating_points_follow_the_weights(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    subject = positive_prediction.subject_dict()  # any 0.96, CPH 0.91, SDH 0.40, others 0.02

    result = _result(head_volume, positive_prediction, model, OPERATING_POINTS)
    fallback = _result(head_volume, positive_prediction, model)

    assert result["operating_points"] == dict(OPERATING_POINTS.subject)
    assert list(result["present"]) == list(CLASS_NAMES)
    assert result["present"] == {n: subject[n] >= OPERATING_POINTS.subject[n] for n in CLASS_NAMES}
    # CPH 0.91 is below its 0.95 operating point, SDH 0.40 above its 0.35: both differ from 0.5.
    assert result["present"]["CPH"] is False and result["present"]["SDH"] is True
    assert fallback["present"]["CPH"] is True and fallback["present"]["SDH"] is False
    assert fallback["operating_points"] == dict.fromkeys(CLASS_NAMES, 0.5)
    assert "carry no operating points" in fallback["operating_points_source"]
    assert result["operating_points_source"] == OPERATING_POINTS.source


def test_volumes_without_compartments_are_null_not_zero(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    volumes = measure_hemorrhage(head_volume, positive_prediction)

    result = _result(head_volume, positive_prediction, model, volumes=volumes)

    assert list(result["volumes_ml"]) == ["hemorrhage", *SUBTYPES]
    assert result["volumes_ml"]["hemorrhage"] == result["hemorrhage_volume_ml"] > 0.0
    assert all(result["volumes_ml"][name] is None for name in SUBTYPES)


def test_compartment_volumes_sum_to_the_total(
    head_volume: Volume, compartment_prediction: Prediction, model: ModelIdentity
) -> None:
    volumes = measure_hemorrhage(head_volume, compartment_prediction)

    result = json.loads(
        json.dumps(_result(head_volume, compartment_prediction, model, volumes=volumes))
    )

    per = result["volumes_ml"]
    assert per["hemorrhage"] == result["hemorrhage_volume_ml"] > 0.0
    assert sum(per[name] for name in SUBTYPES) == pytest.approx(per["hemorrhage"], rel=1e-12)
    assert {name for name in SUBTYPES if per[name] > 0} == {"IVH", "EDH", "SDH"}
    voxel_ml = head_volume.voxel_volumes_ml()
    for name in SUBTYPES:
        mask = (compartment_prediction.compartments == 1 + SUBTYPES.index(name)).astype(np.uint8)
        assert per[name] == pytest.approx(label_volume_ml(mask, 1, voxel_ml))
