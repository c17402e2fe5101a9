"""L-BFGS on many independent problems at once (the probe fits of `probe_fits`: every fold, inner fold and grid value
of a task solved together), each with its own curvature pairs, step length and stopping rule."""

from __future__ import annotations

import numpy as np
import torch

FTOL = 64 * float(np.finfo(float).eps)  # a problem also stops at this relative decrease of its objective (scipy's ftol
# as scikit-learn's lbfgs sets it)


def batched_lbfgs(f_and_grad, x0: torch.Tensor, max_iter: int, gtol: float, history: int = 10) -> torch.Tensor:
    """L-BFGS on P independent problems at once (rows of x0 [P, n]): each keeps its own curvature pairs, step
    length (backtracking to the Armijo condition) and stopping rule, scipy's as scikit-learn calls it (every
    |gradient| < gtol, or a relative decrease < FTOL); a finished problem stops moving.
    `f_and_grad(x, which) -> (f, gradient, the stopping rule's max |gradient|)` for the problems `which` (indices into
    the batch, or None: all) at their rows of `x` [len(which), n] (the problems may be solved in other coordinates than
    the ones their stopping rule is stated in). Only the problems still moving are evaluated, and in a backtracking
    step only those whose trial step failed: a batch's problems converge after very different numbers of steps (a
    weakly regularised one can take ten times its neighbours'), and the finished ones would otherwise be computed to
    the end.
    Why our own: torch's LBFGS treats its parameters as one problem (one step length, shared curvature pairs), so
    a batch converges only as fast as its worst problem allows, and it needs several times scikit-learn's steps."""

    def evaluate(x_at: torch.Tensor, which: torch.Tensor):
        """f, gradient and gmax of the problems `which` at x_at [P, n] (their rows; the others' are returned as 0)."""
        if len(which) == len(x_at):
            return f_and_grad(x_at, None)
        f_w, g_w, gmax_w = f_and_grad(x_at[which], which)
        f_all, g_all, gmax_all = (torch.zeros(len(x_at), *t.shape[1:], dtype=t.dtype) for t in (f_w, g_w, gmax_w))
        f_all[which], g_all[which], gmax_all[which] = f_w, g_w, gmax_w
        return f_all, g_all, gmax_all

    x = x0.clone()
    f, g, gmax = f_and_grad(x, None)
    active = gmax >= gtol
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for it in range(max_iter):
        if not active.any():
            break
        q, alphas = g.clone(), []
        for s, y, rho in reversed(pairs):  # two-loop recursion, per problem (fused ops: these are many and small)
            a = rho * torch.linalg.vecdot(s, q)
            q.addcmul_(a[:, None], y, value=-1.0)
            alphas.append(a)
        if pairs:
            s, y, _ = pairs[-1]
            gamma = torch.linalg.vecdot(s, y) / torch.linalg.vecdot(y, y).clamp_min(1e-300)
            q *= torch.where(gamma > 0, gamma, torch.ones_like(gamma))[:, None]
        else:
            q /= g.abs().sum(1).clamp_min(1.0)[:, None]  # the first step at most 1 in the l1 norm
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            q.addcmul_((a - rho * torch.linalg.vecdot(y, q))[:, None], s)
        d = torch.where(active[:, None], -q, torch.zeros_like(q))
        slope = (g * d).sum(1)
        d = torch.where((slope < 0)[:, None], d, -g * active[:, None])  # not a descent direction: steepest descent
        slope = (g * d).sum(1)
        t = torch.ones(len(x), dtype=x.dtype)
        x_new, f_new, g_new, gmax_new = x.clone(), f.clone(), g.clone(), gmax.clone()
        trying = active.clone()
        for _ in range(12):  # backtracking, per problem: a problem stops trying once its step is accepted
            which = torch.nonzero(trying)[:, 0]
            x_new[which] = x[which] + t[which, None] * d[which]
            f_try, g_try, gmax_try = evaluate(x_new, which)
            f_new[which], g_new[which], gmax_new[which] = f_try[which], g_try[which], gmax_try[which]
            ok = f_new <= f + 1e-4 * t * slope
            trying &= ~ok
            if not trying.any():
                break
            t = torch.where(trying, t * 0.5, t)
        gmax = gmax_new
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(1)
        pairs.append((s, y, torch.where(sy > 1e-12, 1 / sy.clamp_min(1e-300), torch.zeros_like(sy))))
        pairs = pairs[-history:]
        decrease = (f - f_new) / torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f))
        x, f, g = x_new, f_new, g_new
        active &= (gmax >= gtol) & (decrease > FTOL)
    return x
