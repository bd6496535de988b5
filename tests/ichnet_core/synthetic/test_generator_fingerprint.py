"""The generator's output for fixed seeds, pinned bit for bit.

Refactoring the generator (e.g. the typed lesion parameters of issue 9) must not change a single
voxel: training caches, splits and every published figure rest on "same seed, same case". The
digests below were computed with the generator BEFORE the lesion parameters became typed
(main at 293d0c5), by this module's own ``_digest``. The cases cover every lesion kind: seeds
0-5 with all five subtypes (epidural, convexity and falx subdural, subarachnoid, one or two
intraparenchymal clots with and without oedema, intraventricular), seed 19 a tentorial subdural,
seed 7 a random case and seed 8 a negative one.

The realism effects of issue 8 item 5 (``ichnet_core.synthetic.realism``) draw from their own
stream and change densities only: with their probabilities 0 (``CONFIG``) the images are those
of 293d0c5; with the defaults (``DEFAULT``) the image differs, and ``EXPECTED_DEFAULT`` pins
those cases too.

Deliberate changes since, each to the labels only: on 2026-12-05 blood became labelled only where
its noise-free density reads as blood (``render.VISIBLE_BLOOD_MAX_HU``, first 200 HU, later that
day 140 HU, with a subtype present only where it covers ``case.MIN_VISIBLE_AREA_MM2`` of a
slice). Every image stayed bit for bit what it was (checked on all the cases below, each time);
the labels of the positive cases lost their bone-bright rims and the digests and volumes were
recomputed (the negative ones did not change).

The digests are of this project's numpy build on x86-64; a platform whose vectorised
transcendental functions round differently could differ in the last bit of a float and flip a
voxel, which this test would report as a change (then recompute them on main, not here).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ichnet_core.synthetic import SyntheticCase, SyntheticConfig, generate_case

#: The generator before the realism effects (ichnet_core.synthetic.realism): with their
#: probabilities 0 every pinned case below must stay bit for bit what it was.
CONFIG = SyntheticConfig(rows=96, columns=96).without_realism()
ALL = ("CPH", "IVH", "EDH", "SDH", "SAH")

#: (seed, subtypes or None for a random case or () for a negative one) -> (sha256, mL).
EXPECTED: dict[tuple[int, tuple[str, ...] | None], tuple[str, float]] = {
    (0, ALL): (
        "8101b7c910e1443380e0e88b2a5242fac92f0d6d052df0236146525042d16d7f",
        15.191552512759872,
    ),
    (1, ALL): (
        "758c513abfba3e097bc9501c916f6d74b021cc011d382a9d658109e1711161a9",
        6.357756174812216,
    ),
    (2, ALL): (
        "43c47b6ed1b3cb5d911ec940207e5486375739f0866a941a7197688c6b9d2e55",
        30.23123387877454,
    ),
    (3, ALL): (
        "c3f940b05688aa2510cebad9332420975785c1c63d09b59df7167460ebb9072f",
        35.85152036045967,
    ),
    (4, ALL): (
        "c7430a44f6e6429cf85df69acd5d5a0e1ede11f9944ace1766aba9b24c378d4f",
        23.694533039537248,
    ),
    (5, ALL): (
        "191923252819ab7ab57e7f0921f775cf16ca16bb9e60726d1f291bfde55ed291",
        4.272063788478562,
    ),
    (19, ("SDH",)): (
        "49fe0e774791c4d21e4677a3324117163343fc9e93a43a2b1c20bd5ad6b9f8c0",
        3.030069385040743,
    ),
    (7, None): (
        "c4c198c50d55fb42ed7c5aa560b77cc0ec5e65d2ab3aacc454854e03099003b8",
        7.3593730523667595,
    ),
    (8, ()): ("807a390deaf2b3307360fc9b07d4d1d16116a630d809474133bf48edfa85cf7e", 0.0),
}


DEFAULT = SyntheticConfig(rows=96, columns=96)
EXPECTED_DEFAULT: dict[tuple[int, tuple[str, ...] | None], tuple[str, float]] = {
    (0, ALL): (
        "265d628a5ddbd254575a352eb75c4aa269f48fe30193a6443f0741675c2d64d3",
        14.014207193020983,
    ),
    (7, None): (
        "f4ac1defde1d56bdddb4f8b880b120178df451fba0a6717423637f14944f16b4",
        6.769679698811731,
    ),
    (8, ()): ("fbde352ee46841af81eb7aa95365f1bd6affef23706175f954f7734d46b1b8a7", 0.0),
}


def _generate(
    seed: int, subtypes: tuple[str, ...] | None, config: SyntheticConfig
) -> SyntheticCase:
    if subtypes is None:
        return generate_case(seed, config)
    if not subtypes:
        return generate_case(seed, config, hemorrhage=False)
    return generate_case(seed, config, subtypes=subtypes)


def _digest(case: SyntheticCase) -> str:
    """sha256 over the image, the labels and the subtype masks, as generated."""
    digest = hashlib.sha256()
    for array in (case.hu, case.labels, case.subtype_masks):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize(("seed", "subtypes"), list(EXPECTED), ids=str)
def test_generated_cases_are_bit_identical_to_the_pinned_ones(
    seed: int, subtypes: tuple[str, ...] | None
) -> None:
    case = _generate(seed, subtypes, CONFIG)
    digest, volume_ml = EXPECTED[(seed, subtypes)]
    assert _digest(case) == digest
    assert case.hemorrhage_volume_ml == volume_ml


@pytest.mark.parametrize(("seed", "subtypes"), list(EXPECTED_DEFAULT), ids=str)
def test_cases_with_the_realism_effects_are_pinned_too(
    seed: int, subtypes: tuple[str, ...] | None
) -> None:
    case = _generate(seed, subtypes, DEFAULT)
    digest, volume_ml = EXPECTED_DEFAULT[(seed, subtypes)]
    assert _digest(case) == digest
    assert case.hemorrhage_volume_ml == volume_ml <= EXPECTED[(seed, subtypes)][1]
