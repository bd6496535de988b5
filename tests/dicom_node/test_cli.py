"""``ichnet-node infer`` and ``ichnet-node check-config`` as users run them.

The real head study goes through the installed console script once (a subprocess: the model
runs, files are written); the refusals and config checks call :func:`dicom_node.cli.main` in
process, which is the same code without the start-up cost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.cli import EXIT_OK, EXIT_UNUSABLE, main
from ichnet_core.labels import CLASS_NAMES, SUBTYPES
from ichnet_core.models.weights import default_weights_path, load_weights
from tests.integration.node_process import node_command

PROJECT_ROOT: Final[Path] = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG: Final[Path] = PROJECT_ROOT / "conf" / "node.yaml"
#: One inference on the 28-slice study, plus interpreter start-up, on a busy 2-core CPU.
INFER_TIMEOUT_S: Final[float] = 300.0

#: DESIGN.md result.json, in its order.
RESULT_KEYS: Final = [
    "study_instance_uid",
    "series_instance_uid",
    "subject",
    "slices",
    "hemorrhage_volume_ml",
    "engine",
    "model",
    "timings_s",
]
PROBABILITY_KEYS: Final = ["any", "CPH", "IVH", "EDH", "SDH", "SAH"]
#: Loggers that speak when weights are loaded or an engine is prepared.
_MODEL_LOGGERS: Final = ("ichnet_core.models", "ichnet_core.inference")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``main`` configures logging for a command-line run; undo that after each test."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    libraries = {name: logging.getLogger(name).level for name in ("pynetdicom", "highdicom")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, library_level in libraries.items():
        logging.getLogger(name).setLevel(library_level)
    logging.captureWarnings(False)


@pytest.fixture(scope="module")
def head_infer(
    head_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory, engine_cache_dir: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``ichnet-node infer`` on the real head study, run once for the module."""
    work = tmp_path_factory.mktemp("infer")
    out_dir = work / "out"
    config = work / "node.yaml"
    config.write_text(
        f"node: {{storage_dir: {work / 'var'}}}\nmodel: {{cache_dir: {engine_cache_dir}}}\n"
    )
    completed = subprocess.run(
        [
            *node_command(),
            "infer",
            str(head_ct_dir),
            "--out",
            str(out_dir),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=INFER_TIMEOUT_S,
        check=False,
    )
    return completed, out_dir


@pytest.fixture(scope="module")
def head_sources(head_ct_dir: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(head_ct_dir.glob("*.dcm"))]


def _uids_along_normal(sources: list[pydicom.Dataset]) -> list[str]:
    """SOP Instance UIDs sorted by position along row x column cosines, computed here."""
    iop = np.asarray(sources[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    offsets = {
        ds.SOPInstanceUID: float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal)
        for ds in sources
    }
    return sorted(offsets, key=offsets.__getitem__)


def _is_probability(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.shared_data
def test_infer_writes_seg_sr_and_result_json(
    head_infer: tuple[subprocess.CompletedProcess[str], Path], head_sources: list[pydicom.Dataset]
) -> None:
    completed, out_dir = head_infer
    assert completed.returncode == EXIT_OK, completed.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.json", "seg.dcm", "sr.dcm"]
    assert str(out_dir / "seg.dcm") in completed.stdout

    seg = hd.seg.segread(out_dir / "seg.dcm")
    sr = hd.sr.srread(out_dir / "sr.dcm")
    [study_uid] = {ds.StudyInstanceUID for ds in head_sources}
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == study_uid
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in head_sources}


@pytest.mark.shared_data
def test_result_json_follows_the_design_schema(
    head_infer: tuple[subprocess.CompletedProcess[str], Path], head_sources: list[pydicom.Dataset]
) -> None:
    completed, out_dir = head_infer
    assert completed.returncode == EXIT_OK, completed.stderr
    result = json.loads((out_dir / "result.json").read_text())

    assert list(result)[: len(RESULT_KEYS)] == RESULT_KEYS
    assert {"present", "operating_points", "volumes_ml"} <= set(result)
    assert list(CLASS_NAMES) == PROBABILITY_KEYS and list(SUBTYPES) == PROBABILITY_KEYS[1:]
    assert result["study_instance_uid"] == head_sources[0].StudyInstanceUID
    assert result["series_instance_uid"] == head_sources[0].SeriesInstanceUID

    assert list(result["subject"]) == PROBABILITY_KEYS
    assert all(_is_probability(v) for v in result["subject"].values()), result["subject"]

    slices = result["slices"]
    assert len(slices) == len(head_sources) == 28
    for entry in slices:
        assert list(entry) == ["sop_instance_uid", *PROBABILITY_KEYS]
        assert all(_is_probability(entry[k]) for k in PROBABILITY_KEYS), entry
    assert [s["sop_instance_uid"] for s in slices] == _uids_along_normal(head_sources)

    volume_ml = result["hemorrhage_volume_ml"]
    assert isinstance(volume_ml, float) and volume_ml >= 0.0
    # Decisions at the bundled weights' operating points (0.5 for weights without them);
    # compartment volumes null for weights without compartments, never zero.
    weights = load_weights()
    points = result["operating_points"]
    assert points == dict(weights.operating_points.subject)
    assert list(points) == list(result["present"]) == PROBABILITY_KEYS
    assert result["present"] == {k: result["subject"][k] >= points[k] for k in PROBABILITY_KEYS}
    assert result["volumes_ml"]["hemorrhage"] == volume_ml
    if weights.config.compartments:
        assert sum(result["volumes_ml"][k] for k in SUBTYPES) == pytest.approx(volume_ml)
    else:
        assert all(result["volumes_ml"][k] is None for k in SUBTYPES)
    assert result["engine"] in ("tensorrt", "onnxruntime", "torch")

    model = result["model"]
    assert list(model) == ["name", "version", "weights_sha256"]
    assert all(isinstance(v, str) and v for v in model.values()), model
    assert (
        model["weights_sha256"] == hashlib.sha256(default_weights_path().read_bytes()).hexdigest()
    )

    timings = result["timings_s"]
    assert list(timings) == ["volume", "inference", "results"]
    assert all(isinstance(v, float) and v >= 0.0 for v in timings.values()), timings


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("real/abdomen_ct_3slice", r"series not analysed: .*names COLONOSCOPY, not a head"),
        ("malformed/rgb_screenshot_ct", r"series not analysed: .*not grey-scale HU data"),
        ("real", r"holds 2 series; choose one with --series"),
    ],
)
def test_infer_refuses_unusable_input_naming_the_reason(
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    folder: str,
    reason: str,
) -> None:
    out_dir = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        code = main(["infer", str(shared_data / folder), "--out", str(out_dir)])
    assert code == EXIT_UNUSABLE
    message = capsys.readouterr().err
    assert message.startswith("ichnet-node: error: "), message
    assert re.search(reason, message), message
    assert not out_dir.exists(), "nothing is written for unusable input"
    model_work = [r.getMessage() for r in caplog.records if r.name.startswith(_MODEL_LOGGERS)]
    assert model_work == [], "refused before loading weights or preparing an engine"


def test_infer_refuses_a_folder_without_dicom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not DICOM")
    assert main(["infer", str(folder), "--out", str(tmp_path / "out")]) == EXIT_UNUSABLE
    assert capsys.readouterr().err == f"ichnet-node: error: no DICOM files in {folder}\n"


def test_infer_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert main(["infer", str(missing), "--out", str(tmp_path / "out")]) == EXIT_UNUSABLE
    assert capsys.readouterr().err == f"ichnet-node: error: input folder {missing} does not exist\n"


def test_check_config_accepts_the_example_config() -> None:
    """Through the installed console script: what the README tells admins to run."""
    completed = subprocess.run(
        [*node_command(), "check-config", str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == EXIT_OK, completed.stderr
    assert completed.stdout.startswith(f"{EXAMPLE_CONFIG}: OK (AE ICHNET on 127.0.0.1:11112")


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Path, str]:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    return code, path, capsys.readouterr().err


def test_check_config_names_a_bad_port_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, path, err = _check(tmp_path, "node:\n  port: notaport\n", capsys)
    assert code == EXIT_UNUSABLE
    assert err == f"{path}: node.port: must be an integer 1-65535, got 'notaport'\n"


def test_check_config_names_bad_ae_titles_and_unknown_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "node:\n"
        "  ae_title: ABCDEFGHIJKLMNOPQ\n"  # 17 characters
        "peers:\n"
        "  - {ae_title: 'PACS\\ONE', host: 127.0.0.1, port: 104}\n"
        "  - {ae_title: CT1, host: 127.0.0.1, port: 105, colour: red}\n"
        "seriez: {complete_after_s: 5}\n"
    )
    code, path, err = _check(tmp_path, text, capsys)
    assert code == EXIT_UNUSABLE
    assert err.splitlines() == [
        f"{path}: node.ae_title: must be 1-16 characters (PS3.5 AE), got 'ABCDEFGHIJKLMNOPQ'",
        f"{path}: peers[0].ae_title: must not contain a backslash or control characters, "
        "got 'PACS\\\\ONE'",
        f"{path}: peers[1].colour: unknown key (check its spelling and indentation)",
        f"{path}: seriez: unknown key (check its spelling and indentation)",
    ]


def test_check_config_names_a_bad_selection_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "selection:\n"
        "  per_study: one\n"
        "  include: [{calling_ae: CT_ER}]\n"
        "  exclude: [{convolution_kernel: '(?i)bone|h7(', kernel: BONE}]\n"
    )
    code, path, err = _check(tmp_path, text, capsys)
    assert code == EXIT_UNUSABLE
    assert err.splitlines() == [
        f"{path}: selection.exclude[0].convolution_kernel: '(?i)bone|h7(' is not a valid "
        "regular expression (missing ), unterminated subpattern at position 11)",
        f"{path}: selection.exclude[0].kernel: unknown key (check its spelling and indentation)",
    ]


def test_infer_refuses_a_series_over_the_voxel_limit_before_reading_pixels(
    tmp_path: Path,
    synthetic_head_study: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """limits.max_series_voxels is decided from the headers: no pixel data read, no model."""
    paths = synthetic_head_study.write(tmp_path / "study")["soft"]
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    voxels = len(paths) * int(first.Rows) * int(first.Columns)
    config = tmp_path / "node.yaml"
    config.write_text(
        f"node: {{storage_dir: {tmp_path / 'storage'}}}\nlimits: {{max_series_voxels: {voxels - 1}}}\n"
    )
    reads: list[bool] = []
    real_dcmread = pydicom.dcmread

    def counting_dcmread(*args: Any, **kwargs: Any) -> pydicom.Dataset:
        reads.append(bool(kwargs.get("stop_before_pixels")))
        return real_dcmread(*args, **kwargs)

    with caplog.at_level(logging.INFO), pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydicom, "dcmread", counting_dcmread)
        code = main(
            ["infer", str(paths[0].parent), "--out", str(tmp_path / "out"), "--config", str(config)]
        )
    assert code == EXIT_UNUSABLE
    error = capsys.readouterr().err
    assert f"the series has {voxels} voxels ({len(paths)} instances)" in error
    assert f"limits.max_series_voxels {voxels - 1}" in error
    assert reads and all(reads), "pixel data was read before the refusal"
    assert not [r for r in caplog.record_tuples if r[0].startswith(_MODEL_LOGGERS)]
    assert not (tmp_path / "out").exists()
    config.write_text(f"node: {{storage_dir: {tmp_path / 'storage'}}}\n")
    assert main(["check-config", str(config)]) == EXIT_OK
