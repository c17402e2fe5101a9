"""The evaluation's pictures (matplotlib, PNG): probes' confusion, PR, ROC and reliability plots, per-group bars,
and panels of worst / typical validation clips."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve  # noqa: E402

from physiotouch.data.augment import denormalize  # noqa: E402
from physiotouch.utils.figures import save_figure  # noqa: E402

from .settings import ECE_BINS  # noqa: E402


def _save(fig, path: Path, tight: bool = True) -> Path:
    return save_figure(fig, path, tight)


def confusion(curve: dict, task: str, out: Path) -> Path:
    y, pred, names = curve["y"], curve["proba"].argmax(1), curve["names"]
    cm = confusion_matrix(y, pred, labels=range(len(names)), normalize="true")
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(names), 0.8 + 0.45 * len(names)))
    im = ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j] > 0.005:
                ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    ax.set_title(f"{task} probe (linear): confusion matrix")
    return _save(fig, out / f"confusion_{task}.png")


def pr_roc(curve: dict, task: str, out: Path) -> Path:
    """Precision-recall and ROC curves, one vs rest, side by side in one picture (one legend)."""
    y, proba, names = curve["y"], curve["proba"], curve["names"]
    fig, (pr, roc) = plt.subplots(1, 2, figsize=(11, 5))
    for c in np.unique(y):
        hit = (y == c).astype(int)
        prec, rec, _ = precision_recall_curve(hit, proba[:, c])
        pr.plot(rec, prec)
        fpr, tpr, _ = roc_curve(hit, proba[:, c])
        roc.plot(fpr, tpr, label=names[c])
    roc.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    for ax, x, y_label, title in ((pr, "recall", "precision", "precision-recall"),
                                  (roc, "false positive rate", "true positive rate", "ROC")):
        ax.set_xlabel(x)
        ax.set_ylabel(y_label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    roc.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{task} probe (linear): one vs rest")
    # fixed margins: the labels are the same in every such picture, and a tight layout costs a whole extra drawing
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.88, wspace=0.22)
    return _save(fig, out / f"pr_roc_{task}.png", tight=False)


def reliability(curve: dict, task: str, out: Path, bins: int = ECE_BINS) -> Path:
    conf, correct = curve["proba"].max(1), curve["proba"].argmax(1) == curve["y"]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
    acc = [correct[idx == b].mean() if (idx == b).any() else np.nan for b in range(bins)]
    count = [(idx == b).sum() for b in range(bins)]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    centers = (edges[:-1] + edges[1:]) / 2
    ax.bar(centers, acc, width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    for x, a, n in zip(centers, acc, count):
        if n:
            ax.text(x, min(1.0, a + 0.02), str(n), ha="center", fontsize=7)
    ax.set_xlabel("confidence (max class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{task} probe (linear): reliability\n(numbers: clips per bin)")
    ax.legend(fontsize=8, loc="upper left")
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.88)  # fixed margins, as pr_roc's
    return _save(fig, out / f"reliability_{task}.png", tight=False)


def group_bars(table: dict[str, dict[str, float]], title: str, name: str, out: Path) -> Path:
    groups = list(table)
    keys = ["static", "recon", "pred", "copy_frame3"]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) + 2), 4))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar(np.arange(len(groups)) + k * width, [table[g][key] for g in groups], width,
               label="frame 3 copied as frame 4 (shortcut)" if key == "copy_frame3" else f"loss_{key}")
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean squared error (normalised pixels)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / name)


def frame_bars(values: list[float], copy: float, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.bar(["frame 1\n(masked)", "frame 2\n(masked)", "frame 3\n(masked)", "frame 4\n(predicted)"], values,
           color=["#6a9fd4"] * 3 + ["#d4836a"])
    ax.axhline(copy, color="k", ls="--", label="frame 3 copied as frame 4")
    ax.set_ylabel("mean squared error (normalised pixels)")
    ax.set_title("Validation error by frame position")
    ax.legend(fontsize=8)
    return _save(fig, out / "error_by_frame.png")


def _img(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def example_panel(model, examples: dict, captions: list[str], title: str, name: str, out: Path) -> Path:
    """Per clip: the 4 input frames, the mask, frames 1-3 reconstructed (visible patches kept) and frame 4
    predicted, beside the truth."""
    clips = denormalize(examples["clips"])  # [N, 4, 3, H, W]
    pred = model.prediction_pixels(examples["clips"], examples["pred"])  # [N, L, 4, V] in normalised pixel space
    recon = denormalize(model.unpatchify(pred))
    mask = examples["mask"]  # [N, L], 1 = removed
    p = model.patch_size
    g = int(mask.shape[1] ** 0.5)
    n, size = clips.shape[0], clips.shape[-1]
    heads = ["frame 1", "frame 2", "frame 3", "frame 4 (truth)", "mask", "recon 1", "recon 2", "recon 3",
             "pred frame 4", "|error| frame 4"]
    gap = max(2, size // 12)
    # One image of tiles with white gaps, drawn on one axes: 40 small axes cost seconds per panel in matplotlib.
    canvas = np.ones((n * (size + gap) - gap, len(heads) * (size + gap) - gap, 3), dtype=np.float32)
    for i in range(n):
        m = mask[i].reshape(g, g).repeat_interleave(p, 0).repeat_interleave(p, 1)[None]  # [1, H, W]
        shown = [clips[i, t] for t in range(4)] + [1 - m.expand(3, -1, -1).float()]
        shown += [clips[i, t] * (1 - m) + recon[i, t] * m for t in range(3)]
        shown += [recon[i, 3], (recon[i, 3] - clips[i, 3]).abs().mean(0, keepdim=True).expand(3, -1, -1) * 3]
        for j, img in enumerate(shown):
            top, left = i * (size + gap), j * (size + gap)
            canvas[top:top + size, left:left + size] = _img(img)
    fig, ax = plt.subplots(figsize=(15, 1.7 * n + 0.6))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for j, head in enumerate(heads):
        ax.text(j * (size + gap) + size / 2, -gap, head, ha="center", va="bottom", fontsize=8)
    for i, caption in enumerate(captions):
        ax.text(-gap, i * (size + gap) + size / 2, caption, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{title} (mask: black = removed patch)")
    fig.subplots_adjust(left=0.12, right=0.99, top=1 - 0.6 / (1.7 * n + 0.6), bottom=0.01)
    return _save(fig, out / name, tight=False)


def robustness_plot(rows: list[dict], metric: str, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in sorted({r["perturbation"] for r in rows if r["perturbation"] != "clean"}):
        pts = sorted((r["strength"], r[metric]) for r in rows if r["perturbation"] == kind and metric in r)
        ax.plot(*zip(*pts), marker="o", label=kind)
    clean = next(r[metric] for r in rows if r["perturbation"] == "clean")
    ax.axhline(clean, color="k", ls="--", label="clean")
    ax.set_xlabel("strength (crop/scale: fraction kept; noise: sigma; brightness: factor)")
    ax.set_ylabel(metric)
    ax.set_title(f"Robustness: {metric} under input perturbations")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.98, bottom=0.13, top=0.91)  # fixed margins, as pr_roc's
    return _save(fig, out / f"robustness_{metric.replace('/', '_')}.png", tight=False)
