"""Bright non-blood structures of real head CT that a model must not call hemorrhage.

Why this module exists: a model trained only on this generator marked 21-85 mL of false
hemorrhage on the real normal GE study in ../shared/data/real/head_ct_ge_tilted (28 slices of
4.2 mm, 0.49 mm pixels, tilted gantry): along the inner table, at the vertex and in the
posterior fossa, voxels of mean HU 95-160 a median 1-6 mm from bone. It had learned "bright,
non-bone, inside the skull = blood" because nothing else bright ever sat there.

Measured with ``bench/generator_realism.py --seeds 1 2 3 4 5 6 7 8`` (512 matrix negatives;
intracranial soft tissue binned by in-plane distance from bone >= 500 HU; median / 90th
percentile HU, share of pixels at 90-500 HU; "after" = these effects at their default ranges):

=========  =======  ================  ================  ================  ====================
region     band     real GE study     generator before  generator after   after, per case
=========  =======  ================  ================  ================  ====================
mid-head   0-2 mm   148 / 412, 73 %   36 / 326, 27 %    103 / 346, 57 %
mid-head   2-4 mm   50 / 73, 4.5 %    32 / 55, 1.0 %    49 / 80, 6.8 %    median 34-70
mid-head   4-8 mm   39 / 51, 1.4 %    36 / 52, 0.1 %    39 / 58, 1.4 %
vertex     2-4 mm   138 / 343, 72 %   30 / 62, 6.0 %    79 / 143, 40 %    median 55-133, 11-98 %
vertex     4-8 mm   59 / 143, 19 %    36 / 55, 0.5 %    57 / 103, 17 %
base       4-8 mm   45 / 196, 21 %    36 / 54, 0.2 %    43 / 73, 4.6 %
base       8-20 mm  37 / 78, 9.1 %    35 / 50, 0.0 %    37 / 55, 1.0 %
=========  =======  ================  ================  ================  ====================

The figure closest to the false positives themselves, intracranial soft tissue at 90-160 HU
1-6 mm from bone: 27.0 mL in the real study; 1.4-11.3 mL (median 2.3) per synthetic negative
before, 4.1-76.8 mL (median 29) after, so the real study now lies inside the generator's range.

The base slices still fall short: there the real study's bright pixels away from bone are the
irregular bone of the sella (clinoids, dorsum) and the ridged orbital roofs cut through, which
the generator's smooth skull-base floor does not have; the parasellar calcifications below
stand in for part of it.

Deep brain (> 20 mm from bone) is 26-34 HU in both, so the differences are all at the bone.
Each effect below is drawn per case with its own probability and a uniform strength, so some
cases have none of it (the generator before) and some more than the real study:

* **Inner-table band** (in-plane point-spread of the dense table, beam hardening next to it):
  ``amount * exp(-depth / length)``, amount 60-600 HU, length 0.4-1.3 mm. With length 1 mm and
  300 HU the 0-2 mm band gains about +110 HU and the 2-4 mm band +15 HU, the real study's excess
  over deep brain (148 - 33 and 50 - 33).
* **Tangential partial volume** (the slice sensitivity profile's tails reach bone where the
  skull is cut tangentially: vertex, skull-base floor, tentorial and orbital roofs):
  ``amount * exp(-depth / (reach * nz + 0.3 mm))`` with ``nz`` the through-plane part of the
  inner-table normal, amount 30-300 HU, reach 1-6 mm. Through-plane it is a few mm; in-plane,
  where the table is tangential, it is the 2-8 mm bright rim of the real vertex (138 HU at
  2-4 mm, 59 at 4-8 mm) and of the middle and posterior fossa floors. A smooth random field
  (wavelengths 5-14 mm, relative strength 0-1) makes it patchy, as ridged orbital roofs and an
  uneven vertex make it in real scans, instead of a uniform sheet over the anterior fossa.
* **Stronger posterior-fossa streaks**: the scanner's petrous streaks and Hounsfield bar (5-25
  and 5-20 HU) scaled by 1-8, so bright and dark bands of up to about 200 HU can cross the
  cerebellum. The GE study itself shows only a faint bar (its bright base pixels are bone, see
  above); older scanners and thinner slices streak far more, and a model must not take a
  bright streak for blood.
* **Falx plaques**: 1-4 small calcified plaques on the falx, 100-400 HU, 0.8-1.5 mm thick and
  2-8 mm long (pineal, choroid plexus and other calcifications are in
  :mod:`ichnet_core.synthetic.incidental`).
* **Parasellar calcifications**: 2-6 spots of 1-3 mm, 150-500 HU, around the sella (calcified
  cavernous and supraclinoid carotids, clinoid and dorsum sellae tips cut through). In the real
  study most bright intracranial pixels more than 4 mm from bone in the base slices sit there
  and over the orbital roofs (the latter is the tangential partial volume above).

All of it changes densities only, so in a negative case every voxel it brightens is brain
(label 1) or skull (0), never hemorrhage. Like partial volume in a real scan, the band and the
tangential term also brighten blood that lies at the table (a thin subdural rim gains what brain
there would gain; blood more than 4 mm from bone keeps its 50-90 HU). Blood is labelled where a
reader would outline it (``render.VISIBLE_BLOOD_MAX_HU``): a rim brightened past 200 HU reads
as bone and is labelled as the brain there would be, as is a calcification inside a bleed. The
effects have their own random stream, so with every probability 0
(``SyntheticConfig.without_realism()``) a seed gives the anatomy and lesions it gave before this
module existed, and bit for bit the densities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichnet_core.synthetic.anatomy import Anatomy, falx_x
from ichnet_core.synthetic.config import SyntheticConfig
from ichnet_core.synthetic.incidental import Spot
from ichnet_core.synthetic.points import Points
from ichnet_core.synthetic.shapes import random_waves, wave_field

#: Through-plane floor (mm) of the tangential partial-volume length, so nz = 0 stays finite.
TANGENTIAL_FLOOR_MM = 0.3
#: Plane waves and their wavelengths (mm) of the patchiness of the tangential partial volume:
#: ridged orbital roofs (juga), sphenoid wings and an uneven vertex make it islands, not a sheet.
PATCH_WAVES = 6
PATCH_WAVELENGTH_MM = (5.0, 14.0)
#: Where falx plaques sit (canonical mm): along the falx, above the corpus callosum.
PLAQUE_Y_MM = (-60.0, 55.0)
PLAQUE_Z_MM = (18.0, 60.0)
#: Plaque semi-axes (mm): thin across the falx, longer along it.
PLAQUE_SEMI_X_MM = (0.8, 1.5)
PLAQUE_SEMI_Y_MM = (2.0, 8.0)
PLAQUE_SEMI_Z_MM = (1.5, 5.0)
#: Where parasellar calcifications sit (canonical mm, x mirrored): carotids and clinoids
#: beside and in front of the sella, the dorsum sellae behind it.
PARASELLAR_LATERAL = ((8.0, 17.0), (-16.0, -4.0), (-34.0, -22.0))
DORSUM_SELLAE = ((-3.0, 3.0), (0.0, 6.0), (-32.0, -24.0))
PARASELLAR_SEMI_MM = (1.0, 3.0)


@dataclass(frozen=True)
class Realism:
    """The bright non-blood structures of one case (zero amounts: none).

    Attributes
    ----------
    band_hu, band_mm:
        Inner-table band: HU at the table and exponential fade length (3-D depth).
    tangential_hu, tangential_mm:
        Tangential partial volume: HU at the table and reach per unit of ``nz``.
    patchiness, patch_waves:
        Relative modulation (0: uniform) of the tangential term by a smooth random field, and
        that field's plane waves (``random_waves``).
    streak_gain:
        Factor on the scanner's posterior-fossa streaks and Hounsfield bar (1: unchanged).
    calcifications:
        Falx plaques and parasellar calcifications, painted like the other calcifications.
    """

    band_hu: float = 0.0
    band_mm: float = 1.0
    tangential_hu: float = 0.0
    tangential_mm: float = 1.0
    patchiness: float = 0.0
    patch_waves: tuple[np.ndarray, np.ndarray] | None = None
    streak_gain: float = 1.0
    calcifications: tuple[Spot, ...] = ()

    def boundary_hu(
        self, depth_mm: np.ndarray, nz: np.ndarray, pts: Points | None = None
    ) -> np.ndarray:
        """HU to add to the intracranial contents at ``depth_mm`` inside the inner table whose
        normal has through-plane part ``nz`` (both from :class:`~.anatomy.Cavity`); ``pts``
        (the same voxels, skull coordinates) for the patchiness."""
        d = np.maximum(depth_mm, 0.0)
        out = np.zeros(np.shape(d), dtype=np.float32)
        if self.band_hu > 0:
            out += np.float32(self.band_hu) * np.exp(-d / np.float32(self.band_mm))
        if self.tangential_hu > 0:
            reach = np.float32(self.tangential_mm) * np.abs(nz) + np.float32(TANGENTIAL_FLOOR_MM)
            tangential = np.float32(self.tangential_hu) * np.exp(-d / reach)
            if self.patchiness > 0 and self.patch_waves is not None and pts is not None:
                field = wave_field(pts.X, pts.Y, pts.Z, *self.patch_waves)
                tangential *= np.clip(1.0 + np.float32(self.patchiness) * field, 0.0, 2.0)
            out += tangential
        return out


def sample_realism(rng: np.random.Generator, config: SyntheticConfig, anatomy: Anatomy) -> Realism:
    """Draw the effects of one case. Every value is drawn whether or not its effect is on, so
    changing one probability does not reshuffle the others."""
    band_on = rng.random() < config.inner_table_band_probability
    band_hu = float(rng.uniform(*config.inner_table_band_hu))
    band_mm = float(rng.uniform(*config.inner_table_band_mm))
    tangential_on = rng.random() < config.tangential_probability
    tangential_hu = float(rng.uniform(*config.tangential_hu))
    tangential_mm = float(rng.uniform(*config.tangential_reach_mm))
    streaks_on = rng.random() < config.strong_streak_probability
    gain = float(rng.uniform(*config.strong_streak_gain))
    plaques_on = rng.random() < config.falx_plaque_probability
    plaques: list[Spot] = []
    for _ in range(int(rng.integers(1, 5))):
        y = float(rng.uniform(*PLAQUE_Y_MM))
        z = float(rng.uniform(*PLAQUE_Z_MM))
        x = float(falx_x(anatomy.brain, np.array([y]), np.array([z]))[0])
        semi = (
            float(rng.uniform(*PLAQUE_SEMI_X_MM)),
            float(rng.uniform(*PLAQUE_SEMI_Y_MM)),
            float(rng.uniform(*PLAQUE_SEMI_Z_MM)),
        )
        plaques.append(Spot((x, y, z), semi, float(rng.uniform(*config.falx_plaque_hu))))
    parasellar_on = rng.random() < config.parasellar_probability
    parasellar: list[Spot] = []
    for _ in range(int(rng.integers(2, 7))):
        dorsum = rng.random() < 0.25
        x, y, z = (
            float(rng.uniform(*r)) for r in (DORSUM_SELLAE if dorsum else PARASELLAR_LATERAL)
        )
        if not dorsum:
            x *= float(rng.choice([-1.0, 1.0]))
        a, b, c = (float(rng.uniform(*PARASELLAR_SEMI_MM)) for _ in range(3))
        parasellar.append(Spot((x, y, z), (a, b, c), float(rng.uniform(*config.parasellar_hu))))
    patchiness = float(rng.uniform(*config.tangential_patchiness))
    patch_waves = random_waves(rng, PATCH_WAVES, PATCH_WAVELENGTH_MM)
    return Realism(
        band_hu=band_hu if band_on else 0.0,
        band_mm=band_mm,
        tangential_hu=tangential_hu if tangential_on else 0.0,
        tangential_mm=tangential_mm,
        patchiness=patchiness,
        patch_waves=patch_waves,
        streak_gain=gain if streaks_on else 1.0,
        calcifications=(tuple(plaques) if plaques_on else ())
        + (tuple(parasellar) if parasellar_on else ()),
    )
