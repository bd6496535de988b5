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
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import CLASS_NAMES
from ichnet_core.prediction import Prediction

TOP_LEVEL_KEYS = {
    "study_instance_uid",
    "series_instance_uid",
    "subject",
    "slices",
    "hemorrhage_volume_ml",
    "engine",
    "model",
    "timings_s",
}
TIMINGS = Timings(volume=1.5, inference=0.25, results=0.125)


def _result(volume: Volume, prediction: Prediction, model: ModelIdentity) -> dict:
    return build_result(
        volume,
        prediction,
        hemorrhage_volume_ml=12.3,
        engine="onnxruntime",
        model=model,
        timings=TIMINGS,
    )


def test_result_has_exactly_the_design_schema(
    head_volume: Volume, positive_prediction: Prediction, model: ModelIdentity
) -> None:
    result = _result(head_volume, positive_prediction, model)

    assert set(result) == TOP_LEVEL_KEYS
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
        build_result(
            head_volume,
            positive_prediction,
            hemorrhage_volume_ml=math.inf,
            engine="torch",
            model=model,
            timings=TIMINGS,
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
