"""Shared pre/post-processing: model input, labels at source resolution, hemorrhage volume."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ichnet_core.imaging.model_grid import ModelGrid, PlaneMapping
from ichnet_core.imaging.resample import to_model_size
from ichnet_core.imaging.volume import Volume
from ichnet_core.imaging.windowing import window_stack
from ichnet_core.inference.pipeline import (
    PROCESSING_CHUNK_SLICES,
    SourceLabels,
    channel_argmax,
    decide_classes,
    finalize,
    hemorrhage_volume_ml,
    labels_at_source,
    prepare_input,
)
from ichnet_core.labels import BRAIN, HEMORRHAGE, NON_BRAIN, NUM_COMPARTMENTS

VolumeFactory = Callable[..., Volume]


def test_prepare_input_matches_window_then_resize(make_volume: VolumeFactory) -> None:
    volume = make_volume(slices=PROCESSING_CHUNK_SLICES + 3)  # more than one chunk
    x, mapping = prepare_input(volume, ModelGrid(32))
    assert mapping.scaled_shape == (32, 32) and mapping.offset == (0, 0)
    assert x.shape == (volume.num_slices, 3, 32, 32) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(x, to_model_size(window_stack(volume.hu), 32), atol=1e-6)


def _mapping(volume: Volume, size: int) -> PlaneMapping:
    return ModelGrid(size).plan(volume.hu.shape[1:], volume.pixel_spacing)


def _probs(slices: int, size: int) -> np.ndarray:
    """Hemorrhage in the left half, brain in the right half, non-brain in the top rows."""
    probs = np.full((slices, 3, size, size), 0.1, dtype=np.float32)
    probs[:, HEMORRHAGE, :, : size // 2] = 0.8
    probs[:, BRAIN, :, size // 2 :] = 0.8
    probs[:, NON_BRAIN, : size // 4] = 0.9
    return probs / probs.sum(axis=1, keepdims=True)


def test_finalize(make_volume: VolumeFactory) -> None:
    volume = make_volume(slices=PROCESSING_CHUNK_SLICES + 2, rows=64, columns=96)
    slices = volume.num_slices
    slice_logits = np.zeros((slices, 6), dtype=np.float32)
    slice_logits[0, 0] = 50.0
    subject_logits = np.linspace(-2, 2, 6, dtype=np.float32)
    probs = _probs(slices, 32)
    prediction = finalize(
        volume, _mapping(volume, 32), probs, slice_logits, subject_logits, keep_probabilities=True
    )
    labels = prediction.labels
    assert labels.shape == (slices, 64, 96) and labels.dtype == np.uint8
    assert np.all(labels[:, :8] == NON_BRAIN)
    assert np.all(labels[:, 20:, :40] == HEMORRHAGE) and np.all(labels[:, 20:, 56:] == BRAIN)
    assert prediction.slice_probabilities.shape == (slices, 6)
    assert prediction.slice_probabilities.dtype == np.float32
    np.testing.assert_allclose(prediction.slice_probabilities[1:], 0.5)
    assert prediction.slice_probabilities[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(
        prediction.subject_probabilities, 1 / (1 + np.exp(-subject_logits)), rtol=1e-6
    )
    assert prediction.segmentation_probabilities is not None
    np.testing.assert_array_equal(prediction.segmentation_probabilities, probs)
    dropped = finalize(
        volume, _mapping(volume, 32), probs, slice_logits, subject_logits, keep_probabilities=False
    )
    assert dropped.segmentation_probabilities is None
    np.testing.assert_array_equal(dropped.labels, labels)


def test_finalize_rejects_mismatched_shapes(make_volume: VolumeFactory) -> None:
    volume = make_volume(slices=3)
    probs, logits, subject = _probs(3, 32), np.zeros((3, 6)), np.zeros(6)
    with pytest.raises(ValueError, match=r"seg_probs must be \[3, 3 or 8, h, w\]"):
        finalize(volume, _mapping(volume, 32), probs[:2], logits, subject, keep_probabilities=False)
    with pytest.raises(ValueError, match=r"slice_logits must be \[3, 6\]"):
        finalize(
            volume, _mapping(volume, 32), probs, logits[:, :5], subject, keep_probabilities=False
        )
    with pytest.raises(ValueError, match=r"subject_logits must be \[6\]"):
        finalize(
            volume, _mapping(volume, 32), probs, logits, subject[None], keep_probabilities=False
        )


def test_hemorrhage_volume_with_non_uniform_spacing(make_volume: VolumeFactory) -> None:
    extents = np.array([4.0, 5.5, 7.0])
    volume = make_volume(
        slices=3, rows=10, columns=10, pixel_spacing=(0.5, 0.8), slice_extent_mm=extents
    )
    labels = np.full((3, 10, 10), BRAIN, dtype=np.uint8)
    labels[0, :2, :5] = HEMORRHAGE  # 10 pixels
    labels[2, :, :3] = HEMORRHAGE  # 30 pixels
    expected = (10 * 0.4 * 4.0 + 30 * 0.4 * 7.0) / 1000.0
    assert hemorrhage_volume_ml(labels, volume) == pytest.approx(expected)
    with pytest.raises(ValueError, match="does not match"):
        hemorrhage_volume_ml(labels[:2], volume)


def test_compartments_are_decided_on_upsampled_probabilities_and_only_on_blood(
    make_volume: VolumeFactory,
) -> None:
    volume = make_volume(slices=2, rows=64, columns=96)
    classes = _probs(2, 32)
    compartments = np.full((2, NUM_COMPARTMENTS, 32, 32), 0.1, dtype=np.float32)
    compartments[:, 3, :, :8] = 0.9  # SDH in the outer left quarter
    compartments[:, 4, :, 8:] = 0.9  # SAH elsewhere
    compartments /= compartments.sum(axis=1, keepdims=True)
    probs = np.concatenate([classes, compartments], axis=1)
    prediction = finalize(
        volume, _mapping(volume, 32), probs, np.zeros((2, 6)), np.zeros(6), keep_probabilities=False
    )
    assert prediction.compartments is not None
    blood = prediction.labels == HEMORRHAGE
    assert np.all(prediction.compartments[~blood] == 0)
    assert np.all(prediction.compartments[:, 20:, :20] == 4)  # SDH = 1 + index 3
    assert np.all(prediction.compartments[:, 20:, 28:40] == 5)  # SAH
    without = finalize(
        volume,
        _mapping(volume, 32),
        classes,
        np.zeros((2, 6)),
        np.zeros(6),
        keep_probabilities=False,
    )
    assert without.compartments is None
    np.testing.assert_array_equal(without.labels, prediction.labels)


def test_diagnostic_grid_outside_the_window_is_non_brain(make_volume: VolumeFactory) -> None:
    volume = make_volume(slices=2, rows=64, columns=64, pixel_spacing=(1.0, 1.0))
    x, mapping = prepare_input(volume, ModelGrid(32, 1.0))  # a 32 mm window of a 64 mm image
    assert x.shape == (2, 3, 32, 32)
    probs = np.zeros((2, 3, 32, 32), dtype=np.float32)
    probs[:, BRAIN] = 1.0
    prediction = finalize(
        volume, mapping, probs, np.zeros((2, 6)), np.zeros(6), keep_probabilities=False
    )
    inside = np.zeros((64, 64), dtype=bool)
    top, left = mapping.offset
    inside[top : top + 32, left : left + 32] = True
    assert np.all(prediction.labels[:, inside] == BRAIN)
    assert np.all(prediction.labels[:, ~inside] == NON_BRAIN)


def test_labels_decided_chunk_by_chunk_equal_the_whole_series_at_once(
    make_volume: VolumeFactory,
) -> None:
    """What the engines' sink does (uneven chunks) gives the labels of :func:`labels_at_source`."""
    volume = make_volume(slices=21, rows=64, columns=96)
    rng = np.random.default_rng(3)
    probs = rng.random((21, 3 + NUM_COMPARTMENTS, 32, 32), dtype=np.float32)
    mapping = _mapping(volume, 32)
    whole_labels, whole_compartments = labels_at_source(probs, mapping)
    decided = SourceLabels(21, mapping)
    with pytest.raises(ValueError, match="labels of 0 of 21"):
        decided.result()
    for start, stop in ((0, 5), (5, 19), (19, 21)):
        decided.add(start, stop, probs[start:stop])
    labels, compartments = decided.result()
    np.testing.assert_array_equal(labels, whole_labels)
    assert compartments is not None and whole_compartments is not None
    np.testing.assert_array_equal(compartments, whole_compartments)
    with pytest.raises(ValueError, match="next expected 0"):
        SourceLabels(21, mapping).add(5, 10, probs[5:10])


def test_channel_argmax_equals_numpys_including_ties() -> None:
    """Few distinct values make many ties; the first channel holding the maximum wins, as in
    numpy."""
    rng = np.random.default_rng(7)
    planes = rng.choice(np.array([0.0, 0.25, 0.5], dtype=np.float32), size=(3, 8, 9, 11))
    found = channel_argmax(planes)
    assert found.dtype == np.uint8
    np.testing.assert_array_equal(found, planes.argmax(axis=1))


def test_a_voxel_threshold_calls_hemorrhage_from_its_probability_and_the_rest_by_argmax() -> None:
    """Softmax triples (non-brain, brain, hemorrhage) per pixel, and what each decision gives."""
    planes = np.array(
        [
            [0.5, 0.2, 0.3],  # hemorrhage at 0.3 but not the most probable
            [0.1, 0.6, 0.3],
            [0.1, 0.7, 0.2],  # below the threshold: brain
            [0.2, 0.2, 0.6],  # argmax and threshold agree
            [0.45, 0.1, 0.45],  # a tie: argmax takes non-brain, the threshold hemorrhage
        ],
        dtype=np.float32,
    ).T.reshape(1, 3, 1, 5)
    np.testing.assert_array_equal(
        decide_classes(planes, None)[0, 0], [NON_BRAIN, BRAIN, BRAIN, HEMORRHAGE, NON_BRAIN]
    )
    np.testing.assert_array_equal(
        decide_classes(planes, 0.3)[0, 0],
        [HEMORRHAGE, HEMORRHAGE, BRAIN, HEMORRHAGE, HEMORRHAGE],
    )
    np.testing.assert_array_equal(  # a threshold above every hemorrhage probability
        decide_classes(planes, 0.7)[0, 0], [NON_BRAIN, BRAIN, BRAIN, NON_BRAIN, NON_BRAIN]
    )


def test_a_lower_voxel_threshold_segments_more_blood_in_every_path(
    make_volume: VolumeFactory,
) -> None:
    """The threshold reaches the chunked sink and ``finalize`` alike, and compartments follow
    the blood it calls."""
    volume = make_volume(slices=4, rows=64, columns=96)
    rng = np.random.default_rng(5)
    probs = rng.random((4, 3 + NUM_COMPARTMENTS, 32, 32), dtype=np.float32)
    probs[:, :3] /= probs[:, :3].sum(axis=1, keepdims=True)
    mapping = _mapping(volume, 32)
    argmax_labels, _ = labels_at_source(probs, mapping)
    labels, compartments = labels_at_source(probs, mapping, hemorrhage_threshold=0.25)
    assert compartments is not None
    blood, argmax_blood = labels == HEMORRHAGE, argmax_labels == HEMORRHAGE
    assert np.all(blood[argmax_blood]) and blood.sum() > argmax_blood.sum()
    assert np.all((compartments > 0) == blood)
    decided = SourceLabels(4, mapping, hemorrhage_threshold=0.25)
    decided.add(0, 3, probs[:3])
    decided.add(3, 4, probs[3:])
    np.testing.assert_array_equal(decided.result()[0], labels)
    kept = finalize(
        volume,
        mapping,
        probs,
        np.zeros((4, 6)),
        np.zeros(6),
        keep_probabilities=True,
        hemorrhage_threshold=0.25,
    )
    np.testing.assert_array_equal(kept.labels, labels)
