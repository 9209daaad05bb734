"""Leaf-level numerics shared by the primitives, each explaining why the naive form fails."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from gbopt._dtypes import cast, complement, scalar


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


_TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,  # also TracerBoolConversionError (`if`, `min`)
    jax.errors.TracerIntegerConversionError,  # `range(count)`, `lst[count]`
    jax.errors.TracerArrayConversionError,  # `np.cos(count)`
)


def schedule_value(schedule, count: jax.Array, name: str = "schedule"):
    r"""Calls ``schedule(count)`` the one way gbopt calls every schedule.

    The count is kept as an int32 in the state; a schedule such as ``(count + 1) / 5``
    computed on it comes out in float32 (JAX divides int32 in float32), which puts a
    float64 run 1e-9 away from its float64 rule. When 64-bit types are enabled, the
    schedule receives the count as an int64, so the same expression is computed in
    float64; otherwise it receives the int32 count.

    A schedule that treats the count as a Python number (``if count < w``,
    ``math.cos(count)``, ``min(count, T)``) works eagerly but fails under ``jax.jit``,
    where the count is traced: the error is raised again with the ``jax.numpy`` forms.

    Raises:
      TypeError: when the schedule cannot be traced, naming ``name``.
    """
    if jax.dtypes.canonicalize_dtype(jnp.int64) == jnp.int64:
        count = jnp.asarray(count).astype(jnp.int64)
    try:
        return schedule(count)
    except _TRACE_ERRORS as e:
        raise TypeError(
            f"`{name}` is a schedule that uses the step count as a Python number "
            f"({type(e).__name__}); gbopt calls schedules inside `update`, where under "
            "jax.jit the count is a traced array. Write it with jax.numpy: "
            "`jnp.where(count < w, a, b)` for `a if count < w else b`, `jnp.minimum` for "
            "`min`, `jnp.cos`/`jnp.exp` for `math.cos`/`math.exp`; e.g. `lambda count: "
            "jnp.where(count < 10, (count + 1) / 10, 0.5 * (1 + jnp.cos(jnp.pi * count / 100)))`."
        ) from e


def moving_average(old: jax.Array, new: jax.Array, decay: Any) -> jax.Array:
    r"""One step of a moving average, :math:`\rho\,\text{old} + (1 - \rho)\,\text{new}`.

    The result has ``old``'s dtype (the statistics dtype).

    Computed as :math:`\text{old} + (1 - \rho)(\text{new} - \text{old})` with
    :math:`1 - \rho` from :func:`complement`, so that the two weights sum to exactly
    one. The naive form multiplies by ``float32(0.999) = 0.99900001287`` and by
    ``float32(0.001)``, whose sum is :math:`1 + 1.3 \times 10^{-8}`: the average then
    drifts by that much every step, 1.3e-6 relative after 200 Adam steps (1.3e-5 once
    it has settled), where this form stays within about 5e-8. (PyTorch computes Adam's
    first moment this way, with ``lerp_``, but not its second.)

    Where that form is not finite, the result is the plain weighted sum
    :math:`\rho\,\text{old} + (1 - \rho)\,\text{new}`: a finite gradient whose square
    overflows makes ``new`` and then ``old`` infinite, and ``inf - inf`` would turn the
    statistic into NaN for good (optax and PyTorch keep ``inf``, so the update of that
    element is 0 and training goes on); a difference ``new - old`` that overflows while
    both are finite is also caught. Where the first form is finite it is the result, bit
    for bit, so the float64 rules are unchanged; the check is one comparison and one
    select per element, fused into the same loop.
    """
    dtype = old.dtype
    new = cast(new, dtype)
    weight = complement(decay, dtype)
    out = old + weight * (new - old)
    plain = scalar(decay, dtype) * old + weight * new
    return jnp.where(jnp.isfinite(out), out, plain)


def abs_square(x: jax.Array) -> jax.Array:
    r""":math:`|x|^2`, real: :math:`x^2` for a real ``x``, :math:`x \bar x` for a complex one.

    ``x * x`` of a complex number is not its squared modulus (:math:`(0.5i)^2 = -0.25`):
    a second moment built from it would be negative or complex.
    """
    if jnp.iscomplexobj(x):
        return jnp.square(x.real) + jnp.square(x.imag)
    return x * x
