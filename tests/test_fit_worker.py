"""The evaluation's probe-fitting process (evaluation/fit_worker.py): the same answers as fitting here, its errors
raised here, its death survived, and an evaluation with it identical to one without."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import torch

from physiotouch.evaluation.fit_worker import FitWorker, started
from physiotouch.evaluation.probes import Task, run_probes
from tests.test_probe_cache import PCFG, _tasks


@pytest.fixture(scope="module")
def worker():
    with started("on") as fits:
        yield fits


def _same(a: tuple, b: tuple) -> None:
    (m_a, c_a, p_a), (m_b, c_b, p_b) = a, b
    assert m_a == m_b and c_a == c_b
    assert set(p_a) == set(p_b) and all(np.array_equal(p_a[k], p_b[k]) for k in p_a)


def _fit(fit, x, tasks) -> tuple:
    preds: dict = {}
    metrics, _, choices = fit(tasks, x, PCFG, "control", predictions=preds)
    return metrics, choices, preds


def test_the_process_fits_exactly_what_this_one_does(worker):
    x, tasks = _tasks(seed=3)
    assert worker is not None and worker.alive
    _same(_fit(worker.run_probes, x, tasks), _fit(run_probes, x, tasks))


def test_an_error_in_the_process_is_raised_here_and_it_goes_on_serving(worker):
    x, tasks = _tasks()
    short = Task("motion", tasks[0].y, [(np.arange(200), np.arange(5))], ["a", "b", "c"], groups=tasks[0].groups)
    with pytest.raises(IndexError):
        _fit(worker.run_probes, x, [short])  # fit clips beyond the 90 there are
    assert worker.alive
    _same(_fit(worker.run_probes, x, tasks), _fit(run_probes, x, tasks))


def test_a_killed_process_costs_a_warning_and_the_fits_are_made_here(caplog):
    x, tasks = _tasks(seed=1)
    with started("on") as fits:
        fits._process.kill()
        fits._process.join(10)
        with caplog.at_level(logging.WARNING, logger="physiotouch.evaluation.fit_worker"):
            got = _fit(fits.run_probes, x, tasks)
        assert not fits.alive
        assert [r.getMessage() for r in caplog.records] == [
            f"the probe-fitting process ended (exit code {fits._process.exitcode}); fitting the rest in this one"]
    _same(got, _fit(run_probes, x, tasks))


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """Spawn imports the caller's script in the new process unless told otherwise: an unguarded script (a training
    with its evaluation, say) would run again there."""
    import subprocess
    import sys
    from pathlib import Path

    ran, script = tmp_path / "ran.txt", tmp_path / "unguarded.py"
    script.write_text(f"""from pathlib import Path
Path({str(ran)!r}).open("a").write("ran\\n")
from physiotouch.evaluation.fit_worker import started
from tests.test_probe_cache import PCFG, _tasks
with started("on") as fits:
    x, tasks = _tasks()
    fits.run_probes(tasks, x, PCFG)
    assert fits.alive
""")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ran.read_text() == "ran\n"


def test_the_setting_decides_and_the_process_ends_with_the_block():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with started("auto") as one_thread, started("off") as off:
            assert one_thread is None and off is None  # a search's runs at one thread each: never a process
        torch.set_num_threads(2)
        with started("auto") as fits:
            assert isinstance(fits, FitWorker) and fits._process.is_alive()
        assert not fits._process.is_alive() and fits.closed
    finally:
        torch.set_num_threads(before)
    x, tasks = _tasks()
    with pytest.raises(RuntimeError, match="was ended"):  # an interrupted evaluation's threads fit nothing more
        fits.run_probes(tasks, x, PCFG)


def test_a_wrong_setting_is_one_line_naming_it():
    from physiotouch.cli import ConfigError
    from physiotouch.evaluation.settings import EvalConfig
    from physiotouch.utils.settings import build_settings

    with pytest.raises(ConfigError, match=r"^eval.fit_process='maybe' is not valid: it must be one of auto, on, off"):
        build_settings(EvalConfig, {"fit_process": "maybe"}, "eval")
    assert build_settings(EvalConfig, {"fit_process": "off"}, "eval").fit_process == "off"


@pytest.mark.slow
def test_an_evaluation_with_the_process_writes_what_one_without_writes(trained_run, tmp_path, worker):
    from physiotouch.checkpoints.format import load_model
    from physiotouch.data import build_datamodule
    from physiotouch.evaluation.run import EvalConfig, run_evaluation
    from physiotouch.run_folder import read_yaml

    cfg = read_yaml(trained_run / "config_resolved.yaml")
    model, _ = load_model(trained_run / "checkpoints" / "last.ckpt")
    datamodule = build_datamodule(cfg["data"])
    datamodule.setup()
    written = {}
    for name, fits in (("here", None), ("process", worker)):
        settings = EvalConfig(robustness={"enabled": False}, examples=1, probe_cache=False)
        run_evaluation(model, datamodule, settings, tmp_path / name, fits)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        written[name] = metrics, json.loads((tmp_path / name / "probe_choices.json").read_text())
    assert written["process"] == written["here"]
