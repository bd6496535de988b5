"""Operating points: the probability from which each output is called present.

A sigmoid output is a probability, not a decision. Which probability counts as "present" is a
property of the trained weights, chosen on their validation split (``ichnet-train
operating-points``) and stored in the weights' metadata under ``"operating_points"``, so the
sha256 of the weights file covers the thresholds too::

    "operating_points": {
        "subject": {"any": 0.31, "CPH": 0.4, "IVH": 0.35, "EDH": 0.2, "SDH": 0.3, "SAH": 0.25},
        "slice": {"any": 0.4, ...},                 # optional
        "voxel": {"hemorrhage": 0.3},               # optional
        "source": "val split of runs/x (64 cases), checkpoint sha256 ...",
        "rules": {"any": "max specificity with sensitivity >= 0.95", "CPH": "Youden J", ...}}

``voxel.hemorrhage`` is the hemorrhage probability (softmax, at source resolution) from which a
voxel is segmented as hemorrhage; the other voxels are brain or non-brain, whichever is more
probable. Without it each voxel takes the most probable of the three classes. Why a threshold at
all: a network trained with a Dice + cross-entropy loss on a rare class tends to under-segment
it (run 11: median segmented/true volume 0.88), and the volume a radiologist reads is then
biased low; a threshold chosen on validation cases corrects the bias.

Weights without operating points (every file written before they existed, e.g. the bundled
0.3.0) fall back to :data:`DEFAULT_THRESHOLD` for every output; the node logs a warning and the
result objects say so (``source``).

A finding is present when its probability is **at least** its threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import numpy as np

from ichnet_core.labels import CLASS_NAMES

#: Threshold of every output of weights that carry no operating points.
DEFAULT_THRESHOLD: Final[float] = 0.5
#: ``source`` of the fallback, as result objects print it.
DEFAULT_SOURCE: Final[str] = (
    f"default {DEFAULT_THRESHOLD:g} for every output: the weights carry no operating points"
)
#: Key of the weights metadata that holds the operating points.
METADATA_KEY: Final[str] = "operating_points"
#: Levels that may carry thresholds; ``subject`` is required, ``slice`` optional.
LEVELS: Final[tuple[str, ...]] = ("subject", "slice")
#: Key of the optional voxel-level threshold(s) and the one class it decides.
VOXEL_KEY: Final[str] = "voxel"
VOXEL_CLASS: Final[str] = "hemorrhage"


class OperatingPointsError(ValueError):
    """Operating points that are malformed: a missing output, a threshold outside (0, 1]."""


def _threshold(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OperatingPointsError(f"{what} must be a number, found {value!r}")
    if not (math.isfinite(value) and 0.0 < float(value) <= 1.0):
        raise OperatingPointsError(f"{what} must be in (0, 1], found {value!r}")
    return float(value)


def _thresholds(values: object, what: str) -> Mapping[str, float]:
    if not isinstance(values, Mapping):
        raise OperatingPointsError(f"{what} must map each of {list(CLASS_NAMES)} to a threshold")
    missing = [name for name in CLASS_NAMES if name not in values]
    unknown = sorted(set(values) - set(CLASS_NAMES))
    if missing or unknown:
        raise OperatingPointsError(f"{what}: missing outputs {missing}, unknown outputs {unknown}")
    return MappingProxyType(
        {name: _threshold(values[name], f"{what}.{name}") for name in CLASS_NAMES}
    )


@dataclass(frozen=True)
class OperatingPoints:
    """Per-output decision thresholds of one set of weights.

    Attributes
    ----------
    subject:
        Threshold per ``CLASS_NAMES`` output at subject (series) level: result.json ``present``
        and the SR's Present/Absent.
    slice:
        Slice-level thresholds, or ``None`` when they were not chosen.
    source:
        Where the thresholds come from, in words (validation split and checkpoint, or the
        default).
    is_default:
        True for the :data:`DEFAULT_THRESHOLD` fallback of weights without operating points.
    rules:
        The selection rule of each subject-level output (and of ``hemorrhage_voxel``), in words
        (empty for the default).
    hemorrhage_voxel:
        Hemorrhage probability from which a voxel is segmented as hemorrhage, or ``None``: the
        most probable of the three classes (see the module docstring).
    """

    subject: Mapping[str, float]
    slice: Mapping[str, float] | None = None
    source: str = DEFAULT_SOURCE
    is_default: bool = False
    rules: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    hemorrhage_voxel: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", _thresholds(self.subject, "operating_points.subject"))
        if self.slice is not None:
            object.__setattr__(self, "slice", _thresholds(self.slice, "operating_points.slice"))
        if self.hemorrhage_voxel is not None:
            where = f"operating_points.{VOXEL_KEY}.{VOXEL_CLASS}"
            object.__setattr__(self, "hemorrhage_voxel", _threshold(self.hemorrhage_voxel, where))
        if not self.source:
            raise OperatingPointsError("operating_points.source must say where they come from")
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))

    @classmethod
    def default(cls) -> OperatingPoints:
        """:data:`DEFAULT_THRESHOLD` for every output, marked as the fallback."""
        flat = dict.fromkeys(CLASS_NAMES, DEFAULT_THRESHOLD)
        return cls(subject=flat, slice=flat, source=DEFAULT_SOURCE, is_default=True)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> OperatingPoints:
        """The operating points of weights ``metadata``; the default when it has none.

        Raises
        ------
        OperatingPointsError
            When ``metadata["operating_points"]`` exists but is malformed.
        """
        entry = metadata.get(METADATA_KEY)
        if entry is None:
            return cls.default()
        if not isinstance(entry, Mapping):
            raise OperatingPointsError(f"{METADATA_KEY} must be a mapping, found {entry!r}")
        unknown = sorted(set(entry) - {*LEVELS, VOXEL_KEY, "source", "rules"})
        if unknown:
            raise OperatingPointsError(f"{METADATA_KEY} has unknown keys {unknown}")
        if "subject" not in entry:
            raise OperatingPointsError(f"{METADATA_KEY} lacks the subject-level thresholds")
        rules = entry.get("rules", {})
        if not isinstance(rules, Mapping):
            raise OperatingPointsError(f"{METADATA_KEY}.rules must be a mapping")
        voxel = entry.get(VOXEL_KEY, {})
        if not isinstance(voxel, Mapping) or set(voxel) - {VOXEL_CLASS}:
            raise OperatingPointsError(
                f"{METADATA_KEY}.{VOXEL_KEY} must be a mapping with at most {VOXEL_CLASS!r}, "
                f"found {voxel!r}"
            )
        return cls(
            subject=entry["subject"],
            slice=entry.get("slice"),
            source=str(entry.get("source", "")) or "unspecified",
            rules={str(k): str(v) for k, v in rules.items()},
            hemorrhage_voxel=voxel.get(VOXEL_CLASS),
        )

    def to_metadata(self) -> dict[str, Any]:
        """The JSON stored under ``metadata["operating_points"]`` (inverse of from_metadata)."""
        entry: dict[str, Any] = {"subject": dict(self.subject), "source": self.source}
        if self.slice is not None:
            entry["slice"] = dict(self.slice)
        if self.hemorrhage_voxel is not None:
            entry[VOXEL_KEY] = {VOXEL_CLASS: self.hemorrhage_voxel}
        if self.rules:
            entry["rules"] = dict(self.rules)
        return entry

    def present(self, subject_probabilities: np.ndarray | Mapping[str, float]) -> dict[str, bool]:
        """Subject-level decision per output: probability ``>=`` its threshold.

        Parameters
        ----------
        subject_probabilities:
            ``(6,)`` in ``CLASS_NAMES`` order, or a mapping keyed by class name.
        """
        if isinstance(subject_probabilities, Mapping):
            values = [float(subject_probabilities[name]) for name in CLASS_NAMES]
        else:
            values = [float(p) for p in np.asarray(subject_probabilities).reshape(-1)]
            if len(values) != len(CLASS_NAMES):
                raise ValueError(
                    f"expected {len(CLASS_NAMES)} subject probabilities, found {len(values)}"
                )
        return {
            name: value >= self.subject[name]
            for name, value in zip(CLASS_NAMES, values, strict=True)
        }

    def describe(self) -> str:
        """One line: each subject threshold and where they come from (logs, SR parameters)."""
        thresholds = ", ".join(f"{name} {self.subject[name]:.3g}" for name in CLASS_NAMES)
        if self.hemorrhage_voxel is not None:
            thresholds += f"; hemorrhage voxels from {self.hemorrhage_voxel:.3g}"
        return f"{thresholds} ({self.source})"
