"""generate_case and SyntheticCase (ichnet_core.synthetic.case)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from ichnet_core.labels import BRAIN, CLASS_NAMES, HEMORRHAGE, NON_BRAIN, SUBTYPES
from ichnet_core.synthetic import (
    SyntheticCase,
    SyntheticConfig,
    generate_case,
    hemorrhage_volume_ml,
)
from ichnet_core.synthetic.geometry import slice_extents_mm

#: Small matrix: the tests exercise logic, not image quality.
SMALL = SyntheticConfig(rows=96, columns=96)


@cache
def make(
    seed: int,
    subtypes: tuple[str, ...] | None = None,
    hemorrhage: bool | None = None,
    config: SyntheticConfig = SMALL,
) -> SyntheticCase:
    return generate_case(seed, config, subtypes=subtypes, hemorrhage=hemorrhage)


def _assert_consistent(case: SyntheticCase) -> None:
    s, rows, cols = case.hu.shape
    assert case.hu.dtype == np.float32 and case.labels.dtype == np.uint8
    assert (
        case.subtype_masks.shape == (len(SUBTYPES), s, rows, cols)
        and case.subtype_masks.dtype == bool
    )
    assert set(np.unique(case.labels)) <= {NON_BRAIN, BRAIN, HEMORRHAGE}
    # Subtype masks are disjoint and their union is exactly label 2.
    assert case.subtype_masks.sum(axis=0).max() <= 1
    assert np.array_equal(case.subtype_masks.any(axis=0), case.labels == HEMORRHAGE)
    # Slice labels: a subtype is positive where it has a voxel; 'any' is the union.
    per_slice = case.subtype_masks.any(axis=(2, 3)).T
    assert np.array_equal(case.slice_labels[:, 1:], per_slice)
    assert np.array_equal(case.slice_labels[:, 0], (case.labels == HEMORRHAGE).any(axis=(1, 2)))
    assert np.array_equal(case.subject_labels, case.slice_labels.max(axis=0))
    assert case.slice_labels.shape == (s, len(CLASS_NAMES))
    # Volume: hemorrhage voxels x pixel area x slice extent.
    expected = (
        (case.labels == HEMORRHAGE).sum(axis=(1, 2))
        * case.pixel_spacing[0]
        * case.pixel_spacing[1]
        * slice_extents_mm(case.positions, case.normal, case.slice_thickness_mm)
    ).sum() / 1000.0
    assert case.hemorrhage_volume_ml == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_have_consistent_labels(seed: int) -> None:
    case = make(seed)
    _assert_consistent(case)
    # Skull base first, vertex last: the first slice shows less brain than the middle one.
    brain = (case.labels >= BRAIN).sum(axis=(1, 2))
    assert brain[0] < brain[case.num_slices // 2]
    assert brain.max() > 0.12 * case.hu.shape[1] * case.hu.shape[2]


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_exactly_the_requested_subtype_is_present(subtype: str) -> None:
    case = make(21, (subtype,))
    _assert_consistent(case)
    expected = np.array([1] + [int(s == subtype) for s in SUBTYPES], dtype=np.uint8)
    assert np.array_equal(case.subject_labels, expected)
    assert case.subtypes == (subtype,)
    assert case.hemorrhage_volume_ml > 0


def test_mixed_case_has_every_requested_subtype() -> None:
    case = make(22, ("CPH", "IVH", "SDH"))
    _assert_consistent(case)
    assert case.subtypes == ("CPH", "IVH", "SDH")


@pytest.mark.parametrize("seed", [3, 7])
def test_a_present_subtype_covers_a_visible_area_of_a_slice(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subtype counts as present only once it covers MIN_VISIBLE_AREA_MM2 of a slice; a
    smaller lesion is re-planned larger. The 10 mm^2 of the generator catch only specks where
    bone hides the rest of a rim, so the threshold is raised here to where these two epidural
    haematomas (51 and 48 mm^2 in their largest slice) fall short of it."""
    monkeypatch.setattr("ichnet_core.synthetic.case.MIN_VISIBLE_AREA_MM2", 60.0)
    config = SyntheticConfig(rows=128, columns=128, hemorrhage_volume_ml=(0.05, 0.06))
    case = generate_case(seed, config, subtypes=("EDH",))
    areas = case.subtype_masks.sum(axis=(2, 3)).max(axis=1) * float(np.prod(case.pixel_spacing))
    assert areas[SUBTYPES.index("EDH")] >= 60.0, areas
    assert case.subject_labels[1:].tolist() == [float(a > 0) for a in areas]


@pytest.mark.parametrize("seed", range(4))
def test_negative_cases_have_no_hemorrhage(seed: int) -> None:
    case = make(seed, None, False)
    _assert_consistent(case)
    assert not (case.labels == HEMORRHAGE).any()
    assert not case.subtype_masks.any()
    assert not case.slice_labels.any() and not case.subject_labels.any()
    assert case.hemorrhage_volume_ml == 0.0


def test_about_half_of_random_cases_are_negative_and_positives_mix_subtypes() -> None:
    config = SyntheticConfig(rows=64, columns=64)
    cases = [make(seed, None, None, config) for seed in range(100, 124)]
    negatives = sum(not c.subject_labels[0] for c in cases)
    assert 6 <= negatives <= 18
    assert any(len(c.subtypes) >= 2 for c in cases)


def test_generation_is_deterministic_and_seeds_differ() -> None:
    a = generate_case(5, SMALL)
    b = generate_case(5, SMALL)
    for field in ("hu", "labels", "subtype_masks", "slice_labels", "positions"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.hemorrhage_volume_ml == b.hemorrhage_volume_ml
    c = make(6)
    assert a.hu.shape != c.hu.shape or not np.array_equal(a.hu, c.hu)


def test_same_seed_gives_the_same_head_with_and_without_blood() -> None:
    positive = make(31, ("CPH",))
    negative = make(31, None, False)
    assert np.array_equal(positive.positions, negative.positions)
    outside = positive.labels != HEMORRHAGE
    # Same brain outline; the images differ only around the lesion (and by noise).
    assert np.array_equal(positive.labels >= BRAIN, negative.labels >= BRAIN)
    assert np.mean(np.abs(positive.hu[outside] - negative.hu[outside]) < 40) > 0.95


def test_hemorrhage_volumes_span_small_to_large() -> None:
    config = SyntheticConfig(rows=64, columns=64)
    volumes = [make(seed, None, True, config).hemorrhage_volume_ml for seed in range(200, 216)]
    assert min(volumes) < 3.0
    assert max(volumes) > 30.0


def test_volume_formula() -> None:
    labels = np.zeros((3, 4, 4), dtype=np.uint8)
    labels[0, :2, :2] = HEMORRHAGE  # 4 voxels
    labels[2, 0, 0] = HEMORRHAGE
    volume = hemorrhage_volume_ml(labels, (0.5, 0.5), np.array([5.0, 5.0, 4.0]))
    assert volume == pytest.approx((4 * 0.25 * 5.0 + 1 * 0.25 * 4.0) / 1000.0)


def test_512_matrix() -> None:
    config = SyntheticConfig(rows=512, columns=512, slice_spacing_mm=(5.0, 5.0))
    case = generate_case(3, config, subtypes=("SDH",))
    assert case.hu.shape[1:] == (512, 512)
    assert 0.4 <= case.pixel_spacing[0] <= 0.6
    assert case.subtypes == ("SDH",)
    _assert_consistent(case)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"subtypes": ("XYZ",)}, ValueError, "unknown hemorrhage subtype"),
        ({"subtypes": "EDH"}, TypeError, "sequence of names"),
        ({"subtypes": ("EDH",), "hemorrhage": False}, ValueError, "contradicts"),
        ({"subtypes": (), "hemorrhage": True}, ValueError, "at least one subtype"),
    ],
)
def test_bad_arguments_are_rejected(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        generate_case(1, SMALL, **kwargs)  # type: ignore[arg-type]


def test_negative_seed_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        generate_case(-1, SMALL)


def test_hu_ranges_look_like_ct() -> None:
    case = make(40, None, False, SyntheticConfig(rows=128, columns=128))
    mid = case.num_slices // 2
    brain = case.hu[mid][case.labels[mid] == BRAIN]
    assert 15.0 < float(np.median(brain)) < 45.0
    assert case.hu.min() >= -1024.0 and case.hu.max() <= 3071.0
    assert float(np.percentile(case.hu, 99.5)) > 700.0  # bone
    assert np.array_equal(case.hu, np.rint(case.hu))  # integers, as stored
