"""A sweep's specification, in the shape of an Azure ML sweep job (so users' files carry over), checked.

    search_space:         {name: {type: choice|randint|uniform|quniform|loguniform|qloguniform|
                                        normal|qnormal|lognormal|qlognormal, ...}}
    objective:            {goal: minimize|maximize, primary_metric: NAME}
    sampling_algorithm:   grid|random|sobol|bayesian, or {type: ..., seed: N}
    early_termination:    {type: bandit|median_stopping|truncation_selection|asha,
                           evaluation_interval, delay_evaluation, ...}
    limits:               {max_total_trials, max_concurrent_trials, timeout, trial_timeout, max_failed_trials}
    trial:                a Batch AI job body, or an original job file

Distributions as Azure ML defines them: `randint(upper)` is an integer in [0, upper); `loguniform`'s
min_value/max_value are exponents of e; `q*` round to a multiple of q; `lognormal(mu, sigma)` is
exp(normal(mu, sigma)). Grid sampling takes only `choice` (as Azure ML); Bayesian sampling the bounded
distributions, which optuna's TPE models (Azure ML's `choice`, `uniform` and `quniform`, and also
`randint` and the loguniforms), not the normal family, whose values are unbounded. Every size is bounded. `check_sweep` raises ApiError (400, the field as
target) on the first problem; the API stores nothing then.
"""

from __future__ import annotations

import math
import re

from batchai.errors import ApiError

MAX_TOTAL_TRIALS = 1000
MAX_CONCURRENT_TRIALS = 100
MAX_PARAMETERS = 32
MAX_CHOICE_VALUES = 1000
MAX_GRID_SIZE = 100_000  # the search space a grid may enumerate
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
MAX_SWEEP_NAME = 59  # its trials are jobs named "{sweep}-{number}", within the 64 characters of a job name
PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # also an environment variable's suffix

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "choice": ("values",),
    "randint": ("upper",),
    "uniform": ("min_value", "max_value"),
    "quniform": ("min_value", "max_value", "q"),
    "loguniform": ("min_value", "max_value"),
    "qloguniform": ("min_value", "max_value", "q"),
    "normal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "lognormal": ("mu", "sigma"),
    "qlognormal": ("mu", "sigma", "q"),
}
ALGORITHMS = ("grid", "random", "sobol", "bayesian")
ALGORITHM_SUPPORTS = {"grid": {"choice"}, "bayesian": {"choice", "randint", "uniform", "quniform", "loguniform", "qloguniform"}}
POLICIES = {
    "bandit": ("slack_factor", "slack_amount"),
    "median_stopping": (),
    "truncation_selection": ("truncation_percentage",),
    "asha": ("reduction_factor", "min_resource"),
}
GOALS = ("minimize", "maximize")


def _bad(target: str, message: str) -> ApiError:
    return ApiError.bad_request(f"{target}: {message}", target=target)


def _number(value, target: str, *, integer: bool = False, low: float | None = None, high: float | None = None, above: bool = False):
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer and not float(value).is_integer():
        ok = False
    if not ok:
        raise _bad(target, f"must be {'an integer' if integer else 'a number'}, not {value!r}.")
    value = int(value) if integer else float(value)
    if low is not None and (value <= low if above else value < low):
        raise _bad(target, f"must be {'greater than' if above else 'at least'} {low:g}, not {value:g}.")
    if high is not None and value > high:
        raise _bad(target, f"must be at most {high:g}, not {value:g}.")
    return value


def _object(value, target: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(target, "must be an object.")
    return value


def _distribution(name: str, spec, target: str) -> dict:
    spec = _object(spec, target)
    kind = spec.get("type")
    if kind not in DISTRIBUTIONS:
        raise _bad(f"{target}.type", f"the distribution {kind!r} is unknown; use one of {', '.join(DISTRIBUTIONS)}.")
    out: dict = {"type": kind}
    for field in DISTRIBUTIONS[kind]:
        if field not in spec:
            raise _bad(f"{target}.{field}", f"a {kind} distribution needs {field}.")
    if kind == "choice":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _bad(f"{target}.values", "must be a non-empty list.")
        if len(values) > MAX_CHOICE_VALUES:
            raise _bad(f"{target}.values", f"at most {MAX_CHOICE_VALUES} values.")
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, str | int | float | bool):
                raise _bad(f"{target}.values[{i}]", "choices are strings, numbers, booleans or null.")
        if len({repr(v) for v in values}) != len(values):
            raise _bad(f"{target}.values", "the values must be distinct.")
        out["values"] = values
        return out
    if kind == "randint":
        out["upper"] = _number(spec["upper"], f"{target}.upper", integer=True, low=1, high=2**31)
        return out
    if "q" in DISTRIBUTIONS[kind]:
        out["q"] = _number(spec["q"], f"{target}.q", low=0, above=True)
    if "sigma" in DISTRIBUTIONS[kind]:
        out["mu"] = _number(spec["mu"], f"{target}.mu")
        out["sigma"] = _number(spec["sigma"], f"{target}.sigma", low=0, above=True)
        return out
    low = _number(spec["min_value"], f"{target}.min_value")
    high = _number(spec["max_value"], f"{target}.max_value")
    if high <= low:
        raise _bad(f"{target}.max_value", f"must be greater than min_value ({low:g}).")
    if kind.endswith("loguniform") and max(abs(low), abs(high)) > 700:
        raise _bad(f"{target}.max_value", "loguniform bounds are exponents of e: within ±700.")
    out["min_value"], out["max_value"] = low, high
    return out


def _search_space(space, algorithm: str) -> dict:
    space = _object(space, "properties.search_space")
    if not space:
        raise _bad("properties.search_space", "needs at least one parameter.")
    if len(space) > MAX_PARAMETERS:
        raise _bad("properties.search_space", f"at most {MAX_PARAMETERS} parameters.")
    out = {}
    names = set()
    for name, spec in space.items():
        target = f"properties.search_space.{name}"
        if not PARAMETER_NAME.fullmatch(name):
            raise _bad(target, "a parameter name is a letter or '_' then letters, digits or '_' (up to 64).")
        if name.upper() in names:
            raise _bad(target, "parameter names must differ in more than case (they become AZ_BATCHAI_PARAM_<NAME>).")
        names.add(name.upper())
        dist = _distribution(name, spec, target)
        supported = ALGORITHM_SUPPORTS.get(algorithm)
        if supported is not None and dist["type"] not in supported:
            raise _bad(f"{target}.type", f"{algorithm} sampling supports only {', '.join(sorted(supported))}, not {dist['type']}.")
        out[name] = dist
    if algorithm == "grid" and grid_size(out) > MAX_GRID_SIZE:
        raise _bad("properties.search_space", f"a grid of at most {MAX_GRID_SIZE} points.")
    return out


def grid_size(space: dict) -> int:
    return math.prod(len(d["values"]) for d in space.values())


def _algorithm(value) -> dict:
    target = "properties.sampling_algorithm"
    value = "random" if value is None else value
    spec = {"type": value} if isinstance(value, str) else _object(value, target)
    kind = spec.get("type")
    if kind not in ALGORITHMS:
        raise _bad(f"{target}.type" if isinstance(value, dict) else target, f"{kind!r} is not one of {', '.join(ALGORITHMS)}.")
    seed = spec.get("seed", 0)
    return {"type": kind, "seed": _number(seed, f"{target}.seed", integer=True, low=0, high=2**31 - 1)}


def _policy(value) -> dict | None:
    if value is None:
        return None
    target = "properties.early_termination"
    spec = _object(value, target)
    kind = spec.get("type")
    if kind not in POLICIES:
        raise _bad(f"{target}.type", f"{kind!r} is not one of {', '.join(POLICIES)}.")
    out = {
        "type": kind,
        "evaluation_interval": _number(
            spec.get("evaluation_interval", 1), f"{target}.evaluation_interval", integer=True, low=1, high=10**6
        ),
        "delay_evaluation": _number(spec.get("delay_evaluation", 0), f"{target}.delay_evaluation", integer=True, low=0, high=10**6),
    }
    if kind == "bandit":
        if ("slack_factor" in spec) == ("slack_amount" in spec):
            raise _bad(f"{target}.slack_factor", "a bandit policy needs exactly one of slack_factor and slack_amount.")
        field = "slack_factor" if "slack_factor" in spec else "slack_amount"
        out[field] = _number(spec[field], f"{target}.{field}", low=0, above=True)
    elif kind == "truncation_selection":
        out["truncation_percentage"] = _number(
            spec.get("truncation_percentage"), f"{target}.truncation_percentage", integer=True, low=1, high=99
        )
    elif kind == "asha":
        out["reduction_factor"] = _number(spec.get("reduction_factor", 3), f"{target}.reduction_factor", integer=True, low=2, high=100)
        out["min_resource"] = _number(
            spec.get("min_resource", max(1, out["delay_evaluation"])), f"{target}.min_resource", integer=True, low=1, high=10**6
        )
    return out


def _limits(value, space: dict, algorithm: str) -> dict:
    target = "properties.limits"
    spec = _object(value if value is not None else {}, target)
    total = _number(spec.get("max_total_trials", 1), f"{target}.max_total_trials", integer=True, low=1, high=MAX_TOTAL_TRIALS)
    out = {
        "max_total_trials": total,
        "max_concurrent_trials": _number(
            spec.get("max_concurrent_trials", 1), f"{target}.max_concurrent_trials", integer=True, low=1, high=MAX_CONCURRENT_TRIALS
        ),
        "max_failed_trials": _number(spec.get("max_failed_trials", total), f"{target}.max_failed_trials", integer=True, low=0, high=total),
    }
    for field in ("timeout", "trial_timeout"):
        if spec.get(field) is not None:
            out[field] = _number(spec[field], f"{target}.{field}", integer=True, low=1, high=MAX_TIMEOUT_SECONDS)
    if algorithm == "grid":  # Azure ML: a grid sweep ends when its grid is done
        out["max_total_trials"] = min(total, grid_size(space))
    return out


def _objective(value) -> dict:
    target = "properties.objective"
    spec = _object(value, target)
    if spec.get("goal") not in GOALS:
        raise _bad(f"{target}.goal", f"must be one of {', '.join(GOALS)}.")
    metric = spec.get("primary_metric")
    if not isinstance(metric, str) or not metric or len(metric) > 128:
        raise _bad(f"{target}.primary_metric", "must be a metric name (1 to 128 characters).")
    return {"goal": spec["goal"], "primary_metric": metric}


def check_sweep(properties) -> dict:
    """The sweep's properties, checked and normalised (the trial body is checked by the job path)."""
    props = _object(properties, "properties")
    algorithm = _algorithm(props.get("sampling_algorithm"))
    space = _search_space(props.get("search_space"), algorithm["type"])
    trial = props.get("trial")
    if not isinstance(trial, dict) or not trial:
        raise _bad("properties.trial", "must be a Batch AI job body or job file.")
    return {
        "search_space": space,
        "objective": _objective(props.get("objective")),
        "sampling_algorithm": algorithm,
        "early_termination": _policy(props.get("early_termination")),
        "limits": _limits(props.get("limits"), space, algorithm["type"]),
        "trial": trial,
    }
