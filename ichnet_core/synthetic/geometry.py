"""Scanner geometry of a synthetic series: pixel grid, slice stack, gantry tilt and head pose.

Patient coordinates are DICOM LPS (x = patient left, y = posterior, z = superior). Slices are
reconstructed in planes whose row direction is +x and whose column direction is tilted by the
gantry angle about x, like a conventional head scan: ImageOrientationPatient
``(1, 0, 0, 0, cos t, -sin t)``, slice normal ``(0, sin t, cos t)``. The table moves along z, so
with tilt the slice centres step ``spacing / cos t`` in z while the planes stay ``spacing`` apart
along their normal (the real GE study in ../shared/data behaves exactly like this).

The head sits in that scanner frame with a random rotation (yaw = in-plane rotation, pitch =
chin up/down, roll) and shift, and with its own size and ellipticity; the composite map from
patient coordinates to the canonical head frame of :mod:`ichnet_core.synthetic.points` is affine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ichnet_core.imaging import measure
from ichnet_core.synthetic.config import SyntheticConfig
from ichnet_core.synthetic.points import GridPoints

#: Range of the most inferior slice in canonical head coordinates (mm): from about C1 / the
#: maxillary sinuses up to just below the floor of the posterior fossa.
FIRST_SLICE_CANONICAL_Z_MM = (-74.0, -58.0)
#: How far the last slice may fall below (-) or beyond (+) the top of the scalp (mm).
VERTEX_MARGIN_MM = (-8.0, 0.0)
#: Relative per-axis jitter of the head size on top of the overall scale (ellipticity).
AXIS_JITTER = 0.06
#: Range of SliceThickness / spacing when the reconstruction overlaps or leaves gaps.
OVERLAP_RATIO = (0.8, 1.3)


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Head-frame axes in patient coordinates: yaw about z, then pitch about x, then roll about y."""
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    rz = np.array(
        [[math.cos(y), -math.sin(y), 0.0], [math.sin(y), math.cos(y), 0.0], [0.0, 0.0, 1.0]]
    )
    rx = np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]]
    )
    ry = np.array(
        [[math.cos(r), 0.0, math.sin(r)], [0.0, 1.0, 0.0], [-math.sin(r), 0.0, math.cos(r)]]
    )
    return rz @ rx @ ry


@dataclass(frozen=True)
class HeadPose:
    """Where the canonical head sits in patient coordinates.

    ``patient = origin + rotation @ diag(scale) @ canonical``.
    """

    rotation: np.ndarray
    scale: np.ndarray
    origin: np.ndarray

    @property
    def to_patient(self) -> np.ndarray:
        """3x3 linear part of canonical -> patient."""
        return self.rotation @ np.diag(self.scale)

    @property
    def to_canonical(self) -> np.ndarray:
        """3x3 linear part of patient -> canonical."""
        return np.diag(1.0 / self.scale) @ self.rotation.T

    def canonical(self, patient_points: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` patient points to canonical coordinates."""
        return (np.asarray(patient_points) - self.origin) @ self.to_canonical.T

    def patient(self, canonical_points: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` canonical points to patient coordinates."""
        return np.asarray(canonical_points) @ self.to_patient.T + self.origin

    def canonical_direction(self, patient_direction: np.ndarray) -> np.ndarray:
        """Unit canonical normal of planes whose patient normal is ``patient_direction``.

        Plane normals transform with the inverse transpose of the point map.
        """
        v = self.to_patient.T @ np.asarray(patient_direction, dtype=np.float64)
        return v / np.linalg.norm(v)


def sample_pose(rng: np.random.Generator, config: SyntheticConfig) -> HeadPose:
    """Random head size, ellipticity, rotation and in-plane shift."""
    s = rng.uniform(*config.head_scale)
    scale = s * rng.uniform(1.0 - AXIS_JITTER, 1.0 + AXIS_JITTER, size=3)
    rotation = _rotation(
        rng.uniform(-config.head_yaw_deg, config.head_yaw_deg),
        rng.uniform(*config.head_pitch_deg),
        rng.uniform(-config.head_roll_deg, config.head_roll_deg),
    )
    shift = rng.uniform(-config.head_shift_mm, config.head_shift_mm, size=2)
    return HeadPose(rotation=rotation, scale=scale, origin=np.array([shift[0], shift[1], 0.0]))


@dataclass(frozen=True)
class SeriesGeometry:
    """Pixel grid and slice stack of one series (what ends up in the Image Plane module).

    Attributes
    ----------
    rows, columns:
        Matrix size.
    pixel_spacing:
        (row spacing, column spacing) in mm, as PixelSpacing.
    orientation:
        ImageOrientationPatient.
    positions:
        ``(S, 3)`` ImagePositionPatient, slice 0 most inferior.
    slice_thickness_mm, slice_spacing_mm:
        SliceThickness and the centre-to-centre distance along the slice normal.
    gantry_tilt_deg:
        Gantry/Detector Tilt.
    pose:
        The head in patient coordinates.
    """

    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    orientation: tuple[float, ...]
    positions: np.ndarray
    slice_thickness_mm: float
    slice_spacing_mm: float
    gantry_tilt_deg: float
    pose: HeadPose

    @property
    def num_slices(self) -> int:
        return int(self.positions.shape[0])

    @property
    def row_direction(self) -> np.ndarray:
        return np.asarray(self.orientation[:3], dtype=np.float64)

    @property
    def column_direction(self) -> np.ndarray:
        return np.asarray(self.orientation[3:], dtype=np.float64)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def grid(self, k0: int = 0, k1: int | None = None) -> GridPoints:
        """Canonical coordinates of the pixels of slices ``k0 .. k1`` (the root grid of a chunk)."""
        k1 = self.num_slices if k1 is None else k1
        to_c = self.pose.to_canonical
        base = self.pose.canonical(self.positions[k0:k1])
        row_step = to_c @ (self.column_direction * self.pixel_spacing[0])
        col_step = to_c @ (self.row_direction * self.pixel_spacing[1])
        normal_c = self.pose.canonical_direction(self.normal)
        mean_scale = float(np.exp(np.mean(np.log(self.pose.scale))))
        # Parallel planes d apart along the patient normal are d / |A^T n| apart in canonical
        # coordinates (A = canonical -> patient).
        thickness_c = self.slice_thickness_mm / float(
            np.linalg.norm(self.pose.to_patient.T @ self.normal)
        )
        return GridPoints(
            base=base,
            row_step=row_step,
            col_step=col_step,
            normal=normal_c,
            pixel_mm=float(np.mean(self.pixel_spacing)) / mean_scale,
            thickness_mm=thickness_c,
            rows=self.rows,
            columns=self.columns,
            k0=k0,
        )

    def fov_mask(self) -> np.ndarray:
        """``(rows, columns)`` True inside the reconstruction circle."""
        return fov_circle(self.rows, self.columns)

    def slice_extents_mm(self) -> np.ndarray:
        """``(S,)`` thickness each slice stands for: half the distance to each neighbour.

        Same rule as :class:`ichnet_core.imaging.volume.Volume` (docs/architecture.md), so the
        hemorrhage volume of a case equals what the node measures on the written series.
        """
        return slice_extents_mm(self.positions, self.normal, self.slice_thickness_mm)


def fov_circle(rows: int, columns: int) -> np.ndarray:
    """``(rows, columns)`` True inside the reconstruction circle inscribed in the matrix.

    Scanners reconstruct a disc; pixels outside it carry no measurement (padding).
    """
    i = np.arange(rows) - (rows - 1) / 2.0
    j = np.arange(columns) - (columns - 1) / 2.0
    return (i[:, None] ** 2 + j[None, :] ** 2) <= (min(rows, columns) / 2.0) ** 2


def slice_extents_mm(positions: np.ndarray, normal: np.ndarray, thickness_mm: float) -> np.ndarray:
    """Half the distance to each neighbour along ``normal`` (one neighbour at the ends)."""
    offsets = np.asarray(positions, dtype=np.float64) @ np.asarray(normal, dtype=np.float64)
    return measure.slice_extents_mm(offsets, thickness_mm)


def sample_geometry(
    rng: np.random.Generator, config: SyntheticConfig, pose: HeadPose, top_points: np.ndarray
) -> SeriesGeometry:
    """Random pixel spacing, slice spacing/thickness and tilt; slices from skull base to vertex.

    Parameters
    ----------
    top_points:
        ``(N, 3)`` canonical points on the scalp surface; the most superior one along the slice
        normal decides where the last slice is.
    """
    spacing = float(rng.uniform(*config.slice_spacing_mm))
    thickness = spacing
    if rng.random() < config.slice_overlap_probability:
        thickness = float(np.clip(spacing * rng.uniform(*OVERLAP_RATIO), 0.5, 10.0))
    pixel = float(rng.uniform(*config.pixel_spacing_mm))
    tilt = 0.0
    if rng.random() < config.gantry_tilt_probability:
        tilt = float(rng.uniform(*config.gantry_tilt_deg) * rng.choice([-1.0, 1.0]))
    t = math.radians(tilt)
    orientation = (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))
    normal = np.array([0.0, math.sin(t), math.cos(t)])

    base_canonical = np.array([0.0, 0.0, rng.uniform(*FIRST_SLICE_CANONICAL_Z_MM)])
    s_start = float(pose.patient(base_canonical) @ normal)
    s_end = float(np.max(pose.patient(top_points) @ normal)) + rng.uniform(*VERTEX_MARGIN_MM)
    count = math.floor((s_end - s_start) / spacing) + 1
    if count < 2:
        raise RuntimeError(
            f"the sampled head covers only {s_end - s_start:.1f} mm along the slice normal; "
            "check SyntheticConfig.head_scale"
        )
    s = s_start + spacing * np.arange(count)
    # Slice centres on the table axis (x = 0, y = 0), stepping along z.
    centres = np.zeros((count, 3))
    centres[:, 2] = s / math.cos(t)
    row_dir = np.asarray(orientation[:3])
    col_dir = np.asarray(orientation[3:])
    rows, cols = config.rows, config.columns
    positions = centres - (cols - 1) / 2.0 * pixel * row_dir - (rows - 1) / 2.0 * pixel * col_dir
    return SeriesGeometry(
        rows=rows,
        columns=cols,
        pixel_spacing=(pixel, pixel),
        orientation=orientation,
        positions=positions,
        slice_thickness_mm=thickness,
        slice_spacing_mm=spacing,
        gantry_tilt_deg=tilt,
        pose=pose,
    )
