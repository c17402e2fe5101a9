"""What pruning buys: the same coarse search with and without a pruner, side by side in one run.

    .venv/bin/python benchmarks/search_efficiency.py                      # tiny model, built-in data, 3 repeats
    .venv/bin/python benchmarks/search_efficiency.py --pruner successive_halving --trials 16

Each repeat runs `python -m physiotouch.train -m hparams_search=coarse` twice with the same sampler seed and trial
budget: once with `hydra/sweeper/pruner=none`, once with the chosen pruner. Epochs trained are counted from the
study (validation epochs each trial reported); the best value is the best *completed* trial's `val/objective`
(a pruned trial's value is a partial curve). Prints both per repeat and the ratios pruned / unpruned.
Goal from issue 12: the pruned search reaches the unpruned best within 1% for at most half the epochs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]


def run_search(workdir: Path, pruner: str, seed: int, args) -> dict:
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    cmd = [sys.executable, "-m", "physiotouch.train", "-m", "hparams_search=coarse", f"hydra/sweeper/pruner={pruner}",
           f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.sampler.seed={seed}",
           f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={workdir / 'sweep'}",
           f"trainer.max_epochs={args.epochs}", f"trainer.limit_train_batches={args.limit_batches}",
           "trainer.enable_progress_bar=false", "evaluate_after_training=false",
           f"paths.data_dir={args.data_dir}", *args.overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"search failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    study = optuna.load_study(study_name="physiotouch-coarse", storage=storage)
    complete = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"epochs": sum(len(t.intermediate_values) for t in study.trials), "best": min(complete),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruner", default="median", choices=["median", "successive_halving", "hyperband"])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit-batches", type=int, default=10, help="training batches per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=str(REPO / "data"), help="where the built-in data set is (or goes)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both searches")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="search_efficiency_") as tmp:
        for seed in range(args.repeats):
            row = {}
            for arm in ("none", args.pruner):
                row[arm] = run_search(Path(tmp) / f"{arm}-{seed}", arm, seed, args)
            rows.append(row)
            full, pruned = row["none"], row[args.pruner]
            gap = 100 * (pruned["best"] / full["best"] - 1)
            print(f"repeat {seed}: unpruned {full['epochs']} epochs, best {full['best']:.4f} | {args.pruner}: "
                  f"{pruned['epochs']} epochs ({pruned['pruned']} trials pruned), best {pruned['best']:.4f} | "
                  f"epochs x{pruned['epochs'] / full['epochs']:.2f}, best {gap:+.2f}%", flush=True)
    epoch_ratio = [r[args.pruner]["epochs"] / r["none"]["epochs"] for r in rows]
    best_gap = [100 * (r[args.pruner]["best"] / r["none"]["best"] - 1) for r in rows]
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.repeats} repeats, pruner={args.pruner}")
    print(f"epochs trained, pruned / unpruned: mean {statistics.mean(epoch_ratio):.2f} "
          f"(per repeat {', '.join(f'{x:.2f}' for x in epoch_ratio)})")
    print(f"best val/objective, pruned vs unpruned: mean {statistics.mean(best_gap):+.2f}% "
          f"(per repeat {', '.join(f'{x:+.2f}%' for x in best_gap)}; positive = pruned search found a worse best)")
    met = all(g <= 1.0 for g in best_gap) and statistics.mean(epoch_ratio) <= 0.5
    print(f"goal (within 1% of the unpruned best for at most half the epochs): {'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
