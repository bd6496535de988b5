"""Bright non-blood structures at the skull (ichnet_core.synthetic.realism, issue 8 item 5).

The HU bounds are the real GE study's, measured by bench/generator_realism.py (intracranial soft
tissue by in-plane distance from bone): mid-head 148 HU median 0-2 mm and 50 HU at 2-4 mm, vertex
138 HU at 2-4 mm, against 34-39 and 22-35 HU in the generator without the effects. Here the same
measure (distance from HU >= 500) is taken over the pixels the ground truth calls brain, at a
256 matrix (about 1 mm pixels, the model's input).
"""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from ichnet_core.labels import BRAIN, HEMORRHAGE
from ichnet_core.synthetic import SyntheticCase, SyntheticConfig, generate_case
from ichnet_core.synthetic.points import FlatPoints
from ichnet_core.synthetic.realism import PATCH_WAVELENGTH_MM, PATCH_WAVES, Realism
from ichnet_core.synthetic.render import VISIBLE_BLOOD_MAX_HU
from ichnet_core.synthetic.shapes import random_waves

OFF = SyntheticConfig(rows=256, columns=256).without_realism()
#: Only the inner-table band, at mid-range strength (300 HU, 1 mm).
BAND = dataclasses.replace(
    OFF,
    inner_table_band_probability=1.0,
    inner_table_band_hu=(300.0, 300.0),
    inner_table_band_mm=(1.0, 1.0),
)
#: Only the tangential partial volume, at mid-range strength (150 HU, 3 mm), uniform.
TANGENTIAL = dataclasses.replace(
    OFF,
    tangential_probability=1.0,
    tangential_hu=(150.0, 150.0),
    tangential_reach_mm=(3.0, 3.0),
    tangential_patchiness=(0.0, 0.0),
)
#: Every effect on, at its default ranges.
ALL_ON = dataclasses.replace(
    SyntheticConfig(rows=96, columns=96),
    inner_table_band_probability=1.0,
    tangential_probability=1.0,
    strong_streak_probability=1.0,
    falx_plaque_probability=1.0,
    parasellar_probability=1.0,
)
ALL_OFF = dataclasses.replace(OFF, rows=96, columns=96)
SEED = 11
BONE_HU = 500.0


@cache
def negative(config: SyntheticConfig, seed: int = SEED) -> SyntheticCase:
    return generate_case(seed, config, hemorrhage=False)


def band_medians(case: SyntheticCase, region: str) -> tuple[float, float]:
    """Median HU of brain 0-2 mm and 2-4 mm (in-plane) from bone (HU >= 500), in the mid-head
    slices (brain area >= 60 % of the largest) or the vertex slices (above the largest, < 60 %)."""
    brain = case.labels == BRAIN
    areas = brain.sum(axis=(1, 2))
    largest = int(np.argmax(areas))
    share = areas / areas[largest]
    if region == "middle":
        slices = np.flatnonzero(share >= 0.6)
    else:
        slices = np.array([k for k in range(largest + 1, len(areas)) if 0.1 <= share[k] < 0.6])
    near, mid = [], []
    for k in slices:
        bone = case.hu[k] >= BONE_HU
        d = ndimage.distance_transform_edt(~bone, sampling=case.pixel_spacing)
        soft = brain[k] & ~bone
        near.append(case.hu[k][soft & (d <= 2.0)])
        mid.append(case.hu[k][soft & (d > 2.0) & (d <= 4.0)])
    return float(np.median(np.concatenate(near))), float(np.median(np.concatenate(mid)))


def test_same_seed_gives_a_bit_identical_case_with_every_effect_on() -> None:
    a = generate_case(5, ALL_ON, hemorrhage=False)
    b = generate_case(5, ALL_ON, hemorrhage=False)
    for name in ("hu", "labels", "subtype_masks"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("subtypes", [(), ("SDH",), ("EDH", "SAH")], ids=str)
def test_effects_never_add_hemorrhage_and_unlabel_only_blood_they_make_bone_bright(
    subtypes: tuple[str, ...],
) -> None:
    """The band, partial volume, streaks and plaques are never hemorrhage. Blood they brighten
    past what reads as blood (VISIBLE_BLOOD_MAX_HU) is labelled as the brain there would be;
    every other label is that of the same seed without them."""
    kwargs = {"subtypes": subtypes} if subtypes else {"hemorrhage": False}
    on = generate_case(3, ALL_ON, **kwargs)
    off = generate_case(3, ALL_OFF, **kwargs)
    assert not np.array_equal(on.hu, off.hu)
    changed = on.labels != off.labels
    assert np.all(off.labels[changed] == HEMORRHAGE)
    assert np.all(on.labels[changed] == BRAIN)
    assert np.array_equal(on.subtype_masks, off.subtype_masks & (on.labels == HEMORRHAGE))
    assert on.hemorrhage_volume_ml <= off.hemorrhage_volume_ml
    assert (on.labels == HEMORRHAGE).any() == bool(subtypes)
    if not subtypes:
        assert not changed.any()


def test_labelled_blood_reads_as_blood() -> None:
    """What a reader would outline: with the scanner's blur, noise and streaks off, no voxel
    labelled hemorrhage is brighter than VISIBLE_BLOOD_MAX_HU (the faint ring and the integer
    rounding aside), although the band and the partial volume reach 600 HU at the table."""
    config = dataclasses.replace(
        ALL_ON,
        rows=256,
        columns=256,
        noise_sd_hu=(0.0, 0.0),
        psf_sigma_px=(0.0, 0.0),
        streak_probability=0.0,
        strong_streak_probability=0.0,
        inner_table_band_hu=(500.0, 600.0),
        hemorrhage_volume_ml=(10.0, 30.0),
    )
    case = generate_case(4, config, subtypes=("EDH", "SDH"))
    blood = case.hu[case.labels == HEMORRHAGE]
    assert blood.size > 1000
    assert float(blood.max()) <= VISIBLE_BLOOD_MAX_HU + 13.0
    assert float((case.hu[case.labels == BRAIN] > VISIBLE_BLOOD_MAX_HU + 13.0).mean()) > 0.0


def test_inner_table_band_has_the_real_studys_brightness() -> None:
    near_off, mid_off = band_medians(negative(OFF), "middle")
    near_on, mid_on = band_medians(negative(BAND), "middle")
    print(f"mid-head 0-2 mm {near_off} -> {near_on}, 2-4 mm {mid_off} -> {mid_on}")
    # Without the band (this seed: 82 and 27 HU) the 2-4 mm band is plain brain; 0-2 mm holds
    # the skull's own blur, which 1 mm pixels spread further than the real study's 0.49 mm.
    assert near_off < 100.0 and mid_off < 40.0
    # Real mid-head: 148 HU median 0-2 mm from bone, 50 HU at 2-4 mm (at 0.49 mm pixels).
    assert 110.0 <= near_on <= 250.0 and near_on - near_off >= 30.0
    assert 40.0 <= mid_on <= 75.0


def test_tangential_partial_volume_brightens_the_vertex_rim_not_the_mid_head() -> None:
    _, vertex_off = band_medians(negative(OFF), "vertex")
    _, vertex_on = band_medians(negative(TANGENTIAL), "vertex")
    _, middle_on = band_medians(negative(TANGENTIAL), "middle")
    _, middle_off = band_medians(negative(OFF), "middle")
    print(f"vertex 2-4 mm {vertex_off} -> {vertex_on}, mid-head {middle_off} -> {middle_on}")
    assert vertex_off < 50.0
    # Real vertex: 138 HU median 2-4 mm from bone; where the table is cut more perpendicularly
    # (mid-head) the tangential term adds much less.
    assert 80.0 <= vertex_on <= 220.0
    assert middle_on - middle_off < (vertex_on - vertex_off) / 3.0


def test_deep_brain_is_unchanged() -> None:
    """The effects live at the bone: brain more than 20 mm inside the table keeps its HU."""
    on, off = negative(dataclasses.replace(BAND, tangential_probability=1.0)), negative(OFF)
    brain = on.labels == BRAIN
    deep = np.stack(
        [ndimage.distance_transform_edt(b, sampling=on.pixel_spacing) > 20.0 for b in brain]
    )
    assert abs(float(np.median(on.hu[deep]) - np.median(off.hu[deep]))) <= 2.0


def test_falx_plaques_are_calcium_dense_brain() -> None:
    with_plaques = dataclasses.replace(OFF, falx_plaque_probability=1.0)
    on, off = negative(with_plaques), negative(OFF)
    changed = on.hu != off.hu
    assert changed.any()
    # Partial volume at a 1 mm pixel makes the rim dimmer; the core reaches calcium density.
    assert 100.0 <= float(on.hu[changed].max()) <= 450.0
    assert set(np.unique(on.labels[changed])) == {BRAIN}


def test_parasellar_calcifications_sit_low_in_the_midline() -> None:
    with_spots = dataclasses.replace(OFF, parasellar_probability=1.0)
    on, off = negative(with_spots), negative(OFF)
    changed = on.hu != off.hu
    assert changed.any()
    slices = np.flatnonzero(changed.any(axis=(1, 2)))
    brain_slices = np.flatnonzero((on.labels == BRAIN).any(axis=(1, 2)))
    # Around the sella: the lower third of the brain's slices.
    assert slices.max() <= brain_slices[0] + len(brain_slices) // 3
    assert 120.0 <= float(on.hu[changed].max()) <= 550.0
    assert set(np.unique(on.labels[changed])) == {BRAIN}


def test_blood_away_from_the_skull_keeps_its_density_with_every_effect_on() -> None:
    """The band and the partial volume brighten blood at the table as they do brain (physics),
    but blood more than 4 mm from bone stays acute blood (50-90 HU, the noise aside)."""
    config = dataclasses.replace(ALL_ON, rows=256, columns=256, hemorrhage_volume_ml=(25.0, 40.0))
    case = generate_case(3, config, subtypes=("EDH",))
    blood = case.labels == HEMORRHAGE
    far = []
    for k in np.flatnonzero(blood.any(axis=(1, 2))):
        bone = case.hu[k] >= BONE_HU
        d = ndimage.distance_transform_edt(~bone, sampling=case.pixel_spacing)
        far.append(case.hu[k][blood[k] & (d > 4.0)])
    values = np.concatenate(far)
    print(f"EDH > 4 mm from bone: {values.size} px, median {np.median(values)}")
    assert values.size > 100
    assert 50.0 <= float(np.median(values)) <= 95.0


def test_strong_streaks_stay_in_the_skull_base() -> None:
    streaky = dataclasses.replace(
        ALL_OFF, strong_streak_probability=1.0, strong_streak_gain=(8.0, 8.0)
    )
    off = negative(ALL_OFF, 2)
    on = negative(streaky, 2)
    changed = np.flatnonzero((on.hu != off.hu).any(axis=(1, 2)))
    if changed.size == 0:
        pytest.skip("this seed has no petrous streaks (streak_probability)")
    assert changed.max() < on.num_slices // 2
    assert float(np.abs(on.hu - off.hu).max()) > 20.0


def test_boundary_hu_follows_depth_and_obliquity() -> None:
    depth = np.array([0.0, 1.0, 3.0, 6.0, 30.0], dtype=np.float32)
    band = Realism(band_hu=300.0, band_mm=1.0).boundary_hu(depth, np.zeros_like(depth))
    assert band[0] == pytest.approx(300.0) and band[-1] < 1e-6
    assert np.all(np.diff(band) < 0)
    tangential = Realism(tangential_hu=150.0, tangential_mm=3.0)
    flat = tangential.boundary_hu(depth, np.ones_like(depth))
    perpendicular = tangential.boundary_hu(depth, np.zeros_like(depth))
    assert flat[2] > 40.0 and perpendicular[2] < 1.0
    assert np.all(Realism().boundary_hu(depth, depth) == 0.0)


def test_patchiness_makes_islands_around_the_uniform_value() -> None:
    rng = np.random.default_rng(0)
    coords = rng.uniform(-60.0, 60.0, size=(4000, 3)).astype(np.float32)
    depth = np.full(4000, 2.0, dtype=np.float32)
    nz = np.ones(4000, dtype=np.float32)
    waves = random_waves(rng, PATCH_WAVES, PATCH_WAVELENGTH_MM)
    uniform = Realism(tangential_hu=150.0, tangential_mm=3.0)
    patchy = dataclasses.replace(uniform, patchiness=1.0, patch_waves=waves)
    flat = uniform.boundary_hu(depth, nz, FlatPoints(coords))
    varied = patchy.boundary_hu(depth, nz, FlatPoints(coords))
    assert np.ptp(flat) < 1e-3
    # Between none and twice the uniform value, about the uniform value on average.
    assert varied.min() >= 0.0 and varied.max() <= 2.0 * flat[0] + 1e-3
    assert varied.std() > 0.3 * flat[0]
    assert abs(float(varied.mean()) - float(flat[0])) < 0.15 * flat[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("inner_table_band_probability", 1.5),
        ("inner_table_band_hu", (400.0, 100.0)),
        ("tangential_reach_mm", (0.0, 3.0)),
        ("tangential_patchiness", (0.0, 1.5)),
        ("strong_streak_gain", (0.5, 2.0)),
        ("falx_plaque_hu", (-10.0, 100.0)),
    ],
)
def test_bad_ranges_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})  # type: ignore[arg-type]
