"""The companions users expect beside any optimizer: clipping and weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _numerics, _placement, _tree_checks, _validate
from gbopt._base import (
    EMPTY_STATE,
    GradientTransformation,
    _owning_step,
    refuse_inside,
    with_info,
)


def global_norm(tree: Any) -> jax.Array:
    r"""The Euclidean norm of all leaves together, :math:`\sqrt{\sum_i \|u_i\|^2}` (>= float32).

    Real, also for complex leaves: :math:`\|u\|^2 = \sum |u_j|^2 = \sum u_j \bar u_j`
    (as ``optax.global_norm``; ``u * u`` of a complex number is not its squared modulus).
    """
    return jnp.sqrt(global_squared_norm(tree))


def global_squared_norm(tree: Any) -> jax.Array:
    r""":math:`\sum_i \|u_i\|^2` over all leaves (>= float32, real): :func:`global_norm` squared.

    For rules that need the square (Polyak's step size): squaring the root instead adds
    a rounding and a square root to the compiled step.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    dtype = _dtypes.result_type(*[_dtypes.state_dtype(jnp.result_type(x)) for x in leaves])
    real = _dtypes.real_dtype(dtype)

    def squares(x):
        x = _dtypes.as_array(x)
        wide = dtype if jnp.iscomplexobj(x) else real
        return jnp.sum(_numerics.abs_square(_dtypes.cast(x, wide)))

    return sum(squares(x) for x in leaves)


def clip_by_global_norm(max_norm: float | jax.Array) -> GradientTransformation:
    r"""Scales the updates down so that their global norm is at most ``max_norm``.

    .. math:: u \leftarrow u \cdot \min\!\left(1, \frac{c}{\|u\|_2}\right)

    Args:
      max_norm: :math:`c`, a finite number > 0.

    References:
      Pascanu et al., "On the difficulty of training recurrent neural networks", 2013.
    """
    _validate.positive("max_norm", max_norm)

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        norm = global_norm(updates)
        c = _dtypes.scalar(max_norm, norm.dtype)
        factor = jnp.where(norm > c, c / jnp.where(norm > c, norm, 1), 1).astype(norm.dtype)

        def leaf(u):
            u = _dtypes.as_array(u)
            wide = _dtypes.promote(_dtypes.state_dtype(u.dtype), norm.dtype)
            return _dtypes.cast(_dtypes.cast(u, wide) * factor.astype(wide), u.dtype)

        clipped = jax.tree.map(leaf, updates)
        return clipped, state

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "clip_by_global_norm",
        hyperparams={"max_norm": max_norm},
        math=r"u \cdot \min\left(1, \frac{c}{\lVert u \rVert_2}\right)",
    )


def add_decayed_weights(
    weight_decay: float | jax.Array | Callable[[jax.Array], Any] = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Adds :math:`\lambda w` to the updates (L2 / decoupled weight decay, by its place).

    .. math:: u \leftarrow u + \lambda\, w

    Before the preconditioner this is L2 regularization (PyTorch's ``weight_decay``);
    after it and before the learning rate, it is AdamW's decoupled decay
    (Loshchilov & Hutter, 2019).

    Args:
      weight_decay: :math:`\lambda`, a finite number >= 0, or a schedule
        ``count -> value`` (read at the number of updates applied before this one, as
        optax's ``add_decayed_weights`` reads it; the step is an enclosing step owner's,
        or a count of its own). A concrete 0 adds nothing.
      mask: a pytree of booleans shaped like the parameters (or a function
        ``params -> mask``); decay is added only where it is True (e.g. not to biases).

    Returns:
      A stateless transform (state ``()``), or with a schedule used alone a
      :class:`gbopt.StepCountState`.

    Raises:
      ValueError: for a negative, NaN or infinite ``weight_decay``; at ``update`` when
        called without ``params``, or with a ``mask`` that does not match them.
      TypeError: at ``init``, for integer or boolean parameters.
    """
    scheduled = callable(weight_decay)
    if not scheduled:
        _validate.non_negative("weight_decay", weight_decay)
    nothing = _dtypes.is_number(weight_decay) and weight_decay == 0

    def init_fn(params):
        if params is not None:
            _placement.check_float_params(params)
        return EMPTY_STATE

    def decay(updates, state, params, step):
        if nothing:
            return updates, state
        if params is None:
            if not jax.tree.leaves(updates):  # an empty tree (or None): nothing to decay
                return updates, state
            raise ValueError(
                "`weight_decay` needs the parameters (weight decay adds λ·w to the update): "
                "call `update(updates, state, params)` with `params`, or build the optimizer "
                "with weight_decay=0 (gbopt.add_decayed_weights)."
            )
        _tree_checks.check_matches(updates, params, what="updates", reference_name="params")
        if mask is not None:
            refuse_inside("gbopt.add_decayed_weights's mask")
        m = mask(params) if callable(mask) else mask
        if m is None:
            m = jax.tree.map(lambda _: True, updates)
        else:
            _tree_checks.check_matches(
                m, params, what="mask", reference_name="params", check_shapes=False
            )
        rate = weight_decay(step - 1) if scheduled else weight_decay
        rate_in = _dtypes.per_dtype(lambda dtype: _dtypes.scalar(rate, dtype))

        def leaf(u, w, keep):
            if not keep:
                return u
            u = _dtypes.as_array(u)
            u_dtype = u.dtype
            wide = _dtypes.state_dtype(u_dtype)
            lam = rate_in(wide)
            u, w = _dtypes.cast(u, wide), _dtypes.cast(w, wide)
            if lam.ndim == 0 and u.shape == w.shape:  # lax: no nested jit to trace
                return _dtypes.cast(jax.lax.add(u, jax.lax.mul(lam, w)), u_dtype)
            return _dtypes.cast(u + lam * w, u_dtype)

        return jax.tree.map(leaf, updates, params, m), state

    if scheduled:

        def update_with_step(updates, state, params, step, **extra_args):
            del extra_args
            return decay(updates, state, params, step)

        init_fn, update_fn = _owning_step(init_fn, update_with_step, "add_decayed_weights")
    else:

        def update_fn(updates, state, params=None, **extra_args):
            del extra_args
            return decay(updates, state, params, None)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "add_decayed_weights",
        hyperparams={"weight_decay": weight_decay},
        # A concrete 0 adds nothing, and the rule shows nothing (as add(0) for eps_root=0).
        math=r"u" if nothing else r"u + \lambda w",
    )
