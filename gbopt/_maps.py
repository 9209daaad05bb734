r"""Element-wise maps of the updates stream: they keep no statistic.

Each is a function of one leaf handed to :func:`gbopt._base.elementwise`, which applies it
in at least float32 and returns the incoming dtype. Maps that read the step
(:func:`bias_correction`, a scheduled :func:`scale_by_learning_rate`,
:func:`scale_by_schedule`) share the count of an enclosing :func:`gbopt.with_step_count`,
or keep their own in a :class:`gbopt.StepCountState` when used alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gbopt import _dtypes, _numerics, _placement, _tree_checks, _validate
from gbopt._base import (
    EMPTY_STATE,
    GradientTransformation,
    ScalarOrSchedule,
    check_step_argument,
    declare_powers,
    elementwise,
    with_info,
)


def identity() -> GradientTransformation:
    """Passes the updates through unchanged; keeps no state.

    Useful as a branch of :func:`gbopt.divide` (RMSProp and AdaGrad divide the gradient
    itself by a root of its accumulated square).
    """

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return with_info(GradientTransformation(init_fn, update_fn), "identity", "map", math="u")


def scale(step_size: float | jax.Array) -> GradientTransformation:
    r"""Multiplies the updates by a constant.

    .. math:: u \leftarrow c\, u

    Args:
      step_size: the factor :math:`c` (a number or an array; it may be negative).
    """
    _validate.finite("step_size", step_size)
    return elementwise(
        "scale",
        lambda u: u * _dtypes.scalar(step_size, u.dtype),
        hyperparams={"step_size": step_size},
        # The sign flip of a rule without a learning rate reads as a minus sign.
        math=r"-u" if _dtypes.is_number(step_size) and step_size == -1 else r"c\, u",
    )


def add(value: float | jax.Array) -> GradientTransformation:
    r"""Adds a constant to every element of the updates.

    .. math:: u \leftarrow u + \delta

    With :func:`sqrt` it places ``eps`` inside (``add`` then ``sqrt``, RMSProp) or
    outside (``sqrt`` then ``add``, AdaGrad and Adam) the root of a preconditioner.

    Args:
      value: :math:`\delta`, a finite number (usually ``eps`` >= 0).
    """
    _validate.finite("value", value)
    if _dtypes.is_number(value) and value == 0:  # optax's eps_root=0: no work, same state
        return elementwise("add", lambda u: u, hyperparams={"value": value}, math=r"u + 0")
    number = _dtypes.is_number(value)

    def added(u):
        delta = _dtypes.scalar(value, u.dtype)
        # a number is a literal of u's dtype: lax.add, without the operator's nested jit
        return jax.lax.add(u, delta) if number else u + delta

    return elementwise(
        "add",
        added,
        hyperparams={"value": value},
        math=r"u + \delta",
    )


def sqrt() -> GradientTransformation:
    r"""Takes the element-wise square root of the updates.

    .. math:: u \leftarrow \sqrt{u}
    """
    return elementwise("sqrt", _sqrt, math=r"\sqrt{u}")


def _sqrt(u: jax.Array) -> jax.Array:
    # lax.sqrt for floating input: jnp.sqrt's result, without its nested jit to trace
    return jax.lax.sqrt(u) if jnp.issubdtype(u.dtype, jnp.inexact) else jnp.sqrt(u)


def _check_params(updates, params) -> None:
    if params is not None:
        _tree_checks.check_matches(updates, params, what="updates", reference_name="params")


def _checking_params(tx: GradientTransformation) -> GradientTransformation:
    """``tx`` with the parameter checks of :func:`scale_by_learning_rate` added."""

    def init_fn(params):
        if params is not None:
            _placement.check_float_params(params)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        _check_params(updates, params)
        return tx.update(updates, state, params, **extra_args)

    info = tx.info
    return with_info(
        GradientTransformation(init_fn, update_fn),
        info.name,
        info.kind,
        hyperparams=info.hyperparams,
        math=info.math,
        state=info.state,
    )


def _schedule_value(schedule: Callable, count: jax.Array, dtype, name: str) -> jax.Array:
    """A schedule's value at ``count`` as a scalar of ``dtype`` (via ``schedule_value``).

    ``count`` is clamped at 0: a schedule never sees a negative count (``count`` is the
    step minus one, and a step is at least 1 in every update).
    """
    count = jnp.maximum(count, 0)
    return _dtypes.scalar(_numerics.schedule_value(schedule, count, name), dtype)


def _check_rate_shape(rate: Any, u: jax.Array) -> None:
    """Raises a ValueError naming ``learning_rate`` when it does not broadcast to ``u``."""
    shape = np.shape(rate)
    if not shape:
        return
    try:
        fits = np.broadcast_shapes(shape, u.shape) == u.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"`learning_rate` has shape {shape}, which does not broadcast to an update of "
            f"shape {u.shape}: it must be a scalar (or broadcast to every leaf it scales). "
            "For one rate per parameter group use gbopt.multi_transform."
        )


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True, step: Any = None
) -> GradientTransformation:
    r"""Multiplies the updates by :math:`-\alpha` (descent), :math:`\alpha` a number or a schedule.

    .. math:: u \leftarrow -\alpha_t\, u

    This is the one place where gbopt flips the sign of the gradient.

    Args:
      learning_rate: :math:`\alpha`: a float, a JAX or NumPy scalar or array, or a schedule
        ``count -> value`` (read at the number of updates applied before this one:
        0 at the first step, as optax's schedules expect; an int64 when 64-bit types
        are enabled, so that it computes in float64).
      flip_sign: multiply by :math:`-\alpha` (default) or by :math:`\alpha`.
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``. A
        schedule reads the step of an enclosing :func:`gbopt.with_step_count`, or keeps
        its own count (a :class:`gbopt.StepCountState`) when used alone.

    Every optimizer ends in this transform, so it is also where they all check what
    they are given: at ``init``, that the parameters are floating point; at ``update``
    with ``params``, that the updates have the parameters' structure and shapes (both
    in Python while tracing, so free under ``jax.jit``).

    Raises:
      ValueError: for a negative, NaN or infinite ``learning_rate``; at ``update``, for
        updates whose structure or shapes differ from ``params`` (naming the path).
      TypeError: for a ``learning_rate`` that is neither a real number nor a schedule, a
        non-bool ``flip_sign``; at ``init``, for integer or boolean parameters.
    """
    _validate.learning_rate(learning_rate)
    _validate.flag("flip_sign", flip_sign)
    check_step_argument("scale_by_learning_rate", step)
    sign = -1 if flip_sign else 1
    hyperparams = {"learning_rate": learning_rate}
    math = r"-\alpha_t\, u" if flip_sign else r"\alpha_t\, u"

    if not callable(learning_rate):
        signed = sign * learning_rate if _dtypes.is_number(learning_rate) else None

        def scaled(u):
            if signed is not None:  # a literal of u's dtype: lax.mul, no promotion to trace
                return jax.lax.mul(u, _dtypes.scalar(signed, u.dtype))
            _check_rate_shape(learning_rate, u)
            return u * (sign * _dtypes.scalar(learning_rate, u.dtype))

        tx = elementwise(
            "scale_by_learning_rate",
            scaled,
            hyperparams=hyperparams,
            math=math,
        )
        return _checking_params(tx)

    def scheduled(u, pre):
        _check_rate_shape(pre, u)
        return u * pre

    tx = elementwise(
        "scale_by_learning_rate",
        scheduled,
        needs_step=True,
        prepare=lambda dtype, step: (
            sign * _schedule_value(learning_rate, step - 1, dtype, "learning_rate")
        ),
        hyperparams=hyperparams,
        math=math,
    )
    return _checking_params(tx)


def scale_by_schedule(
    step_size_fn: Callable[[jax.Array], Any], *, step: Any = None
) -> GradientTransformation:
    r"""Multiplies the updates by a schedule of the step count.

    .. math:: u \leftarrow c(t - 1)\, u

    The schedule is read at the number of updates applied before this one (0 at the
    first step), as optax's schedules and ``optax.scale_by_schedule`` are. Unlike
    :func:`gbopt.scale_by_learning_rate` it never flips the sign.

    Args:
      step_size_fn: a function ``count -> factor`` (it may use ``jnp.where`` on the
        count, e.g. PyTorch's momentum dampening, which is 1 at the first step).
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A transform with state ``()`` inside a step owner, else a
      :class:`gbopt.StepCountState`.

    Raises:
      TypeError: if ``step_size_fn`` is not callable (use :func:`gbopt.scale` for a
        constant).

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> warmup = gbopt.scale_by_schedule(lambda count: jnp.minimum(1.0, (count + 1) / 10))
    """
    if not callable(step_size_fn):
        raise TypeError(
            "`step_size_fn` must be a schedule, a function `count -> factor`; got "
            f"{type(step_size_fn).__name__}: {step_size_fn!r}. For a constant factor use "
            "gbopt.scale(factor)."
        )
    check_step_argument("scale_by_schedule", step)
    return elementwise(
        "scale_by_schedule",
        lambda u, pre: u * pre,
        needs_step=True,
        prepare=lambda dtype, step: _schedule_value(step_size_fn, step - 1, dtype, "step_size_fn"),
        hyperparams={"step_size_fn": step_size_fn},
        math=r"c(t - 1)\, u",
    )


def bias_correction(decay: float | jax.Array, *, step: Any = None) -> GradientTransformation:
    r"""Divides a moving average by :math:`1 - \rho^t`, undoing its bias towards :math:`0`.

    .. math:: \hat{s}_t = \frac{s_t}{1 - \rho^t}

    :math:`t` is the 1-based step (Goodfellow et al., Alg. 8.7, and Kingma & Ba, 2015,
    use the step power; see docs/rules.md for a common misprint). The factor is
    computed as ``-expm1(t log ρ)`` so that float32 tracks float64 to about 1e-7
    (see :func:`gbopt._numerics.one_minus_power`).

    Args:
      decay: :math:`\rho` of the moving average being corrected, in [0, 1).
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count (a :class:`gbopt.StepCountState`) when used alone.
    """
    _validate.decay_rate("decay", decay)
    check_step_argument("bias_correction", step)
    return declare_powers(
        elementwise(
            "bias_correction",
            lambda u, pre: _numerics.debias(u, pre),
            needs_step=True,
            prepare=lambda dtype, step: _numerics.bias_factor(
                decay, step, _dtypes.real_dtype(dtype)
            ),
            hyperparams={"decay": decay},
            math=r"\frac{u}{1 - \rho^t}",
        ),
        decay,
    )
