"""One labelled CT series as every loader delivers it, and the label derivations that are sound.

Public ICH datasets label different things: RSNA labels slices, CQ500 labels subjects, PhysioNet
CT-ICH labels slices and outlines hemorrhage (but not brain), BHSD outlines each subtype, the
synthetic generator knows everything. A :class:`LabelledCase` carries exactly what its source knows
and marks the rest as unknown, so the loss can train the heads a case supports and mask the others;
nothing is filled in with a guess.

Conventions
-----------
* ``hu`` is ``(S, rows, columns)`` in Hounsfield units, slices ordered inferior to superior along
  the slice normal, rows running anterior to posterior and columns patient right to left (the
  DICOM LPS axial display: patient left on the image right).
* Classification labels are float32 with ``NaN`` for *unknown*; columns follow
  ``ichnet_core.labels.CLASS_NAMES`` = (any, CPH, IVH, EDH, SDH, SAH).
* ``seg`` holds the segmentation classes of ``ichnet_core.labels``; which of them are meaningful
  is said by ``seg_kind`` (:class:`SegKind`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np

from ichnet_core.imaging.measure import label_volume_ml, voxel_volumes_ml
from ichnet_core.labels import HEMORRHAGE, NO_COMPARTMENT, NUM_CLASSIFICATION_OUTPUTS, SUBTYPES

#: Column of ``any`` in every classification label array.
ANY_COLUMN: Final[int] = 0
#: Columns of the subtypes, in ``SUBTYPES`` order.
SUBTYPE_COLUMNS: Final[slice] = slice(1, 1 + len(SUBTYPES))


class SegKind(enum.Enum):
    """Which segmentation classes of a case are known.

    ``FULL``: every pixel is non-brain (0), brain (1) or hemorrhage (2) (synthetic data).
    ``HEMORRHAGE``: only hemorrhage (2) versus not-hemorrhage (0) is known; a 0 pixel may be
    brain or non-brain (PhysioNet CT-ICH, BHSD, INSTANCE outline bleeds, not the brain).
    ``NONE``: no segmentation (RSNA, CQ500).
    """

    FULL = "full"
    HEMORRHAGE = "hemorrhage"
    NONE = "none"


def unknown_labels(*shape: int) -> np.ndarray:
    """A float32 label array of ``shape`` + (6,) with every entry unknown (NaN)."""
    return np.full((*shape, NUM_CLASSIFICATION_OUTPUTS), np.nan, dtype=np.float32)


@dataclass(frozen=True)
class LabelledCase:
    """One CT series with the labels its dataset provides.

    Attributes
    ----------
    case_id:
        Unique name within all sources, ``"<source>/<id>"`` (logs, reports, caches).
    group_id:
        The unit of data splitting: cases of one patient share it, so that one patient never
        lands in two splits.
    hu:
        ``(S, rows, columns)`` float32 Hounsfield units, slices inferior to superior.
    pixel_spacing:
        (row spacing, column spacing) in mm.
    slice_extent_mm:
        ``(S,)`` thickness each slice stands for along the normal (volume computation).
    seg:
        ``(S, rows, columns)`` uint8 segmentation (values per ``seg_kind``) or ``None``.
    seg_kind:
        Which segmentation classes are known.
    slice_labels:
        ``(S, 6)`` float32, NaN = unknown, or ``None`` when the source has no slice labels.
    subject_labels:
        ``(6,)`` float32, NaN = unknown, or ``None``.
    compartments:
        ``(S, rows, columns)`` uint8 compartment of each hemorrhage voxel (``1 +`` its
        ``SUBTYPES`` index; 0 = no hemorrhage or compartment unknown), or ``None`` when the
        source outlines no compartments.
    """

    case_id: str
    group_id: str
    hu: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_extent_mm: np.ndarray
    seg: np.ndarray | None = None
    seg_kind: SegKind = SegKind.NONE
    slice_labels: np.ndarray | None = None
    subject_labels: np.ndarray | None = None
    compartments: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.hu.ndim != 3 or min(self.hu.shape) < 1:
            raise ValueError(
                f"case {self.case_id}: hu must be (S, rows, columns), got {self.hu.shape}"
            )
        slices = self.hu.shape[0]
        if self.slice_extent_mm.shape != (slices,):
            raise ValueError(
                f"case {self.case_id}: slice_extent_mm shape {self.slice_extent_mm.shape} does "
                f"not match {slices} slices"
            )
        if (self.seg is None) != (self.seg_kind is SegKind.NONE):
            raise ValueError(
                f"case {self.case_id}: seg is {'absent' if self.seg is None else 'present'} but "
                f"seg_kind is {self.seg_kind.value}"
            )
        if self.seg is not None and self.seg.shape != self.hu.shape:
            raise ValueError(
                f"case {self.case_id}: seg shape {self.seg.shape} does not match hu {self.hu.shape}"
            )
        if self.compartments is not None and self.compartments.shape != self.hu.shape:
            raise ValueError(
                f"case {self.case_id}: compartments shape {self.compartments.shape} does not "
                f"match hu {self.hu.shape}"
            )
        if self.slice_labels is not None and self.slice_labels.shape != (
            slices,
            NUM_CLASSIFICATION_OUTPUTS,
        ):
            raise ValueError(
                f"case {self.case_id}: slice_labels shape {self.slice_labels.shape}, expected "
                f"({slices}, {NUM_CLASSIFICATION_OUTPUTS})"
            )
        if self.subject_labels is not None and self.subject_labels.shape != (
            NUM_CLASSIFICATION_OUTPUTS,
        ):
            raise ValueError(
                f"case {self.case_id}: subject_labels shape {self.subject_labels.shape}, "
                f"expected ({NUM_CLASSIFICATION_OUTPUTS},)"
            )
        for name in ("slice_labels", "subject_labels"):
            labels = getattr(self, name)
            if labels is not None:
                known = labels[~np.isnan(labels)]
                if not np.all((known == 0) | (known == 1)):
                    raise ValueError(
                        f"case {self.case_id}: {name} must be 0, 1 or NaN, found "
                        f"{sorted(set(known.tolist()))}"
                    )

    @property
    def num_slices(self) -> int:
        return int(self.hu.shape[0])

    def voxel_volumes_ml(self) -> np.ndarray:
        """``(S,)`` volume of one pixel of each slice in mL."""
        return voxel_volumes_ml(self.pixel_spacing, self.slice_extent_mm)

    def hemorrhage_volume_ml(self) -> float | None:
        """Labelled hemorrhage volume in mL, or ``None`` without a segmentation."""
        if self.seg is None:
            return None
        return label_volume_ml(self.seg, HEMORRHAGE, self.voxel_volumes_ml())


def subject_from_slices(slice_labels: np.ndarray) -> np.ndarray:
    """The subject labels that complete-or-partial slice labels imply, NaN where they do not.

    A subject is positive for a class when any slice is (../shared/DESIGN.md, "Label
    conventions"). So one known positive slice makes the subject positive, and the subject is
    negative only when *every* slice is known negative; otherwise it stays unknown.

    Parameters
    ----------
    slice_labels:
        ``(S, 6)`` float32 with NaN for unknown.

    Returns
    -------
    np.ndarray
        ``(6,)`` float32 with NaN where the slices do not decide.
    """
    positive = np.nansum(slice_labels == 1, axis=0) > 0
    all_negative = np.all(slice_labels == 0, axis=0)
    subject = np.full(slice_labels.shape[1], np.nan, dtype=np.float32)
    subject[all_negative] = 0.0
    subject[positive] = 1.0
    return subject


def slices_from_subtype_masks(subtype_masks: np.ndarray) -> np.ndarray:
    """Slice labels of a complete subtype segmentation: positive where a slice has a voxel.

    Parameters
    ----------
    subtype_masks:
        ``(5, S, rows, columns)`` boolean-like masks in ``SUBTYPES`` order.

    Returns
    -------
    np.ndarray
        ``(S, 6)`` float32 of 0/1; ``any`` is the union of the subtypes.
    """
    if subtype_masks.ndim != 4 or subtype_masks.shape[0] != len(SUBTYPES):
        raise ValueError(
            f"subtype_masks must be ({len(SUBTYPES)}, S, rows, columns), got {subtype_masks.shape}"
        )
    per_subtype = np.any(subtype_masks != 0, axis=(2, 3)).T.astype(np.float32)  # (S, 5)
    labels = np.empty((per_subtype.shape[0], NUM_CLASSIFICATION_OUTPUTS), dtype=np.float32)
    labels[:, SUBTYPE_COLUMNS] = per_subtype
    labels[:, ANY_COLUMN] = per_subtype.max(axis=1)
    return labels


def compartments_from_subtype_masks(subtype_masks: np.ndarray) -> np.ndarray:
    """Compartment map of exclusive per-subtype masks ``(5, S, rows, columns)``.

    Returns ``(S, rows, columns)`` uint8: ``1 + SUBTYPES`` index where a mask is set, 0 elsewhere.
    Where masks overlap (no generator or loader here produces that) the first subtype wins.
    """
    if subtype_masks.ndim != 4 or subtype_masks.shape[0] != len(SUBTYPES):
        raise ValueError(
            f"subtype_masks must be ({len(SUBTYPES)}, S, rows, columns), got {subtype_masks.shape}"
        )
    masks = subtype_masks != 0
    which = np.argmax(masks, axis=0).astype(np.uint8) + 1
    return np.where(masks.any(axis=0), which, NO_COMPARTMENT).astype(np.uint8)


def slices_from_hemorrhage_mask(hemorrhage: np.ndarray) -> np.ndarray:
    """Slice labels of a hemorrhage mask without subtypes.

    ``any`` is known on every slice. Subtypes are known (0) only on slices without hemorrhage:
    no bleed means no bleed of any subtype; on a bleeding slice the subtype is unknown.

    Parameters
    ----------
    hemorrhage:
        ``(S, rows, columns)`` boolean-like mask.
    """
    bleeding = np.any(hemorrhage != 0, axis=(1, 2))
    labels = unknown_labels(hemorrhage.shape[0])
    labels[:, ANY_COLUMN] = bleeding.astype(np.float32)
    labels[~bleeding, SUBTYPE_COLUMNS] = 0.0
    return labels
