"""Fault tolerance: a step whose numbers are not finite is skipped, never applied."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _numerics
from gbopt._base import GradientTransformation, as_transform, expect_state


class SkipNonfiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`.

    Attributes:
      total_skipped: steps skipped so far (int32, saturating).
      consecutive_skipped: steps skipped since the last applied one; 0 right after an
        applied step (int32, saturating).
      inner_state: the wrapped transform's state as of the last applied step.
    """

    total_skipped: jax.Array
    consecutive_skipped: jax.Array
    inner_state: Any


def _all_finite(tree: Any) -> jax.Array:
    """A scalar bool: whether every floating-point element of ``tree`` is finite.

    Integer and boolean leaves (step counts) are always finite; an empty tree is finite.
    """
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return functools.reduce(jnp.logical_and, checks, jnp.ones([], bool))


def skip_nonfinite(inner: Any) -> GradientTransformation:
    r"""Skips a step whose gradients, updates or new state contain NaN or :math:`\pm\infty`.

    With :math:`(u, S') = \mathrm{inner}(g, S)` and :math:`F` "every element of
    :math:`g`, :math:`u` and :math:`S'` is finite":

    .. math::
        (u, S) \leftarrow \begin{cases} (u, S') & F \\ (0, S) & \text{otherwise} \end{cases}

    A skipped step returns exactly zero updates (so :func:`gbopt.apply_updates` leaves
    the parameters bitwise unchanged) and keeps the inner state bitwise as it was, for
    any number of consecutive bad steps: one NaN gradient element cannot poison a
    moment estimate, and there is no limit after which the bad step is applied
    (``optax.apply_if_finite`` applies it after ``max_consecutive_errors``). Checking the
    inner transform's *outputs* as well catches faults it produces itself, e.g. a
    ``0 / 0`` with ``eps=0`` or an overflow of a low-precision statistic.

    Cost: the inner update is always computed, and the choice is made with element-wise
    selects (``jnp.where``), not a branch, so the step stays one straight-line program
    under ``jax.jit``, ``jax.vmap`` (each batch member skips on its own) and
    ``lax.scan``, with no transfer to the host. On top of the inner step it reads the
    gradients, the updates and the new state once more (for the finiteness reductions)
    and selects every element of the updates and of the state, about one extra pass
    over the optimizer's memory, which XLA fuses with the step where it can.

    Args:
      inner: the gbopt or optax transform to protect, e.g. ``gbopt.adam(1e-3)``.

    Returns:
      A transform with state :class:`SkipNonfiniteState`.

    Raises:
      TypeError: if ``inner`` is not a gradient transformation.

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> tx = gbopt.skip_nonfinite(gbopt.adam(1e-3))
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, state, params)
      >>> updates["w"], state.total_skipped
      (Array([0., 0.], dtype=float32), Array(1, dtype=int32))
    """
    tx = as_transform(inner, argument="inner")

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return SkipNonfiniteState(zero, zero, tx.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(state, SkipNonfiniteState, "skip_nonfinite")
        new_updates, new_inner = tx.update(updates, state.inner_state, params, **extra_args)
        ok = _all_finite((updates, new_updates, new_inner))
        out = jax.tree.map(lambda u: jnp.where(ok, u, 0), new_updates)
        inner_state = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), new_inner, state.inner_state
        )
        skipped = _numerics.safe_increment(state.total_skipped)
        consecutive = _numerics.safe_increment(state.consecutive_skipped)
        return out, SkipNonfiniteState(
            jnp.where(ok, state.total_skipped, skipped),
            jnp.where(ok, jnp.zeros_like(consecutive), consecutive),
            inner_state,
        )

    return GradientTransformation(init_fn, update_fn)
