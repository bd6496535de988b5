"""Writers for tiny, format-faithful dataset fixtures (DICOM via pydicom, NIfTI via nibabel)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

#: Pixel value pattern: slice ``k`` of a fixture series holds ``BASE_HU + STEP_HU * k`` HU, so
#: a test reads the slice order back from the pixels.
BASE_HU = 10.0
STEP_HU = 10.0


def ct_slice(
    path: Path,
    *,
    z: float,
    hu: float,
    sop_uid: str,
    study_uid: str,
    series_uid: str,
    patient_id: str,
    size: int = 8,
    rsna_style: bool = False,
    description: str | None = None,
    thickness: float | None = None,
) -> None:
    """Write one axial CT slice at height ``z`` whose pixels all hold ``hu``.

    ``rsna_style`` writes only the attributes the RSNA 2019 files carry (no SOP Class,
    FrameOfReference or SliceThickness; ``ID_...`` UIDs; 12 bits stored, unsigned, intercept
    -1024) and pydicom's file meta; otherwise a conventional CT Image Storage instance.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    if not rsna_style:
        ds.SOPClassUID = CTImageStorage
        ds.FrameOfReferenceUID = f"{study_uid}.9"
        ds.SliceThickness = str(thickness if thickness is not None else 5.0)
    if description is not None:
        ds.SeriesDescription = description
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.ImagePositionPatient = ["-2.0", "-2.0", f"{z:.3f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = "40", "80"
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PixelData = np.full((size, size), hu + 1024, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_series(
    folder: Path,
    heights: Sequence[float],
    *,
    study_uid: str,
    series_uid: str,
    patient_id: str,
    names: Sequence[str] | None = None,
    sop_uids: Sequence[str] | None = None,
    **kwargs: object,
) -> list[str]:
    """Write slices at ``heights`` (any order); slice order by height k gets ``BASE + STEP*k`` HU.

    Returns the SOP Instance UIDs in the order of ``heights``.
    """
    ranks = np.argsort(np.argsort(heights))
    sop_uids = list(sop_uids) if sop_uids is not None else [generate_uid() for _ in heights]
    for index, z in enumerate(heights):
        name = names[index] if names is not None else f"CT{index:06d}.dcm"
        ct_slice(
            folder / name,
            z=z,
            hu=BASE_HU + STEP_HU * float(ranks[index]),
            sop_uid=sop_uids[index],
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id=patient_id,
            **kwargs,  # type: ignore[arg-type]
        )
    return sop_uids


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: type = np.int16) -> None:
    """Write ``data`` with ``affine`` (``.nii`` or ``.nii.gz`` by the file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
