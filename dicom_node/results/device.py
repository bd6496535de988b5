"""Who made a result object: the software device and the model (algorithm) inside it.

A DICOM object must say which equipment created it (General Equipment module) and, for an
automatic segmentation, which algorithm (Segmentation Algorithm Identification). For an AI node
the "device" that matters clinically is the trained model: the same code with other weights is a
different device. So the serial number and the SR Device Observer UID are derived from the weights'
sha256, and the same weights always yield the same identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import highdicom as hd

from dicom_node.results import codes
from dicom_node.results.uids import derived_uid
from dicom_node.results.version import PACKAGE_NAME, software_version

#: General Equipment Manufacturer (LO) of every object the node writes.
MANUFACTURER: Final[str] = "ICHNet DICOM node project"
#: General Equipment Manufacturer's Model Name (LO).
MODEL_NAME: Final[str] = "ICHNet DICOM node"
#: Lower-case hexadecimal SHA-256 digest.
_SHA256_PATTERN: Final[re.Pattern[str]] = re.compile(r"[0-9a-f]{64}")
#: Value Representation LO holds at most 64 characters (PS3.5 6.2).
_LO_MAX_LENGTH: Final[int] = 64


#: ``training_data`` values and how the objects phrase them.
TRAINING_DATA_NOTES: Final[dict[str, str]] = {
    "none": "untrained random weights (placeholder)",
    "synthetic": "trained on synthetic data only",
    "real": "trained on real data",
}


@dataclass(frozen=True)
class ModelIdentity:
    """The model that produced a prediction, as the result objects describe it.

    Attributes
    ----------
    name:
        Algorithm name, e.g. ``"ICHNet"`` (Algorithm Name, LO).
    version:
        Model version (Algorithm Version, LO).
    weights_sha256:
        SHA-256 of the weights file, 64 lower-case hex digits; identifies the trained model.
    training_data:
        What the weights learned from: ``none`` (random initialisation), ``synthetic``
        (phantoms only) or ``real``. Written into every object so nobody mistakes such output
        for a clinically validated result.
    """

    name: str
    version: str
    weights_sha256: str
    training_data: str

    def __post_init__(self) -> None:
        for field_name in ("name", "version"):
            value = getattr(self, field_name)
            if not value or len(value) > _LO_MAX_LENGTH:
                raise ValueError(
                    f"ModelIdentity.{field_name} must be 1 to {_LO_MAX_LENGTH} characters "
                    f"(a DICOM LO value); found {value!r}."
                )
        if self.training_data not in TRAINING_DATA_NOTES:
            raise ValueError(
                f"ModelIdentity.training_data must be one of {sorted(TRAINING_DATA_NOTES)}; "
                f"found {self.training_data!r}."
            )
        if not _SHA256_PATTERN.fullmatch(self.weights_sha256):
            raise ValueError(
                "ModelIdentity.weights_sha256 must be 64 lower-case hex digits; "
                f"found {self.weights_sha256!r}."
            )

    @property
    def device_uid(self) -> str:
        """Device Observer UID: a ``2.25`` UID derived from the weights digest (deterministic)."""
        return derived_uid("device", self.weights_sha256)

    @property
    def training_data_note(self) -> str:
        """Short statement of what the model was trained on."""
        return TRAINING_DATA_NOTES[self.training_data]

    def algorithm_parameters(self) -> dict[str, str]:
        """Key/value pairs for Algorithm Parameters (SEG) and TID 4019 parameters (SR)."""
        return {
            "weights_sha256": self.weights_sha256,
            "training_data": self.training_data,
        }


@dataclass(frozen=True)
class Equipment:
    """General Equipment module values of the objects the node writes."""

    manufacturer: str
    model_name: str
    software_versions: list[str]
    device_serial_number: str


def equipment(model: ModelIdentity) -> Equipment:
    """Equipment description for ``model``: node version plus model version, serial = weights.

    The Device Serial Number is the weights digest (64 characters, the LO maximum): two nodes
    running the same weights are the same device in the sense that matters for a result.
    """
    return Equipment(
        manufacturer=MANUFACTURER,
        model_name=MODEL_NAME,
        software_versions=[
            f"{PACKAGE_NAME} {software_version()}",
            f"{model.name} {model.version}"[:_LO_MAX_LENGTH],
        ],
        device_serial_number=model.weights_sha256,
    )


def segmentation_algorithm(model: ModelIdentity) -> hd.AlgorithmIdentificationSequence:
    """Segmentation Algorithm Identification (PS3.3 C.8.20.2) for ``model``.

    Family is DCM 123110 "Artificial Intelligence" (CID 7162); the parameters carry the weights
    digest and whether the training data were synthetic.
    """
    return hd.AlgorithmIdentificationSequence(
        name=model.name,
        family=codes.ARTIFICIAL_INTELLIGENCE,
        version=model.version,
        source=MANUFACTURER,
        parameters=model.algorithm_parameters(),
    )
