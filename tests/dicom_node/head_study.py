"""A head CT study as a PACS forwards it, derived from the synthetic generator's output.

The generator makes one axial soft-tissue series; a real study also holds the same slices
reconstructed with a bone kernel, a thin reconstruction, a coronal reformat and the localizer.
Each variant here is computed from the generator's HU volume (the generator itself is not
changed): a bone kernel sharpens and adds noise, the thin series interpolates between slices and
carries the thin-slice noise, the reformat resamples the volume, the scout projects it. A
non-head volume (an abdomen-like phantom) replaces the pixels of the same headers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.uid import generate_uid
from scipy import ndimage

from ichnet_core.imaging.pixels import decode_hu
from ichnet_core.labels import BRAIN
from ichnet_core.synthetic import SyntheticCase, SyntheticConfig, generate_case, to_datasets

#: A negative case with 5 mm slices and no gantry tilt; its generator kernel is "STANDARD".
SEED: Final[int] = 8
#: With the generator's real-CT effects, as the bundled weights were trained.
CONFIG: Final = SyntheticConfig(
    rows=256,
    columns=256,
    slice_spacing_mm=(5.0, 5.0),
    slice_overlap_probability=0.0,
    gantry_tilt_probability=0.0,
)
THIN_MM: Final[float] = 1.25
MPR_SPACING_MM: Final[float] = 8.0


def head_case() -> SyntheticCase:
    case = generate_case(SEED, CONFIG, hemorrhage=False)
    assert case.convolution_kernel == "STANDARD", case.convolution_kernel
    return case


def set_hu(ds: Dataset, hu: np.ndarray) -> Dataset:
    """Store ``hu`` as signed 16-bit Hounsfield units (intercept 0) in ``ds``'s Pixel Data."""
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    for keyword in ("PixelPaddingValue", "PixelPaddingRangeLimit"):
        if keyword in ds:
            del ds[keyword]
    ds.PixelData = np.clip(np.rint(hu), -1024, 3071).astype("<i2").tobytes()
    return ds


def renew_uids(datasets: Sequence[Dataset], series_uid: str | None = None) -> list[Dataset]:
    """Deep copies with a new Series Instance UID and new SOP Instance UIDs."""
    series_uid = series_uid or generate_uid()
    copies = []
    for ds in datasets:
        new = copy.deepcopy(ds)
        new.SeriesInstanceUID = series_uid
        new.SOPInstanceUID = new.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copies.append(new)
    return copies


def bone_kernel(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a bone kernel makes of the same raw data: edges enhanced, noise amplified."""
    sharpened = hu + 2.0 * (hu - ndimage.gaussian_filter(hu, 1.0))
    return sharpened + rng.normal(0.0, 40.0, hu.shape)


@dataclass(frozen=True)
class HeadStudy:
    """The series of one study; ``soft`` is the one to analyse."""

    soft: list[Dataset]
    bone: list[Dataset]
    thin: list[Dataset]
    coronal: list[Dataset]
    scout: list[Dataset]
    #: Ground-truth brain pixels of each ``soft`` slice (the generator's labels).
    brain_pixels: tuple[int, ...]

    def soft_with_brain(self, share: float) -> list[Dataset]:
        """The ``soft`` slices whose truth holds at least ``share`` of the largest slice's brain."""
        largest = max(self.brain_pixels)
        return [
            ds for ds, px in zip(self.soft, self.brain_pixels, strict=True) if px >= share * largest
        ]

    @property
    def series(self) -> dict[str, list[Dataset]]:
        return {
            "soft": self.soft,
            "bone": self.bone,
            "thin": self.thin,
            "coronal": self.coronal,
            "scout": self.scout,
        }

    def write(self, folder: Path) -> dict[str, list[Path]]:
        """Each series as Part 10 files under ``folder/<name>/``."""
        written: dict[str, list[Path]] = {}
        for name, datasets in self.series.items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            written[name] = []
            for index, ds in enumerate(datasets):
                path = folder / name / f"{index:04d}.dcm"
                dcmwrite(path, ds, enforce_file_format=True)
                written[name].append(path)
        return written


def _thin_series(
    soft: list[Dataset], volume: np.ndarray, rng: np.random.Generator
) -> list[Dataset]:
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in soft])
    targets = np.arange(z[0], z[-1] + 1e-6, THIN_MM)
    series_uid = generate_uid()
    thin = []
    for number, target in enumerate(targets, start=1):
        below = int(np.clip(np.searchsorted(z, target, side="right") - 1, 0, len(z) - 2))
        weight = (target - z[below]) / (z[below + 1] - z[below])
        hu = (1 - weight) * volume[below] + weight * volume[below + 1]
        # Quantum noise grows with sqrt(5 mm / 1.25 mm) = 2: add the missing part.
        hu = hu + rng.normal(0.0, 6.0, hu.shape)
        [ds] = renew_uids([soft[below]], series_uid)
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], round(float(target), 3)]
        ds.SliceLocation = round(float(target), 3)
        ds.SliceThickness = str(THIN_MM)
        ds.InstanceNumber = number
        ds.SeriesNumber = 4
        ds.SeriesDescription = "Head 1.25 mm"
        thin.append(set_hu(ds, hu))
    return thin


def _coronal_series(soft: list[Dataset], volume: np.ndarray) -> list[Dataset]:
    """Coronal reformat: image rows run from the vertex down (IOP 1\\0\\0\\0\\0\\-1)."""
    spacing_row, spacing_col = (float(v) for v in soft[0].PixelSpacing)
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in soft])
    x0, y0, _ = (float(v) for v in soft[0].ImagePositionPatient)
    step = max(1, round(MPR_SPACING_MM / spacing_row))
    series_uid = generate_uid()
    coronal = []
    for number, row in enumerate(range(step, volume.shape[1] - step, step), start=1):
        [ds] = renew_uids([soft[0]], series_uid)
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
        ds.ImagePositionPatient = [x0, round(y0 + row * spacing_row, 3), float(z[-1])]
        ds.PixelSpacing = [str(float(z[1] - z[0])), str(spacing_col)]
        ds.SliceThickness = str(MPR_SPACING_MM)
        del ds.SliceLocation
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        ds.InstanceNumber = number
        ds.SeriesNumber = 5
        ds.SeriesDescription = "Head cor MPR"
        coronal.append(set_hu(ds, volume[::-1, row, :]))
    return coronal


def _scout(soft: list[Dataset], volume: np.ndarray) -> list[Dataset]:
    """A lateral localizer: the mean attenuation across the head, one projection image."""
    [ds] = renew_uids([soft[-1]])
    spacing_row, _ = (float(v) for v in soft[0].PixelSpacing)
    _, y0, z_top = (float(v) for v in soft[-1].ImagePositionPatient)
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    ds.ImagePositionPatient = [0.0, y0, z_top]
    ds.PixelSpacing = [
        str(float(soft[1].ImagePositionPatient[2]) - float(soft[0].ImagePositionPatient[2])),
        str(spacing_row),
    ]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesDescription = "Topogram 0.6 T20s"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ConvolutionKernel = "T20s"
    projection = np.clip(volume, -1000, None).mean(axis=2)[::-1]
    return [set_hu(ds, projection)]


def head_study(study_uid: str | None = None) -> HeadStudy:
    """The five series of one synthetic head CT study (fixed seed: the same every call, up to
    the UIDs of the derived series)."""
    case = head_case()
    study_uid = study_uid or generate_uid()
    soft = to_datasets(case, study_instance_uid=study_uid, series_instance_uid=generate_uid())
    for ds in soft:
        ds.SeriesDescription = "Head 5.0 mm"
    volume = np.stack([decode_hu(ds) for ds in soft])
    rng = np.random.default_rng(SEED)
    bone = renew_uids(soft)
    for ds, hu in zip(bone, volume, strict=True):
        ds.ConvolutionKernel = "BONE"
        ds.SeriesNumber = 3
        ds.SeriesDescription = "Head 5.0 mm bone"
        set_hu(ds, bone_kernel(hu, rng))
    return HeadStudy(
        soft=soft,
        bone=bone,
        thin=_thin_series(soft, volume, rng),
        coronal=_coronal_series(soft, volume),
        scout=_scout(soft, volume),
        brain_pixels=tuple(int(n) for n in (case.labels == BRAIN).sum(axis=(1, 2))),
    )


def abdomen_phantom(rows: int, columns: int, pixel_mm: float, z_mm: float) -> np.ndarray:
    """One transverse slice through an abdomen-like body (HU): skin and fat around muscle,
    liver and bowel with gas, a vertebra with its cortical ring, and rib segments."""
    yy, xx = np.mgrid[0:rows, 0:columns]
    y = (yy - rows / 2) * pixel_mm
    x = (xx - columns / 2) * pixel_mm
    hu = np.full((rows, columns), -1000.0)
    body = (x / 165) ** 2 + (y / 115) ** 2 <= 1
    hu[body] = -100.0  # subcutaneous fat
    inner = (x / 145) ** 2 + (y / 97) ** 2 <= 1
    hu[inner] = 45.0  # muscle and organs
    hu[inner & (x < -20) & (y < 30)] = 60.0  # liver
    shift = 10 * np.sin(z_mm / 15)
    for cx, cy in ((40 + shift, -20), (70, 10), (20, 40 + shift)):
        hu[(x - cx) ** 2 + (y - cy) ** 2 <= 12**2] = -900.0  # bowel gas
    hu[((x / 145) ** 2 + (y / 97) ** 2 > 0.8) & inner & (y > 40)] = -80.0  # retroperitoneal fat
    vertebra = x**2 + (y - 70) ** 2
    hu[vertebra <= 20**2] = 1100.0  # cortex
    hu[vertebra <= 17**2] = 250.0  # cancellous bone
    angle = np.arctan2(y, x)
    rib_band = ((x / 150) ** 2 + (y / 102) ** 2 <= 1) & ((x / 142) ** 2 + (y / 95) ** 2 > 1)
    for centre in np.linspace(-2.6, 2.6, 7):
        hu[rib_band & (np.abs(angle - centre) < 0.12)] = 900.0  # rib segments, not a ring
    return hu


def non_head_series(template: Sequence[Dataset]) -> list[Dataset]:
    """The headers of ``template`` with abdomen-phantom pixels and nothing naming a body part."""
    series = renew_uids(template)
    for ds in series:
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription"):
            if keyword in ds:
                del ds[keyword]
        spacing = float(ds.PixelSpacing[0])
        set_hu(ds, abdomen_phantom(ds.Rows, ds.Columns, spacing, float(ds.ImagePositionPatient[2])))
    return series
