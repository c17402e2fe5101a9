"""Every option of every config group composes and resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from physiotouch.paths import CONF_DIR

GROUPS = ["data", "model", "loss", "trainer", "logger", "callbacks", "experiment", "ablation", "hparams_search",
          "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_ctx():
    """One Hydra initialisation for the whole module (composing is then cheap; no registration call: see
    test_the_config_tree_composes_from_any_entry_point_without_a_registration_call)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_config(overrides):
    return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(hydra_ctx, group, option, tmp_path):
    extra = ["data.root=/x", "data.index=/x/i.csv"] if option == "tacquad" else []
    cfg = compose_config([f"{group}={option}", f"paths.output_dir={tmp_path}", *extra])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["encoder"]["image_size"] == resolved["data"]["image_size"]
    if group == "loss":
        assert resolved["loss"]["name"] == option
    if group == "trainer" and option == "ddp":
        assert resolved["trainer"]["strategy"]["find_unused_parameters"] is False  # joint default: none unused
    if group == "hparams_search":
        assert resolved["loss"]["beta"] == pytest.approx(1 - resolved["loss"]["alpha"])


def test_ddp_searches_unused_parameters_only_for_the_alternating_scheme(hydra_ctx, tmp_path):
    cfg = compose_config(["trainer=ddp", "loss=baseline_alternating", f"paths.output_dir={tmp_path}"])
    assert cfg.trainer.strategy.find_unused_parameters is True


def test_reference_experiment_matches_the_reference_script(hydra_ctx, tmp_path):
    cfg = compose_config(["experiment=reference_balanced", f"paths.output_dir={tmp_path}"])
    assert (cfg.data.batch_size, cfg.optim.accum_iter, cfg.trainer.max_epochs, cfg.optim.warmup_epochs,
            cfg.optim.blr, cfg.loss.alpha, cfg.loss.beta, cfg.model.mask_ratio) == (8, 2, 100, 40, 1e-3, .75, .25, .75)
    assert (cfg.callbacks.periodic.every_n_epochs, cfg.callbacks.periodic.save_top_k) == (10, 2)


@pytest.mark.parametrize("option,files", [("tensorboard", "tensorboard/**/events.out.tfevents.*"),
                                          ("mlflow", "mlflow.db")])
def test_the_tensorboard_and_mlflow_loggers_write_their_files(hydra_ctx, tmp_path, option, files):
    """`logger=tensorboard` (extra: tensorboard, part of the test install) and `logger=mlflow` (extra: mlflow, tested
    where installed): each beside the CSV logger, writing its own files under the run folder."""
    if option == "mlflow":
        pytest.importorskip("mlflow")
    from physiotouch.training.loggers import ResumableCSVLogger, instantiate_loggers

    loggers = instantiate_loggers(compose_config([f"logger={option}", f"paths.output_dir={tmp_path}"]))
    assert any(isinstance(lg, ResumableCSVLogger) for lg in loggers) and len(loggers) == 2
    for lg in loggers:
        lg.log_metrics({"val/objective": 0.5}, step=0)
        lg.finalize("success")
    assert list(tmp_path.glob(files)), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    if option == "mlflow":  # the metric is in the run the logger made
        lg = loggers[-1]
        assert [m.value for m in lg.experiment.get_metric_history(lg.run_id, "val/objective")] == [0.5]


# Each settings node, a typed field of it (the value "abc" is of the wrong type for it), and its dataclass.
TYPED_NODES = [("model.encoder", "hidden_size", "EncoderConfig"), ("loss", "alpha", "LossConfig"),
               ("optim", "blr", "OptimConfig"), ("augment", "hflip", "AugmentConfig"),
               ("data.split", "fold", "SplitConfig"), ("data.synthetic", "num_objects", "SynthConfig"),
               ("eval.probe", "C", "ProbeConfig"), ("eval", "batch_size", "EvalConfig")]


@pytest.mark.parametrize("where,field,cls", TYPED_NODES)
def test_composition_refuses_an_unknown_key_or_a_wrong_type_in_every_settings_node(hydra_ctx, tmp_path, where,
                                                                                 field, cls):
    """The nodes are the dataclasses themselves (typed structured configs): Hydra refuses a key the class lacks
    and a value of the wrong type, and the package turns that into one line naming the key."""
    from hydra.errors import ConfigCompositionException

    from physiotouch.cli import composition_error

    base = [f"paths.output_dir={tmp_path}"]
    assert OmegaConf.get_type(OmegaConf.select(compose_config(base), where)).__name__ == cls
    with pytest.raises(ConfigCompositionException) as typo:
        compose_config([*base, f"{where}.{field}x=1"])
    said = str(composition_error(typo.value))
    assert said.startswith(f"unknown key {where}.{field}x (did you mean {where}.{field}?); {where} has: "), said
    with pytest.raises(ConfigCompositionException) as wrong:
        compose_config([*base, f"{where}.{field}=abc"])
    said = str(composition_error(wrong.value))
    kind = "int" if field in ("hidden_size", "fold", "num_objects", "batch_size") else "float"
    assert said == f"{where}.{field}='abc' is not valid: it must be of type {kind}", said


@pytest.mark.slow  # two commands
def test_the_commands_say_a_composition_error_in_one_line_with_exit_2(tmp_path):
    for module, override, says in (("train", "loss.alpah=0.3", "unknown key loss.alpah (did you mean loss.alpha?)"),
                                   ("evaluate", "eval.probe.C=abc", "eval.probe.C='abc' is not valid")):
        res = subprocess.run([sys.executable, "-m", f"physiotouch.{module}", override], capture_output=True,
                             text=True, cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and says in errors[0], res.stderr[-2000:]


@pytest.mark.slow  # a fresh interpreter
def test_the_config_tree_composes_from_any_entry_point_without_a_registration_call(tmp_path):
    """A fresh interpreter that imports nothing of physiotouch composes the tree through Hydra alone, by module and
    by folder: the nodes and resolvers come with Hydra's plugin scan (hydra_plugins/physiotouch_configs)."""
    code = ("from hydra import compose, initialize_config_dir, initialize_config_module\n"
            "from omegaconf import OmegaConf\n"
            "with initialize_config_module('physiotouch.conf', version_base='1.3'):\n"
            f"    a = compose('train', overrides=['paths.output_dir={tmp_path}', 'loss=equal'])\n"
            "import physiotouch.paths as p\n"
            "with initialize_config_dir(str(p.CONF_DIR), version_base='1.3'):\n"
            f"    b = compose('evaluate', overrides=['paths.output_dir={tmp_path}'])\n"
            "print(OmegaConf.to_container(a, resolve=True)['model']['mask_ratio'], a.loss.name, 'eval' in b)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["0.75", "equal", "True"]


@pytest.mark.slow  # two commands
def test_help_lists_the_groups_a_user_picks_from_and_info_the_sweeper_once(tmp_path):
    def run(flag: str) -> str:
        res = subprocess.run([sys.executable, "-m", "physiotouch.train", flag], capture_output=True, text=True,
                             cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout

    groups = run("--help").split("== Config ==")[0]
    assert "logger: csv, mlflow, none, tensorboard, wandb" in groups and "recipe: " in groups
    assert "_settings" not in groups and "dataclass_defaults" not in groups  # the settings nodes are not choices
    sweepers = run("--info").split("Sweeper:")[1].split("Config search path")[0]
    assert sweepers.split() == ["--------", "BasicSweeper", "PhysiotouchOptunaSweeper"]


@pytest.mark.slow  # fresh interpreters
@pytest.mark.parametrize("command", ["physiotouch.train --help", "physiotouch.train --cfg job",
                                     "physiotouch.train hparams_search=coarse --cfg hydra",
                                     "physiotouch.evaluate --cfg job", "physiotouch.report --help"])
def test_help_and_config_prints_import_neither_torch_nor_lightning(command, tmp_path):
    """Composing and printing needs only Hydra and the settings dataclasses (kept in torch-free modules; the
    packages load their torch parts on first use), so these answer in about a second, not after ~8 s of imports."""
    code = ("import runpy, sys\n"
            f"sys.argv = {command.split()!r}\n"
            "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\nexcept SystemExit as end:\n"
            "    assert not end.code, end.code\n"
            "print('HEAVY', sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []", res.stdout[-500:]
