"""Ray's synchronous HyperBand, made to survive a resume.

HyperBand (Li et al. 2018) deals the trials into brackets; a bracket waits until each of its live trials has reached
its milestone (paused there, from the checkpoint it writes at every milestone), then passes the best 1/reduction_factor
on to the next, until the budget. Brackets differ in their first milestone: the most aggressive starts at about one
epoch, the last has no milestone before the budget. Ray's HyperBandScheduler, with four changes:

- the most aggressive bracket first, as in Li et al.'s algorithm: Ray fills the bracket without early stopping first,
  and on a grid wider than the cores its first trials ran their whole budget, as the first arrivals do under Ray's ASHA;
- every bracket ends at the budget: Ray's first milestone, int(max_t / eta**s), ends a 100-epoch bracket at 99;
- a resume deals the trials into the brackets they had and gives each bracket back what its trials reported and the
  halvings it made: Ray saves no scheduler state, and Tune adds a resumed sweep's trials newest result first, so a
  fresh HyperBand put them in other brackets, and a finished trial in a bracket it then waited on for ever;
- a trial stopped while it waits is recorded as stopped (asha.stop_and_record), and a bracket whose live trials all
  wait is settled when Tune asks what to run (Ray settles one on a result, or on a removal before its first halving).
"""

from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler

from sweeps.asha import past_results, rank_value, stop_and_record


class ResumableHyperBand(HyperBandScheduler):
    pauses = True

    def __init__(self, time_attr: str, max_t: int, reduction_factor: int):
        super().__init__(time_attr=time_attr, max_t=max_t, reduction_factor=reduction_factor)
        self._get_r0 = lambda s: math.ceil(max_t / reduction_factor**s)  # r0 * eta**s >= max_t: the last is max_t
        self._to_deal: list[Trial] = []  # added, not yet in a bracket

    @classmethod
    def milestones(cls, max_t: int, reduction_factor: int) -> list[int]:
        """Every bracket's milestones, as the brackets set them, the budget last."""
        scheduler = cls(time_attr="epoch", max_t=max_t, reduction_factor=reduction_factor)
        found = {max_t}
        for s in range(scheduler._s_max_1):
            r = scheduler._get_r0(s)
            for _ in range(s):
                found.add(r)
                r = int(min(r * reduction_factor, max_t))
        return sorted(found)

    def _create_bracket(self, s: int):
        return super()._create_bracket(self._s_max_1 - 1 - s)  # the band's first bracket the most aggressive

    def on_trial_add(self, tune_controller, trial) -> None:
        self._to_deal.append(trial)  # dealt in the order the search made them, once Tune has added them all

    def _deal(self, tune_controller) -> None:
        """Deals the trials added since the last call into brackets, in the order the search created them (the number
        that starts a trial's tag), as a fresh sweep adds them; gives the brackets of resumed ones their history."""
        dealt, self._to_deal = sorted(self._to_deal, key=_created), []
        for trial in dealt:
            super().on_trial_add(tune_controller, trial)
        resumed = [t for t in dealt if t.is_finished() or self._time_attr in (t.last_result or {})]
        for bracket in dict.fromkeys(self._trial_info[t][0] for t in resumed):
            self._replay(tune_controller, bracket)

    def _replay(self, tune_controller, bracket) -> None:
        """The bracket as its trials left it: each live trial's last result, the halvings made (a milestone that a
        trial went past, or at which one was stopped), the trials those halvings stopped, and who waits."""
        reached = {
            t: {r[self._time_attr]: r for r in past_results(t) if self._metric in r} for t in bracket._all_trials
        }
        for trial, results in reached.items():
            if trial.is_finished():
                bracket.cleanup_trial(trial)
            elif results:
                bracket.update_trial_stats(trial, results[max(results)])
        while bracket._halves > 0 and self._halved_at(bracket._cumul_r, reached):
            milestone = bracket._cumul_r
            ranked = sorted(
                (t for t in reached if milestone in reached[t] and t.status != Trial.ERROR),  # those it ranked
                key=lambda t: -rank_value(self, reached[t][milestone]),
            )
            _advance(bracket, self._eta, self._max_t_attr)
            bracket.is_being_processed = True  # as Ray marks a bracket it halves: a removal then settles nothing
            for trial in ranked[bracket._n :]:
                if not trial.is_finished() and max(reached[trial]) == milestone:
                    bracket.cleanup_trial(trial)  # stopped by that halving, but Ray's record missed it
                    stop_and_record(tune_controller, trial)
        for trial, result in bracket._live_trials.items():
            if result is not None and result[self._time_attr] >= bracket._cumul_r:
                # It waited at the milestone for the rest of its bracket: it waits again (through Tune, whose
                # queue holds it as pending and would otherwise start it).
                tune_controller._set_trial_status(trial, Trial.PAUSED)

    def _halved_at(self, milestone: int, reached: dict) -> bool:
        return any(
            max(results) > milestone
            or (
                trial.status == Trial.TERMINATED
                and max(results) == milestone
                and not results[milestone].get("diverged")
            )
            for trial, results in reached.items()
            if results
        )

    def choose_trial_to_run(self, tune_controller):
        self._deal(tune_controller)
        for band in self._hyperbands:
            for bracket in band:
                if bracket is not None and self._all_wait(bracket):
                    self._process_bracket(_Recording(tune_controller), bracket)
        return super().choose_trial_to_run(tune_controller)

    @staticmethod
    def _all_wait(bracket) -> bool:
        live = bracket._live_trials
        return (
            bool(live)
            and bracket.cur_iter_done()
            and all(t.status == Trial.PAUSED and t not in bracket.trials_to_unpause for t in live)
        )

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._deal(tune_controller)
        if result.get("diverged") or self._metric not in result:
            return self.CONTINUE  # a diverged trial ends itself on this result: nothing to pause or rank
        return super().on_trial_result(_Recording(tune_controller), trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._deal(tune_controller)
        super().on_trial_remove(_Recording(tune_controller), trial)


def _created(trial) -> int:
    """The trial's place in the order the search created it: its tag starts with the search's count (Ray 2.60:
    BasicVariantGenerator and SearchGenerator alike)."""
    return int(trial.experiment_tag.split("_", 1)[0])


def _advance(bracket, eta: int, max_t: int) -> None:
    """A bracket's own counters after a halving, as Ray's _Bracket.successive_halving sets them."""
    bracket._halves -= 1
    bracket._n = math.ceil(bracket._n / eta)
    bracket._r = bracket._cumul_r = int(min(bracket._r * eta, max_t))


class _Recording:
    """The controller Tune passes, but a trial stopped through it has its new status recorded (asha.stop_and_record)."""

    def __init__(self, tune_controller):
        self._controller = tune_controller

    def stop_trial(self, trial) -> None:
        stop_and_record(self._controller, trial)

    def __getattr__(self, name):
        return getattr(self._controller, name)
