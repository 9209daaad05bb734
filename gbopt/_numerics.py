"""Leaf-level numerics shared by the primitives, each explaining why the naive form fails."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gbopt._dtypes import cast, complement


def safe_increment(count: jax.Array) -> jax.Array:
    """Adds one to an integer step count, saturating at its largest value.

    A plain ``count + 1`` wraps an int32 to -2**31 after 2**31 - 1 steps, which flips
    the sign of bias corrections and sends schedules back to their start. PyTorch's
    float32 ``step`` stops at 2**24 instead. Saturating keeps every step-dependent
    quantity at its limit value, which is correct to the precision of the format.
    """
    limit = jnp.iinfo(count.dtype).max
    # lax.select rather than jnp.where: the same operations, without the nested jit call
    # that jnp.where adds to the program (lowered and inlined again in every compile).
    return jax.lax.select(count < limit, count + 1, count)


def one_minus_power(decay, step: jax.Array, dtype) -> jax.Array:
    r"""Returns :math:`1 - \beta^t` for a decay :math:`\beta` and a step :math:`t \ge 1`.

    Computed as ``-expm1(t * log(beta))``. The naive ``1 - beta**t`` in float32 starts
    from ``float32(0.999) = 0.99900001287``, whose distance to one is off by 1.3e-5
    relative, and so is the bias correction of every Adam step (optax's first float32
    step is off by 6.7e-6). When ``decay`` is a Python number, ``log(beta)`` is taken in
    float64 at trace time, so only the final rounding to ``dtype`` remains (about 1e-7).
    """
    if isinstance(decay, numbers.Real) and not isinstance(decay, bool):
        if decay == 0.0:
            return jnp.ones([], dtype)
        return -jnp.expm1(step.astype(dtype) * jnp.asarray(math.log(decay), dtype))
    t = step.astype(dtype)
    decay = jnp.asarray(decay).astype(dtype)
    return -jnp.expm1(t * jnp.log(decay))


def bias_factor(decay, step: jax.Array, dtype) -> tuple[jax.Array, bool]:
    r"""The factor of a bias correction at ``step``: ``(value, inverse)`` for :func:`debias`.

    Inside a step owner that shares its decays (:func:`shared_powers`), the element of its
    vector :math:`1 / (1 - \beta^t)` (``inverse`` True: the correction multiplies by it);
    otherwise :math:`1 - \beta^t` from :func:`one_minus_power` (``inverse`` False: the
    correction divides by it, as optax does, to the last bit). The product and the quotient
    differ by at most one rounding (an ulp of the corrected statistic).
    """
    table = _POWERS.get()
    if table is not None and step is table.step:
        shared = table.get(decay, dtype)
        if shared is not None:
            return shared, True
    return one_minus_power(decay, step, dtype), False


def debias(x: jax.Array, factor: tuple[jax.Array, bool]) -> jax.Array:
    """``x`` corrected by a :func:`bias_factor`: ``x / (1 - b^t)``, in ``x``'s dtype."""
    value, inverse = factor
    value = cast(value, x.dtype)
    return jax.lax.mul(value, x) if inverse else jax.lax.div(x, value)


class _PowerTable:
    r""":math:`1 / (1 - \beta^t)` for every declared decay at one step, one vector per dtype."""

    def __init__(self, step: jax.Array, decays: tuple[float, ...]):
        self.step = step
        self.index = {d: i for i, d in enumerate(decays)}
        self.logs = [math.log(d) for d in decays]
        self.vectors: dict = {}

    def compute(self, dtype) -> None:
        dtype = jnp.dtype(dtype)
        if dtype not in self.vectors:
            t = self.step.astype(dtype)
            self.vectors[dtype] = 1 / -jnp.expm1(t * jnp.asarray(self.logs, dtype))

    def get(self, decay: float, dtype) -> jax.Array | None:
        """The element for ``decay`` in ``dtype``; None if not computed in the owner."""
        if not (isinstance(decay, numbers.Real) and not isinstance(decay, bool)):
            return None
        i = self.index.get(float(decay))
        vector = self.vectors.get(jnp.dtype(dtype))
        return None if i is None or vector is None else vector[i]


_POWERS: contextvars.ContextVar[_PowerTable | None] = contextvars.ContextVar(
    "gbopt_powers", default=None
)


@contextlib.contextmanager
def shared_powers(step: jax.Array, decays: Iterable[Any], dtypes: Iterable[Any]) -> Iterator[None]:
    r"""Inside it, :func:`bias_factor` at ``step`` reads one vector for ``decays``.

    A step owner (:func:`gbopt.with_step_count`) knows, from the pieces it holds, which
    decays :math:`\beta` they debias with. Computed one by one, each :math:`1 - \beta^t`
    is a scalar kernel of its own in the compiled step (Adam has two, its count a third),
    and XLA compiles each kernel separately: on CPU a scalar kernel costs about as much
    compile time as a loop over millions of elements. Here the factors
    :math:`1 / (1 - \beta^t)` are one ``expm1`` and one division over a vector, one
    kernel, computed in each of ``dtypes`` before the pieces run (so that no piece
    computes it inside a ``lax.cond`` branch or a nested trace and leaks it); each piece
    reads its element (the same ``expm1`` of the same numbers as its own would be).
    Decays that are not Python numbers (arrays, schedules) are left to each piece.
    """
    numbers_ = sorted(
        {
            float(d)
            for d in decays
            if isinstance(d, numbers.Real) and not isinstance(d, bool) and 0.0 < d < 1.0
        }
    )
    if len(numbers_) < 2:  # one decay: nothing to share
        yield
        return
    table = _PowerTable(step, tuple(numbers_))
    for dtype in dtypes:
        table.compute(dtype)
    token = _POWERS.set(table)
    try:
        yield
    finally:
        _POWERS.reset(token)


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


def moving_average(
    old: jax.Array, new: jax.Array, decay: Any, *, keep_infinite: bool = False
) -> jax.Array:
    r"""One step of a moving average, :math:`\rho\,\text{old} + (1 - \rho)\,\text{new}`.

    The result has ``old``'s dtype (the statistics dtype).

    Computed as :math:`\text{old} + (1 - \rho)(\text{new} - \text{old})` with
    :math:`1 - \rho` from :func:`complement`, so that the two weights sum to exactly
    one. The naive form multiplies by ``float32(0.999) = 0.99900001287`` and by
    ``float32(0.001)``, whose sum is :math:`1 + 1.3 \times 10^{-8}`: the average then
    drifts by that much every step, 1.3e-6 relative after 200 Adam steps (1.3e-5 once
    it has settled), where this form stays within about 5e-8. (PyTorch computes Adam's
    first moment this way, with ``lerp_``, but not its second.)

    With ``keep_infinite`` (for averages of squares: :func:`gbopt.accumulate_square` and
    the centered one), an infinite ``old`` stays as it is, as the plain weighted sum
    :math:`\rho\,\text{old} + (1 - \rho)\,\text{new}` keeps it: a finite gradient whose
    square overflows makes ``new`` and then ``old`` infinite, and ``inf - inf`` would turn
    the statistic into NaN for good (optax and PyTorch keep ``inf``, so the update of
    that element is 0 and training goes on). Everywhere else the result is the form
    above (one select; on XLA:CPU the first moments' float32 roundings moved by an ulp
    when the select was added to every moving average, so it is only where needed).
    """
    dtype = old.dtype
    new = cast(new, dtype)
    # lax operations on operands of one dtype: what the operators compute, without the
    # nested jit call each adds while tracing (trace time grows with the leaf count).
    out = jax.lax.add(old, jax.lax.mul(complement(decay, dtype), jax.lax.sub(new, old)))
    if keep_infinite:
        if jnp.iscomplexobj(old):
            return jnp.where(jnp.isinf(old), old, out)
        # What jnp.where(jnp.isinf(old), old, out) computes, without its two nested jit
        # calls per leaf (each lowered as a function of its own and inlined again by XLA);
        # an average of squares is never negative, so infinite is +inf (no abs to trace),
        # and infinity is a NumPy literal (jnp.asarray would dispatch an operation).
        infinite = jax.lax.eq(old, np.asarray(np.inf, dtype))
        return jax.lax.select(infinite, old, out)
    return out


def abs_square(x: jax.Array) -> jax.Array:
    r""":math:`|x|^2`, real: :math:`x^2` for a real ``x``, :math:`x \bar x` for a complex one.

    ``x * x`` of a complex number is not its squared modulus (:math:`(0.5i)^2 = -0.25`):
    a second moment built from it would be negative or complex.
    """
    if jnp.iscomplexobj(x):
        return jnp.square(x.real) + jnp.square(x.imag)
    return jax.lax.mul(x, x)
