"""Probe fits in batches: every fold, every regularisation value and every inner cross-validation fit of one task
and one feature set solved together, in torch (and of every task with the same labels: the object probe and the
leave-one-sensor-out probes, `tuned.fit_tuned_together`). The batched L-BFGS itself is `lbfgs.py`.

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

from dataclasses import dataclass

import numpy as np
import torch

from .lbfgs import batched_lbfgs

GTOL = 1e-4  # scikit-learn's LogisticRegression tol: its lbfgs stops at this gradient (max |component|). The inner
# cross-validation's fits use it too: a looser one (1e-3, tried) chose other C values than scikit-learn. A tighter one
# (1e-5) is not reachable in float32 on some pixel-feature fits: they ran to max_iter (minutes per evaluation).
EXP_FLOOR = -50.0  # e^-50 ~ 2e-22: far from float32's subnormals even after the fits' weights (see f_and_grad)
GATHER_CLASSES = 8  # from this many classes on, each logistic fit's products run over its own clips only (measured:
# 24 classes, 1.6x faster on the model's features, 1.4x on raw pixels; 3-5 classes, 2.3x slower on raw pixels)
GATHER_MAX_VALUES = 2**27  # ... while the gathered copies [fits, clips, features] hold at most this many values (512 MB
# in float32; the built-in data's largest batch holds ~2e7): a large real data set keeps the shared product


# --- linear probes ----------------------------------------------------------------------------------------------
def _standardise(x: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per fit (rows of `masks`, 0/1 over clips): mean and scale of its clips, as StandardScaler (a constant
    feature keeps scale 1)."""
    n = masks.sum(1, keepdim=True)
    mu = masks @ x / n
    var = (masks @ (x * x) / n - mu * mu).clamp_min(0)
    sd = var.sqrt()
    return mu, torch.where(sd < 10 * torch.finfo(x.dtype).eps * mu.abs().clamp_min(1), torch.ones_like(sd), sd)


@dataclass
class Rotated:
    """One feature set standardised over all clips and rotated to its principal axes, once for all its fits.
    Pixel features are strongly correlated, so the logistic objective is badly conditioned in their own
    coordinates (hundreds of L-BFGS steps); in these, rescaled per C, far fewer suffice. It changes the path to the
    optimum, never the optimum."""
    xs: torch.Tensor  # [N, D] standardised over all clips
    x: torch.Tensor  # [N, D] the same, rotated
    Q: torch.Tensor  # [D, D] principal axes
    e: torch.Tensor  # [D] variance along each
    mu: torch.Tensor  # [D] mean over all clips
    sd: torch.Tensor  # [D] scale over all clips

    @classmethod
    def of(cls, x: np.ndarray, dtype=torch.float32) -> "Rotated":
        xt = torch.as_tensor(x, dtype=torch.float64)
        mu, sd = _standardise(xt, torch.ones(1, len(xt), dtype=xt.dtype))
        xs = (xt - mu) / sd
        e, Q = torch.linalg.eigh(xs.T @ xs / len(xt))
        return cls(*(t.to(dtype) for t in (xs, xs @ Q, Q, e.clamp_min(0), mu[0], sd[0])))


def logistic_fits(rot: Rotated, y: np.ndarray, classes: int, fits: list[np.ndarray], C: float, max_iter: int,
                  init: tuple | None = None, gtol: float = GTOL) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Multinomial logistic regressions, one per fit (its clips), at one C, solved together (`batched_lbfgs`). Each
    problem is scikit-learn's: mean cross-entropy + ‖W‖² / (2·C·n), W on the fit's own standardised features,
    intercept free, stopped by its rule on W's gradient; a fit whose clips show two classes is scikit-learn's binary
    form (its penalty doubled: softmax over two classes with W₁ = −W₂ is the sigmoid of w = W₂ − W₁).
    Solved for A = d·Z (logits = (rot.x − the fit's mean) @ A + c; W = the fit's scale ratio · Q A), d ~ the
    inverse square-root curvature along each principal axis.
    -> (V [P, D, K], c [P, K]) with logits = x @ V + c on the raw features (−inf for classes a fit never saw), and
    (A, c) to warm-start another C or fit from."""
    P, dt = len(fits), rot.x.dtype
    rows = np.unique(np.concatenate(fits))  # the clips some fit uses (a LoSO probe's never include a held-out
    # sensor's): the others weigh nothing in any problem, so the products skip them
    position = np.full(len(rot.x), -1)
    position[rows] = np.arange(len(rows))
    xs, xr = rot.xs[rows], rot.x[rows]
    n_clips, dim = xs.shape
    masks = torch.zeros(P, n_clips, dtype=dt)
    for p, idx in enumerate(fits):
        masks[p, position[idx]] = 1.0
    n = masks.sum(1)
    ratio = _standardise(xs, masks)[1]  # [P, D] each fit's feature scales against the global ones
    centre_s = masks @ xs / n[:, None]  # [P, D] each fit's mean: its features centred on their own mean, as
    # scikit-learn's are (an off-centre fit couples weights and intercept, and converges slowly)
    centre = centre_s @ rot.Q  # the same, rotated
    target = torch.as_tensor(y[rows]).long().clamp_min(0)
    onehot = torch.nn.functional.one_hot(target, classes).to(dt)
    present = (masks @ onehot) > 0
    reg = C * n / torch.where(present.sum(1) == 2, 2.0, 1.0).to(dt)  # ‖W‖² / (2·reg) per problem
    absent = torch.where(present, 0.0, -1e30).to(dt)  # at the floor below (−inf slows the softmax down)
    # The clips each fit's products run over: with many classes, each fit's own clips gathered [P, m, D] (padded with
    # its first clip at weight 0): a fit uses half to four fifths of the clips, and products over all of them with the
    # others weighted 0 cost up to twice the arithmetic. With few classes a product per fit is too thin to run
    # fast (reading P copies of the clips for a few columns each), so all fits share one product over all clips.
    m = max(len(idx) for idx in fits)
    gathered = classes >= GATHER_CLASSES and P * m * dim <= GATHER_MAX_VALUES
    if gathered:
        gather = torch.as_tensor(np.stack([np.concatenate([position[idx], np.full(m - len(idx), position[idx[0]])])
                                           for idx in fits]))
        valid = torch.arange(m)[None, :] < torch.as_tensor([len(idx) for idx in fits])[:, None]
        xs_fit = xs[gather]  # [P, m, D]
        weight = valid.to(dt) / n[:, None]  # [P, m]
        target_fit = target[gather][:, :, None]  # [P, m, 1]
    else:
        xs_fit = None
        weight = masks / n[:, None]  # [P, N]
        target_fit = target[None, :, None].expand(P, -1, 1)
    # [P, D]: along each axis, each fit's own curvature: its variance there and the penalty's weight there
    variance = (masks @ (xr * xr) / n[:, None] - centre * centre).clamp_min(0)
    d = 1 / torch.sqrt(0.25 * variance + (ratio * ratio) @ (rot.Q * rot.Q) / reg[:, None])
    penalty = (ratio * ratio / reg[:, None])[:, :, None]  # [P, D, 1]: ‖W‖² / (2·reg) = Σ penalty · B² / 2
    size = dim * classes

    def flat(t: torch.Tensor) -> torch.Tensor:  # [p, D, K] -> [D, p·K]
        return t.permute(1, 0, 2).reshape(dim, -1)

    def unflat(t: torch.Tensor) -> torch.Tensor:  # [D, p·K] -> [p, D, K]
        return t.reshape(dim, -1, classes).permute(1, 0, 2)

    def f_and_grad(theta: torch.Tensor, which: torch.Tensor | None):
        """Objectives, gradients in (Z, c) and scikit-learn's stopping measure of the problems `which` (None: all),
        written out (autograd's overhead costs more than the arithmetic at these sizes); fits × their clips ×
        classes laid out [p, m, K]. The products run on the standardised features with B = Q A (W = the fit's scale
        ratio · B): two rotations per step."""
        pick = (lambda t: t) if which is None else (lambda t: t[which])
        d_, centre_, absent_, ratio_, penalty_, weight_, picked = (
            pick(t) for t in (d, centre_s, absent, ratio, penalty, weight, target_fit))
        x_ = pick(xs_fit) if gathered else xs
        p = len(theta)
        A = d_[:, :, None] * theta[:, :size].reshape(p, dim, classes)
        c = theta[:, size:]
        B = unflat(rot.Q @ flat(A))
        bias = (c - torch.einsum("pd,pdk->pk", centre_, B) + absent_)[:, None, :]
        # The log-softmax written out, in place over [p, m, K] (each pass over it costs more than the products for
        # the model's few features). Terms below e^EXP_FLOOR count as e^EXP_FLOOR: subnormal floats (exp's results
        # below ~e^-87) take the CPU's slow path, 10-50x the time of a whole step; beside the term e^0 they change
        # nothing a float32 can hold.
        for shift in ("true class", "largest"):
            logits = (torch.baddbmm(bias, x_, B) if gathered else
                      torch.addmm(bias.reshape(1, -1), x_, flat(B)).view(len(x_), p, classes).transpose(0, 1))
            # each clip's logits relative to its true class's (a gather; the largest is a slow reduction over the
            # short class axis), unless a trial step of the line search makes e^(another class's lead) overflow
            logits.sub_(logits.gather(2, picked) if shift == "true class" else logits.amax(2, keepdim=True))
            z_true = logits.gather(2, picked)[..., 0]
            ez = logits.clamp_min_(EXP_FLOOR).exp_()
            total = ez.sum(2, keepdim=True)
            if torch.isfinite(total).all():
                break
        ce = total.log()[..., 0] - z_true
        f = (weight_ * ce).sum(1) + (penalty_ * B * B).sum((1, 2)) / 2
        G = ez.mul_(weight_[:, :, None] / total).scatter_add_(2, picked, -weight_[:, :, None])  # weight·(p − onehot)
        g_c = G.sum(1)
        xg = torch.bmm(x_.transpose(1, 2), G) if gathered else unflat(x_.T @ G.transpose(0, 1).reshape(len(x_), -1))
        grad_b = xg - centre_[:, :, None] * g_c[:, None, :] + penalty_ * B
        grad_w = grad_b / ratio_[:, :, None]  # c is scikit-learn's intercept: no correction
        gmax = torch.maximum(grad_w.abs().amax((1, 2)), g_c.abs().amax(1))
        grad_a = unflat(rot.Q.T @ flat(grad_b))
        return f, torch.cat([(d_[:, :, None] * grad_a).reshape(p, size), g_c], 1), gmax

    if init is None:
        theta0 = torch.zeros(P, size + classes, dtype=dt)
    else:
        theta0 = torch.cat([(init[0] / d[:, :, None]).reshape(P, size), init[1]], 1)
    theta = batched_lbfgs(f_and_grad, theta0, max_iter, gtol)
    A = d[:, :, None] * theta[:, :size].reshape(P, dim, classes)
    c = theta[:, size:]
    V = unflat(rot.Q @ flat(A)) / rot.sd[None, :, None]  # rot.x = (x − μ) / sd · Q
    c_raw = c - torch.einsum("pd,pdk->pk", centre, A) - torch.einsum("d,pdk->pk", rot.mu, V)
    return V, c_raw.masked_fill(~present, float("-inf")), (A, c)


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
