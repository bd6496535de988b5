"""What every dataset loader offers: a list of cases that are loaded one at a time.

Indexing a dataset must be cheap (file names, a CSV, DICOM headers) because splits are decided
from the index alone; pixels are read only when a case is used.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from training.data.case import LabelledCase


@dataclass(frozen=True)
class CaseEntry:
    """Index entry of one case: its unique id and the group (patient) it belongs to."""

    case_id: str
    group_id: str


class CaseSource(abc.ABC):
    """A sequence of :class:`LabelledCase` read lazily from one dataset."""

    #: Short dataset name used in case ids and logs (``rsna``, ``cq500``, ...).
    name: str

    @property
    @abc.abstractmethod
    def entries(self) -> Sequence[CaseEntry]:
        """The cases of this source, in a fixed order."""

    @abc.abstractmethod
    def load(self, index: int) -> LabelledCase:
        """Read case ``index`` (pixels and labels)."""

    def fingerprint(self, index: int) -> str | None:
        """A key that changes whenever case ``index``'s content could (prepared-case cache), or
        ``None`` when the source cannot promise one (then nothing is cached on disk)."""
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> LabelledCase:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: case index {index} out of range 0-{len(self) - 1}")
        return self.load(index)


class SubsetSource(CaseSource):
    """The cases of ``source`` at ``indices`` (a split of a dataset)."""

    def __init__(self, source: CaseSource, indices: Sequence[int], name: str | None = None) -> None:
        self.source = source
        self.indices = tuple(int(i) for i in indices)
        self.name = name or source.name
        all_entries = source.entries
        self._entries = tuple(all_entries[i] for i in self.indices)

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def load(self, index: int) -> LabelledCase:
        return self.source.load(self.indices[index])

    def fingerprint(self, index: int) -> str | None:
        return self.source.fingerprint(self.indices[index])


class ConcatSource(CaseSource):
    """Several sources one after the other (training on synthetic + public data together)."""

    def __init__(self, sources: Sequence[CaseSource], name: str = "combined") -> None:
        self.sources = tuple(sources)
        self.name = name
        self._offsets: list[tuple[int, CaseSource]] = []
        entries: list[CaseEntry] = []
        for source in self.sources:
            self._offsets.append((len(entries), source))
            entries.extend(source.entries)
        ids = [entry.case_id for entry in entries]
        if len(set(ids)) != len(ids):
            twice = sorted({case_id for case_id in ids if ids.count(case_id) > 1})
            raise ValueError(f"case ids appear in more than one source: {twice[:5]}")
        self._entries = tuple(entries)

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def _locate(self, index: int) -> tuple[CaseSource, int]:
        for start, source in reversed(self._offsets):
            if index >= start:
                return source, index - start
        raise IndexError(f"{self.name}: case index {index} out of range")

    def load(self, index: int) -> LabelledCase:
        source, local = self._locate(index)
        return source.load(local)

    def fingerprint(self, index: int) -> str | None:
        source, local = self._locate(index)
        return source.fingerprint(local)
