"""The sweep's sampler and early-termination policies, over optuna, rebuilt from stored trials on every call.

No optuna study is kept anywhere: each call builds an in-memory study from the sweep's trials as the
store holds them (parameters, state, the primary metric's values by step) plus the few sampler
attributes optuna keeps beside them (a grid point's id, the Sobol sequence's position), which the
sweep record stores with each trial. So any control-plane process, after any restart, asks the
sampler the same question and gets the same answer: trial n is sampled with seed `seed + n`.

A trial, as these functions take it: `{"number", "raw", "sys", "state", "values", "objective"}` where
`raw` are optuna's parameter values (a loguniform's value itself, a normal's quantile), `state` one of
TRIAL_STATES, `values` {step: value} of the primary metric and `objective` its last value.
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

RUNNING, SUCCEEDED, FAILED, EARLY_TERMINATED, CANCELED = "running", "succeeded", "failed", "early terminated", "canceled"
TRIAL_STATES = (RUNNING, SUCCEEDED, FAILED, EARLY_TERMINATED, CANCELED)
QUANTILE_EDGE = 1e-12  # a normal's quantile is kept off 0 and 1, where the inverse CDF is infinite
TPE_STARTUP_TRIALS = 5  # random trials before the Bayesian sampler models the results


def distribution(spec: dict) -> BaseDistribution:
    """The optuna distribution of a parameter's raw value (see `value`)."""
    kind = spec["type"]
    if kind == "choice":
        return CategoricalDistribution(spec["values"])
    if kind == "randint":
        return IntDistribution(0, spec["upper"] - 1)
    if kind in ("uniform", "quniform"):
        return FloatDistribution(spec["min_value"], spec["max_value"])
    if kind in ("loguniform", "qloguniform"):
        return FloatDistribution(math.exp(spec["min_value"]), math.exp(spec["max_value"]), log=True)
    return FloatDistribution(0.0, 1.0)  # the normal family: a quantile, turned into the value by the inverse CDF


def value(spec: dict, raw):
    """A parameter's value, as Azure ML defines its distribution, from optuna's raw value."""
    kind = spec["type"]
    if kind in ("choice", "randint"):
        return raw
    if kind.endswith("normal"):
        x = NormalDist(spec["mu"], spec["sigma"]).inv_cdf(min(max(raw, QUANTILE_EDGE), 1 - QUANTILE_EDGE))
        raw = math.exp(x) if "lognormal" in kind else x
    if kind.startswith("q"):
        return round(raw / spec["q"]) * spec["q"]
    return raw


def parameters(spec: dict, raw: dict) -> dict:
    return {name: value(d, raw[name]) for name, d in spec["search_space"].items()}


def trial_seed(seed: int, number: int) -> int:
    """Trial `number`'s own seed: a hash of the pair, so sweeps with seeds s and s + 1 share no trials."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _sampler(spec: dict, number: int) -> optuna.samplers.BaseSampler:
    algorithm = spec["sampling_algorithm"]
    seed = algorithm["seed"]
    kind = algorithm["type"]
    own = trial_seed(seed, number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if kind == "grid":
            return optuna.samplers.GridSampler({n: d["values"] for n, d in spec["search_space"].items()}, seed=seed)
        if kind == "sobol":
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed,
                independent_sampler=optuna.samplers.RandomSampler(seed=own),
                warn_independent_sampling=False,
            )
        if kind == "bayesian":
            # constant liar: trials running at once are not all sent to the same promising point
            return optuna.samplers.TPESampler(seed=own, n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True)
        return optuna.samplers.RandomSampler(seed=own)


def _state(trial: dict) -> TrialState:
    if trial["state"] == RUNNING:
        return TrialState.RUNNING
    if trial["state"] == SUCCEEDED and trial.get("objective") is not None:
        return TrialState.COMPLETE
    if trial["state"] == EARLY_TERMINATED:
        return TrialState.PRUNED
    return TrialState.FAIL


def _study(spec: dict, trials: list[dict], *, sampler=None, pruner=None, study_attrs: dict | None = None, states=_state):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction=spec["objective"]["goal"], sampler=sampler, pruner=pruner)
    study_id = storage.get_study_id_from_name(study.study_name)
    for key, attr in (study_attrs or {}).items():
        storage.set_study_system_attr(study_id, key, attr)
    dists = {name: distribution(d) for name, d in spec["search_space"].items()}
    for t in trials:
        state = states(t)
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                params=t["raw"],
                distributions=dists,
                value=t["objective"] if state is TrialState.COMPLETE else None,
                intermediate_values=t["values"],
                system_attrs=t.get("sys") or {},
            )
        )
    return study, storage, study_id


def ask(spec: dict, trials: list[dict], study_attrs: dict) -> dict:
    """Trial `len(trials)`: `{"raw", "sys", "studyAttrs"}`, all to be stored with the sweep."""
    number = len(trials)
    study, storage, study_id = _study(spec, trials, sampler=_sampler(spec, number), study_attrs=study_attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a grid sampler re-asked past its end (never: limits cap it)
        asked = study.ask({name: distribution(d) for name, d in spec["search_space"].items()})
    frozen = storage.get_trial(asked._trial_id)
    return {"raw": dict(frozen.params), "sys": dict(frozen.system_attrs), "studyAttrs": storage.get_study_system_attrs(study_id)}


def _value_at(values: dict[int, float], step: int) -> float | None:
    """The latest value reported at or before `step`."""
    steps = [s for s in values if s <= step]
    return values[max(steps)] if steps else None


def _evaluation_step(policy: dict, last: int) -> int | None:
    """The latest step at which the policy evaluates a trial that has reached `last`."""
    delay, interval = policy["delay_evaluation"], policy["evaluation_interval"]
    if last < max(delay, 1):
        return None
    return delay + (last - delay) // interval * interval


def to_stop(spec: dict, trials: list[dict]) -> list[int]:
    """Numbers of the running trials the sweep's early-termination policy stops now."""
    policy = spec.get("early_termination")
    running = [t for t in trials if t["state"] == RUNNING and t["values"]]
    if policy is None or not running:
        return []
    kind = policy["type"]
    if kind == "median_stopping":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=1, n_warmup_steps=policy["delay_evaluation"], interval_steps=policy["evaluation_interval"]
        )
        study, _, _ = _study(spec, trials, pruner=pruner)
        frozen = study.get_trials(deepcopy=False)
        return [t["number"] for t in running if pruner.prune(study, frozen[t["number"]])]
    if kind == "asha":
        return _asha(spec, policy, trials)
    return [t["number"] for t in running if _selected_out(policy, spec["objective"]["goal"], t, trials)]


def _asha(spec: dict, policy: dict, trials: list[dict]) -> list[int]:
    """Successive halving, replayed rung by rung: at each rung's step every trial that reached it (ended ones
    too) is judged on its value there, in trial order, against those judged before it; a trial not promoted
    from a rung climbs no further. (optuna's pruner judges a trial on its latest value as each report
    comes; a replay gives it each rung's value.)"""
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=policy["min_resource"], reduction_factor=policy["reduction_factor"], min_early_stopping_rate=0
    )
    study, storage, _ = _study(spec, trials, pruner=pruner, states=lambda t: TrialState.RUNNING)
    ids = [t._trial_id for t in study.get_trials(deepcopy=False)]
    last = max((max(t["values"]) for t in trials if t["values"]), default=0)
    out: set[int] = set()
    step = policy["min_resource"]
    while step <= last:
        for t in trials:
            if t["number"] in out or not t["values"] or max(t["values"]) < step:
                continue
            frozen = storage.get_trial(ids[t["number"]])  # a copy, with the rungs it has climbed
            frozen.intermediate_values = {s: v for s, v in t["values"].items() if s <= step}
            if pruner.prune(study, frozen):
                out.add(t["number"])
        step *= policy["reduction_factor"]
    return [t["number"] for t in trials if t["number"] in out and t["state"] == RUNNING]


def _selected_out(policy: dict, goal: str, trial: dict, trials: list[dict]) -> bool:
    """Bandit and truncation selection as Azure ML defines them, at the trial's latest evaluation step."""
    step = _evaluation_step(policy, max(trial["values"]))
    if step is None:
        return False
    sign = 1.0 if goal == "minimize" else -1.0  # compare as minimising
    reached = {
        t["number"]: sign * v
        for t in trials
        if t["values"] and max(t["values"]) >= step and (v := _value_at(t["values"], step)) is not None
    }
    mine = reached.get(trial["number"])
    if mine is None or len(reached) < 2:
        return False
    if policy["type"] == "bandit":
        best = min(v for n, v in reached.items() if n != trial["number"])
        if "slack_amount" in policy:
            return mine > best + policy["slack_amount"]
        real_best = sign * best  # a slack factor scales the metric itself: best*(1+s) minimising, best/(1+s) maximising
        bound = real_best * (1 + policy["slack_factor"]) if goal == "minimize" else real_best / (1 + policy["slack_factor"])
        return mine > sign * bound
    ranked = sorted(reached.values(), reverse=True)  # worst first
    cut = len(ranked) * policy["truncation_percentage"] // 100
    return cut > 0 and mine >= ranked[cut - 1]


def series(entries: list[dict], metric: str) -> dict[int, float]:
    """The primary metric's values by step from a job's metric entries: an entry's "step", else the count of
    that metric's entries so far."""
    values: dict[int, float] = {}
    count = 0
    for e in entries:
        v = e.get(metric)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            count += 1
            step = e.get("step")
            values[step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else count] = float(v)
    return values


def objective(values: dict[int, float]) -> float | None:
    """A trial's result: the primary metric's value at its last step."""
    return values[max(values)] if values else None


def best(spec: dict, trials: list[dict]) -> dict | None:
    done = [t for t in trials if t["state"] == SUCCEEDED and t.get("objective") is not None]
    if not done:
        return None
    pick = min if spec["objective"]["goal"] == "minimize" else max
    return pick(done, key=lambda t: t["objective"])
