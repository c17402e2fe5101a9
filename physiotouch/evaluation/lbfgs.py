"""L-BFGS on many independent problems at once (the probe fits of `logistic`: every fold, inner fold and grid value
of a task solved together), each with its own curvature pairs, step length and stopping rule."""

from __future__ import annotations

import numpy as np
import torch

FTOL = 64 * float(np.finfo(float).eps)  # a problem also stops at this relative decrease of its objective (scipy's ftol
# as scikit-learn's lbfgs sets it)


def batched_lbfgs(f_and_grad, x0: torch.Tensor, max_iter: int, gtol: float, history: int = 10) -> torch.Tensor:
    """L-BFGS on P independent problems at once (rows of x0 [P, n]): each keeps its own curvature pairs, step
    length (backtracking to the Armijo condition), step count and stopping rule, scipy's as scikit-learn calls it
    (every |gradient| < gtol, or a relative decrease < FTOL, or max_iter steps).
    `f_and_grad(x, which) -> (f, gradient, the stopping rule's max |gradient|)` for the problems `which` (indices into
    the batch, or None: all) at their rows of `x` [len(which), n] (the problems may be solved in other coordinates than
    the ones their stopping rule is stated in). Only the problems still moving are computed, and in a backtracking
    step only those whose trial step failed: a batch's problems converge after very different numbers of steps (a
    weakly regularised one can take ten times its neighbours'), and the finished ones would otherwise be computed to
    the end.
    Why our own: torch's LBFGS treats its parameters as one problem (one step length, shared curvature pairs), so
    a batch converges only as fast as its worst problem allows, and it needs several times scikit-learn's steps."""
    x = x0.clone()
    f, g, gmax = f_and_grad(x, None)
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, 1 / s·y), oldest first
    live = torch.arange(len(x))  # the rows still moving; the loop works on theirs alone (the two-loop recursion over
    # all rows cost as much as the products once most problems had finished)
    x_l, f_l, g_l, steps = x.clone(), f, g, torch.zeros(len(x), dtype=torch.long)
    moving = gmax >= gtol
    while True:
        if not moving.all():  # the finished problems leave the batch
            ended = ~moving
            x[live[ended]] = x_l[ended]
            live, x_l, f_l, g_l, steps = (t[moving] for t in (live, x_l, f_l, g_l, steps))
            pairs = [(s[moving], y[moving], rho[moving]) for s, y, rho in pairs]
        if not len(live):
            break
        q, alphas = g_l.clone(), []
        for s, y, rho in reversed(pairs):  # two-loop recursion, per problem (fused ops: these are many and small)
            a = rho * torch.linalg.vecdot(s, q)
            q.addcmul_(a[:, None], y, value=-1.0)
            alphas.append(a)
        if pairs:
            s, y, _ = pairs[-1]
            gamma = torch.linalg.vecdot(s, y) / torch.linalg.vecdot(y, y).clamp_min(1e-300)
            q *= torch.where(gamma > 0, gamma, torch.ones_like(gamma))[:, None]
        else:
            q /= g_l.abs().sum(1).clamp_min(1.0)[:, None]  # the first step at most 1 in the l1 norm
        for (s, y, rho), a in zip(pairs, reversed(alphas)):
            q.addcmul_((a - rho * torch.linalg.vecdot(y, q))[:, None], s)
        d = -q
        slope = (g_l * d).sum(1)
        d = torch.where((slope < 0)[:, None], d, -g_l)  # not a descent direction: steepest descent
        slope = (g_l * d).sum(1)
        t = torch.ones(len(live), dtype=x.dtype)
        x_new, f_new, g_new, gmax_new = x_l.clone(), f_l.clone(), g_l.clone(), torch.zeros_like(f_l)
        trying = torch.ones(len(live), dtype=torch.bool)
        for _ in range(12):  # backtracking, per problem: a problem stops trying once its step is accepted
            if trying.all():
                x_new = x_l + t[:, None] * d
                f_new, g_new, gmax_new = f_and_grad(x_new, None if len(live) == len(x) else live)
            else:
                w = torch.nonzero(trying)[:, 0]
                x_new[w] = x_l[w] + t[w, None] * d[w]
                f_new[w], g_new[w], gmax_new[w] = f_and_grad(x_new[w], live[w])
            ok = f_new <= f_l + 1e-4 * t * slope
            trying &= ~ok
            if not trying.any():
                break
            t = torch.where(trying, t * 0.5, t)
        s, y = x_new - x_l, g_new - g_l
        sy = (s * y).sum(1)
        pairs.append((s, y, torch.where(sy > 1e-12, 1 / sy.clamp_min(1e-300), torch.zeros_like(sy))))
        pairs = pairs[-history:]
        decrease = (f_l - f_new) / torch.maximum(torch.maximum(f_l.abs(), f_new.abs()), torch.ones_like(f_l))
        x_l, f_l, g_l, steps = x_new, f_new, g_new, steps + 1
        moving = (gmax_new >= gtol) & (decrease > FTOL) & (steps < max_iter)
    return x
