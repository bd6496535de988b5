"""The created IODs of docs/conformance.md (``conformance.CREATED_IODS``) are what the writers
build: the same SOP Classes, and each listed module's attribute present."""

from __future__ import annotations

import highdicom as hd

from dicom_node.conformance import CREATED_IODS
from dicom_node.results.sc import build_key_images
from ichnet_core.imaging.volume import Volume
from tests.dicom_node.results.conftest import MODEL, WrittenResults


def test_created_iods_match_the_objects_the_writers_build(
    head_volume: Volume, compartment_results: WrittenResults
) -> None:
    [key_image, *_] = build_key_images(
        head_volume,
        compartment_results.prediction,
        MODEL,
        volumes=compartment_results.volumes,
        seg_sop_instance_uid=compartment_results.uids.seg_sop_instance_uid,
        series_number=10001,
    )
    built = {
        "seg": hd.seg.segread(compartment_results.seg_path),
        "sr": hd.sr.srread(compartment_results.sr_path),
        "sc": key_image,
    }
    assert sorted(iod.output for iod in CREATED_IODS) == sorted(built)
    for iod in CREATED_IODS:
        dataset = built[iod.output]
        assert dataset.SOPClassUID == iod.sop_class_uid
        missing = [(module, kw) for module, kw in iod.modules if kw not in dataset]
        assert not missing, (iod.output, missing)
