"""The test split's numbers, for the release command only: the reconstruction objective and the probes.

Same definitions as on validation (`probes.build_tasks`): fixed masks per clip; the sensor and attribute probes fit
on the train split and tested on the test clips (unseen objects); the object probe on held-out sequences of the
test objects.
"""

from __future__ import annotations

import numpy as np

from .encoder import encode
from .probes import ProbeConfig, build_tasks, fit_task, pool, score_task


def evaluate_test(model, datamodule, batch_size: int, mask_ratio: float, device: str = "cpu",
                  probe: ProbeConfig | None = None) -> dict[str, float]:
    from .run import evaluation_labels

    pcfg = probe or ProbeConfig()
    test = encode(model, datamodule.release_test_dataset(), batch_size, mask_ratio, device=device, name="test")
    train = encode(model, datamodule.datasets["train"], batch_size, mask_ratio, device=device, name="train")
    m = {"test/clips": float(len(test["x"])),
         "test/objective": float(test["objective"].mean()),  # TactileVideoMAE.objective, per clip
         "test/loss_static": float(test["static"].mean()), "test/loss_recon": float(test["recon"].mean()),
         "test/loss_pred": float(test["pred"].mean()),
         "test/loss_dynamic": float((test["recon"] + test["pred"]).mean()),
         "test/pred_beats_copy_fraction": float((test["pred"] < test["copy_frame3"]).mean())}
    pooled = pool({"train": train, "test": test}, ("train", "test"))
    labels = evaluation_labels(datamodule, pooled["folder"])
    for task in build_tasks(pooled, datamodule.record["labels"], labels, pcfg, root="test",
                            object_among=pooled["split"] == 1, attributes_by_split=True):
        if not task.prefix.endswith("/probe_"):
            continue  # LoSO and the re-identification diagnostic are validation-only views
        scores = score_task(task, fit_task(task, pooled["x"], "linear", pcfg), pooled["x"], pcfg)[0]
        m.update({task.key("linear", k): v for k, v in scores.items()})
        if task.classes is not None:
            m[task.key("linear", "classes")] = float(len(np.unique(task.y[task.tested])))
    return m
