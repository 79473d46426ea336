"""A sampler seeded per trial number, so that workers started apart never draw the same candidates.

Why: a sampler seeded once per process replays the same random draws in every process that
gets the same seed. Study S4's two workers, started 16 minutes apart with ``--seed 0``, saw the
same number of stored trials, derived the same seed, and trained the same five candidates twice
each (trials 1-10 came in identical pairs). Trial numbers are unique within a study whichever
process or machine takes them, so seeding each trial's draws from ``(seed, trial number)``
keeps a single-worker search reproducible, keeps a continued study from replaying its first
candidates, and keeps any number of workers, on any number of machines, apart.

Optuna's samplers read everything else they need (the history) from the study, so a fresh
inner sampler per trial loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from optuna.samplers import BaseSampler


def trial_seed(seed: int, number: int) -> int:
    """A 32-bit seed mixed from the search's seed and the trial's number (no two trials alike)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates to ``make(seed)``, rebuilt before each trial with `trial_seed`."""

    def __init__(self, make: Callable[[int | None], BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study, trial) -> None:
        self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
