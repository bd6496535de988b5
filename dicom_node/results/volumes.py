"""Hemorrhage volumes of one prediction: the total and, for weights with compartments, each one.

The volume rule itself (pixel area x the slice's extent, uneven spacing included) lives in
``ichnet_core.imaging.measure`` and ``Volume.voxel_volumes_ml``; this module only applies it to
the hemorrhage label and to each compartment label. Every hemorrhage pixel carries exactly one
compartment (``Prediction.compartments``), so the compartments add up to the total.

Weights without compartments (e.g. the bundled 0.3.0) know only "hemorrhage": their compartment
volumes are ``None`` (result.json ``null``), never zeros, which would claim "measured, none".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from dicom_node.results.checks import check_prediction
from ichnet_core.imaging.measure import label_volume_ml
from ichnet_core.imaging.volume import Volume
from ichnet_core.inference.pipeline import hemorrhage_volume_ml
from ichnet_core.labels import SUBTYPES
from ichnet_core.prediction import Prediction

#: result.json ``volumes_ml`` key of the total.
TOTAL_KEY: Final[str] = "hemorrhage"


def compartment_value(name: str) -> int:
    """Value of compartment ``name`` in ``Prediction.compartments`` (1 + SUBTYPES index)."""
    return 1 + SUBTYPES.index(name)


@dataclass(frozen=True)
class HemorrhageVolumes:
    """Hemorrhage volume in mL, in total and per compartment.

    Attributes
    ----------
    total_ml:
        All hemorrhage voxels (DESIGN.md rule).
    compartments_ml:
        mL per ``SUBTYPES`` name, summing to ``total_ml``; ``None`` for weights without
        compartments.
    """

    total_ml: float
    compartments_ml: Mapping[str, float] | None

    def present_compartments(self) -> tuple[str, ...]:
        """Compartments with at least one voxel, in ``SUBTYPES`` order (empty without them)."""
        if self.compartments_ml is None:
            return ()
        return tuple(name for name in SUBTYPES if self.compartments_ml[name] > 0.0)

    def to_json(self) -> dict[str, Any]:
        """result.json ``volumes_ml``: total under ``hemorrhage``, then each compartment."""
        per = self.compartments_ml
        return {
            TOTAL_KEY: self.total_ml,
            **{name: (per[name] if per is not None else None) for name in SUBTYPES},
        }


def measure_hemorrhage(volume: Volume, prediction: Prediction) -> HemorrhageVolumes:
    """Total and per-compartment hemorrhage volume of ``prediction`` on ``volume``.

    Raises
    ------
    ValueError
        When the prediction does not fit the volume or breaks the compartment rule
        (:func:`~dicom_node.results.checks.check_prediction`).
    """
    check_prediction(volume, prediction)
    total = hemorrhage_volume_ml(prediction.labels, volume)
    compartments = prediction.compartments
    if compartments is None:
        return HemorrhageVolumes(total_ml=total, compartments_ml=None)
    voxel_ml = volume.voxel_volumes_ml()
    per = {
        name: label_volume_ml(compartments, compartment_value(name), voxel_ml) for name in SUBTYPES
    }
    return HemorrhageVolumes(total_ml=total, compartments_ml=MappingProxyType(per))
