"""Searches on current Optuna: the params grammar, pruning, shared studies (journal file, PostgreSQL), submitit,
the dashboard."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from physiotouch.cli import ConfigError
from physiotouch.search.params import search_space

from .test_experiments import search_cmd, train_cmd

TrialState = optuna.trial.TrialState
RUN_FILES = ("config_resolved.yaml", "run_info.json", "splits.json", "csv/metrics.csv", "history.json",
             "health.json", "summary.json", "checkpoints/last.ckpt")


def sweep(data: Path, tmp: Path, storage: str, name: str, n: int, *extra: str) -> list[str]:
    return train_cmd(data, tmp, "hparams_search=coarse", f"hydra.sweeper.n_trials={n}",
                     f"hydra.sweeper.storage='{storage}'", f"hydra.sweep.dir={tmp}/{name}", *extra)


def test_params_grammar_means_what_the_plugin_meant():
    space, fixed = search_space(
        {"a": "choice(0.0, 0.5, true, abc)", "b": "range(1, 9, 2)", "c": "interval(0.1, 0.9)",
         "d": "tag(log, interval(1e-4, 1e-2))", "e": "int(interval(0, 4))", "f": "tag(log, int(interval(1, 64)))",
         "g": "shuffle(range(1, 4))", "h": "3"},
        ["c=interval(0.2, 0.3)", "e=2"])  # the command line replaces the config's entries
    assert space["a"] == CategoricalDistribution([0.0, 0.5, True, "abc"])
    assert space["b"] == IntDistribution(1, 9, step=2)  # the plugin's range includes its stop
    assert space["c"] == FloatDistribution(0.2, 0.3)
    assert space["d"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["f"] == IntDistribution(1, 64, log=True)
    assert isinstance(space["g"], CategoricalDistribution) and sorted(space["g"].choices) == [1, 2, 3]
    assert "e" not in space and fixed == {"e": "2", "h": "3"}
    with pytest.raises(ConfigError, match="hydra.sweeper.params"):
        search_space({"x": "interval(0.1"}, [])


def test_search_on_current_optuna_prunes_and_writes_every_promised_file(small_data, tmp_path):
    assert int(optuna.__version__.split(".")[0]) >= 4
    assert importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None  # neither the old plugin nor a shim
    storage = f"sqlite:///{tmp_path}/optuna.db"
    # two startup trials always finish (the importance plot needs two complete trials); the rest may be pruned
    cmd = sweep(small_data, tmp_path, storage, "pruned", 5, "trainer.max_epochs=3", "hydra/sweeper/pruner=median",
                "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0")
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    study = optuna.load_study(study_name="physiotouch-coarse", storage=storage)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in study.trials]
    for t in pruned:
        job = Path(t.user_attrs["job_dir"])
        assert all((job / f).is_file() for f in RUN_FILES), sorted(p.name for p in job.rglob("*"))
        summary = json.loads((job / "summary.json").read_text())
        last_step = max(t.intermediate_values)  # a step is the number of epochs trained
        assert summary["pruned_at_epoch"] == last_step - 1 < 2  # stopped before its last epoch (0-based index)
        assert t.value == t.intermediate_values[last_step]  # recorded with its last reported value
    assert all(len(t.intermediate_values) == 3 for t in study.trials if t.state == TrialState.COMPLETE)
    out = tmp_path / "pruned"
    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and results["best_value"] == pytest.approx(study.best_value)
    assert yaml.safe_load((out / "best_params.yaml").read_text())["best_params"] == study.best_params
    for png in ("optimization_history.png", "param_importances.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert f"{len(pruned)} pruned" in (out / "search_report.md").read_text()
    report = subprocess.run([sys.executable, "-m", "physiotouch.report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"{len(pruned)} pruned by the search" in (out / "report.md").read_text()


@pytest.fixture
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server (pgserver's binaries), started for the test and stopped after it."""
    import pgserver  # a dev dependency: this test must run in CI, never skip

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def _concurrent_sweeps(data: Path, tmp: Path, storage: str) -> optuna.Study:
    """Two sweeps started at once against one study: exactly n_trials trials between them, none lost or repeated."""
    procs = [subprocess.Popen(sweep(data, tmp, storage, f"sweep{i}", 4, "search.heartbeat_seconds=2"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    from physiotouch.search.storage import open_storage

    study = optuna.load_study(study_name="physiotouch-coarse", storage=open_storage(storage))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    jobs = [t.user_attrs["job_dir"] for t in study.trials]
    assert len(set(jobs)) == 4 and all(Path(j).name == str(t.number) for j, t in zip(jobs, study.trials))
    assert {Path(j).parent.name for j in jobs} == {"sweep0", "sweep1"}  # both sweeps ran trials
    assert len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 4
    assert all(t.intermediate_values for t in study.trials)  # each job reported its curve through the storage
    return study


@pytest.mark.slow
def test_two_sweeps_share_one_journal_file(small_data, tmp_path):
    _concurrent_sweeps(small_data, tmp_path, f"journal:///{tmp_path}/shared/optuna.journal")


@pytest.mark.slow
def test_two_sweeps_share_one_postgresql_study(small_data, tmp_path, postgres_url):
    _concurrent_sweeps(small_data, tmp_path, postgres_url)


@pytest.mark.slow
def test_search_through_submitit_runs_each_trial_in_its_own_process(small_data, tmp_path):
    storage = f"journal:///{tmp_path}/optuna.journal"
    cmd = sweep(small_data, tmp_path, storage, "submitit", 2, "hydra/launcher=submitit_local",
                "hydra.sweeper.n_jobs=2", "hydra.launcher.timeout_min=10")
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    from physiotouch.search.storage import open_storage

    study = optuna.load_study(study_name="physiotouch-coarse", storage=open_storage(storage))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    pids = {json.loads((Path(t.user_attrs["job_dir"]) / "run_info.json").read_text())["environment"]["pid"]
            for t in study.trials}
    assert len(pids) == 2 and run.args and all(t.intermediate_values for t in study.trials)
    assert (tmp_path / "submitit" / ".submitit").is_dir()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dashboard_serves_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="physiotouch-coarse", storage=storage)
    study.optimize(lambda t: (t.suggest_float("optim.blr", 1e-4, 1e-2, log=True) - 1e-3) ** 2, n_trials=3)
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), storage, "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies, server.stderr.read1(4000) if server.poll() is not None else "no answer"
        entry = next(s for s in studies if s["study_name"] == "physiotouch-coarse")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}", timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 3
        assert {t["params"][0]["name"] for t in detail["trials"]} == {"optim.blr"}
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.slow
def test_a_config_written_for_the_plugin_still_runs(small_data, tmp_path):
    """lightning-hydra-template's form (less the plugin's own _target_, which physiotouch does not ship: the real
    plugin's import path belongs to its distribution): its sampler block, no storage, failures not allowed."""
    extra = tmp_path / "conf" / "hparams_search"
    extra.mkdir(parents=True)
    (extra / "template_style.yaml").write_text("""# @package _global_
defaults:
  - override /hydra/sweeper: optuna
optimized_metric: val/objective
hydra:
  mode: MULTIRUN
  sweeper:
    storage: null
    study_name: null
    n_jobs: 1
    direction: minimize
    n_trials: 2
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 10
    params:
      optim.blr: interval(0.0001, 0.01)
      optim.grad_clip: choice(0.0, 1.0)
""")
    cmd = train_cmd(small_data, tmp_path, f"hydra.sweep.dir={tmp_path}/tpl", "hparams_search=template_style")
    cmd[3:3] = ["--config-dir", str(tmp_path / "conf")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{tmp_path}/tpl/optuna.db")  # the defaults
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert set(study.trials[0].params) == {"optim.blr", "optim.grad_clip"}
    assert (tmp_path / "tpl" / "optimization_results.yaml").is_file()


def test_under_slurm_submitit_alone_requeues_and_a_requeued_job_resumes(monkeypatch, tmp_path):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from physiotouch.training.run import cluster_plugins, requeued

    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    assert cluster_plugins() == [] and not requeued()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    (plugin,) = cluster_plugins()
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue is False  # Lightning does not requeue too
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued()
    from omegaconf import OmegaConf

    from physiotouch.training.run import resume_checkpoint

    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": None}), tmp_path) == str(last)


def test_slurm_preset_runs_one_task_per_gpu():
    from hydra import compose, initialize_config_dir

    from physiotouch.hydra_setup import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.tasks_per_node == 4
    assert launcher.max_num_timeout > 0  # submitit requeues; Lightning's auto-requeue is off (test above)


@pytest.mark.slow
def test_any_term_of_the_objective_can_be_optimized(small_data, tmp_path, make_cfg):
    from physiotouch.training.run import run_training

    for term in ("val/loss_static", "val/loss_recon", "val/loss_pred"):
        cfg = make_cfg(small_data, tmp_path / term.split("/")[1], "trainer.max_epochs=2",
                       f"optimized_metric={term}")
        result = run_training(cfg)
        assert result["metric"] == min(r[term] for r in result["history"] if r["epoch"] >= 0)


SAMPLERS = ("tpe", "random", "cmaes", "nsgaii", "qmc", "grid")
PRESETS = ("coarse", "fine")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_composes_and_instantiates_with_every_preset(sampler, preset, tmp_path):
    """Sampler-specific settings live with their sampler: no preset merges a key a sampler does not take."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from physiotouch.hydra_setup import CONF_DIR
    from physiotouch.search.sweeper import PhysiotouchOptunaSweeper

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hparams_search={preset}", f"hydra/sweeper/sampler={sampler}",
                                                      f"paths.output_dir={tmp_path}"], return_hydra_config=True)
    sweeper = instantiate(cfg.hydra.sweeper)
    sweeper.search = {"grid_points": 3}
    fine_like = {"optim.blr": "tag(log, interval(1e-4, 1e-2))", "optim.warmup_epochs": "int(interval(0, 4))",
                 "optim.grad_clip": "choice(0.0, 0.5)"}  # the fine stage narrows the coarse ranges: same kinds
    params = cfg.hydra.sweeper.params
    space, _ = search_space(OmegaConf.to_container(params) if params else fine_like, [])
    chosen = PhysiotouchOptunaSweeper._complete_sampler(sweeper, sweeper.sampler, space)
    assert isinstance(chosen, optuna.samplers.BaseSampler), type(chosen)
    study = optuna.create_study(sampler=chosen)
    for _ in range(2):
        trial = study.ask(space)
        study.tell(trial, float(trial.params["optim.blr"]))
    assert len(study.trials) == 2


def test_grid_values_cover_choices_ranges_and_intervals():
    from physiotouch.search.params import grid_space

    space, _ = search_space({"a": "choice(x, y)", "b": "range(1, 9, 4)", "c": "tag(log, interval(1e-4, 1e-2))",
                             "d": "int(interval(0, 4))", "e": "interval(0.2, 0.8)", "f": "int(interval(1, 1000))"}, [])
    grid = grid_space(space, 3)
    assert grid["a"] == ["x", "y"] and grid["b"] == [1, 5, 9] and grid["d"] == [0, 1, 2, 3, 4]
    assert grid["c"] == pytest.approx([1e-4, 1e-3, 1e-2]) and grid["e"] == pytest.approx([0.2, 0.5, 0.8])
    assert grid["f"] == [1, 500, 1000]  # an integer interval of more than GRID_ALL_INTEGERS values: spread
    with pytest.raises(ConfigError, match="grid_points"):
        grid_space(space, 1)


@pytest.mark.slow
def test_every_sampler_runs_a_trial_with_both_presets(small_data, tmp_path):
    """Each sampler runs a coarse trial, then a fine one narrowed from it, through the real command."""
    for sampler in SAMPLERS:
        storage = f"sqlite:///{tmp_path}/{sampler}.db"
        for preset in PRESETS:
            cmd = train_cmd(small_data, tmp_path, f"hparams_search={preset}", f"hydra/sweeper/sampler={sampler}",
                            "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}",
                            f"hydra.sweep.dir={tmp_path}/{sampler}-{preset}")
            run = subprocess.run(cmd, capture_output=True, text=True)
            assert run.returncode == 0, f"{sampler} {preset}: {run.stderr[-2000:]}"
            study = optuna.load_study(study_name=f"physiotouch-{preset}", storage=storage)
            assert [t.state for t in study.trials] == [TrialState.COMPLETE], (sampler, preset)


@pytest.mark.slow
def test_a_killed_sweeps_trial_is_retried_within_a_few_heartbeats(small_data, tmp_path):
    """Two sweeps share a study; one is killed mid-trial. The other fails the dead trial once it has missed three
    heartbeats (the default grace), runs it again, and the study ends with exactly n_trials complete trials. The
    killed job's folder says `stale` with its trial number, and the report skips it with that reason."""
    import os
    import signal

    beat, n = 1, 3
    storage = f"sqlite:///{tmp_path}/optuna.db"
    # The victim's trials are long (it is killed in its first), so that both sweeps are seen mid-trial at once
    # however late the survivor starts; the survivor's own trials, and its retry of the victim's, are short.
    cmds = [sweep(small_data, tmp_path, storage, name, n, f"search.heartbeat_seconds={beat}",
                  f"trainer.max_epochs={epochs}", "trainer.limit_train_batches=6")
            for name, epochs in (("victim", 300), ("survivor", 3))]
    victim_log = open(tmp_path / "victim.log", "w")
    victim = subprocess.Popen(cmds[0], stdout=subprocess.DEVNULL, stderr=victim_log, start_new_session=True)
    survivor = subprocess.Popen(cmds[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    running: dict = {}
    while len(running) < 2 and time.time() < deadline and victim.poll() is None:  # both sweeps mid-trial
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="physiotouch-coarse", storage=storage)
        except KeyError:
            continue
        running = {Path(t.user_attrs["job_dir"]).parent.name: t for t in study.get_trials(states=(TrialState.RUNNING,))
                   if "job_dir" in t.user_attrs}
    assert set(running) == {"victim", "survivor"}, (running, (tmp_path / "victim.log").read_text()[-3000:])
    victims_trial = running["victim"]
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    victim_log.close()
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="physiotouch-coarse", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == n, states
    dead = study.trials[victims_trial.number]
    assert dead.state == TrialState.FAIL and "stale" in dead.user_attrs["fail_reason"]
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    # The survivor starts the retry once the dead trial has missed 3 heartbeats, as soon as it is free: at most a
    # few heartbeats after the later of the kill and the end of its own trial that was running then.
    before = [t.datetime_complete.timestamp() for t in study.trials
              if t.datetime_complete and t.number != dead.number and t.datetime_complete < retry.datetime_start]
    free_at = max([killed_at, *[b for b in before if b >= killed_at - 60]])
    assert retry.datetime_start.timestamp() - free_at < 3 * beat + 4 * beat, (retry.datetime_start, free_at)
    status = json.loads((Path(dead.user_attrs["job_dir"]) / "status.json").read_text())
    assert status["status"] == "stale" and status["trial"] == dead.number
    report = subprocess.run([sys.executable, "-m", "physiotouch.report", str(tmp_path / "victim"),
                             str(tmp_path / "survivor")], capture_output=True, text=True)
    out = report.stdout + report.stderr
    assert f"stale (trial {dead.number})" in out, out[-2000:]


@pytest.mark.slow
def test_search_confirm_runs_the_confirmation_and_reports_it(small_data, tmp_path):
    """search.confirm=true: confirm_command.txt runs as the search's last stage; its folds join the search report."""
    cmd = search_cmd(small_data, tmp_path, "coarse", 1, "search.confirm=true",
                     # two folds, one seed: the whole params node replaced (Hydra cannot override a dotted key)
                     'search.confirm_overrides=["hydra.sweeper.params={data.split.fold:\'0,1\',seed:\'1\'}",'
                     '"eval.probe.attributes=[]"]')
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "coarse"
    confirmation = yaml.safe_load((out / "confirmation.yaml").read_text())
    assert confirmation["runs"] == 2 and set(confirmation["per_fold"]) == {"0", "1"}
    assert confirmation["mean_over_folds"] == pytest.approx(sum(confirmation["per_fold"].values()) / 2)
    runs = sorted((out / "confirm").glob("*/summary.json"))
    assert len(runs) == 2 and all((r.parent / "eval" / "metrics.json").is_file() for r in runs)
    report = (out / "search_report.md").read_text()
    assert "## Confirmation across objects" in report and "search's best trial" in report


def test_a_journal_url_with_three_slashes_is_absolute_from_any_folder(tmp_path, monkeypatch):
    from physiotouch.search.storage import open_storage

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "shared" / "optuna.journal"
    for url in (f"journal://{target}", f"journal:///{target}"):  # journal:///abs and journal:////abs alike
        optuna.create_study(study_name=f"s{len(url)}", storage=open_storage(url))
    assert target.is_file() and not any(elsewhere.rglob("*.journal"))
