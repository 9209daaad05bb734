"""Stateless element-wise maps of the updates stream."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _numerics, _tree, _validate
from gbopt._base import EMPTY_STATE, GradientTransformation, ScalarOrSchedule, expect_state


def _stateless(leaf_fn) -> GradientTransformation:
    """A transform applying ``leaf_fn(u, wide_dtype)`` to every leaf, in the wide dtype."""

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(u):
            u = _tree.as_array(u)
            wide = _tree.state_dtype(u.dtype)
            return _tree.cast(leaf_fn(_tree.cast(u, wide), wide), u.dtype)

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


def scale(step_size: float | jax.Array) -> GradientTransformation:
    r"""Multiplies the updates by a constant.

    .. math:: u \leftarrow c\, u

    Args:
      step_size: the factor :math:`c` (a number or an array; it may be negative).
    """
    _validate.finite("step_size", step_size)
    return _stateless(lambda u, dtype: u * _tree.scalar(step_size, dtype))


def _check_params(updates, params) -> None:
    if params is not None:
        _tree.check_matches(updates, params, what="updates", reference_name="params")


def _checking_params(tx: GradientTransformation) -> GradientTransformation:
    """``tx`` with the parameter checks of :func:`scale_by_learning_rate` added."""

    def init_fn(params):
        if params is not None:
            _tree.check_float_params(params)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        _check_params(updates, params)
        return tx.update(updates, state, params, **extra_args)

    return GradientTransformation(init_fn, update_fn)


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate` with a schedule and no shared step.

    Attributes:
      count: updates applied so far; the schedule is read at this value.
    """

    count: jax.Array


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True, step: jax.Array | None = None
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
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise a schedule keeps its own count in :class:`ScaleByLearningRateState`.

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
    sign = -1 if flip_sign else 1

    if not callable(learning_rate):
        return _checking_params(
            _stateless(lambda u, dtype: u * (sign * _tree.scalar(learning_rate, dtype)))
        )

    if step is not None:
        lr = _numerics.schedule_value(learning_rate, step - 1, "learning_rate")
        signed_lr = _tree.per_dtype(lambda dtype: sign * _tree.scalar(lr, dtype))
        return _checking_params(_stateless(lambda u, dtype: u * signed_lr(dtype)))

    def init_fn(params):
        if params is not None:
            _tree.check_float_params(params)
        return ScaleByLearningRateState(_tree.zero_count(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _check_params(updates, params)
        expect_state(state, ScaleByLearningRateState, "scale_by_learning_rate")
        lr = _numerics.schedule_value(learning_rate, state.count, "learning_rate")
        signed_lr = _tree.per_dtype(lambda dtype: sign * _tree.scalar(lr, dtype))

        def leaf(u):
            u = _tree.as_array(u)
            wide = _tree.state_dtype(u.dtype)
            return _tree.cast(_tree.cast(u, wide) * signed_lr(wide), u.dtype)

        updates = jax.tree.map(leaf, updates)
        return updates, ScaleByLearningRateState(_numerics.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def add(value: float | jax.Array) -> GradientTransformation:
    r"""Adds a constant to every element of the updates.

    .. math:: u \leftarrow u + \delta

    With :func:`sqrt` it places ``eps`` inside (``add`` then ``sqrt``, RMSProp) or
    outside (``sqrt`` then ``add``, AdaGrad and Adam) the root of a preconditioner.

    Args:
      value: :math:`\delta`, a finite number (usually ``eps`` >= 0).
    """
    _validate.finite("value", value)
    return _stateless(lambda u, dtype: u + _tree.scalar(value, dtype))


def sqrt() -> GradientTransformation:
    r"""Takes the element-wise square root of the updates.

    .. math:: u \leftarrow \sqrt{u}
    """
    return _stateless(lambda u, dtype: jnp.sqrt(u))
