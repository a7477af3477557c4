"""Keywords as people type them, matched onto the words a cloud's tasks use (docs/method.md §4).

Two spellings of one term are one keyword: case, spaces, ``-`` and ``_`` do not matter (``X-Ray``, ``x ray`` and
``x_ray`` are :func:`canonical` ``x_ray``). A query's keyword that no task uses is mapped onto the vocabulary when a
term is made of it (``fundus`` reaches ``fundus_photography``: the reference names modalities that way); one that
matches nothing is named, with the nearest terms. Torch-free.
"""
from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["KeywordMatch", "canonical", "match_keywords", "vocabulary"]

_SEPARATORS = re.compile(r"[\s_\-]+")


def canonical(keyword: str) -> str:
    """The one spelling of a keyword: lower case, separators (spaces, ``-``, ``_``) as one ``_``."""
    return _SEPARATORS.sub("_", keyword.strip().lower()).strip("_")


def vocabulary(keyword_sets: Iterable[Sequence[str]]) -> Counter:
    """How many tasks use each (canonical) keyword."""
    counts: Counter = Counter()
    for keywords in keyword_sets:
        counts.update({canonical(k) for k in keywords})
    return counts


@dataclass(frozen=True)
class KeywordMatch:
    """A query's keywords on a vocabulary: ``keywords`` (canonical, mapped), what was mapped and what matched
    nothing (with the nearest terms)."""

    keywords: tuple[str, ...]
    mapped: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unmatched: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def notes(self) -> list[str]:
        out = [f"keyword {given!r} matched {', '.join(terms)}" for given, terms in self.mapped.items()]
        out += [f"keyword {given!r} matches no task of the cloud" + (f" (nearest: {', '.join(near)})" if near else "")
                for given, near in self.unmatched.items()]
        return out


def match_keywords(keywords: Sequence[str], counts: Counter, *, nearest: int = 3) -> KeywordMatch:
    """Map a query's keywords onto a vocabulary (:func:`vocabulary`).

    A keyword the vocabulary holds (in any spelling) is kept; else the terms whose parts contain all of its parts
    (``fundus`` → ``fundus_photography``; ``laser endomicroscopy`` → ``confocal_laser_endomicroscopy``) replace it;
    else it is kept as it is (it still counts in the union) and named with its nearest terms.
    """
    out: list[str] = []
    mapped: dict[str, tuple[str, ...]] = {}
    unmatched: dict[str, tuple[str, ...]] = {}
    terms = sorted(counts)
    for given in keywords:
        word = canonical(given)
        if not word:
            continue
        if word in counts:
            found: tuple[str, ...] = (word,)
        else:
            parts = set(word.split("_"))
            found = tuple(t for t in terms if parts <= set(t.split("_")))
            if found:
                mapped[given] = found
            else:
                unmatched[given] = tuple(difflib.get_close_matches(word, terms, n=nearest, cutoff=0.5))
                found = (word,)
        out.extend(t for t in found if t not in out)
    return KeywordMatch(tuple(out), mapped, unmatched)
