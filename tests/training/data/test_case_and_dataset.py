"""Label derivations and the case -> model-sample path (windows, resize, runs, known masks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ichnet_core.imaging.model_grid import ModelGrid
from ichnet_core.labels import BRAIN, HEMORRHAGE
from training.data.case import (
    LabelledCase,
    SegKind,
    slices_from_hemorrhage_mask,
    subject_from_slices,
)
from training.data.dataset import (
    CaseDataset,
    PreparedCase,
    choose_crop,
    choose_run,
    crop_slice_labels,
    make_sample,
    prepare_all,
    prepare_case,
    read_prepared,
    run_subject_labels,
    write_prepared,
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
    sample = make_sample(prepare_case(case, ModelGrid(32)))
    assert sample.image.shape == (4, 3, 32, 32)
    assert float(sample.image.min()) >= 0.0 and float(sample.image.max()) <= 1.0
    assert not sample.slice_known.any()
    assert sample.subject_known.all()
    torch.testing.assert_close(sample.subject_targets, torch.tensor([1.0, 1, 0, 0, 0, 0]))


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
        _ListSource([case]), ModelGrid(32), slices_per_sample=4, augment=AugmentSettings(), seed=1
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
        image=np.zeros((num_slices, 3, 4, 4), dtype=np.uint8),
        seg=None,
        seg_kind=SegKind.NONE,
        slice_labels=labels,
        subject_labels=labels.max(axis=0),
        compartments=None,
        mapping=ModelGrid(4).plan((4, 4), (1.0, 1.0)),
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


def test_crop_labels_follow_what_the_crop_shows() -> None:
    seg = np.full((3, 8, 8), BRAIN, dtype=np.uint8)
    compartments = np.zeros_like(seg)
    seg[0, 1, 1] = HEMORRHAGE  # slice 0: an EDH in the crop
    compartments[0, 1, 1] = 3
    seg[1, 6, 6] = HEMORRHAGE  # slice 1: an SDH outside the crop
    compartments[1, 6, 6] = 4
    labels = np.zeros((3, 6), dtype=np.float32)
    labels[0, [0, 3]] = 1.0
    labels[1, [0, 4]] = 1.0
    labels[2, [0, 5]] = 1.0  # slice 2: a SAH too small for the model grid
    window = (slice(0, 4), slice(0, 4))
    out = crop_slice_labels(labels, seg, compartments, window)
    np.testing.assert_array_equal(out[0], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(out[1], [0, 0, 0, 0, 0, 0])
    assert np.isnan(out[2, 0]) and np.isnan(out[2, 5])
    np.testing.assert_array_equal(out[2, 1:5], [0, 0, 0, 0])
    # Without compartments, subtypes stay only where the crop holds all of the slice's blood.
    no_compartments = crop_slice_labels(labels, seg, None, window)
    np.testing.assert_array_equal(no_compartments[0], [1, 0, 0, 1, 0, 0])
    assert no_compartments[1, 0] == 0 and np.isnan(no_compartments[1, 1:]).all()


def test_crops_placed_on_bleeds_contain_them() -> None:
    seg = np.full((2, 64, 64), BRAIN, dtype=np.uint8)
    seg[1, 50, 9] = HEMORRHAGE
    rng = np.random.default_rng(0)
    for _ in range(50):
        rows, columns = choose_crop(seg, 16, rng, lesion_fraction=1.0)
        assert rows.stop - rows.start == 16 == columns.stop - columns.start
        assert rows.start <= 50 < rows.stop and columns.start <= 9 < columns.stop
    spread = {choose_crop(seg, 16, rng, lesion_fraction=0.0)[0].start for _ in range(100)}
    assert min(spread) >= 0 and max(spread) <= 48 and len(spread) > 10


def test_cropped_samples_carry_compartments_and_crop_labels() -> None:
    case = make_phantom_case(slices=6, bleed_slices=(2, 3))
    compartments = np.where(case.seg == HEMORRHAGE, 4, 0).astype(np.uint8)  # SDH
    case = dataclasses.replace(case, compartments=compartments)
    dataset = CaseDataset(_ListSource([case]), ModelGrid(32), crop_size=16, seed=3)
    prepared = dataset.prepared(0)
    assert prepared.compartments is not None
    assert set(np.unique(prepared.compartments[prepared.seg == HEMORRHAGE])) <= {4}
    assert not prepared.compartments[prepared.seg != HEMORRHAGE].any()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        sample = dataset.sample(0, crop=True)
        assert sample.image.shape[-2:] == (16, 16)
        shows = (sample.seg == HEMORRHAGE).flatten(1).any(dim=1)
        torch.testing.assert_close(sample.slice_targets[:, 0], shows.float())
        assert torch.equal(sample.compartments > 0, sample.seg == HEMORRHAGE)
        whole = dataset.sample(0, crop=False)
        assert whole.image.shape[-2:] == (32, 32)


class _Fingerprinted(_ListSource):
    """Module level: the preparing workers are spawned and receive the source by pickling."""

    def fingerprint(self, index: int) -> str | None:
        return f"v1-{index}"


def test_prepared_cases_round_trip_through_disk_and_workers(tmp_path) -> None:
    cases = [make_phantom_case(slices=4, bleed_slices=(1,)) for _ in range(3)]
    cases = [
        dataclasses.replace(c, case_id=f"p/{i}", group_id=f"p/{i}") for i, c in enumerate(cases)
    ]

    grid = ModelGrid(32, 2.0)
    dataset = CaseDataset(_Fingerprinted(cases), grid, prepared_dir=tmp_path)
    assert prepare_all(dataset, workers=2) == {"prepared": 3, "cached": 0}
    assert prepare_all(dataset, workers=1) == {"prepared": 0, "cached": 3}
    direct = prepare_case(cases[1], grid)
    stored = read_prepared(dataset.prepared_path(1), "p/1")
    np.testing.assert_array_equal(stored.image, direct.image)
    np.testing.assert_array_equal(stored.seg, direct.seg)
    assert stored.mapping == direct.mapping and stored.image.dtype == np.uint8
    write_prepared(tmp_path / "x.npz", direct)
    assert read_prepared(tmp_path / "x.npz", "x").slice_labels is not None


def test_prepared_image_is_the_window_stack_within_a_quantisation_step(phantom_case) -> None:
    from ichnet_core.imaging.windowing import window_stack

    grid = ModelGrid(32)
    prepared = prepare_case(phantom_case, grid)
    exact = prepared.mapping.to_model(window_stack(phantom_case.hu[0]))
    assert np.abs(prepared.image[0] / 255.0 - exact).max() <= 0.5 / 255 + 1e-6
