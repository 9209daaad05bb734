"""The companions users expect beside any optimizer: clipping and weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gbopt import _stacking, _tree, _validate
from gbopt._base import EMPTY_STATE, GradientTransformation


def global_norm(tree: Any) -> jax.Array:
    r"""The Euclidean norm of all leaves together, :math:`\sqrt{\sum_i \|u_i\|^2}` (>= float32)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    dtype = jnp.result_type(*[_tree.state_dtype(jnp.result_type(x)) for x in leaves])
    return jnp.sqrt(sum(jnp.sum(jnp.square(_tree.cast(x, dtype))) for x in leaves))


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
        c = _tree.scalar(max_norm, norm.dtype)
        factor = jnp.where(norm > c, c / jnp.where(norm > c, norm, 1), 1).astype(norm.dtype)

        def leaf(u):
            u = _tree.as_array(u)
            return _tree.cast(_tree.cast(u, norm.dtype) * factor, u.dtype)

        clipped = jax.tree.map(leaf, updates)
        return clipped, state

    return GradientTransformation(init_fn, update_fn)


def add_decayed_weights(
    weight_decay: float | jax.Array | Callable[[jax.Array], Any] = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    step: jax.Array | None = None,
) -> GradientTransformation:
    r"""Adds :math:`\lambda w` to the updates (L2 / decoupled weight decay, by its place).

    .. math:: u \leftarrow u + \lambda\, w

    Before the preconditioner this is L2 regularization (PyTorch's ``weight_decay``);
    after it and before the learning rate, it is AdamW's decoupled decay
    (Loshchilov & Hutter, 2019).

    Args:
      weight_decay: :math:`\lambda`, a finite number >= 0, or a schedule
        ``count -> value`` (read at the number of updates applied before this one, as
        optax's ``add_decayed_weights`` reads it). A concrete 0 adds nothing.
      mask: a pytree of booleans shaped like the parameters (or a function
        ``params -> mask``); decay is added only where it is True (e.g. not to biases).
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it
        (for a schedule); a schedule without it keeps its own count.

    Raises:
      ValueError: for a negative, NaN or infinite ``weight_decay``; at ``update`` when
        called without ``params``, or with a ``mask`` that does not match them.
      TypeError: at ``init``, for integer or boolean parameters.
    """
    if callable(weight_decay):
        if step is None:
            from gbopt._combine import with_step_count

            return with_step_count(lambda t: add_decayed_weights(weight_decay, mask, step=t))
        rate = weight_decay(step - 1)
    else:
        _validate.non_negative("weight_decay", weight_decay)
        rate = weight_decay
    nothing = _tree.is_number(rate) and rate == 0

    def init_fn(params):
        if params is not None:
            _tree.check_float_params(params)
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if nothing:
            return updates, state
        if params is None:
            if not jax.tree.leaves(updates):  # an empty tree (or None): nothing to decay
                return updates, state
            raise ValueError(
                "add_decayed_weights needs the parameters: call "
                "`update(updates, state, params)` with `params` (weight decay adds λ·w)."
            )
        _tree.check_matches(updates, params, what="updates", reference_name="params")
        if mask is not None:
            _stacking.refuse_inside("gbopt.add_decayed_weights's mask")
        m = mask(params) if callable(mask) else mask
        if m is None:
            m = jax.tree.map(lambda _: True, updates)
        else:
            _tree.check_matches(m, params, what="mask", reference_name="params", check_shapes=False)

        def leaf(u, w, keep):
            if not keep:
                return u
            u = _tree.as_array(u)
            wide = _tree.state_dtype(u.dtype)
            lam = _tree.scalar(rate, wide)
            return _tree.cast(_tree.cast(u, wide) + lam * _tree.cast(w, wide), u.dtype)

        return jax.tree.map(leaf, updates, params, m), state

    return GradientTransformation(init_fn, update_fn)
