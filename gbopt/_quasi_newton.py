r"""Quasi-Newton: L-BFGS, the limited-memory BFGS of Goodfellow et al. §8.6.2.

Newton's step :math:`-H^{-1} g` needs the inverse Hessian. BFGS builds an approximation
of it from the secant condition, one rank-two correction per step; L-BFGS keeps only the
last :math:`m` pairs of differences

.. math:: s_k = w_{k+1} - w_k, \qquad y_k = g_{k+1} - g_k

and applies the approximation to the gradient with two loops over them (Nocedal &
Wright, Alg. 7.4). The new primitive is :func:`lbfgs_memory` (the pairs and the
product); the step length comes from a line search, optax's by default::

    lbfgs = chain(lbfgs_memory(m), scale(-1), optax.scale_by_zoom_linesearch(...))

The line search reads the objective through the extra arguments of ``update``:
``update(grad, state, params, value=f(w), grad=grad, value_fn=f)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gbopt import _dtypes, _numerics, _placement, _validate
from gbopt._base import (
    GradientTransformation,
    ScalarOrSchedule,
    expect_state,
    named,
    with_info,
)
from gbopt._combine import chain
from gbopt._maps import identity, scale, scale_by_learning_rate


class LbfgsMemoryState(NamedTuple):
    r"""State of :func:`lbfgs_memory`.

    Attributes:
      count: updates applied so far (int32, saturating).
      params: the parameters at the previous update, :math:`w_{k}`.
      updates: the incoming updates (gradients) at the previous update, :math:`g_k`.
      s: the last :math:`m` parameter differences, stacked on a leading axis of size
        ``memory_size`` in each leaf (a ring buffer).
      y: the last :math:`m` gradient differences, stacked likewise.
      rho: :math:`1 / \langle s_i, y_i\rangle` (0 for an empty slot or a zero
        product), shape ``(memory_size,)``.
    """

    count: jax.Array
    params: Any
    updates: Any
    s: Any
    y: Any
    rho: jax.Array


def _dot(a: Any, b: Any) -> jax.Array:
    r""":math:`\operatorname{Re}\langle a, b\rangle` over all leaves (conjugating ``a``)."""
    leaves = [
        jnp.sum(jnp.real(jnp.conj(x) * y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    return sum(leaves[1:], leaves[0]) if leaves else jnp.zeros([], jnp.float32)


def _axpy(x: Any, a: jax.Array, y: Any) -> Any:
    """``x + a * y`` leaf by leaf, in ``x``'s dtypes.

    ``a`` is rounded to ``x``'s real dtype first; the sum is computed in the dtype standard
    promotion gives, cast explicitly so that it also runs under strict promotion.
    """

    def leaf(p, q):
        c = a.astype(_dtypes.real_dtype(p.dtype))
        wide = _dtypes.result_type(p.dtype, c.dtype, q.dtype)
        return (p.astype(wide) + c.astype(wide) * q.astype(wide)).astype(p.dtype)

    return jax.tree.map(leaf, x, y)


def lbfgs_memory(memory_size: int = 10, scale_init_precond: bool = True) -> GradientTransformation:
    r"""L-BFGS's memory of differences, and the product of its inverse-Hessian with the update.

    At update :math:`k` (0-based) with parameters :math:`w_k` and incoming :math:`u_k`:
    store :math:`s = w_k - w_{k-1}`, :math:`y = u_k - u_{k-1}`,
    :math:`\rho = 1/\langle s, y \rangle` (0 when the product is 0) in the ring buffer,
    then return :math:`H_k u_k` by the two-loop recursion

    .. math::
        q \leftarrow u_k;\quad \text{for } i = k-1, \dots, k-m:\;
          a_i = \rho_i \langle s_i, q\rangle,\; q \leftarrow q - a_i y_i \\
        r \leftarrow \gamma_k q;\quad \text{for } i = k-m, \dots, k-1:\;
          b = \rho_i \langle y_i, r\rangle,\; r \leftarrow r + (a_i - b) s_i

    with :math:`\gamma_k = \langle s, y\rangle / \langle y, y \rangle` of the newest
    pair (``scale_init_precond``; :math:`\min(1, 1/\|u_0\|)` at the first update, a
    trust region of radius 1, as optax; 1 where :math:`y = 0`), or 1. Empty slots have
    :math:`\rho = 0` and drop out. This is optax's ``scale_by_lbfgs`` rule. The
    differences come from the parameters passed to consecutive updates, so the step
    actually taken (after a line search) is what is stored.

    Args:
      memory_size: :math:`m` >= 1, the number of pairs kept.
      scale_init_precond: scale the initial inverse Hessian by :math:`\gamma_k`.

    Returns:
      A transform with state :class:`LbfgsMemoryState`. ``update`` needs ``params``.

    Raises:
      ValueError: for ``memory_size`` < 1; at ``update``, without ``params``.

    References:
      Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 7.4 and 7.5;
      Liu & Nocedal, "On the limited memory BFGS method for large scale optimization",
      Math. Programming 1989; Goodfellow et al., *Deep Learning*, §8.6.2.
    """
    memory_size = _validate.whole_number("memory_size", memory_size, 1)
    _validate.flag("scale_init_precond", scale_init_precond)

    def wide(x):
        return _dtypes.state_dtype(jnp.result_type(x))

    def init_fn(params):
        _placement.check_float_params(params)
        zeros = _placement.zeros_like(params)

        def stacked():
            return jax.tree.map(lambda z: jnp.zeros((memory_size, *z.shape), z.dtype), zeros)

        rho_dtype = _dtypes.real_dtype(
            _dtypes.result_type(*[wide(x) for x in jax.tree.leaves(params)] or [jnp.float32])
        )
        # Distinct arrays for every field: a state whose leaves share buffers cannot be
        # donated to a jitted step.
        return LbfgsMemoryState(
            _placement.zero_count(params),
            zeros,
            _placement.zeros_like(params),
            stacked(),
            stacked(),
            jnp.zeros((memory_size,), rho_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(state, LbfgsMemoryState, "lbfgs_memory")
        if params is None:
            raise ValueError(
                "lbfgs_memory needs the parameters (L-BFGS stores their differences): call "
                "`update(grads, state, params, ...)`."
            )
        rho_dtype = state.rho.dtype
        u = jax.tree.map(lambda x, ref: _dtypes.cast(x, ref.dtype), updates, state.updates)
        w = jax.tree.map(lambda x, ref: _dtypes.cast(x, ref.dtype), params, state.params)
        first = state.count == 0
        newest = (state.count - 1) % memory_size
        oldest = state.count % memory_size

        s_new = jax.tree.map(jnp.subtract, w, state.params)
        y_new = jax.tree.map(jnp.subtract, u, state.updates)
        sy = _dot(s_new, y_new).astype(rho_dtype)
        yy = _dot(y_new, y_new).astype(rho_dtype)
        rho_new = jnp.where(first | (sy == 0), 0, 1 / jnp.where(sy == 0, 1, sy)).astype(rho_dtype)
        s_new, y_new = jax.tree.map(
            lambda x: jnp.where(first, jnp.zeros_like(x), x), (s_new, y_new)
        )
        s = jax.tree.map(lambda buf, x: buf.at[newest].set(x), state.s, s_new)
        y = jax.tree.map(lambda buf, x: buf.at[newest].set(x), state.y, y_new)
        rho = state.rho.at[newest].set(rho_new)

        if scale_init_precond:
            u_norm = jnp.sqrt(_dot(u, u).astype(rho_dtype))
            gamma = jnp.where(
                first,
                jnp.minimum(1, 1 / u_norm),
                jnp.where(yy > 0, sy / jnp.where(yy > 0, yy, 1), 1),
            ).astype(rho_dtype)
        else:
            gamma = jnp.ones([], rho_dtype)

        order = (oldest + jnp.arange(memory_size)) % memory_size

        def backward(q, i):
            a = rho[i] * _dot(jax.tree.map(lambda b: b[i], s), q).astype(rho_dtype)
            return _axpy(q, -a, jax.tree.map(lambda b: b[i], y)), a

        q, alphas = jax.lax.scan(backward, u, order, reverse=True)
        r = jax.tree.map(lambda x: (x * gamma.astype(x.dtype)).astype(x.dtype), q)

        def forward(r, i_a):
            i, a = i_a
            b = rho[i] * _dot(jax.tree.map(lambda b: b[i], y), r).astype(rho_dtype)
            return _axpy(r, a - b, jax.tree.map(lambda b: b[i], s)), None

        r, _ = jax.lax.scan(forward, r, (order, alphas))
        out = jax.tree.map(lambda x, g: _dtypes.cast(x, jnp.result_type(g)), r, updates)
        count = _numerics.safe_increment(state.count)
        return out, LbfgsMemoryState(count, w, u, s, y, rho)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "lbfgs_memory",
        "statistic",
        hyperparams={"memory_size": memory_size, "scale_init_precond": scale_init_precond},
        # The fields in the order the rule assigns them (count, the three buffers, then
        # the parameters and updates of this step), so that describe pairs each with its
        # symbol.
        math=r"k \leftarrow k + 1;\quad s \leftarrow (s_i)_{k-m < i \le k} "
        r"\text{ with } s_k = w - \bar w;\quad y \leftarrow (y_i)_{k-m < i \le k} "
        r"\text{ with } y_k = u - \bar g;\quad \rho \leftarrow (\rho_i)_{k-m < i \le k} "
        r"\text{ with } \rho_k = 1 / \langle s_k, y_k \rangle;\quad \bar w \leftarrow w;"
        r"\quad \bar g \leftarrow u;\quad u \leftarrow H_k u \text{ (two-loop recursion)}",
        state=("count", "s", "y", "rho", "params", "updates"),
    )


_DEFAULT_LINESEARCH = optax.scale_by_zoom_linesearch(
    max_linesearch_steps=20, initial_guess_strategy="one"
)


def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Any = _DEFAULT_LINESEARCH,
) -> GradientTransformation:
    r"""L-BFGS with a line search: the book's quasi-Newton method (§8.6.2).

    .. math::
        s_k = w_k - \bar w, \quad y_k = g_k - \bar g, \quad
        \rho_k = 1 / \langle s_k, y_k \rangle, \\
        s \leftarrow (s_i)_{k-m < i \le k}, \quad y \leftarrow (y_i)_{k-m < i \le k}, \quad
        \rho \leftarrow (\rho_i)_{k-m < i \le k}, \quad
        \bar w \leftarrow w_k, \quad \bar g \leftarrow g_k, \quad k \leftarrow k + 1, \\
        d_k = -\alpha_t H_k g_k, \qquad w \leftarrow w + \eta_k d_k

    The memory keeps the last :math:`m` pairs of differences and their
    :math:`\rho = 1 / \langle s, y \rangle` (ring buffers), the previous parameters
    :math:`\bar w` and gradient :math:`\bar g`, and the count :math:`k`
    (:func:`lbfgs_memory`); :math:`H_k g_k` is the two-loop recursion over the pairs.
    :math:`\eta_k` comes from the line search (a zoom line search for the strong Wolfe
    conditions by default; 1 without one), :math:`\alpha_t` is the learning rate (1
    without one). Drop-in for ``optax.lbfgs`` (same signature, defaults and rule); the
    line search is optax's own transform, and any optax line search works
    (``optax.scale_by_backtracking_linesearch``, ``optax.scale_by_zoom_linesearch``).
    ``update`` takes the line search's extra arguments::

        value, grad = optax.value_and_grad_from_state(f)(params, state=state)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)

    Args:
      learning_rate: :math:`\alpha`, a fixed step (number or schedule) multiplying the
        direction before the line search, or None for none.
      memory_size: :math:`m` >= 1, the pairs kept.
      scale_init_precond: scale the initial inverse Hessian (see :func:`lbfgs_memory`).
      linesearch: a line-search transform, or None for none (a fixed step: then pass a
        ``learning_rate``).

    Returns:
      ``chain(lbfgs_memory(memory_size, scale_init_precond), scale(-1) (or
      scale_by_learning_rate(learning_rate)), linesearch (or identity()))``.

    References:
      Nocedal & Wright, *Numerical Optimization*, Alg. 7.5; Goodfellow et al., §8.6.2.
    """
    step = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    return named(
        "lbfgs",
        chain(
            lbfgs_memory(memory_size, scale_init_precond),
            step,
            identity() if linesearch is None else linesearch,
        ),
        learning_rate=learning_rate,
        memory_size=memory_size,
        scale_init_precond=scale_init_precond,
    )
