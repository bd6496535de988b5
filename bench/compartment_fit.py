"""How much of one compartment's blood a checkpoint finds on the training series that hold it.

``ichnet-eval --split train`` pools every compartment over the first N training series at source
resolution; a compartment the network cannot learn (2026-12-05: small convexity subdural rims,
where the inner-table band is as bright as the blood) needs a sharper, cheaper probe to compare
two training arms at equal steps. This one runs the network on the model grid (no augmentation,
whole series) over every training series that holds the compartment, and prints the pooled share
of its labelled voxels with hemorrhage probability > 0.5, their mean probability, the share found
of the other blood in the same series, the false blood pixels, and the share found per series
(which series the network misses entirely) with the planned shape of each of its lesions of that
compartment (kind and thickness: 2026-12-05, every missed subdural series held a convexity SDH
at or near the generator's 4 mm floor).

    PYTHONPATH=. python bench/compartment_fit.py --checkpoint training/checkpoints/cpu_diag.pt \
        [--config training/configs/cpu_diag.yaml] [--compartment SDH] [--count 240]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (puts the repo on sys.path)

import ichnet_core.synthetic.case as synthetic_case
from ichnet_core.labels import HEMORRHAGE, SUBTYPES
from ichnet_core.models.ichnet import seg_probabilities
from ichnet_core.models.registry import create_model
from ichnet_core.synthetic.lesions import HemorrhagePlan
from training.checkpoint import load_checkpoint, trained_weights
from training.cli import with_synthetic_cases
from training.config import load_config
from training.data.build import build_split
from training.data.dataset import make_sample, prepare_case
from training.data.splits import Split
from training.networks import grid_of
from training.step import forward_batch

#: Hemorrhage probability counted as found: a majority of the three classes, which the node's
#: argmax decision always agrees with.
THRESHOLD = 0.5


class PlanRecorder:
    """Keeps the lesion plan of the case generated last.

    Why a wrapper: a generated case does not carry its plan, and the generator's source must not
    change for a probe (its hash keys every prepared-case cache and the comparison's data
    fingerprint). Cases read from a case cache are not generated, so they have no plan.
    """

    def __init__(self) -> None:
        self.plan: HemorrhagePlan | None = None
        self._planner = synthetic_case.plan_hemorrhages

    def __call__(self, *args: Any, **kwargs: Any) -> HemorrhagePlan:
        self.plan = self._planner(*args, **kwargs)
        return self.plan

    def shapes(self, subtype: str) -> str:
        """Kind and thickness (mm) of each lesion of ``subtype`` in the last plan."""
        if self.plan is None:
            return "plan n/a"
        return ", ".join(
            f"{lesion.shape.kind.value} {getattr(lesion.shape, 'thickness', float('nan')):.1f} mm"
            for lesion in self.plan.lesions
            if lesion.subtype == subtype
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=Path("training/configs/cpu_diag.yaml"))
    parser.add_argument("--compartment", choices=SUBTYPES, default="SDH")
    parser.add_argument("--count", type=int, default=None, help="training series (config's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.config)
    if args.count is not None:
        config = with_synthetic_cases(config, Split.TRAIN, args.count)
    model = create_model(config.model.name, **config.model.overrides)
    model.load_state_dict(trained_weights(load_checkpoint(args.checkpoint)))
    model.eval()
    grid = grid_of(model)
    label = 1 + SUBTYPES.index(args.compartment)
    found = total = other_found = other_total = false_pixels = 0
    probability_sum = 0.0
    per_series: dict[int, float] = {}
    shapes: dict[int, str] = {}
    recorder = PlanRecorder()
    synthetic_case.plan_hemorrhages = recorder
    source = build_split(config, Split.TRAIN)
    for index in range(len(source)):
        recorder.plan = None
        prepared = prepare_case(source[index], grid)
        if prepared.compartments is None or not (prepared.compartments == label).any():
            continue
        with torch.inference_mode():
            batch = forward_batch(model, [make_sample(prepared)], torch.device("cpu"))
        assert batch.seg_logits is not None and batch.compartment_targets is not None
        blood = seg_probabilities(batch.seg_logits.float())[:, HEMORRHAGE].numpy()
        targets = batch.seg_targets.numpy()
        inside = batch.compartment_targets.numpy() == label
        other = (targets == HEMORRHAGE) & ~inside
        found += int((blood[inside] > THRESHOLD).sum())
        total += int(inside.sum())
        probability_sum += float(blood[inside].sum())
        other_found += int((blood[other] > THRESHOLD).sum())
        other_total += int(other.sum())
        false_pixels += int((blood[targets != HEMORRHAGE] > THRESHOLD).sum())
        per_series[index] = float((blood[inside] > THRESHOLD).mean())
        shapes[index] = recorder.shapes(args.compartment)
    if not total:
        print(f"no training series holds {args.compartment}")
        return 1
    print(f"{args.checkpoint}: {len(per_series)} training series with {args.compartment}")
    print(
        f"{args.compartment} voxels found {found / total:.3f} ({found}/{total}), "
        f"mean probability {probability_sum / total:.3f}; other blood found "
        f"{other_found / max(other_total, 1):.3f}; false blood pixels {false_pixels}"
    )
    print("per series: index, share found, planned lesions")
    for index, share in per_series.items():
        print(f"  {index:5d}  {share:.2f}  {shapes[index]}")
    missed = sum(share < 0.05 for share in per_series.values())
    print(f"series with under 5 % found: {missed} of {len(per_series)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
