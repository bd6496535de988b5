"""PhysioNet "Computed Tomography Images for Intracranial Hemorrhage Detection and Segmentation".

Hssayeni et al. 2020 (CT-ICH, PhysioNet, v1.3.1): 75 head CT scans of trauma patients, about 30
slices of 5 mm each, layout::

    ct_scans/049.nii ... 130.nii        CT in Hounsfield units (subjects 59-65 are absent)
    masks/049.nii ...                   hemorrhage outlines (> 0 = hemorrhage, any subtype)
    hemorrhage_diagnosis_raw_ct.csv     PatientNumber, SliceNumber, Intraventricular,
                                        Intraparenchymal, Subarachnoid, Epidural, Subdural,
                                        No_Hemorrhage, Fracture_Yes_No   (one row per slice)

``SliceNumber`` counts from 1 along the third axis of the NIfTI array. The masks outline bleeds
but not the brain, so cases are :attr:`SegKind.HEMORRHAGE`; slice labels come from the CSV and
the subject label is derived from them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np

from ichnet_core.imaging.measure import slice_extents_mm
from ichnet_core.labels import CLASS_NAMES, HEMORRHAGE
from training.data.case import (
    ANY_COLUMN,
    SUBTYPE_COLUMNS,
    LabelledCase,
    SegKind,
    subject_from_slices,
    unknown_labels,
)
from training.data.csv_utils import LabelFileError, binary, read_rows
from training.data.nifti import NiftiError, load_image, load_label_map
from training.data.source import CaseEntry, CaseSource

logger = logging.getLogger(__name__)

LABELS_CSV: Final[str] = "hemorrhage_diagnosis_raw_ct.csv"
SCANS_DIR: Final[str] = "ct_scans"
MASKS_DIR: Final[str] = "masks"
#: CSV subtype columns and the class each one is.
SUBTYPE_COLUMNS_CSV: Final[dict[str, str]] = {
    "Intraparenchymal": "CPH",
    "Intraventricular": "IVH",
    "Epidural": "EDH",
    "Subdural": "SDH",
    "Subarachnoid": "SAH",
}
NO_HEMORRHAGE_COLUMN: Final[str] = "No_Hemorrhage"
PATIENT_COLUMN: Final[str] = "PatientNumber"
SLICE_COLUMN: Final[str] = "SliceNumber"
#: The CSV numbers slices along the NIfTI array's third axis.
CSV_SLICE_AXIS: Final[int] = 2
_SCAN_NAME = re.compile(r"^(\d+)\.nii(\.gz)?$")


def read_slice_labels(path: Path) -> dict[int, dict[int, np.ndarray]]:
    """Per patient, per 1-based slice number, the (6,) label row (NaN where undecided).

    ``any`` is 1 when No_Hemorrhage is 0 or a subtype is marked. A slice marked as bleeding
    without any subtype keeps its subtypes unknown rather than calling them all negative.

    Raises
    ------
    LabelFileError
        Missing columns, values other than 0/1, or a slice listed twice.
    """
    required = [PATIENT_COLUMN, SLICE_COLUMN, NO_HEMORRHAGE_COLUMN, *SUBTYPE_COLUMNS_CSV]
    labels: dict[int, dict[int, np.ndarray]] = {}
    for line, row in read_rows(path, required):
        try:
            patient, slice_number = int(row[PATIENT_COLUMN]), int(row[SLICE_COLUMN])
        except ValueError:
            raise LabelFileError(
                f"{path}:{line}: {PATIENT_COLUMN}/{SLICE_COLUMN} must be integers, found "
                f"{row[PATIENT_COLUMN]!r}/{row[SLICE_COLUMN]!r}"
            ) from None
        if slice_number < 1:
            raise LabelFileError(
                f"{path}:{line}: {SLICE_COLUMN} counts from 1, found {slice_number}"
            )
        values = unknown_labels()
        for column, subtype in SUBTYPE_COLUMNS_CSV.items():
            values[CLASS_NAMES.index(subtype)] = binary(path, line, column, row[column])
        no_hemorrhage = binary(path, line, NO_HEMORRHAGE_COLUMN, row[NO_HEMORRHAGE_COLUMN])
        marked = bool(np.nanmax(values[SUBTYPE_COLUMNS]) == 1)
        if no_hemorrhage and marked:
            logger.warning(
                "%s:%d patient %d slice %d: No_Hemorrhage=1 but a subtype is marked; counted as "
                "hemorrhage",
                path,
                line,
                patient,
                slice_number,
            )
        values[ANY_COLUMN] = 1.0 if (marked or not no_hemorrhage) else 0.0
        if values[ANY_COLUMN] == 1 and not marked:
            values[SUBTYPE_COLUMNS] = np.nan
        per_patient = labels.setdefault(patient, {})
        if slice_number in per_patient:
            raise LabelFileError(
                f"{path}:{line}: patient {patient} slice {slice_number} listed twice"
            )
        per_patient[slice_number] = values
    return labels


class PhysioNetIchSource(CaseSource):
    """The CT-ICH scans under ``root`` (one case per patient).

    Parameters
    ----------
    root:
        Folder holding ``ct_scans/``, ``masks/`` and the labels CSV.
    labels_csv, scans_dir, masks_dir:
        Names inside ``root`` (defaults as published).
    """

    name = "physionet"

    def __init__(
        self,
        root: Path,
        *,
        labels_csv: str = LABELS_CSV,
        scans_dir: str = SCANS_DIR,
        masks_dir: str = MASKS_DIR,
    ) -> None:
        self.root = Path(root)
        self.scans_dir = self.root / scans_dir
        self.masks_dir = self.root / masks_dir
        self.labels_path = self.root / labels_csv
        if not self.scans_dir.is_dir():
            raise FileNotFoundError(f"PhysioNet CT-ICH: scan folder {self.scans_dir} not found")
        self.labels = read_slice_labels(self.labels_path)
        scans: list[tuple[int, Path]] = []
        for path in sorted(self.scans_dir.iterdir()):
            match = _SCAN_NAME.match(path.name)
            if match:
                scans.append((int(match.group(1)), path))
        unlabelled = [number for number, _ in scans if number not in self.labels]
        if unlabelled:
            logger.warning("%s: scans %s have no rows in %s", self.root, unlabelled, labels_csv)
        self._scans = tuple(sorted(scans))
        self._entries = tuple(
            CaseEntry(case_id=f"{self.name}/{number:03d}", group_id=f"{self.name}/{number:03d}")
            for number, _ in self._scans
        )
        logger.info("PhysioNet CT-ICH at %s: %d scans", self.root, len(self._entries))

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def _mask_path(self, scan: Path) -> Path | None:
        for candidate in (self.masks_dir / scan.name, self.masks_dir / f"{scan.name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def load(self, index: int) -> LabelledCase:
        number, scan_path = self._scans[index]
        entry = self._entries[index]
        image = load_image(scan_path)
        if image.source_slice_axis != CSV_SLICE_AXIS:
            raise NiftiError(
                f"{scan_path}: axial slices lie along array axis {image.source_slice_axis}, but "
                f"{self.labels_path.name} numbers slices along axis {CSV_SLICE_AXIS}"
            )
        slices = image.data.shape[0]
        per_file_slice = unknown_labels(slices)
        rows = self.labels.get(number, {})
        beyond = sorted(n for n in rows if n > slices)
        if beyond:
            raise LabelFileError(
                f"{self.labels_path}: patient {number} lists slices {beyond} but {scan_path.name} "
                f"has {slices}"
            )
        for slice_number, values in rows.items():
            per_file_slice[slice_number - 1] = values
        slice_labels = image.reorder_file_slices(per_file_slice)

        seg = None
        mask_path = self._mask_path(scan_path)
        if mask_path is not None:
            mask = load_label_map(mask_path, like=scan_path)
            seg = np.where(mask.data > 0, HEMORRHAGE, 0).astype(np.uint8)
            masked = np.any(seg == HEMORRHAGE, axis=(1, 2))
            disagree = np.flatnonzero(masked & (slice_labels[:, ANY_COLUMN] == 0))
            if disagree.size:
                logger.warning(
                    "%s: mask outlines hemorrhage on slices %s that the CSV calls negative",
                    entry.case_id,
                    [image.file_slice_index(int(i)) + 1 for i in disagree],
                )
        else:
            logger.warning("%s: no mask file in %s", entry.case_id, self.masks_dir)

        offsets = np.arange(slices, dtype=np.float64) * image.slice_spacing_mm
        return LabelledCase(
            case_id=entry.case_id,
            group_id=entry.group_id,
            hu=image.data,
            pixel_spacing=image.pixel_spacing,
            slice_extent_mm=slice_extents_mm(offsets, image.slice_spacing_mm),
            seg=seg,
            seg_kind=SegKind.HEMORRHAGE if seg is not None else SegKind.NONE,
            slice_labels=slice_labels,
            subject_labels=subject_from_slices(slice_labels),
        )
