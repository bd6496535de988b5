"""Incidental findings and objects: the confounders a hemorrhage detector must learn to ignore.

* Calcifications (pineal gland, choroid plexus, globus pallidus, falx, carotid siphons): dense
  like or denser than blood, in places blood also goes.
* Old lesions: hypodense chronic infarcts (wedge from the cortex), lacunes, periventricular white
  matter disease, and atrophy (handled by the brain shape itself).
* Extracranial blood-like tissue: a scalp swelling (label 0 even when it is a haematoma).
* A head holder behind the head, as on every real scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichnet_core.synthetic.anatomy import CRANIAL_CENTRE, Anatomy, Cavity, inner_radius
from ichnet_core.synthetic.brain import BrainFields, lateral_ventricle_nodes
from ichnet_core.synthetic.head import ScalpSwelling
from ichnet_core.synthetic.points import Points
from ichnet_core.synthetic.shapes import Canvas, ellipsoid_alpha, paint, ramp, tube

#: HU of a calcification (range).
CALCIUM_HU = (90.0, 450.0)


@dataclass(frozen=True)
class Spot:
    """A small ellipsoid of uniform density (calcification, lacune, choroid plexus)."""

    center: tuple[float, float, float]
    semi: tuple[float, float, float]
    hu: float


@dataclass(frozen=True)
class Infarct:
    """A chronic (old) territorial infarct: a hypodense wedge from the cortex inwards."""

    direction: np.ndarray
    half_angle: float
    depth_mm: float
    hu: float


@dataclass(frozen=True)
class HeadHolder:
    """Curved head rest behind the head (patient coordinates, mm): circle centre (x, y), radius,
    shell thickness, half opening angle and density."""

    center_xy: tuple[float, float]
    radius_mm: float
    thickness_mm: float
    half_angle: float
    hu: float


@dataclass(frozen=True)
class Incidentals:
    """Everything incidental about one case."""

    soft_spots: tuple[Spot, ...] = ()
    old_spots: tuple[Spot, ...] = ()
    calcifications: tuple[Spot, ...] = ()
    infarcts: tuple[Infarct, ...] = ()
    white_matter_drop_hu: float = 0.0
    white_matter_extent_mm: float = 0.0
    swelling: ScalpSwelling | None = None
    head_holder: HeadHolder | None = None


def sample_incidentals(
    rng: np.random.Generator, anatomy: Anatomy, probability: float, head_reach_mm: float
) -> Incidentals:
    """Draw the incidental findings of one case; each kind appears with ``probability``.

    Parameters
    ----------
    head_reach_mm:
        Distance (patient mm) from the head origin to the back of the scalp; the head holder
        sits a little behind it.
    """
    tissue, brain = anatomy.tissue, anatomy.brain
    x0 = brain.falx_coeffs[0]
    spread = 1.0 + 0.45 * (brain.ventricle_scale - 1.0)

    def calcium() -> float:
        return float(rng.uniform(*CALCIUM_HU))

    soft = tuple(
        Spot(
            (side * 22.0 * spread, 29.0, 10.0), (3.5, 5.0, 4.0), tissue.grey - rng.uniform(0.0, 6.0)
        )
        for side in (-1.0, 1.0)
    )
    calc: list[Spot] = []
    if rng.random() < 0.6:  # the pineal gland calcifies in most adults
        r = rng.uniform(1.5, 3.5)
        calc.append(Spot((x0, 27.0, 1.0), (r, r * 1.2, r), calcium()))
    if rng.random() < 0.5:
        for side in (-1.0, 1.0):
            r = rng.uniform(1.5, 3.5)
            calc.append(Spot((side * 22.0 * spread, 29.0, 10.0), (r, r * 1.3, r), calcium()))
    if rng.random() < probability * 0.4:
        for side in (-1.0, 1.0):
            calc.append(
                Spot((side * 19.0, -2.0, 0.0), (2.5, 5.0, 3.5), float(rng.uniform(80.0, 200.0)))
            )
    if rng.random() < probability * 0.6:
        y, z = rng.uniform(-40.0, 40.0), rng.uniform(20.0, 55.0)
        calc.append(
            Spot((x0, y, z), (1.2, rng.uniform(3.0, 8.0), rng.uniform(2.0, 6.0)), calcium())
        )
    if rng.random() < probability:
        for side in (-1.0, 1.0):
            calc.append(
                Spot((side * 16.0, -14.0, -30.0), (2.0, 3.0, 2.0), float(rng.uniform(150.0, 600.0)))
            )

    old: list[Spot] = []
    if rng.random() < probability:
        for _ in range(int(rng.integers(1, 5))):
            side = float(rng.choice([-1.0, 1.0]))
            c = (side * rng.uniform(8.0, 28.0), rng.uniform(-20.0, 20.0), rng.uniform(-5.0, 25.0))
            r = rng.uniform(1.5, 4.0)
            old.append(
                Spot(c, (r, r * rng.uniform(1.0, 1.6), r), tissue.csf + rng.uniform(2.0, 8.0))
            )
    infarcts: list[Infarct] = []
    if rng.random() < probability * 0.7:
        u = rng.normal(size=3)
        u[2] = abs(u[2]) * 0.6
        u /= np.linalg.norm(u)
        infarcts.append(
            Infarct(
                u,
                rng.uniform(0.12, 0.35),
                rng.uniform(12.0, 35.0),
                tissue.csf + rng.uniform(4.0, 14.0),
            )
        )
    wm_drop = (
        float(rng.uniform(3.0, 9.0)) if rng.random() < probability * (0.5 + brain.atrophy) else 0.0
    )

    swelling = None
    if rng.random() < probability * 0.5:
        d = rng.normal(size=3)
        d[2] = abs(d[2])
        swelling = ScalpSwelling(
            d / np.linalg.norm(d),
            rng.uniform(0.2, 0.5),
            rng.uniform(4.0, 14.0),
            rng.uniform(35.0, 75.0),
        )
    holder = None
    if rng.random() < 0.7:
        holder = HeadHolder(
            center_xy=(0.0, 0.0),
            radius_mm=head_reach_mm + rng.uniform(4.0, 25.0),
            thickness_mm=rng.uniform(1.5, 5.0),
            half_angle=rng.uniform(0.5, 1.7),
            hu=rng.uniform(80.0, 450.0),
        )
    return Incidentals(
        soft_spots=soft,
        old_spots=tuple(old),
        calcifications=tuple(calc),
        infarcts=tuple(infarcts),
        white_matter_drop_hu=wm_drop,
        white_matter_extent_mm=float(rng.uniform(4.0, 12.0)),
        swelling=swelling,
        head_holder=holder,
    )


def paint_old_lesions(
    pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy, inc: Incidentals
) -> None:
    """Hypodense chronic changes, painted over the parenchyma only (CSF spaces stay CSF)."""
    hu = fields.hu
    canvas = Canvas(hu, pts)
    if inc.white_matter_drop_hu > 0:
        brain = anatomy.brain
        for side in (-1.0, 1.0):
            main, main_r, _, _ = lateral_ventricle_nodes(brain, side)
            got = canvas.region(main.mean(axis=0), 60.0)
            if got is None:
                continue
            crop, view = got
            idx = crop.index_in(pts)
            d, _ = tube(
                crop, main[1:-1], main_r[1:-1] + inc.white_matter_extent_mm, (1.0, 1.0, 1.35)
            )
            a = ramp(d, 4.0) * fields.parenchyma[idx] * ramp(fields.surface_depth[idx] - 8.0, 4.0)
            paint(view, a, anatomy.tissue.white - inc.white_matter_drop_hu)
    for spot in inc.old_spots:
        got = canvas.region(spot.center, max(spot.semi) + 2.0)
        if got is not None:
            crop, view = got
            a = (
                ellipsoid_alpha(crop, spot.center, spot.semi)
                * fields.parenchyma[crop.index_in(pts)]
            )
            paint(view, a, spot.hu)
    for inf in inc.infarcts:
        u = inf.direction
        r_in = float(inner_radius(anatomy.skull, u[:1], u[1:2], u[2:])[0])
        got = canvas.region(
            CRANIAL_CENTRE + u * (r_in - inf.depth_mm / 2.0),
            r_in * inf.half_angle + inf.depth_mm + 4.0,
        )
        if got is None:
            continue
        crop, view = got
        idx = crop.index_in(pts)
        rad = cav.radial
        ux, uy, uz = (float(v) for v in u)
        cos_t = rad.ux[idx] * ux + rad.uy[idx] * uy + rad.uz[idx] * uz
        q = 2.0 * (1.0 - cos_t) / inf.half_angle**2
        depth = inf.depth_mm * (1.0 - q)
        a = ramp(depth - cav.depth[idx], 2.0) * ramp(1.0 - q, 0.2) * fields.parenchyma[idx]
        paint(view, a, inf.hu)


def paint_spots(pts: Points, fields: BrainFields, inc: Incidentals) -> None:
    """Choroid plexus and calcifications (painted last: they stay visible inside blood)."""
    canvas = Canvas(fields.hu, pts)
    for spot in (*inc.soft_spots, *inc.calcifications):
        canvas.ellipsoid(spot.center, spot.semi, spot.hu)


def paint_head_holder(
    hu: np.ndarray, patient_xy: tuple[np.ndarray, np.ndarray], holder: HeadHolder, pixel_mm: float
) -> None:
    """Paint the head rest (a cylindrical shell along the table axis) where there is air.

    Parameters
    ----------
    hu:
        ``(n, rows, columns)`` image of a chunk, painted in place.
    patient_xy:
        Patient x and y of each pixel, each broadcastable to ``hu``.
    """
    x, y = patient_xy
    dx, dy = x - holder.center_xy[0], y - holder.center_xy[1]
    r = np.sqrt(dx * dx + dy * dy) + np.float32(1e-3)
    shell = holder.thickness_mm / 2.0 - np.abs(r - holder.radius_mm - holder.thickness_mm / 2.0)
    # Only behind the head: within half_angle of straight posterior (+y).
    opening = (dy / r - np.float32(np.cos(holder.half_angle))) * np.float32(holder.radius_mm)
    a = ramp(shell, pixel_mm) * ramp(opening, 2.0 * pixel_mm)
    a = np.broadcast_to(a, hu.shape) * ramp(-500.0 - hu, 200.0)
    paint(hu, a, holder.hu)
