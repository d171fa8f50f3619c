"""Sweep activities: each reads the sweep and its trials from the store and acts through batchai.sweep_runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchai import sweep_runs

if TYPE_CHECKING:
    from batchai.services import Services


def observe_sweep(svc: Services, inp: dict) -> dict:
    return sweep_runs.observe(svc, inp)


def stop_trials(svc: Services, inp: dict) -> int:
    return sweep_runs.stop(svc, inp)


def start_trials(svc: Services, inp: dict) -> int:
    return sweep_runs.start(svc, inp)


def finish_sweep(svc: Services, inp: dict) -> dict:
    return sweep_runs.finish(svc, inp)
