"""Statistics of the updates stream: momentum, moving averages, accumulated squares.

Each replaces the incoming updates by a running statistic of them, keeps that statistic
in its state (in at least float32, see :mod:`gbopt._tree`), and returns it in the
dtype of the incoming updates.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gbopt import _numerics, _tree, _validate
from gbopt._base import EMPTY_STATE, GradientTransformation, expect_state


def _check(updates, stats, name: str) -> None:
    _tree.check_matches(updates, stats, what="updates", reference_name=f"state's `{name}`")


class TraceState(NamedTuple):
    """State of :func:`trace`.

    Attributes:
      trace: the velocity :math:`v`, one array per parameter.
    """

    trace: Any


def trace(decay: float | jax.Array, *, nesterov: bool = False) -> GradientTransformation:
    r"""Momentum: accumulates a decaying sum of the updates (the velocity).

    .. math::
        v_t = \mu\, v_{t-1} + u_t, \qquad
        \text{output} = v_t \;\text{or, with Nesterov,}\; u_t + \mu\, v_t

    Placed after :func:`gbopt.scale_by_learning_rate`, :math:`v` is the textbook's
    velocity (:math:`v \leftarrow \mu v - \alpha g`, Goodfellow et al. Alg. 8.2), and the
    Nesterov output gives parameters equal to the book's interim point
    :math:`w + \mu v` (Alg. 8.3 reformulated; Sutskever et al., 2013).

    Args:
      decay: :math:`\mu`, in [0, 1).
      nesterov: return :math:`u_t + \mu v_t` instead of :math:`v_t`.

    Returns:
      A transform with state :class:`TraceState`; :math:`v_0 = 0`.

    Raises:
      ValueError: ``decay`` outside [0, 1) or NaN, or ``nesterov=True`` with ``decay=0``.
      TypeError: ``decay`` not a real number, or ``nesterov`` not a bool.
    """
    _validate.decay_rate("decay", decay)
    _validate.flag("nesterov", nesterov)
    if nesterov:
        _validate.nesterov_momentum("decay", decay)

    def init_fn(params):
        return TraceState(_tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(state, TraceState, "trace")
        _check(updates, state.trace, "trace")

        def leaf(u, v):
            mu, g = _tree.scalar(decay, v.dtype), _tree.cast(u, v.dtype)
            v = mu * v + g
            out = g + mu * v if nesterov else v
            return _tree.cast(out, u.dtype), v

        out, v = _tree.map_leaves(leaf, 2, updates, state.trace)
        return out, TraceState(v)

    return GradientTransformation(init_fn, update_fn)


class EmaState(NamedTuple):
    """State of :func:`ema`.

    Attributes:
      mu: the moving average (Adam's first moment :math:`s`), one array per parameter.
    """

    mu: Any


def ema(
    decay: float | jax.Array,
    *,
    debias: bool = False,
    dtype: Any = None,
    initial_value: float = 0.0,
) -> GradientTransformation:
    r"""Exponential moving average of the updates (the first moment).

    .. math:: s_t = \rho\, s_{t-1} + (1 - \rho)\, u_t, \qquad s_0 = 0

    Args:
      decay: :math:`\rho`, in [0, 1).
      debias: follow with :func:`bias_correction` (own step count), returning
        :math:`s_t / (1 - \rho^t)`.
      dtype: the dtype :math:`s` is stored in (optax's ``mu_dtype``); ``None``: the
        parameters' dtype promoted to at least float32. A narrower dtype saves memory and
        rounds :math:`s` at every step.
      initial_value: :math:`s_0`, a finite number (0; Yogi starts from 1e-6).

    Returns:
      A transform with state :class:`EmaState` (or ``(EmaState, BiasCorrectionState)``
      when ``debias``).
    """
    _validate.decay_rate("decay", decay)
    _validate.flag("debias", debias)
    _validate.finite("initial_value", initial_value)
    if debias:
        from gbopt._combine import chain

        return chain(ema(decay, dtype=dtype, initial_value=initial_value), bias_correction(decay))
    stored = _tree.state_dtype if dtype is None else _tree.fixed_dtype(dtype)

    def init_fn(params):
        return EmaState(_tree.full_like(params, initial_value, stored))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(state, EmaState, "ema")
        _check(updates, state.mu, "mu")

        def leaf(u, s):
            new = _tree.moving_average(_tree.cast(s, _tree.state_dtype(s.dtype)), u, decay)
            return _tree.cast(new, u.dtype), _tree.cast(new, s.dtype)

        out, mu = _tree.map_leaves(leaf, 2, updates, state.mu)
        return out, EmaState(mu)

    return GradientTransformation(init_fn, update_fn)


class AccumulateSquareState(NamedTuple):
    """State of :func:`accumulate_square`.

    Attributes:
      nu: the accumulated squares :math:`r` (a sum, or a moving average), one array per
        parameter.
    """

    nu: Any


def accumulate_square(
    decay: float | jax.Array | None = None, *, initial_accumulator_value: float = 0.0
) -> GradientTransformation:
    r"""Accumulates the squared updates: a sum (AdaGrad) or a moving average (RMSProp, Adam).

    .. math::
        r_t = r_{t-1} + u_t^2 \quad (\text{decay is None}), \qquad
        r_t = \rho\, r_{t-1} + (1 - \rho)\, u_t^2 \quad (\text{otherwise})

    Args:
      decay: ``None`` for the sum of squares, or :math:`\rho` in [0, 1).
      initial_accumulator_value: :math:`r_0` (>= 0); 0 in the textbook and PyTorch,
        0.1 in optax's ``adagrad``.

    Returns:
      A transform with state :class:`AccumulateSquareState`; it outputs :math:`r_t`.
    """
    if decay is not None:
        _validate.decay_rate("decay", decay)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)

    def init_fn(params):
        return AccumulateSquareState(_tree.full_like(params, initial_accumulator_value))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(state, AccumulateSquareState, "accumulate_square")
        _check(updates, state.nu, "nu")

        def leaf(u, r):
            g = _tree.cast(u, r.dtype)
            if decay is None:
                r = r + g * g
            else:
                r = _tree.moving_average(r, g * g, decay)
            return _tree.cast(r, u.dtype), r

        out, nu = _tree.map_leaves(leaf, 2, updates, state.nu)
        return out, AccumulateSquareState(nu)

    return GradientTransformation(init_fn, update_fn)


class BiasCorrectionState(NamedTuple):
    """State of :func:`bias_correction` when it keeps its own step count.

    Attributes:
      count: updates applied so far (int32, saturating).
    """

    count: jax.Array


def bias_correction(
    decay: float | jax.Array, *, step: jax.Array | None = None
) -> GradientTransformation:
    r"""Divides a moving average by :math:`1 - \rho^t`, undoing its bias towards :math:`0`.

    .. math:: \hat{s}_t = \frac{s_t}{1 - \rho^t}

    :math:`t` is the 1-based step (the seed document prints :math:`1 - \rho`; the book's
    Alg. 8.7 and Kingma & Ba (2015) use the step power). The factor is computed as
    ``-expm1(t log ρ)`` so that float32 tracks float64 to about 1e-7
    (see :func:`gbopt._numerics.one_minus_power`).

    Args:
      decay: :math:`\rho` of the moving average being corrected, in [0, 1).
      step: the 1-based step when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count in :class:`BiasCorrectionState`.
    """
    _validate.decay_rate("decay", decay)

    def correct(updates, t):
        factor = _tree.per_dtype(lambda dtype: _numerics.one_minus_power(decay, t, dtype))

        def leaf(u):
            u = _tree.as_array(u)
            wide = _tree.state_dtype(u.dtype)
            return _tree.cast(_tree.cast(u, wide) / factor(wide), u.dtype)

        return jax.tree.map(leaf, updates)

    if step is not None:

        def init_shared(params):
            del params
            return EMPTY_STATE

        def update_shared(updates, state, params=None, **extra_args):
            del params, extra_args
            return correct(updates, step), state

        return GradientTransformation(init_shared, update_shared)

    def init_fn(params):
        return BiasCorrectionState(_tree.zero_count(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(state, BiasCorrectionState, "bias_correction")
        count = _numerics.safe_increment(state.count)
        return correct(updates, count), BiasCorrectionState(count)

    return GradientTransformation(init_fn, update_fn)
