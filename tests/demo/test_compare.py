"""The demo's final comparison: means over seeds, gains with their standard error, chance and noise said."""
from __future__ import annotations

import math

import pytest

from tfp_mlflow.demo.run import compare


def _row(name: str, scores: list[float]) -> dict:
    return {"configuration": name, "per_seed": scores}


def test_gains_carry_the_seeds_spread_and_the_test_splits_noise():
    rows = compare([_row("baseline", [0.70, 0.72, 0.74]), _row("tuned", [0.80, 0.83, 0.86]),
                    _row("co-training", [0.71, 0.72, 0.76])], held_out=240, num_classes=3)
    baseline, tuned, cotrain = rows
    assert baseline["balanced_accuracy"] == pytest.approx(0.72) and baseline["sd"] == pytest.approx(0.02)
    assert baseline["gain"] == 0 and baseline["within_noise"] is None
    assert tuned["gain"] == pytest.approx(0.11)
    spread = 0.01 / math.sqrt(3)                                             # the paired gains 0.10, 0.11, 0.12
    split = math.hypot(math.sqrt(0.83 * 0.17 / 240), math.sqrt(0.72 * 0.28 / 240))
    assert tuned["gain_se"] == pytest.approx(math.hypot(spread, split))
    assert tuned["within_noise"] is False and cotrain["within_noise"] is True
    assert not any(r["at_chance"] for r in rows)


def test_one_seed_on_few_images_is_within_noise_and_a_guess_is_marked():
    baseline, other = compare([_row("baseline", [0.40]), _row("tuned", [0.52])], held_out=18, num_classes=2)
    assert baseline["sd"] is None and baseline["at_chance"] and other["at_chance"]
    assert other["within_noise"] is True
