"""Random anatomy of one synthetic head: densities, skull shape and brain shape parameters.

All positions are in the canonical head frame of :mod:`ichnet_core.synthetic.points` (mm of an
average adult: x = patient left, y = posterior, z = superior, origin near the foramen of Monro).
Sizes are jittered per case on top of the global size/ellipticity applied by the head pose, so
two cases never share a skull outline, a gyral pattern, ventricle size or tissue contrast.

The cranial cavity (inside the inner table) is a star-shaped dome cut by a skull-base floor with
the anterior, middle and posterior cranial fossae, petrous ridges and the foramen magnum. Its
signed distance is the backbone of the labels (class 1 = inside it) and of every extra-axial
structure and lesion (scalp, skull, subarachnoid space, EDH, SDH).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichnet_core.synthetic.points import Points
from ichnet_core.synthetic.shapes import Subset, random_waves, sigmoid, smooth_min

#: Centre (canonical) from which skull directions and gyral patterns are measured.
CRANIAL_CENTRE = np.array([0.0, 4.0, 0.0])
#: Blend radius (mm) where the dome meets the skull-base floor.
FLOOR_BLEND_MM = 4.0
#: Above this canonical z the floor cannot matter (its highest point is about -14 mm).
FLOOR_TOP_Z_MM = -8.0
#: Floor of the foramen magnum opening (canonical z, mm); below it lies the spinal canal.
FORAMEN_MAGNUM_Z_MM = -78.0
#: Foramen magnum centre (x, y) and radius (mm).
FORAMEN_MAGNUM_XY_MM = (0.0, 20.0)
FORAMEN_MAGNUM_RADIUS_MM = 15.0
#: Rise (mm) of the middle-fossa floor from its deepest point to one bowl radius away.
MIDDLE_FOSSA_BOWL_MM = 10.0
#: Number of plane waves in the gyral and cerebellar folia patterns.
GYRAL_WAVES = 10
FOLIA_WAVES = 6
TEXTURE_WAVES = 6
PARENCHYMA_WAVES = 3


@dataclass(frozen=True)
class TissueHU:
    """Densities of one case (HU). Contrast and calibration differ between scanners and patients,
    so each is drawn from its physiological range instead of being a constant."""

    air: float
    fat: float
    skin: float
    muscle: float
    cortical_bone: float
    diploe: float
    petrous: float
    grey: float
    white: float
    deep_grey: float
    cerebellum: float
    csf: float
    dura: float
    venous_sinus: float
    globe: float
    lens: float
    mucosa: float


def sample_tissue(rng: np.random.Generator) -> TissueHU:
    """Draw the densities of one case (grey/white contrast between 4 and 12 HU)."""
    grey = rng.uniform(34.0, 44.0)
    white = grey - rng.uniform(4.0, 12.0)
    return TissueHU(
        air=rng.uniform(-1005.0, -985.0),
        fat=rng.uniform(-115.0, -70.0),
        skin=rng.uniform(30.0, 60.0),
        muscle=rng.uniform(35.0, 60.0),
        cortical_bone=rng.uniform(1250.0, 1950.0),
        diploe=rng.uniform(300.0, 800.0),
        petrous=rng.uniform(1500.0, 2300.0),
        grey=grey,
        white=white,
        deep_grey=white + rng.uniform(0.4, 0.9) * (grey - white),
        cerebellum=grey - rng.uniform(-1.0, 4.0),
        csf=rng.uniform(0.0, 12.0),
        dura=rng.uniform(45.0, 75.0),
        venous_sinus=rng.uniform(38.0, 58.0),
        globe=rng.uniform(5.0, 22.0),
        lens=rng.uniform(80.0, 125.0),
        mucosa=rng.uniform(20.0, 45.0),
    )


@dataclass(frozen=True)
class Skull:
    """Shape of the inner table, skull and scalp.

    Attributes
    ----------
    semi_axes:
        Inner-table half width (x), half length (y), height above and depth below the origin.
    posterior_widening, squareness:
        Relative widening of the back of the head (egg shape) and how square rather than
        elliptic the horizontal outline is.
    harmonics:
        Coefficients of nine low-order direction polynomials that make the outline asymmetric.
    thickness_mm, thickness_harmonics, temporal_thinning:
        Mean skull thickness, its low-order variation and the relative thinning of the squamous
        temporal bone.
    base_thickening_mm:
        Extra bone under the anterior and middle cranial fossae.
    frontal_sinus_mm, occipital_protuberance_mm:
        Local frontal-bone thickening that holds the frontal sinus (0 = aplastic) and the external
        occipital protuberance.
    inner_table_mm, outer_table_mm:
        Cortical table thicknesses around the diploe.
    scalp_mm, temporalis_mm, scalp_fat_mm, skin_mm:
        Scalp thickness, temporalis muscle bulk, subcutaneous fat and skin.
    anterior_floor_z, middle_floor_z, sella_floor_z, posterior_floor_z:
        Depths (canonical z) of the cranial fossae.
    petrous_ridge_mm, petrous_slope, petrous_offset_mm, sphenoid_ridge_y_mm:
        Height of the petrous ridges, their course (y = offset + slope * |x|) and the position
        of the sphenoid ridges.
    """

    semi_axes: tuple[float, float, float, float]
    posterior_widening: float
    squareness: float
    harmonics: np.ndarray
    thickness_mm: float
    thickness_harmonics: np.ndarray
    temporal_thinning: float
    base_thickening_mm: float
    frontal_sinus_mm: float
    occipital_protuberance_mm: float
    inner_table_mm: float
    outer_table_mm: float
    scalp_mm: float
    temporalis_mm: float
    scalp_fat_mm: float
    skin_mm: float
    anterior_floor_z: float
    middle_floor_z: float
    sella_floor_z: float
    posterior_floor_z: float
    petrous_ridge_mm: float
    petrous_slope: float
    petrous_offset_mm: float
    sphenoid_ridge_y_mm: float
    bone_texture_k: np.ndarray
    bone_texture_phase: np.ndarray


def sample_skull(rng: np.random.Generator) -> Skull:
    """Draw the skull and scalp shape of one case."""
    k, ph = random_waves(rng, TEXTURE_WAVES, (2.5, 6.0))
    return Skull(
        semi_axes=(
            rng.uniform(64.0, 70.0),
            rng.uniform(82.0, 90.0),
            rng.uniform(66.0, 74.0),
            rng.uniform(82.0, 88.0),
        ),
        posterior_widening=rng.uniform(0.0, 0.05),
        squareness=rng.uniform(0.0, 0.8),
        harmonics=rng.normal(0.0, 0.012, size=9),
        thickness_mm=rng.uniform(4.0, 7.0),
        thickness_harmonics=rng.normal(0.0, 0.12, size=4),
        temporal_thinning=rng.uniform(0.3, 0.6),
        base_thickening_mm=rng.uniform(1.0, 4.0),
        frontal_sinus_mm=float(rng.choice([0.0, rng.uniform(4.0, 14.0)], p=[0.15, 0.85])),
        occipital_protuberance_mm=rng.uniform(1.0, 8.0),
        inner_table_mm=rng.uniform(1.0, 2.0),
        outer_table_mm=rng.uniform(1.2, 2.4),
        scalp_mm=rng.uniform(3.5, 7.0),
        temporalis_mm=rng.uniform(3.0, 11.0),
        scalp_fat_mm=rng.uniform(0.3, 1.5),
        skin_mm=rng.uniform(1.0, 2.0),
        anterior_floor_z=rng.uniform(-25.0, -19.0),
        middle_floor_z=rng.uniform(-57.0, -49.0),
        sella_floor_z=rng.uniform(-38.0, -33.0),
        posterior_floor_z=rng.uniform(-70.0, -63.0),
        petrous_ridge_mm=rng.uniform(10.0, 16.0),
        petrous_slope=rng.uniform(0.6, 0.8),
        petrous_offset_mm=rng.uniform(-9.0, -3.0),
        sphenoid_ridge_y_mm=rng.uniform(-25.0, -18.0),
        bone_texture_k=k,
        bone_texture_phase=ph,
    )


@dataclass
class Radial:
    """Distance and unit direction of each point from :data:`CRANIAL_CENTRE`."""

    r: np.ndarray
    ux: np.ndarray
    uy: np.ndarray
    uz: np.ndarray

    @classmethod
    def of(cls, pts: Points) -> Radial:
        x = pts.X - np.float32(CRANIAL_CENTRE[0])
        y = pts.Y - np.float32(CRANIAL_CENTRE[1])
        z = pts.Z - np.float32(CRANIAL_CENTRE[2])
        r = np.sqrt(x * x + y * y + z * z) + np.float32(1e-3)
        inv = np.float32(1.0) / r
        return cls(r=r, ux=x * inv, uy=y * inv, uz=z * inv)


def inner_radius(skull: Skull, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
    """Distance from the cranial centre to the inner table of the dome along direction u."""
    ax, ay, az_top, az_bottom = skull.semi_axes
    ax_eff = ax * (1.0 + skull.posterior_widening * uy)
    az = np.where(uz > 0, np.float32(az_top), np.float32(az_bottom))
    qx, qy, qz = ux / ax_eff, uy / ay, uz / az
    qx2, qy2 = qx * qx, qy * qy
    horizontal = qx2 + qy2
    horizontal -= skull.squareness * qx2 * qy2 / (horizontal + np.float32(1e-9))
    radius = np.float32(1.0) / np.sqrt(horizontal + qz * qz)
    c = [float(v) for v in skull.harmonics]
    wobble = (
        c[0] * ux
        + c[1] * uy
        + c[2] * uz
        + c[3] * ux * uy
        + c[4] * ux * uz
        + c[5] * uy * uz
        + c[6] * (ux * ux - uy * uy)
        + c[7] * (3.0 * uz * uz - 1.0)
        + c[8] * ux * uy * uz
    )
    return (radius * (1.0 + wobble)).astype(np.float32, copy=False)


def petrous_line_y(skull: Skull, ax_abs: np.ndarray) -> np.ndarray:
    """y of the petrous ridge (the border of the posterior fossa) at lateral distance |x|."""
    return skull.petrous_offset_mm + skull.petrous_slope * ax_abs


def floor_z(skull: Skull, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical z of the skull-base floor under (x, y): the three cranial fossae.

    Anterior fossa (orbital roofs, lower cribriform plate) in front of the sphenoid ridges, the
    middle fossa (deep laterally, the sella medially) behind them, then the posterior fossa
    behind the petrous ridges, with the clivus as a sloping wall in the midline and the foramen
    magnum as a hole.
    """
    ax_abs = np.abs(x)
    anterior = (
        skull.anterior_floor_z
        + 5.0 * np.exp(-(((ax_abs - 24.0) / 12.0) ** 2))
        - 6.0 * np.exp(-((x / 5.0) ** 2))
    )
    # The middle fossae are bowls: deepest under the temporal lobes, rising to every wall.
    bowl = ((ax_abs - 36.0) / 22.0) ** 2 + ((y + 8.0) / 24.0) ** 2
    middle = skull.sella_floor_z + (
        skull.middle_floor_z + MIDDLE_FOSSA_BOWL_MM * bowl - skull.sella_floor_z
    ) * sigmoid((ax_abs - 17.0) / 4.0)
    fm_x, fm_y = FORAMEN_MAGNUM_XY_MM
    posterior = skull.posterior_floor_z + 12.0 * ((x / 50.0) ** 2 + ((y - 45.0) / 40.0) ** 2)
    hole = sigmoid((FORAMEN_MAGNUM_RADIUS_MM - np.sqrt((x - fm_x) ** 2 + (y - fm_y) ** 2)) / 2.0)
    posterior = posterior + (FORAMEN_MAGNUM_Z_MM - posterior) * hole
    ridge_y = petrous_line_y(skull, ax_abs)
    # The clivus: a wide (sloping) transition in the midline, a sharp one at the petrous ridges.
    width = 2.5 + 9.0 * np.exp(-((x / 14.0) ** 2))
    s_post = sigmoid((y - ridge_y) / width)
    # Sphenoid ridges: the anterior wall of the middle fossa, curving forwards laterally.
    s_mid = sigmoid(
        (y - (skull.sphenoid_ridge_y_mm - 0.12 * ax_abs - 0.006 * ax_abs * ax_abs)) / 3.0
    )
    z = anterior + s_mid * (middle + s_post * (posterior - middle) - anterior)
    ridge = (
        skull.petrous_ridge_mm
        * np.exp(-(((y - ridge_y) / 7.0) ** 2))
        * sigmoid((ax_abs - 16.0) / 3.0)
    )
    return (z + ridge).astype(np.float32, copy=False)


@dataclass
class Cavity:
    """The cranial cavity at a set of points.

    Attributes
    ----------
    depth:
        Signed distance to the inner table (mm, positive inside the cavity).
    nz:
        Through-plane part of the inner-table normal (for the partial-volume ramp).
    radial:
        Distance and direction from the cranial centre.
    dome_radius:
        Inner-table radius of the dome along each point's direction.
    floor_distance:
        Height above the skull-base floor (large positive where the floor is irrelevant).
    """

    depth: np.ndarray
    nz: np.ndarray
    radial: Radial
    dome_radius: np.ndarray
    floor_distance: np.ndarray

    def select(self, sel: Subset) -> Cavity:
        """The same fields at a subset of the voxels (1-D)."""
        rad = self.radial
        return Cavity(
            depth=sel.get(self.depth),
            nz=sel.get(self.nz),
            radial=Radial(
                r=sel.get(rad.r), ux=sel.get(rad.ux), uy=sel.get(rad.uy), uz=sel.get(rad.uz)
            ),
            dome_radius=sel.get(self.dome_radius),
            floor_distance=sel.get(self.floor_distance),
        )

    def take(self, idx: tuple[slice, ...]) -> Cavity:
        """The same fields on a crop (``idx`` from ``crop.index_in(parent)``)."""
        rad = self.radial
        return Cavity(
            depth=self.depth[idx],
            nz=self.nz[idx],
            radial=Radial(r=rad.r[idx], ux=rad.ux[idx], uy=rad.uy[idx], uz=rad.uz[idx]),
            dome_radius=self.dome_radius[idx],
            floor_distance=self.floor_distance[idx],
        )


def cavity(pts: Points, skull: Skull) -> Cavity:
    """Signed distance to the inner table: the dome, smoothly cut by the skull-base floor."""
    rad = Radial.of(pts)
    dome_r = inner_radius(skull, rad.ux, rad.uy, rad.uz)
    d_dome = dome_r - rad.r
    m = pts.normal
    nz_dome = np.abs(
        rad.ux * np.float32(m[0]) + rad.uy * np.float32(m[1]) + rad.uz * np.float32(m[2])
    )
    z = pts.Z
    d_floor = np.full(z.shape, 1e3, dtype=np.float32)
    low = Subset(z < FLOOR_TOP_Z_MM)
    if low.size:
        low.put(d_floor, low.get(z) - floor_z(skull, low.get(pts.X), low.get(pts.Y)))
        depth = smooth_min(d_dome, d_floor, FLOOR_BLEND_MM).astype(np.float32, copy=False)
        nz = np.where(d_dome < d_floor, nz_dome, np.float32(abs(m[2])))
    else:
        depth, nz = d_dome, nz_dome
    return Cavity(depth=depth, nz=nz, radial=rad, dome_radius=dome_r, floor_distance=d_floor)


def _pow8(v: np.ndarray) -> np.ndarray:
    """``v ** 8`` by squaring (a float power is several times slower)."""
    v = v * v
    v = v * v
    return v * v


def skull_thickness(
    skull: Skull, rad: Radial, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Thickness (mm) of the vault along each direction and of the bone under the cranial floor.

    Returns
    -------
    vault, floor:
        ``vault`` is the skull around the dome (thin in the temporal squama, thick frontally with
        the frontal sinus and at the occipital protuberance); ``floor`` the bone plate under the
        anterior and middle fossae (thicker) and under the posterior fossa (occipital squama).
    """
    ux, uy, uz = rad.ux, rad.uy, rad.uz
    h = [float(v) for v in skull.thickness_harmonics]
    variation = 1.0 + 0.22 * np.abs(uy) + h[0] * ux + h[1] * uy + h[2] * uz + h[3] * ux * uy
    ux2 = ux * ux
    temporal = np.exp(-((uy / 0.4) ** 2) - (((uz + 0.25) / 0.45) ** 2)) * (ux2 * ux2)
    vault = skull.thickness_mm * variation * (1.0 - skull.temporal_thinning * temporal)
    frontal = np.exp(-((ux / 0.28) ** 2) - (((uz + 0.22) / 0.16) ** 2)) * _pow8(
        np.clip(-uy, 0.0, 1.0)
    )
    occipital = np.exp(-((ux / 0.2) ** 2) - (((uz + 0.3) / 0.15) ** 2)) * _pow8(
        np.clip(uy, 0.0, 1.0)
    )
    vault = vault + skull.frontal_sinus_mm * frontal + skull.occipital_protuberance_mm * occipital
    in_front = sigmoid(-(y - petrous_line_y(skull, np.abs(x))) / 4.0)
    floor = 0.8 * skull.thickness_mm + skull.base_thickening_mm * in_front
    return vault.astype(np.float32, copy=False), floor.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Brain:
    """Shape of the intracranial contents of one case.

    Attributes
    ----------
    atrophy:
        0 young .. 1 marked atrophy; widens every CSF space.
    sas_mm:
        Width of the subarachnoid CSF between the inner table and the cortex.
    sulcus_width_mm, sulcus_depth_mm, cortex_mm:
        Sulcal CSF width at the surface, sulcal depth and cortical ribbon thickness.
    gyral_k, gyral_phase, folia_k, folia_phase:
        Plane waves of the cerebral gyral pattern (on a sphere) and of the cerebellar folia.
    ventricle_scale, ventricle_asymmetry:
        Ventricle size factor and the left/right size ratio.
    third_ventricle_mm:
        Half width of the third ventricle.
    falx_coeffs:
        Offset and curvature of the falx (x as a function of y and z).
    tentorium_z, tentorium_slope:
        Height of the tentorium at the incisura and its downward slope posteriorly.
    sylvian_mm, cistern_scale, cisterna_magna_scale:
        Sylvian fissure width and the size of the basal cisterns and the cisterna magna.
    parenchyma_k, parenchyma_phase:
        Low-frequency density variation of the parenchyma.
    """

    atrophy: float
    sas_mm: float
    sulcus_width_mm: float
    sulcus_depth_mm: float
    cortex_mm: float
    gyral_k: np.ndarray
    gyral_phase: np.ndarray
    folia_k: np.ndarray
    folia_phase: np.ndarray
    ventricle_scale: float
    ventricle_asymmetry: float
    third_ventricle_mm: float
    falx_coeffs: tuple[float, float, float]
    tentorium_z: float
    tentorium_slope: float
    sylvian_mm: float
    cistern_scale: float
    cisterna_magna_scale: float
    parenchyma_k: np.ndarray
    parenchyma_phase: np.ndarray


def sample_brain(rng: np.random.Generator, atrophy: float) -> Brain:
    """Draw the brain shape; ``atrophy`` in [0, 1] widens sulci, fissures and ventricles."""
    gk, gph = random_waves(rng, GYRAL_WAVES, (17.0, 26.0))
    fk, fph = random_waves(rng, FOLIA_WAVES, (6.0, 10.0))
    pk, pph = random_waves(rng, PARENCHYMA_WAVES, (25.0, 60.0))
    return Brain(
        atrophy=atrophy,
        sas_mm=rng.uniform(0.4, 1.2) + 2.8 * atrophy,
        sulcus_width_mm=rng.uniform(0.6, 1.3) + 2.8 * atrophy,
        sulcus_depth_mm=rng.uniform(14.0, 20.0),
        cortex_mm=rng.uniform(2.2, 3.2),
        gyral_k=gk,
        gyral_phase=gph,
        folia_k=fk,
        folia_phase=fph,
        ventricle_scale=rng.uniform(0.8, 1.15) * (1.0 + 0.9 * atrophy),
        ventricle_asymmetry=rng.uniform(0.85, 1.15),
        third_ventricle_mm=rng.uniform(1.2, 2.5) + 3.0 * atrophy,
        falx_coeffs=(rng.normal(0.0, 1.5), rng.normal(0.0, 2.0), rng.normal(0.0, 1.5)),
        tentorium_z=rng.uniform(-16.0, -9.0),
        tentorium_slope=rng.uniform(0.3, 0.45),
        sylvian_mm=rng.uniform(1.0, 2.5) + 3.0 * atrophy,
        cistern_scale=rng.uniform(0.85, 1.15) * (1.0 + 0.35 * atrophy),
        cisterna_magna_scale=rng.uniform(0.6, 1.6),
        parenchyma_k=pk,
        parenchyma_phase=pph,
    )


def falx_x(brain: Brain, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """x of the falx (the midline) at (y, z): a gently curved sheet."""
    c0, c1, c2 = brain.falx_coeffs
    return (c0 + c1 * (y / 80.0) ** 2 + c2 * (z / 60.0)).astype(np.float32, copy=False)


def tentorium_z(brain: Brain, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z of the tentorium cerebelli: highest at the incisura, sloping down backwards and sideways."""
    return (
        brain.tentorium_z - brain.tentorium_slope * np.maximum(y - 18.0, 0.0) - 0.006 * x * x
    ).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Face:
    """Variation of the skull base and face (low slices).

    Attributes
    ----------
    scale, shift_z:
        Size factor of the facial skeleton and its vertical offset (mm).
    sinus_size:
        Pneumatisation of the maxillary, sphenoid and ethmoid sinuses.
    mastoid_air:
        Share of the mastoid process that is air cells (0 = sclerotic).
    mucosa_mm:
        Mucosal thickening lining the sinuses.
    fat_threshold:
        Level of the texture above which deep facial soft tissue is fat (higher = leaner).
    texture_k, texture_phase:
        Plane waves of the fat/muscle and air-cell textures.
    """

    scale: float
    shift_z: float
    sinus_size: float
    mastoid_air: float
    mucosa_mm: float
    fat_threshold: float
    texture_k: np.ndarray
    texture_phase: np.ndarray


def sample_face(rng: np.random.Generator) -> Face:
    """Draw the face and skull-base variation of one case."""
    k, ph = random_waves(rng, GYRAL_WAVES, (8.0, 22.0))
    return Face(
        scale=rng.uniform(0.93, 1.07),
        shift_z=rng.uniform(-4.0, 4.0),
        sinus_size=rng.uniform(0.6, 1.2),
        mastoid_air=rng.uniform(0.0, 1.0),
        mucosa_mm=float(rng.choice([0.0, rng.uniform(1.0, 4.0)], p=[0.6, 0.4])),
        fat_threshold=rng.uniform(1.0, 1.8),
        texture_k=k,
        texture_phase=ph,
    )


@dataclass(frozen=True)
class Anatomy:
    """Everything anatomical about one case (no lesions, no scanner)."""

    tissue: TissueHU
    skull: Skull
    face: Face
    brain: Brain


def sample_anatomy(rng: np.random.Generator, atrophy_range: tuple[float, float]) -> Anatomy:
    """Draw densities, skull, face and brain of one case."""
    atrophy = float(rng.uniform(*atrophy_range) ** 2)  # most heads are not atrophic
    return Anatomy(
        tissue=sample_tissue(rng),
        skull=sample_skull(rng),
        face=sample_face(rng),
        brain=sample_brain(rng, atrophy),
    )


def scalp_top_points(anatomy: Anatomy, count: int = 400) -> np.ndarray:
    """``(count, 3)`` canonical points on the scalp of the upper head (to place the last slice)."""
    golden = np.pi * (3.0 - np.sqrt(5.0))
    i = np.arange(count)
    uz = 1.0 - (i + 0.5) / count  # upper hemisphere only
    rxy = np.sqrt(1.0 - uz * uz)
    ux, uy = rxy * np.cos(golden * i), rxy * np.sin(golden * i)
    skull = anatomy.skull
    radius = inner_radius(skull, ux, uy, uz) + skull.thickness_mm * 1.3 + skull.scalp_mm
    return CRANIAL_CENTRE + np.stack([ux, uy, uz], axis=1) * radius[:, None]
