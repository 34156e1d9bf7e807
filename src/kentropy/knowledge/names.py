"""Coined proper names for fictional knowledge: pronounceable, unique, and outside a given vocabulary.

Every proper name is made of coined words, each used once per file, plus at most one common
head noun ("Academy", "Medal") taken from a list of alternatives. No word of a name, nor the
name itself, may be in the caller's `avoid` vocabulary (compared case-insensitively).
"""

from __future__ import annotations

import random
import re
from typing import Iterable

from kentropy.errors import ArgumentError, KentropyError

ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s",
          "st", "t", "tr", "v", "z", "th", "sk", "vr", "j")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ia", "y")
CODAS = ("", "", "n", "r", "l", "s", "th", "nd", "rn", "ss", "m", "k", "ck", "x", "sk", "rth", "ld")
MAX_TRIES = 10_000  # coining rarely needs more than a handful; this bounds a hopeless `avoid`


def words_of(text: str) -> list[str]:
    """Lower-cased words of a name, as compared against the avoid vocabulary."""
    return re.findall(r"\w+", text.lower())


def vocabulary(avoid: Iterable[str]) -> set[str]:
    """Every item of `avoid` (lower-cased) and every word of it."""
    out: set[str] = set()
    for item in avoid:
        item = item.strip().lower()
        if item:
            out.add(item)
            out.update(words_of(item))
    return out


class Namer:
    """Coins names with `rng`; remembers every word it used so that no two names share one."""

    def __init__(self, rng: random.Random, avoid: Iterable[str] = ()):
        self.rng = rng
        self.avoid = vocabulary(avoid)
        self.used: set[str] = set()

    def allowed(self, name: str) -> bool:
        return name.lower() not in self.avoid and not any(w in self.avoid for w in words_of(name))

    def word(self) -> str:
        """A new capitalized coined word, e.g. 'Tavrinos'."""
        for _ in range(MAX_TRIES):
            n = self.rng.choice((2, 2, 2, 3))
            parts = []
            for k in range(n):
                onset = "" if k == 0 and self.rng.random() < 0.2 else self.rng.choice(ONSETS)
                parts.append(onset + self.rng.choice(VOWELS))
            w = ("".join(parts) + self.rng.choice(CODAS)).capitalize()
            if 5 <= len(w) <= 10 and w.lower() not in self.used and self.allowed(w):
                self.used.add(w.lower())
                return w
        raise KentropyError("cannot coin a new name: the avoid vocabulary or the number of entries is too large")

    def person(self) -> str:
        """Given name and family name, e.g. 'Tavrin Oskello'."""
        return f"{self.word()} {self.word()}"

    def head(self, options: tuple[str, ...]) -> str:
        """One of `options` (common nouns), chosen at random among those not in the avoid vocabulary."""
        allowed = [o for o in options if self.allowed(o)]
        if not allowed:
            raise ArgumentError("avoid", f"every one of {', '.join(options)} is avoided; cannot name this entity")
        return self.rng.choice(allowed)

    def named(self, heads: tuple[str, ...]) -> str:
        """A coined word with a head noun, e.g. 'Orvast Academy'."""
        return f"{self.word()} {self.head(heads)}"
