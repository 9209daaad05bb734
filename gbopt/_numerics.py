"""Leaf-level numerics shared by the primitives, each explaining why the naive form fails."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp


def safe_increment(count: jax.Array) -> jax.Array:
    """Adds one to an integer step count, saturating at its largest value.

    A plain ``count + 1`` wraps an int32 to -2**31 after 2**31 - 1 steps, which flips
    the sign of bias corrections and sends schedules back to their start. PyTorch's
    float32 ``step`` stops at 2**24 instead. Saturating keeps every step-dependent
    quantity at its limit value, which is correct to the precision of the format.
    """
    limit = jnp.iinfo(count.dtype).max
    return jnp.where(count < limit, count + 1, limit).astype(count.dtype)


def one_minus_power(decay, step: jax.Array, dtype) -> jax.Array:
    r"""Returns :math:`1 - \beta^t` for a decay :math:`\beta` and a step :math:`t \ge 1`.

    Computed as ``-expm1(t * log(beta))``. The naive ``1 - beta**t`` in float32 starts
    from ``float32(0.999) = 0.99900001287``, whose distance to one is off by 1.3e-5
    relative, and so is the bias correction of every Adam step (optax's first float32
    step is off by 6.7e-6). When ``decay`` is a Python number, ``log(beta)`` is taken in
    float64 at trace time, so only the final rounding to ``dtype`` remains (about 1e-7).
    """
    t = step.astype(dtype)
    if isinstance(decay, numbers.Real) and not isinstance(decay, bool):
        if decay == 0.0:
            return jnp.ones([], dtype)
        return -jnp.expm1(t * jnp.asarray(math.log(decay), dtype))
    decay = jnp.asarray(decay).astype(dtype)
    return -jnp.expm1(t * jnp.log(decay))
