"""phrases: a prompt as its comma-separated phrases, and CLIP's token budget.

Stable Diffusion prompts are a subject followed by modifier phrases ("oil painting, by greg
rutkowski, 8k"). CLIP reads at most 77 tokens (with its start and end tokens); the rest is lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_WEIGHT = re.compile(r":\s*-?\d+(\.\d+)?$")
_EDGES = "()[]{}<> \t\"'."


def normalize(phrase: str) -> str:
    """The comparable form of a phrase: no attention brackets or weights, lower case."""
    text = phrase.strip().strip(_EDGES)
    text = _WEIGHT.sub("", text).strip(_EDGES)
    return " ".join(text.lower().split())


def split_phrases(prompt: str) -> list[str]:
    """The distinct normalised phrases of ``prompt`` in order (the first is its subject)."""
    seen: dict[str, None] = {}
    for part in re.split(r"[,\n|]", prompt):
        phrase = normalize(part)
        if phrase and len(phrase.split()) <= 12:
            seen.setdefault(phrase, None)
    return list(seen)


class TokenBudget:
    """Counts tokens with the CLIP model's own tokenizer and keeps prompts within its limit."""

    def __init__(self, count: Callable[[str], int], limit: int) -> None:
        if limit < 3:
            raise ValueError(f"token limit must be at least 3, got {limit}")
        self.count, self.limit = count, limit

    @classmethod
    def of(cls, tokenizer, limit: int) -> TokenBudget:
        """A budget over a transformers tokenizer (start and end tokens included)."""
        return cls(
            lambda text: len(tokenizer(text, add_special_tokens=True, truncation=False).input_ids),
            limit,
        )

    def fits(self, text: str) -> bool:
        return self.count(text) <= self.limit

    def cut(self, text: str) -> str:
        """``text`` shortened at word boundaries until it fits (unchanged when it does)."""
        if self.fits(text):
            return text
        words = text.split()
        lo, hi = 0, len(words)  # the longest prefix that fits, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(" ".join(words[:mid])):
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo]).rstrip(" ,")

    def extend(self, base: str, phrases: Iterable[str], *, most: int) -> tuple[str, list[str]]:
        """``base`` plus as many of ``phrases`` (up to ``most``) as fit, in order."""
        text, used = self.cut(base), list[str]()
        for phrase in phrases:
            if len(used) >= most:
                break
            candidate = f"{text}, {phrase}" if text else phrase
            if self.fits(candidate):
                text, used = candidate, [*used, phrase]
        return text, used

    def fit_phrases(self, prompt: str) -> str:
        """``prompt`` with trailing comma phrases dropped until it fits (a free-form LLM reply)."""
        parts = [p.strip() for p in prompt.split(",") if p.strip()]
        if not parts:
            return ""
        text, _ = self.extend(parts[0], parts[1:], most=len(parts))
        return text
