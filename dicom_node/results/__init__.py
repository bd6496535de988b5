"""Result writers: DICOM SEG, TID 1500 SR and result.json for one analysed series.

Typical use (one job)::

    uids = ResultUids.derive(volume.series_instance_uid, model)
    volumes = measure_hemorrhage(volume, prediction)
    seg = build_seg(volume, prediction, model, series_instance_uid=uids.seg_series_instance_uid,
                    sop_instance_uid=uids.seg_sop_instance_uid, series_number=...)
    sr = build_sr(volume, prediction, seg, model, volumes=volumes,
                  operating_points=weights.operating_points,
                  series_instance_uid=uids.sr_series_instance_uid,
                  sop_instance_uid=uids.sr_sop_instance_uid, series_number=...)
    write_result(out / "result.json", build_result(volume, prediction, volumes=volumes, ...))
"""

from dicom_node.results.device import ModelIdentity
from dicom_node.results.result_json import RESULT_JSON_NAME, Timings, build_result, write_result
from dicom_node.results.seg import (
    BRAIN_SEGMENT_NUMBER,
    HEMORRHAGE_SEGMENT_NUMBER,
    build_seg,
    hemorrhage_segments,
)
from dicom_node.results.sr import build_sr
from dicom_node.results.uids import ResultUids
from dicom_node.results.volumes import HemorrhageVolumes, measure_hemorrhage

__all__ = [
    "BRAIN_SEGMENT_NUMBER",
    "HEMORRHAGE_SEGMENT_NUMBER",
    "RESULT_JSON_NAME",
    "HemorrhageVolumes",
    "ModelIdentity",
    "ResultUids",
    "Timings",
    "build_result",
    "build_seg",
    "build_sr",
    "hemorrhage_segments",
    "measure_hemorrhage",
    "write_result",
]
