"""The linear probes' multinomial logistic regressions, many at once (`probe_fits` holds the ridge and k-NN fits,
`tuned` the protocol that asks for these): every fit of one task and one feature set, at one C each
(`logistic_fits`) or along the whole grid of C (`logistic_path`), solved by the batched L-BFGS of `lbfgs.py`.

Each problem is scikit-learn's: mean cross-entropy + ‖W‖² / (2·C·n), W on the fit's own standardised features,
intercept free, stopped by its rule on W's gradient; a fit whose clips show two classes is scikit-learn's binary form
(its penalty doubled: softmax over two classes with W₁ = −W₂ is the sigmoid of w = W₂ − W₁).
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


def standardise(x: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
        mu, sd = standardise(xt, torch.ones(1, len(xt), dtype=xt.dtype))
        xs = (xt - mu) / sd
        e, Q = torch.linalg.eigh(xs.T @ xs / len(xt))
        return cls(*(t.to(dtype) for t in (xs, xs @ Q, Q, e.clamp_min(0), mu[0], sd[0])))


def logistic_fits(rot: Rotated, y: np.ndarray, classes: int, fits: list[np.ndarray], C, max_iter: int,
                  init: tuple | None = None, gtol: float = GTOL) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """One regression per fit (its clips), at C (one value, or one per fit), solved together, from `init` (A, c) or
    zero. -> (V [P, D, K], c [P, K]) with logits = x @ V + c on the raw features (−inf for classes a fit never
    saw), and (A, c) to warm-start another C or fit from."""
    batch = LogisticBatch(rot, y, classes, fits)
    batch.set_C(torch.as_tensor(np.broadcast_to(np.asarray(C, float), len(fits)).copy(), dtype=rot.x.dtype))
    A, c = batch.from_theta(batched_lbfgs(batch.f_and_grad, batch.to_theta(init or batch.zero()), max_iter, gtol))
    return (*batch.raw(A, c), (A, c))


def logistic_path(rot: Rotated, y: np.ndarray, classes: int, fits: list[np.ndarray], values: list[float],
                  max_iter: int, gtol: float = GTOL) -> list[tuple[torch.Tensor, torch.Tensor, tuple]]:
    """Every fit at every C of `values` (ascending), value after value, each started from the fits' solutions at
    the previous ones (`along_path`). -> per value, as `logistic_fits`."""
    batch = LogisticBatch(rot, y, classes, fits)
    out, path = [], []
    for value in values:
        batch.set_C(torch.full((len(fits),), value, dtype=rot.x.dtype))
        start = batch.to_theta(along_path(path, value) or batch.zero())
        A, c = batch.from_theta(batched_lbfgs(batch.f_and_grad, start, max_iter, gtol))
        path.append((value, (A, c)))
        out.append((*batch.raw(A, c), (A, c)))
    return out


def along_path(path: list[tuple[float, tuple]], value: float) -> tuple | None:
    """Where a fit's solution at C = `value` likely lies, from its solutions at the path's last two values
    (C, (A, c)): their straight line in log C carried on to `value` (measured on the pixel controls' 24-class fits:
    a fifth fewer L-BFGS steps than starting from the last solution alone). Only a start: each fit still runs to
    its own stopping rule."""
    if len(path) < 2:
        return path[-1][1] if path else None
    (c0, s0), (c1, s1) = path[-2:]
    beta = float(np.log(value / c1) / np.log(c1 / c0))
    return tuple(b + beta * (b - a) for a, b in zip(s0, s1))


class LogisticBatch:
    """The regressions of one set of fits on one feature set (`Rotated`), each at its own C (`set_C`: a path of C
    is solved value after value in one batch; refits each at their chosen value). Solved for theta = A / d
    (logits = (rot.x − the fit's mean) @ A + c; W = the fit's scale ratio · Q A), d ~ the inverse square-root
    curvature along each principal axis at that C."""

    def __init__(self, rot: Rotated, y: np.ndarray, classes: int, fits: list[np.ndarray]):
        P, dt = len(fits), rot.x.dtype
        self.rot, self.classes = rot, classes
        rows = np.unique(np.concatenate(fits))  # the clips some fit uses (a LoSO probe's never include a held-out
        # sensor's): the others weigh nothing in any problem, so the products skip them
        position = np.full(len(rot.x), -1)
        position[rows] = np.arange(len(rows))
        xs, xr = rot.xs[rows], rot.x[rows]
        self.dim = dim = xs.shape[1]
        masks = torch.zeros(P, len(rows), dtype=dt)
        for p, idx in enumerate(fits):
            masks[p, position[idx]] = 1.0
        n = masks.sum(1)
        self.ratio = standardise(xs, masks)[1]  # [P, D] each fit's feature scales against the global ones
        self.centre_s = masks @ xs / n[:, None]  # [P, D] each fit's mean: its features centred on their own mean,
        # as scikit-learn's are (an off-centre fit couples weights and intercept, and converges slowly)
        self.centre = self.centre_s @ rot.Q  # the same, rotated
        target = torch.as_tensor(y[rows]).long().clamp_min(0)
        self.present = (masks @ torch.nn.functional.one_hot(target, classes).to(dt)) > 0
        self.reg_per_C = n / torch.where(self.present.sum(1) == 2, 2.0, 1.0).to(dt)  # ‖W‖² / (2·C·this) per problem
        self.absent = torch.where(self.present, 0.0, -1e30).to(dt)  # at the floor below (−inf slows the softmax)
        # [P, D]: along each axis, each fit's own variance and the penalty's weight there (per unit of 1 / reg)
        self.variance = (masks @ (xr * xr) / n[:, None] - self.centre * self.centre).clamp_min(0)
        self.penalty_axes = (self.ratio * self.ratio) @ (rot.Q * rot.Q)
        # The clips each fit's products run over: with many classes, each fit's own clips gathered [P, m, D] (padded
        # with its first clip at weight 0): a fit uses half to four fifths of the clips, and products over all of them
        # with the others weighted 0 cost up to twice the arithmetic. With few classes a product per fit is too thin to
        # run fast (reading P copies of the clips for a few columns each), so all fits share one product over all.
        m = max(len(idx) for idx in fits)
        self.gathered = classes >= GATHER_CLASSES and P * m * dim <= GATHER_MAX_VALUES
        if self.gathered:
            gather = torch.as_tensor(np.stack([np.concatenate([position[idx], np.full(m - len(idx), position[idx[0]])])
                                               for idx in fits]))
            valid = torch.arange(m)[None, :] < torch.as_tensor([len(idx) for idx in fits])[:, None]
            self.x = xs[gather]  # [P, m, D]
            self.weight = valid.to(dt) / n[:, None]  # [P, m]
            self.target = target[gather][:, :, None]  # [P, m, 1]
        else:
            self.x = xs
            self.weight = masks / n[:, None]  # [P, N]
            self.target = target[None, :, None].expand(P, -1, 1)
        self._picked: tuple = (None, self.x)  # (rows, their gathered clips): see `clips`

    def set_C(self, C: torch.Tensor) -> None:
        """Each fit's C [P]: its penalty and its coordinates' scales d."""
        reg = C * self.reg_per_C
        self.penalty = (self.ratio ** 2 / reg[:, None])[:, :, None]  # [P, D, 1]: ‖W‖² / (2·reg) = Σ penalty · B² / 2
        self.d = 1 / torch.sqrt(0.25 * self.variance + self.penalty_axes / reg[:, None])  # [P, D]

    def zero(self) -> tuple[torch.Tensor, torch.Tensor]:
        P, dt = len(self.ratio), self.ratio.dtype
        return torch.zeros(P, self.dim, self.classes, dtype=dt), torch.zeros(P, self.classes, dtype=dt)

    def to_theta(self, state: tuple) -> torch.Tensor:
        """(A, c) -> theta at the current C."""
        return torch.cat([(state[0] / self.d[:, :, None]).reshape(len(self.d), -1), state[1]], 1)

    def from_theta(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.dim * self.classes
        return self.d[:, :, None] * theta[:, :size].reshape(len(theta), self.dim, self.classes), theta[:, size:]

    def raw(self, A: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) -> (V, c) on the raw features: rot.x = (x − μ) / sd · Q."""
        V = self._unflat(self.rot.Q @ self._flat(A)) / self.rot.sd[None, :, None]
        c_raw = c - torch.einsum("pd,pdk->pk", self.centre, A) - torch.einsum("d,pdk->pk", self.rot.mu, V)
        return V, c_raw.masked_fill(~self.present, float("-inf"))

    def _flat(self, t: torch.Tensor) -> torch.Tensor:  # [p, D, K] -> [D, p·K]
        return t.permute(1, 0, 2).reshape(self.dim, -1)

    def _unflat(self, t: torch.Tensor) -> torch.Tensor:  # [D, p·K] -> [p, D, K]
        return t.reshape(self.dim, -1, self.classes).permute(1, 0, 2)

    def clips(self, which: torch.Tensor | None) -> torch.Tensor:
        """The gathered clips of the rows `which` (None: all). The rows being computed change rarely (a problem
        ends, a trial step fails), and a copy of their clips costs about a third of a step's products: the last
        one is kept."""
        if which is None:
            return self.x
        if self._picked[0] is None or not torch.equal(self._picked[0], which):
            self._picked = which, self.x[which]
        return self._picked[1]

    def f_and_grad(self, theta: torch.Tensor, which: torch.Tensor | None):
        """Objectives, gradients in theta and scikit-learn's stopping measure of the rows `which` (None: all),
        written out (autograd's overhead costs more than the arithmetic at these sizes); fits × their clips ×
        classes laid out [p, m, K]. The products run on the standardised features with B = Q A (W = the fit's scale
        ratio · B): two rotations per step."""
        pick = (lambda t: t) if which is None else (lambda t: t[which])
        d, centre, absent, ratio, penalty, weight, target = (
            pick(t) for t in (self.d, self.centre_s, self.absent, self.ratio, self.penalty, self.weight, self.target))
        x = self.clips(which) if self.gathered else self.x
        p, size, K = len(theta), self.dim * self.classes, self.classes
        A = d[:, :, None] * theta[:, :size].reshape(p, self.dim, K)
        c = theta[:, size:]
        B = self._unflat(self.rot.Q @ self._flat(A))
        bias = (c - torch.einsum("pd,pdk->pk", centre, B) + absent)[:, None, :]
        # The log-softmax written out, in place over [p, m, K] (each pass over it costs more than the products for
        # the model's few features). Terms below e^EXP_FLOOR count as e^EXP_FLOOR: subnormal floats (exp's results
        # below ~e^-87) take the CPU's slow path, 10-50x the time of a whole step; beside the term e^0 they change
        # nothing a float32 can hold.
        for shift in ("true class", "largest"):
            logits = (torch.baddbmm(bias, x, B) if self.gathered else
                      torch.addmm(bias.reshape(1, -1), x, self._flat(B)).view(len(x), p, K).transpose(0, 1))
            # each clip's logits relative to its true class's (a gather; the largest is a slow reduction over the
            # short class axis), unless a trial step of the line search makes e^(another class's lead) overflow
            logits.sub_(logits.gather(2, target) if shift == "true class" else logits.amax(2, keepdim=True))
            z_true = logits.gather(2, target)[..., 0]
            ez = logits.clamp_min_(EXP_FLOOR).exp_()
            total = ez.sum(2, keepdim=True)
            if torch.isfinite(total).all():
                break
        ce = total.log()[..., 0] - z_true
        f = (weight * ce).sum(1) + (penalty * B * B).sum((1, 2)) / 2
        G = ez.mul_(weight[:, :, None] / total).scatter_add_(2, target, -weight[:, :, None])  # weight·(p − onehot)
        g_c = G.sum(1)
        # x^T G as (G^T x)^T: the product with the clips' axis inner and both operands read along rows, 2x faster
        xg = (torch.bmm(G.transpose(1, 2), x).transpose(1, 2) if self.gathered else
              self._unflat((G.transpose(0, 1).reshape(len(x), -1).T @ x).T))
        grad_b = xg - centre[:, :, None] * g_c[:, None, :] + penalty * B
        grad_w = grad_b / ratio[:, :, None]  # c is scikit-learn's intercept: no correction
        gmax = torch.maximum(grad_w.abs().amax((1, 2)), g_c.abs().amax(1))
        grad_a = self._unflat(self.rot.Q.T @ self._flat(grad_b))
        return f, torch.cat([(d[:, :, None] * grad_a).reshape(p, size), g_c], 1), gmax
