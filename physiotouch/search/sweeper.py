"""A Hydra sweeper over Optuna (>= 4) for coarse-to-fine search on validation metrics.

Selected by `hydra/sweeper=optuna` (physiotouch/conf/hydra/sweeper/optuna.yaml). It keeps hydra-optuna-sweeper's
config keys (sampler, direction, study_name, storage, n_trials, n_jobs, max_failure_rate, params,
custom_search_space) and its `params` grammar (`physiotouch.search.params`), adds `pruner`, and writes the plugin's
`optimization_results.yaml`.
- resume: the study lives in a storage (`physiotouch.search.storage`); a relaunch runs only the trials still missing
  from `n_trials`. The sweeper beats a heartbeat for its running trials; a trial whose sweeper stopped beating for
  `search.grace_seconds` is failed and its parameters queued once more; finished trials never rerun.
- many sweeps, one study: counting the study's trials and asking for new ones happen under one lock, so sweeps
  started together run exactly `n_trials` trials between them, none twice.
- pruning: each job finds its trial by its job number (= trial number) in the same storage and reports
  `optimized_metric` after every validation epoch (`physiotouch.search.pruning`); a pruned job stops cleanly and its
  trial is recorded PRUNED with its last value.
- failures: a job that returns None (the train app does so for any error during a sweep), raises, or returns a
  non-finite value is recorded FAIL with its reason (or, with search.failure_penalty, as that value).
- the fine stage reads the coarse study, narrows its ranges (`physiotouch.search.narrowing`) and runs the coarse
  best first. Extra settings come from the job config's top-level `search:` node.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from physiotouch.cli import ConfigError, UserError, user_errors
from physiotouch.run_folder import RunDir
from physiotouch.utils.plain import to_plain

from . import storage as st
from .confirm import run_confirmation, write_confirm_command
from .narrowing import NarrowingRule, fine_search_space
from .params import check_groups, describe, grid_space, override_text, search_space
from .search_report import write_search_report

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
FINISHED_ATTR = "physiotouch_finished"  # told by a sweeper after its job returned (a stale trial's FAIL is not)
TrialState = optuna.trial.TrialState
DEFAULT_HEARTBEAT = 10.0  # seconds between a sweep's heartbeats for its running trials (search.heartbeat_seconds)
STALE_AFTER_BEATS = 3  # heartbeats missed before a trial counts as its sweep's, killed (unless search.grace_seconds)


@contextmanager
def heartbeat(trials: list, interval: float):
    """Beat for the running trials until the block ends, so other sweeps see them alive."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            for trial in trials:
                st.beat(trial)

    thread = threading.Thread(target=run, daemon=True, name="optuna-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class PhysiotouchOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float = 0.0, search_space: Any = None,
                 custom_search_space: str | None = None, params: DictConfig | None = None, pruner: Any = None) -> None:
        if not isinstance(direction, str) and len(direction) != 1:
            raise ConfigError("hydra.sweeper.direction: one objective only (minimize or maximize)")
        self.direction = direction if isinstance(direction, str) else direction[0]
        # no pruner configured: none (Optuna's own default would be the median pruner)
        self.sampler, self.pruner, self.storage_url = sampler, pruner or optuna.pruners.NopPruner(), storage
        self.study_name, self.n_trials, self.n_jobs = study_name, int(n_trials), max(1, int(n_jobs))
        self.max_failure_rate, self.params = float(max_failure_rate), params
        self.extend_space = get_method(custom_search_space) if custom_search_space else None
        if search_space:
            raise ConfigError("hydra.sweeper.search_space is the plugin's old form; write the space under "
                              "hydra.sweeper.params (e.g. lr: tag(log, interval(1e-4, 1e-2)))")

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)
        search = config.get("search")  # physiotouch's extra settings; absent in a config written for the plugin
        self.search = to_plain(search) if search is not None else {}
        self.url = st.storage_url(self.storage_url, config.hydra.sweep.dir)
        self.study_name = st.study_name(self.study_name, config.hydra.job.name)

    # ------------------------------------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        with user_errors():  # a bad storage, search space or option: one line and exit 2 (Hydra's own wrapper: 1)
            self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> None:
        check_groups(self.pruner, self.sampler)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with st.claim_lock(self.url, self.study_name):
            storage = st.open_storage(self.url)
            space, fixed, enqueue = self._search_space(storage, arguments, sweep_dir)
            self.space = space
            self.sampler = self._complete_sampler(self.sampler, space)
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                        pruner=self.pruner, direction=self.direction, load_if_exists=True)
            if enqueue is not None and not study.trials:
                study.enqueue_trial(enqueue)
        log.info("study '%s' in %s: sampler %s, pruner %s", study.study_name, st._redact(self.url),
                 type(study.sampler).__name__, type(study.pruner).__name__)
        told = failed = 0
        while True:
            with st.claim_lock(self.url, study.study_name):
                self._fail_stale(study, storage)
                self._reseed(study)
                trials = [self._ask(study, space) for _ in range(self._next_batch_size(study))]
            if not trials:
                if not self._others_running(study):
                    break
                time.sleep(min(10.0, self._grace() / 4))  # another sweep's trials: wait, retry them if it dies
                continue
            overrides = [tuple(f"{k}={override_text(v)}" for k, v in {**t.params, **fixed}.items()) for t in trials]
            with heartbeat(trials, self._heartbeat()):
                returns = self._launch(trials, overrides)
            for trial, ret in zip(trials, returns):
                failed += not self._tell(study, trial, ret)
                told += 1
            if failed / told > self.max_failure_rate:
                write_search_report(study, sweep_dir, self.search)
                raise RuntimeError(f"{failed} of {told} trials failed, more than hydra.sweeper.max_failure_rate="
                                   f"{self.max_failure_rate}; see {sweep_dir / 'search_report.md'}")
        summary = write_search_report(study, sweep_dir, self.search)
        overrides = write_confirm_command(study, sweep_dir, self._kept_overrides(fixed), self.direction)
        if told and failed == told:  # a search whose every trial failed has found nothing: say so by the exit code
            raise UserError(f"all {told} trials failed; see {sweep_dir / 'search_report.md'} for each one's reason")
        if self.search.get("confirm") and overrides is not None:
            run_confirmation(sweep_dir, overrides, self.search, summary)

    def _kept_overrides(self, fixed: dict) -> dict:
        """The command line's and the sweep's fixed overrides that the confirmation keeps (not the search's own)."""
        skip = ("hparams_search", "hydra.", "hydra/", "ablation", "search.")
        kept = dict(o.split("=", 1) for o in self.config.hydra.overrides.task if "=" in o and "(" not in o)
        kept.update({k: v for k, v in fixed.items() if k not in kept})
        return {k: v for k, v in kept.items() if not k.lstrip("+~").startswith(skip)}


    def _heartbeat(self) -> float:
        return float(self.search.get("heartbeat_seconds") or DEFAULT_HEARTBEAT)

    def _grace(self) -> float:
        """How long a trial may go without a heartbeat before its sweep counts as dead: search.grace_seconds when
        set, else a few heartbeats (a killed sweep's trial is retried within seconds, not minutes)."""
        return float(self.search.get("grace_seconds") or STALE_AFTER_BEATS * self._heartbeat())

    def _complete_sampler(self, sampler, space: dict):
        """A sampler that needs the search space (sampler=grid, configured `_partial_`) built from it; a grid runs
        at most as many trials as it has points."""
        if not isinstance(sampler, functools.partial):
            return sampler
        grid = grid_space(space, int(self.search.get("grid_points") or 3))
        size = math.prod(len(v) for v in grid.values())
        if size < self.n_trials:
            log.info("the grid has %d points: n_trials %d -> %d", size, self.n_trials, size)
            self.n_trials = size
        return sampler(search_space=grid)

    def _search_space(self, storage, arguments: list[str], sweep_dir: Path) -> tuple[dict, dict, dict | None]:
        """-> (distributions, fixed values, params to enqueue first)."""
        params = OmegaConf.to_container(self.params) if OmegaConf.is_config(self.params) else self.params
        space, fixed = search_space(params or {}, arguments)
        if self.search.get("stage") != "fine":
            return space, fixed, None
        coarse_name = self.search.get("coarse_study")
        try:
            coarse = optuna.load_study(study_name=coarse_name, storage=storage)
        except KeyError:
            raise ConfigError(f"search.coarse_study: no study named '{coarse_name}' in {st._redact(self.url)}; run "
                              f"`python -m physiotouch.train hparams_search=coarse` first") from None
        rule = NarrowingRule(**self.search.get("narrowing", {}))
        fine, best = fine_search_space(coarse, rule)
        ranges = {name: {"coarse": describe(coarse.best_trial.distributions[name]), "fine": describe(dist)}
                  for name, dist in fine.items()}
        OmegaConf.save(OmegaConf.create({"coarse_study": coarse_name, "coarse_best_params": best,
                                         "coarse_best_value": coarse.best_value, "rule": rule.__dict__,
                                         "ranges": ranges}), sweep_dir / "fine_ranges.yaml")
        log.info("fine ranges around the coarse best: %s", ranges)
        return fine, fixed, best

    def _ask(self, study: optuna.Study, space: dict) -> optuna.trial.Trial:
        trial = study.ask(space)
        if self.extend_space is not None:  # the plugin's hook: it may suggest more parameters on the trial
            self.extend_space(self.config, trial)
        st.beat(trial)
        return trial

    def _fail_stale(self, study: optuna.Study, storage) -> None:
        """Trials of a sweep that was killed: failed, and queued once more (a retry is not retried again)."""
        grace = self._grace()
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not st.is_stale(frozen, grace):
                continue
            trial = st.trial_by_number(study, storage, frozen.number)
            reason = f"stale: its sweep stopped beating for over {grace:.0f} s (killed)"
            trial.set_user_attr("fail_reason", reason)
            study.tell(trial, state=TrialState.FAIL)
            mark_stale(frozen, reason)
            if "retry_of" not in frozen.user_attrs:
                study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})
            log.warning("trial %d belonged to a stopped sweep: failed%s", frozen.number,
                        "" if "retry_of" in frozen.user_attrs else ", and queued again")

    def _next_batch_size(self, study: optuna.Study) -> int:
        """How many trials to start now: those still missing from n_trials (counting the live trials of other
        sweeps), and at least every queued retry, which runs even when n_trials trials have finished meanwhile."""
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.user_attrs.get(FINISHED_ATTR))
        live = sum(1 for t in trials if t.state == TrialState.RUNNING and not st.is_stale(t, self._grace()))
        waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
        batch = max(0, min(self.n_jobs, max(self.n_trials - done - live, waiting)))
        log.info("study '%s': %d finished, %d running, %d queued; starting %d", study.study_name, done, live,
                 waiting, batch)
        return batch

    def _others_running(self, study: optuna.Study) -> bool:
        """Any RUNNING trial, stale or not: one that went stale since `_fail_stale` looked is failed and queued again
        on the next pass, never left RUNNING by a sweep that ends in between (a race seen in CI)."""
        return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def _launch(self, trials: list, overrides: list[tuple]) -> list:
        """Job number = trial number (unique in the study): the job finds its trial by it, and a relaunched or second
        sweep never writes into a finished trial's folder. Hydra numbers a launch's jobs consecutively."""
        returns, start = [], 0
        for end in range(1, len(trials) + 1):
            if end == len(trials) or trials[end].number != trials[end - 1].number + 1:
                returns += self.launcher.launch(overrides[start:end], initial_job_idx=trials[start].number)
                start = end
        return returns

    def _reseed(self, study: optuna.Study) -> None:
        """Before each claim: seed = configured seed + trials in the study so far. Deterministic for one sweep, a
        relaunch does not draw the first launch's points again, and two sweeps on one study never draw the same."""
        cfg = self.config.hydra.sweeper.get("sampler")
        if cfg is not None and cfg.get("seed") is not None:
            sampler = instantiate(cfg, seed=int(cfg.seed) + len(study.get_trials(deepcopy=False)))
            study.sampler = self._complete_sampler(sampler, self.space)

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret) -> bool:
        """Record the job's outcome; False when it failed."""
        job_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else ""
        trial.set_user_attr(st.JOB_DIR_ATTR, job_dir)
        trial.set_user_attr(FINISHED_ATTR, True)
        value, reason = None, None
        try:
            value = ret.return_value
        except Exception as err:  # noqa: BLE001 - the job raised: that trial failed, the search goes on
            reason = f"{type(err).__name__}: {err}"
        now = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if reason is None and st.PRUNED_ATTR in now.user_attrs and now.intermediate_values:
            study.tell(trial, state=TrialState.PRUNED)  # recorded with its last reported value
            log.info("trial %d pruned after epoch %s", trial.number, now.user_attrs[st.PRUNED_ATTR])
            return True
        if reason is None:
            if value is None:
                reason = _job_failure(job_dir) or "the job returned no metric"
            elif not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                reason = f"non-finite objective {value!r} (diverged)"
        if reason is None:
            study.tell(trial, float(value))
            return True
        trial.set_user_attr("fail_reason", reason[:500])
        penalty = self.search.get("failure_penalty")
        if penalty is not None:
            trial.set_user_attr("penalised", True)
            study.tell(trial, float(penalty))
            log.warning("trial %d failed (%s): recorded with the penalty %s", trial.number, reason, penalty)
        else:
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)
        return False


def mark_stale(trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Mark a killed sweep's half-written job folder (the job told its trial where it writes), so that reports skip
    it with the reason; a folder another machine cannot see is left alone."""
    job_dir = trial.user_attrs.get(st.JOB_DIR_ATTR)
    if job_dir and Path(job_dir).is_dir():
        try:
            RunDir(Path(job_dir)).write_json(RunDir.STATUS, {"status": "stale", "trial": trial.number,
                                                             "reason": reason}, None)
        except OSError as err:
            log.warning("could not mark %s as stale: %s", job_dir, err)


def _job_failure(job_dir: str) -> str | None:
    return RunDir(Path(job_dir)).failure() if job_dir else None
