"""Bayesian (TPE) against random sampling on a function with a known optimum, through the sweep's own sampler
code (`batchai.sweeps.ask`, trials rebuilt from records as the control plane does), one trial at a time.

The trial of tests/fixtures/sweeps/trial.py: its final loss is (x - 1)^2 + (y + 2)^2 + 1/20, minimum 0.05 at
x = 1, y = -2, over x in [-3, 3], y in [-5, 1]. Prints, per sampler and seed, the best loss after each
trial and the first trial within TOLERANCE of the optimum. The end-to-end comparison through a live control
plane is tests/integration/test_sweeps.py::test_bayesian_reaches_the_optimum_in_fewer_trials_than_random.

    PYTHONPATH=. .venv/bin/python bench/sweep_samplers.py [--budget 30] [--seeds 1 2 3 4 5]
"""

from __future__ import annotations

import argparse

from batchai import sweeps
from batchai.model.sweep import check_sweep

OPTIMUM = 0.05
TOLERANCE = 0.1  # a trial whose loss is within this of the optimum has found it


def spec(algorithm: str, seed: int, budget: int) -> dict:
    return check_sweep(
        {
            "search_space": {
                "x": {"type": "uniform", "min_value": -3, "max_value": 3},
                "y": {"type": "uniform", "min_value": -5, "max_value": 1},
            },
            "objective": {"goal": "minimize", "primary_metric": "loss"},
            "sampling_algorithm": {"type": algorithm, "seed": seed},
            "limits": {"max_total_trials": budget, "max_concurrent_trials": 1},
            "trial": {"placeholder": True},
        }
    )


def loss(params: dict) -> float:
    return (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2 + 1 / 20


def curve(algorithm: str, seed: int, budget: int) -> list[float]:
    """The best loss after each trial."""
    s = spec(algorithm, seed, budget)
    trials: list[dict] = []
    attrs: dict = {}
    best, out = float("inf"), []
    for n in range(budget):
        answer = sweeps.ask(s, trials, attrs)
        attrs = answer["studyAttrs"]
        value = loss(sweeps.parameters(s, answer["raw"]))
        trials.append(
            {"number": n, "raw": answer["raw"], "sys": answer["sys"], "state": "succeeded", "values": {20: value}, "objective": value}
        )
        best = min(best, value)
        out.append(best)
    return out


def first_within(curve: list[float]) -> int | None:
    """The 1-based trial that first came within TOLERANCE of the optimum (None: never, in the budget)."""
    return next((i + 1 for i, v in enumerate(curve) if v - OPTIMUM <= TOLERANCE), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    print(f"best loss after each trial (optimum {OPTIMUM}, tolerance {TOLERANCE}, budget {args.budget})")
    totals: dict[str, list] = {"random": [], "bayesian": []}
    for seed in args.seeds:
        for algorithm in totals:
            c = curve(algorithm, seed, args.budget)
            hit = first_within(c)
            totals[algorithm].append(hit)
            print(f"seed {seed} {algorithm:8} first within tolerance: {hit!s:>4}  curve: {' '.join(f'{v:.3f}' for v in c)}")
    for algorithm, hits in totals.items():
        print(f"{algorithm:8} first trial within tolerance per seed: {hits}")


if __name__ == "__main__":
    main()
