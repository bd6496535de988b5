"""The result of running ICHNet on one series: what every inference engine returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichnet_core.labels import CLASS_NAMES


@dataclass(frozen=True)
class Prediction:
    """Model output for one series, in the order of :class:`ichnet_core.imaging.volume.Volume`.

    Attributes
    ----------
    labels:
        ``(S, rows, columns)`` uint8 segmentation at source resolution, values
        0 non-brain / 1 brain / 2 hemorrhage (``ichnet_core.labels``).
    slice_probabilities:
        ``(S, 6)`` float32 sigmoid probabilities per slice, columns in ``CLASS_NAMES`` order.
    subject_probabilities:
        ``(6,)`` float32 sigmoid probabilities for the whole series, ``CLASS_NAMES`` order.
    segmentation_probabilities:
        ``(S, 3, h, w)`` float32 softmax at the model's input resolution. Kept so engines can be
        compared with each other (parity tests); ``None`` when an engine was asked not to keep it.
        ``(S, 3 + 5, h, w)`` for weights with compartments (the compartment softmax follows).
    compartments:
        ``(S, rows, columns)`` uint8: on every hemorrhage pixel its compartment
        ``1 + SUBTYPES.index(name)``, 0 elsewhere; ``None`` for weights without compartments.
    """

    labels: np.ndarray
    slice_probabilities: np.ndarray
    subject_probabilities: np.ndarray
    segmentation_probabilities: np.ndarray | None = None
    compartments: np.ndarray | None = None

    def subject_dict(self) -> dict[str, float]:
        """Subject-level probabilities keyed by class name (result.json ``subject``)."""
        return {
            name: float(p) for name, p in zip(CLASS_NAMES, self.subject_probabilities, strict=True)
        }

    def slice_dicts(self) -> list[dict[str, float]]:
        """Per-slice probabilities keyed by class name, in volume order."""
        return [
            {name: float(p) for name, p in zip(CLASS_NAMES, row, strict=True)}
            for row in self.slice_probabilities
        ]
