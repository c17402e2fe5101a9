"""Probe fits in batches: every fold, every regularisation value and every inner cross-validation fit of one task
and one feature set solved together, in torch (and of every task with the same labels: the object probe and the
leave-one-sensor-out probes, `tuned.fit_tuned_together`). Here: what the fits of one feature set share, the ridge
regressions and k-NN; the logistic regressions are `logistic.py`, their batched L-BFGS `lbfgs.py`.

Why our own solver: scikit-learn fits one probe at a time, and a tuned protocol (each probe's C, α or k chosen by
inner cross-validation, for the model and for every control) multiplies its fits by the grid size times the inner
folds: minutes per evaluation. Here the fits of one (task, feature set) share the features, so they become one
batched problem. scikit-learn stays the oracle: `tests/test_probe_fits.py` checks that both give the same choices and
predictions (within the tolerances that test states), and `backend=sklearn` runs the same protocol fit by fit.

The protocol, per outer fold (its fit clips, its tested clips):
- the fit clips' groups (`Task.groups`: the unit the outer folds keep apart, e.g. objects or sequences) are dealt
  into `inner_folds` folds; each grid value is fit on all inner folds but one and scored on the one left out;
- the value with the best inner score (accuracy, or mean squared error for a regression; ties: the stronger
  regularisation) is refit on all the fit clips and predicts the tested clips.
A fit set with fewer than two groups cannot be tuned: the configured default is used (`chosen` says so).

Linear probes are scikit-learn's: features standardised on the fit clips, then multinomial logistic regression
(C · Σ cross-entropy + ½‖W‖², intercept free; a binary problem as scikit-learn's binary form) or ridge regression
(closed form for every α from one eigendecomposition). k-NN: cosine distance, weighted by 1/distance.
"""

from __future__ import annotations

import numpy as np
import torch

from .logistic import Rotated


class SharedWork:
    """What the probes of one feature set share across tasks: its principal axes (every logistic fit), and per set
    of fit clips its ridge decomposition and its nearest neighbours. The attribute probes of one data set all use the
    same object folds and inner folds, so seven tasks need the decompositions and neighbour searches of one; they
    depend on the clips and features only, never on the labels."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self._rotated: Rotated | None = None
        self._xt: torch.Tensor | None = None
        self._ridge: dict = {}
        self._neighbours: dict = {}
        self.decompositions = 0  # how many were made: each fit set's once, whichever task asked
        self.searches = 0  # the same for neighbour searches

    @property
    def rotated(self) -> Rotated:
        if self._rotated is None:
            self._rotated = Rotated.of(self.x)
        return self._rotated

    @property
    def xt(self) -> torch.Tensor:
        """The features as float32 (what the fitted linear probes predict from)."""
        if self._xt is None:
            self._xt = torch.as_tensor(self.x, dtype=torch.float32)
        return self._xt

    def ridge_basis(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The fit clips' mean and scale (StandardScaler's), and the eigendecomposition of their standardised
        Gram matrix: (mu, sd, eigenvalues, eigenvectors), float64."""
        key = idx.tobytes()
        if key not in self._ridge:
            sub = torch.as_tensor(self.x[idx], dtype=torch.float64)
            mu = sub.mean(0)
            sd = sub.std(0, unbiased=False)
            sd = torch.where(sd < 10 * torch.finfo(sd.dtype).eps * mu.abs().clamp_min(1), torch.ones_like(sd), sd)
            xs = (sub - mu) / sd
            self._ridge[key] = (mu, sd, *torch.linalg.eigh(xs.T @ xs))
            self.decompositions += 1
        return self._ridge[key]

    def neighbours(self, fit: np.ndarray, query: np.ndarray, top: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `top` nearest fit clips of each query clip by cosine distance -> (distances, positions in `fit`)."""
        key = (fit.tobytes(), query.tobytes())
        if key not in self._neighbours or self._neighbours[key][0].shape[1] < min(top, len(fit)):
            self._neighbours[key] = nearest(self.x[fit], self.x[query], top)
            self.searches += 1
        d, j = self._neighbours[key]
        return d[:, :top], j[:, :top]


def ridge_fits(shared: SharedWork, y: np.ndarray, fits: list[np.ndarray], alphas: list[float]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regressions on standardised features for every fit and every α from one eigendecomposition per fit.
    -> (v [P, A, D], c [P, A]) with prediction = x @ v + c on raw features."""
    yt = torch.as_tensor(y, dtype=torch.float64)
    a = torch.as_tensor(alphas, dtype=torch.float64)
    vs, cs = [], []
    for idx in fits:
        mu, sd, lam, Q = shared.ridge_basis(idx)
        xs = (torch.as_tensor(shared.x[idx], dtype=torch.float64) - mu) / sd
        ybar = yt[idx].mean()
        r = Q.T @ (xs.T @ (yt[idx] - ybar))  # [D]
        w = (Q @ (r[:, None] / (lam[:, None] + a[None, :]))).T  # [A, D] on standardised features
        v = w / sd
        vs.append(v)
        cs.append(ybar - v @ mu)
    return torch.stack(vs), torch.stack(cs)


# --- k-NN ---------------------------------------------------------------------------------------------------------
def nearest(x_fit: np.ndarray, x_query: np.ndarray, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top` nearest fit clips of each query clip by cosine distance -> (distances, positions in x_fit)."""
    xf = torch.nn.functional.normalize(torch.as_tensor(x_fit, dtype=torch.float64), dim=1)
    xq = torch.nn.functional.normalize(torch.as_tensor(x_query, dtype=torch.float64), dim=1)
    dist = (1 - xq @ xf.T).clamp_min(0)
    return dist.topk(min(top, len(x_fit)), dim=1, largest=False)


def knn_predict(neighbours: tuple[torch.Tensor, torch.Tensor], y_fit: np.ndarray, ks: list[int],
                classes: int | None) -> list[np.ndarray]:
    """Cosine k-NN weighted by 1/distance (an exact match takes all the weight), for every k from one sort
    (`neighbours`: `nearest`'s answer for at least max(ks) neighbours).
    -> per k: probabilities [n, classes], or predicted values [n] (classes None)."""
    d, j = neighbours
    yf = torch.as_tensor(y_fit)[j]
    out = []
    for k in ks:
        kk = min(k, d.shape[1])
        dk, yk = d[:, :kk], yf[:, :kk]
        exact = dk <= 0
        w = torch.where(exact.any(1, keepdim=True), exact.to(torch.float64), 1 / dk.clamp_min(1e-300))
        if classes is None:
            out.append(((w * yk.to(torch.float64)).sum(1) / w.sum(1)).numpy())
        else:
            proba = torch.zeros(len(d), classes, dtype=torch.float64)
            proba.scatter_add_(1, yk.long(), w)
            out.append((proba / proba.sum(1, keepdim=True)).numpy())
    return out
