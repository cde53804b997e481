"""runtime/sampling.py: each option changes the distribution a token is drawn from as its docstring
says (the drawn frequencies of 20000 seeded draws against the distribution worked out by hand),
greedy is the argmax, a seed repeats its draws, bad options are user errors."""

from __future__ import annotations

import numpy as np
import pytest

from kvattn.lowering.diagnostics import KvattnError
from kvattn.runtime.sampling import Search, TokenChooser

LOGITS = np.log(np.array([0.05, 0.4, 0.1, 0.3, 0.15]))  # softmax: these probabilities


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _expected(search: Search, previous=()) -> np.ndarray:
    scores = LOGITS.copy()
    for token in set(previous):
        scores[token] = scores[token] / search.repetition_penalty if scores[token] > 0 else \
            scores[token] * search.repetition_penalty
    p = _softmax(scores / search.temperature)
    keep = np.zeros(len(p), bool)
    ranked = sorted(range(len(p)), key=lambda i: -p[i])[:search.top_k or len(p)]
    total = 0.0
    for i in ranked:  # the fewest from the top whose probabilities reach top_p (of the top-k ones)
        keep[i] = True
        total += p[i] / p[ranked].sum()
        if total >= search.top_p:
            break
    return np.where(keep, p, 0) / p[keep].sum()


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=2),
                                     dict(top_p=0.6), dict(top_k=3, top_p=0.8, temperature=0.7),
                                     dict(repetition_penalty=1.5)])
def test_drawn_frequencies_follow_the_options(options):
    search = Search(do_sample=True, seed=7, **options)
    previous = [1, 3] if "repetition_penalty" in options else []
    chooser = TokenChooser(search)
    expected = _expected(search, previous)
    np.testing.assert_allclose(chooser.probabilities(chooser.penalized(LOGITS, previous)), expected, atol=1e-12)
    draws = np.bincount([chooser(LOGITS, previous) for _ in range(20000)], minlength=len(LOGITS)) / 20000
    np.testing.assert_allclose(draws, expected, atol=0.015)
    assert not draws[expected == 0].any()


def test_greedy_is_the_argmax_and_a_seed_repeats_its_draws():
    assert TokenChooser(Search())(LOGITS, []) == 1
    assert TokenChooser(Search(repetition_penalty=10.0))(LOGITS, [1]) == 3  # log(0.4) * 10 < log(0.3)
    first, again, other = (TokenChooser(Search(do_sample=True, seed=s)) for s in (3, 3, 4))
    a, b, c = ([chooser(LOGITS, []) for _ in range(50)] for chooser in (first, again, other))
    assert a == b and a != c


@pytest.mark.parametrize("options", [dict(temperature=0), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5),
                                     dict(repetition_penalty=0), dict(seed=-1)])
def test_bad_options_are_user_errors(options):
    name = next(iter(options))
    with pytest.raises(KvattnError, match=f"^{name} must be"):
        Search(**options)
