"""How `kvattn generate` picks each next token: greedy (the default, the argmax) or sampled, with the
search options onnxruntime-genai's and openvino.genai's generators offer.

For one row's logits and the ids so far (prompt included):
1. repetition_penalty r: each id already in the sequence has its logit divided by r if positive,
   multiplied by r if not (both greedy and sampled; r = 1 changes nothing);
2. greedy: the argmax (the first on ties);
3. sampled: logits / temperature; keep the top_k largest (0: all); of those, keep the fewest,
   from the most probable, whose probabilities add up to at least top_p; draw one from their
   renormalized softmax with a numpy Generator seeded by `seed` (the same seed, the same ids).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kvattn.lowering.diagnostics import KvattnError


@dataclasses.dataclass(frozen=True)
class Search:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        for what, good, rule in (("temperature", self.temperature > 0, "> 0"), ("top_k", self.top_k >= 0, ">= 0"),
                                 ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
                                 ("repetition_penalty", self.repetition_penalty > 0, "> 0"),
                                 ("seed", self.seed is None or self.seed >= 0, ">= 0")):
            if not good:
                raise KvattnError(f"{what} must be {rule} (got {getattr(self, what)})")


class TokenChooser:
    """`chooser(logits [vocab], previous ids) -> int`, drawing from its own seeded generator."""

    def __init__(self, search: Search):
        self.search = search
        self._random = np.random.default_rng(search.seed)

    def __call__(self, logits: np.ndarray, previous) -> int:
        scores = self.penalized(logits, previous)
        if not self.search.do_sample:
            return int(np.argmax(scores))
        probabilities = self.probabilities(scores)
        return int(self._random.choice(len(probabilities), p=probabilities))

    def penalized(self, logits: np.ndarray, previous) -> np.ndarray:
        scores = np.asarray(logits, np.float64).copy()
        penalty = self.search.repetition_penalty
        if penalty != 1.0:
            seen = np.unique(np.asarray(previous, np.int64))
            scores[seen] = np.where(scores[seen] > 0, scores[seen] / penalty, scores[seen] * penalty)
        return scores

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The distribution step 3 draws from (over the whole vocabulary)."""
        scaled = scores / self.search.temperature
        order = np.argsort(-scaled, kind="stable")
        if self.search.top_k:
            order = order[:self.search.top_k]
        kept = np.exp(scaled[order] - scaled[order[0]])
        kept /= kept.sum()
        if self.search.top_p < 1.0:
            count = min(int(np.searchsorted(np.cumsum(kept), self.search.top_p)) + 1, len(kept))
            order, kept = order[:count], kept[:count] / kept[:count].sum()
        probabilities = np.zeros(len(scores))
        probabilities[order] = kept
        return probabilities
