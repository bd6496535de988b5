"""Generic NIfTI image + label-map datasets (BHSD, INSTANCE 2022 and similar layouts).

Layout::

    <root>/<image_dir>/<case>.nii.gz           CT (HU)
    <root>/<label_dir>/<case>.nii.gz           integer label map, same grid

Images written for nnU-Net carry a channel suffix (``<case>_0000.nii.gz``); it is ignored when
pairing an image with its label. What each label value means is configuration
(``label_map``: value -> class). Presets:

* ``bhsd`` (Wu et al. 2023, ``dataset.json``): 1 epidural, 2 intraparenchymal,
  3 intraventricular, 4 subarachnoid, 5 subdural. BHSD volumes come from the RSNA 2019 data: do
  not train on RSNA and test on BHSD (or the reverse) without removing the shared studies.
* ``instance`` (INSTANCE 2022): 1 = hemorrhage, subtype not given.

Classes a value can map to: the subtypes ``CPH IVH EDH SDH SAH``, ``hemorrhage`` (subtype
unknown) and ``brain``. Value 0 is background. With a ``brain`` value the map is a complete
non-brain / brain / hemorrhage segmentation (:attr:`SegKind.FULL`); without, only hemorrhage is
known (:attr:`SegKind.HEMORRHAGE`) and the brain is left unlabelled, never invented. Slice labels
follow from the map: ``any`` always, a subtype where the map names subtypes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np

from ichnet_core.imaging.measure import slice_extents_mm
from ichnet_core.labels import BRAIN, HEMORRHAGE, NON_BRAIN, SUBTYPES
from training.data.case import (
    ANY_COLUMN,
    LabelledCase,
    SegKind,
    slices_from_hemorrhage_mask,
    slices_from_subtype_masks,
    subject_from_slices,
)
from training.data.nifti import NiftiError, load_image, load_label_map
from training.data.source import CaseEntry, CaseSource

logger = logging.getLogger(__name__)

#: Class name for hemorrhage whose subtype the dataset does not give.
HEMORRHAGE_UNSPECIFIED: Final[str] = "hemorrhage"
#: Class name for brain (makes the label map a complete 3-class segmentation).
BRAIN_CLASS: Final[str] = "brain"
LABEL_CLASSES: Final[frozenset[str]] = frozenset({*SUBTYPES, HEMORRHAGE_UNSPECIFIED, BRAIN_CLASS})
PRESETS: Final[Mapping[str, Mapping[int, str]]] = {
    "bhsd": {1: "EDH", 2: "CPH", 3: "IVH", 4: "SAH", 5: "SDH"},
    "instance": {1: HEMORRHAGE_UNSPECIFIED},
}
_NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def resolve_label_map(label_map: str | Mapping[int, str]) -> dict[int, str]:
    """A preset name or an explicit mapping, checked.

    Raises
    ------
    ValueError
        Unknown preset, value 0 mapped (it is background), or an unknown class name.
    """
    if isinstance(label_map, str):
        try:
            return dict(PRESETS[label_map])
        except KeyError:
            raise ValueError(
                f"unknown label map preset {label_map!r}; presets: {sorted(PRESETS)}"
            ) from None
    resolved = {int(value): str(name) for value, name in label_map.items()}
    if 0 in resolved:
        raise ValueError("label value 0 is background and cannot be mapped to a class")
    unknown = sorted({name for name in resolved.values()} - LABEL_CLASSES)
    if unknown:
        raise ValueError(f"label map classes {unknown} unknown; allowed: {sorted(LABEL_CLASSES)}")
    if not any(name != BRAIN_CLASS for name in resolved.values()):
        raise ValueError(f"label map {resolved} names no hemorrhage class")
    return resolved


def case_name(path: Path) -> str:
    """File name without ``.nii``/``.nii.gz`` and without an nnU-Net channel suffix."""
    return _CHANNEL_SUFFIX.sub("", _NIFTI_SUFFIX.sub("", path.name))


class NiftiLabelMapSource(CaseSource):
    """Images with label maps; images without a label file are skipped (logged).

    Parameters
    ----------
    root:
        Dataset folder.
    label_map:
        Preset name (``bhsd``, ``instance``) or ``{value: class}``.
    image_dir, label_dir:
        Sub-folders of ``root``.
    name:
        Source name used in case ids.
    """

    def __init__(
        self,
        root: Path,
        label_map: str | Mapping[int, str],
        *,
        image_dir: str = "images",
        label_dir: str = "labels",
        name: str = "nifti",
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.label_map = resolve_label_map(label_map)
        self.full = BRAIN_CLASS in self.label_map.values()
        self.subtyped = all(name in (*SUBTYPES, BRAIN_CLASS) for name in self.label_map.values())
        images_dir, labels_dir = self.root / image_dir, self.root / label_dir
        for folder in (images_dir, labels_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{name}: folder {folder} not found")
        labels = {
            case_name(path): path
            for path in sorted(labels_dir.iterdir())
            if _NIFTI_SUFFIX.search(path.name)
        }
        pairs: list[tuple[str, Path, Path]] = []
        skipped = []
        for path in sorted(images_dir.iterdir()):
            if not _NIFTI_SUFFIX.search(path.name):
                continue
            key = case_name(path)
            if key in labels:
                pairs.append((key, path, labels[key]))
            else:
                skipped.append(key)
        if skipped:
            logger.info("%s: %d images without a label map skipped", name, len(skipped))
        self._pairs = tuple(pairs)
        self._entries = tuple(
            CaseEntry(case_id=f"{name}/{key}", group_id=f"{name}/{key}") for key, _, _ in pairs
        )
        logger.info("%s at %s: %d labelled images", name, self.root, len(pairs))

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def load(self, index: int) -> LabelledCase:
        _, image_path, label_path = self._pairs[index]
        entry = self._entries[index]
        image = load_image(image_path)
        raw = load_label_map(label_path, like=image_path).data
        present = {int(v) for v in np.unique(raw)} - {0}
        unmapped = sorted(present - set(self.label_map))
        if unmapped:
            raise NiftiError(
                f"{label_path}: label values {unmapped} are not in the label map {self.label_map}"
            )
        seg = np.full(raw.shape, NON_BRAIN, dtype=np.uint8)
        subtype_masks = np.zeros((len(SUBTYPES), *raw.shape), dtype=bool)
        for value, name in self.label_map.items():
            where = raw == value
            if name == BRAIN_CLASS:
                seg[where] = BRAIN
                continue
            seg[where] = HEMORRHAGE
            if name in SUBTYPES:
                subtype_masks[SUBTYPES.index(name)] |= where
        if self.subtyped:
            slice_labels = slices_from_subtype_masks(subtype_masks)
        else:
            slice_labels = slices_from_hemorrhage_mask(seg == HEMORRHAGE)
            # Subtypes the map does name are still known wherever they are marked.
            marked = slices_from_subtype_masks(subtype_masks)
            slice_labels[marked == 1] = 1.0
            slice_labels[:, ANY_COLUMN] = np.any(seg == HEMORRHAGE, axis=(1, 2))
        offsets = np.arange(image.data.shape[0], dtype=np.float64) * image.slice_spacing_mm
        return LabelledCase(
            case_id=entry.case_id,
            group_id=entry.group_id,
            hu=image.data,
            pixel_spacing=image.pixel_spacing,
            slice_extent_mm=slice_extents_mm(offsets, image.slice_spacing_mm),
            seg=seg,
            seg_kind=SegKind.FULL if self.full else SegKind.HEMORRHAGE,
            slice_labels=slice_labels,
            subject_labels=subject_from_slices(slice_labels),
        )
