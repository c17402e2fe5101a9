"""What pruning buys: the same coarse search with and without a pruner, side by side in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_efficiency.py    # 24 trials x 8 epochs, 3 repeats
    .venv/bin/python benchmarks/search_efficiency.py --pruner median --trials 12

Each repeat runs `python -m physiotouch.train -m hparams_search=coarse` twice with the same trial budget: once
with `hydra/sweeper/pruner=none`, once with the chosen pruner (default: the recommended `successive_halving`
preset). The two arms get different sampler seeds (repeat r: 1000 + r unpruned, 2000 + r pruned), so their
start-up trials are not the same points by construction and "the same best" is not built in. Epochs trained are
counted from the study (validation epochs each trial reported); the best value is the best *completed* trial's
`val/objective` (a pruned trial's value is a partial curve). Prints both per repeat and the ratios.
Goal (issue 23): at most half the epochs, with the pruned best within 1% of the unpruned best in every repeat.
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
    parser.add_argument("--pruner", default="successive_halving",
                        choices=["median", "successive_halving", "hyperband"])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit-batches", type=int, default=10, help="training batches per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=str(REPO / "data"), help="where the built-in data set is (or goes)")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both searches")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="search_efficiency_") as tmp:
        print("| repeat | seeds (none / pruned) | epochs unpruned | epochs pruned | ratio | trials pruned | "
              "best unpruned | best pruned | gap | within 1% |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for rep in range(args.repeats):
            row, seeds = {}, {"none": 1000 + rep, args.pruner: 2000 + rep}
            for arm in ("none", args.pruner):
                row[arm] = run_search(Path(tmp) / f"{arm}-{rep}", arm, seeds[arm], args)
            rows.append(row)
            full, pruned = row["none"], row[args.pruner]
            gap = 100 * (pruned["best"] / full["best"] - 1)
            print(f"| {rep} | {seeds['none']} / {seeds[args.pruner]} | {full['epochs']} | {pruned['epochs']} | "
                  f"x{pruned['epochs'] / full['epochs']:.2f} | {pruned['pruned']} | {full['best']:.4f} | "
                  f"{pruned['best']:.4f} | {gap:+.2f}% | {'yes' if gap <= 1.0 else 'no'} |", flush=True)
    epoch_ratio = [r[args.pruner]["epochs"] / r["none"]["epochs"] for r in rows]
    best_gap = [100 * (r[args.pruner]["best"] / r["none"]["best"] - 1) for r in rows]
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.repeats} repeats, pruner={args.pruner}")
    print(f"epochs trained, pruned / unpruned: mean {statistics.mean(epoch_ratio):.2f} "
          f"(per repeat {', '.join(f'{x:.2f}' for x in epoch_ratio)})")
    print(f"best val/objective, pruned vs unpruned: mean {statistics.mean(best_gap):+.2f}% "
          f"(per repeat {', '.join(f'{x:+.2f}%' for x in best_gap)}; positive = pruned search found a worse best)")
    met = all(g <= 1.0 for g in best_gap) and all(r <= 0.5 for r in epoch_ratio)
    print(f"goal (within 1% of the unpruned best for at most half the epochs): {'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
