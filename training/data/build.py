"""The cases of one split, from a training config: synthetic + public datasets."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from training.config import DatasetSection, TrainConfig
from training.data.cq500 import Cq500Source
from training.data.nifti_labelmap import NiftiLabelMapSource
from training.data.physionet import PhysioNetIchSource
from training.data.rsna import RsnaSource
from training.data.series_cache import SeriesCacheSource, cache_folder
from training.data.source import CaseSource, ConcatSource, SubsetSource
from training.data.splits import Split, split_source
from training.data.synthetic import SyntheticSource

logger = logging.getLogger(__name__)


def _nifti(root: Path, **options: Any) -> CaseSource:
    if "label_map" not in options:
        raise ValueError("nifti datasets need options.label_map (a preset such as bhsd, or a map)")
    return NiftiLabelMapSource(root, **options)


#: Dataset kind -> loader (root, **options).
LOADERS: Mapping[str, Callable[..., CaseSource]] = {
    "rsna": RsnaSource,
    "cq500": Cq500Source,
    "physionet": PhysioNetIchSource,
    "nifti": _nifti,
}


def open_dataset(section: DatasetSection, series_cache: Path | None = None) -> CaseSource:
    """Index the dataset a config section describes, read through the series cache under
    ``series_cache`` when one is given.

    Raises
    ------
    ValueError
        Options the loader does not take (the message names the dataset).
    """
    try:
        source = LOADERS[section.kind](section.root, **section.options)
    except TypeError as exc:
        raise ValueError(f"dataset {section.kind} at {section.root}: bad options ({exc})") from None
    if series_cache is None:
        return source
    return SeriesCacheSource(source, cache_folder(series_cache, section.kind, section.root))


def dataset_split(section: DatasetSection, source: CaseSource, split: Split) -> CaseSource:
    """The part of ``source`` that belongs to ``split`` according to ``section``."""
    if section.split == "auto":
        fractions = {Split(key): value for key, value in section.fractions.items()}
        return split_source(source, split, fractions)
    if Split(section.split) is split:
        return source
    return SubsetSource(source, [], name=f"{source.name}:{split.value}")


def build_split(config: TrainConfig, split: Split) -> CaseSource:
    """All cases of ``split``: the synthetic seed block of the split, then each dataset's part."""
    sources: list[CaseSource] = []
    synthetic = config.data.synthetic
    if synthetic is not None:
        count = {
            Split.TRAIN: synthetic.train_cases,
            Split.VAL: synthetic.val_cases,
            Split.TEST: synthetic.test_cases,
        }[split]
        if count:
            # Validation/test cases are re-read at every validation: always cached.
            cached = config.data.cache_synthetic or split is not Split.TRAIN
            sources.append(
                SyntheticSource(
                    split,
                    count,
                    offset=synthetic.seed_offset,
                    generator_overrides=synthetic.generator,
                    cache_dir=config.data.cache_dir / "synthetic" if cached else None,
                )
            )
    series_cache = config.data.cache_dir if config.data.series_cache else None
    for section in config.data.datasets:
        part = dataset_split(section, open_dataset(section, series_cache), split)
        if len(part):
            sources.append(part)
    combined = ConcatSource(sources, name=split.value)
    logger.info(
        "%s split: %d cases (%s)",
        split.value,
        len(combined),
        ", ".join(f"{s.name} {len(s)}" for s in sources) or "none",
    )
    return combined
