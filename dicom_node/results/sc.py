"""Secondary-capture key images: the slices with most blood, overlay burned in, for any PACS.

Why: many installed PACS viewers cannot display DICOM SEG; every viewer shows an RGB Secondary
Capture image. Each key image is one source slice in a brain window with the hemorrhage
compartments painted in the SEG's display colours (:data:`dicom_node.results.seg.COMPARTMENT_RGB`,
one colour table for both objects), a banner above it that says "research software - not for
diagnostic use", and a legend below it with the volumes and probabilities the SR reports.

Layout of each image (rows, top to bottom): banner, the source slice at its own Rows x
Columns (pixel ``(r, c)`` of the slice is pixel ``(r + banner rows, c)`` of the image, so a
check can compare it with the SEG frame of the referenced slice), legend. Outside the slice
area nothing is painted in a compartment colour except the legend swatches.

Which slices: up to :data:`MAX_KEY_IMAGES` with the most hemorrhage pixels, in slice order;
without any hemorrhage pixel one representative slice, the one with the largest brain area.
Each image references its source slice in the Source Image Sequence (DESIGN.md), so a viewer
and a check can place it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicom_node.results.checks import check_prediction
from dicom_node.results.device import ModelIdentity, equipment
from dicom_node.results.sanitize import prepare_source_headers
from dicom_node.results.seg import COMPARTMENT_RGB, HEMORRHAGE_RGB
from dicom_node.results.uids import derived_uid
from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import BRAIN, CLASS_NAMES, HEMORRHAGE, SUBTYPES
from ichnet_core.prediction import Prediction

#: 1-4 key images (the issue's range): enough to show a bleed, few enough to read at a glance.
MAX_KEY_IMAGES: Final[int] = 4
#: Brain window (centre, width) in HU: the window radiologists read bleeds in.
BRAIN_WINDOW_HU: Final[tuple[float, float]] = (40.0, 80.0)
#: Opacity of the compartment colour over the grey slice: the anatomy stays visible under it.
OVERLAY_ALPHA: Final[float] = 0.55
BANNER_TEXT: Final[str] = "RESEARCH SOFTWARE - NOT FOR DIAGNOSTIC USE"
#: Banner colours: white on dark red, unmistakable and unlike any compartment colour.
BANNER_RGB: Final[tuple[int, int, int]] = (120, 0, 0)
TEXT_RGB: Final[tuple[int, int, int]] = (255, 255, 255)
SERIES_DESCRIPTION: Final[str] = "ICHNet key images (research, not for diagnostic use)"


@dataclass(frozen=True)
class KeyImageLayout:
    """Where the slice sits in a key image (rows above it, size of the slice area)."""

    banner_rows: int
    slice_rows: int
    columns: int
    legend_rows: int

    @property
    def rows(self) -> int:
        """Rows of the whole image."""
        return self.banner_rows + self.slice_rows + self.legend_rows


def key_slices(prediction: Prediction, maximum: int = MAX_KEY_IMAGES) -> list[int]:
    """Volume indices of the key slices, in slice order (see the module docstring)."""
    blood = (prediction.labels == HEMORRHAGE).sum(axis=(1, 2))
    if not blood.any():
        return [int(np.argmax((prediction.labels == BRAIN).sum(axis=(1, 2))))]
    ranked = [int(i) for i in np.argsort(-blood, kind="stable") if blood[i] > 0][:maximum]
    return sorted(ranked)


def _font(columns: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: no system font needed on a server without fonts.
    return ImageFont.load_default(size=max(10, columns // 34))


def _line_height(columns: int) -> int:
    return max(14, round(columns // 34 * 1.5))


def _legend_lines(
    prediction: Prediction, volumes: HemorrhageVolumes, present: Mapping[str, bool] | None
) -> list[tuple[tuple[int, int, int] | None, str]]:
    """(swatch colour or None, text) per legend line."""

    def decision(name: str) -> str:
        if present is None:
            return ""
        return " - present" if present.get(name) else " - absent"

    probabilities = dict(zip(CLASS_NAMES, prediction.subject_probabilities.tolist(), strict=True))
    lines: list[tuple[tuple[int, int, int] | None, str]] = [
        (
            HEMORRHAGE_RGB if volumes.compartments_ml is None else None,
            f"Intracranial hemorrhage p={probabilities['any']:.2f}{decision('any')}, "
            f"total {volumes.total_ml:.1f} mL",
        )
    ]
    for name in SUBTYPES:
        volume_ml = None if volumes.compartments_ml is None else volumes.compartments_ml[name]
        volume_text = "" if volume_ml is None else f", {volume_ml:.1f} mL"
        lines.append(
            (
                COMPARTMENT_RGB[name] if volume_ml else None,
                f"{name} p={probabilities[name]:.2f}{decision(name)}{volume_text}",
            )
        )
    return lines


def layout_for(rows: int, columns: int) -> KeyImageLayout:
    """The image layout for source slices of ``rows`` x ``columns`` (banner and legend scale
    with the width)."""
    line = _line_height(columns)
    return KeyImageLayout(
        banner_rows=2 * line,
        slice_rows=rows,
        columns=columns,
        legend_rows=(3 + len(SUBTYPES)) * line,
    )


def overlay_colours(prediction: Prediction, index: int) -> np.ndarray:
    """``(rows, columns, 3)`` uint8 colour per hemorrhage pixel of slice ``index``, 0 elsewhere.

    Compartment colours where the prediction has compartments, the hemorrhage colour otherwise:
    exactly the colours of the SEG's segments.
    """
    hemorrhage = prediction.labels[index] == HEMORRHAGE
    colours = np.zeros((*hemorrhage.shape, 3), dtype=np.uint8)
    if prediction.compartments is None:
        colours[hemorrhage] = HEMORRHAGE_RGB
        return colours
    for value, name in enumerate(SUBTYPES, start=1):
        colours[hemorrhage & (prediction.compartments[index] == value)] = COMPARTMENT_RGB[name]
    return colours


def render_key_image(
    volume: Volume,
    prediction: Prediction,
    index: int,
    volumes: HemorrhageVolumes,
    present: Mapping[str, bool] | None = None,
) -> np.ndarray:
    """The RGB pixels of the key image of slice ``index`` (see the module docstring)."""
    layout = layout_for(*volume.hu.shape[1:])
    centre, width = BRAIN_WINDOW_HU
    grey = np.clip((volume.hu[index] - (centre - width / 2)) / width, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = overlay_colours(prediction, index)
    painted = colours.any(axis=-1)
    rgb[painted] = (1 - OVERLAY_ALPHA) * rgb[painted] + OVERLAY_ALPHA * colours[painted]
    canvas = np.zeros((layout.rows, layout.columns, 3), dtype=np.uint8)
    canvas[: layout.banner_rows] = BANNER_RGB
    top = layout.banner_rows
    canvas[top : top + layout.slice_rows] = np.round(rgb).astype(np.uint8)

    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    font = _font(layout.columns)
    line = _line_height(layout.columns)
    margin = line // 2
    draw.text((margin, line // 2), BANNER_TEXT, fill=TEXT_RGB, font=font)
    y = top + layout.slice_rows + line // 2
    instance = volume.datasets[index].get("InstanceNumber", "?")
    draw.text(
        (margin, y),
        f"ICHNet: slice {index + 1} of {volume.hu.shape[0]} (instance {instance})",
        fill=TEXT_RGB,
        font=font,
    )
    for swatch, text in _legend_lines(prediction, volumes, present):
        y += line
        if swatch is not None:
            draw.rectangle((margin, y + 2, margin + line - 6, y + line - 4), fill=swatch)
        draw.text((margin + line, y), text, fill=TEXT_RGB, font=font)
    return np.asarray(image)


def _patient_orientation(orientation: Sequence[float]) -> tuple[str, str]:
    """Patient Orientation (PS3.3 C.7.6.1.1.1) of rows and columns: the dominant axis letter."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))

    def letter(cosines: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(cosines)))
        return letters[axis][0] if cosines[axis] > 0 else letters[axis][1]

    return letter(np.asarray(orientation[:3])), letter(np.asarray(orientation[3:]))


def sc_uids(seg_sop_instance_uid: str, count: int) -> tuple[str, list[str]]:
    """Series UID and one SOP Instance UID per key image, derived from the SEG's UID.

    The SEG's UID already names the source series, the weights, the node version (and the
    result version), so the key images change exactly when the SEG does.
    """
    return derived_uid(seg_sop_instance_uid, "sc-series"), [
        derived_uid(seg_sop_instance_uid, "sc-instance", str(n)) for n in range(1, count + 1)
    ]


def build_key_images(
    volume: Volume,
    prediction: Prediction,
    model: ModelIdentity,
    *,
    volumes: HemorrhageVolumes,
    seg_sop_instance_uid: str,
    series_number: int,
    present: Mapping[str, bool] | None = None,
    content_datetime: datetime.datetime | None = None,
) -> list[hd.sc.SCImage]:
    """Build the key images of one analysed series (Secondary Capture Image Storage, RGB).

    Parameters
    ----------
    volume, prediction:
        The analysed series and the model output for it.
    model:
        Identification of the model (equipment).
    volumes:
        Total and per-compartment volumes (the SR's numbers).
    seg_sop_instance_uid:
        The job's SEG; the key images' UIDs derive from it (:func:`sc_uids`).
    series_number:
        Series Number of the key-image series.
    present:
        Decisions at the operating points per ``CLASS_NAMES`` output, shown in the legend.
    content_datetime:
        Content Date/Time; pass the SEG's and SR's.

    Returns
    -------
    list[highdicom.sc.SCImage]
        One instance per key slice, in slice order, all in one new series of the source study.
    """
    check_prediction(volume, prediction)
    indices = key_slices(prediction)
    headers = prepare_source_headers([volume.datasets[i] for i in indices])
    series_uid, instance_uids = sc_uids(seg_sop_instance_uid, len(indices))
    device = equipment(model)
    now = content_datetime if content_datetime is not None else datetime.datetime.now()
    orientation = _patient_orientation(volume.orientation)
    images: list[hd.sc.SCImage] = []
    for number, (index, header, uid) in enumerate(
        zip(indices, headers, instance_uids, strict=True), start=1
    ):
        pixels = render_key_image(volume, prediction, index, volumes, present)
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=header,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=uid,
            instance_number=number,
            manufacturer=device.manufacturer,
            patient_orientation=orientation,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        _describe(image, header, device.model_name, device.software_versions, now)
        images.append(image)
    return images


def _describe(
    image: Dataset,
    source: Dataset,
    model_name: str,
    software_versions: Sequence[str],
    now: datetime.datetime,
) -> None:
    """What highdicom leaves to the caller: derivation, source reference, burned-in text."""
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.SeriesDescription = SERIES_DESCRIPTION
    image.DerivationDescription = (
        "ICHNet hemorrhage overlay burned into a brain window of the source slice"
    )
    image.BurnedInAnnotation = "YES"
    # General Series Type 2C: dciodvfy wants it whenever Body Part Examined does not tell
    # whether the part is paired; empty says "unknown", which is what the node knows.
    image.Laterality = ""
    image.ManufacturerModelName = model_name
    image.SoftwareVersions = list(software_versions)
    image.ContentDate = now.strftime("%Y%m%d")
    image.ContentTime = now.strftime("%H%M%S")
    image.ImageComments = BANNER_TEXT.capitalize()
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = DicomSequence([reference])
