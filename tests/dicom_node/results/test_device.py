"""Model and equipment identity: validated, derived from the weights, deterministic."""

from __future__ import annotations

import importlib.metadata

import pytest
from pydicom.uid import UID

import dicom_node
from dicom_node.results.device import ModelIdentity, equipment, segmentation_algorithm
from dicom_node.results.version import PACKAGE_NAME, software_version

SHA_A = "a" * 64
SHA_B = "b" * 64


def _model(sha: str = SHA_A, synthetic: bool = True) -> ModelIdentity:
    return ModelIdentity("ICHNet", "1.0", sha, training_data="synthetic" if synthetic else "real")


def test_device_uid_is_a_valid_uid_determined_by_the_weights() -> None:
    uid = _model().device_uid

    assert UID(uid).is_valid and uid.startswith("2.25.")
    assert _model().device_uid == uid
    assert _model(SHA_B).device_uid != uid


def test_equipment_names_node_version_and_weights() -> None:
    device = equipment(_model())

    assert device.device_serial_number == SHA_A
    assert device.software_versions == [f"{PACKAGE_NAME} {software_version()}", "ICHNet 1.0"]


def test_software_version_comes_from_package_metadata() -> None:
    try:
        expected = importlib.metadata.version(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        expected = dicom_node.__version__

    assert software_version() == expected


def test_algorithm_identification_says_whether_training_data_were_synthetic() -> None:
    synthetic = segmentation_algorithm(_model(synthetic=True))[0]
    real = segmentation_algorithm(_model(synthetic=False))[0]

    assert "training_data=synthetic" in synthetic.AlgorithmParameters
    assert "training_data=real" in real.AlgorithmParameters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights_sha256": "A" * 64}, "64 lower-case hex digits"),
        ({"weights_sha256": "a" * 63}, "64 lower-case hex digits"),
        ({"name": ""}, "ModelIdentity.name must be 1 to 64"),
        ({"version": "v" * 65}, "ModelIdentity.version must be 1 to 64"),
    ],
)
def test_invalid_identity_is_rejected(kwargs: dict[str, str], message: str) -> None:
    fields = {"name": "ICHNet", "version": "1.0", "weights_sha256": SHA_A, **kwargs}

    with pytest.raises(ValueError, match=message):
        ModelIdentity(**fields, training_data="real")
