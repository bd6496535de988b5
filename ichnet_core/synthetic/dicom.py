"""Write a :class:`~ichnet_core.synthetic.case.SyntheticCase` as a CT Image Storage series.

One dataset per slice, with every Type 1 and Type 2 attribute of the modules the CT Image IOD
requires (PS3.3 A.3: Patient, General Study, General Series, Frame of Reference, General
Equipment, General Acquisition, General Image, Image Plane, Image Pixel, CT Image, SOP Common)
and File Meta Information for Explicit VR Little Endian (PS3.10 7.1). UIDs are derived from the
seed unless given, so the same case always yields the same files.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from ichnet_core import __version__
from ichnet_core.synthetic.case import SyntheticCase
from ichnet_core.synthetic.geometry import fov_circle
from ichnet_core.synthetic.scanner import to_stored

logger = logging.getLogger(__name__)

#: Entropy prefix of every UID derived from a seed.
UID_NAMESPACE = "ichnet_core.synthetic"
DEFAULT_PATIENT_NAME = "SYNTHETIC^PHANTOM"
MANUFACTURER = "ICHNet synthetic phantom"
MODEL_NAME = "ichnet_core.synthetic"
SERIES_DESCRIPTION = "SYNTHETIC HEAD CT AXIAL"
STUDY_DESCRIPTION = "CT HEAD WITHOUT CONTRAST (SYNTHETIC)"
#: Brain window written as the default VOI (Window Center / Width).
BRAIN_WINDOW = (40.0, 80.0)
SERIES_NUMBER = 2
#: Synthetic study dates spread over ten years from this day (deterministic per seed).
FIRST_STUDY_DATE = dt.date(2020, 1, 1)
DAYS_SPREAD = 3650


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=[UID_NAMESPACE, *(str(p) for p in parts)]))


def _ds(value: float) -> str:
    """Decimal String with as many digits as its 16 characters allow (PS3.5 6.2)."""
    return format_number_as_ds(float(value))


def default_patient_id(seed: int) -> str:
    """PatientID used when none is given (one synthetic 'patient' per seed)."""
    return f"SYNTH{seed:08d}"


def to_datasets(
    case: SyntheticCase,
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    patient_id: str | None = None,
    patient_name: str = DEFAULT_PATIENT_NAME,
) -> list[Dataset]:
    """One CT Image Storage dataset per slice of ``case``, inferior to superior.

    Parameters
    ----------
    case:
        The generated case.
    study_instance_uid, series_instance_uid:
        UIDs to use; derived deterministically from ``case.seed`` when ``None``.
    patient_id, patient_name:
        Patient identification (default ``SYNTH<seed>`` and ``SYNTHETIC^PHANTOM``).

    Returns
    -------
    list[pydicom.Dataset]
        Datasets with ``file_meta`` (Explicit VR Little Endian), ready for ``dcmwrite`` or
        C-STORE. Pixel Data holds ``case.hu`` through the case's storage convention, with the
        Pixel Padding Value outside the reconstruction circle.
    """
    seed = case.seed
    study_uid = study_instance_uid or _uid(seed, "study")
    series_uid = series_instance_uid or _uid(seed, "series", study_uid)
    frame_uid = _uid(seed, "frame-of-reference", series_uid)
    patient_id = default_patient_id(seed) if patient_id is None else patient_id
    date = (FIRST_STUDY_DATE + dt.timedelta(days=seed % DAYS_SPREAD)).strftime("%Y%m%d")
    time = f"{8 + seed % 10:02d}{seed % 60:02d}00"
    storage = case.storage
    rows, cols = case.hu.shape[1:]
    fov = fov_circle(rows, cols)
    normal = case.normal
    fov_mm = float(max(rows * case.pixel_spacing[0], cols * case.pixel_spacing[1]))

    datasets = []
    for k in range(case.num_slices):
        sop_uid = _uid(seed, "sop", series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"ICHNET_{__version__}"[:16]

        ds = Dataset()
        ds.file_meta = meta
        # SOP Common
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        # Patient
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        # General Study
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = date
        ds.StudyTime = time
        ds.ReferringPhysicianName = ""
        ds.StudyID = f"{seed % 100000:d}"
        ds.AccessionNumber = ""
        ds.StudyDescription = STUDY_DESCRIPTION
        # General Series
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = SERIES_NUMBER
        ds.SeriesDate = date
        ds.SeriesTime = time
        ds.SeriesDescription = SERIES_DESCRIPTION
        ds.BodyPartExamined = "HEAD"
        ds.PatientPosition = "HFS"
        # Frame of Reference
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        # General Equipment
        ds.Manufacturer = MANUFACTURER
        ds.ManufacturerModelName = MODEL_NAME
        ds.SoftwareVersions = __version__
        # General Acquisition / General Image
        ds.AcquisitionNumber = 1
        ds.AcquisitionDate = date
        ds.AcquisitionTime = time
        ds.ContentDate = date
        ds.ContentTime = time
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BurnedInAnnotation = "NO"
        # Image Plane
        ds.PixelSpacing = [_ds(case.pixel_spacing[0]), _ds(case.pixel_spacing[1])]
        ds.ImageOrientationPatient = [_ds(v) for v in case.orientation]
        ds.ImagePositionPatient = [_ds(v) for v in case.positions[k]]
        ds.SliceThickness = _ds(case.slice_thickness_mm)
        ds.SliceLocation = _ds(float(case.positions[k] @ normal))
        # CT Image
        ds.KVP = _ds(case.kvp)
        ds.GantryDetectorTilt = _ds(case.gantry_tilt_deg)
        ds.ConvolutionKernel = case.convolution_kernel
        ds.ReconstructionDiameter = _ds(fov_mm)
        ds.DataCollectionDiameter = _ds(fov_mm)
        ds.RescaleIntercept = _ds(storage.rescale_intercept)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = _ds(BRAIN_WINDOW[0])
        ds.WindowWidth = _ds(BRAIN_WINDOW[1])
        # Image Pixel
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.BitsAllocated = 16
        ds.BitsStored = storage.bits_stored
        ds.HighBit = storage.bits_stored - 1
        ds.PixelRepresentation = storage.pixel_representation
        if storage.padding_value is not None:
            ds.add_new(
                0x00280120, "SS" if storage.pixel_representation else "US", storage.padding_value
            )
        stored = to_stored(case.hu[k], storage, fov)
        ds.PixelData = np.ascontiguousarray(
            stored.astype("<i2" if storage.pixel_representation else "<u2")
        ).tobytes()
        datasets.append(ds)
    logger.debug("synthetic series %s: %d CT datasets (seed %d)", series_uid, len(datasets), seed)
    return datasets


def write_series(case: SyntheticCase, out_dir: Path, **kwargs: object) -> list[Path]:
    """Write the series of :func:`to_datasets` as DICOM files ``CT0001.dcm``, ... in ``out_dir``.

    Parameters
    ----------
    out_dir:
        Folder to write into (created if missing).
    **kwargs:
        Passed to :func:`to_datasets` (UIDs, patient identification).

    Returns
    -------
    list[Path]
        The written files, inferior to superior.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(to_datasets(case, **kwargs)):  # type: ignore[arg-type]
        path = out_dir / f"CT{k + 1:04d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
