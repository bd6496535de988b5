"""Label derivations and the case -> model-sample path (windows, resize, runs, known masks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ichnet_core.labels import HEMORRHAGE
from training.data.case import (
    LabelledCase,
    SegKind,
    slices_from_hemorrhage_mask,
    subject_from_slices,
)
from training.data.dataset import (
    CaseDataset,
    PreparedCase,
    choose_run,
    make_sample,
    prepare_case,
    resize_labels,
    run_subject_labels,
)
from training.data.source import CaseEntry, CaseSource
from training.transforms import AugmentSettings

from ..conftest import make_phantom_case

NAN = np.nan


def test_subject_from_slices_is_positive_on_any_known_positive_slice() -> None:
    slices = np.array([[0, 0, NAN, 0, 0, 0], [1, NAN, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32)
    subject = subject_from_slices(slices)
    assert subject[0] == 1  # one positive slice decides
    assert np.isnan(subject[1]) and np.isnan(subject[2])  # an unknown slice keeps it open
    np.testing.assert_array_equal(subject[3:], 0)  # all slices known negative


def test_hemorrhage_mask_gives_any_and_subtypes_only_where_decidable() -> None:
    mask = np.zeros((3, 4, 4), dtype=bool)
    mask[1, 1, 1] = True
    labels = slices_from_hemorrhage_mask(mask)
    np.testing.assert_array_equal(labels[:, 0], [0, 1, 0])
    assert np.all(np.isnan(labels[1, 1:]))
    np.testing.assert_array_equal(labels[[0, 2], 1:], 0)


def test_case_rejects_inconsistent_shapes() -> None:
    case = make_phantom_case()
    with pytest.raises(ValueError, match="seg is absent but seg_kind is full"):
        dataclasses.replace(case, seg=None)
    with pytest.raises(ValueError, match="slice_labels shape"):
        dataclasses.replace(case, slice_labels=np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"must be 0, 1 or NaN, found \[0.5\]"):
        dataclasses.replace(case, subject_labels=np.full(6, 0.5, np.float32))


def test_run_subject_labels() -> None:
    positive = np.array([1, 1, 0, 0, 0, 0], np.float32)
    negative_run = np.zeros((2, 6), np.float32)
    # A negative run of a positive subject is negative (its slices say so).
    np.testing.assert_array_equal(run_subject_labels(positive, negative_run, False), 0)
    # Without slice labels, a partial run of a positive subject is unknown where positive...
    partial = run_subject_labels(positive, None, whole_series=False)
    assert np.isnan(partial[0]) and np.isnan(partial[1])
    np.testing.assert_array_equal(partial[2:], 0)  # ...and negative where the subject is
    # ...while the whole series keeps the subject label.
    np.testing.assert_array_equal(run_subject_labels(positive, None, whole_series=True), positive)


def test_prepare_and_sample_mark_unknowns(phantom_case: LabelledCase) -> None:
    case = dataclasses.replace(phantom_case, seg=None, seg_kind=SegKind.NONE, slice_labels=None)
    sample = make_sample(prepare_case(case, 32))
    assert sample.image.shape == (4, 3, 32, 32)
    assert float(sample.image.min()) >= 0.0 and float(sample.image.max()) <= 1.0
    assert not sample.slice_known.any()
    assert sample.subject_known.all()
    torch.testing.assert_close(sample.subject_targets, torch.tensor([1.0, 1, 0, 0, 0, 0]))


def test_resize_labels_keeps_the_majority_class() -> None:
    seg = np.zeros((1, 8, 8), dtype=np.uint8)
    seg[0, :4, :] = 1
    seg[0, 0, 0] = HEMORRHAGE  # one pixel of 16 in its output cell: outvoted
    resized = resize_labels(seg, 2)
    np.testing.assert_array_equal(resized[0], [[1, 1], [0, 0]])


class _ListSource(CaseSource):
    name = "list"

    def __init__(self, cases: list[LabelledCase]) -> None:
        self.cases = cases

    @property
    def entries(self) -> list[CaseEntry]:
        return [CaseEntry(c.case_id, c.group_id) for c in self.cases]

    def load(self, index: int) -> LabelledCase:
        return self.cases[index]


def test_dataset_runs_are_deterministic_and_differ_by_epoch() -> None:
    case = make_phantom_case(slices=12, bleed_slices=(5,))
    dataset = CaseDataset(
        _ListSource([case]), 32, slices_per_sample=4, augment=AugmentSettings(), seed=1
    )
    first = dataset[0]
    again = dataset[0]
    torch.testing.assert_close(first.image, again.image)
    assert first.num_slices == 4
    images = []
    for epoch in range(5):
        dataset.set_epoch(epoch)
        images.append(dataset[0].image)
    assert any(not torch.equal(images[0], other) for other in images[1:])
    # Run labels follow the run: the subject target says whether the run holds the bleed.
    for epoch in range(5):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        assert sample.subject_known[0]
        assert bool(sample.subject_targets[0]) == bool(sample.slice_targets[:, 0].any())


def _prepared_with_bleeding(num_slices: int, bleeding: list[int]) -> PreparedCase:
    labels = np.zeros((num_slices, 6), dtype=np.float32)
    labels[bleeding, 0] = 1.0
    return PreparedCase(
        case_id="runs",
        image=np.zeros((num_slices, 3, 4, 4), dtype=np.float16),
        seg=None,
        seg_kind=SegKind.NONE,
        slice_labels=labels,
        subject_labels=labels.max(axis=0),
    )


def test_choose_run_places_runs_on_bleeding_when_asked() -> None:
    prepared = _prepared_with_bleeding(40, [30])
    rng = np.random.default_rng(0)
    starts = [choose_run(prepared, 8, rng, lesion_run_fraction=1.0) for _ in range(200)]
    assert all(start <= 30 < start + 8 for start in starts)
    assert len(set(starts)) == 8  # every placement that covers slice 30 occurs
    uniform = [choose_run(prepared, 8, rng, lesion_run_fraction=0.0) for _ in range(400)]
    assert min(uniform) == 0 and max(uniform) == 32
    assert sum(start <= 30 < start + 8 for start in uniform) < 200
