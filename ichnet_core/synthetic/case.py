"""One synthetic head-CT case: :class:`SyntheticCase` and :func:`generate_case`.

A case is fully determined by its seed and config. The seed is split into independent streams
(anatomy, geometry, hemorrhage, incidental findings, scanner), so asking the same seed for a
negative and for an EDH gives the same head with and without the bleed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ichnet_core.imaging.measure import label_volume_ml, voxel_volumes_ml
from ichnet_core.labels import CLASS_NAMES, HEMORRHAGE, SUBTYPES
from ichnet_core.synthetic.anatomy import Anatomy, sample_anatomy, scalp_top_points
from ichnet_core.synthetic.config import SyntheticConfig
from ichnet_core.synthetic.geometry import (
    SeriesGeometry,
    sample_geometry,
    sample_pose,
    slice_extents_mm,
)
from ichnet_core.synthetic.hemorrhage import SlicePlanes, plan_hemorrhages
from ichnet_core.synthetic.incidental import Incidentals, sample_incidentals
from ichnet_core.synthetic.lesions import HemorrhagePlan
from ichnet_core.synthetic.realism import Realism, sample_realism
from ichnet_core.synthetic.render import RenderedSeries, apply_scanner, render_series
from ichnet_core.synthetic.scanner import Cupping, StorageConvention, sample_scanner

logger = logging.getLogger(__name__)

#: Independent random streams derived from a seed. New streams go at the end: a stream's seed
#: depends only on its position, so the earlier ones (and the cases they make) stay the same.
_STREAMS = ("anatomy", "geometry", "hemorrhage", "incidental", "scanner", "noise", "realism")
#: Attempts at placing lesions before giving up; each retry enlarges the lesions.
MAX_ATTEMPTS = 6
RETRY_VOLUME_GROWTH = 1.6
#: A subtype is present only where its labelled blood covers at least this much of one slice
#: (mm^2, e.g. a 2 x 5 mm sliver): a few voxels left over where bone hides the rest of a thin
#: rim are not a finding a reader could make (2026-12-05: a test case had had an "epidural
#: haematoma" of 66 voxels over several slices, a single one with the trial 140 HU rule).
MIN_VISIBLE_AREA_MM2 = 10.0
#: Probability of 1, 2, 3 or 4 subtypes in a random positive case.
SUBTYPE_COUNT_P = (0.55, 0.3, 0.12, 0.03)
#: How likely each subtype accompanies another (rows/columns in SUBTYPES order): trauma mixes
#: SDH/SAH/EDH/contusions, hypertensive bleeds extend into the ventricles.
CO_OCCURRENCE = np.array(
    [
        [0.0, 3.0, 0.5, 1.0, 1.5],  # CPH
        [3.0, 0.0, 0.3, 0.7, 2.0],  # IVH
        [0.7, 0.3, 0.0, 2.0, 1.5],  # EDH
        [1.5, 0.7, 2.0, 0.0, 2.5],  # SDH
        [1.5, 2.0, 1.0, 2.5, 0.0],  # SAH
    ]
)
#: Head reach (canonical mm) from the origin to the back of the scalp, for the head holder.
_BACK_OF_HEAD_MM = 100.0


@dataclass(frozen=True)
class SyntheticCase:
    """A synthetic axial head-CT series with its ground truth.

    Attributes
    ----------
    hu:
        ``(S, rows, columns)`` float32 Hounsfield units (integers, as stored); slice 0 is the
        most inferior (skull base), the last the vertex. Outside the reconstruction circle -1024.
    labels:
        ``(S, rows, columns)`` uint8: 0 non-brain, 1 brain, 2 hemorrhage.
    subtype_masks:
        ``(5, S, rows, columns)`` bool in SUBTYPES order; disjoint, their union is label 2.
    slice_labels:
        ``(S, 6)`` uint8 in CLASS_NAMES order: a slice is positive for a subtype when it holds a
        voxel of it; ``any`` is their union.
    subject_labels:
        ``(6,)`` uint8: positive when any slice is.
    hemorrhage_volume_ml:
        Hemorrhage voxels x pixel area x slice extent / 1000 (docs/architecture.md).
    pixel_spacing:
        (row spacing, column spacing) mm.
    positions:
        ``(S, 3)`` ImagePositionPatient.
    orientation:
        ImageOrientationPatient (six direction cosines).
    slice_thickness_mm:
        SliceThickness.
    seed:
        The seed the case was generated from.
    gantry_tilt_deg:
        Gantry/Detector Tilt.
    storage:
        How Pixel Data stores the HU (rescale, signedness, padding).
    kvp, convolution_kernel:
        Acquisition details written to the DICOM files.
    """

    hu: np.ndarray
    labels: np.ndarray
    subtype_masks: np.ndarray
    slice_labels: np.ndarray
    subject_labels: np.ndarray
    hemorrhage_volume_ml: float
    pixel_spacing: tuple[float, float]
    positions: np.ndarray
    orientation: tuple[float, ...]
    slice_thickness_mm: float
    seed: int
    gantry_tilt_deg: float = 0.0
    storage: StorageConvention = field(default_factory=StorageConvention)
    kvp: float = 120.0
    convolution_kernel: str = "STANDARD"

    def __post_init__(self) -> None:
        s = self.hu.shape[0]
        expected = {
            "labels": (self.labels.shape, self.hu.shape),
            "subtype_masks": (self.subtype_masks.shape, (len(SUBTYPES), *self.hu.shape)),
            "slice_labels": (self.slice_labels.shape, (s, len(CLASS_NAMES))),
            "subject_labels": (self.subject_labels.shape, (len(CLASS_NAMES),)),
            "positions": (self.positions.shape, (s, 3)),
        }
        for name, (found, want) in expected.items():
            if tuple(found) != tuple(want):
                raise ValueError(f"SyntheticCase.{name} must have shape {want}; found {found}")
        if len(self.orientation) != 6:
            raise ValueError(
                f"SyntheticCase.orientation needs 6 direction cosines; found {len(self.orientation)}"
            )

    @property
    def num_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row direction x column direction)."""
        o = np.asarray(self.orientation, dtype=np.float64)
        return np.cross(o[:3], o[3:])

    def slice_extents_mm(self) -> np.ndarray:
        """``(S,)`` thickness each slice stands for (half the distance to each neighbour)."""
        return slice_extents_mm(self.positions, self.normal, self.slice_thickness_mm)

    @property
    def subtypes(self) -> tuple[str, ...]:
        """Subtypes present in the case, in SUBTYPES order."""
        return tuple(
            name
            for name, flag in zip(CLASS_NAMES[1:], self.subject_labels[1:], strict=True)
            if flag
        )


def hemorrhage_volume_ml(
    labels: np.ndarray, pixel_spacing: tuple[float, float], extents_mm: np.ndarray
) -> float:
    """Hemorrhage volume by the one volume rule (``ichnet_core.imaging.measure``)."""
    return label_volume_ml(labels, HEMORRHAGE, voxel_volumes_ml(pixel_spacing, extents_mm))


def label_summary(subtype_masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slice-level ``(S, 6)`` and subject-level ``(6,)`` labels from per-subtype masks."""
    per_slice = np.any(subtype_masks, axis=(2, 3)).T  # (S, 5)
    slice_labels = np.concatenate([per_slice.any(axis=1, keepdims=True), per_slice], axis=1).astype(
        np.uint8
    )
    return slice_labels, np.asarray(slice_labels.any(axis=0), dtype=np.uint8)


def _choose_subtypes(
    rng: np.random.Generator,
    config: SyntheticConfig,
    subtypes: Sequence[str] | None,
    hemorrhage: bool | None,
) -> tuple[str, ...]:
    if subtypes is not None:
        if isinstance(subtypes, str):
            raise TypeError(
                f"subtypes must be a sequence of names such as ('EDH',); found the string {subtypes!r}"
            )
        unknown = [s for s in subtypes if s not in SUBTYPES]
        if unknown:
            raise ValueError(
                f"unknown hemorrhage subtype(s) {unknown}; expected names from {SUBTYPES}"
            )
        chosen = tuple(s for s in SUBTYPES if s in subtypes)
        if hemorrhage is False and chosen:
            raise ValueError(f"hemorrhage=False contradicts subtypes={tuple(subtypes)!r}")
        if hemorrhage is True and not chosen:
            raise ValueError("hemorrhage=True needs at least one subtype; found subtypes=()")
        return chosen
    if hemorrhage is False:
        return ()
    if hemorrhage is None and rng.random() < config.negative_fraction:
        return ()
    count = int(rng.choice(len(SUBTYPE_COUNT_P), p=SUBTYPE_COUNT_P)) + 1
    picked = [int(rng.integers(len(SUBTYPES)))]
    while len(picked) < count:
        weight = CO_OCCURRENCE[picked].sum(axis=0)
        weight[picked] = 0.0
        picked.append(int(rng.choice(len(SUBTYPES), p=weight / weight.sum())))
    return tuple(SUBTYPES[i] for i in sorted(picked))


def _planes(geometry: SeriesGeometry) -> SlicePlanes:
    grid = geometry.grid()
    offsets = grid.base @ grid.normal
    # Supine: the patient's posterior (+y in LPS) is down.
    gravity = geometry.pose.canonical_direction(np.array([0.0, 1.0, 0.0]))
    return SlicePlanes(normal=grid.normal, offsets=offsets, gravity=gravity)


def _render_visible(
    seed: int,
    geometry: SeriesGeometry,
    anatomy: Anatomy,
    planes: SlicePlanes,
    wanted: tuple[str, ...],
    config: SyntheticConfig,
    incidentals: Incidentals,
    cupping: Cupping,
    realism: Realism,
    rng: np.random.Generator,
) -> RenderedSeries:
    """Plan and render until exactly the wanted subtypes are visible (a lesion between slices,
    squeezed out of its compartment or hidden in the inner-table band is re-planned larger)."""
    pixel_mm2 = float(np.prod(geometry.pixel_spacing))
    for attempt in range(MAX_ATTEMPTS):
        plan = HemorrhagePlan()
        if wanted:
            growth = RETRY_VOLUME_GROWTH**attempt
            plan = plan_hemorrhages(
                rng, anatomy, planes, wanted, config.hemorrhage_volume_ml, growth
            )
        rendered = render_series(geometry, anatomy, plan, incidentals, cupping, realism)
        areas = rendered.subtype_masks.sum(axis=(2, 3)).max(axis=1) * pixel_mm2
        present = {s for s, a in zip(SUBTYPES, areas, strict=True) if a >= MIN_VISIBLE_AREA_MM2}
        if present == set(wanted):
            return rendered
        logger.debug(
            "seed %d attempt %d: wanted %s, visible %s; retrying",
            seed,
            attempt,
            wanted,
            sorted(present),
        )
    raise RuntimeError(
        f"seed {seed}: could not make subtypes {wanted} visible after {MAX_ATTEMPTS} attempts"
    )


def generate_case(
    seed: int,
    config: SyntheticConfig | None = None,
    *,
    subtypes: Sequence[str] | None = None,
    hemorrhage: bool | None = None,
) -> SyntheticCase:
    """Generate one synthetic head-CT case.

    Parameters
    ----------
    seed:
        Non-negative integer; the same seed and config always give the same case.
    config:
        Matrix size and randomisation ranges (defaults: a realistic, diverse population).
    subtypes:
        Exactly these subtypes are present (e.g. ``("EDH",)``); ``None`` leaves it to chance.
    hemorrhage:
        ``False`` for a negative case, ``True`` for a random positive one, ``None`` (with
        ``subtypes=None``) for a random case, negative with probability
        ``config.negative_fraction``.

    Returns
    -------
    SyntheticCase

    Raises
    ------
    ValueError
        For a negative seed, an unknown subtype or contradicting arguments.
    RuntimeError
        When the requested subtypes could not be made visible (not expected in practice).
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; found {seed!r}")
    config = config or SyntheticConfig()
    streams = dict(
        zip(_STREAMS, np.random.SeedSequence(int(seed)).spawn(len(_STREAMS)), strict=True)
    )

    def rng(name: str) -> np.random.Generator:
        return np.random.default_rng(streams[name])

    anatomy: Anatomy = sample_anatomy(rng("anatomy"), config.atrophy)
    geometry_rng = rng("geometry")
    pose = sample_pose(geometry_rng, config)
    geometry = sample_geometry(geometry_rng, config, pose, scalp_top_points(anatomy))
    lesion_rng = rng("hemorrhage")
    wanted = _choose_subtypes(lesion_rng, config, subtypes, hemorrhage)
    reach = _BACK_OF_HEAD_MM * float(pose.scale[1])
    incidentals = sample_incidentals(
        rng("incidental"), anatomy, config.incidental_probability, reach
    )
    scanner = sample_scanner(rng("scanner"), config, geometry.slice_thickness_mm)
    realism = sample_realism(rng("realism"), config, anatomy)
    if realism.calcifications:
        incidentals = dataclasses.replace(
            incidentals, calcifications=incidentals.calcifications + realism.calcifications
        )
    if realism.streak_gain != 1.0:
        scanner = dataclasses.replace(
            scanner,
            streak_hu=scanner.streak_hu * realism.streak_gain,
            bar_hu=scanner.bar_hu * realism.streak_gain,
        )
    planes = _planes(geometry)

    rendered = _render_visible(
        seed,
        geometry,
        anatomy,
        planes,
        wanted,
        config,
        incidentals,
        scanner.cupping,
        realism,
        lesion_rng,
    )
    hu = apply_scanner(rendered.hu, geometry, scanner, rng("noise"))
    slice_labels, subject_labels = label_summary(rendered.subtype_masks)
    volume = hemorrhage_volume_ml(
        rendered.labels, geometry.pixel_spacing, geometry.slice_extents_mm()
    )
    logger.debug(
        "seed %d: %d slices, subtypes %s, %.2f mL",
        seed,
        geometry.num_slices,
        wanted or "none",
        volume,
    )
    return SyntheticCase(
        hu=hu,
        labels=rendered.labels,
        subtype_masks=rendered.subtype_masks,
        slice_labels=slice_labels,
        subject_labels=subject_labels,
        hemorrhage_volume_ml=volume,
        pixel_spacing=geometry.pixel_spacing,
        positions=geometry.positions,
        orientation=geometry.orientation,
        slice_thickness_mm=geometry.slice_thickness_mm,
        seed=int(seed),
        gantry_tilt_deg=geometry.gantry_tilt_deg,
        storage=scanner.storage,
        kvp=scanner.kvp,
        convolution_kernel=scanner.kernel,
    )
