"""The replicates behind a release's configuration: its runs across object folds and seeds, read from the sweep
folders the user names (`finalize --replicates DIR ...`).

A run is a replicate of the released configuration when its resolved settings of what is trained (model, loss,
optimiser, augmentation, epochs, batch, validation) equal the release run's, and it shares the release's test
objects; the seed, the fold and where it was written may differ. Their validation objectives, mean ± std, go into
`release.json` and the README block, so the released number stands beside the spread it was chosen from.
"""

from __future__ import annotations

from pathlib import Path

from physiotouch.experiments.replicates import summarise
from physiotouch.experiments.runs import find_runs, flat

TRAINED = ("model.", "loss.", "optim.", "augment.", "trainer.max_epochs", "data.batch_size", "validation.")
TERMS = ("val/objective", "val/loss_static", "val/loss_recon", "val/loss_pred")


def _signature(config: dict) -> dict:
    return {k: v for k, v in flat(config).items() if k.startswith(TRAINED)}


def replicate_summary(folders: list[Path], cfg: dict, test_groups: list[str]) -> dict:
    runs, _ = find_runs(folders)
    target = _signature(cfg)
    same = [r for r in runs if _signature(r.config) == target
            and sorted(r.splits.get("groups", {}).get("test") or []) == sorted(test_groups)]
    out = {"runs": [str(r.path) for r in same], "replicates": sorted(r.replicate for r in same)}
    for term in TERMS:
        values = [v for r in same if (v := r.best_row("val/objective").get(term)) is not None]
        out[term] = summarise(values)
    return out
