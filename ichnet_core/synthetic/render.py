"""Render a planned case slice by slice: anatomy, lesions, incidental findings, then the scanner.

Work is done in chunks of a few slices so memory stays small at 512 x 512 and the arrays stay
in cache; every step inside a chunk is vectorised numpy on the chunk or on crops of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ichnet_core.labels import BRAIN, HEMORRHAGE, NON_BRAIN, SUBTYPES
from ichnet_core.synthetic.anatomy import Anatomy, cavity
from ichnet_core.synthetic.brain import ShiftedPoints, render_brain
from ichnet_core.synthetic.geometry import SeriesGeometry
from ichnet_core.synthetic.head import render_head
from ichnet_core.synthetic.incidental import (
    Incidentals,
    paint_head_holder,
    paint_old_lesions,
    paint_spots,
)
from ichnet_core.synthetic.lesions import HemorrhagePlan, paint_hemorrhages
from ichnet_core.synthetic.points import GridPoints, Points
from ichnet_core.synthetic.realism import Realism
from ichnet_core.synthetic.scanner import (
    PETROUS_APICES,
    Cupping,
    ScannerParams,
    add_noise,
    add_ring,
    add_streaks,
    blur,
    finish,
)
from ichnet_core.synthetic.shapes import alpha, paint

#: Pixels per chunk (slices x rows x columns); about 0.5 M keeps every array in a few MB.
CHUNK_PIXELS = 2**19
#: A voxel belongs to a class when at least this fraction of it does (centre-plane rule).
LABEL_FRACTION = 0.5
#: Blood is labelled only where the voxel's noise-free density is at most this (HU): what a
#: reader outlines. Acute blood is 50-90 HU; a voxel that is half blood but also holds bone (a
#: slice cutting the inner table tangentially) or lies under a strong inner-table band renders
#: at 200-1100 HU, reads as bone, and no reader would call it blood. Labelled as blood, such
#: voxels made extra-axial haematomas unlearnable (2026-12-05: 20-40 % of the subdural and
#: epidural pixels of the training cases, where the network found almost none of them).
#: Blood in the band's 0-2 mm shell (150-200 HU, about 25 HU above the band's brain) stays
#: labelled: a thin subdural haematoma thickens and brightens the rim, as readers report it.
#: 140 HU was tried for a few hours of 2026-12-05 and undone: it cut the planned 3-4 mm
#: subdural and epidural rims to slivers one model pixel wide (the only blood of 2 of the 28
#: bleeding test series; results.md, "Labels, second rule").
VISIBLE_BLOOD_MAX_HU = 200.0


@dataclass(frozen=True)
class RenderedSeries:
    """Ground truth and ideal densities of a series.

    Attributes
    ----------
    hu:
        ``(S, rows, columns)`` float32 noise-free densities.
    labels:
        ``(S, rows, columns)`` uint8 0/1/2.
    subtype_masks:
        ``(5, S, rows, columns)`` bool, SUBTYPES order, disjoint, union = label 2.
    """

    hu: np.ndarray
    labels: np.ndarray
    subtype_masks: np.ndarray


def _patient_xy(geometry: SeriesGeometry, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient x and y of every pixel of slices k0..k1 (broadcastable (n, rows, columns))."""
    pos = geometry.positions[k0:k1]
    dr, dc = geometry.pixel_spacing
    i = np.arange(geometry.rows, dtype=np.float32)[None, :, None] * np.float32(dr)
    j = np.arange(geometry.columns, dtype=np.float32)[None, None, :] * np.float32(dc)
    row, col = geometry.row_direction, geometry.column_direction
    x = pos[:, 0, None, None].astype(np.float32) + row[0] * j + col[0] * i
    y = pos[:, 1, None, None].astype(np.float32) + row[1] * j + col[1] * i
    return x, y


def _render_chunk(
    pts: GridPoints,
    geometry: SeriesGeometry,
    anatomy: Anatomy,
    plan: HemorrhagePlan,
    incidentals: Incidentals,
    cupping: Cupping,
    realism: Realism,
    k0: int,
    k1: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cav = cavity(pts, anatomy.skull)
    hu = render_head(pts, anatomy, cav, incidentals.swelling)
    if incidentals.head_holder is not None:
        paint_head_holder(
            hu,
            _patient_xy(geometry, k0, k1),
            incidentals.head_holder,
            float(np.mean(geometry.pixel_spacing)),
        )
    a_cav = alpha(pts, cav.depth, cav.nz)
    labels = np.where(a_cav >= LABEL_FRACTION, BRAIN, NON_BRAIN).astype(np.uint8)
    masks = np.zeros((len(SUBTYPES), *pts.shape), dtype=bool)
    box = pts.crop_box(a_cav > 0)
    if box is None:
        return hu, labels, masks
    idx = box.index_in(pts)
    cb = cav.take(idx)
    fields = render_brain(
        box, anatomy, cb, plan.shift_mm, [(c, s, w) for c, s, w in plan.sah_regions]
    )
    brain_pts: Points = ShiftedPoints(box, plan.shift_mm) if plan.shift_mm else box
    paint_old_lesions(brain_pts, cb, fields, anatomy, incidentals)
    fractions = paint_hemorrhages(box, cb, fields, plan, anatomy)
    paint_spots(brain_pts, fields, incidentals)
    fields.hu += cupping.hu(cb.depth)
    if realism.band_hu > 0 or realism.tangential_hu > 0:
        fields.hu += realism.boundary_hu(cb.depth, cb.nz, box)
    a_box = a_cav[idx]
    paint(hu[idx], a_box, fields.hu)
    fractions *= a_box
    blood = (fractions.sum(axis=0) >= LABEL_FRACTION) & (hu[idx] <= VISIBLE_BLOOD_MAX_HU)
    if blood.any():
        which = np.argmax(fractions, axis=0)
        labels[idx][blood] = HEMORRHAGE
        for s in range(len(SUBTYPES)):
            masks[s][idx] = blood & (which == s)
    return hu, labels, masks


def render_series(
    geometry: SeriesGeometry,
    anatomy: Anatomy,
    plan: HemorrhagePlan,
    incidentals: Incidentals,
    cupping: Cupping,
    realism: Realism | None = None,
) -> RenderedSeries:
    """Ideal densities and ground truth of every slice (no blur, noise or streaks yet);
    ``realism`` adds the inner-table band and tangential partial volume (densities only)."""
    realism = realism or Realism()
    s, rows, cols = geometry.num_slices, geometry.rows, geometry.columns
    hu = np.empty((s, rows, cols), dtype=np.float32)
    labels = np.empty((s, rows, cols), dtype=np.uint8)
    masks = np.empty((len(SUBTYPES), s, rows, cols), dtype=bool)
    step = max(1, CHUNK_PIXELS // (rows * cols))
    for k0 in range(0, s, step):
        k1 = min(s, k0 + step)
        h, lab, m = _render_chunk(
            geometry.grid(k0, k1),
            geometry,
            anatomy,
            plan,
            incidentals,
            cupping,
            realism,
            k0,
            k1,
        )
        hu[k0:k1], labels[k0:k1], masks[:, k0:k1] = h, lab, m
    fov = geometry.fov_mask()
    labels[:, ~fov] = NON_BRAIN
    masks[:, :, ~fov] = False
    return RenderedSeries(hu=hu, labels=labels, subtype_masks=masks)


def _petrous_in_slices(geometry: SeriesGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Petrous apices in pixel coordinates of each slice, plane distance, and slice centre z."""
    apices = geometry.pose.patient(np.asarray(PETROUS_APICES))  # (2, 3)
    rel = apices[None, :, :] - geometry.positions[:, None, :]  # (S, 2, 3)
    i = rel @ geometry.column_direction / geometry.pixel_spacing[0]
    j = rel @ geometry.row_direction / geometry.pixel_spacing[1]
    dist = np.abs(rel.mean(axis=1) @ geometry.normal)
    grid_centres = (
        geometry.positions
        + (geometry.columns - 1) / 2.0 * geometry.pixel_spacing[1] * geometry.row_direction
    )
    grid_centres += (
        (geometry.rows - 1) / 2.0 * geometry.pixel_spacing[0] * geometry.column_direction
    )
    centre_z = geometry.pose.canonical(grid_centres)[:, 2]
    return np.stack([i, j], axis=-1), dist, centre_z


def apply_scanner(
    hu: np.ndarray, geometry: SeriesGeometry, params: ScannerParams, rng: np.random.Generator
) -> np.ndarray:
    """Blur, beam-hardening artefacts, ring, noise, integer HU and the FOV circle."""
    apices, dist, centre_z = _petrous_in_slices(geometry)
    out = np.empty_like(hu)
    step = max(1, CHUNK_PIXELS // (geometry.rows * geometry.columns))
    for k0 in range(0, hu.shape[0], step):
        k1 = min(hu.shape[0], k0 + step)
        chunk = blur(hu[k0:k1], params)
        add_streaks(
            chunk, params, rng, apices[k0:k1], dist[k0:k1], float(np.mean(geometry.pixel_spacing))
        )
        add_ring(chunk, params)
        add_noise(chunk, params, rng, centre_z[k0:k1])
        out[k0:k1] = chunk
    return finish(out, geometry.fov_mask())
