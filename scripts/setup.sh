#!/usr/bin/env bash
# Creates .venv (if missing) and installs physiotouch with the versions it was tested with.
# --tests: also what only the tests need (pytest, ruff, transformers, statsmodels, pgserver and the optional extras).
# PHYSIOTOUCH_TORCH overrides the torch requirement (e.g. a CUDA build on a GPU machine: PHYSIOTOUCH_TORCH=torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and alone: a bare `torch` requirement would pull a multi-GB CUDA build where the CPU one will do.
.venv/bin/python -m pip install -q "${PHYSIOTOUCH_TORCH:-torch==2.13.0}"
EXTRAS=""
if [ "${1:-}" = "--tests" ]; then EXTRAS="[dev]"; fi
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".${EXTRAS}"
.venv/bin/python -c "import torch, lightning, hydra, physiotouch; print('physiotouch ready: torch', torch.__version__, '| lightning', lightning.__version__, '| cuda', torch.cuda.is_available())"
