r"""Statistics of the updates stream: momentum, moving averages, accumulated squares.

Each replaces the incoming updates by a running statistic of them and keeps that statistic
in its state. Each is a leaf rule handed to :func:`gbopt._base.statistic`, which does the
rest (state checks, initial state, dtype policy, step count): a new statistic is its rule,
its state type and its docstring. ``dtype=`` sets a statistic's storage dtype; the rule
still computes in at least float32. By default a first moment (:func:`trace`, :func:`ema`,
:func:`nadam_momentum`'s :math:`m`) is stored in the parameters' dtype, bfloat16 included,
and every other statistic in at least float32 (:func:`gbopt._dtypes.storage`).

Symbols: :math:`u_t` the incoming update, :math:`\rho` a decay, :math:`t` the 1-based step.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _numerics, _validate
from gbopt._base import GradientTransformation, check_step_argument, statistic


class TraceState(NamedTuple):
    """State of :func:`trace`.

    Attributes:
      trace: the velocity :math:`v`, one array per parameter.
    """

    trace: Any


def trace(
    decay: float | jax.Array, *, nesterov: bool = False, dtype: Any = None
) -> GradientTransformation:
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
      dtype: the storage dtype of :math:`v` (None: the parameters' dtype, bfloat16
        included: a first moment follows the parameters).

    Returns:
      A transform with state :class:`TraceState`; :math:`v_0 = 0`.

    Raises:
      ValueError: ``decay`` outside [0, 1) or NaN, or ``nesterov=True`` with ``decay=0``.
      TypeError: ``decay`` not a real number, ``nesterov`` not a bool, or ``dtype`` not a
        floating dtype.
    """
    _validate.decay_rate("decay", decay)
    _validate.flag("nesterov", nesterov)
    if nesterov:
        _validate.nesterov_momentum("decay", decay)

    def rule(u, v):
        mu = _dtypes.scalar(decay, v.dtype)
        v = mu * v + u
        return (u + mu * v if nesterov else v), v

    return statistic(
        "trace",
        TraceState,
        rule,
        dtype=dtype,
        follows_params=("trace",),
        hyperparams={"decay": decay, "nesterov": nesterov},
        math=(r"v \leftarrow \mu v + u;\quad u \leftarrow u + \mu v")
        if nesterov
        else r"v \leftarrow \mu v + u;\quad u \leftarrow v",
    )


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
      debias: return :math:`s_t / (1 - \rho^t)` (what :func:`gbopt.bias_correction` after
        it returns), with the step of an enclosing step owner or a count of its own.
      dtype: the storage dtype of :math:`s` (optax's ``mu_dtype``); None: the
        parameters' dtype, bfloat16 included (a first moment follows the parameters).
      initial_value: :math:`s_0`, a finite number (0; optax's ``yogi`` starts from 1e-6).

    Returns:
      A transform with state :class:`EmaState` (inside a :class:`gbopt.StepCountState`
      when ``debias`` and used alone).
    """
    _validate.decay_rate("decay", decay)
    _validate.flag("debias", debias)
    _validate.finite("initial_value", initial_value)

    if not debias:

        def rule(u, s):
            s = _numerics.moving_average(s, u, decay)
            return s, s

        return statistic(
            "ema",
            EmaState,
            rule,
            init=initial_value,
            dtype=dtype,
            follows_params=("mu",),
            hyperparams={"decay": decay},
            math=r"s \leftarrow \rho s + (1 - \rho) u;\quad u \leftarrow s",
        )

    def debiased(u, s, pre):
        s = _numerics.moving_average(s, u, decay)
        return _numerics.debias(s, pre), s

    return statistic(
        "ema",
        EmaState,
        debiased,
        init=initial_value,
        dtype=dtype,
        follows_params=("mu",),
        needs_step=True,
        prepare=lambda dtype_, step: _numerics.bias_factor(decay, step, _dtypes.real_dtype(dtype_)),
        hyperparams={"decay": decay, "debias": True},
        math=r"s \leftarrow \rho s + (1 - \rho) u;\quad u \leftarrow \frac{s}{1 - \rho^t}",
    )


class AccumulateSquareState(NamedTuple):
    """State of :func:`accumulate_square`.

    Attributes:
      nu: the accumulated squares :math:`r` (a sum, or a moving average), one array per
        parameter (real, also for complex parameters).
    """

    nu: Any


def accumulate_square(
    decay: float | jax.Array | None = None,
    *,
    initial_accumulator_value: float = 0.0,
    dtype: Any = None,
) -> GradientTransformation:
    r"""Accumulates the squared updates: a sum (AdaGrad) or a moving average (RMSProp, Adam).

    .. math::
        r_t = r_{t-1} + |u_t|^2 \quad (\text{decay is None}), \qquad
        r_t = \rho\, r_{t-1} + (1 - \rho)\, |u_t|^2 \quad (\text{otherwise})

    For complex updates :math:`|u|^2 = u \bar u` is real, and so is :math:`r` (optax's
    convention); for real ones it is :math:`u^2`.

    Args:
      decay: ``None`` for the sum of squares, or :math:`\rho` in [0, 1).
      initial_accumulator_value: :math:`r_0` (>= 0); 0 in the textbook and PyTorch,
        0.1 in optax's ``adagrad``.
      dtype: the storage dtype of :math:`r` (``nu_dtype``).

    Returns:
      A transform with state :class:`AccumulateSquareState`; it outputs :math:`r_t`.
    """
    if decay is not None:
        _validate.decay_rate("decay", decay)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)

    def rule(u, r):
        square = _numerics.abs_square(u)
        if decay is None:
            r = r + square
        else:
            r = _numerics.moving_average(r, square, decay, keep_infinite=True)
        return r, r

    return statistic(
        "accumulate_square",
        AccumulateSquareState,
        rule,
        init=initial_accumulator_value,
        dtype=dtype,
        real=("nu",),
        hyperparams={"decay": decay, "initial_accumulator_value": initial_accumulator_value},
        math=r"r \leftarrow r + |u|^2;\quad u \leftarrow r"
        if decay is None
        else r"r \leftarrow \rho r + (1 - \rho) |u|^2;\quad u \leftarrow r",
    )


class AccumulateCenteredSquareState(NamedTuple):
    r"""State of :func:`accumulate_centered_square`.

    Attributes:
      mu: the moving average of the updates :math:`\bar g`, one array per parameter.
      nu: the moving average of their squares :math:`r`, one array per parameter.
    """

    mu: Any
    nu: Any


def accumulate_centered_square(
    decay: float | jax.Array, *, initial_accumulator_value: float = 0.0, dtype: Any = None
) -> GradientTransformation:
    r"""A moving estimate of the variance of the updates (centered RMSProp), clamped at 0.

    .. math::
        \bar g_t = \rho\, \bar g_{t-1} + (1 - \rho)\, u_t, \qquad
        r_t = \rho\, r_{t-1} + (1 - \rho)\, |u_t|^2, \qquad
        \text{output} = \max(r_t - |\bar g_t|^2,\; 0)

    Mathematically :math:`r_t - \bar g_t^2 \ge 0` when :math:`r_0 = 0` (it is a weighted
    variance), but round-off can make it negative: PyTorch's centered ``RMSprop`` in
    float32 with a constant gradient reaches :math:`-4.8 \times 10^{-6}` and returns NaN
    from step 132 (docs/conventions.md). The clamp keeps the root defined; where the
    difference is not negative the output is exactly :math:`r_t - \bar g_t^2`.

    Args:
      decay: :math:`\rho` in [0, 1) (PyTorch's ``alpha``).
      initial_accumulator_value: :math:`r_0` >= 0 (optax's ``initial_scale``); 0 in
        PyTorch. :math:`\bar g_0 = 0` always.
      dtype: the storage dtype of both statistics; None: the parameters' dtype, at least
        float32, for both. :math:`\bar g` is a first moment but only feeds the variance
        :math:`r - |\bar g|^2`, where the subtraction cancels leading digits: a bfloat16
        :math:`\bar g` (relative error up to :math:`2^{-8}`, so :math:`2^{-7}` in
        :math:`\bar g^2`) can swamp a small variance, so it does not follow the
        parameters.

    Returns:
      A transform with state :class:`AccumulateCenteredSquareState`.

    References:
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013, eq. 38-45.
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)

    def rule(u, m, r):
        m = _numerics.moving_average(m, u, decay)
        r = _numerics.moving_average(r, _numerics.abs_square(u), decay, keep_infinite=True)
        return jnp.maximum(r - _numerics.abs_square(m), jnp.zeros([], r.dtype)), m, r

    return statistic(
        "accumulate_centered_square",
        AccumulateCenteredSquareState,
        rule,
        init=(0.0, initial_accumulator_value),
        dtype=dtype,
        real=("nu",),
        hyperparams={"decay": decay, "initial_accumulator_value": initial_accumulator_value},
        math=r"\bar g \leftarrow \rho \bar g + (1 - \rho) u;\quad "
        r"r \leftarrow \rho r + (1 - \rho) |u|^2;\quad u \leftarrow \max(r - |\bar g|^2, 0)",
    )


class AccumulateInfNormState(NamedTuple):
    r"""State of :func:`accumulate_inf_norm`.

    Attributes:
      nu: the weighted infinity norm :math:`u_t` of Adamax, one array per parameter.
    """

    nu: Any


def accumulate_inf_norm(
    decay: float | jax.Array, *, eps: float | jax.Array = 0.0, dtype: Any = None
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
      dtype: the storage dtype of :math:`n`.

    Returns:
      A transform with state :class:`AccumulateInfNormState`; it outputs :math:`n_t`.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1.
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("eps", eps)

    def rule(u, n):
        n = jnp.maximum(
            _dtypes.scalar(decay, n.dtype) * n, jnp.abs(u) + _dtypes.scalar(eps, n.dtype)
        )
        return n, n

    return statistic(
        "accumulate_inf_norm",
        AccumulateInfNormState,
        rule,
        dtype=dtype,
        real=("nu",),
        hyperparams={"decay": decay, "eps": eps},
        math=r"n \leftarrow \max(\rho n, |u| + \delta);\quad u \leftarrow n",
    )


class RunningMaxState(NamedTuple):
    r"""State of :func:`running_max`.

    Attributes:
      maximum: the largest value seen so far (and 0), one array per parameter; AMSGrad's
        :math:`v^{\max}`.
    """

    maximum: Any


def running_max(*, dtype: Any = None) -> GradientTransformation:
    r"""Replaces the updates by their running element-wise maximum (AMSGrad).

    .. math:: m_t = \max(m_{t-1}, u_t), \qquad m_0 = 0

    Placed after :func:`gbopt.accumulate_square` and before the bias correction, it is
    AMSGrad as PyTorch computes it (the maximum of the **raw** second moment, later
    divided by :math:`1 - \beta_2^t`). ``optax.scale_by_amsgrad`` takes the maximum of the
    bias-corrected moment instead (put this transform after
    :func:`gbopt.bias_correction` for that rule).

    Args:
      dtype: the storage dtype of :math:`m`.

    Returns:
      A transform with state :class:`RunningMaxState`; it outputs :math:`m_t`. For the
      non-negative statistics it is meant for, :math:`m_t` is the largest input so far.

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    def rule(u, m):
        m = jnp.maximum(m, jnp.real(u))
        return m, m

    return statistic(
        "running_max",
        RunningMaxState,
        rule,
        dtype=dtype,
        real=("maximum",),
        math=r"m \leftarrow \max(m, u);\quad u \leftarrow m",
    )


class NadamMomentumState(NamedTuple):
    r"""State of :func:`nadam_momentum`.

    Attributes:
      mu: the moving average of the updates :math:`m_t`, one array per parameter.
      mu_product: :math:`\prod_{k \le t} \mu_k`, one scalar (in the widest statistics
        dtype of the parameters: float64 for float64 parameters).
    """

    mu: Any
    mu_product: Any


def _momentum_at(b1, log_decay: Any, t: jax.Array, dtype) -> jax.Array:
    r"""Dozat's schedule :math:`\mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi})`.

    ``log_decay`` is :math:`\psi \log 0.96`, so :math:`0.96^{t\psi}` = ``exp(t * log_decay)``.
    With ``momentum_decay=inf`` (``log_decay`` is -inf) that is 0 at every step
    :math:`t \ge 1` and :math:`\mu_t = \beta_1`, returned as a constant: no exponential
    traced into the step (one scalar kernel less to compile), the same value.
    """
    if isinstance(log_decay, float) and log_decay == -math.inf:
        return _dtypes.scalar(b1, dtype)
    power = jnp.exp(t.astype(dtype) * _dtypes.scalar(log_decay, dtype))
    return _dtypes.scalar(b1, dtype) * (1 - jnp.asarray(0.5, dtype) * power)


def nadam_momentum(
    b1: float | jax.Array = 0.9,
    momentum_decay: float | jax.Array = 4e-3,
    *,
    step: Any = None,
    dtype: Any = None,
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
       float64 run (docs/conventions.md); gbopt keeps it in the parameters' dtype.

    Args:
      b1: :math:`\beta_1` in [0, 1).
      momentum_decay: :math:`\psi` >= 0 (may be ``math.inf``); PyTorch's default 4e-3.
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.
      dtype: the storage dtype of :math:`m`.

    Returns:
      A transform with state :class:`NadamMomentumState` (inside a
      :class:`gbopt.StepCountState` when it keeps its own count).

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """
    _validate.decay_rate("b1", b1)
    _validate_momentum_decay(momentum_decay)
    check_step_argument("nadam_momentum", step)
    if isinstance(momentum_decay, numbers.Real):
        # psi * log(0.96) in float64 at trace time; inf * log(0.96) = -inf gives mu = b1.
        log_decay = -math.inf if math.isinf(momentum_decay) else momentum_decay * math.log(0.96)
    else:
        log_decay = jnp.asarray(momentum_decay) * math.log(0.96)

    def prepare(dtype_, step, mu_product):
        # Once per update, in the product's (widest) dtype: the coefficients and the new
        # product are scalars that every leaf shares.
        dtype_ = mu_product.dtype
        mu_t = _momentum_at(b1, log_decay, step, dtype_)
        mu_next = _momentum_at(b1, log_decay, step + 1, dtype_)
        product = mu_product * mu_t
        # Both coefficients as one vector, (1 - mu_t) / (1 - product * 1) and
        # mu_next / (1 - product * mu_next): one scalar kernel in the compiled step, not two.
        one = jnp.ones([], dtype_)
        numerators = jnp.stack([1 - jnp.asarray(mu_t, dtype_), jnp.asarray(mu_next, dtype_)])
        coefficients = numerators / (1 - product * jnp.stack([one, jnp.asarray(mu_next, dtype_)]))
        return coefficients[0], coefficients[1], product

    def rule(u, m, product, pre):
        coef_grad, coef_mu, product = pre
        m = _numerics.moving_average(m, u, b1)
        # the real coefficients cast to the (possibly complex) dtypes, as JAX's standard
        # promotion does, so that the rule also runs under strict promotion
        return coef_grad.astype(u.dtype) * u + coef_mu.astype(m.dtype) * m, m, product

    return statistic(
        "nadam_momentum",
        NadamMomentumState,
        rule,
        init=(0.0, 1.0),
        dtype=(dtype, None),
        follows_params=("mu",),
        shared=("mu_product",),
        needs_step=True,
        prepare=prepare,
        hyperparams={"b1": b1, "momentum_decay": momentum_decay},
        math=_NADAM_CONSTANT_MATH
        if isinstance(momentum_decay, numbers.Real) and math.isinf(momentum_decay)
        else _NADAM_MATH,
    )


# The state's fields in order: m (``mu``), then the product pi (``mu_product``).
_NADAM_MATH = (
    r"\mu_t = \beta_1 (1 - \tfrac12 0.96^{t\psi});\quad m \leftarrow \beta_1 m + "
    r"(1 - \beta_1) u;\quad \pi \leftarrow \pi \mu_t;\quad "
    r"u \leftarrow \frac{1 - \mu_t}{1 - \pi} u + \frac{\mu_{t+1}}{1 - \pi \mu_{t+1}} m"
)
# With momentum_decay=inf, mu_t = b1 and pi = b1^t.
_NADAM_CONSTANT_MATH = (
    r"m \leftarrow \beta_1 m + (1 - \beta_1) u;\quad \pi \leftarrow \beta_1 \pi;\quad "
    r"u \leftarrow \frac{(1 - \beta_1) u}{1 - \pi} + \frac{\beta_1 m}{1 - \beta_1 \pi}"
)


def _validate_momentum_decay(value: Any) -> None:
    r"""``momentum_decay`` is a number >= 0 and may be ``inf`` (then :math:`\mu_t = \beta_1`)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not value >= 0:
        raise ValueError(
            f"`momentum_decay` must be a number >= 0 (math.inf is allowed and makes the "
            f"momentum constant, mu_t = b1, as in optax.nadam); got {value!r}."
        )
    if not (isinstance(value, numbers.Real) and math.isinf(value)):
        _validate.non_negative("momentum_decay", value)
