"""The paired bootstrap behind the per-slice "default vs best single modality" intervals."""

from __future__ import annotations

import pytest
import torch

from mmsent.evaluation.metrics import paired_bootstrap_diff


def test_identical_models_tie_exactly_and_a_clear_winner_excludes_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    a = (torch.rand(600, generator=gen) < 0.6).tolist()
    same = paired_bootstrap_diff(a, a)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    b = list(a)
    for i in range(0, 600, 10):  # b is wrong on 60 examples a gets right (where a was right)
        b[i] = False
    won = paired_bootstrap_diff(a, b)
    lost = sum(x and not y for x, y in zip(a, b, strict=True)) / 600
    assert won["diff"] == pytest.approx(lost)
    assert 0 < won["low"] < won["diff"] < won["high"]


def test_independent_noise_straddles_zero_and_pairing_narrows_the_interval() -> None:
    gen = torch.Generator().manual_seed(2)
    a = (torch.rand(600, generator=gen) < 0.5).tolist()
    b = (torch.rand(600, generator=gen) < 0.5).tolist()
    tie = paired_bootstrap_diff(a, b)
    assert tie["low"] < 0 < tie["high"]
    # two models that disagree on only 6 of 600 examples: a narrow interval
    close = list(a)
    for i in range(6):
        close[i] = not close[i]
    assert (paired_bootstrap_diff(a, close)["high"] - paired_bootstrap_diff(a, close)["low"]
            < (tie["high"] - tie["low"]) / 4)
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap_diff([], [])
