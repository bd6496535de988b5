"""Where each hemorrhage subtype sits, its shape and its density (ichnet_core.synthetic.hemorrhage).

Location checks compare a case with its negative twin: the same seed without blood has the same
head, so the twin shows what tissue the blood replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

import ichnet_core.synthetic.case as case_module
from ichnet_core.labels import HEMORRHAGE, NON_BRAIN, SUBTYPES
from ichnet_core.synthetic import SyntheticCase, SyntheticConfig, generate_case
from ichnet_core.synthetic.anatomy import sample_anatomy
from ichnet_core.synthetic.hemorrhage import BLOOD_HU, SlicePlanes, plan_hemorrhages
from ichnet_core.synthetic.lesions import BLOOD_HU_LIMITS, HemorrhagePlan

#: Noise-free images (no blur, noise, streaks or partial-volume bands at the skull) so densities
#: can be checked directly.
CLEAN = SyntheticConfig(
    rows=192,
    columns=192,
    noise_sd_hu=(0.0, 0.0),
    psf_sigma_px=(0.0, 0.0),
    cupping_hu=(0.0, 0.0),
    streak_probability=0.0,
).without_realism()
#: Small lesions cause no midline shift, so the negative twin is the same head.
SMALL_LESIONS = SyntheticConfig(**{**CLEAN.__dict__, "hemorrhage_volume_ml": (2.0, 8.0)})
LARGE_LESIONS = SyntheticConfig(
    **{**CLEAN.__dict__, "rows": 256, "columns": 256, "hemorrhage_volume_ml": (15.0, 40.0)}
)
IN_PLANE = np.ones((1, 3, 3), dtype=bool)
SEEDS = (0, 1, 2)


@cache
def make(seed: int, subtype: str | None, config: SyntheticConfig) -> SyntheticCase:
    if subtype is None:
        return generate_case(seed, config, hemorrhage=False)
    return generate_case(seed, config, subtypes=(subtype,))


def _mask(case: SyntheticCase, subtype: str) -> np.ndarray:
    return case.subtype_masks[SUBTYPES.index(subtype)]


def _share_of_slices_against_the_table(case: SyntheticCase, mask: np.ndarray) -> float:
    """Share of the lesion's slices where it reaches the skull: within one voxel of it, the
    voxel where blood and bone mix, reads as bone (render.VISIBLE_BLOOD_MAX_HU) and is not
    labelled blood."""
    slices = mask.any(axis=(1, 2))
    near_table = ndimage.binary_dilation(mask, IN_PLANE, iterations=2)
    touching = (near_table & (case.labels == NON_BRAIN)).any(axis=(1, 2))
    return float(touching[slices].mean())


def _largest_slice_shape(mask: np.ndarray, pixel_mm: float) -> tuple[float, float, float]:
    """(solidity, thickness mm, length mm) of the lesion in its largest slice."""
    m = mask[int(np.argmax(mask.sum(axis=(1, 2))))]
    pixels = np.argwhere(m).astype(float)
    corners = (
        pixels[:, None, :] + np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])[None]
    ).reshape(-1, 2)
    hull = ConvexHull(corners)
    solidity = float(m.sum()) / hull.volume
    thickness = 2.0 * float(ndimage.distance_transform_edt(np.pad(m, 1)).max()) * pixel_mm
    vertices = corners[hull.vertices]
    length = float(np.max(np.linalg.norm(vertices[:, None] - vertices[None], axis=-1))) * pixel_mm
    return solidity, thickness, length


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_blood_has_acute_density_before_noise(subtype: str) -> None:
    case = make(3, subtype, LARGE_LESIONS)
    mask = _mask(case, subtype)
    core = ndimage.binary_erosion(
        mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)
    )
    assert core.sum() > 20
    median = float(np.median(case.hu[core]))
    assert 50.0 <= median <= 90.0, f"{subtype} core median {median}"
    # The densest blood (not diluted by partial volume) stays in the acute range.
    assert 50.0 <= float(np.percentile(case.hu[core], 90)) <= BLOOD_HU_LIMITS[1] + 10.0


def test_planned_clots_have_acute_blood_density() -> None:
    rng = np.random.default_rng(0)
    anatomy = sample_anatomy(rng, (0.0, 1.0))
    planes = SlicePlanes(
        normal=np.array([0.0, 0.0, 1.0]),
        offsets=np.arange(-60.0, 70.0, 5.0),
        gravity=np.array([0.0, 1.0, 0.0]),
    )
    for seed in range(5):
        plan = plan_hemorrhages(np.random.default_rng(seed), anatomy, planes, SUBTYPES, (1.0, 60.0))
        assert {lesion.subtype for lesion in plan.lesions} == set(SUBTYPES)
        for lesion in plan.lesions:
            assert BLOOD_HU[0] <= lesion.blood.hu <= BLOOD_HU[1]


@pytest.mark.parametrize("seed", SEEDS)
def test_epidural_is_a_lens_against_the_inner_table(seed: int) -> None:
    case = make(seed, "EDH", SMALL_LESIONS)
    mask = _mask(case, "EDH")
    assert _share_of_slices_against_the_table(case, mask) >= 0.8
    solidity, thickness, length = _largest_slice_shape(mask, case.pixel_spacing[0])
    assert solidity > 0.8, "a biconvex lens is convex"
    assert thickness / length > 0.2, "a lens is thick for its length"


@pytest.fixture
def only_kind(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make generate_case keep only the first lesion of one shape kind (e.g. falx SDH)."""

    def select(kind: str) -> None:
        def plan(*args: object, **kwargs: object) -> HemorrhagePlan:
            for _ in range(100):
                full = plan_hemorrhages(*args, **kwargs)  # type: ignore[arg-type]
                kept = tuple(lesion for lesion in full.lesions if lesion.kind == kind)
                if kept:
                    return dataclasses.replace(full, lesions=kept[:1], shift_mm=0.0)
            raise AssertionError(f"no {kind} lesion in 100 plans")

        monkeypatch.setattr(case_module, "plan_hemorrhages", plan)

    return select


def _brain_centre_column(case: SyntheticCase, k: int) -> float:
    return float(np.argwhere(case.labels[k] > NON_BRAIN)[:, 1].mean())


@pytest.mark.parametrize("seed", SEEDS)
def test_convexity_subdural_is_a_crescent_along_the_inner_table(
    seed: int, only_kind: Callable[[str], None]
) -> None:
    only_kind("subdural_convexity")
    case = generate_case(seed, SMALL_LESIONS, subtypes=("SDH",))
    twin = make(seed, None, SMALL_LESIONS)
    mask = _mask(case, "SDH")
    assert _share_of_slices_against_the_table(case, mask) >= 0.8
    solidity, thickness, length = _largest_slice_shape(mask, case.pixel_spacing[0])
    assert thickness / length < 0.2, "a crescent is long and thin"
    # At the 4 mm minimum (hemorrhage.MIN_CONVEXITY_SUBDURAL_MM) a small rim is short: 30 mm of
    # a 65 mm inner table is an annular sector of solidity about 0.8 (seeds 0-5: 0.54-0.81), so
    # the bound is 0.85; the thickness / length ratio above keeps it apart from a lens.
    assert solidity < 0.85, "a crescent is concave towards the brain"
    # All of it within a few mm of the inner table.
    depth = ndimage.distance_transform_edt(
        twin.labels > NON_BRAIN, sampling=(1e3, *case.pixel_spacing)
    )
    assert float(np.percentile(depth[mask], 95)) <= 15.0


@pytest.mark.parametrize("seed", SEEDS)
def test_falx_subdural_lies_along_the_midline(seed: int, only_kind: Callable[[str], None]) -> None:
    only_kind("subdural_falx")
    case = generate_case(seed, SMALL_LESIONS, subtypes=("SDH",))
    mask = _mask(case, "SDH")
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        columns = np.argwhere(mask[k])[:, 1]
        offset_mm = np.abs(columns - _brain_centre_column(case, k)) * case.pixel_spacing[1]
        assert offset_mm.max() <= 25.0
    _, thickness, length = _largest_slice_shape(mask, case.pixel_spacing[0])
    assert thickness / length < 0.3


@pytest.mark.parametrize("seed", SEEDS)
def test_tentorial_subdural_lies_above_the_posterior_fossa(
    seed: int, only_kind: Callable[[str], None]
) -> None:
    only_kind("subdural_tentorium")
    case = generate_case(seed, SMALL_LESIONS, subtypes=("SDH",))
    mask = _mask(case, "SDH")
    brain_slices = np.flatnonzero((case.labels > NON_BRAIN).any(axis=(1, 2)))
    lesion_slices = np.flatnonzero(mask.any(axis=(1, 2)))
    # In the lower half of the brain, behind its centre.
    assert lesion_slices.mean() < brain_slices.mean()
    for k in lesion_slices:
        brain_row = np.argwhere(case.labels[k] > NON_BRAIN)[:, 0].mean()
        assert np.argwhere(mask[k])[:, 0].mean() > brain_row


@pytest.mark.parametrize("seed", SEEDS)
def test_intraparenchymal_sits_in_brain_tissue(seed: int) -> None:
    case = make(seed, "CPH", SMALL_LESIONS)
    twin = make(seed, None, SMALL_LESIONS)
    mask = _mask(case, "CPH")
    assert not (ndimage.binary_dilation(mask, IN_PLANE) & (case.labels == NON_BRAIN)).any()
    replaced = twin.hu[mask]
    assert np.mean((replaced > 15.0) & (replaced < 50.0)) > 0.7


@pytest.mark.parametrize("seed", SEEDS)
def test_intraventricular_layers_in_the_dependent_ventricle(seed: int) -> None:
    case = make(seed, "IVH", SMALL_LESIONS)
    twin = make(seed, None, SMALL_LESIONS)
    mask = _mask(case, "IVH")
    assert np.mean(twin.hu[mask] < 20.0) > 0.9, "IVH replaces ventricular CSF"
    # Within the ventricles it occupies, blood lies posterior (dependent for a supine patient).
    csf = (twin.hu < 20.0) & (twin.labels > NON_BRAIN)
    blood_rows, csf_rows = [], []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        components, _ = ndimage.label(csf[k] | mask[k])
        touched = np.setdiff1d(np.unique(components[mask[k]]), [0])
        ventricle = np.isin(components, touched)
        blood_rows.append(np.argwhere(mask[k])[:, 0].mean())
        csf_rows.append(np.argwhere(ventricle)[:, 0].mean())
    assert np.mean(blood_rows) > np.mean(csf_rows)


@pytest.mark.parametrize("seed", SEEDS)
def test_subarachnoid_is_thin_and_fills_csf_spaces(seed: int) -> None:
    case = make(seed, "SAH", SMALL_LESIONS)
    twin = make(seed, None, SMALL_LESIONS)
    mask = _mask(case, "SAH")
    depth = ndimage.distance_transform_edt(
        np.pad(mask, ((0, 0), (1, 1), (1, 1))), sampling=(1e3, *case.pixel_spacing)
    )
    assert float(np.median(depth[:, 1:-1, 1:-1][mask])) <= 2.5, "SAH lines sulci and cisterns"
    assert np.mean(twin.hu[mask] < 20.0) > 0.4


def test_negative_twin_has_the_same_outline() -> None:
    case = make(0, "EDH", SMALL_LESIONS)
    twin = make(0, None, SMALL_LESIONS)
    assert np.array_equal(case.labels == NON_BRAIN, twin.labels == NON_BRAIN)
    assert (case.labels == HEMORRHAGE).any() and not (twin.labels == HEMORRHAGE).any()
