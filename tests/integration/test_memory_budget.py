"""One job's memory budget (issue 10): a long 512x512 head CT analysed end to end in <= 2 GB.

The real command (``ichnet-node infer``: read, select, volume, network, labels, SEG, SR,
result.json) runs on a synthetic 512x512 series at the generator's finest slice spacing (about
260 slices) with the node's bundled weights and the torch engine. Its peak resident set size is
read by a small parent process whose only child it is (``RUSAGE_CHILDREN``), so nothing else the
test session ran is counted. ``bench/memory_budget.py`` prints the same per stage and engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import yaml
from pydicom import dcmwrite

from ichnet_core.synthetic import SyntheticConfig, generate_case, to_datasets

pytestmark = pytest.mark.slow

BUDGET_BYTES: Final[int] = 2 * 1024**3
#: The generator's finest spacing: about 260 slices over the head.
SPACING_MM: Final[float] = 0.5
MIN_SLICES: Final[int] = 250

_MEASURE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr[-4000:])
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def test_a_long_512_series_is_analysed_within_two_gigabytes(
    tmp_path: Path, engine_cache_dir: Path
) -> None:
    config = SyntheticConfig(rows=512, columns=512, slice_spacing_mm=(SPACING_MM, SPACING_MM))
    datasets = to_datasets(generate_case(300, config, hemorrhage=True))
    assert len(datasets) >= MIN_SLICES
    series = tmp_path / "series"
    series.mkdir()
    for index, dataset in enumerate(datasets):
        dcmwrite(series / f"CT{index:04d}.dcm", dataset, enforce_file_format=True)
    del datasets
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(
        yaml.safe_dump(
            {
                "node": {"storage_dir": str(tmp_path / "storage")},
                "engine": "torch",
                "model": {"cache_dir": str(engine_cache_dir)},
            }
        )
    )
    command = [
        str(Path(sys.executable).with_name("ichnet-node")),
        "infer",
        str(series),
        "--out",
        str(tmp_path / "out"),
        "--config",
        str(node_yaml),
    ]
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    returncode, peak = (int(v) for v in run.stdout.split())
    assert returncode == 0, run.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert len(result["slices"]) == len(list(series.iterdir()))
    print(
        f"ichnet-node infer, {len(result['slices'])} slices 512x512: peak RSS {peak / 2**20:.0f} MiB"
    )
    assert peak <= BUDGET_BYTES, f"peak RSS {peak / 2**20:.0f} MiB over the 2048 MiB budget"
