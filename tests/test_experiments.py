"""Sweeps and reports: coarse-to-fine Optuna search, resume after a kill, failed trials, the results report."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from physiotouch.experiments.results_report import build_report
from physiotouch.experiments.runs import RunError
from physiotouch.search.narrowing import NarrowingRule, narrow

from .conftest import train_overrides

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def train_cmd(data: Path, tmp: Path, *extra: str) -> list[str]:
    overrides = [o for o in train_overrides(data, tmp) if not o.startswith("paths.output_dir")]
    flags = [e for e in extra if e == "-m"]  # Hydra's flags must precede the overrides
    return [sys.executable, "-m", "physiotouch.train", *flags, *overrides, *FAST, *[e for e in extra if e != "-m"]]


def search_cmd(data, tmp, stage: str, n: int, *extra: str) -> list[str]:
    return train_cmd(data, tmp, f"hparams_search={stage}", f"hydra.sweeper.n_trials={n}",
                     f"hydra.sweeper.storage=sqlite:///{tmp}/optuna.db", f"hydra.sweep.dir={tmp}/{stage}", *extra)


def test_narrowing_stays_inside_and_around_the_best():
    rule = NarrowingRule(top_k=3, margin=0.25, min_width=0.1)
    log = narrow(FloatDistribution(1e-4, 1e-2, log=True), [1e-3, 2e-3], rule)
    assert 1e-4 <= log.low <= 1e-3 and 2e-3 <= log.high <= 1e-2 and log.high / log.low < 100
    lin = narrow(FloatDistribution(0.2, 0.9), [0.5], rule)  # one value: min_width keeps a range
    assert lin.low < 0.5 < lin.high and lin.high - lin.low == pytest.approx(0.07)
    edge = narrow(FloatDistribution(0.0, 1.0), [0.0, 0.01], rule)
    assert edge.low == 0.0 and edge.high >= 0.1 - 1e-12
    ints = narrow(IntDistribution(0, 10), [3, 4], rule)
    assert 0 <= ints.low <= 3 and 4 <= ints.high <= 10
    cat = narrow(CategoricalDistribution([0.0, 0.5, 1.0, 3.0]), [1.0, 0.5], rule)
    assert cat.choices == (0.5, 1.0)


@pytest.mark.slow
def test_coarse_then_fine_search(small_data, tmp_path):
    coarse = subprocess.run(search_cmd(small_data, tmp_path, "coarse", 2), capture_output=True, text=True)
    assert coarse.returncode == 0, coarse.stderr[-3000:]
    fine = subprocess.run(search_cmd(small_data, tmp_path, "fine", 2), capture_output=True, text=True)
    assert fine.returncode == 0, fine.stderr[-3000:]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    c = optuna.load_study(study_name="physiotouch-coarse", storage=storage)
    f = optuna.load_study(study_name="physiotouch-fine", storage=storage)
    assert len(c.trials) == 2 and len(f.trials) == 2
    best = c.best_trial
    assert f.trials[0].params == best.params  # the coarse best is enqueued first
    assert f.trials[0].value == pytest.approx(best.value, rel=1e-6)  # and training is deterministic
    for name, fine_dist in f.trials[1].distributions.items():
        coarse_dist = best.distributions[name]
        if isinstance(coarse_dist, CategoricalDistribution):
            assert set(fine_dist.choices) <= set(coarse_dist.choices) and best.params[name] in fine_dist.choices
        else:
            assert coarse_dist.low <= fine_dist.low <= best.params[name] <= fine_dist.high <= coarse_dist.high
    sweep = tmp_path / "fine"
    for name in ("fine_ranges.yaml", "best_params.yaml", "search_report.md", "trials.csv", "optimization_history.png"):
        assert (sweep / name).is_file(), name
    ranges = yaml.safe_load((sweep / "fine_ranges.yaml").read_text())
    assert ranges["coarse_best_params"] == best.params
    # the last step, written out: the best configuration confirmed across objects (folds x seeds)
    confirm = (sweep / "confirm_command.txt").read_text()
    assert confirm.startswith("python -m physiotouch.train -m ablation=confirm ")
    assert all(f"{k}=" in confirm for k in f.best_params) and "hparams_search" not in confirm


def _count(db: Path, state: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from trials where state=?", (state,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _complete(db: Path) -> int:
    return _count(db, "COMPLETE")


@pytest.mark.slow
def test_sweep_killed_mid_trial_resumes_without_repeating(small_data, tmp_path):
    cmd = search_cmd(small_data, tmp_path, "coarse", 2, "search.heartbeat_seconds=1", "search.grace_seconds=2",
                     "trainer.max_epochs=4", "trainer.limit_train_batches=10")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = tmp_path / "optuna.db"
    deadline = time.time() + 240
    # kill as soon as the first trial is finished and the second is running (each trial takes seconds)
    while not (_complete(db) == 1 and _count(db, "RUNNING") == 1) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _complete(db) == 1
    study = optuna.load_study(study_name="physiotouch-coarse", storage=f"sqlite:///{db}")
    first = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE][0]
    first_summary = json.loads((Path(first.user_attrs["job_dir"]) / "summary.json").read_text())
    time.sleep(3)  # past the grace period: the killed trial is stale
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = optuna.load_study(study_name="physiotouch-coarse", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    assert sum(t.params == first.params for t in complete) == 1  # the finished trial was not run again
    assert [t.number for t in complete][0] == first.number
    # each trial has its own job folder, named by its number: the relaunch never wrote into the finished one's
    for t in complete:
        assert Path(t.user_attrs["job_dir"]).name == str(t.number)
    assert json.loads((Path(first.user_attrs["job_dir"]) / "summary.json").read_text()) == first_summary


@pytest.mark.slow
def test_failed_trials_are_recorded_and_the_sweep_finishes(small_data, tmp_path):
    run = subprocess.run(search_cmd(small_data, tmp_path, "coarse", 2, "fault_injection.nan_at_step=0"),
                         capture_output=True, text=True)
    # every trial ran and was recorded, and a search that found nothing says so by its exit code
    assert run.returncode != 0 and "all 2 trials failed" in run.stderr, run.stderr[-3000:]
    study = optuna.load_study(study_name="physiotouch-coarse", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all("non-finite training loss" in t.user_attrs["fail_reason"] for t in study.trials)
    report = (tmp_path / "coarse" / "search_report.md").read_text()
    assert "0 complete, 2 failed" in report and "non-finite training loss" in report
    with (tmp_path / "coarse" / "trials.csv").open() as fh:
        assert [r["state"] for r in csv.DictReader(fh)] == ["FAIL", "FAIL"]


def _min_val_objective(job: Path) -> float:
    with (job / "csv" / "metrics.csv").open() as fh:
        values = [float(r["val/objective"]) for r in csv.DictReader(fh) if r.get("val/objective")]
    return min(values[1:])  # the first row is the validation before training


@pytest.mark.slow
def test_report_matches_the_jobs_metric_files(small_data, tmp_path):
    sweep = tmp_path / "sweep"
    run = subprocess.run(train_cmd(small_data, tmp_path, "-m", "loss=equal,baseline_alternating", "seed=1,2",
                                   f"hydra.sweep.dir={sweep}", "trainer.max_epochs=2"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = subprocess.run([sys.executable, "-m", "physiotouch.report", str(sweep)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with (sweep / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    runs = [r for r in rows if r["kind"] == "run"]
    assert len(runs) == 4 and {r["config"] for r in runs} == {"loss=equal", "loss=baseline_alternating"}
    for r in runs:
        assert float(r["val/objective"]) == pytest.approx(_min_val_objective(Path(r["run"])), rel=1e-6)
    for config in ("loss=equal", "loss=baseline_alternating"):
        values = [float(r["val/objective"]) for r in runs if r["config"] == config]
        mean = next(float(r["val/objective"]) for r in rows if r["kind"] == "mean" and r["config"] == config)
        std = next(float(r["val/objective"]) for r in rows if r["kind"] == "std" and r["config"] == config)
        assert mean == pytest.approx(sum(values) / 2)
        assert std == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    md = (sweep / "report.md").read_text()
    assert "| loss=baseline_alternating | loss=equal | seed 1, seed 2 |" in md
    for png in ("learning_curves.png", "ratio_contribution_curves.png", "main_metric.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # runs on another split must not be mixed in
    other = tmp_path / "other"
    subprocess.run(train_cmd(small_data, tmp_path, "-m", "seed=1", "data.split.seed=5", f"hydra.sweep.dir={other}"),
                   capture_output=True, check=True)
    with pytest.raises(RunError, match="different data versions or splits"):
        build_report([sweep, other], tmp_path / "mixed")


@pytest.mark.slow
def test_wandb_offline_one_run_per_job(small_data, tmp_path):
    sweep = tmp_path / "wb"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    run = subprocess.run(train_cmd(small_data, tmp_path, "-m", "logger=wandb", "seed=1,2", f"hydra.sweep.dir={sweep}"),
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    for job in ("0", "1"):
        runs = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs
        assert (sweep / job / "csv" / "metrics.csv").is_file()  # the CSV logger is always on
    info = json.loads((sweep / "1" / "run_info.json").read_text())
    assert "logger=wandb" in info["overrides"]


@pytest.mark.slow
def test_report_treats_k_folds_as_replicates(small_data, tmp_path):
    sweep = tmp_path / "kfold"
    run = subprocess.run(train_cmd(small_data, tmp_path, "-m", "data.split.k_folds=2", "data.split.fold=0,1",
                                   f"hydra.sweep.dir={sweep}", "evaluate_after_training=true",
                                   "eval.robustness.enabled=false", "eval.examples=1"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    tests = {json.dumps(json.loads((sweep / j / "splits.json").read_text())["groups"]["test"]) for j in ("0", "1")}
    vals = [json.loads((sweep / j / "splits.json").read_text())["groups"]["val"] for j in ("0", "1")]
    assert len(tests) == 1 and not set(vals[0]) & set(vals[1])  # one test set, disjoint validation folds
    result = build_report([sweep])
    assert {r["replicate"] for r in result["table"]} == {"seed 0 fold 0", "seed 0 fold 1"}
    assert [s["n"] for s in result["stats"].values()] == [2]
    # issue 11: every validation object's own value (each is validated in one fold), and the spread across them
    with (sweep / "per_object.csv").open() as fh:
        objects = [row["object"] for row in csv.DictReader(fh)]
    assert sorted(objects) == sorted(vals[0] + vals[1])
    report = (sweep / "report.md").read_text()
    assert "## Per validation object" in report and "SD across objects" in report


def test_holm_ignores_missing_p_values_like_statsmodels():
    from statsmodels.stats.multitest import multipletests

    from physiotouch.experiments.results_report import holm

    for pvalues in ([0.01, math.nan, 0.001], [0.04, 0.03, math.nan, 0.2, 0.001], [math.nan, math.nan], [0.5]):
        present = [p for p in pvalues if not math.isnan(p)]
        expected = iter(multipletests(present, method="holm")[1] if present else [])
        got = holm(pvalues)
        for p, adjusted in zip(pvalues, got):
            assert math.isnan(adjusted) if math.isnan(p) else adjusted == pytest.approx(next(expected))
    assert holm([0.01, math.nan, 0.001]) == pytest.approx([0.01, math.nan, 0.002], nan_ok=True)  # the case


def test_report_refuses_runs_that_measure_different_things(trained_run, tmp_path):
    def copy(name: str, change=None) -> Path:
        run = tmp_path / "runs" / name
        shutil.copytree(trained_run, run)
        if change:
            path = run / "config_resolved.yaml"
            cfg = yaml.safe_load(path.read_text())
            change(cfg)
            path.write_text(yaml.safe_dump(cfg))
        return run

    copy("a")
    copy("b", lambda c: c["loss"].update(name="equal", alpha=0.5, beta=0.5))
    copy("c", lambda c: c["validation"].update(mask_ratio=0.5))
    with pytest.raises(RunError, match="validation mask ratio differs"):
        build_report([tmp_path / "runs"], tmp_path / "rep")
    result = build_report([tmp_path / "runs"], tmp_path / "rep", allow_mixed=True)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.index("Mixed settings") < md.index("## Runs") and "validation mask ratio differs" in md
    # configurations are named by resolved values: the loss group by its name, the rest key=value
    assert {r["config"] for r in result["table"]} == {"loss=balanced validation.mask_ratio=0.75",
                                                       "loss=equal validation.mask_ratio=0.75",
                                                       "loss=balanced validation.mask_ratio=0.5"}


def test_report_groups_by_resolved_values_not_override_text(trained_run, tmp_path):
    for seed, text in ((0, "False"), (1, "false")):
        run = tmp_path / "runs" / str(seed)
        shutil.copytree(trained_run, run)
        cfg = yaml.safe_load((run / "config_resolved.yaml").read_text())
        cfg["seed"] = cfg["data"]["seed"] = seed  # two replicates of one configuration
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
        (run / ".hydra").mkdir(exist_ok=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- augment.enabled={text}\n")
    result = build_report([tmp_path / "runs"], tmp_path / "rep")
    assert {r["config"] for r in result["table"]} == {"all runs"} and result["stats"]["all runs"]["n"] == 2


def test_paired_effect_ci_and_smallest_detectable_difference_match_references():
    from scipy import stats
    from statsmodels.stats.power import TTestPower

    from physiotouch.experiments.replicates import paired

    diffs = [0.012, -0.004, 0.02, 0.007, 0.015, 0.001]
    got = paired(diffs)
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert (got["diff_ci95_low"], got["diff_ci95_high"]) == pytest.approx((ci.low, ci.high))
    sd = stats.tstd(diffs)
    assert got["effect_dz"] == pytest.approx(sum(diffs) / len(diffs) / sd)
    d = TTestPower().solve_power(nobs=len(diffs), alpha=0.05, power=0.8, alternative="two-sided")
    assert got["mdd"] == pytest.approx(d * sd, rel=1e-3)


def test_a_copied_run_folder_still_names_its_best_checkpoint(trained_run, tmp_path):
    """summary.json names the best checkpoint relative to the run, so a copied or moved folder keeps it (the report
    showed "-" for a copy when the path was absolute)."""
    import shutil

    from physiotouch.experiments.runs import load_run
    from physiotouch.run_folder import RunDir

    best = json.loads((trained_run / "summary.json").read_text())["best_checkpoint"]
    assert best.startswith("checkpoints/best-") and not Path(best).is_absolute()
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained_run, copy)
    assert RunDir(copy).best_checkpoint() == copy / best
    assert load_run(copy).checkpoint_id().startswith(Path(best).name + "@")
