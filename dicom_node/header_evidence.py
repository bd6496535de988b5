"""Evidence from free-text headers: does a series name the head, another region, a localizer,
and which kind of reconstruction kernel?

Header words are evidence, not a veto (issue 13): BodyPartExamined is free text on many scanners
("BASE 3MM", "ROUTINE"), so a value that names no body region decides nothing, and only a value
that clearly names another region rejects. Matching rules and word lists live in
:mod:`dicom_node.selection_words`; the decisions here are pure functions of the headers.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pydicom import Dataset
from pydicom.multival import MultiValue

from dicom_node import selection_words as words

#: Series-level attributes that may name the anatomy, most specific first. The study-level
#: StudyDescription only counts when none of these names anything.
SERIES_TEXT_KEYWORDS: Final[tuple[str, ...]] = (
    "BodyPartExamined",
    "SeriesDescription",
    "ProtocolName",
)
STUDY_TEXT_KEYWORDS: Final[tuple[str, ...]] = ("StudyDescription",)

#: Letters that Unicode decomposition leaves alone but that sites do type.
_TRANSLITERATION: Final[dict[int, str]] = str.maketrans(
    {"ß": "SS", "ẞ": "SS", "Ł": "L", "ł": "L", "Ø": "O", "ø": "O", "Æ": "AE", "æ": "AE"}
)
_PATTERN_SYNTAX: Final = re.compile(r"\*?[A-Z]+\*?")
#: The DICOM value separator, as multi-valued attributes are shown in reasons.
BACKSLASH: Final[str] = "\\"


def normalise(text: str) -> str:
    """Upper case without accents: "Crâne" -> "CRANE", "Schädel" -> "SCHADEL"."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a word pattern (``WORD``, ``STEM*`` or ``*PART*``), or ``None``."""
    if not _PATTERN_SYNTAX.fullmatch(normalise(pattern)):
        return (
            f"{pattern!r} is not a word pattern: letters only, as WORD (whole word), "
            "STEM* (word start) or *PART* (anywhere)"
        )
    if pattern.startswith("*") and not pattern.endswith("*"):
        return f"{pattern!r}: a pattern that starts with * must end with * (*PART*)"
    return None


def find_word(text: str, patterns: Iterable[str]) -> str | None:
    """The word of ``text`` that the first matching pattern finds, or ``None``.

    Whole words and stems are matched against the words (runs of letters) of the normalised
    text, so a stem never matches inside an unrelated word; ``*PART*`` patterns search the
    whole text and return the word that holds the part.
    """
    norm = normalise(text)
    tokens = re.findall(r"[A-Z]+", norm)
    for raw in patterns:
        pattern = normalise(raw)
        if pattern.startswith("*"):
            part = pattern.strip("*")
            found = next((t for t in tokens if part in t), None)
            if found is not None:
                return found
        elif pattern.endswith("*"):
            stem = pattern.rstrip("*")
            found = next((t for t in tokens if t.startswith(stem)), None)
            if found is not None:
                return found
        elif pattern in tokens:
            return pattern
    return None


def distinct_values(datasets: Sequence[Dataset], keyword: str) -> list[str]:
    """Non-empty values of a text attribute across the series, in order of first appearance
    (multi-valued attributes joined with a backslash, as DICOM writes them)."""
    values: list[str] = []
    for ds in datasets:
        raw = ds.get(keyword, "")
        if raw is None:
            continue
        value = (
            BACKSLASH.join(str(v) for v in raw) if isinstance(raw, MultiValue) else str(raw)
        ).strip()
        if value and value not in values:
            values.append(value)
    return values


class HeadVerdict(enum.Enum):
    """What the headers say about the anatomy."""

    HEAD = "head"
    OTHER_REGION = "other region"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class HeaderEvidence:
    """The verdict and the phrase that explains it (for the log line and the job's reason)."""

    verdict: HeadVerdict
    evidence: str


@dataclass(frozen=True)
class _Mention:
    keyword: str
    value: str
    head_word: str | None
    region: str | None
    region_word: str | None


def _mentions(
    datasets: Sequence[Dataset],
    keywords: Sequence[str],
    head_words: Sequence[str],
    regions: Mapping[str, Sequence[str]],
) -> list[_Mention]:
    found: list[_Mention] = []
    for keyword in keywords:
        for value in distinct_values(datasets, keyword):
            head = find_word(value, head_words)
            region, region_word = None, None
            for name, patterns in regions.items():
                region_word = find_word(value, patterns)
                if region_word is not None:
                    region = name
                    break
            found.append(_Mention(keyword, value, head, region, region_word))
    return found


def _quote(mention: _Mention) -> str:
    return f"{mention.keyword} {mention.value!r}"


def head_evidence(
    datasets: Sequence[Dataset],
    extra_head_words: Sequence[str] = (),
    extra_region_words: Sequence[str] = (),
) -> HeaderEvidence:
    """Decide "head or not" from the headers, when they are decisive.

    Series-level attributes (BodyPartExamined, SeriesDescription, ProtocolName) speak first; the
    StudyDescription only when they name nothing (a "CT HEAD + ABDOMEN" study holds an abdomen
    series). Within one level: head words and no other region -> HEAD; another region and no
    head word -> OTHER_REGION; both ("HEAD_NECK") or neither ("BASE 3MM") -> UNDECIDED, which
    the image check then decides.
    """
    head_words = (*words.HEAD_WORDS, *extra_head_words)
    regions: dict[str, tuple[str, ...]] = dict(words.REGION_WORDS)
    if extra_region_words:
        regions["selection.non_head_keywords"] = tuple(extra_region_words)
    for keywords in (SERIES_TEXT_KEYWORDS, STUDY_TEXT_KEYWORDS):
        mentions = _mentions(datasets, keywords, head_words, regions)
        heads = [m for m in mentions if m.head_word is not None]
        others = [m for m in mentions if m.region is not None]
        if heads and not others:
            return HeaderEvidence(HeadVerdict.HEAD, f"head per {_quote(heads[0])}")
        if others and not heads:
            other = others[0]
            return HeaderEvidence(
                HeadVerdict.OTHER_REGION,
                f"{_quote(other)} names {other.region_word}, not a head "
                f"(another region: {other.region})",
            )
        if heads and others:
            return HeaderEvidence(
                HeadVerdict.UNDECIDED,
                f"headers name a head and another region ({_quote(heads[0])}; "
                f"{_quote(others[0])}: {others[0].region})",
            )
    named = [
        f"{k} {' / '.join(repr(v) for v in vs)}"
        for k in (*SERIES_TEXT_KEYWORDS, *STUDY_TEXT_KEYWORDS)
        if (vs := distinct_values(datasets, k))
    ]
    if not named:
        return HeaderEvidence(HeadVerdict.UNDECIDED, "no body part in headers")
    return HeaderEvidence(
        HeadVerdict.UNDECIDED, f"headers name no body region ({'; '.join(named)})"
    )


def localizer_evidence(datasets: Sequence[Dataset]) -> str | None:
    """Why the series is a localizer (scout, topogram, surview), or ``None``.

    ImageType value 3 ``LOCALIZER`` is the standard mark (PS3.3 C.8.2.1.1.1); the description
    words catch the scanners and anonymisers that leave it out.
    """
    for ds in datasets:
        image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
        if set(image_type) & words.LOCALIZER_IMAGE_TYPES:
            return f"a localizer (ImageType {BACKSLASH.join(image_type)})"
    for value in distinct_values(datasets, "SeriesDescription"):
        word = find_word(value, words.LOCALIZER_WORDS)
        if word is not None:
            return f"a localizer (SeriesDescription {value!r} names {word})"
    return None


class KernelClass(enum.Enum):
    """Reconstruction kernel kinds, in the order series selection prefers them."""

    SOFT = "soft-tissue"
    UNKNOWN = "unknown"
    SHARP = "sharp"


@dataclass(frozen=True)
class KernelEvidence:
    kernel_class: KernelClass
    evidence: str


def classify_kernel(kernel: str) -> KernelEvidence:
    """Soft-tissue or sharp from the vendor's kernel name (:mod:`dicom_node.selection_words`);
    UNKNOWN when the name is missing or not known (the image check then measures the noise)."""
    if not kernel.strip():
        return KernelEvidence(KernelClass.UNKNOWN, "no ConvolutionKernel")
    key = re.sub(r"\s+", "", normalise(kernel.split("\\")[0]))
    shown = f"kernel {kernel!r}"
    if key in words.SOFT_KERNELS:
        return KernelEvidence(KernelClass.SOFT, f"soft-tissue {shown}")
    if key in words.SHARP_KERNELS:
        return KernelEvidence(KernelClass.SHARP, f"sharp {shown}")
    for expression, soft_up_to, sharp_from in words.NUMBERED_KERNELS:
        match = re.fullmatch(expression, key)
        if match:
            number = int(match.group(1))
            if number <= soft_up_to:
                return KernelEvidence(KernelClass.SOFT, f"soft-tissue {shown}")
            if number >= sharp_from:
                return KernelEvidence(KernelClass.SHARP, f"sharp {shown}")
            return KernelEvidence(KernelClass.UNKNOWN, f"{shown} between soft and sharp")
    if find_word(key, words.SHARP_KERNEL_WORDS):
        return KernelEvidence(KernelClass.SHARP, f"sharp {shown}")
    if find_word(key, words.SOFT_KERNEL_WORDS):
        return KernelEvidence(KernelClass.SOFT, f"soft-tissue {shown}")
    return KernelEvidence(KernelClass.UNKNOWN, f"{shown} not known")
