"""Secondary-capture key images: which slices, where the colour is, what a PACS receives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.results.sc import (
    BRAIN_WINDOW_HU,
    MAX_KEY_IMAGES,
    OVERLAY_ALPHA,
    build_key_images,
    key_slices,
    layout_for,
)
from dicom_node.results.seg import hemorrhage_segments
from dicom_node.results.volumes import measure_hemorrhage
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import HEMORRHAGE
from ichnet_core.prediction import Prediction
from tests.dicom_node.results.conftest import (
    CONTENT_DATETIME,
    MODEL,
    OPERATING_POINTS,
    WrittenResults,
)

SC_SERIES_NUMBER = 10001
#: Rounding of the blend to uint8, and of the SEG's CIELab colour back to sRGB.
COLOUR_TOLERANCE = 4.0


def _key_images(volume: Volume, results: WrittenResults) -> list[hd.sc.SCImage]:
    return build_key_images(
        volume,
        results.prediction,
        MODEL,
        volumes=measure_hemorrhage(volume, results.prediction),
        seg_sop_instance_uid=results.uids.seg_sop_instance_uid,
        series_number=SC_SERIES_NUMBER,
        present=OPERATING_POINTS.present(results.prediction.subject_probabilities),
        content_datetime=CONTENT_DATETIME,
    )


def _grey(volume: Volume, index: int) -> np.ndarray:
    centre, width = BRAIN_WINDOW_HU
    return np.clip((volume.hu[index] - (centre - width / 2)) / width, 0.0, 1.0) * 255.0


def test_key_slices_are_those_with_most_blood_in_slice_order(
    positive_prediction: Prediction, negative_prediction: Prediction
) -> None:
    blood = (positive_prediction.labels == HEMORRHAGE).sum(axis=(1, 2))
    chosen = key_slices(positive_prediction)
    assert 1 <= len(chosen) <= MAX_KEY_IMAGES
    assert chosen == sorted(chosen)
    assert min(blood[chosen]) >= max(np.delete(blood, chosen))
    assert len(key_slices(negative_prediction)) == 1  # a representative slice


def test_sc_pixels_are_coloured_exactly_where_the_seg_has_blood_in_its_colours(
    head_volume: Volume, compartment_results: WrittenResults
) -> None:
    images = _key_images(head_volume, compartment_results)
    seg = hd.seg.segread(compartment_results.seg_path)
    segments = hemorrhage_segments(seg)
    colours = {
        number: np.asarray(
            hd.color.CIELabColor.from_dicom_value(
                seg.SegmentSequence[number - 1].RecommendedDisplayCIELabValue
            ).to_rgb(),
            dtype=float,
        )
        for number in segments.values()
    }
    index_of = {uid: i for i, uid in enumerate(head_volume.sop_instance_uids)}
    layout = layout_for(*head_volume.hu.shape[1:])
    for image in images:
        [source] = image.SourceImageSequence
        uid = source.ReferencedSOPInstanceUID
        index = index_of[uid]
        pixels = image.pixel_array[layout.banner_rows : layout.banner_rows + layout.slice_rows]
        pixels = pixels.astype(float)
        coloured = ~((pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2]))
        by_segment = seg.get_pixels_by_source_instance(
            [uid], segment_numbers=sorted(colours), assert_missing_frames_are_empty=True
        )[0]
        blood = by_segment.any(axis=-1)
        assert blood.any(), "key images are slices with blood"
        np.testing.assert_array_equal(coloured, blood)
        grey = _grey(head_volume, index)
        for position, number in enumerate(sorted(colours)):
            where = by_segment[..., position].astype(bool)
            if not where.any():
                continue
            painted = (pixels[where] - (1 - OVERLAY_ALPHA) * grey[where, None]) / OVERLAY_ALPHA
            assert np.abs(painted - colours[number]).max() <= COLOUR_TOLERANCE / OVERLAY_ALPHA


def test_key_images_are_a_new_series_of_the_study_referencing_their_slices(
    head_volume: Volume, compartment_results: WrittenResults
) -> None:
    images = _key_images(head_volume, compartment_results)
    source = head_volume.datasets[0]
    assert len({image.SeriesInstanceUID for image in images}) == 1
    assert len({image.SOPInstanceUID for image in images}) == len(images)
    for number, image in enumerate(images, start=1):
        assert image.StudyInstanceUID == source.StudyInstanceUID
        assert image.SeriesInstanceUID != source.SeriesInstanceUID
        assert image.PatientID == source.PatientID
        assert image.InstanceNumber == number
        assert image.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert (image.PhotometricInterpretation, image.SamplesPerPixel) == ("RGB", 3)
        assert image.BurnedInAnnotation == "YES"
        [reference] = image.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID in head_volume.sop_instance_uids
    again = _key_images(head_volume, compartment_results)
    assert [i.SOPInstanceUID for i in again] == [i.SOPInstanceUID for i in images]


def test_negative_scan_gives_one_uncoloured_representative_image(
    head_volume: Volume, negative_results: WrittenResults
) -> None:
    [image] = _key_images(head_volume, negative_results)
    layout = layout_for(*head_volume.hu.shape[1:])
    pixels = image.pixel_array[layout.banner_rows : layout.banner_rows + layout.slice_rows]
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_banner_is_drawn_in_the_top_rows(
    head_volume: Volume, compartment_results: WrittenResults
) -> None:
    image = _key_images(head_volume, compartment_results)[0]
    banner = image.pixel_array[: layout_for(*head_volume.hu.shape[1:]).banner_rows]
    white = (banner == 255).all(axis=-1)
    assert white.sum() > 200, "the banner text is there, white on the banner colour"


@pytest.mark.parametrize("fixture", ["compartment_results", "negative_results"])
def test_key_images_pass_dciodvfy_without_new_errors(
    head_volume: Volume,
    fixture: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    dciodvfy: Callable[[Path], set[str]],
    source_baseline_errors: set[str],
) -> None:
    results: WrittenResults = request.getfixturevalue(fixture)
    for number, image in enumerate(_key_images(head_volume, results), start=1):
        path = tmp_path / f"sc{number}.dcm"
        image.save_as(path, enforce_file_format=True)
        new = dciodvfy(path) - source_baseline_errors
        assert not new, new
