r"""PyTorch's L-BFGS step: up to ``max_iter`` quasi-Newton iterations per ``update``.

``torch.optim.LBFGS.step(closure)`` re-evaluates the objective through the closure inside
one step (a line search, or one evaluation per iteration), so one step is a loop over
iterations, each with its own gradient, not a chain of maps of one gradient. The gbopt
counterpart takes the closure as the extra argument ``value_fn`` (optax's name for it)
and runs the same loop under ``jax.lax.while_loop``: **one** ``update`` **is one**
``step(closure)``. Its pieces: the two-loop recursion over the kept pairs (as
:func:`gbopt.lbfgs_memory`, with PyTorch's conventions), the step length, and
:func:`strong_wolfe` (PyTorch's line search, ported).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gbopt import _dtypes
from gbopt._base import GradientTransformation, expect_state, with_info


class TorchLbfgsState(NamedTuple):
    r"""State of :func:`gbopt.pytorch.LBFGS` (PyTorch's ``optimizer.state``, flattened).

    Attributes:
      func_evals: objective evaluations so far (``state["func_evals"]``).
      n_iter: iterations so far (``state["n_iter"]``).
      d: the last direction (flat).
      t: the last step length.
      old_dirs: the kept gradient differences :math:`y`, oldest first, ``(history, n)``.
      old_stps: the kept steps :math:`s`, likewise.
      ro: :math:`1 / \langle y, s \rangle` of each kept pair.
      num_old: how many pairs are kept.
      h_diag: the scale of the initial inverse Hessian, :math:`\langle y, s\rangle /
        \langle y, y\rangle` of the newest kept pair.
      prev_flat_grad: the gradient at the previous iteration.
      prev_loss: the objective at the previous iteration.
    """

    func_evals: jax.Array
    n_iter: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    num_old: jax.Array
    h_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through two points and slopes, clipped to ``bounds``."""
    if bounds is None:
        lo, hi = jnp.minimum(x1, x2), jnp.maximum(x1, x2)
    else:
        lo, hi = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    d2 = jnp.sqrt(jnp.maximum(d2_square, 0))
    min_pos = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(d2_square >= 0, jnp.minimum(jnp.maximum(min_pos, lo), hi), (lo + hi) / 2)


def strong_wolfe(obj, x, t, d, f, g, gtd, max_ls, c1=1e-4, c2=0.9, tolerance_change=1e-9):
    r"""PyTorch's strong-Wolfe line search (``torch.optim.lbfgs._strong_wolfe``), in JAX.

    Finds :math:`t` with :math:`f(x + t d) \le f + c_1 t\, g^\top d` and
    :math:`|\nabla f(x + t d)^\top d| \le -c_2\, g^\top d`: a bracketing phase (cubic
    extrapolation) then a zoom phase (cubic interpolation, safeguarded), at most
    ``max_ls`` evaluations after the first, as Nocedal & Wright, Alg. 3.5-3.6.

    Returns:
      ``(f_new, g_new, t, evaluations)``.
    """
    d_norm = jnp.max(jnp.abs(d))
    f_new, g_new = obj(x, t, d)
    gtd_new = g_new @ d
    zero = jnp.zeros_like(t)

    # Phase 1: bracket. found: 0 none, 1 two-point bracket, 2 done (one point).
    def bracket_cond(c):
        return (c["ls_iter"] < max_ls) & (c["found"] == 0)

    def bracket_body(c):
        t, f_new, g_new, gtd_new = c["t"], c["f_new"], c["g_new"], c["gtd_new"]
        armijo_fails = (f_new > f + c1 * t * gtd) | ((c["ls_iter"] > 1) & (f_new >= c["f_prev"]))
        curvature_ok = jnp.abs(gtd_new) <= -c2 * gtd
        found = jnp.where(
            armijo_fails, 1, jnp.where(curvature_ok, 2, jnp.where(gtd_new >= 0, 1, 0))
        ).astype(jnp.int32)
        min_step = t + 0.01 * (t - c["t_prev"])
        max_step = t * 10
        t_next = _cubic_interpolate(
            c["t_prev"], c["f_prev"], c["gtd_prev"], t, f_new, gtd_new, bounds=(min_step, max_step)
        )

        def move(_):
            f2, g2 = obj(x, t_next, d)
            return dict(
                c,
                t=t_next,
                t_prev=t,
                f_prev=f_new,
                g_prev=g_new,
                gtd_prev=gtd_new,
                f_new=f2,
                g_new=g2,
                gtd_new=g2 @ d,
                evals=c["evals"] + 1,
                ls_iter=c["ls_iter"] + 1,
            )

        def stop(_):
            return dict(c, found=found)

        return jax.lax.cond(found == 0, move, stop, None)

    c = jax.lax.while_loop(
        bracket_cond,
        bracket_body,
        dict(
            t=t,
            t_prev=zero,
            f_prev=f,
            g_prev=g,
            gtd_prev=gtd,
            f_new=f_new,
            g_new=g_new,
            gtd_new=gtd_new,
            evals=jnp.ones([], jnp.int32),
            ls_iter=jnp.zeros([], jnp.int32),
            found=jnp.zeros([], jnp.int32),
        ),
    )
    exhausted = c["found"] == 0  # ls_iter == max_ls: the bracket is [0, t]
    two = c["found"] == 1
    b = jnp.stack([jnp.where(exhausted, zero, c["t_prev"]), c["t"]])
    bf = jnp.stack([jnp.where(exhausted, f, c["f_prev"]), c["f_new"]])
    bg = jnp.stack([jnp.where(exhausted, g, c["g_prev"]), c["g_new"]])
    bgtd = jnp.stack([c["gtd_prev"], c["gtd_new"]])
    # a one-point bracket (found == 2) is the point twice
    b = jnp.where(two | exhausted, b, jnp.stack([c["t"], c["t"]]))
    bf = jnp.where(two | exhausted, bf, jnp.stack([c["f_new"], c["f_new"]]))
    bg = jnp.where(two | exhausted, bg, jnp.stack([c["g_new"], c["g_new"]]))
    bgtd = jnp.where(two | exhausted, bgtd, jnp.stack([c["gtd_new"], c["gtd_new"]]))
    low = jnp.where(bf[0] <= bf[1], 0, 1)

    # Phase 2: zoom.
    def zoom_cond(z):
        width_ok = jnp.abs(z["b"][1] - z["b"][0]) * d_norm >= tolerance_change
        return (~z["done"]) & (z["ls_iter"] < max_ls) & width_ok

    def zoom_body(z):
        b, bf, bg, bgtd, low = z["b"], z["bf"], z["bg"], z["bgtd"], z["low"]
        high = 1 - low
        t = _cubic_interpolate(b[0], bf[0], bgtd[0], b[1], bf[1], bgtd[1])
        hi_b, lo_b = jnp.max(b), jnp.min(b)
        eps = 0.1 * (hi_b - lo_b)
        close = jnp.minimum(hi_b - t, t - lo_b) < eps
        outside = z["insuf"] | (t >= hi_b) | (t <= lo_b)
        moved = jnp.where(jnp.abs(t - hi_b) < jnp.abs(t - lo_b), hi_b - eps, lo_b + eps)
        t = jnp.where(close & outside, moved, t)
        insuf = close & ~outside
        f_new, g_new = obj(x, t, d)
        gtd_new = g_new @ d
        worse = (f_new > f + c1 * t * gtd) | (f_new >= bf[low])
        done = ~worse & (jnp.abs(gtd_new) <= -c2 * gtd)
        swap = ~worse & ~done & (gtd_new * (b[high] - b[low]) >= 0)

        def put(arr, i, v):
            return arr.at[i].set(v)

        # worse: the new point replaces the high end
        b1 = put(b, high, t)
        bf1 = put(bf, high, f_new)
        bg1 = put(bg, high, g_new)
        bgtd1 = put(bgtd, high, gtd_new)
        low1 = jnp.where(bf1[0] <= bf1[1], 0, 1)
        # better: (optionally the old low becomes the high end), the new point the low end
        b2 = jnp.where(swap, put(b, high, b[low]), b)
        bf2 = jnp.where(swap, put(bf, high, bf[low]), bf)
        bg2 = jnp.where(swap, put(bg, high, bg[low]), bg)
        bgtd2 = jnp.where(swap, put(bgtd, high, bgtd[low]), bgtd)
        b2, bf2 = put(b2, low, t), put(bf2, low, f_new)
        bg2, bgtd2 = put(bg2, low, g_new), put(bgtd2, low, gtd_new)
        return dict(
            b=jnp.where(worse, b1, b2),
            bf=jnp.where(worse, bf1, bf2),
            bg=jnp.where(worse, bg1, bg2),
            bgtd=jnp.where(worse, bgtd1, bgtd2),
            low=jnp.where(worse, low1, low),
            done=done,
            insuf=insuf,
            evals=z["evals"] + 1,
            ls_iter=z["ls_iter"] + 1,
        )

    z = jax.lax.while_loop(
        zoom_cond,
        zoom_body,
        dict(
            b=b,
            bf=bf,
            bg=bg,
            bgtd=bgtd,
            low=low,
            done=c["found"] == 2,
            insuf=jnp.zeros([], bool),
            evals=c["evals"],
            ls_iter=c["ls_iter"],
        ),
    )
    low = z["low"]
    return z["bf"][low], z["bg"][low], z["b"][low], z["evals"]


def lbfgs_step(
    lr: float,
    max_iter: int,
    max_eval: int,
    tolerance_grad: float,
    tolerance_change: float,
    history_size: int,
    line_search_fn: str | None,
) -> GradientTransformation:
    """The transform behind :func:`gbopt.pytorch.LBFGS` (arguments checked there)."""
    m = history_size

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        n, dtype = flat.shape[0], _dtypes.state_dtype(flat.dtype)  # at least float32
        zeros = jnp.zeros([], dtype)
        return TorchLbfgsState(
            func_evals=jnp.zeros([], jnp.int32),
            n_iter=jnp.zeros([], jnp.int32),
            d=jnp.zeros((n,), dtype),
            t=zeros,
            old_dirs=jnp.zeros((m, n), dtype),
            old_stps=jnp.zeros((m, n), dtype),
            ro=jnp.zeros((m,), dtype),
            num_old=jnp.zeros([], jnp.int32),
            h_diag=jnp.ones([], dtype),
            prev_flat_grad=jnp.zeros((n,), dtype),
            prev_loss=jnp.zeros([], dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(state, TorchLbfgsState, "gbopt.pytorch.LBFGS")
        value_fn = extra_args.get("value_fn")
        if params is None or value_fn is None:
            raise ValueError(
                "gbopt.pytorch.LBFGS needs the parameters and the objective, as torch's "
                "`step(closure)` does: call `update(grads, state, params, value_fn=loss_fn)` "
                "(optionally with `value=loss_fn(params)`); one update is one torch step."
            )
        x0, unravel = ravel_pytree(params)
        dtype = state.d.dtype  # the parameters' precision, at least float32
        x0 = x0.astype(dtype)

        def evaluate(x):
            value, grad = jax.value_and_grad(lambda v: value_fn(unravel(v)))(x)
            return jnp.asarray(value).astype(dtype), grad.astype(dtype)

        g0 = ravel_pytree(updates)[0].astype(dtype)
        loss0 = (
            jnp.asarray(extra_args["value"]).astype(dtype)
            if extra_args.get("value") is not None
            else evaluate(x0)[0]
        )

        def obj(x, t, d):
            return evaluate(x + t * d)

        def two_loop(g, s):
            q = -g
            al = jnp.zeros((m,), dtype)

            def back(j, carry):
                q, al = carry
                i = s.num_old - 1 - j
                a = jnp.where(i >= 0, (s.old_stps[i] @ q) * s.ro[i], 0)
                return q - a * s.old_dirs[i], al.at[i].set(a)

            q, al = jax.lax.fori_loop(0, s.num_old, back, (q, al))
            r = q * s.h_diag

            def fwd(i, r):
                be = (s.old_dirs[i] @ r) * s.ro[i]
                return r + (al[i] - be) * s.old_stps[i]

            return jax.lax.fori_loop(0, s.num_old, fwd, r)

        def iteration(c):
            s = c["s"]
            n_iter, st_n_iter = c["n_iter"] + 1, s.n_iter + 1
            g, loss = c["g"], c["loss"]
            first = st_n_iter == 1

            # the pair of the last iteration, kept if <y, s> > 1e-10
            y = g - s.prev_flat_grad
            step = s.d * s.t
            ys = y @ step
            keep = ~first & (ys > 1e-10)
            full = s.num_old == m
            dirs = jnp.where(full, jnp.roll(s.old_dirs, -1, axis=0), s.old_dirs)
            stps = jnp.where(full, jnp.roll(s.old_stps, -1, axis=0), s.old_stps)
            ro = jnp.where(full, jnp.roll(s.ro, -1), s.ro)
            slot = jnp.where(full, m - 1, s.num_old)
            kept = s._replace(
                old_dirs=dirs.at[slot].set(y),
                old_stps=stps.at[slot].set(step),
                ro=ro.at[slot].set(1 / jnp.where(keep, ys, 1)),
                num_old=jnp.minimum(s.num_old + 1, m),
                h_diag=ys / jnp.where(keep, y @ y, 1),
            )
            s = jax.tree.map(lambda a, b: jnp.where(keep, a, b), kept, s)
            s = jax.tree.map(
                lambda a, b: jnp.where(first, a, b),
                s._replace(num_old=jnp.zeros_like(s.num_old), h_diag=jnp.ones_like(s.h_diag)),
                s,
            )
            d = jnp.where(first, -g, two_loop(g, s))
            t = jnp.where(first, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(g))) * lr, lr).astype(dtype)
            s = s._replace(n_iter=st_n_iter, d=d, t=t, prev_flat_grad=g, prev_loss=loss)
            gtd = g @ d
            descent = gtd <= -tolerance_change

            def search(_):
                if line_search_fn is None:
                    x = c["x"] + t * d
                    last = n_iter == max_iter
                    new_loss, new_g = jax.lax.cond(last, lambda: (loss, g), lambda: evaluate(x))
                    return x, new_loss, new_g, t, jnp.where(last, 0, 1).astype(jnp.int32)
                f_new, g_new, t_new, evals = strong_wolfe(
                    obj,
                    c["x"],
                    t,
                    d,
                    loss,
                    g,
                    gtd,
                    max_eval - c["evals"],
                    tolerance_change=tolerance_change,
                )
                return c["x"] + t_new * d, f_new, g_new, t_new.astype(dtype), evals

            def no_step(_):
                return c["x"], loss, g, t, jnp.zeros([], jnp.int32)

            x, new_loss, new_g, t_used, ls_evals = jax.lax.cond(descent, search, no_step, None)
            s = s._replace(t=t_used, func_evals=s.func_evals + ls_evals)
            evals = c["evals"] + ls_evals
            opt_cond = jnp.max(jnp.abs(new_g)) <= tolerance_grad
            stop = (
                ~descent
                | (n_iter == max_iter)
                | (evals >= max_eval)
                | opt_cond
                | (jnp.max(jnp.abs(d * t_used)) <= tolerance_change)
                | (jnp.abs(new_loss - loss) < tolerance_change)
            )
            return dict(x=x, g=new_g, loss=new_loss, s=s, n_iter=n_iter, evals=evals, stop=stop)

        start = dict(
            x=x0,
            g=g0,
            loss=loss0,
            s=state._replace(func_evals=state.func_evals + 1),
            n_iter=jnp.zeros([], jnp.int32),
            evals=jnp.ones([], jnp.int32),
            stop=jnp.max(jnp.abs(g0)) <= tolerance_grad,  # optimal already: no step
        )
        done = jax.lax.while_loop(lambda c: ~c["stop"], iteration, start)
        moved = ~start["stop"]
        new_state = jax.tree.map(lambda a, b: jnp.where(moved, a, b), done["s"], start["s"])
        out = unravel(done["x"] - x0)
        out = jax.tree.map(lambda o, u: o.astype(jnp.result_type(u)), out, updates)
        return out, new_state

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "LBFGS",
        "optimizer",
        hyperparams={
            "lr": lr,
            "max_iter": max_iter,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        },
        math=r"\text{up to max\_iter L-BFGS iterations per update (torch's step(closure))}",
        state=TorchLbfgsState._fields,
    )
