"""The test split's numbers, for the release command only: the reconstruction objective and the probes.

Same definitions as on validation: fixed masks per clip; the sensor probe fit on the train split and tested on the
test clips; the object probe fit on the early windows and tested on the late windows of the test sequences.
"""

from __future__ import annotations

import numpy as np

from .encoder import encode
from .probes import ProbeConfig, classification_metrics, fit_predict, time_split_mask


def evaluate_test(model, datamodule, batch_size: int, mask_ratio: float, device: str = "cpu",
                  probe: ProbeConfig | None = None) -> dict[str, float]:
    pcfg = probe or ProbeConfig()
    test_ds = datamodule.release_test_dataset()
    test = encode(model, test_ds, batch_size, mask_ratio, device=device, name="test")
    train = encode(model, datamodule.datasets["train"], batch_size, mask_ratio, device=device, name="train")
    vocab = datamodule.record["labels"]
    m = {"test/clips": float(len(test["x"])),
         "test/objective": float((test["static"] + test["recon"] + test["pred"]).mean()),
         "test/loss_static": float(test["static"].mean()), "test/loss_recon": float(test["recon"].mean()),
         "test/loss_pred": float(test["pred"].mean()),
         "test/loss_dynamic": float((test["recon"] + test["pred"]).mean()),
         "test/pred_beats_copy_fraction": float((test["pred"] < test["copy_frame3"]).mean())}
    n_sen, n_obj = len(vocab["sensor"]), len(vocab["object"])
    if len(np.unique(train["sensor"])) >= 2:
        proba = fit_predict("linear", train["x"], train["sensor"], test["x"], n_sen, pcfg)
        for k, v in classification_metrics(proba, test["sensor"], n_sen, pcfg.ece_bins).items():
            m[f"test/probe_sensor_{k}"] = v
    fit, held = time_split_mask(test["t"], test["start"], test["end"], pcfg)
    if len(np.unique(test["object"][fit])) >= 2 and held.any():
        proba = fit_predict("linear", test["x"][fit], test["object"][fit], test["x"][held], n_obj, pcfg)
        for k, v in classification_metrics(proba, test["object"][held], n_obj, pcfg.ece_bins).items():
            m[f"test/probe_object_{k}"] = v
        m["test/probe_object_classes"] = float(len(np.unique(test["object"][held])))
    return m
