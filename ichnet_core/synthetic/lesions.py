"""Acute hemorrhages as shapes: one typed parameter set per shape kind, and how they are painted.

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
restricted to its compartment by the composition the brain renderer tracks. Each shape kind is a
frozen dataclass that knows its :class:`LesionKind` and computes its own fraction, so a planner
(:mod:`ichnet_core.synthetic.hemorrhage`) cannot hand the painter a parameter the shape does not
have. Scalars are stored as Python floats: numpy float64 scalars would promote the float32
fields they multiply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Final

import numpy as np

from ichnet_core.labels import SUBTYPES
from ichnet_core.synthetic.anatomy import Anatomy, Cavity, tentorium_z
from ichnet_core.synthetic.brain import BrainFields, ShiftedPoints
from ichnet_core.synthetic.points import Points
from ichnet_core.synthetic.shapes import alpha, edge_width, paint, ramp, wave_field

#: Acute-blood HU never leaves this range before noise (the requirement's "about 50-90").
BLOOD_HU_LIMITS: Final[tuple[float, float]] = (48.0, 92.0)


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


def _cos_angle(cav: Cavity, direction: np.ndarray) -> np.ndarray:
    rad = cav.radial
    return (
        rad.ux * np.float32(direction[0])
        + rad.uy * np.float32(direction[1])
        + rad.uz * np.float32(direction[2])
    )


@dataclass(frozen=True)
class EpiduralShape:
    """Biconvex lens: thickness ``t * (1 - (theta / Theta)^2)`` inward from the inner table."""

    kind: ClassVar[LesionKind] = LesionKind.EPIDURAL
    #: Unit vector from the cranial centre to the lens's thickest point.
    direction: np.ndarray
    #: Angle (rad) from ``direction`` to the lens's rim.
    half_angle: float
    thickness: float

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        q = 2.0 * (1.0 - _cos_angle(cav, self.direction)) / (self.half_angle * self.half_angle)
        profile = self.thickness * (1.0 - q)
        return alpha(pts, profile - cav.depth, cav.nz)


@dataclass(frozen=True)
class ConvexitySubduralShape:
    """Crescent with a flat plateau over one hemisphere, not crossing the falx."""

    kind: ClassVar[LesionKind] = LesionKind.SUBDURAL_CONVEXITY
    direction: np.ndarray
    half_angle: float
    thickness: float
    #: Flatness of the plateau (higher = flatter, steeper edges).
    power: float
    #: -1 right, +1 left (the side of the falx it stays on).
    side: float

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        half = self.half_angle
        q = np.clip(2.0 * (1.0 - _cos_angle(cav, self.direction)) / (half * half), 0.0, 4.0)
        profile = self.thickness * (1.0 - q ** (self.power / 2.0))
        return alpha(pts, profile - cav.depth, cav.nz) * ramp(self.side * fields.midline - 1.0, 1.0)


@dataclass(frozen=True)
class FalxSubduralShape:
    """Layer along one side of the falx, thickest in its middle (centre ``yc, zc``)."""

    kind: ClassVar[LesionKind] = LesionKind.SUBDURAL_FALX
    yc: float
    zc: float
    ly: float
    lz: float
    thickness: float
    side: float

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        profile = self.thickness * (
            1.0 - ((pts.Y - self.yc) / self.ly) ** 2 - ((pts.Z - self.zc) / self.lz) ** 2
        )
        off = self.side * fields.midline
        across = abs(float(pts.normal[0]))  # the falx faces +-x
        return alpha(pts, np.minimum(profile - (off - 0.6), off - 0.3), across) * (
            fields.supratentorial > 0.5
        )


@dataclass(frozen=True)
class TentorialSubduralShape:
    """Layer on top of one leaf of the tentorium (centre ``xc, yc``)."""

    kind: ClassVar[LesionKind] = LesionKind.SUBDURAL_TENTORIUM
    xc: float
    yc: float
    lx: float
    ly: float
    thickness: float

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        profile = self.thickness * (
            1.0 - ((pts.X - self.xc) / self.lx) ** 2 - ((pts.Y - self.yc) / self.ly) ** 2
        )
        above = pts.Z - tentorium_z(anatomy.brain, pts.X, pts.Y)
        return alpha(pts, np.minimum(profile - (above - 0.6), above - 0.3), 0.9)


@dataclass(frozen=True)
class IntraparenchymalShape:
    """Lobulated clot confined to the brain (not ventricles, not the subarachnoid space), with
    an optional rim of vasogenic oedema (``oedema_mm`` 0 = none)."""

    kind: ClassVar[LesionKind] = LesionKind.INTRAPARENCHYMAL
    center: np.ndarray
    radius: float
    #: Direction harmonics (wave vectors, phases, relative amplitude) that lobulate the blob.
    lobe_k: np.ndarray
    lobe_phase: np.ndarray
    lobe_amp: float
    #: Semi-axis factors (product 1: the stretch keeps the volume).
    stretch: np.ndarray
    oedema_mm: float
    oedema_hu: float

    def _distance(self, pts: Points) -> np.ndarray:
        """Signed distance to the blob (radius modulated by the direction harmonics)."""
        cx, cy, cz = (float(v) for v in self.center)
        x, y, z = pts.X - cx, pts.Y - cy, pts.Z - cz
        dist = np.sqrt(x * x + y * y + z * z) + np.float32(1e-3)
        sx, sy, sz = (float(v) for v in self.stretch)
        wob = wave_field(x / dist, y / dist, z / dist, self.lobe_k, self.lobe_phase)
        r = self.radius * (1.0 + self.lobe_amp * wob)
        xs, ys, zs = x / sx, y / sy, z / sz
        return r - np.sqrt(xs * xs + ys * ys + zs * zs)

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        a = alpha(pts, self._distance(pts), 0.7)
        a *= 1.0 - fields.ventricle.sum(axis=0)
        a *= ramp(fields.surface_depth + 0.5, 1.0)
        return np.clip(a, 0.0, 1.0)

    def oedema_alpha(self, pts: Points, fields: BrainFields) -> np.ndarray:
        """Rim of vasogenic oedema around the clot (parenchyma only)."""
        return alpha(pts, self._distance(pts) + self.oedema_mm, 0.7) * fields.parenchyma


@dataclass(frozen=True)
class IntraventricularShape:
    """Blood in the dependent part of the chosen ventricles (or all of a cast ventricle)."""

    kind: ClassVar[LesionKind] = LesionKind.INTRAVENTRICULAR
    #: Unit canonical direction in which height increases towards the dependent side.
    gravity: np.ndarray
    #: Ventricle id -> height (mm along ``gravity``) above which it is filled; -1e3 = a cast.
    levels: dict[int, float]

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        g = self.gravity
        gx, gy, gz = (float(v) for v in g)
        height = pts.X * gx + pts.Y * gy + pts.Z * gz
        w = edge_width(pts, abs(float(g @ pts.normal)))
        total = np.zeros(pts.shape, dtype=np.float32)
        for vid, level in self.levels.items():
            total += fields.ventricle[vid] * ramp(height - level, w)
        return np.clip(total, 0.0, 1.0)


@dataclass(frozen=True)
class SubarachnoidShape:
    """Blood replacing CSF in the sulci/cisterns inside an ellipsoidal region, whose sulci it
    distends by ``widen_mm``."""

    kind: ClassVar[LesionKind] = LesionKind.SUBARACHNOID
    center: np.ndarray
    semi: np.ndarray
    #: Fraction of the CSF replaced by blood.
    fill: float
    widen_mm: float

    def alpha(self, pts: Points, cav: Cavity, fields: BrainFields, anatomy: Anatomy) -> np.ndarray:
        cx, cy, cz = (float(v) for v in self.center)
        ax, ay, az = (float(v) for v in self.semi)
        x, y, z = (pts.X - cx) / ax, (pts.Y - cy) / ay, (pts.Z - cz) / az
        region = np.clip((1.0 - np.sqrt(x * x + y * y + z * z)) * 4.0, 0.0, 1.0)
        return fields.csf * region * self.fill


LesionShape = (
    EpiduralShape
    | ConvexitySubduralShape
    | FalxSubduralShape
    | TentorialSubduralShape
    | IntraparenchymalShape
    | IntraventricularShape
    | SubarachnoidShape
)


@dataclass(frozen=True)
class Lesion:
    """One hemorrhage: subtype, density and shape (canonical mm).

    ``bound`` is a sphere (centre, radius) that contains the lesion; it decides the crop.
    ``side`` is -1 (right), +1 (left) or 0; a mass on one side pushes the midline away.
    """

    subtype: str
    blood: Blood
    bound: tuple[tuple[float, float, float], float]
    shape: LesionShape
    side: float = 0.0

    @property
    def kind(self) -> LesionKind:
        return self.shape.kind

    @property
    def attached_to_skull(self) -> bool:
        """EDH and convexity SDH move with the skull, not with a shifted brain."""
        return self.kind in (LesionKind.EPIDURAL, LesionKind.SUBDURAL_CONVEXITY)


@dataclass(frozen=True)
class HemorrhagePlan:
    """All lesions of a case, the midline shift they cause (mm, + = towards patient left) and the
    regions (centre, semi-axes, extra mm) where subarachnoid blood distends the sulci."""

    lesions: tuple[Lesion, ...] = ()
    shift_mm: float = 0.0
    sah_regions: tuple[tuple[np.ndarray, np.ndarray, float], ...] = ()


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
        base = pts if lesion.attached_to_skull else brain_pts
        center, radius = lesion.bound
        crop = base.crop(np.asarray(center), radius)
        if crop is None:
            continue
        work.append((lesion, crop, crop.index_in(pts)))
    for lesion, crop, idx in work:
        shape = lesion.shape
        if isinstance(shape, IntraparenchymalShape) and shape.oedema_mm > 0:
            paint(fields.hu[idx], shape.oedema_alpha(crop, fields.take(idx)), shape.oedema_hu)
    for lesion, crop, idx in work:
        a = lesion.shape.alpha(crop, cav.take(idx), fields.take(idx), anatomy)
        b = lesion.blood
        tex = wave_field(crop.X, crop.Y, crop.Z, b.texture_k, b.texture_phase)
        value = np.clip(b.hu + b.texture_hu * tex, *BLOOD_HU_LIMITS)
        paint(fields.hu[idx], a, value)
        s = SUBTYPES.index(lesion.subtype)
        for j in range(len(SUBTYPES)):
            paint(fractions[j][idx], a, 1.0 if j == s else 0.0)
    return fractions
