r"""Primitives that PyTorch's update rules need beyond the seed's.

Each is a small statistic or map of the updates stream, like those of
:mod:`gbopt._moments`, and each is useful on its own:

* :func:`scale_by_schedule`: multiply by a schedule of the step (PyTorch's first,
  undamped momentum step and Adagrad's ``lr_decay`` are schedules);
* :func:`running_max`: the running maximum of a statistic (AMSGrad);
* :func:`accumulate_centered_square`: a moving estimate of the variance
  :math:`\mathbb{E}[g^2] - \mathbb{E}[g]^2`, clamped at 0 (centered RMSProp);
* :func:`accumulate_inf_norm`: the exponentially weighted infinity norm (Adamax);
* :func:`nadam_momentum`: NAdam's Nesterov momentum with Dozat's momentum schedule.

:mod:`gbopt.pytorch` composes them with the core primitives into ``torch.optim``'s rules.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _numerics, _tree, _validate
from gbopt._base import EMPTY_STATE, GradientTransformation


def _check(updates, stats, name: str) -> None:
    _tree.check_matches(updates, stats, what="updates", reference_name=f"state's `{name}`")


class ScaleByScheduleState(NamedTuple):
    r"""State of :func:`scale_by_schedule` when it keeps its own step count.

    Attributes:
      count: updates applied so far; the schedule is read at this value.
    """

    count: jax.Array


def scale_by_schedule(
    step_size_fn: Callable[[jax.Array], Any], *, step: jax.Array | None = None
) -> GradientTransformation:
    r"""Multiplies the updates by a schedule of the step count.

    .. math:: u \leftarrow c(t - 1)\, u

    The schedule is read at the number of updates applied before this one (0 at the
    first step), as optax's schedules and ``optax.scale_by_schedule`` are. Unlike
    :func:`gbopt.scale_by_learning_rate` it never flips the sign.

    Args:
      step_size_fn: a function ``count -> factor`` (it may use ``jnp.where`` on the
        count, e.g. PyTorch's momentum dampening, which is 1 at the first step).
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count in :class:`ScaleByScheduleState`.

    Returns:
      A transform with state :class:`ScaleByScheduleState` (or ``()`` when
      ``step`` is given).

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

    def scaled(updates, factor):
        def leaf(u):
            wide = _tree.state_dtype(u.dtype)
            return (u.astype(wide) * _tree.scalar(factor, wide)).astype(u.dtype)

        return jax.tree.map(leaf, updates)

    if step is not None:
        factor = _numerics.schedule_value(step_size_fn, step - 1, "step_size_fn")

        def init_shared(params):
            del params
            return EMPTY_STATE

        def update_shared(updates, state, params=None, **extra_args):
            del params, extra_args
            return scaled(updates, factor), state

        return GradientTransformation(init_shared, update_shared)

    def init_fn(params):
        return ScaleByScheduleState(_tree.zero_count(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        out = scaled(updates, _numerics.schedule_value(step_size_fn, state.count, "step_size_fn"))
        return out, ScaleByScheduleState(_numerics.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


class RunningMaxState(NamedTuple):
    r"""State of :func:`running_max`.

    Attributes:
      maximum: the largest value seen so far (and 0), one array per parameter; AMSGrad's
        :math:`v^{\max}`.
    """

    maximum: Any


def running_max() -> GradientTransformation:
    r"""Replaces the updates by their running element-wise maximum (AMSGrad).

    .. math:: m_t = \max(m_{t-1}, u_t), \qquad m_0 = 0

    Placed after :func:`gbopt.accumulate_square` and before the bias correction, it is
    AMSGrad as PyTorch computes it (the maximum of the **raw** second moment, later
    divided by :math:`1 - \beta_2^t`). ``optax.scale_by_amsgrad`` takes the maximum of the
    bias-corrected moment instead (put this transform after
    :func:`gbopt.bias_correction` for that rule).

    Returns:
      A transform with state :class:`RunningMaxState`; it outputs :math:`m_t`. For the
      non-negative statistics it is meant for, :math:`m_t` is the largest input so far.

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    def init_fn(params):
        return RunningMaxState(_tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _check(updates, state.maximum, "maximum")

        def leaf(u, m):
            m = jnp.maximum(m, u.astype(m.dtype))
            return m.astype(u.dtype), m

        out, maximum = _tree.map_leaves(leaf, 2, updates, state.maximum)
        return out, RunningMaxState(maximum)

    return GradientTransformation(init_fn, update_fn)


class AccumulateCenteredSquareState(NamedTuple):
    r"""State of :func:`accumulate_centered_square`.

    Attributes:
      mu: the moving average of the updates :math:`\bar g`, one array per parameter.
      nu: the moving average of their squares :math:`r`, one array per parameter.
    """

    mu: Any
    nu: Any


def accumulate_centered_square(
    decay: float | jax.Array, *, initial_accumulator_value: float = 0.0
) -> GradientTransformation:
    r"""A moving estimate of the variance of the updates (centered RMSProp), clamped at 0.

    .. math::
        \bar g_t = \rho\, \bar g_{t-1} + (1 - \rho)\, u_t, \qquad
        r_t = \rho\, r_{t-1} + (1 - \rho)\, u_t^2, \qquad
        \text{output} = \max(r_t - \bar g_t^2,\; 0)

    Mathematically :math:`r_t - \bar g_t^2 \ge 0` when :math:`r_0 = 0` (it is a weighted
    variance), but round-off can make it negative: PyTorch's centered ``RMSprop`` in
    float32 with a constant gradient reaches :math:`-4.8 \times 10^{-6}` and returns NaN
    from step 132 (CONVENTIONS.md §4.4). The clamp keeps the root defined; where the
    difference is not negative the output is exactly :math:`r_t - \bar g_t^2`.

    Args:
      decay: :math:`\rho` in [0, 1) (PyTorch's ``alpha``).
      initial_accumulator_value: :math:`r_0` >= 0 (optax's ``initial_scale``); 0 in
        PyTorch. :math:`\bar g_0 = 0` always.

    Returns:
      A transform with state :class:`AccumulateCenteredSquareState`.

    References:
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013, eq. 38-45.
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)

    def init_fn(params):
        mu = _tree.zeros_like(params)
        nu = _tree.full_like(params, initial_accumulator_value)
        return AccumulateCenteredSquareState(mu, nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _check(updates, state.mu, "mu")
        _check(updates, state.nu, "nu")

        def leaf(u, m, r):
            g = u.astype(r.dtype)
            m = _tree.moving_average(m, g, decay)
            r = _tree.moving_average(r, g * g, decay)
            variance = jnp.maximum(r - m * m, jnp.zeros([], r.dtype))
            return variance.astype(u.dtype), m, r

        out, mu, nu = _tree.map_leaves(leaf, 3, updates, state.mu, state.nu)
        return out, AccumulateCenteredSquareState(mu, nu)

    return GradientTransformation(init_fn, update_fn)


class AccumulateInfNormState(NamedTuple):
    r"""State of :func:`accumulate_inf_norm`.

    Attributes:
      nu: the weighted infinity norm :math:`u_t` of Adamax, one array per parameter.
    """

    nu: Any


def accumulate_inf_norm(
    decay: float | jax.Array, *, eps: float | jax.Array = 0.0
) -> GradientTransformation:
    r"""The exponentially weighted infinity norm of the updates (Adamax's denominator).

    .. math:: n_t = \max(\rho\, n_{t-1},\; |u_t| + \delta), \qquad n_0 = 0

    This is the limit :math:`p \to \infty` of the :math:`p`-th root of a moving average of
    :math:`|u|^p` (Kingma & Ba, §7.1). PyTorch's ``Adamax`` and optax's ``adamax`` add
    ``eps`` inside the maximum, as here, so that :math:`n_t > 0` even for a zero
    gradient (the paper has no ``eps``).

    Args:
      decay: :math:`\rho` in [0, 1) (Adam's :math:`\beta_2`).
      eps: :math:`\delta` >= 0, inside the maximum.

    Returns:
      A transform with state :class:`AccumulateInfNormState`; it outputs :math:`n_t`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1.
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("eps", eps)

    def init_fn(params):
        return AccumulateInfNormState(_tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _check(updates, state.nu, "nu")

        def leaf(u, n):
            g = u.astype(n.dtype)
            n = jnp.maximum(
                _tree.scalar(decay, n.dtype) * n, jnp.abs(g) + _tree.scalar(eps, n.dtype)
            )
            return n.astype(u.dtype), n

        out, nu = _tree.map_leaves(leaf, 2, updates, state.nu)
        return out, AccumulateInfNormState(nu)

    return GradientTransformation(init_fn, update_fn)


class NadamMomentumState(NamedTuple):
    r"""State of :func:`nadam_momentum`.

    Attributes:
      mu: the moving average of the updates :math:`m_t`, one array per parameter.
      mu_product: :math:`\prod_{k \le t} \mu_k`, one scalar (in the widest statistics
        dtype of the parameters: float64 for float64 parameters).
    """

    mu: Any
    mu_product: jax.Array


def _momentum_at(b1, log_decay: Any, t: jax.Array, dtype) -> jax.Array:
    r"""Dozat's schedule :math:`\mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi})`.

    ``log_decay`` is :math:`\psi \log 0.96`, so :math:`0.96^{t\psi}` = ``exp(t * log_decay)``.
    """
    power = jnp.exp(t.astype(dtype) * _tree.scalar(log_decay, dtype))
    return _tree.scalar(b1, dtype) * (1 - jnp.asarray(0.5, dtype) * power)


def nadam_momentum(
    b1: float | jax.Array = 0.9,
    momentum_decay: float | jax.Array = 4e-3,
    *,
    step: jax.Array | None = None,
) -> GradientTransformation:
    r"""NAdam's numerator: Nesterov momentum with Dozat's momentum schedule.

    .. math::
        \mu_t = \beta_1 \left(1 - \tfrac12\, 0.96^{t \psi}\right), \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, u_t, \\
        \text{output} = \frac{1 - \mu_t}{1 - \prod_{k \le t} \mu_k}\, u_t
          + \frac{\mu_{t+1}}{1 - \prod_{k \le t+1} \mu_k}\, m_t

    Divided by :math:`\sqrt{\hat r_t} + \delta` this is PyTorch's ``NAdam``. The product
    of the :math:`\mu_k` is kept in the state, as PyTorch keeps it. With
    ``momentum_decay=inf`` (:math:`0.96^{\infty} = 0`, so :math:`\mu_t = \beta_1`) the
    output is optax's ``nadam`` numerator
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) u_t / (1 - \beta_1^t)`.

    .. warning:: PyTorch keeps :math:`\prod \mu_k` in the default dtype (float32 unless
       ``torch.set_default_dtype(torch.float64)``), which adds 3e-9 to 4e-8 of error to a
       float64 run (CONVENTIONS.md §4.7); gbopt keeps it in the parameters' dtype.

    Args:
      b1: :math:`\beta_1` in [0, 1).
      momentum_decay: :math:`\psi` >= 0 (may be ``math.inf``); PyTorch's default 4e-3.
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count (it is wrapped in
        :func:`gbopt.with_step_count`).

    Returns:
      A transform with state :class:`NadamMomentumState` (inside a
      :class:`gbopt.StepCountState` when ``step`` is None).

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """
    _validate.decay_rate("b1", b1)
    _validate_momentum_decay(momentum_decay)
    if step is None:
        from gbopt._combine import with_step_count

        return with_step_count(lambda t: nadam_momentum(b1, momentum_decay, step=t))

    if isinstance(momentum_decay, numbers.Real):
        # psi * log(0.96) in float64 at trace time; inf * log(0.96) = -inf gives mu = b1.
        log_decay = -math.inf if math.isinf(momentum_decay) else momentum_decay * math.log(0.96)
    else:
        log_decay = jnp.asarray(momentum_decay) * math.log(0.96)

    def product_dtype(tree):
        dtypes = [_tree.state_dtype(jnp.result_type(x)) for x in jax.tree.leaves(tree)]
        return jnp.result_type(*dtypes) if dtypes else jnp.dtype(jnp.float32)

    def init_fn(params):
        mu = _tree.zeros_like(params)
        return NadamMomentumState(mu, _tree.scalar_like(params, 1, product_dtype(mu)))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _check(updates, state.mu, "mu")
        dtype = state.mu_product.dtype
        mu_t = _momentum_at(b1, log_decay, step, dtype)
        mu_next = _momentum_at(b1, log_decay, step + 1, dtype)
        product = state.mu_product * mu_t
        coef_grad = (1 - mu_t) / (1 - product)
        coef_mu = mu_next / (1 - product * mu_next)

        def leaf(u, m):
            g = u.astype(m.dtype)
            m = _tree.moving_average(m, g, b1)
            out = coef_grad.astype(m.dtype) * g + coef_mu.astype(m.dtype) * m
            return out.astype(u.dtype), m

        out, mu = _tree.map_leaves(leaf, 2, updates, state.mu)
        return out, NadamMomentumState(mu, product)

    return GradientTransformation(init_fn, update_fn)


def _validate_momentum_decay(value: Any) -> None:
    r"""``momentum_decay`` is a number >= 0 and may be ``inf`` (then :math:`\mu_t = \beta_1`)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not value >= 0:
        raise ValueError(
            f"`momentum_decay` must be a number >= 0 (math.inf is allowed and makes the "
            f"momentum constant, mu_t = b1, as in optax.nadam); got {value!r}."
        )
    if not (isinstance(value, numbers.Real) and math.isinf(value)):
        _validate.non_negative("momentum_decay", value)
