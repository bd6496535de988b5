"""Intracranial contents (label 1): parenchyma, CSF spaces, ventricles, dura and venous sinuses.

Grey/white matter follow a gyral pattern (zero crossings of a band-limited random field on a
sphere, so sulci run radially from the surface as real ones do) with a cortical ribbon around
every sulcus; deep grey nuclei, brainstem and cerebellum with folia; the subarachnoid space, the
interhemispheric and Sylvian fissures and basal cisterns; lateral (frontal, body, atrium,
occipital and temporal horns), third and fourth ventricles; falx, tentorium, superior sagittal
and transverse sinuses (dense, non-hemorrhagic: confounders for SDH).

Besides HU the renderer tracks what each voxel is made of (extra-ventricular CSF, ventricular
CSF per ventricle, parenchyma), because that is where each hemorrhage subtype may sit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import numpy as np

from ichnet_core.synthetic.anatomy import (
    Anatomy,
    Brain,
    Cavity,
    falx_x,
    petrous_line_y,
    tentorium_z,
)
from ichnet_core.synthetic.points import Points
from ichnet_core.synthetic.shapes import (
    Subset,
    alpha,
    edge_width,
    ellipsoid,
    paint,
    ramp,
    segment_bound,
    segments,
    tube,
    wave_field,
)

#: Radius (canonical mm) of the sphere the gyral pattern is drawn on.
GYRAL_SPHERE_MM = 70.0
#: How fast (relative to the tangential rate) the gyral pattern changes with depth.
GYRAL_DEPTH_DRIFT = 0.5
#: Spread (mm) of the midline-shift displacement (subfalcine herniation) along y and z, and its
#: centre height; the falx top and the brain surface barely move.
SHIFT_SPREAD_Y_MM = 45.0
SHIFT_SPREAD_Z_MM = 28.0
SHIFT_SPREAD_X_MM = 55.0
#: Half-axes (y, z) and centre z of the region around the corpus callosum / diencephalon where
#: the hemispheres are joined (no interhemispheric fissure, no falx).
CALLOSAL_REGION = (44.0, 30.0, -6.0)
#: Amplitude (HU) of slow density variation within the parenchyma.
PARENCHYMA_TEXTURE_HU = 1.5

#: Angle (degrees) between the Sylvian fissure and the coronal plane in axial slices.
SYLVIAN_ANGLE_DEG = 30.0
#: Ventricle identifiers used for IVH placement.
LATERAL_LEFT, LATERAL_RIGHT, THIRD, FOURTH = 0, 1, 2, 3
VENTRICLE_NAMES = ("lateral_left", "lateral_right", "third", "fourth")


def shift_bump(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Relative midline-shift displacement at a point (1 at the septum, 0 near the skull)."""
    return np.exp(
        -((x / SHIFT_SPREAD_X_MM) ** 2) / 2.0
        - ((y / SHIFT_SPREAD_Y_MM) ** 2) / 2.0
        - ((z / SHIFT_SPREAD_Z_MM) ** 2) / 2.0
    ).astype(np.float32, copy=False)


@dataclass
class ShiftedPoints:
    """Points seen in brain coordinates: ``x`` moved back by the midline shift.

    A structure placed at canonical x0 in brain coordinates appears at about
    ``x0 + shift * bump`` in the image: deep structures (septum, third ventricle, lower falx)
    move away from a mass while the brain surface stays against the skull.
    """

    inner: Points
    shift_mm: float

    @cached_property
    def X(self) -> np.ndarray:
        x = self.inner.X
        return (x - np.float32(self.shift_mm) * shift_bump(x, self.inner.Y, self.inner.Z)).astype(
            np.float32, copy=False
        )

    @property
    def Y(self) -> np.ndarray:
        return self.inner.Y

    @property
    def Z(self) -> np.ndarray:
        return self.inner.Z

    @property
    def normal(self) -> np.ndarray:
        return self.inner.normal

    @property
    def pixel_mm(self) -> float:
        return self.inner.pixel_mm

    @property
    def thickness_mm(self) -> float:
        return self.inner.thickness_mm

    @property
    def shape(self) -> tuple[int, ...]:
        return self.inner.shape

    def crop(self, center: np.ndarray, radius: float) -> ShiftedPoints | None:
        c = np.asarray(center, dtype=np.float64).copy()
        c[0] += self.shift_mm * float(shift_bump(np.array(c[0]), np.array(c[1]), np.array(c[2])))
        inner = self.inner.crop(c, radius + abs(self.shift_mm) * 0.5 + 1.0)
        return None if inner is None else ShiftedPoints(inner, self.shift_mm)

    def index_in(self, parent: Points) -> tuple[slice, ...]:
        base = parent.inner if isinstance(parent, ShiftedPoints) else parent
        return self.inner.index_in(base)


@dataclass
class BrainFields:
    """The rendered intracranial contents at a set of points.

    Attributes
    ----------
    hu:
        Density of the intracranial contents (composited over bone by the cavity fraction).
    csf:
        Fraction of extra-ventricular CSF (subarachnoid space, sulci, fissures, cisterns).
    ventricle:
        ``(4, ...)`` fraction of ventricular CSF per ventricle (:data:`VENTRICLE_NAMES`).
    parenchyma:
        Fraction of brain tissue (neither CSF nor dura).
    midline:
        Signed distance from the falx in brain coordinates (positive = patient left).
    surface_depth:
        Distance below the brain surface (inner table minus subarachnoid space).
    supratentorial:
        Fraction above the tentorium / in front of the petrous ridges.
    """

    hu: np.ndarray
    csf: np.ndarray
    ventricle: np.ndarray
    parenchyma: np.ndarray
    midline: np.ndarray
    surface_depth: np.ndarray
    supratentorial: np.ndarray

    def take(self, idx: tuple[slice, ...]) -> BrainFields:
        """Views of the same fields on a crop (writes to ``hu`` reach the parent)."""
        return BrainFields(
            hu=self.hu[idx],
            csf=self.csf[idx],
            ventricle=self.ventricle[(slice(None), *idx)],
            parenchyma=self.parenchyma[idx],
            midline=self.midline[idx],
            surface_depth=self.surface_depth[idx],
            supratentorial=self.supratentorial[idx],
        )


class Compartment(Enum):
    """What a painted structure is made of, for the composition the lesions need."""

    TISSUE = "tissue"
    CSF = "csf"
    VENTRICLE = "ventricle"
    OTHER = "other"  # dura, venous sinus


class _Layers:
    """Paints HU and keeps the composition fractions in step (same painter's algorithm)."""

    def __init__(self, pts: Points, hu: np.ndarray) -> None:
        self.pts = pts
        self.hu = hu
        self.csf = np.zeros(pts.shape, dtype=np.float32)
        self.ventricle = np.zeros((4, *pts.shape), dtype=np.float32)
        self.other = np.zeros(pts.shape, dtype=np.float32)  # dura, sinuses, calcium

    def _views(self, crop: Points) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        idx = crop.index_in(self.pts)
        return self.hu[idx], self.csf[idx], self.ventricle[(slice(None), *idx)], self.other[idx]

    def put(
        self,
        crop: Points,
        a: np.ndarray,
        value: float | np.ndarray,
        kind: Compartment,
        ventricle: int = -1,
    ) -> None:
        """Paint ``value`` with coverage ``a`` on ``crop`` as compartment ``kind``."""
        hu, csf, vent, other = self._views(crop)
        paint(hu, a, value)
        paint(csf, a, 1.0 if kind == Compartment.CSF else 0.0)
        paint(other, a, 1.0 if kind == Compartment.OTHER else 0.0)
        for v in range(4):
            paint(vent[v], a, 1.0 if (kind == Compartment.VENTRICLE and v == ventricle) else 0.0)

    def ellipsoid(
        self,
        center: tuple[float, ...],
        semi: tuple[float, ...],
        value: float,
        kind: Compartment,
        ventricle: int = -1,
    ) -> None:
        crop = self.pts.crop(np.asarray(center), float(max(semi)) + 2.0)
        if crop is not None:
            d, nz = ellipsoid(crop, center, semi)
            self.put(crop, alpha(crop, d, nz), value, kind, ventricle)

    def tube(
        self,
        nodes: np.ndarray,
        radii: np.ndarray,
        value: float,
        kind: Compartment,
        ventricle: int = -1,
        scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        # Segment by segment, each in its own (small) crop; painting the same value twice over
        # a joint only sharpens its partial-volume ramp slightly.
        for seg, seg_r in segments(nodes, radii):
            center, radius = segment_bound(seg, seg_r, scale)
            crop = self.pts.crop(center, radius)
            if crop is not None:
                d, nz = tube(crop, seg, seg_r, scale)
                self.put(crop, alpha(crop, d, nz), value, kind, ventricle)


def lateral_ventricle_nodes(
    brain: Brain, side: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre lines and radii of one lateral ventricle: frontal horn to occipital horn, and the
    temporal horn from the atrium. ``side`` is +1 for the patient's left."""
    vs = brain.ventricle_scale * (
        brain.ventricle_asymmetry if side > 0 else 1.0 / brain.ventricle_asymmetry
    )
    spread = 1.0 + 0.45 * (brain.ventricle_scale - 1.0)
    main = np.array(
        [
            [6, -36, 9],
            [7.5, -25, 12],
            [9.5, -8, 16],
            [13, 12, 16],
            [22, 28, 10],
            [20, 45, 6],
            [15, 56, 5],
        ],
        dtype=np.float64,
    )
    main_r = np.array([2.5, 4.8, 4.0, 4.0, 6.5, 3.5, 1.2]) * vs
    temporal = np.array(
        [[24, 28, 11], [31, 20, -4], [33, 4, -17], [30, -10, -22]], dtype=np.float64
    )
    temporal_r = np.array([5.5, 3.0, 2.2, 1.2]) * vs**0.8
    for nodes in (main, temporal):
        nodes[:, 0] *= side * spread
    return main, main_r, temporal, temporal_r


def _ventricles(layers: _Layers, brain: Brain, csf: float) -> None:
    """Lateral, third and fourth ventricles and the aqueduct."""
    for side, vid in ((1.0, LATERAL_LEFT), (-1.0, LATERAL_RIGHT)):
        main, main_r, temporal, temporal_r = lateral_ventricle_nodes(brain, side)
        layers.tube(main, main_r, csf, Compartment.VENTRICLE, vid, scale=(1.0, 1.0, 1.35))
        layers.tube(temporal, temporal_r, csf, Compartment.VENTRICLE, vid)
    x0 = brain.falx_coeffs[0]
    layers.ellipsoid(
        (x0, -2.0, -6.0), (brain.third_ventricle_mm, 13.0, 11.0), csf, Compartment.VENTRICLE, THIRD
    )
    layers.tube(
        np.array([[x0, 14.0, -14.0], [x0, 26.0, -28.0]]),
        np.array([1.3, 1.3]),
        csf,
        Compartment.VENTRICLE,
        THIRD,
    )
    vs = brain.ventricle_scale**0.5
    layers.ellipsoid(
        (x0, 33.0, -38.0), (8.0 * vs, 4.5 * vs, 8.0), csf, Compartment.VENTRICLE, FOURTH
    )


def _deep_grey(layers: _Layers, brain: Brain, grey: float) -> None:
    """Caudate heads, lentiform nuclei and thalami."""
    for side in (-1.0, 1.0):
        layers.ellipsoid((side * 18.0, -20.0, 10.0), (4.5, 9.0, 8.0), grey, Compartment.TISSUE)
        layers.ellipsoid((side * 24.0, -4.0, 0.0), (6.0, 14.0, 9.0), grey, Compartment.TISSUE)
        layers.ellipsoid((side * 10.0, 12.0, 2.0), (8.0, 13.0, 9.0), grey, Compartment.TISSUE)


def _cisterns_and_brainstem(layers: _Layers, brain: Brain, csf: float, stem: float) -> None:
    """Basal cisterns, then the brainstem inside them, then the cisterna magna."""
    cs = brain.cistern_scale
    for center, semi in (
        ((0.0, -12.0, -22.0), (15.0, 10.0, 5.0)),  # suprasellar
        ((0.0, 11.0, -15.0), (18.0, 16.0, 8.5)),  # perimesencephalic / ambient
        ((0.0, 27.0, -6.0), (9.0, 6.0, 5.0)),  # quadrigeminal plate
        ((0.0, 6.0, -34.0), (15.0, 8.0, 12.0)),  # prepontine
        ((-22.0, 14.0, -40.0), (7.0, 7.0, 6.0)),  # cerebellopontine angles
        ((22.0, 14.0, -40.0), (7.0, 7.0, 6.0)),
        ((0.0, 14.0, -56.0), (12.0, 10.0, 12.0)),  # premedullary
    ):
        layers.ellipsoid(center, tuple(s * cs for s in semi), csf, Compartment.CSF)
    for side in (-1.0, 1.0):  # Sylvian fissure stems to the suprasellar cistern
        layers.tube(
            np.array([[side * 12.0, -11.0, -21.0], [side * 34.0, -7.0, -11.0]]),
            np.array([2.5, 2.5]) * cs,
            csf,
            Compartment.CSF,
        )
    layers.ellipsoid((0.0, 11.0, -15.0), (12.5, 11.0, 11.0), stem, Compartment.TISSUE)  # midbrain
    layers.ellipsoid((0.0, 17.0, -34.0), (16.0, 13.0, 12.0), stem, Compartment.TISSUE)  # pons
    layers.ellipsoid((0.0, 22.0, -56.0), (10.0, 10.0, 13.0), stem, Compartment.TISSUE)  # medulla
    layers.ellipsoid((0.0, 2.0, -17.0), (3.5, 5.0, 5.0), csf, Compartment.CSF)  # interpeduncular
    cm = brain.cisterna_magna_scale
    layers.ellipsoid((0.0, 60.0, -58.0), (14.0 * cm, 11.0 * cm, 9.0 * cm), csf, Compartment.CSF)


def _sylvian(
    layers: _Layers, pts: Points, brain: Brain, grey: float, csf: float, supra: np.ndarray
) -> None:
    """Insular cortex, insular cistern and the Sylvian fissures.

    The fissure is a wavy sheet rising backwards; in axial slices it runs from the lateral
    surface obliquely backwards and inwards to the insula.
    """
    for side in (-1.0, 1.0):
        crop = pts.crop(np.array([side * 48.0, -8.0, -2.0]), 36.0)
        if crop is None:
            continue
        idx = crop.index_in(pts)
        sup = supra[idx]
        x, y, z = crop.X, crop.Y, crop.Z
        extent = (
            ramp(14.0 - y, 4.0)
            * ramp(y + 26.0, 4.0)
            * ramp(13.0 - z, 4.0)
            * ramp(z + 16.0, 4.0)
            * sup
        )
        insula_x = side * (37.0 - 0.01 * (y + 5.0) ** 2)
        d_ins = 3.6 - np.abs(x - insula_x)
        layers.put(crop, alpha(crop, d_ins, 1.0) * extent, grey, Compartment.TISSUE)
        w_ins = 0.35 * brain.sylvian_mm
        layers.put(
            crop,
            alpha(crop, w_ins - np.abs(x - insula_x + side * 2.5), 1.0) * extent,
            csf,
            Compartment.CSF,
        )
        ang = np.deg2rad(-side * SYLVIAN_ANGLE_DEG)
        nx, ny, nz_ = 0.42 * np.sin(ang), -0.42 * np.cos(ang), 0.91
        dn = (
            (x - side * 45.0) * nx
            + (y + 8.0) * ny
            + (z + 4.0) * nz_
            + 1.8 * np.sin(0.22 * x + 0.3 * y)
        )
        width = 0.5 * brain.sylvian_mm * (1.0 + 0.4 * np.sin(0.19 * y - 0.1 * x))
        reach = ramp(side * x - 33.0, 3.0) * ramp(18.0 - y, 5.0) * ramp(y + 36.0, 5.0) * sup
        layers.put(crop, alpha(crop, width - np.abs(dn), 0.6) * reach, csf, Compartment.CSF)


def render_brain(
    pts: Points,
    anatomy: Anatomy,
    cav: Cavity,
    shift_mm: float = 0.0,
    widen: Sequence[tuple[np.ndarray, np.ndarray, float]] = (),
) -> BrainFields:
    """Render the intracranial contents at ``pts`` (HU and composition).

    Parameters
    ----------
    pts:
        Where to render (a box of slice pixels around the cavity, or loose points).
    cav:
        The cavity at ``pts``.
    shift_mm:
        Midline shift (positive = towards the patient's left) from a mass lesion.
    widen:
        Regions (centre, semi-axes, extra width in mm) where subarachnoid blood distends the
        sulci.
    """
    tissue, brain = anatomy.tissue, anatomy.brain
    bp: Points = ShiftedPoints(pts, shift_mm) if shift_mm else pts
    x, y, z = bp.X, bp.Y, bp.Z

    tex = wave_field(x, y, z, brain.parenchyma_k, brain.parenchyma_phase)
    hu = (tissue.white + PARENCHYMA_TEXTURE_HU * tex).astype(np.float32)
    layers = _Layers(bp, hu)

    # Compartments.
    ax_abs = np.abs(x)
    z_tent = tentorium_z(brain, x, y)
    behind_petrous = ramp(y - petrous_line_y(anatomy.skull, ax_abs) - 2.0, 3.0)
    infra = ramp(z_tent - z, 1.5) * behind_petrous
    supra = 1.0 - infra
    mid = x - falx_x(brain, y, z)
    cy, cz_, c0 = CALLOSAL_REGION
    callosal = np.sqrt((y / cy) ** 2 + ((z - c0) / cz_) ** 2)
    fissure = ramp(callosal - 1.0, 0.12) * supra

    # Surface depth: below the subarachnoid space, the interhemispheric fissure, the tentorium.
    half_ih = 0.6 + 0.5 * brain.sas_mm
    depth_conv = cav.depth - brain.sas_mm
    depth_mid = np.where(fissure > 0.5, np.abs(mid) - half_ih, np.float32(1e3))
    tentorium = ramp(ax_abs - 14.0, 3.0) * ramp(y - petrous_line_y(anatomy.skull, ax_abs), 3.0)
    tentorium = np.maximum(tentorium, ramp(y - 32.0, 3.0)) * behind_petrous
    tent_gap = np.abs(z - z_tent) - (0.5 + 0.5 * brain.sas_mm)
    depth_tent = np.where(tentorium > 0.5, tent_gap, np.float32(1e3))
    surface = np.minimum(np.minimum(depth_conv, depth_mid), depth_tent)

    # Cerebellum with folia.
    paint(hu, infra, tissue.cerebellum)
    band = Subset((infra > 0) & (surface < 14.0))
    if band.size:
        folia = wave_field(band.get(x), band.get(y), band.get(z), brain.folia_k, brain.folia_phase)
        k_f = float(np.mean(np.linalg.norm(brain.folia_k, axis=1)))
        width = 0.5 * (0.5 + 0.8 * brain.atrophy) * k_f
        a = ramp((width - np.abs(folia)) / k_f, 1.2) * band.get(infra)
        a *= ramp(14.0 - band.get(surface), 4.0)
        a *= np.float32(0.35)  # folia are finer than a pixel: only partly resolved
        band.add(hu, a * (tissue.csf - band.get(hu)))
        band.add(layers.csf, a * (1.0 - band.get(layers.csf)))

    _deep_grey(layers, brain, tissue.deep_grey)

    # Cerebral cortex around the sulci, the sulci, the subarachnoid space.
    k_g = float(np.mean(np.linalg.norm(brain.gyral_k, axis=1)))
    reach = brain.sulcus_depth_mm + brain.cortex_mm + 2.0
    band = Subset((surface < reach) & (supra > 0))
    if band.size:
        rad = cav.radial
        # On a sphere the sulci would be cones through the centre (straight spokes); letting the
        # field drift at a fraction of its tangential rate with depth makes them bend and branch.
        radius = GYRAL_SPHERE_MM + GYRAL_DEPTH_DRIFT * (band.get(rad.r) - GYRAL_SPHERE_MM)
        g = np.abs(
            wave_field(
                band.get(rad.ux) * radius,
                band.get(rad.uy) * radius,
                band.get(rad.uz) * radius,
                brain.gyral_k,
                brain.gyral_phase,
            )
        )
        s = np.maximum(band.get(surface), 0.0)
        sup = band.get(supra)
        taper = np.sqrt(np.clip(1.0 - s / brain.sulcus_depth_mm, 0.0, 1.0))
        w = float(edge_width(pts, 0.6))
        d_cortex = np.maximum(
            (0.5 * brain.sulcus_width_mm + brain.cortex_mm) - g / k_g, brain.cortex_mm - s
        )
        a_cortex = ramp(d_cortex, w) * ramp(brain.sulcus_depth_mm + brain.cortex_mm - s, 2.0) * sup
        band_hu = band.get(hu)
        band_hu += a_cortex * (tissue.grey - band_hu)
        sulcus_width = np.full(g.shape, brain.sulcus_width_mm, dtype=np.float32)
        if widen:
            bx, by, bz = band.get(x), band.get(y), band.get(z)
            for centre, semi, extra in widen:
                cx, cy, cz = (float(v) for v in centre)
                ax, ay, az = (float(v) for v in semi)
                q = ((bx - cx) / ax) ** 2 + ((by - cy) / ay) ** 2 + ((bz - cz) / az) ** 2
                sulcus_width += np.float32(extra) * np.clip((1.0 - np.sqrt(q)) * 4.0, 0.0, 1.0)
        d_sulcus = 0.5 * sulcus_width * taper - g / k_g
        a_sulcus = ramp(d_sulcus, w) * sup * (taper > 0)
        band_hu += a_sulcus * (tissue.csf - band_hu)
        band.put(hu, band_hu)
        band.add(layers.csf, a_sulcus * (1.0 - band.get(layers.csf)))
    a_sas = alpha(pts, -surface, 0.7)
    paint(hu, a_sas, tissue.csf)
    paint(layers.csf, a_sas, 1.0)

    _sylvian(layers, bp, brain, tissue.grey, tissue.csf, supra)
    stem = tissue.white + 3.0
    _cisterns_and_brainstem(layers, brain, tissue.csf, stem)
    _ventricles(layers, brain, tissue.csf)

    # Dura: falx, tentorium; venous sinuses.
    falx_region = ramp(callosal - 1.12, 0.1) * supra
    a = alpha(pts, 0.55 - np.abs(mid), 1.0) * falx_region
    layers.put(bp, a, tissue.dura, Compartment.OTHER)
    a = alpha(pts, 0.55 - np.abs(z - z_tent), 0.9) * tentorium
    layers.put(bp, a, tissue.dura, Compartment.OTHER)
    sss = ramp(7.0 - cav.depth, 1.0) * ramp((7.0 - cav.depth) * 0.55 - np.abs(mid), 1.0)
    sss *= ramp(y + 70.0, 8.0) * fissure
    layers.put(bp, sss, tissue.venous_sinus, Compartment.OTHER)
    transverse = (
        ramp(6.5 - cav.depth, 1.0) * ramp(4.0 - np.abs(z - z_tent - 1.0), 1.0) * ramp(y - 30.0, 6.0)
    )
    layers.put(bp, transverse, tissue.venous_sinus, Compartment.OTHER)

    parenchyma = np.clip(1.0 - layers.csf - layers.ventricle.sum(axis=0) - layers.other, 0.0, 1.0)
    return BrainFields(
        hu=hu,
        csf=layers.csf,
        ventricle=layers.ventricle,
        parenchyma=parenchyma,
        midline=mid,
        surface_depth=surface,
        supratentorial=supra,
    )
