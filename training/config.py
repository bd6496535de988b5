"""Typed, frozen training configuration read from YAML (``training/configs/*.yaml``).

Mistakes surface at load time with a message that names the key
(``optim.lr: must be > 0, got -1``). The split follows nnU-Net's plans idea: *what the data is*
(``data``) apart from *how to train* (``optim``, ``loss``, ``augment``). Hyperparameters live here,
never in trainer subclasses.

The config hash (:func:`config_hash`) identifies everything that changes the result of a run;
settings that only change how long, where or how it runs (epochs, output folder, device,
determinism, CPU bfloat16, threads, workers, caches, validation frequency, test-set size,
logging, checkpoint frequency) are left out, so a run can be resumed with more epochs, on another
machine, or on a GPU.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ichnet_core.config_errors import ConfigError, format_validation_error, read_yaml
from ichnet_core.labels import SUBTYPES
from training.data.splits import Split, check_fractions

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    """Which network: an ICHNet registry variant or a baseline, plus its options."""

    #: ``ichnet``, ``ichnet_large``, ``ichnet_cls``, ``ichnet_seg``, ``ichnet_no_att`` or a
    #: baseline ``resnet2d``, ``resnet3d``, ``unet3d``.
    name: str = "ichnet"
    #: ICHNetConfig fields (widths, input_size, ...) or baseline options.
    overrides: dict[str, Any] = Field(default_factory=dict)


class SyntheticSection(_Section):
    """Synthetic cases from ``ichnet_core.synthetic``; each split draws from its own seed block."""

    train_cases: Annotated[int, Field(ge=0)] = 64
    val_cases: Annotated[int, Field(ge=0)] = 8
    test_cases: Annotated[int, Field(ge=0)] = 16
    #: First seed used inside each split's block (to draw a fresh set of the same size).
    seed_offset: Annotated[int, Field(ge=0)] = 0
    #: SyntheticConfig overrides (rows, columns, negative_fraction, ...).
    generator: dict[str, Any] = Field(default_factory=dict)


SplitName = Literal["train", "val", "test", "auto"]


class DatasetSection(_Section):
    """A public dataset read by one of the loaders in ``training.data``."""

    kind: Literal["rsna", "cq500", "physionet", "nifti"]
    root: Path
    #: ``auto`` splits by patient with ``fractions``; otherwise every case goes to that split.
    split: SplitName = "auto"
    fractions: dict[Literal["train", "val", "test"], NonNegativeFloat] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    #: Loader keyword arguments (e.g. ``label_map: bhsd`` for ``nifti``).
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fractions(self) -> DatasetSection:
        if self.split == "auto":
            check_fractions({Split(key): value for key, value in self.fractions.items()})
        return self


class DataSection(_Section):
    """What the model sees."""

    #: Consecutive slices per training sample (the ConvLSTM's sequence length).
    slices_per_sample: PositiveInt = 16
    cache_dir: Path = Path("var/cache/training")
    #: Keep generated synthetic *training* cases as compressed .npz under cache_dir (about 2 MB
    #: per case at 128x128, 40 MB at 512x512: switch off for large 512x512 sets and generate on
    #: the fly in the workers). Validation and test cases are always cached.
    cache_synthetic: bool = True
    #: Keep prepared (windowed, resized, float16) cases in memory after first use; every
    #: DataLoader worker keeps its own copy, so only for small sets.
    cache_in_memory: bool = True
    num_workers: Annotated[int, Field(ge=0)] = 0
    #: Share of training runs of a series with labelled bleeding that are placed to contain a
    #: bleeding slice (the rest are placed uniformly). Most runs of a positive series would
    #: otherwise hold no blood at all, and small bleeds would be seen too rarely to learn.
    lesion_run_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    #: Square training crop in model pixels (``null`` = whole slices). Fully convolutional parts
    #: learn from crops at full resolution for a fraction of the cost (nnU-Net's patches); the
    #: crop's slice labels are re-derived from what it shows (training.data.dataset).
    crop_size: Annotated[int, Field(ge=8)] | None = None
    #: Share of training samples that keep whole slices although ``crop_size`` is set, so the
    #: slice/subject heads also see whole slices as at inference.
    whole_slice_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    #: Keep prepared (model-grid, uint8) cases as .npz under ``cache_dir/prepared``, so a case
    #: is generated and prepared once, not in every run or epoch.
    cache_prepared: bool = True
    #: Worker processes that generate and prepare every case before training starts (0 = the
    #: training process prepares each case at first use).
    prepare_workers: Annotated[int, Field(ge=0)] = 0
    #: Read public datasets (``datasets``) through the series cache under
    #: ``cache_dir/series``: each series decoded once from DICOM/NIfTI and kept as int16 HU
    #: ``.npz`` (``ichnet-train cache`` fills it up front, in parallel;
    #: training.data.series_cache).
    series_cache: bool = False
    synthetic: SyntheticSection | None = SyntheticSection()
    datasets: tuple[DatasetSection, ...] = ()


class AugmentSection(_Section):
    """The paper's geometric augmentation; one transform per subject."""

    enabled: bool = True
    rotation_deg: Annotated[float, Field(ge=0, le=180)] = 90.0
    shear: Annotated[float, Field(ge=0, lt=1)] = 0.1
    zoom: Annotated[float, Field(ge=0, lt=1)] = 0.2
    #: Pixels of the model input; the paper's 20 px are at 512x512.
    shift_px: NonNegativeFloat = 20.0
    flip_lr: Probability = 0.5
    flip_ud: Probability = 0.5


class OptimSection(_Section):
    """Adam as in the paper."""

    lr: Annotated[float, Field(gt=0)] = 1e-5
    #: Learning rate of the uncertainty weights; ``null`` = ``lr``.
    uncertainty_lr: Annotated[float, Field(gt=0)] | None = None
    weight_decay: NonNegativeFloat = 0.0
    #: The global batch: cases per optimiser step, whatever the number of ranks.
    batch_size: PositiveInt = 2
    #: Cases per forward/backward pass; the step's gradient is the mean over the
    #: ``batch_size / micro_batch_size`` micro-batches (gradient accumulation on one GPU, shared
    #: out to the ranks under torchrun, whose number must divide it). ``null`` = ``batch_size``.
    #: It changes what a step computes (batch-norm statistics and the pooled Dice are per
    #: micro-batch), so it is part of the config hash; the number of ranks is not.
    micro_batch_size: PositiveInt | None = None
    epochs: PositiveInt = 10
    #: Clip the global gradient norm; ``null`` = no clipping.
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    #: ``auto``: bfloat16/float16 autocast on CUDA, float32 on CPU (but see ``cpu_bf16``).
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"
    #: Train on a CPU under bfloat16 autocast (unless ``amp: off``). Worth it only on a CPU with
    #: native bfloat16 (AVX512-BF16 or AMX): the cpu_diag network's training step of 2 x 8
    #: slices of 128 px crops took 0.85 s instead of 1.38 s on one core of this project's EPYC.
    #: Ignored, with a warning, on a CPU without them (:func:`training.device.autocast_dtype`).
    #: Validation, evaluation and export stay float32, the precision the node runs on a CPU.
    #: Like ``device`` it says how a run computes, not what (a CPU run continued on a GPU runs
    #: under autocast too), so it is not part of the config hash and a running run can switch.
    cpu_bf16: bool = False
    #: Train on a CPU with the convolutions in channels-last layout (oneDNN's faster kernels for
    #: it; see :func:`training.device.use_channels_last`). The step computes the same function
    #: (sums in another order), so like ``cpu_bf16`` it is not part of the config hash.
    cpu_channels_last: bool = False
    #: Decay of an exponential moving average of the weights (e.g. 0.999: about the last 1000
    #: steps), kept beside the trained weights; validation, evaluation and export then use the
    #: average. With a constant learning rate and batches of two series the raw weights jump
    #: from step to step (validation AUCs swung by 0.2 between checks); the average does not.
    #: It never feeds back into training, so it is not part of the config hash and can be
    #: switched on in a running run. ``null`` = off.
    ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = None

    @model_validator(mode="after")
    def _micro_divides(self) -> OptimSection:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size {self.micro_batch_size} must divide batch_size {self.batch_size}"
            )
        return self


class LossSection(_Section):
    uncertainty_weighting: bool = True
    #: Weight of a voxel-wise cross-entropy added to the segmentation Dice term during training.
    #: 0 = the paper's loss (Dice only). Short runs (minutes to an hour) learn small bleeds far
    #: sooner with it: Dice alone gives a tiny structure almost no gradient until the network
    #: already predicts part of it. Validation losses stay Dice-only, so runs stay comparable.
    seg_ce_weight: Annotated[float, Field(ge=0.0)] = 0.0
    #: Class weight of hemorrhage voxels in that cross-entropy (the other classes weigh 1).
    #: Blood is ~0.3 % of the voxels of a bleeding slice; with 1, the cross-entropy drives the
    #: hemorrhage probability to zero everywhere before the network can tell blood from brain
    #: (measured: training-batch hemorrhage Dice 0.000 after 300 steps at 1 and at 20, 0.2-0.5
    #: after 200 steps at 100, docs/results.md).
    seg_ce_hemorrhage_weight: Annotated[float, Field(gt=0.0)] = 1.0
    #: Extra factor on that weight for the blood voxels of a compartment, by subtype name
    #: (e.g. ``{SDH: 4.0}``); compartments left out, and blood of unknown compartment, keep 1.
    #: A thin convexity subdural rim lies where the inner-table band is as bright (2-4 mm
    #: inside the table: rim median 89 HU, band 62 HU with a 90th percentile of 110-150 HU,
    #: measured 2026-12-05 on training series 6 and 37), so with one weight for all blood the
    #: ninth run learned to call the whole band brain: 4.5 % of the labelled subdural voxels of
    #: its own training series found, hemorrhage probability 0.005 inside them.
    seg_ce_compartment_weights: dict[str, Annotated[float, Field(gt=0.0)]] = {}

    @field_validator("seg_ce_compartment_weights", mode="after")
    @classmethod
    def _factor_one_is_none(cls, weights: dict[str, float]) -> dict[str, float]:
        """A factor of 1 computes the loss without one, so it is dropped: a config derived from
        another (compare_diag from cpu_diag) switches a base factor off with ``1.0`` and keeps the
        config hash of the runs made before the base had it."""
        return {name: factor for name, factor in weights.items() if factor != 1.0}

    @model_validator(mode="after")
    def _known_compartments(self) -> LossSection:
        unknown = sorted(set(self.seg_ce_compartment_weights) - set(SUBTYPES))
        if unknown:
            raise ValueError(
                f"seg_ce_compartment_weights: unknown compartment(s) {unknown}; "
                f"expected some of {list(SUBTYPES)}"
            )
        return self


class ValidationSection(_Section):
    every_epochs: PositiveInt = 1
    #: Decision threshold on sigmoid probabilities for accuracy/sensitivity/specificity/F1.
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    #: Folders of real head CTs without hemorrhage, checked at every validation: their subject
    #: ``any`` and false hemorrhage volume go into metrics.csv (``val_real_normal_*``, the worst
    #: series), because synthetic figures alone do not show what a model does on a scanner's
    #: images. A missing folder is skipped with a warning (checkouts without ../shared).
    real_normal_series: list[Path] = []


class CheckpointSection(_Section):
    """When the resumable ``last.pt`` is written besides every epoch end."""

    #: Also write it every this many minutes inside an epoch (a long run stopped by the session
    #: end, a time box or SIGTERM loses at most this much); ``null`` = at epoch ends only.
    every_minutes: Annotated[float, Field(gt=0)] | None = 10.0


class LoggingSection(_Section):
    #: Write a row to steps.csv every this many optimiser steps.
    log_every_steps: PositiveInt = 10
    #: ``auto``: TensorBoard event files when the tensorboard package is installed.
    tensorboard: Literal["auto", "off"] = "auto"
    progress_bar: bool = True


class TrainConfig(_Section):
    """A whole training run."""

    seed: Annotated[int, Field(ge=0)] = 0
    output_dir: Path = Path("runs/default")
    #: ``auto`` = CUDA when available.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: torch CPU threads; ``null`` = torch's default (one per core). On a CPU shared with other
    #: work one thread is often faster than oversubscribed cores.
    cpu_threads: Annotated[int, Field(ge=1)] | None = None
    #: Deterministic algorithms (slower on some GPU kernels; warns where none exists).
    deterministic: bool = True
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    augment: AugmentSection = AugmentSection()
    optim: OptimSection = OptimSection()
    loss: LossSection = LossSection()
    validation: ValidationSection = ValidationSection()
    logging: LoggingSection = LoggingSection()
    checkpoint: CheckpointSection = CheckpointSection()

    @model_validator(mode="after")
    def _has_data(self) -> TrainConfig:
        synthetic = self.data.synthetic
        if (synthetic is None or synthetic.train_cases == 0) and not any(
            d.split in ("train", "auto") for d in self.data.datasets
        ):
            raise ValueError("data: no training cases (no synthetic train_cases and no dataset)")
        return self


class CompareRun(_Section):
    """One model of the comparison."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    model: ModelSection
    #: Deep-merged into the base config (e.g. a different learning rate for a baseline).
    overrides: dict[str, Any] = Field(default_factory=dict)


class CompareConfig(_Section):
    """Which runs to compare, on what."""

    #: Base training config, relative to the compare config file.
    base: Path
    output_dir: Path = Path("runs/compare")
    results_md: Path = Path("docs/results.md")
    #: Where each finished run's report goes (``<reports_dir>/<run name>/``: ``run.json``,
    #: ``metrics.json``, ``tables.md``, ``cases.csv``); ``null`` = ``<output_dir>/<run
    #: name>/eval-<split>``. A run whose report there has the run's config hash and was made on
    #: the same cases is not trained or evaluated again, so a comparison too long for one
    #: working session continues on another machine when this folder is committed (the run
    #: folders are not).
    reports_dir: Path | None = None
    split: Literal["val", "test"] = "test"
    #: Deep-merged into the base config for every run, before the run's own overrides (e.g. one
    #: shorter schedule for all models).
    overrides: dict[str, Any] = Field(default_factory=dict)
    runs: tuple[CompareRun, ...]


def parse_config(data: Any) -> TrainConfig:
    """Validate an already-parsed YAML document; raises :class:`ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"<top level>: must be a mapping, got {type(data).__name__}"])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([format_validation_error(e) for e in exc.errors()]) from None


def parse_compare_config(data: Any) -> CompareConfig:
    """Validate a compare config document; raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError([f"<top level>: must be a mapping, got {type(data).__name__}"])
    try:
        return CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([format_validation_error(e) for e in exc.errors()]) from None


def load_config(path: Path) -> TrainConfig:
    """Read and validate a training config file."""
    return parse_config(read_yaml(path))


#: Settings added after runs had been started, as (section, field): left out of the hash while
#: at their default, so configs (and checkpoints) from before a setting existed keep their hash.
_ADDED_LATER: Final[tuple[tuple[str, str], ...]] = (
    ("optim", "micro_batch_size"),
    ("loss", "seg_ce_compartment_weights"),
)


def config_hash(config: TrainConfig) -> str:
    """sha256 of the settings that change what a run computes (see the module docstring)."""
    excluded: dict[str, Any] = {
        "output_dir": True,
        "cpu_threads": True,
        # Where and how exactly it runs: a CPU run continued on a GPU (non-deterministic
        # kernels there) is still the same run.
        "device": True,
        "deterministic": True,
        "optim": {"epochs", "ema_decay", "cpu_bf16", "cpu_channels_last"},
        "data": {
            "num_workers": True,
            "prepare_workers": True,
            "cache_prepared": True,
            "cache_synthetic": True,
            "cache_in_memory": True,
            "cache_dir": True,
            "series_cache": True,
            "synthetic": {"test_cases"},
        },
        "validation": {"every_epochs", "real_normal_series"},
        "logging": True,
        "checkpoint": True,
    }
    for section_name, field in _ADDED_LATER:
        section = getattr(config, section_name)
        if getattr(section, field) == type(section).model_fields[field].default:
            excluded[section_name] = set(excluded.get(section_name, set())) | {field}
    data = config.model_dump(mode="json", exclude=excluded)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
