"""A Hydra sweeper over Optuna for coarse-to-fine search on validation metrics.

Used through `hparams_search=coarse` / `hparams_search=fine`, which select `hydra/sweeper=optuna` (the
hydra-optuna-sweeper plugin's config schema, sampler configs and `params` syntax) and point its `_target_` here.
What it adds to the plugin's sweeper, whose sweep loop it replaces:
- resume: the study lives in a database (sqlite by default, PostgreSQL by URL); a relaunch runs only the trials
  still missing from `n_trials`. Trials in flight send heartbeats; a trial whose sweep was killed goes stale, is
  marked failed and its parameters are queued again (Optuna's RetryFailedTrialCallback); finished trials never rerun.
  Several workers may run the same command against one shared study.
- failures: a job that returns None (our train app does so for any error during a sweep), raises, or returns a
  non-finite value is recorded as FAIL with its reason (or, with search.failure_penalty set, as that value), and
  the search goes on. (The plugin crashes on a NaN.)
- the fine stage: reads the coarse study from storage, narrows its ranges (`physiotouch.experiments.narrowing`)
  and enqueues the coarse best trial first. No YAML is edited by hand.
- a report in the sweep folder (`physiotouch.experiments.search_report`).
Extra settings come from the top-level `search:` node of the job config (the plugin's schema is closed).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

from .narrowing import NarrowingRule, describe, fine_search_space
from .search_report import write_search_report

log = logging.getLogger(__name__)
# Heartbeats, stale-trial retry and the matplotlib plots are marked experimental in optuna 2.x; pinned, they work.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
FINISHED_ATTR = "physiotouch_finished"


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trials: list, interval: float):
    """Record heartbeats of the running trials until the block ends (Optuna does this only in optimize())."""
    if not storage.is_heartbeat_enabled():
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name="optuna-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class PhysiotouchOptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, search_space: Any, custom_search_space: Any,
                 params: DictConfig | None) -> None:
        self.sampler_cfg, self.direction, self.storage_url = sampler, direction, storage
        self.study_name, self.n_trials, self.n_jobs = study_name, int(n_trials), max(1, int(n_jobs))
        self.params = params
        if search_space or custom_search_space:
            raise ValueError("hydra.sweeper: use `params` for the search space (search_space / custom_search_space "
                             "are not supported by physiotouch's sweeper)")

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)
        # Hydra has usually instantiated the sampler already (its config has a _target_).
        self.sampler = instantiate(self.sampler_cfg) if isinstance(self.sampler_cfg, DictConfig) else self.sampler_cfg
        self.search = OmegaConf.to_container(config.get("search") or {}, resolve=True)

    # ------------------------------------------------------------------------------------------------------------
    def _storage(self) -> optuna.storages.BaseStorage:
        if not self.storage_url:
            raise ValueError("hydra.sweeper.storage must be set (e.g. sqlite:///multirun/optuna.db) so that a stopped "
                             "search can resume")
        url = str(self.storage_url)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        beat = self.search.get("heartbeat_seconds", 60)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=int(beat) if beat else None,
            grace_period=int(self.search.get("grace_seconds") or 2 * beat) if beat else None,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1))

    def _search_space(self, storage, arguments: list[str]) -> tuple[dict, dict, dict | None]:
        """-> (distributions, fixed params, params to enqueue first)."""
        overrides = [f"{k}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        space, fixed = create_params_from_overrides(overrides)
        for name in fixed:
            space.pop(name, None)
        if self.search.get("stage") != "fine":
            return space, fixed, None
        coarse_name = self.search.get("coarse_study")
        try:
            coarse = optuna.load_study(study_name=coarse_name, storage=storage)
        except KeyError:
            raise ValueError(f"no coarse study named '{coarse_name}' in {self.storage_url}; run "
                             f"`python -m physiotouch.train -m hparams_search=coarse` first") from None
        rule = NarrowingRule(**self.search.get("narrowing", {}))
        fine, best = fine_search_space(coarse, rule)
        ranges = {name: {"coarse": describe(coarse.best_trial.distributions[name]), "fine": describe(dist)}
                  for name, dist in fine.items()}
        ranges_file = Path(self.config.hydra.sweep.dir) / "fine_ranges.yaml"
        OmegaConf.save(OmegaConf.create({"coarse_study": coarse_name, "coarse_best_params": best,
                                         "coarse_best_value": coarse.best_value, "rule": rule.__dict__,
                                         "ranges": ranges}), ranges_file)
        log.info("fine ranges around the coarse best (%s): %s", ranges_file, ranges)
        return fine, fixed, best

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self._storage()
        space, fixed, enqueue = self._search_space(storage, arguments)
        study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                    direction=self.direction, load_if_exists=True)
        self._reseed_on_resume(study)
        if enqueue is not None and not study.trials:
            study.enqueue_trial(enqueue)
        interval = float(self.search.get("heartbeat_seconds") or 60)
        while (batch := self._next_batch_size(study)) > 0:
            trials = [study.ask(space) for _ in range(batch)]
            overrides = [tuple(f"{k}={_override_value(v)}" for k, v in {**t.params, **fixed}.items())
                         for t in trials]
            with heartbeat(storage, trials, interval):
                returns = self._launch(trials, overrides)
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret)
        write_search_report(study, sweep_dir, self.search)

    def _next_batch_size(self, study: optuna.Study) -> int:
        """How many trials to start now: those still missing from n_trials, and at least every queued retry of a
        killed trial, which must run even when n_trials trials have finished meanwhile. Read from the storage each
        time. (A trial RUNNING here may belong to a killed sweep that has not gone stale yet: it is not counted, so
        a relaunch runs the missing trials; once stale, its retry runs on the next launch.)"""
        optuna.storages.fail_stale_trials(study)  # trials of a killed sweep: failed, and queued again
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.user_attrs.get(FINISHED_ATTR))
        waiting = sum(1 for t in trials if t.state == optuna.trial.TrialState.WAITING)
        batch = min(self.n_jobs, max(self.n_trials - done, waiting))
        log.info("study '%s' in %s: %d finished, %d queued; starting %d", study.study_name, self.storage_url, done,
                 waiting, max(0, batch))
        return batch

    def _launch(self, trials: list, overrides: list[tuple]) -> list:
        """Job folder number = trial number (unique in the study), so a relaunched or second sweep never writes into
        a finished trial's folder. Hydra numbers a launch's jobs consecutively: one launch per consecutive run."""
        returns, start = [], 0
        for end in range(1, len(trials) + 1):
            if end == len(trials) or trials[end].number != trials[end - 1].number + 1:
                returns += self.launcher.launch(overrides[start:end], initial_job_idx=trials[start].number)
                start = end
        return returns

    def _reseed_on_resume(self, study: optuna.Study) -> None:
        """A relaunch that re-created the sampler with its configured seed would draw the same points as the
        first launch did: seed it with seed + the number of trials already in the study instead (deterministic)."""
        cfg = self.config.hydra.sweeper.get("sampler")
        if study.trials and cfg is not None and cfg.get("seed") is not None:
            study.sampler = instantiate(cfg, seed=int(cfg.seed) + len(study.trials))
            log.info("resuming: sampler re-seeded with %d", int(cfg.seed) + len(study.trials))

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret) -> None:
        job_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg else ""
        trial.set_user_attr("job_dir", job_dir)
        trial.set_user_attr(FINISHED_ATTR, True)
        value, reason = None, None
        try:
            value = ret.return_value
        except Exception as err:  # noqa: BLE001 - the job raised: that trial failed, the search goes on
            reason = f"{type(err).__name__}: {err}"
        if reason is None:
            if value is None:
                reason = _job_failure(job_dir) or "the job returned no metric"
            elif not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                reason = f"non-finite objective {value!r} (diverged)"
        if reason is None:
            study.tell(trial, float(value))
            return
        trial.set_user_attr("fail_reason", reason[:500])
        penalty = self.search.get("failure_penalty")
        if penalty is not None:
            trial.set_user_attr("penalised", True)
            study.tell(trial, float(penalty))
            log.warning("trial %d failed (%s): recorded with the penalty %s", trial.number, reason, penalty)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, reason)


def _job_failure(job_dir: str) -> str | None:
    status = Path(job_dir) / "status.json"
    try:
        return json.loads(status.read_text()).get("reason")
    except (OSError, ValueError):
        return None
