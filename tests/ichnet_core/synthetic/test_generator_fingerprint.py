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
its noise-free density reads as blood (``render.VISIBLE_BLOOD_MAX_HU``, 200 HU), and a subtype
present only where it covers ``case.MIN_VISIBLE_AREA_MM2`` of a slice. Every image stayed bit for bit what it was (checked on all the cases below, each time);
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
        "6e9ce64956347fd3a2a6fa4a64e9935a467687932d118c43126220940e89eb11",
        15.45740468173317,
    ),
    (1, ALL): (
        "f5cf08962f0e6e57ca1bb5f0636aaf3b86e060fc3a9ebb49074e22c8d7b775b2",
        6.586635397105455,
    ),
    (2, ALL): (
        "64c00f98ed6329264f4e4bf0a0d15fd22b36dca9846831b1ce00c0072732aef2",
        30.321543763401202,
    ),
    (3, ALL): (
        "a41997a6c0cd6523f21dbc70afb3e6323239f6c95371ed76544e9b0a666a25f1",
        36.08381962845401,
    ),
    (4, ALL): (
        "65d96bf680a0dd6d848363d714bf463db954ec41c4fdc617a1671a13b3da35cc",
        24.057301877370612,
    ),
    (5, ALL): (
        "5297930eeecb7b6faf286f67e84cef394201ff59acd042d34a3dec14deb2326b",
        4.303944861526909,
    ),
    (19, ("SDH",)): (
        "78d7b07de4bdb5021e278189a17de78abdbf15f47327bde83d7c43e3539a68a2",
        3.1142379790696526,
    ),
    (7, None): (
        "e5d85c1c6964d805fd6111f766f65ba242496b25efd12c3dda9db009036dcb65",
        7.57166265964657,
    ),
    (8, ()): ("807a390deaf2b3307360fc9b07d4d1d16116a630d809474133bf48edfa85cf7e", 0.0),
}


DEFAULT = SyntheticConfig(rows=96, columns=96)
EXPECTED_DEFAULT: dict[tuple[int, tuple[str, ...] | None], tuple[str, float]] = {
    (0, ALL): (
        "3d1cf5bf08d9ccbfd4a8b045603cb57ebd7a06b353d8d9b517c9be405059ae03",
        14.545911530967578,
    ),
    (7, None): (
        "13451545943bc8167afe7b2043f265e00ee9bd9cd016dcc16548466c9a5c8ab9",
        7.312197584082358,
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
