"""The tuned probe protocol: each probe's regularisation (C, α or k) chosen by inner cross-validation on its fit
clips, grouped by what the outer folds keep apart, separately for every feature set (the model and each control).

`fit_tuned(task, x, kind, cfg)` runs it for one task and one feature set and returns a `FittedProbe` that predicts
each outer fold's clips from any features (the robustness sweep tests clean fits on perturbed features). The fits are
batched in torch (`probe_fits`, the default) or made one by one by scikit-learn (`backend: sklearn`, the oracle the
tests compare with, and the old path the throughput benchmark times).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import probe_fits
from .logistic import logistic_fits, logistic_path


def inner_folds(groups: np.ndarray, k_max: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions (into `groups`) of K = min(k_max, groups) folds: the sorted groups dealt in turn."""
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        return []
    k = min(k_max, len(names))
    lookup = {g: i % k for i, g in enumerate(names)}
    fold = np.array([lookup[g] for g in groups.tolist()])
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


def grid(kind: str, regression: bool, cfg) -> tuple[str, list]:
    """(the parameter's name, its values, strongest regularisation first: ties go to the first)."""
    if kind == "knn":
        return "k", sorted({int(k) for k in cfg.k_grid}, reverse=True)
    if regression:
        return "alpha", sorted({float(a) for a in cfg.alpha_grid}, reverse=True)
    return "C", sorted({float(c) for c in cfg.C_grid})


def default(kind: str, regression: bool, cfg):
    return cfg.knn_k if kind == "knn" else cfg.ridge_alpha if regression else cfg.C


@dataclass
class FittedProbe:
    kind: str
    regression: bool
    classes: int | None
    params: list = field(default_factory=list)  # per outer fold: what its chosen refit needs to predict
    chosen: list = field(default_factory=list)  # per outer fold: the value used
    tuned: list = field(default_factory=list)  # per outer fold: chosen by inner cross-validation (else the default)
    inner_errors: list = field(default_factory=list)  # per outer fold: the inner error of each grid value (or [])
    shared: probe_fits.SharedWork | None = None  # the features it was fit on, and the work done on them

    def predict(self, fold: int, x: np.ndarray) -> np.ndarray:
        """Outer fold `fold`'s probe on features `x` -> values [n] or class probabilities [n, classes]."""
        p = self.params[fold]
        if "sklearn" in p:
            return _sklearn_predict(p["sklearn"], x, self.classes)
        if self.kind == "knn":
            x_fit = self.shared.x[p["fit"]]
            return probe_fits.knn_predict(probe_fits.nearest(x_fit, x, p["k"]), p["y"], [p["k"]], self.classes)[0]
        return _linear_predict(torch.as_tensor(x, dtype=p["v"].dtype), p["v"], p["c"], self.regression)

    def predict_clips(self, fold: int, clips: np.ndarray) -> np.ndarray:
        """The same for clips `clips` of the features it was fit on: a k-NN probe reuses the neighbour search
        another task on the same features made for the same (fit, tested) clips."""
        p = self.params[fold]
        if "sklearn" in p:
            return self.predict(fold, self.shared.x[clips])
        if self.kind == "knn":
            neighbours = self.shared.neighbours(p["fit"], clips, p["top"])  # the same search for every task
            return probe_fits.knn_predict(neighbours, p["y"], [p["k"]], self.classes)[0]
        return _linear_predict(self.shared.xt[clips], p["v"], p["c"], self.regression)


def _linear_predict(xt: torch.Tensor, v: torch.Tensor, c: torch.Tensor, regression: bool) -> np.ndarray:
    """A linear probe's values [n], or class probabilities [n, classes], on features `xt`."""
    out = xt @ v + c
    return out.numpy() if regression else torch.softmax(out, -1).numpy()


def fit_tuned(y: np.ndarray, folds: list, groups: np.ndarray | None, classes: int | None, x: np.ndarray,
              kind: str, cfg, backend: str = "torch", shared: probe_fits.SharedWork | None = None) -> FittedProbe:
    """Every outer fold's probe, its value chosen by inner cross-validation where the fit clips hold two or more
    groups (and cfg.tune), else the configured default; then one refit per outer fold at its value. `shared`: the
    work other tasks on the same features `x` have done (decompositions, neighbours), for the torch backend."""
    return fit_tuned_together(y, [(folds, groups)], classes, x, kind, cfg, backend, shared)[0]


def fit_tuned_together(y: np.ndarray, protocols: list[tuple[list, np.ndarray | None]], classes: int | None,
                       x: np.ndarray, kind: str, cfg, backend: str = "torch",
                       shared: probe_fits.SharedWork | None = None) -> list[FittedProbe]:
    """`fit_tuned` for several tasks with the same labels `y` on the same features, each with its own (outer folds,
    groups): their fits solved in the same batches (e.g. the object probe and every leave-one-sensor-out probe, which
    all predict the object). Each fit stays its own problem: the answers are each task's alone."""
    regression = classes is None
    _, values = grid(kind, regression, cfg)
    inner = []  # (outer fold's position over all tasks, inner fold, fit clips, scored clips)
    outer, tuned = [], []  # per outer fold of every task: its fit clips; whether its fit clips could be tuned
    for folds, groups in protocols:
        k_inner = int(cfg.inner_folds) if cfg.tune and groups is not None else 0
        for fit, _ in folds:
            parts = inner_folds(groups[fit], k_inner) if k_inner >= 2 else []
            inner += [(len(outer), i, fit[a], fit[b]) for i, (a, b) in enumerate(parts)]
            outer.append(fit)
            tuned.append(bool(parts))
    if shared is not None and shared.x is not x:
        raise ValueError("fit_tuned: `shared` holds the work of other features than `x`")
    shared = shared or probe_fits.SharedWork(x)
    work = _SklearnFits(kind, x, y, classes, cfg) if backend == "sklearn" else _TorchFits(kind, shared, y, classes, cfg)
    preds = work.inner(inner, values) if inner else {}
    chosen, errors = [], []
    for o in range(len(outer)):
        if tuned[o]:
            scored = [(idx, preds[(o, i, g)]) for oo, i, _, idx in inner if oo == o for g in range(len(values))]
            errors.append(inner_errors(scored, y, regression, len(values)))
            best = min(errors[-1])
            chosen.append(values[next(g for g, e in enumerate(errors[-1]) if e <= best + 1e-12)])  # ties: strongest
        else:
            errors.append([])
            chosen.append(default(kind, regression, cfg))
    params = work.refit(outer, chosen)
    out, first = [], 0
    for folds, _ in protocols:
        mine = slice(first, first + len(folds))
        first += len(folds)
        out.append(FittedProbe(kind, regression, classes, params[mine], chosen[mine], tuned[mine], errors[mine],
                               shared))
    return out


def inner_errors(scored: list, y: np.ndarray, regression: bool, n_values: int) -> list[float]:
    """Per grid value, the pooled inner error: the misclassified fraction, or the mean squared error."""
    errors: dict[int, list] = {g: [] for g in range(n_values)}
    for g in range(n_values):
        for idx, pred in scored[g::n_values]:
            truth = y[idx]
            errors[g].append((pred - truth) ** 2 if regression else (pred.argmax(1) != truth).astype(float))
    return [float(np.concatenate(errors[g]).mean()) for g in range(n_values)]


class _TorchFits:
    """The batched fits (probe_fits, logistic): inner fits for every grid value, refits at each fold's chosen value."""

    def __init__(self, kind, shared: probe_fits.SharedWork, y, classes, cfg):
        self.kind, self.shared, self.y, self.classes, self.cfg = kind, shared, y, classes, cfg
        self.path: dict = {}  # (outer fold, value) -> the inner fits' solutions, to warm-start the refit from

    def inner(self, plans: list, values: list) -> dict:
        """-> {(f, i, g): predictions of the scored clips}."""
        preds = {}
        if self.kind == "knn":
            for f, i, fit, scored in plans:
                neighbours = self.shared.neighbours(fit, scored, max(values))
                for g, pred in enumerate(probe_fits.knn_predict(neighbours, self.y[fit], values, self.classes)):
                    preds[(f, i, g)] = pred
            return preds
        fits = [pl[2] for pl in plans]
        if self.classes is None:
            v, c = probe_fits.ridge_fits(self.shared, self.y, fits, values)
            solutions = [(v[:, g].float(), c[:, g].float()) for g in range(len(values))]
        else:
            solutions = []
            for value, (V, c, state) in zip(values, logistic_path(self.shared.rotated, self.y, self.classes, fits,
                                                                  values, self.cfg.max_iter)):
                solutions.append((V, c))
                for p, (f, _, _, _) in enumerate(plans):
                    self.path.setdefault((f, value), []).append((state[0][p], state[1][p]))
        for g, (V, c) in enumerate(solutions):
            for p, (f, i, _, scored) in enumerate(plans):
                preds[(f, i, g)] = _linear_predict(self.shared.xt[scored], V[p], c[p], self.classes is None)
        return preds

    def refit(self, fits: list, chosen: list) -> list[dict]:
        """-> per outer fold, what its probe at its chosen value needs to predict."""
        if self.kind == "knn":  # top: the grid's largest k, as the inner searches
            top = max(grid("knn", False, self.cfg)[1])
            return [{"fit": fit, "y": self.y[fit], "k": k, "top": top} for fit, k in zip(fits, chosen)]
        if self.classes is None:
            out = []
            for fit, alpha in zip(fits, chosen):
                v, c = probe_fits.ridge_fits(self.shared, self.y, [fit], [alpha])
                out.append({"v": v[0, 0].float(), "c": c[0, 0].float()})
            return out
        # one batch, each outer fold at its own value, from the mean of its inner fits' solutions there (or zero)
        rot = self.shared.rotated
        starts = [tuple(torch.stack([s[j] for s in self.path[(f, value)]]).mean(0) for j in (0, 1))
                  if (f, value) in self.path else
                  (torch.zeros(rot.x.shape[1], self.classes), torch.zeros(self.classes))
                  for f, value in enumerate(chosen)]
        V, c, _ = logistic_fits(rot, self.y, self.classes, fits, chosen, self.cfg.max_iter,
                                tuple(torch.stack([s[j] for s in starts]) for j in (0, 1)))
        return [{"v": V[f], "c": c[f]} for f in range(len(fits))]


class _SklearnFits:
    """The same fits one at a time by scikit-learn (the oracle, and the old path the benchmark times)."""

    def __init__(self, kind, x, y, classes, cfg):
        self.kind, self.x, self.y, self.classes, self.cfg = kind, x, y, classes, cfg

    def _fit(self, fit, value):
        from dataclasses import replace

        from .probes import fit_probe

        setting = "knn_k" if self.kind == "knn" else "ridge_alpha" if self.classes is None else "C"
        return fit_probe(self.kind, self.x[fit], self.y[fit], replace(self.cfg, **{setting: value}),
                         self.classes is None)

    def inner(self, plans: list, values: list) -> dict:
        return {(f, i, g): _sklearn_predict(self._fit(fit, value), self.x[scored], self.classes)
                for f, i, fit, scored in plans for g, value in enumerate(values)}

    def refit(self, fits: list, chosen: list) -> list[dict]:
        return [{"sklearn": self._fit(fit, value)} for fit, value in zip(fits, chosen)]


def _sklearn_predict(model, x: np.ndarray, classes: int | None) -> np.ndarray:
    if classes is None:
        return model.predict(x)
    proba = np.zeros((len(x), classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba
