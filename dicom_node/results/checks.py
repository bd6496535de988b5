"""Input checks shared by the writers: a prediction must describe the volume it is written for."""

from __future__ import annotations

import math

import numpy as np

from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import (
    HEMORRHAGE,
    NO_COMPARTMENT,
    NUM_CLASSIFICATION_OUTPUTS,
    NUM_COMPARTMENTS,
    NUM_SEGMENTATION_CLASSES,
)
from ichnet_core.prediction import Prediction


def check_prediction(volume: Volume, prediction: Prediction) -> None:
    """Raise when ``prediction`` cannot belong to ``volume``.

    Writing a mask onto the wrong slices or a probability outside [0, 1] into a clinical object
    would be worse than writing nothing, so every writer calls this first.

    Raises
    ------
    ValueError
        When shapes disagree, a label is outside the segmentation classes, a probability is
        not a finite number in [0, 1], or the compartments (when present) do not mark exactly
        the hemorrhage pixels with one of the five compartments.
    """
    expected_labels = (volume.num_slices, *volume.hu.shape[1:])
    if prediction.labels.shape != expected_labels:
        raise ValueError(
            f"Prediction labels have shape {prediction.labels.shape}; the volume needs "
            f"{expected_labels} (slices, rows, columns)."
        )
    if len(volume.datasets) != volume.num_slices:
        raise ValueError(
            f"The volume has {volume.num_slices} slices but {len(volume.datasets)} source "
            "datasets; the writers need one dataset per slice."
        )
    max_label = int(prediction.labels.max(initial=0))
    if max_label >= NUM_SEGMENTATION_CLASSES:
        raise ValueError(
            f"Prediction labels must be 0..{NUM_SEGMENTATION_CLASSES - 1}; found {max_label}."
        )
    if prediction.compartments is not None:
        _check_compartments(prediction)
    expected_slice_probs = (volume.num_slices, NUM_CLASSIFICATION_OUTPUTS)
    if prediction.slice_probabilities.shape != expected_slice_probs:
        raise ValueError(
            f"Slice probabilities have shape {prediction.slice_probabilities.shape}; expected "
            f"{expected_slice_probs}."
        )
    if prediction.subject_probabilities.shape != (NUM_CLASSIFICATION_OUTPUTS,):
        raise ValueError(
            f"Subject probabilities have shape {prediction.subject_probabilities.shape}; "
            f"expected ({NUM_CLASSIFICATION_OUTPUTS},)."
        )
    for name, values in (
        ("slice", prediction.slice_probabilities),
        ("subject", prediction.subject_probabilities),
    ):
        if not (np.all(np.isfinite(values)) and np.all((values >= 0.0) & (values <= 1.0))):
            raise ValueError(
                f"{name.capitalize()} probabilities must be finite and within [0, 1]; found "
                f"min {np.nanmin(values):.4g}, max {np.nanmax(values):.4g}."
            )


def _check_compartments(prediction: Prediction) -> None:
    compartments = prediction.compartments
    assert compartments is not None
    if compartments.shape != prediction.labels.shape:
        raise ValueError(
            f"Prediction compartments have shape {compartments.shape}; the labels have "
            f"{prediction.labels.shape}."
        )
    max_compartment = int(compartments.max(initial=0))
    if max_compartment > NUM_COMPARTMENTS:
        raise ValueError(
            f"Compartments must be {NO_COMPARTMENT}..{NUM_COMPARTMENTS}; found {max_compartment}."
        )
    mismatched = int(
        np.count_nonzero((prediction.labels == HEMORRHAGE) != (compartments != NO_COMPARTMENT))
    )
    if mismatched:
        raise ValueError(
            f"{mismatched} pixels break the compartment rule: every hemorrhage pixel carries "
            "exactly one compartment and no other pixel carries one."
        )


def check_volume_ml(hemorrhage_volume_ml: float) -> None:
    """Raise ValueError unless the hemorrhage volume is a finite, non-negative number of mL."""
    if not math.isfinite(hemorrhage_volume_ml) or hemorrhage_volume_ml < 0.0:
        raise ValueError(
            f"Hemorrhage volume must be a finite number of mL >= 0; found {hemorrhage_volume_ml}."
        )
