"""The package as a user installs it: a wheel (not an editable checkout) holds the config tree, ships no other
distribution's files, and runs the main job from any folder, writing its runs there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_the_main_job_from_another_folder(tmp_path):
    # Built from a copy of the sources: setuptools writes its build/ folder beside them, never into the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("physiotouch", "hydra_plugins"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)
    wheel = next(wheels.glob("physiotouch-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "physiotouch/conf/train.yaml" in names and "physiotouch/conf/model/vit_l14.yaml" in names
    assert "hydra_plugins/physiotouch_sweeper/__init__.py" in names
    assert not [n for n in names if n.startswith("physiotouch/conf/local/") and n.endswith(".yaml")], \
        "this machine's own settings (physiotouch/conf/local/) in the wheel"
    assert not [n for n in names if n.startswith("hydra_plugins/") and "physiotouch" not in n], \
        "files under another distribution's import path"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import physiotouch; print(physiotouch.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "physiotouch.train", "trainer.max_epochs=1",
                          "data.synthetic.num_objects=6", "data.synthetic.frames=12", "data.split.exclude=[]",
                          "trainer.enable_progress_bar=false"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = list((work / "outputs").glob("*/*/summary.json"))
    assert len(runs) == 1 and list((work / "data").glob("synthetic_tacquad/index.csv"))
    assert not (REPO / "outputs" / runs[0].parent.parent.name / runs[0].parent.name).exists()
