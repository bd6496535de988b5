"""Everything outside the inner table: scalp, skull (tables and diploe), skull base and face.

These tissues are label 0 (non-brain) but shape most of what a model sees in the low slices:
orbits with globes and lenses, ethmoid/sphenoid/maxillary/frontal sinuses, petrous bones with
mastoid air cells, zygomatic arches, mandibular condyles, the spinal canal. Getting them roughly
right matters because bone next to brain, partial volume of the skull base and air-bone edges
are exactly where a hemorrhage detector makes its false positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichnet_core.synthetic.anatomy import (
    CRANIAL_CENTRE,
    FLOOR_BLEND_MM,
    FORAMEN_MAGNUM_XY_MM,
    FORAMEN_MAGNUM_Z_MM,
    Anatomy,
    Cavity,
    inner_radius,
    skull_thickness,
)
from ichnet_core.synthetic.points import FlatPoints, Points
from ichnet_core.synthetic.shapes import (
    Canvas,
    Subset,
    alpha,
    edge_width,
    ellipsoid,
    ellipsoid_alpha,
    paint,
    ramp,
    smooth_max,
    smooth_min,
    tube,
    wave_field,
)

#: Blend radius (mm) where the skin of the cranium meets the face and the neck.
SKIN_BLEND_MM = 8.0
#: Ramp width (mm) between cortical tables and diploe.
DIPLOE_EDGE_MM = 1.0
#: Amplitude (HU) of the trabecular texture of the diploe.
DIPLOE_TEXTURE_HU = 120.0
#: Largest scalp swelling (mm), bounds where scalp can be.
MAX_SWELLING_MM = 14.0
#: Half width (texture units) of the bony septa between ethmoid air cells.
ETHMOID_SEPTUM = 0.18
#: Half width (texture units) of the fat planes between facial muscles.
FAT_PLANE_WIDTH = 0.05
#: Canonical z below which the face and neck soft tissue gets fat planes.
FACE_TOP_Z_MM = -28.0


@dataclass(frozen=True)
class ScalpSwelling:
    """A subgaleal haematoma / soft-tissue swelling outside the skull (label 0, blood-like HU)."""

    direction: np.ndarray
    half_angle: float
    height_mm: float
    hu: float


def _swelling_bump(cav: Cavity, swelling: ScalpSwelling) -> np.ndarray:
    """Extra scalp thickness (mm) of a swelling: a cap around its direction."""
    rad = cav.radial
    sx, sy, sz = (float(v) for v in swelling.direction)
    cos_t = rad.ux * sx + rad.uy * sy + rad.uz * sz
    return swelling.height_mm * np.clip(
        1.0 - 2.0 * (1.0 - cos_t) / swelling.half_angle**2, 0.0, 1.0
    )


def _skin_distance(
    pts: Points, anatomy: Anatomy, cav: Cavity, vault: np.ndarray, bump: np.ndarray | None
) -> np.ndarray:
    """Signed distance to the skin: cranium (vault + scalp), face, nose and neck."""
    skull, face = anatomy.skull, anatomy.face
    rad = cav.radial
    temporalis = (
        skull.temporalis_mm
        * np.exp(-(((rad.uy + 0.1) / 0.45) ** 2) - (((rad.uz + 0.05) / 0.45) ** 2))
        * (rad.ux * rad.ux) ** 2
    )
    scalp = skull.scalp_mm * (1.0 + 0.35 * np.clip(rad.uy, 0.0, 1.0)) + temporalis
    d = (cav.dome_radius - rad.r) + vault + scalp
    if bump is not None:
        d = d + bump
    d = d.astype(np.float32, copy=False)
    f, dz = face.scale, face.shift_z
    for center, semi in (
        ((0.0, -50.0 * f, -66.0 * f + dz), (58.0 * f, 50.0 * f, 36.0 * f)),  # midface, maxilla
        ((0.0, -98.0 * f, -52.0 * f + dz), (9.0 * f, 14.0 * f, 20.0 * f)),  # nose
        ((0.0, 25.0, -96.0), (62.0, 58.0, 45.0)),  # neck
    ):
        # Far outside an ellipsoid the smooth union leaves d unchanged: evaluate inside its box.
        box = np.ones(d.shape, dtype=bool)
        for coord, c, half in zip((pts.X, pts.Y, pts.Z), center, semi, strict=True):
            box &= np.abs(coord - np.float32(c)) < np.float32(half + SKIN_BLEND_MM)
        sel = Subset(box)
        if sel.size:
            part = FlatPoints(np.stack([sel.get(pts.X), sel.get(pts.Y), sel.get(pts.Z)], axis=-1))
            d_part, _ = ellipsoid(part, center, semi)
            sel.put(d, smooth_max(sel.get(d), d_part, SKIN_BLEND_MM))
    return d


def _bone_hu(
    pts: Points, anatomy: Anatomy, cav: Cavity, total: np.ndarray, shell: np.ndarray
) -> np.ndarray:
    """HU of bone at the points: cortical tables around a textured diploe."""
    tissue, skull = anatomy.tissue, anatomy.skull
    depth_in_bone = -cav.depth
    diploe = ramp(depth_in_bone - skull.inner_table_mm, DIPLOE_EDGE_MM)
    diploe *= ramp(total - skull.outer_table_mm - depth_in_bone, DIPLOE_EDGE_MM)
    bone = np.full(pts.shape, tissue.cortical_bone, dtype=np.float32)
    sel = Subset(shell & (diploe > 0))
    if sel.size:
        tex = wave_field(
            sel.get(pts.X),
            sel.get(pts.Y),
            sel.get(pts.Z),
            skull.bone_texture_k,
            skull.bone_texture_phase,
        )
        value = tissue.diploe + DIPLOE_TEXTURE_HU * tex
        sel.add(bone, sel.get(diploe) * (value - tissue.cortical_bone))
    return bone


def _frontal_sinus(canvas: Canvas, anatomy: Anatomy) -> None:
    """Air in the thickened frontal bone above the nasion, lined by mucosa."""
    skull, tissue, face = anatomy.skull, anatomy.tissue, anatomy.face
    size = skull.frontal_sinus_mm
    if size <= 0:
        return
    u = np.array([0.0, -0.97, -0.24])
    u /= np.linalg.norm(u)
    r_in = float(inner_radius(skull, np.array([u[0]]), np.array([u[1]]), np.array([u[2]]))[0])
    centre = CRANIAL_CENTRE + u * (r_in + 0.5 * (skull.thickness_mm * 1.22 + size))
    semi = np.array([1.3 * size + 4.0, 0.3 * size + 1.0, 0.55 * size + 2.0])
    canvas.ellipsoid(centre, semi, tissue.mucosa)
    canvas.ellipsoid(centre, np.maximum(semi - face.mucosa_mm, 0.5), tissue.air)


def _ethmoid(canvas: Canvas, anatomy: Anatomy) -> None:
    """Ethmoid air cells between the orbits: air in irregular cells with thin bony septa."""
    tissue, face = anatomy.tissue, anatomy.face
    f, dz, s = face.scale, face.shift_z, face.sinus_size
    centre = (0.0, -60.0 * f, -36.0 * f + dz)
    semi = (11.0 * f, 21.0 * f * s**0.3, 11.0 * f)
    got = canvas.region(centre, max(semi) + 2.0)
    if got is None:
        return
    crop, view = got
    a = ellipsoid_alpha(crop, centre, semi)
    cells = wave_field(crop.X * 2.2, crop.Y * 2.2, crop.Z * 2.2, face.texture_k, face.texture_phase)
    a *= ramp(np.abs(cells) - ETHMOID_SEPTUM, 0.15)
    paint(view, a, tissue.air)


def _skull_base(canvas: Canvas, anatomy: Anatomy) -> None:
    """Sphenoid body (holding the sphenoid sinus) and the clivus sloping to the foramen magnum."""
    tissue, face = anatomy.tissue, anatomy.face
    f, dz = face.scale, face.shift_z
    body = 0.6 * tissue.cortical_bone + 0.4 * tissue.diploe
    canvas.ellipsoid((0.0, -32.0 * f, -45.0 * f + dz), (16.5 * f, 15.5 * f, 14.0 * f), body)
    fm_y = FORAMEN_MAGNUM_XY_MM[1]
    canvas.tube(
        np.array([[0.0, -14.0, -40.0], [0.0, fm_y - 14.0, FORAMEN_MAGNUM_Z_MM + 4.0]]),
        np.array([8.0, 5.0]),
        body,
        scale=(1.6, 1.0, 1.0),
    )


def _nasal_and_sinuses(canvas: Canvas, anatomy: Anatomy) -> None:
    """Nasal cavity with septum and turbinates, nasopharynx, sphenoid and maxillary sinuses."""
    tissue, face = anatomy.tissue, anatomy.face
    f, dz, s = face.scale, face.shift_z, face.sinus_size
    face_bone = 0.5 * (tissue.cortical_bone + tissue.diploe)
    # Maxillary sinuses with their bony walls.
    for side in (-1.0, 1.0):
        centre = (side * 26.0 * f, -60.0 * f, -66.0 * f + dz)
        semi = np.array([14.0, 16.0, 16.0]) * f * s**0.5
        canvas.ellipsoid(centre, semi + 2.5, face_bone)
        canvas.ellipsoid(centre, semi, tissue.mucosa)
        canvas.ellipsoid(centre, np.maximum(semi - face.mucosa_mm, 1.0), tissue.air)
    # Sphenoid sinus in the sphenoid body below the sella.
    centre = (0.0, -32.0 * f, -45.0 * f + dz)
    semi = np.array([14.0, 13.0, 12.0]) * f * s
    canvas.ellipsoid(centre, semi, tissue.mucosa)
    canvas.ellipsoid(centre, np.maximum(semi - face.mucosa_mm, 1.0), tissue.air)
    # Nasal cavity: air, then turbinates and septum painted back in.
    centre = (0.0, -70.0 * f, -62.0 * f + dz)
    semi = (14.0 * f, 30.0 * f, 18.0 * f)
    got = canvas.region(centre, max(semi) + 2.0)
    if got is not None:
        crop, view = got
        a = ellipsoid_alpha(crop, centre, semi)
        # Turbinates fill the lateral nasal cavity; air stays in the meatuses, slits whose
        # width varies with height, and next to the septum.
        meatus = 0.5 + 0.5 * np.cos(2.0 * np.pi * crop.Z / (9.0 * f) + crop.Y / (25.0 * f))
        turbinate = ramp(np.abs(crop.X) - (3.0 + 5.0 * meatus) * f, 2.0)
        septum = ramp(1.0 - np.abs(crop.X), 1.0)
        paint(view, a, tissue.air)
        paint(view, a * turbinate, tissue.mucosa)
        paint(view, a * septum, tissue.diploe)
    canvas.ellipsoid((0.0, -24.0 * f, -72.0 * f + dz), (11.0 * f, 8.0 * f, 10.0 * f), tissue.air)


def _orbits(canvas: Canvas, anatomy: Anatomy) -> None:
    """Orbits: a bony cone open in front, fat, optic nerve, two recti, globe with sclera and lens."""
    tissue, face = anatomy.tissue, anatomy.face
    f, dz = face.scale, face.shift_z
    face_bone = 0.5 * (tissue.cortical_bone + tissue.diploe)
    z = -34.0 * f + dz
    rim_y = -72.0 * f
    for side in (-1.0, 1.0):
        x = side * 32.0 * f
        cone = np.array([[side * 14.0 * f, -36.0 * f, z - 2.0], [x, rim_y - 4.0 * f, z]])
        got = canvas.region(cone.mean(axis=0), 36.0 * f)
        if got is not None:
            crop, view = got
            behind_rim = ramp(rim_y - crop.Y, 2.0)
            d, nz = tube(crop, cone, np.array([4.5, 18.0]) * f, (1.0, 1.0, 0.85))
            paint(view, alpha(crop, d, nz) * behind_rim, face_bone)
            d, nz = tube(crop, cone, np.array([3.0, 16.5]) * f, (1.0, 1.0, 0.85))
            paint(view, alpha(crop, d, nz), tissue.fat)
        for x0, x1 in ((18.0, 21.0), (45.0, 44.0)):  # medial and lateral rectus
            canvas.tube(
                np.array([[side * x0 * f, -42.0 * f, z], [side * x1 * f, -70.0 * f, z]]),
                np.array([2.2, 2.8]) * f,
                tissue.muscle,
            )
        canvas.tube(
            np.array([[side * 17.0 * f, -42.0 * f, z - 1.0], [x, -66.0 * f, z]]),
            np.array([2.0, 2.4]) * f,
            tissue.muscle - 10.0,
        )
        globe_c = (x, -74.0 * f, z)
        canvas.ellipsoid(globe_c, (11.8 * f,) * 3, tissue.muscle)  # sclera
        canvas.ellipsoid(globe_c, (11.0 * f,) * 3, tissue.globe)
        canvas.ellipsoid((x, -83.5 * f, z), (4.2 * f, 1.8 * f, 4.2 * f), tissue.lens)


def _temporal_and_jaw(canvas: Canvas, anatomy: Anatomy) -> None:
    """Petrous pyramids (inner ear, internal auditory canal), mastoids, ear canals, zygoma,
    mandibular condyles and rami."""
    tissue, face = anatomy.tissue, anatomy.face
    f, dz = face.scale, face.shift_z
    face_bone = 0.5 * (tissue.cortical_bone + tissue.diploe)
    for side in (-1.0, 1.0):
        # Mastoid: bone, then air cells.
        centre = (side * 50.0, 30.0, -55.0)
        canvas.ellipsoid(centre, (12.0, 14.0, 14.0), face_bone)
        got = canvas.region(centre, 14.0)
        if got is not None and face.mastoid_air > 0:
            crop, view = got
            a = ellipsoid_alpha(crop, centre, (10.0, 12.0, 12.0))
            cells = wave_field(
                crop.X * 3.5, crop.Y * 3.5, crop.Z * 3.5, face.texture_k, face.texture_phase
            )
            a *= np.clip((cells + 1.2 - 2.0 * (1.0 - face.mastoid_air)) * 1.5, 0.0, 1.0)
            paint(view, a, tissue.air)
        canvas.tube(
            np.array(
                [[side * 56.0, 28.0, -48.0], [side * 36.0, 12.0, -44.0], [side * 16.0, -4.0, -39.0]]
            ),
            np.array([10.0, 8.0, 4.5]),
            tissue.petrous,
        )
        canvas.ellipsoid((side * 38.0, 12.0, -44.0), (2.6, 2.0, 2.6), tissue.csf + 20.0)
        canvas.tube(
            np.array([[side * 36.0, 11.0, -43.0], [side * 23.0, 7.0, -41.0]]),
            np.array([2.0, 2.0]),
            tissue.csf,
        )
        canvas.tube(
            np.array([[side * 72.0, 14.0, -50.0], [side * 52.0, 13.0, -47.0]]),
            np.array([3.5, 3.0]),
            tissue.air,
        )
        canvas.tube(
            np.array(
                [
                    [side * 50.0 * f, -62.0 * f, -52.0 * f + dz],
                    [side * 61.0 * f, -8.0 * f, -49.0 * f + dz],
                ]
            ),
            np.array([5.0, 3.0]) * f,
            face_bone,
        )
        canvas.ellipsoid(
            (side * 50.0 * f, 2.0 * f, -64.0 * f + dz), (5.5 * f, 8.5 * f, 7.0 * f), face_bone
        )
        canvas.tube(
            np.array(
                [
                    [side * 50.0 * f, 0.0, -66.0 * f + dz],
                    [side * 47.0 * f, -16.0 * f, -100.0 * f + dz],
                ]
            ),
            np.array([4.5, 5.0]) * f,
            face_bone,
        )


def _spine(canvas: Canvas, anatomy: Anatomy) -> None:
    """Spinal canal below the foramen magnum (CSF around the cord), C1 and the dens."""
    tissue = anatomy.tissue
    fm_x, fm_y = FORAMEN_MAGNUM_XY_MM
    face_bone = 0.5 * (tissue.cortical_bone + tissue.diploe)
    top = FORAMEN_MAGNUM_Z_MM + 6.0
    canvas.ellipsoid((0.0, fm_y - 14.0, -84.0), (8.0, 4.5, 5.0), face_bone)
    for side in (-1.0, 1.0):
        canvas.ellipsoid((side * 19.0, fm_y - 4.0, -84.0), (8.0, 11.0, 7.0), face_bone)
    canvas.ellipsoid((0.0, fm_y - 9.0, -82.0), (5.5, 5.5, 10.0), face_bone)
    canvas.tube(
        np.array([[fm_x, fm_y, top], [fm_x, fm_y + 4.0, -140.0]]),
        np.array([12.0, 11.0]),
        tissue.csf,
    )
    canvas.tube(
        np.array([[fm_x, fm_y, top], [fm_x, fm_y + 4.0, -140.0]]),
        np.array([6.0, 5.5]),
        tissue.white,
    )


def _deep_face(pts: Points, hu: np.ndarray, anatomy: Anatomy, skin: np.ndarray) -> None:
    """Fat planes between the muscles of the face and neck (a texture, below the skull base)."""
    tissue, face = anatomy.tissue, anatomy.face
    sel = Subset((pts.Z < FACE_TOP_Z_MM) & (skin > 6.0))
    if not sel.size:
        return
    z = sel.get(pts.Z)
    tex = wave_field(sel.get(pts.X), sel.get(pts.Y), z, face.texture_k, face.texture_phase)
    # Fascial fat planes between muscle bellies: thin sheets along the texture's zero crossings,
    # plus fat pockets where it peaks (buccal, parapharyngeal fat).
    a = np.maximum(
        ramp(FAT_PLANE_WIDTH - np.abs(tex), 0.15),
        np.clip((tex - face.fat_threshold) * 2.0, 0.0, 1.0),
    )
    a *= ramp(sel.get(skin) - 6.0, 4.0)
    a *= ramp(FACE_TOP_Z_MM - z, 6.0)
    sel.add(hu, a * (tissue.fat - sel.get(hu)))


def _extracranial_points(pts: Points, anatomy: Anatomy, cav: Cavity) -> Subset:
    """Index of the points that may hold scalp, skull or face (the rest is air or brain).

    Deep inside the cavity the brain covers everything (its fraction is 1 there); beyond the
    thickest possible skull, scalp and swelling there is air, except where the face and neck are.
    """
    skull = anatomy.skull
    inside = cav.depth > 2.0 + 0.6 * pts.thickness_mm
    reach = (
        1.6 * skull.thickness_mm
        + skull.frontal_sinus_mm
        + skull.occipital_protuberance_mm
        + 1.35 * skull.scalp_mm
        + skull.temporalis_mm
        + MAX_SWELLING_MM
        + 4.0
    )
    candidate = ~inside & ((cav.dome_radius - cav.radial.r) > -reach)
    candidate |= ~inside & (pts.Z < FACE_TOP_Z_MM + 20.0)
    return Subset(candidate)


def _scalp_and_skull(
    pts: Points, anatomy: Anatomy, cav: Cavity, swelling: ScalpSwelling | None
) -> np.ndarray:
    """HU of skin, fat, muscle, deep face, and bone (tables and diploe) at ``pts``."""
    tissue, skull = anatomy.tissue, anatomy.skull
    rad = cav.radial
    vault, floor = skull_thickness(skull, rad, pts.X, pts.Y)
    d_dome = cav.dome_radius - rad.r
    m = pts.normal
    nz_dome = np.abs(
        rad.ux * np.float32(m[0]) + rad.uy * np.float32(m[1]) + rad.uz * np.float32(m[2])
    )
    w = edge_width(pts, nz_dome)

    hu = np.full(pts.shape, tissue.air, dtype=np.float32)
    bump = _swelling_bump(cav, swelling) if swelling is not None else None
    skin = _skin_distance(pts, anatomy, cav, vault, bump)
    paint(hu, ramp(skin, w), tissue.skin)
    paint(hu, ramp(skin - skull.skin_mm, w), tissue.fat)
    muscle_depth = skin - skull.skin_mm - skull.scalp_fat_mm * (1.0 + np.clip(rad.uy, 0.0, 1.0))
    paint(hu, ramp(muscle_depth, w), tissue.muscle)
    if swelling is not None and bump is not None:
        outside_bone = -(d_dome + vault)
        a = ramp(skin - skull.skin_mm, w) * ramp(outside_bone - 0.5, w) * ramp(bump - 1.0, 1.0)
        paint(hu, a, swelling.hu)
    _deep_face(pts, hu, anatomy, skin)

    bone_d = smooth_min(d_dome + vault, cav.floor_distance + floor, FLOOR_BLEND_MM)
    total = np.where(d_dome < cav.floor_distance, vault, floor)
    shell = (bone_d > -2.0) & (cav.depth < 2.0)
    paint(hu, alpha(pts, bone_d, cav.nz), _bone_hu(pts, anatomy, cav, total, shell))
    return hu


def render_head(
    pts: Points, anatomy: Anatomy, cav: Cavity, swelling: ScalpSwelling | None = None
) -> np.ndarray:
    """HU of everything outside the inner table (inside it the result is air or bone; the brain
    is composited over it with the cavity fraction).

    Parameters
    ----------
    pts:
        Where to render (a chunk of slice pixels).
    cav:
        :func:`ichnet_core.synthetic.anatomy.cavity` at ``pts``.
    swelling:
        Optional scalp swelling.
    """
    hu = np.full(pts.shape, anatomy.tissue.air, dtype=np.float32)
    sel = _extracranial_points(pts, anatomy, cav)
    if sel.size:
        sub = FlatPoints(
            np.stack([sel.get(pts.X), sel.get(pts.Y), sel.get(pts.Z)], axis=-1),
            normal=pts.normal,
            pixel_mm=pts.pixel_mm,
            thickness_mm=pts.thickness_mm,
        )
        sel.put(hu, _scalp_and_skull(sub, anatomy, cav.select(sel), swelling))

    canvas = Canvas(hu, pts)
    _frontal_sinus(canvas, anatomy)
    if float(np.min(pts.Z)) < FACE_TOP_Z_MM + 12.0:
        _skull_base(canvas, anatomy)
        _ethmoid(canvas, anatomy)
        _nasal_and_sinuses(canvas, anatomy)
        _orbits(canvas, anatomy)
        _temporal_and_jaw(canvas, anatomy)
        _spine(canvas, anatomy)
    return hu
