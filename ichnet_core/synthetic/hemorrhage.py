"""Planning acute hemorrhages: where each subtype sits, how large it is, how dense it is.

Lesions are planned in 3-D before any image exists: centres are drawn among random points whose
compartment is right, then moved onto the nearest slice centre plane so every requested subtype
is visible. Each subtype has one planner (:data:`_PLANNERS`), which returns a
:class:`~ichnet_core.synthetic.lesions.Lesion` with the typed shape its kind needs; the shapes
and the painting are in :mod:`ichnet_core.synthetic.lesions`.

The planners draw from the case's random stream in a fixed order; changing that order (or any
draw) changes every generated case (``tests/ichnet_core/synthetic/test_generator_fingerprint.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

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
    render_brain,
)
from ichnet_core.synthetic.lesions import (
    Blood,
    ConvexitySubduralShape,
    EpiduralShape,
    FalxSubduralShape,
    HemorrhagePlan,
    IntraparenchymalShape,
    IntraventricularShape,
    Lesion,
    LesionKind,
    SubarachnoidShape,
    TentorialSubduralShape,
)
from ichnet_core.synthetic.points import FlatPoints
from ichnet_core.synthetic.shapes import random_waves

logger = logging.getLogger(__name__)

#: Density of acute blood (HU): clotted blood 60-80, anaemic or hyperacute blood lower.
BLOOD_HU = (55.0, 82.0)
#: Amplitude (HU) of the internal density variation of a clot.
BLOOD_TEXTURE_HU = (2.0, 6.0)
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
#: Thinnest convexity SDH (mm), 1 mm more than :data:`MIN_SUBDURAL_MM`. At 3 mm (before the
#: eleventh session, 2026-12-05) every convexity SDH under about 15 mL was a 3 mm film: three
#: model pixels at 1.0 mm at its thickest, and where the inner-table band (``realism``: about
#: +110 HU at 0-2 mm) is strong, most of it lit to 150-200 HU beside band-lit brain. The trained
#: network found 10 % of the subdural voxels of its own training series (CPH, IVH, EDH, SAH:
#: 78-94 %; docs/results.md, "Thin subdural rims"). Falx and tentorial SDH lie away from the table.
MIN_CONVEXITY_SUBDURAL_MM = 4.0
#: Probability of a convexity, falx (interhemispheric) or tentorial SDH.
SUBDURAL_KIND_P = (0.75, 0.15, 0.1)
#: Number of random candidate points when placing a lesion.
CANDIDATES = 600
#: Random points used to measure ventricle volumes for IVH.
VENTRICLE_SAMPLES = 6000
#: Painting order: extra-axial lesions first, so a clot painted later (CPH, IVH) stays visible.
PAINT_ORDER: Final[dict[LesionKind, int]] = {
    LesionKind.EPIDURAL: 0,
    LesionKind.SUBDURAL_CONVEXITY: 1,
    LesionKind.SUBDURAL_FALX: 1,
    LesionKind.SUBDURAL_TENTORIUM: 1,
    LesionKind.SUBARACHNOID: 2,
    LesionKind.INTRAPARENCHYMAL: 3,
    LesionKind.INTRAVENTRICULAR: 4,
}


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
        blood=blood,
        bound=(tuple(centre), r_in * half_angle * 1.2 + thickness + 4.0),
        shape=EpiduralShape(direction=u, half_angle=half_angle, thickness=thickness),
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
        falx = FalxSubduralShape(
            yc=float(yc_zc[1]),
            zc=float(yc_zc[2]),
            ly=float(ly),
            lz=float(lz),
            thickness=thickness,
            side=side,
        )
        return Lesion(
            subtype="SDH",
            blood=blood,
            bound=((0.0, float(yc_zc[1]), float(yc_zc[2])), max(ly, lz) + 10.0),
            shape=falx,
            side=side,
        )
    if kind == LesionKind.SUBDURAL_TENTORIUM:
        xc, yc = side * rng.uniform(18.0, 34.0), rng.uniform(32.0, 58.0)
        zc = float(tentorium_z(anatomy.brain, np.array(xc), np.array(yc)))
        p = planes.snap(np.array([xc, yc, zc + 1.0]))
        lx, ly = rng.uniform(12.0, 22.0), rng.uniform(12.0, 25.0)
        thickness = float(
            np.clip(volume_ml * 1000.0 / (math.pi * lx * ly * 0.5), MIN_SUBDURAL_MM, 6.0)
        )
        tentorial = TentorialSubduralShape(
            xc=float(xc), yc=float(yc), lx=float(lx), ly=float(ly), thickness=thickness
        )
        return Lesion(
            subtype="SDH",
            blood=blood,
            bound=((xc, yc, float(p[2])), max(lx, ly) + 12.0),
            shape=tentorial,
            side=side,
        )
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
    if thickness < MIN_CONVEXITY_SUBDURAL_MM:
        # small SDH: a short crescent rather than a film over a hemisphere
        thickness = MIN_CONVEXITY_SUBDURAL_MM
        half_angle = max(math.sqrt(volume_ml * 1000.0 / (shape * thickness)), 0.25)
    thickness = float(min(thickness, 25.0))
    centre = CRANIAL_CENTRE + u * r_in
    return Lesion(
        subtype="SDH",
        blood=blood,
        bound=(tuple(centre), r_in * min(half_angle * 1.6, 2.0) + thickness + 4.0),
        shape=ConvexitySubduralShape(
            direction=u, half_angle=half_angle, thickness=thickness, power=power, side=side
        ),
        side=side,
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
    shape = IntraparenchymalShape(
        center=centre,
        radius=radius,
        lobe_k=k,
        lobe_phase=ph,
        lobe_amp=float(rng.uniform(0.05, 0.2)),
        stretch=stretch,
        oedema_mm=oedema,
        oedema_hu=float(anatomy.tissue.white - float(rng.uniform(5.0, 12.0))),
    )
    bound = radius * 1.35 * float(stretch.max()) + oedema + 3.0
    return Lesion(
        subtype="CPH",
        blood=blood,
        bound=(tuple(centre), bound),
        shape=shape,
        side=float(np.sign(centre[0])),
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
        subtype="IVH",
        blood=blood,
        bound=(tuple(centre), 75.0),
        shape=IntraventricularShape(gravity=g, levels=levels),
    )


def _plan_subarachnoid(
    rng: np.random.Generator, anatomy: Anatomy, planes: SlicePlanes, volume_ml: float
) -> Lesion:
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
    return Lesion(
        subtype="SAH",
        blood=blood,
        bound=(tuple(centre), float(semi.max()) + 3.0),
        shape=SubarachnoidShape(
            center=centre, semi=semi, fill=float(rng.uniform(0.9, 1.0)), widen_mm=widen
        ),
        side=side,
    )


Planner = Callable[[np.random.Generator, Anatomy, "SlicePlanes", float], Lesion]
#: The planner of each subtype.
_PLANNERS: Final[dict[str, Planner]] = {
    "EDH": _plan_epidural,
    "SDH": _plan_subdural,
    "CPH": _plan_intraparenchymal,
    "IVH": _plan_intraventricular,
    "SAH": _plan_subarachnoid,
}


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
    for s, v in zip(kinds, volumes, strict=True):
        planner = _PLANNERS.get(s)
        if planner is None:
            raise ValueError(f"unknown hemorrhage subtype {s!r}; expected one of {SUBTYPES}")
        lesions.append(planner(rng, anatomy, planes, v))
    regions = [
        (lesion.shape.center, lesion.shape.semi, lesion.shape.widen_mm)
        for lesion in lesions
        if isinstance(lesion.shape, SubarachnoidShape)
    ]
    push = 0.0
    for lesion, v in zip(lesions, volumes, strict=True):
        if lesion.attached_to_skull or (
            isinstance(lesion.shape, IntraparenchymalShape)
            and float(lesion.shape.center[2]) > -20.0
        ):
            push -= lesion.side * max(v - SHIFT_FREE_ML, 0.0) * SHIFT_PER_ML
    shift = float(np.clip(push, -SHIFT_MAX_MM, SHIFT_MAX_MM))
    lesions.sort(key=lambda lesion: PAINT_ORDER[lesion.kind])
    logger.debug(
        "planned %d lesions (%s), shift %.1f mm",
        len(lesions),
        ", ".join(lesion.kind.value for lesion in lesions),
        shift,
    )
    return HemorrhagePlan(lesions=tuple(lesions), shift_mm=shift, sah_regions=tuple(regions))
