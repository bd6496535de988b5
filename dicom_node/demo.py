"""``ichnet-node demo``: a synthetic head CT through a real node on loopback, SEG + SR back.

Self-contained first run on built-in defaults, with nothing but the Python package installed:

1. the synthetic generator makes a head CT series with a hemorrhage (CT Image Storage);
2. a small demo PACS (a pynetdicom Storage SCP, AE ``DEMOPACS``) starts on a free port;
3. the node starts on another free port, with DEMOPACS as its only peer;
4. DEMOPACS sends the series to the node by C-STORE, the node completes the series, runs
   ICHNet and sends the DICOM SEG and SR back to DEMOPACS;
5. the findings (Present/Absent at the weights' operating points, as in the SR and result.json),
   the hemorrhage volume in total and per compartment (and the generator's ground truth) and
   the timings are printed, and an overlay PNG of the slice with the most hemorrhage is written.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event

from dicom_node.config import NodeConfig, parse_config
from dicom_node.results import hemorrhage_segments
from dicom_node.service import NodeService
from dicom_node.status import StoreStatus
from ichnet_core.imaging.measure import label_volume_ml
from ichnet_core.imaging.volume import build_volume
from ichnet_core.labels import CLASS_NAMES, HEMORRHAGE, SUBTYPES
from ichnet_core.synthetic import SyntheticCase, SyntheticConfig, generate_case, to_datasets

logger = logging.getLogger(__name__)

DEMO_PACS_AE: Final[str] = "DEMOPACS"
NODE_AE: Final[str] = "ICHNET"
#: Seed of the demo case: a reproducible study with a hemorrhage.
DEMO_SEED: Final[int] = 20261126
#: Where the demo keeps its files unless told otherwise (relative to the working directory).
DEFAULT_WORKDIR: Final[Path] = Path("var/demo")
#: How long the demo waits for SEG + SR before it gives up.
RESULT_TIMEOUT_S: Final[float] = 300.0
SEG_SOP_CLASS: Final[str] = "1.2.840.10008.5.1.4.1.1.66.4"
#: Brain window for the overlay picture (centre 40, width 80 HU).
OVERLAY_WINDOW_HU: Final[tuple[float, float]] = (0.0, 80.0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DemoPacs:
    """The receiving end: stores what the node sends back and notes when it arrived."""

    directory: Path
    received: dict[str, Dataset] = field(default_factory=dict)
    arrived_at: dict[str, float] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def handle_store(self, event: Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        kind = "seg" if ds.SOPClassUID == SEG_SOP_CLASS else "sr"
        ds.save_as(self.directory / f"{kind}.dcm", enforce_file_format=True)
        self.received[kind] = ds
        self.arrived_at[kind] = time.perf_counter()
        if {"seg", "sr"} <= self.received.keys():
            self.done.set()
        return int(StoreStatus.SUCCESS)


def _demo_config(workdir: Path, node_port: int, pacs_port: int) -> NodeConfig:
    return parse_config(
        {
            "node": {"ae_title": NODE_AE, "port": node_port, "storage_dir": str(workdir / "node")},
            "model": {"cache_dir": str(workdir / "engine-cache")},
            "peers": [{"ae_title": DEMO_PACS_AE, "host": "127.0.0.1", "port": pacs_port}],
            "series": {"complete_after_s": 1.0, "poll_interval_s": 0.1},
        }
    )


def _send_series(datasets: list[Dataset], port: int) -> None:
    ae = AE(ae_title=DEMO_PACS_AE)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    if not assoc.is_established:
        raise RuntimeError("the node refused the demo association")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if status.get("Status") != StoreStatus.SUCCESS:
                raise RuntimeError(f"the node answered C-STORE with status {status.get('Status')}")
    finally:
        assoc.release()


def write_overlay(hu: np.ndarray, labels: np.ndarray, truth: np.ndarray, path: Path) -> int:
    """PNG of the slice with the most predicted hemorrhage (else the most true hemorrhage).

    Brain window; predicted hemorrhage tinted red, the generator's true hemorrhage outlined in
    yellow, so a miss is as visible as a hit.
    """
    predicted = (labels == HEMORRHAGE).reshape(labels.shape[0], -1).sum(axis=1)
    actual = (truth == HEMORRHAGE).reshape(truth.shape[0], -1).sum(axis=1)
    index = int(np.argmax(predicted if predicted.any() else actual))
    low, high = OVERLAY_WINDOW_HU
    grey = (np.clip((hu[index] - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    blood = labels[index] == HEMORRHAGE
    rgb[blood] = (0.4 * rgb[blood] + 0.6 * np.array([255, 30, 30])).astype(np.uint8)
    true_blood = truth[index] == HEMORRHAGE
    outline = true_blood & ~(
        np.roll(true_blood, 1, 0)
        & np.roll(true_blood, -1, 0)
        & np.roll(true_blood, 1, 1)
        & np.roll(true_blood, -1, 1)
    )
    rgb[outline] = (255, 220, 0)
    Image.fromarray(rgb).save(path)
    return index


def run_demo(workdir: Path = DEFAULT_WORKDIR) -> dict[str, object]:
    """Run the demo in ``workdir``; returns what it printed as a dict (tests use it).

    The node's spool and the demo PACS start empty on every run; the engine cache (ONNX
    export, engine measurements) is kept, so only the first run pays for it.
    """
    workdir = Path(workdir)
    for leftover in ("node", "pacs"):
        shutil.rmtree(workdir / leftover, ignore_errors=True)
    (workdir / "pacs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # With the generator's real-CT effects (bright inner-table band, tangential partial volume,
    # calcifications): the bundled weights were trained with them, and a real scanner's
    # study has them too.
    config = SyntheticConfig(rows=512, columns=512)
    case = generate_case(DEMO_SEED, config, hemorrhage=True)
    datasets = to_datasets(case)
    generated = time.perf_counter()
    print(
        f"synthetic head CT: {len(datasets)} slices 512x512, ground truth: "
        f"{', '.join(n for n, v in zip(CLASS_NAMES[1:], case.subject_labels[1:], strict=True) if v)}"
        f", {case.hemorrhage_volume_ml:.1f} mL ({generated - t0:.1f} s)"
    )

    pacs = DemoPacs(workdir / "pacs")
    pacs_ae = AE(ae_title=DEMO_PACS_AE)
    pacs_ae.supported_contexts = StoragePresentationContexts
    pacs_port = _free_port()
    pacs_server = pacs_ae.start_server(
        ("127.0.0.1", pacs_port), block=False, evt_handlers=[(evt.EVT_C_STORE, pacs.handle_store)]
    )
    if pacs_server is None:  # pynetdicom returns the server whenever block=False
        raise RuntimeError("the demo PACS did not start")
    node = NodeService(_demo_config(workdir, _free_port(), pacs_port))
    try:
        node.start()
        print(f"node {NODE_AE} on 127.0.0.1:{node.port}, demo PACS {DEMO_PACS_AE} on :{pacs_port}")
        send_start = time.perf_counter()
        _send_series(datasets, node.port)
        last_ack = time.perf_counter()
        print(f"sent {len(datasets)} instances by C-STORE in {last_ack - send_start:.2f} s")
        if not pacs.done.wait(RESULT_TIMEOUT_S):
            raise RuntimeError(f"no SEG + SR within {RESULT_TIMEOUT_S:.0f} s; see the log above")
    finally:
        node.stop()
        pacs_server.shutdown()

    result_files = sorted(node.layout.results.glob("*/result.json"))
    result = json.loads(result_files[-1].read_text())
    truth_ml = _true_compartment_volumes(case, datasets)
    seg = dcmread(workdir / "pacs" / "seg.dcm")
    labels = _labels_from_seg(seg, case.hu.shape, [str(ds.SOPInstanceUID) for ds in datasets])
    overlay_path = workdir / "overlay.png"
    slice_index = write_overlay(case.hu, labels, case.labels, overlay_path)
    arrived = max(pacs.arrived_at.values())
    summary = {
        "subject": result["subject"],
        "present": result["present"],
        "operating_points": result["operating_points"],
        "operating_points_source": result["operating_points_source"],
        "ground_truth_present": {
            name: bool(flag) for name, flag in zip(CLASS_NAMES, case.subject_labels, strict=True)
        },
        "hemorrhage_volume_ml": result["hemorrhage_volume_ml"],
        "volumes_ml": result["volumes_ml"],
        "ground_truth_volume_ml": case.hemorrhage_volume_ml,
        "ground_truth_volumes_ml": truth_ml,
        "seconds_last_instance_to_results": arrived - last_ack,
        "timings_s": result["timings_s"],
        "overlay": str(overlay_path),
        "pacs_dir": str(workdir / "pacs"),
    }
    _print_summary(summary, slice_index)
    return summary


def _true_compartment_volumes(case: SyntheticCase, datasets: list[Dataset]) -> dict[str, float]:
    """The generator's volume of each compartment, by the node's own volume rule."""
    volume = build_volume(datasets)
    voxel_of_uid = dict(zip(volume.sop_instance_uids, volume.voxel_volumes_ml(), strict=True))
    voxel_ml = np.array([voxel_of_uid[str(ds.SOPInstanceUID)] for ds in datasets])
    return {
        name: label_volume_ml(mask.astype(np.uint8), 1, voxel_ml)
        for name, mask in zip(SUBTYPES, case.subtype_masks, strict=True)
    }


def _labels_from_seg(seg: Dataset, shape: tuple[int, ...], sop_uids: list[str]) -> np.ndarray:
    """Hemorrhage labels per source slice, read back from the SEG frames the demo PACS received.

    Each frame names its segment and its source slice (PS3.3 C.8.20.3 and C.7.6.16.2.6); every
    hemorrhage segment (whole hemorrhage or a compartment) counts.
    """
    index_of = {uid: i for i, uid in enumerate(sop_uids)}
    blood_segments = set(hemorrhage_segments(seg).values())
    frames = seg.pixel_array.reshape(-1, *shape[1:])
    labels = np.zeros(shape, dtype=np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        if segment in blood_segments and source in index_of:
            labels[index_of[source]][frame > 0] = HEMORRHAGE
    return labels


def _print_summary(summary: dict[str, object], slice_index: int) -> None:
    subject, present = summary["subject"], summary["present"]
    points, truth = summary["operating_points"], summary["ground_truth_present"]
    volumes, true_volumes = summary["volumes_ml"], summary["ground_truth_volumes_ml"]
    assert isinstance(subject, dict) and isinstance(present, dict) and isinstance(points, dict)
    assert isinstance(truth, dict) and isinstance(volumes, dict) and isinstance(true_volumes, dict)
    print("\nICHNet findings (research software, not a medical device; synthetic-data weights):")
    print(f"  operating points: {summary['operating_points_source']}")
    for name in CLASS_NAMES:
        verdict = "PRESENT" if present[name] else "absent"
        print(
            f"  {name:>4}: p={float(subject[name]):.3f} (threshold {float(points[name]):.3g})  "
            f"{verdict:<8} ground truth: {'present' if truth[name] else 'absent'}"
        )
    print(
        f"  hemorrhage volume: {summary['hemorrhage_volume_ml']:.1f} mL "
        f"(ground truth {summary['ground_truth_volume_ml']:.1f} mL)"
    )
    if all(volumes[name] is None for name in SUBTYPES):
        print("  per compartment: not measured (these weights have no compartment output)")
    for name in SUBTYPES:
        if volumes[name] is not None and (volumes[name] > 0 or true_volumes[name] > 0):
            print(
                f"    {name}: {float(volumes[name]):.1f} mL "
                f"(ground truth {float(true_volumes[name]):.1f} mL)"
            )
    timings = summary["timings_s"]
    assert isinstance(timings, dict)
    print(
        f"timings: last instance -> SEG+SR at PACS {summary['seconds_last_instance_to_results']:.2f} s "
        f"(volume {timings['volume']:.2f} s, inference {timings['inference']:.2f} s, "
        f"results {timings['results']:.2f} s)"
    )
    print(
        f"SEG + SR received in {summary['pacs_dir']}; overlay of slice {slice_index}: {summary['overlay']}"
    )
