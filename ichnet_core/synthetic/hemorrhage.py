"""Acute hemorrhages: where each subtype sits, its shape, its density, and how it is planned.

Shapes follow the compartments a radiologist reads them from:

* **EDH** between inner table and dura: a biconvex lens whose outer face is the inner table.
* **SDH** under the dura: a crescent over the convexity that stops at the falx, or a layer along
  the falx (interhemispheric) or on the tentorium.
* **CPH** in the parenchyma: a lobulated blob (basal ganglia, thalamus, lobar, cerebellum, pons)
  with an optional hypodense oedema rim; it cannot enter the ventricles or the subarachnoid space.
* **IVH** in the ventricles: blood layering in the dependent part (the occipital horns of a supine
  patient) with a fluid level perpendicular to gravity, or a cast filling a ventricle.
* **SAH** in the extra-ventricular CSF: basal cisterns, Sylvian fissure, convexity sulci or the
  interhemispheric fissure, whose sulci it distends.

Every shape is a partial-volume fraction like the anatomy (:mod:`ichnet_core.synthetic.shapes`),
restricted to its compartment by the composition the brain renderer tracks. Lesions are planned
in 3-D before any image exists: centres are drawn among random points whose compartment is right,
then moved onto the nearest slice centre plane so every requested subtype is visible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ichnet_core.labels import SUBTYPES
from ichnet_core.synthetic.anatomy import (
    CRANIAL_CENTRE,
    Anatomy,
    Cavity,
    cavity,
    inner_radius,
    tentorium_z,
)
from ichnet_core.synthetic.brain import (
    FOURTH,
    LATERAL_LEFT,
    LATERAL_RIGHT,
    THIRD,
    BrainFields,
    ShiftedPoints,
    render_brain,
)
from ichnet_core.synthetic.points import FlatPoints, Points
from ichnet_core.synthetic.shapes import alpha, edge_width, paint, ramp, random_waves, wave_field

logger = logging.getLogger(__name__)

#: Density of acute blood (HU): clotted blood 60-80, anaemic or hyperacute blood lower.
BLOOD_HU = (55.0, 82.0)
#: Amplitude (HU) of the internal density variation of a clot.
BLOOD_TEXTURE_HU = (2.0, 6.0)
#: Acute-blood HU never leaves this range before noise (the requirement's "about 50-90").
BLOOD_HU_LIMITS = (48.0, 92.0)
#: Volume (mL) range per subtype for one lesion.
LESION_VOLUME_ML = {
    "CPH": (0.3, 75.0),
    "IVH": (0.4, 30.0),
    "EDH": (1.0, 80.0),
    "SDH": (1.0, 80.0),
    "SAH": (0.3, 20.0),
}
#: Midline shift (mm) per mL of supratentorial mass above :data:`SHIFT_FREE_ML`, and its cap.
SHIFT_PER_ML = 0.16
SHIFT_FREE_ML = 10.0
SHIFT_MAX_MM = 14.0
#: Thinnest acute EDH and SDH (mm) at their thickest point: thinner ones are not seen on CT.
MIN_EPIDURAL_MM = 4.0
MIN_SUBDURAL_MM = 3.0
#: Probability of a convexity, falx (interhemispheric) or tentorial SDH.
SUBDURAL_KIND_P = (0.75, 0.15, 0.1)
#: Number of random candidate points when placing a lesion.
CANDIDATES = 600
#: Random points used to measure ventricle volumes for IVH.
VENTRICLE_SAMPLES = 6000


class LesionKind(str, Enum):
    """Shape family of a lesion (several per subtype: an SDH may be convexity, falx or tentorium)."""

    EPIDURAL = "epidural"
    SUBDURAL_CONVEXITY = "subdural_convexity"
    SUBDURAL_FALX = "subdural_falx"
    SUBDURAL_TENTORIUM = "subdural_tentorium"
    INTRAPARENCHYMAL = "intraparenchymal"
    INTRAVENTRICULAR = "intraventricular"
    SUBARACHNOID = "subarachnoid"


@dataclass(frozen=True)
class Blood:
    """Density of one clot: mean HU plus a smooth internal variation (plane waves)."""

    hu: float
    texture_hu: float
    texture_k: np.ndarray
    texture_phase: np.ndarray


@dataclass(frozen=True)
class Lesion:
    """One hemorrhage: subtype, density, shape kind and its parameters (canonical mm).

    ``bound`` is a sphere (centre, radius) that contains the lesion; it decides the crop.
    ``params`` holds the shape parameters of ``kind`` (see the ``_alpha_*`` functions).
    """

    subtype: str
    kind: LesionKind
    blood: Blood
    bound: tuple[tuple[float, float, float], float]
    params: dict[str, Any] = field(default_factory=dict)
    side: float = 0.0


@dataclass(frozen=True)
class HemorrhagePlan:
    """All lesions of a case, the midline shift they cause (mm, + = towards patient left) and the
    regions (centre, semi-axes, extra mm) where subarachnoid blood distends the sulci."""

    lesions: tuple[Lesion, ...] = ()
    shift_mm: float = 0.0
    sah_regions: tuple[tuple[np.ndarray, np.ndarray, float], ...] = ()


# --------------------------------------------------------------------------------------------
# Shapes


def _cos_angle(cav: Cavity, direction: np.ndarray) -> np.ndarray:
    rad = cav.radial
    return (
        rad.ux * np.float32(direction[0])
        + rad.uy * np.float32(direction[1])
        + rad.uz * np.float32(direction[2])
    )


def _alpha_epidural(pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]) -> np.ndarray:
    """Biconvex lens: thickness ``t * (1 - (theta / Theta)^2)`` inward from the inner table."""
    direction = np.asarray(p["direction"])
    half = float(p["half_angle"])
    q = 2.0 * (1.0 - _cos_angle(cav, direction)) / (half * half)
    profile = float(p["thickness"]) * (1.0 - q)
    return alpha(pts, profile - cav.depth, cav.nz)


def _alpha_subdural_convexity(
    pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]
) -> np.ndarray:
    """Crescent with a flat plateau, not crossing the falx."""
    direction = np.asarray(p["direction"])
    half = float(p["half_angle"])
    power = float(p["power"])
    q = np.clip(2.0 * (1.0 - _cos_angle(cav, direction)) / (half * half), 0.0, 4.0)
    profile = float(p["thickness"]) * (1.0 - q ** (power / 2.0))
    side = float(p["side"])
    return alpha(pts, profile - cav.depth, cav.nz) * ramp(side * fields.midline - 1.0, 1.0)


def _alpha_subdural_falx(
    pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]
) -> np.ndarray:
    """Layer along one side of the falx, thickest in its middle."""
    yc, zc, ly, lz = (float(p[k]) for k in ("yc", "zc", "ly", "lz"))
    side = float(p["side"])
    profile = float(p["thickness"]) * (1.0 - ((pts.Y - yc) / ly) ** 2 - ((pts.Z - zc) / lz) ** 2)
    off = side * fields.midline
    across = abs(float(pts.normal[0]))  # the falx faces +-x
    return alpha(pts, np.minimum(profile - (off - 0.6), off - 0.3), across) * (
        fields.supratentorial > 0.5
    )


def _alpha_subdural_tentorium(
    pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any], anatomy: Anatomy
) -> np.ndarray:
    """Layer on top of one leaf of the tentorium."""
    xc, yc, lx, ly = (float(p[k]) for k in ("xc", "yc", "lx", "ly"))
    profile = float(p["thickness"]) * (1.0 - ((pts.X - xc) / lx) ** 2 - ((pts.Y - yc) / ly) ** 2)
    above = pts.Z - tentorium_z(anatomy.brain, pts.X, pts.Y)
    return alpha(pts, np.minimum(profile - (above - 0.6), above - 0.3), 0.9)


def _blob_distance(pts: Points, p: dict[str, Any]) -> np.ndarray:
    """Signed distance to a lobulated blob (radius modulated by a few direction harmonics)."""
    cx, cy, cz = (float(v) for v in np.asarray(p["center"]))
    x, y, z = pts.X - cx, pts.Y - cy, pts.Z - cz
    dist = np.sqrt(x * x + y * y + z * z) + np.float32(1e-3)
    k = np.asarray(p["lobe_k"])
    phase = np.asarray(p["lobe_phase"])
    amp = float(p["lobe_amp"])
    radius = float(p["radius"])
    sx, sy, sz = (float(v) for v in np.asarray(p["stretch"]))
    wob = wave_field(x / dist, y / dist, z / dist, k, phase)
    r = radius * (1.0 + amp * wob)
    xs, ys, zs = x / sx, y / sy, z / sz
    return r - np.sqrt(xs * xs + ys * ys + zs * zs)


def _alpha_intraparenchymal(
    pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]
) -> np.ndarray:
    """Lobulated clot confined to the brain (not ventricles, not the subarachnoid space)."""
    a = alpha(pts, _blob_distance(pts, p), 0.7)
    a *= 1.0 - fields.ventricle.sum(axis=0)
    a *= ramp(fields.surface_depth + 0.5, 1.0)
    return np.clip(a, 0.0, 1.0)


def _alpha_oedema(pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]) -> np.ndarray:
    """Rim of vasogenic oedema around a clot (parenchyma only)."""
    a = alpha(pts, _blob_distance(pts, p) + float(p["oedema_mm"]), 0.7)
    return a * fields.parenchyma


def _alpha_intraventricular(
    pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]
) -> np.ndarray:
    """Blood in the dependent part of the chosen ventricles (or all of a cast ventricle)."""
    g = np.asarray(p["gravity"])
    gx, gy, gz = (float(v) for v in g)
    height = pts.X * gx + pts.Y * gy + pts.Z * gz
    w = edge_width(pts, abs(float(g @ pts.normal)))
    total = np.zeros(pts.shape, dtype=np.float32)
    levels: dict[int, float] = p["levels"]
    for vid, level in levels.items():
        total += fields.ventricle[vid] * ramp(height - level, w)
    return np.clip(total, 0.0, 1.0)


def _alpha_subarachnoid(
    pts: Points, cav: Cavity, fields: BrainFields, p: dict[str, Any]
) -> np.ndarray:
    """Blood replacing CSF in the sulci/cisterns inside a region."""
    cx, cy, cz = (float(v) for v in np.asarray(p["center"]))
    ax, ay, az = (float(v) for v in np.asarray(p["semi"]))
    x, y, z = (pts.X - cx) / ax, (pts.Y - cy) / ay, (pts.Z - cz) / az
    region = np.clip((1.0 - np.sqrt(x * x + y * y + z * z)) * 4.0, 0.0, 1.0)
    return fields.csf * region * float(p["fill"])


def lesion_alpha(
    lesion: Lesion, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy
) -> np.ndarray:
    """Fraction of each voxel of ``pts`` filled by ``lesion``'s blood."""
    p = lesion.params
    if lesion.kind == LesionKind.EPIDURAL:
        return _alpha_epidural(pts, cav, fields, p)
    if lesion.kind == LesionKind.SUBDURAL_CONVEXITY:
        return _alpha_subdural_convexity(pts, cav, fields, p)
    if lesion.kind == LesionKind.SUBDURAL_FALX:
        return _alpha_subdural_falx(pts, cav, fields, p)
    if lesion.kind == LesionKind.SUBDURAL_TENTORIUM:
        return _alpha_subdural_tentorium(pts, cav, fields, p, anatomy)
    if lesion.kind == LesionKind.INTRAPARENCHYMAL:
        return _alpha_intraparenchymal(pts, cav, fields, p)
    if lesion.kind == LesionKind.INTRAVENTRICULAR:
        return _alpha_intraventricular(pts, cav, fields, p)
    if lesion.kind == LesionKind.SUBARACHNOID:
        return _alpha_subarachnoid(pts, cav, fields, p)
    raise ValueError(f"unknown lesion kind {lesion.kind!r}")


def paint_hemorrhages(
    pts: Points, cav: Cavity, fields: BrainFields, plan: HemorrhagePlan, anatomy: Anatomy
) -> np.ndarray:
    """Paint every lesion of ``plan`` into ``fields.hu``; return per-subtype blood fractions.

    Oedema rims go first, then the clots in plan order (painter's algorithm, so the fractions of
    all subtypes at a voxel never add up to more than 1).

    Returns
    -------
    np.ndarray
        ``(5, *pts.shape)`` float32 fraction of each voxel filled by each subtype (SUBTYPES order).
    """
    fractions = np.zeros((len(SUBTYPES), *pts.shape), dtype=np.float32)
    if not plan.lesions:
        return fractions
    brain_pts: Points = ShiftedPoints(pts, plan.shift_mm) if plan.shift_mm else pts
    work: list[tuple[Lesion, Points, tuple[slice, ...]]] = []
    for lesion in plan.lesions:
        attached_to_skull = lesion.kind in (LesionKind.EPIDURAL, LesionKind.SUBDURAL_CONVEXITY)
        base = pts if attached_to_skull else brain_pts
        center, radius = lesion.bound
        crop = base.crop(np.asarray(center), radius)
        if crop is None:
            continue
        work.append((lesion, crop, crop.index_in(pts)))
    for lesion, crop, idx in work:
        if (
            lesion.kind == LesionKind.INTRAPARENCHYMAL
            and float(lesion.params.get("oedema_mm", 0.0)) > 0
        ):
            sub = fields.take(idx)
            a = _alpha_oedema(crop, cav.take(idx), sub, lesion.params)
            paint(fields.hu[idx], a, float(lesion.params["oedema_hu"]))
    for lesion, crop, idx in work:
        sub = fields.take(idx)
        a = lesion_alpha(lesion, crop, cav.take(idx), sub, anatomy)
        b = lesion.blood
        tex = wave_field(crop.X, crop.Y, crop.Z, b.texture_k, b.texture_phase)
        value = np.clip(b.hu + b.texture_hu * tex, *BLOOD_HU_LIMITS)
        paint(fields.hu[idx], a, value)
        s = SUBTYPES.index(lesion.subtype)
        for j in range(len(SUBTYPES)):
            paint(fractions[(j, *idx)], a, 1.0 if j == s else 0.0)
    return fractions


# --------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class SlicePlanes:
    """Canonical slice planes of a series: unit normal and the offset of each centre plane."""

    normal: np.ndarray
    offsets: np.ndarray
    gravity: (
        np.ndarray
    )  # unit canonical direction in which height increases towards the dependent side

    def snap(self, point: np.ndarray) -> np.ndarray:
        """Move ``point`` along the normal onto the nearest slice centre plane."""
        s = float(point @ self.normal)
        k = int(np.argmin(np.abs(self.offsets - s)))
        return point + (self.offsets[k] - s) * self.normal

    def covers(self, point: np.ndarray, margin: float = 0.0) -> bool:
        s = float(point @ self.normal)
        return bool(self.offsets.min() - margin <= s <= self.offsets.max() + margin)


def _probe(anatomy: Anatomy, points: np.ndarray, planes: SlicePlanes) -> tuple[Cavity, BrainFields]:
    pts = FlatPoints(points.astype(np.float32), normal=planes.normal)
    cav = cavity(pts, anatomy.skull)
    return cav, render_brain(pts, anatomy, cav)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _blood(rng: np.random.Generator) -> Blood:
    k, ph = random_waves(rng, 4, (6.0, 14.0))
    return Blood(float(rng.uniform(*BLOOD_HU)), float(rng.uniform(*BLOOD_TEXTURE_HU)), k, ph)


def _plan_epidural(
    rng: np.random.Generator, anatomy: Anatomy, planes: SlicePlanes, volume_ml: float
) -> Lesion:
    region = rng.choice(
        ["temporal", "parietal", "frontal", "occipital", "posterior_fossa"],
        p=[0.4, 0.25, 0.15, 0.1, 0.1],
    )
    side = float(rng.choice([-1.0, 1.0]))
    base = {
        "temporal": (1.0, -0.1, -0.25),
        "parietal": (0.7, 0.2, 0.6),
        "frontal": (0.35, -0.85, 0.3),
        "occipital": (0.3, 0.9, 0.15),
        "posterior_fossa": (0.45, 0.8, -0.55),
    }[str(region)]
    ratio = rng.uniform(0.22, 0.38)  # thickness / diameter
    diameter = (8.0 * volume_ml * 1000.0 / (math.pi * ratio)) ** (1.0 / 3.0)
    for _ in range(CANDIDATES // 20):
        u = _unit(np.array([side * base[0], base[1], base[2]]) + rng.normal(0.0, 0.15, 3))
        r_in = float(inner_radius(anatomy.skull, u[:1], u[1:2], u[2:])[0])
        peak = planes.snap(CRANIAL_CENTRE + u * (r_in - 2.0))
        cav, _ = _probe(anatomy, peak[None, :], planes)
        if cav.depth[0] > 0.5 and planes.covers(peak):
            break
    u = _unit(peak - CRANIAL_CENTRE)
    r_in = float(inner_radius(anatomy.skull, u[:1], u[1:2], u[2:])[0])
    thickness = float(np.clip(ratio * diameter, MIN_EPIDURAL_MM, 40.0))
    diameter = max(diameter, thickness / ratio)
    half_angle = float(np.clip(diameter / (2.0 * r_in), 0.12, 0.9))
    blood = _blood(rng)
    centre = CRANIAL_CENTRE + u * r_in
    return Lesion(
        subtype="EDH",
        kind=LesionKind.EPIDURAL,
        blood=blood,
        bound=(tuple(centre), r_in * half_angle * 1.2 + thickness + 4.0),
        params={"direction": u, "half_angle": half_angle, "thickness": thickness},
        side=float(np.sign(u[0])),
    )


def _plan_subdural(
    rng: np.random.Generator, anatomy: Anatomy, planes: SlicePlanes, volume_ml: float
) -> Lesion:
    kinds = (LesionKind.SUBDURAL_CONVEXITY, LesionKind.SUBDURAL_FALX, LesionKind.SUBDURAL_TENTORIUM)
    kind = kinds[int(rng.choice(len(kinds), p=SUBDURAL_KIND_P))]
    side = float(rng.choice([-1.0, 1.0]))
    blood = _blood(rng)
    if kind == LesionKind.SUBDURAL_FALX:
        yc, zc = rng.uniform(-40.0, 45.0), rng.uniform(15.0, 45.0)
        yc_zc = planes.snap(np.array([0.0, yc, zc]))
        ly, lz = rng.uniform(18.0, 40.0), rng.uniform(12.0, 25.0)
        thickness = float(
            np.clip(volume_ml * 1000.0 / (math.pi * ly * lz * 0.5), MIN_SUBDURAL_MM, 7.0)
        )
        params = {
            "yc": float(yc_zc[1]),
            "zc": float(yc_zc[2]),
            "ly": ly,
            "lz": lz,
            "thickness": thickness,
            "side": side,
        }
        return Lesion(
            "SDH",
            kind,
            blood,
            ((0.0, float(yc_zc[1]), float(yc_zc[2])), max(ly, lz) + 10.0),
            params,
            side,
        )
    if kind == LesionKind.SUBDURAL_TENTORIUM:
        xc, yc = side * rng.uniform(18.0, 34.0), rng.uniform(32.0, 58.0)
        zc = float(tentorium_z(anatomy.brain, np.array(xc), np.array(yc)))
        p = planes.snap(np.array([xc, yc, zc + 1.0]))
        lx, ly = rng.uniform(12.0, 22.0), rng.uniform(12.0, 25.0)
        thickness = float(
            np.clip(volume_ml * 1000.0 / (math.pi * lx * ly * 0.5), MIN_SUBDURAL_MM, 6.0)
        )
        params = {"xc": xc, "yc": yc, "lx": lx, "ly": ly, "thickness": thickness}
        return Lesion("SDH", kind, blood, ((xc, yc, float(p[2])), max(lx, ly) + 12.0), params, side)
    # Larger haematomas spread further over the convexity (and thicken).
    half_angle = float(
        np.clip(rng.uniform(0.6, 1.0) * (volume_ml / 40.0) ** (1.0 / 3.0), 0.3, 1.05)
    )
    power = float(rng.uniform(3.0, 6.0))
    for _ in range(CANDIDATES // 20):
        u = _unit(np.array([side * 1.0, rng.uniform(-0.6, 0.6), rng.uniform(-0.2, 0.7)]))
        r_in = float(inner_radius(anatomy.skull, u[:1], u[1:2], u[2:])[0])
        peak = planes.snap(CRANIAL_CENTRE + u * (r_in - 2.0))
        cav, _ = _probe(anatomy, peak[None, :], planes)
        if cav.depth[0] > 0.5:
            break
    u = _unit(peak - CRANIAL_CENTRE)
    r_in = float(inner_radius(anatomy.skull, u[:1], u[1:2], u[2:])[0])
    shape = 2.0 * math.pi * r_in**2 * (0.5 - 1.0 / (power + 2.0))
    thickness = volume_ml * 1000.0 / (shape * half_angle**2)
    if (
        thickness < MIN_SUBDURAL_MM
    ):  # small SDH: a short crescent rather than a film over a hemisphere
        thickness = MIN_SUBDURAL_MM
        half_angle = max(math.sqrt(volume_ml * 1000.0 / (shape * thickness)), 0.25)
    thickness = float(min(thickness, 25.0))
    params = {
        "direction": u,
        "half_angle": half_angle,
        "thickness": thickness,
        "power": power,
        "side": side,
    }
    centre = CRANIAL_CENTRE + u * r_in
    return Lesion(
        "SDH",
        LesionKind.SUBDURAL_CONVEXITY,
        blood,
        (tuple(centre), r_in * min(half_angle * 1.6, 2.0) + thickness + 4.0),
        params,
        side,
    )


def _plan_intraparenchymal(
    rng: np.random.Generator, anatomy: Anatomy, planes: SlicePlanes, volume_ml: float
) -> Lesion:
    site = str(
        rng.choice(
            ["basal_ganglia", "thalamus", "lobar", "cerebellum", "pons"],
            p=[0.3, 0.15, 0.4, 0.1, 0.05],
        )
    )
    side = float(rng.choice([-1.0, 1.0]))
    cap = {"basal_ganglia": 75.0, "thalamus": 25.0, "lobar": 75.0, "cerebellum": 30.0, "pons": 6.0}[
        site
    ]
    volume_ml = min(volume_ml, cap)
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    if site == "lobar":
        u = rng.normal(size=(CANDIDATES, 3))
        u[:, 2] = np.abs(u[:, 2]) * 0.8 - 0.1
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        r = (
            inner_radius(anatomy.skull, u[:, 0], u[:, 1], u[:, 2])
            - rng.uniform(10.0, 18.0, CANDIDATES)
            - 0.6 * radius
        )
        candidates = CRANIAL_CENTRE + u * r[:, None]
    else:
        centre, jitter = {
            "basal_ganglia": ((side * 24.0, -3.0, 1.0), 5.0),
            "thalamus": ((side * 11.0, 12.0, 3.0), 3.0),
            "cerebellum": ((side * 24.0, 50.0, -44.0), 6.0),
            "pons": ((0.0, 17.0, -34.0), 2.0),
        }[site]
        candidates = np.asarray(centre) + rng.normal(0.0, jitter, size=(CANDIDATES, 3))
    candidates = np.array([planes.snap(c) for c in candidates])
    cav, fields = _probe(anatomy, candidates, planes)
    ok = (
        (fields.parenchyma > 0.9)
        & (fields.ventricle.sum(axis=0) < 0.01)
        & (cav.depth > 4.0)
        & (fields.surface_depth > 2.0)
    )
    choice = (
        int(np.flatnonzero(ok)[0])
        if ok.any()
        else int(np.argmax(fields.parenchyma * (cav.depth > 0)))
    )
    centre = candidates[choice]
    blood = _blood(rng)
    k, ph = random_waves(rng, 4, (1.5, 3.0))
    stretch = rng.uniform(0.75, 1.3, 3)
    stretch /= np.prod(stretch) ** (1.0 / 3.0)
    oedema = float(rng.choice([0.0, rng.uniform(2.0, 3.0 + 0.12 * radius)], p=[0.35, 0.65]))
    params = {
        "center": centre,
        "radius": radius,
        "lobe_k": k,
        "lobe_phase": ph,
        "lobe_amp": float(rng.uniform(0.05, 0.2)),
        "stretch": stretch,
        "oedema_mm": oedema,
        "oedema_hu": anatomy.tissue.white - float(rng.uniform(5.0, 12.0)),
    }
    bound = radius * 1.35 * float(stretch.max()) + oedema + 3.0
    return Lesion(
        "CPH",
        LesionKind.INTRAPARENCHYMAL,
        blood,
        (tuple(centre), bound),
        params,
        float(np.sign(centre[0])),
    )


def _plan_intraventricular(
    rng: np.random.Generator, anatomy: Anatomy, planes: SlicePlanes, volume_ml: float
) -> Lesion:
    lo, hi = np.array([-45.0, -45.0, -50.0]), np.array([45.0, 65.0, 35.0])
    pts = lo + rng.random((VENTRICLE_SAMPLES, 3)) * (hi - lo)
    _, fields = _probe(anatomy, pts, planes)
    voxel_ml = float(np.prod(hi - lo)) / VENTRICLE_SAMPLES / 1000.0
    g = planes.gravity
    height = pts @ g
    pattern = str(rng.choice(["both_horns", "one_horn", "cast"], p=[0.5, 0.3, 0.2]))
    laterals = (
        [LATERAL_LEFT, LATERAL_RIGHT]
        if pattern != "one_horn"
        else [int(rng.choice([LATERAL_LEFT, LATERAL_RIGHT]))]
    )
    levels: dict[int, float] = {}
    if pattern == "cast":
        for vid in (THIRD, FOURTH):
            if rng.random() < 0.7:
                levels[vid] = -1e3
    inside = fields.ventricle[laterals].sum(axis=0) > 0.5
    lateral_ml = float(inside.sum()) * voxel_ml
    cast_ml = sum(float((fields.ventricle[v] > 0.5).sum()) * voxel_ml for v in levels)
    want = max(volume_ml - cast_ml, 0.3)
    frac = float(np.clip(want / max(lateral_ml, 1e-3), 0.04, 0.7))
    h = height[inside]
    level = float(np.quantile(h, 1.0 - frac)) if h.size else 0.0
    for vid in laterals:
        levels[vid] = level
    blood = _blood(rng)
    centre = np.array([0.0, 10.0, -5.0])
    return Lesion(
        "IVH",
        LesionKind.INTRAVENTRICULAR,
        blood,
        (tuple(centre), 75.0),
        {"gravity": g, "levels": levels},
    )


def _plan_subarachnoid(
    rng: np.random.Generator, anatomy: Anatomy, planes: SlicePlanes, volume_ml: float
) -> tuple[Lesion, float]:
    pattern = str(
        rng.choice(["basal", "sylvian", "convexity", "interhemispheric"], p=[0.3, 0.25, 0.3, 0.15])
    )
    side = float(rng.choice([-1.0, 1.0]))
    size = float(np.clip(volume_ml / 8.0, 0.35, 1.6)) ** (1.0 / 3.0)
    if pattern == "basal":
        centre, semi = np.array([0.0, -2.0, -22.0]), np.array([30.0, 26.0, 14.0]) * size
    elif pattern == "sylvian":
        centre, semi = np.array([side * 40.0, -8.0, -4.0]), np.array([18.0, 24.0, 14.0]) * size
    elif pattern == "interhemispheric":
        centre, semi = (
            np.array([0.0, rng.uniform(-40.0, 30.0), rng.uniform(10.0, 40.0)]),
            np.array([8.0, 30.0, 20.0]) * size,
        )
    else:
        u = _unit(np.array([side, rng.uniform(-0.8, 0.8), rng.uniform(0.0, 1.0)]))
        r_in = float(inner_radius(anatomy.skull, u[:1], u[1:2], u[2:])[0])
        centre, semi = CRANIAL_CENTRE + u * (r_in - 8.0), np.array([22.0, 22.0, 22.0]) * size
    centre = planes.snap(centre)
    blood = _blood(rng)
    widen = float(rng.uniform(1.0, 2.5))
    lesion = Lesion(
        "SAH",
        LesionKind.SUBARACHNOID,
        blood,
        (tuple(centre), float(semi.max()) + 3.0),
        {"center": centre, "semi": semi, "fill": float(rng.uniform(0.9, 1.0))},
        side,
    )
    return lesion, widen


def _subtype_volumes(
    rng: np.random.Generator, subtypes: Sequence[str], total_range: tuple[float, float]
) -> list[float]:
    """Split a log-uniform total volume among the lesions, within each subtype's range."""
    lo, hi = (math.log(v) for v in total_range)
    total = math.exp(rng.uniform(lo, hi))
    share = rng.dirichlet(np.ones(len(subtypes)) * 1.5)
    volumes = []
    for s, f in zip(subtypes, share, strict=True):
        vmin, vmax = LESION_VOLUME_ML[s]
        volumes.append(float(np.clip(total * f, vmin, vmax)))
    return volumes


def plan_hemorrhages(
    rng: np.random.Generator,
    anatomy: Anatomy,
    planes: SlicePlanes,
    subtypes: Sequence[str],
    volume_ml: tuple[float, float],
    scale: float = 1.0,
) -> HemorrhagePlan:
    """Place one lesion per requested subtype (sometimes two: bilateral SDH, multiple contusions).

    Parameters
    ----------
    subtypes:
        Subtypes that must be present (SUBTYPES names); empty for a negative case.
    volume_ml:
        Range of the total volume (log-uniform).
    scale:
        Volume multiplier (a retry enlarges lesions that ended up invisible).
    """
    kinds = list(subtypes)
    for s in subtypes:
        if s in ("SDH", "CPH") and rng.random() < 0.15:
            kinds.append(s)
    if not kinds:
        return HemorrhagePlan()
    volumes = [v * scale for v in _subtype_volumes(rng, kinds, volume_ml)]
    lesions: list[Lesion] = []
    regions: list[tuple[np.ndarray, np.ndarray, float]] = []
    for s, v in zip(kinds, volumes, strict=True):
        if s == "EDH":
            lesions.append(_plan_epidural(rng, anatomy, planes, v))
        elif s == "SDH":
            lesions.append(_plan_subdural(rng, anatomy, planes, v))
        elif s == "CPH":
            lesions.append(_plan_intraparenchymal(rng, anatomy, planes, v))
        elif s == "IVH":
            lesions.append(_plan_intraventricular(rng, anatomy, planes, v))
        elif s == "SAH":
            lesion, widen = _plan_subarachnoid(rng, anatomy, planes, v)
            lesions.append(lesion)
            regions.append(
                (np.asarray(lesion.params["center"]), np.asarray(lesion.params["semi"]), widen)
            )
        else:
            raise ValueError(f"unknown hemorrhage subtype {s!r}; expected one of {SUBTYPES}")
    push = 0.0
    for lesion, v in zip(lesions, volumes, strict=True):
        if lesion.kind in (LesionKind.EPIDURAL, LesionKind.SUBDURAL_CONVEXITY) or (
            lesion.kind == LesionKind.INTRAPARENCHYMAL
            and float(np.asarray(lesion.params["center"])[2]) > -20.0
        ):
            push -= lesion.side * max(v - SHIFT_FREE_ML, 0.0) * SHIFT_PER_ML
    shift = float(np.clip(push, -SHIFT_MAX_MM, SHIFT_MAX_MM))
    # Extra-axial lesions go first so a clot painted later (CPH, IVH) stays visible.
    order = {
        LesionKind.EPIDURAL: 0,
        LesionKind.SUBDURAL_CONVEXITY: 1,
        LesionKind.SUBDURAL_FALX: 1,
        LesionKind.SUBDURAL_TENTORIUM: 1,
        LesionKind.SUBARACHNOID: 2,
        LesionKind.INTRAPARENCHYMAL: 3,
        LesionKind.INTRAVENTRICULAR: 4,
    }
    lesions.sort(key=lambda lesion: order[lesion.kind])
    logger.debug(
        "planned %d lesions (%s), shift %.1f mm",
        len(lesions),
        ", ".join(lesion.kind.value for lesion in lesions),
        shift,
    )
    return HemorrhagePlan(lesions=tuple(lesions), shift_mm=shift, sah_regions=tuple(regions))
