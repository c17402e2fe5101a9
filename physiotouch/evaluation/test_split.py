"""The test split's numbers, for the release command only: the reconstruction objective and the probes.

Same definitions as on validation (`probes.build_tasks`): fixed masks per clip; the sensor and attribute probes fit
on the train split and tested on the test clips (unseen objects); the object probe on held-out sequences of the
test objects. Each probe stands beside its controls (raw pixels, pixel change, untrained twin, contact features,
majority) with the paired per-object interval and verdict (`controls["test/probe_..."]`).
"""

from __future__ import annotations

from .controls import control_metrics, controls_for
from .encoder import encode
from .probes import ProbeConfig, build_tasks, pool, run_probes
from .targets import clip_targets


def evaluate_test(model, datamodule, batch_size: int, mask_ratio: float, device: str = "cpu",
                  probe: ProbeConfig | None = None) -> dict[str, float]:
    pcfg = probe or ProbeConfig()
    test_set = datamodule.release_test_dataset()
    test = encode(model, test_set, batch_size, mask_ratio, device=device, name="test")
    train = encode(model, datamodule.datasets["train"], batch_size, mask_ratio, device=device, name="train")
    m = {"test/clips": float(len(test["x"])),
         "test/objective": float(test["objective"].mean()),  # TactileVideoMAE.objective, per clip
         "test/loss_static": float(test["static"].mean()), "test/loss_recon": float(test["recon"].mean()),
         "test/loss_pred": float(test["pred"].mean()),
         "test/loss_dynamic": float((test["recon"] + test["pred"]).mean()),
         "test/pred_beats_copy_fraction": float((test["pred"] < test["copy_frame3"]).mean())}
    pooled = pool({"train": train, "test": test}, ("train", "test"))
    targets = clip_targets(datamodule.index, pooled, pcfg)[0]
    tasks = [t for t in build_tasks(pooled, datamodule.record["labels"], targets, pcfg, root="test",
                                    object_among=pooled["split"] == 1, attributes_by_split=True)
             if t.prefix.endswith("/probe_")]  # LoSO and the re-identification diagnostic are validation-only views
    for task in tasks:
        task.kinds = ("linear",)
    preds: dict = {}
    m.update(run_probes(tasks, pooled["x"], pcfg, "model", predictions=preds)[0])
    values, _, control_preds = control_metrics(model, {"train": datamodule.datasets["train"], "test": test_set},
                                               tasks, pcfg, batch_size, device, None, datamodule.seed,
                                               splits=("train", "test"))
    # each test probe beside its controls, with the paired per-object difference and its interval (a handful of
    # test objects gives `insufficient data`, never a verdict)
    m["controls"] = controls_for(m, values, tasks, preds, control_preds, pooled["object"], pcfg.ece_bins)
    return m
