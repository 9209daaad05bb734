r"""The statistics and maps that the adaptive family (AdaBelief to NovoGrad) adds to the kit.

Each is one small piece of one rule, usable on its own:

* :func:`scale_by_trust_ratio`: the layer-wise trust ratio :math:`\|w\| / \|u\|` (LARS, LAMB);
* :func:`rectification`: RAdam's variance rectification of Adam's denominator;
* :func:`accumulate_belief`: AdaBelief's second moment of :math:`g - m` (the "belief");
* :func:`accumulate_yogi_square`: Yogi's additive second moment;
* :func:`adan_momentum` and :func:`adan_extrapolation`: Adan's Nesterov momentum estimate and
  the extrapolated gradient whose square its denominator averages;
* :func:`accumulate_layer_square`: NovoGrad's layer-wise (one scalar per leaf) second moment.

:mod:`gbopt._adaptive` composes them with the core primitives into optax's optimizers.
Each is a leaf rule handed to the kit (:func:`gbopt._base.statistic`,
:func:`gbopt._base.elementwise`), which keeps the dtype policy (statistics in at least
float32, :math:`|g|^2` of complex parameters real), the state checks and the step count.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _numerics, _validate
from gbopt._base import (
    GradientTransformation,
    check_step_argument,
    declare_powers,
    elementwise,
    statistic,
)

# ---------------------------------------------------------------- trust ratio (LARS, LAMB)


def scale_by_trust_ratio(
    min_norm: float | jax.Array = 0.0,
    trust_coefficient: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
) -> GradientTransformation:
    r"""Scales each leaf by its trust ratio, the norm of the parameter over that of the update.

    .. math::
        u \leftarrow u \cdot \begin{cases}
          \eta\, \dfrac{\max(\|w\|, c)}{\max(\|u\|, c) + \epsilon}
            & \max(\|w\|, c) > 0 \text{ and } \max(\|u\|, c) > 0 \\
          1 & \text{otherwise}
        \end{cases}

    with one ratio per leaf (a layer's weight matrix, its bias): the step of every layer is
    then proportional to the size of its weights, whatever the scale of its gradient. Norms
    are Frobenius norms over the whole leaf (of :math:`|x|` for complex leaves). A leaf
    whose parameter or update is zero keeps its update (the ratio would be 0 or undefined).
    Same rule as ``optax.scale_by_trust_ratio``.

    Args:
      min_norm: :math:`c` >= 0, the smallest norm used for either side (0: none).
      trust_coefficient: :math:`\eta`, a finite number (LARS's 1e-3; 1 in LAMB).
      eps: :math:`\epsilon` >= 0, added to the update's norm.

    Returns:
      A stateless transform (state ``()``) that needs ``params`` at ``update``.

    Raises:
      ValueError: for a negative, NaN or infinite ``min_norm`` or ``eps``; at ``update``,
        when called without ``params``.

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks" (LARS),
      2017, eq. 6; You et al., "Large Batch Optimization for Deep Learning: Training BERT
      in 76 minutes" (LAMB), ICLR 2020, Alg. 2.
    """
    _validate.non_negative("min_norm", min_norm)
    _validate.finite("trust_coefficient", trust_coefficient)
    _validate.non_negative("eps", eps)

    def fn(u, param):
        real = _dtypes.real_dtype(u.dtype)
        c = _dtypes.scalar(min_norm, real)
        w = _dtypes.cast(param, _dtypes.promote(_dtypes.state_dtype(param.dtype), real))
        w_norm = jnp.maximum(jnp.sqrt(jnp.sum(_numerics.abs_square(w))).astype(real), c)
        u_norm = jnp.maximum(jnp.sqrt(jnp.sum(_numerics.abs_square(u))), c)
        ratio = (
            _dtypes.scalar(trust_coefficient, real) * w_norm / (u_norm + _dtypes.scalar(eps, real))
        )
        ratio = jnp.where((w_norm == 0) | (u_norm == 0), jnp.ones([], real), ratio)
        return u * ratio.astype(u.dtype)

    return elementwise(
        "scale_by_trust_ratio",
        fn,
        needs_params=True,
        hyperparams={"min_norm": min_norm, "trust_coefficient": trust_coefficient, "eps": eps},
        math=r"\eta \frac{\max(\lVert w \rVert, c)}{\max(\lVert u \rVert, c) + \epsilon}\, u",
    )


# ---------------------------------------------------------------- rectification (RAdam)


def _rectifier(b2, threshold, step: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    r"""``(rho_t >= threshold, r_t or 1)`` of RAdam at ``step``, in the real ``dtype``."""
    t = step.astype(dtype)
    if isinstance(b2, numbers.Real) and not isinstance(b2, bool):
        rho_inf = jnp.asarray(2.0 / (1.0 - b2) - 1.0, dtype)
    else:
        rho_inf = 2 / (1 - jnp.asarray(b2).astype(dtype)) - 1
    beta = _dtypes.scalar(b2, dtype)
    # / (1 - b2^t): the step owner's shared factor when it has one (no expm1 of its own).
    rho_t = rho_inf - _numerics.debias(2 * t * beta**t, _numerics.bias_factor(b2, step, dtype))
    r = jnp.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    active = rho_t >= _dtypes.scalar(threshold, dtype)
    return active, jnp.where(active, r, jnp.ones_like(r))


def rectification(
    b2: float | jax.Array = 0.999,
    threshold: float | jax.Array = 5.0,
    *,
    step: Any = None,
) -> GradientTransformation:
    r"""RAdam's rectification of Adam's denominator :math:`d` (applied to the denominator).

    .. math::
        \rho_\infty = \frac{2}{1 - \beta_2} - 1, \qquad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\,\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\,\rho_t}} \\
        d \leftarrow \begin{cases} d / r_t & \rho_t \ge \tau \\ 1 & \text{otherwise}\end{cases}

    :math:`\rho_t` is the length of the simple moving average that Adam's second moment
    approximates at step :math:`t`. While it is short (:math:`\rho_t < \tau`), the variance
    of the adaptive step is intractable and the update is plain momentum (the denominator
    is 1); afterwards the adaptive step is multiplied by :math:`r_t \in (0, 1]`. Placed at
    the end of the denominator branch of :func:`gbopt.divide`, it turns Adam into RAdam:
    :math:`\hat m / (d / r_t) = r_t\, \hat m / d`.

    The paper compares :math:`\rho_t > 4`, optax :math:`\rho_t \ge \tau` (5 by default, as
    Liu et al.'s code), PyTorch :math:`\rho_t > 5`; they differ only on a step where
    :math:`\rho_t` is exactly the threshold.

    Args:
      b2: :math:`\beta_2` in [0, 1), the decay of the second moment being rectified.
      threshold: :math:`\tau`, the shortest average deemed tractable.
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A stateless map of the denominator (state ``()``, or a
      :class:`gbopt.StepCountState` when used alone).

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      Alg. 2 and eq. 7.
    """
    _validate.decay_rate("b2", b2)
    _validate.finite("threshold", threshold)
    check_step_argument("rectification", step)

    def fn(d, pre):
        # (active ? d : 1) / (active ? r : 1): d / r, or exactly 1 while the variance is
        # intractable; a select of the leaf, then a division by a scalar. With the
        # division inside the select, XLA compiled the loop of each leaf shape's first
        # leaf twice, its operands in another order (radam on 39 transformer-shaped
        # leaves: 35 distinct loops against optax's 29; now 28). lax.select: jnp.where's
        # operations without its nested jit call per leaf.
        active, r = pre
        return jax.lax.select(active, d, jnp.ones_like(d)) / r.astype(d.dtype)

    return declare_powers(
        elementwise(
            "rectification",
            fn,
            needs_step=True,
            prepare=lambda dtype, step: _rectifier(b2, threshold, step, _dtypes.real_dtype(dtype)),
            hyperparams={"b2": b2, "threshold": threshold},
            math=r"\rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}"
            r"\text{ with } \rho_\infty = \frac{2}{1 - \beta_2} - 1;\quad "
            r"r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2) \rho_\infty}"
            r"{(\rho_\infty - 4)(\rho_\infty - 2) \rho_t}};\quad "
            r"u \leftarrow \begin{cases} u / r_t & \rho_t \ge \tau \\ 1 & \text{otherwise}"
            r"\end{cases}",
        ),
        b2,
    )


# ---------------------------------------------------------------- belief (AdaBelief)


class AccumulateBeliefState(NamedTuple):
    r"""State of :func:`accumulate_belief`.

    Attributes:
      mu: the moving average :math:`m` of the updates (the prediction).
      nu: the moving average :math:`s` of :math:`|g - m|^2` (the belief), real.
    """

    mu: Any
    nu: Any


def accumulate_belief(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    *,
    eps_root: float | jax.Array = 0.0,
) -> GradientTransformation:
    r"""AdaBelief's second moment: a moving average of the squared prediction error.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, u_t, \qquad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2)\, |u_t - m_t|^2 + \epsilon_r, \qquad
        m_0 = s_0 = 0

    Adam divides by the root of the average :math:`u^2`; AdaBelief divides by the root of
    the average squared distance between the gradient and its prediction :math:`m_t`, so
    that it takes large steps where the gradient is as predicted (its "belief") and small
    ones where it is not. The statistic keeps its own :math:`m`: divided into an
    :func:`gbopt.ema`, the first moment is kept twice (the same number up to its storage
    rounding for bfloat16 parameters); :func:`scale_by_belief`, which :func:`gbopt.adabelief`
    uses, keeps it once for both. Both statistics are stored in at least float32:
    :math:`m` feeds :math:`|g - m|^2`, where its rounding error would be squared into a
    small second moment, so it does not follow the parameters' dtype.

    Args:
      b1: :math:`\beta_1` in [0, 1), the decay of the prediction :math:`m`.
      b2: :math:`\beta_2` in [0, 1), the decay of :math:`s`.
      eps_root: :math:`\epsilon_r` >= 0, added to :math:`s_t` at every step and kept in
        it (optax's ``eps_root``; Zhuang et al.'s Alg. 2 adds its :math:`\epsilon` the
        same way).

    Returns:
      A transform with state :class:`AccumulateBeliefState`; it outputs :math:`s_t`.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, Alg. 2.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps_root", eps_root)

    def rule(u, m, s):
        m = _numerics.moving_average(m, u, b1)
        s = _numerics.moving_average(s, _numerics.abs_square(u - m), b2)
        s = s + _dtypes.scalar(eps_root, s.dtype)
        return s, m, s

    return statistic(
        "accumulate_belief",
        AccumulateBeliefState,
        rule,
        real=("nu",),
        hyperparams={"b1": b1, "b2": b2, "eps_root": eps_root},
        math=r"m \leftarrow \beta_1 m + (1 - \beta_1) u;\quad s \leftarrow \beta_2 s + "
        r"(1 - \beta_2) |u - m|^2 + \epsilon_r;\quad u \leftarrow s",
    )


class ScaleByBeliefState(NamedTuple):
    r"""State of :func:`scale_by_belief`.

    Attributes:
      mu: the first moment :math:`m`, the prediction of the gradient, one array per
        parameter.
      nu: the second moment :math:`s` of the prediction error :math:`|g - m|^2`, real.
    """

    mu: Any
    nu: Any


def scale_by_belief(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-16,
    eps_root: float | jax.Array = 1e-16,
    *,
    nesterov: bool = False,
    step: Any = None,
) -> GradientTransformation:
    r"""AdaBelief's direction: the debiased first moment over the root of the belief.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, u_t, \qquad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2)\, |u_t - m_t|^2 + \epsilon_r, \\
        \text{output} = \frac{m_t / (1 - \beta_1^t)}{\sqrt{s_t / (1 - \beta_2^t)} + \epsilon}

    (with ``nesterov``, the numerator is Dozat's
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) u_t / (1 - \beta_1^t)`).
    One statistic for both halves of the fraction: the belief :math:`s` is the average
    squared distance between the gradient and the very :math:`m` of the numerator, so the
    two are kept together (a ``divide`` of an :func:`gbopt.ema` by
    :func:`accumulate_belief` computes the same rule but keeps :math:`m` twice). Same rule
    as ``optax.scale_by_belief``.

    Args:
      b1: :math:`\beta_1` in [0, 1), the decay of the prediction :math:`m`.
      b2: :math:`\beta_2` in [0, 1), the decay of :math:`s`.
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, added to :math:`s_t` at every step and kept in
        it (as optax; Zhuang et al.'s Alg. 2 adds its :math:`\epsilon` the same way).
      nesterov: Dozat's Nesterov form of the numerator.
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A transform with state :class:`ScaleByBeliefState` (inside a
      :class:`gbopt.StepCountState` when used alone).

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, Alg. 2.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    _validate.flag("nesterov", nesterov)
    check_step_argument("scale_by_belief", step)

    def prepare(dtype, step):
        # The factors 1 / (1 - b^t), shared with the step owner's vector when it has one.
        real = _dtypes.real_dtype(dtype)
        c1 = _numerics.bias_factor(b1, step, real)
        c2 = _numerics.bias_factor(b2, step, real)
        if not nesterov:
            return c1, c1, c2
        return c1, _numerics.bias_factor(b1, _numerics.safe_increment(step), real), c2

    def rule(u, m, s, pre):
        c1, c1_next, c2 = pre
        m = _numerics.moving_average(m, u, b1)
        s = _numerics.moving_average(s, _numerics.abs_square(u - m), b2)
        s = s + _dtypes.scalar(eps_root, s.dtype)
        if nesterov:
            b = _dtypes.scalar(b1, s.dtype).astype(m.dtype)
            numerator = b * _numerics.debias(m, c1_next) + _dtypes.complement(b1, s.dtype).astype(
                m.dtype
            ) * _numerics.debias(u, c1)
        else:
            numerator = _numerics.debias(m, c1)
        denominator = jnp.sqrt(_numerics.debias(s, c2)) + _dtypes.scalar(eps, s.dtype)
        return numerator / denominator.astype(numerator.dtype), m, s

    first = (
        r"\frac{\beta_1 m / (1 - \beta_1^{t+1}) + (1 - \beta_1) u / (1 - \beta_1^t)}"
        if nesterov
        else r"\frac{m / (1 - \beta_1^t)}"
    )
    return declare_powers(
        statistic(
            "scale_by_belief",
            ScaleByBeliefState,
            rule,
            real=("nu",),
            needs_step=True,
            prepare=prepare,
            hyperparams={
                "b1": b1,
                "b2": b2,
                "eps": eps,
                "eps_root": eps_root,
                "nesterov": nesterov,
            },
            math=r"m \leftarrow \beta_1 m + (1 - \beta_1) u;\quad s \leftarrow \beta_2 s + "
            r"(1 - \beta_2) |u - m|^2 + \epsilon;\quad u \leftarrow "
            + first
            + r"{\sqrt{s / (1 - \beta_2^t)} + \delta}",
        ),
        b1,
        b2,
    )


# ---------------------------------------------------------------- Yogi


class AccumulateYogiSquareState(NamedTuple):
    r"""State of :func:`accumulate_yogi_square`.

    Attributes:
      nu: Yogi's second moment :math:`v`, real.
    """

    nu: Any


def accumulate_yogi_square(
    b2: float | jax.Array = 0.999, *, initial_accumulator_value: float = 1e-6
) -> GradientTransformation:
    r"""Yogi's second moment: moves towards :math:`u^2` by an additive, sign-controlled step.

    .. math::
        v_t = v_{t-1} - (1 - \beta_2)\, \operatorname{sign}(v_{t-1} - |u_t|^2)\, |u_t|^2

    Adam's :math:`v_t = v_{t-1} - (1 - \beta_2)(v_{t-1} - u_t^2)` moves by a fraction of the
    difference, so a few large gradients raise it quickly and it then forgets them
    multiplicatively; Yogi's step is at most :math:`(1 - \beta_2) u_t^2` either way, which
    keeps the effective learning rate from growing fast when :math:`v` falls.

    Args:
      b2: :math:`\beta_2` in [0, 1).
      initial_accumulator_value: :math:`v_0` >= 0 (optax's 1e-6).

    Returns:
      A transform with state :class:`AccumulateYogiSquareState`; it outputs :math:`v_t`.

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018, Alg. 2.
    """
    _validate.decay_rate("b2", b2)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)

    def rule(u, v):
        g2 = _numerics.abs_square(u)
        v = v - _dtypes.complement(b2, v.dtype) * jnp.sign(v - g2) * g2
        return v, v

    return statistic(
        "accumulate_yogi_square",
        AccumulateYogiSquareState,
        rule,
        init=initial_accumulator_value,
        real=("nu",),
        hyperparams={"b2": b2, "initial_accumulator_value": initial_accumulator_value},
        math=r"v \leftarrow v - (1 - \beta_2) \operatorname{sign}(v - |u|^2) |u|^2;"
        r"\quad u \leftarrow v",
    )


# ---------------------------------------------------------------- Adan


class AdanMomentumState(NamedTuple):
    r"""State of :func:`adan_momentum`.

    Attributes:
      mu: the moving average :math:`m` of the updates.
      delta: the moving average :math:`v` of their differences :math:`u_t - u_{t-1}`.
      previous: the previous updates :math:`u_{t-1}`.
    """

    mu: Any
    delta: Any
    previous: Any


def _difference(u, previous, first):
    """``u - previous``, 0 at the first step (there is no previous gradient)."""
    difference = u - previous
    # lax.select: jnp.where's operations without its nested jit call per leaf.
    return jax.lax.select(first, jnp.zeros_like(difference), difference)


def _adan_debiasing(b1, b2, step, real) -> tuple:
    r"""Adan's bias factor of :math:`m` and its coefficient :math:`(1-\beta_2)/(1-\beta_2^t)`.

    The first is a :func:`gbopt._numerics.bias_factor` (for :func:`gbopt._numerics.debias`).
    """
    c2, inverse = _numerics.bias_factor(b2, step, real)
    complement = _dtypes.complement(b2, real)
    return _numerics.bias_factor(b1, step, real), complement * c2 if inverse else complement / c2


def _adan_numerator(u, m, v, difference, b1, b2, c1, c2) -> tuple:
    """Adan's numerator and its two new moments, for one leaf.

    ``c1, c2`` come from :func:`_adan_debiasing`; shared by :func:`adan_momentum` and
    :func:`scale_by_adan`.
    """
    m = _numerics.moving_average(m, u, b1)
    v = _numerics.moving_average(v, difference, b2)
    return _numerics.debias(m, c1) + c2.astype(v.dtype) * v, m, v


def adan_momentum(
    b1: float | jax.Array = 0.98,
    b2: float | jax.Array = 0.92,
    *,
    step: Any = None,
) -> GradientTransformation:
    r"""Adan's Nesterov momentum estimate: the debiased momentum plus its debiased trend.

    .. math::
        \Delta_t = u_t - u_{t-1} \;(\Delta_1 = 0), \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, u_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, \Delta_t \\
        \text{output} = \frac{m_t}{1 - \beta_1^t} + (1 - \beta_2)\, \frac{v_t}{1 - \beta_2^t}

    This is the numerator of Adan (Xie et al.'s Alg. 1, whose :math:`\beta` are this
    function's :math:`1 - \beta`, with optax's bias corrections). The gradient difference
    stands in for the gradient at the extrapolated point of Nesterov's method, so no second
    gradient is evaluated.

    Args:
      b1: :math:`\beta_1` in [0, 1), the decay of the momentum (optax's 0.98).
      b2: :math:`\beta_2` in [0, 1), the decay of the difference average (optax's 0.92).
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A transform with state :class:`AdanMomentumState` (inside a
      :class:`gbopt.StepCountState` when used alone).

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models", IEEE TPAMI 2024 (arXiv:2208.06677), Alg. 1.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    check_step_argument("adan_momentum", step)

    def prepare(dtype, step):
        return (*_adan_debiasing(b1, b2, step, _dtypes.real_dtype(dtype)), step == 1)

    def rule(u, m, v, previous, pre):
        c1, c2, first = pre
        out, m, v = _adan_numerator(u, m, v, _difference(u, previous, first), b1, b2, c1, c2)
        return out, m, v, u

    return declare_powers(
        statistic(
            "adan_momentum",
            AdanMomentumState,
            rule,
            follows_params=AdanMomentumState._fields,
            needs_step=True,
            prepare=prepare,
            hyperparams={"b1": b1, "b2": b2},
            math=r"m \leftarrow \beta_1 m + (1 - \beta_1) u;\quad v \leftarrow \beta_2 v + "
            r"(1 - \beta_2)(u - u_{-1});\quad u \leftarrow \frac{m}{1 - \beta_1^t} + "
            r"(1 - \beta_2) \frac{v}{1 - \beta_2^t}",
        ),
        b1,
        b2,
    )


class AdanExtrapolationState(NamedTuple):
    r"""State of :func:`adan_extrapolation`.

    Attributes:
      previous: the previous updates :math:`u_{t-1}`.
    """

    previous: Any


def adan_extrapolation(b2: float | jax.Array = 0.92, *, step: Any = None) -> GradientTransformation:
    r"""Adan's extrapolated gradient, whose square its denominator averages.

    .. math:: \text{output} = u_t + (1 - \beta_2)(u_t - u_{t-1}), \qquad
        u_0 := u_1 \;(\text{no difference at the first step})

    Followed by ``accumulate_square(b3)``, ``bias_correction(b3)``, ``add(eps_root)``,
    ``sqrt()`` and ``add(eps)`` it is Adan's denominator
    :math:`\sqrt{\hat n_t + \epsilon_r} + \epsilon`. Divided into :func:`adan_momentum`
    it keeps the previous update a second time; :func:`scale_by_adan`, which
    :func:`gbopt.adan` uses, keeps it once.

    Args:
      b2: :math:`\beta_2` in [0, 1) (the same as :func:`adan_momentum`'s).
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A transform with state :class:`AdanExtrapolationState` (inside a
      :class:`gbopt.StepCountState` when used alone).

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models", IEEE TPAMI 2024 (arXiv:2208.06677), Alg. 1, line 5.
    """
    _validate.decay_rate("b2", b2)
    check_step_argument("adan_extrapolation", step)

    def rule(u, previous, step):
        return u + _dtypes.complement(b2, u.dtype) * _difference(u, previous, step == 1), u

    return statistic(
        "adan_extrapolation",
        AdanExtrapolationState,
        rule,
        follows_params=("previous",),
        needs_step=True,
        hyperparams={"b2": b2},
        math=r"u + (1 - \beta_2)(u - u_{-1})",
    )


class ScaleByAdanState(NamedTuple):
    r"""State of :func:`scale_by_adan`.

    Attributes:
      mu: the moving average :math:`m` of the updates.
      delta: the moving average :math:`v` of their differences :math:`u_t - u_{t-1}`.
      nu: the moving average :math:`n` of the squared extrapolated updates, real.
      previous: the previous updates :math:`u_{t-1}`.
    """

    mu: Any
    delta: Any
    nu: Any
    previous: Any


def scale_by_adan(
    b1: float | jax.Array = 0.98,
    b2: float | jax.Array = 0.92,
    b3: float | jax.Array = 0.99,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    *,
    step: Any = None,
) -> GradientTransformation:
    r"""Adan's direction: Nesterov momentum from gradient differences over an adaptive root.

    .. math::
        \Delta_t = u_t - u_{t-1} \;(\Delta_1 = 0), \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, u_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, \Delta_t, \\
        n_t = \beta_3 n_{t-1} + (1 - \beta_3)\, |u_t + (1 - \beta_2) \Delta_t|^2, \qquad
        \text{output} = \frac{\hat m_t + (1 - \beta_2)\, \hat v_t}
          {\sqrt{\hat n_t + \epsilon_r} + \epsilon}

    (each hat the debiasing by its own :math:`\beta`). The numerator
    (:func:`adan_momentum`) and the denominator (:func:`adan_extrapolation` then a
    debiased root of the average square) both need :math:`\Delta_t`, so the previous
    update is kept once, here, for both: a ``divide`` of the two pieces computes the
    same rule but keeps :math:`u_{t-1}` twice. Same rule as ``optax.scale_by_adan``.

    Args:
      b1: :math:`\beta_1` in [0, 1), the momentum's decay (optax's 0.98).
      b2: :math:`\beta_2` in [0, 1), the decay of the difference average (0.92).
      b3: :math:`\beta_3` in [0, 1), the decay of the squared extrapolated update (0.99).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root (0, as optax's
        ``scale_by_adan``; :func:`gbopt.adan`'s default is 1e-8, as optax's ``adan``).
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A transform with state :class:`ScaleByAdanState` (inside a
      :class:`gbopt.StepCountState` when used alone).

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models", IEEE TPAMI 2024 (arXiv:2208.06677), Alg. 1.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.decay_rate("b3", b3)
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    check_step_argument("scale_by_adan", step)

    def prepare(dtype, step):
        real = _dtypes.real_dtype(dtype)
        c3 = _numerics.bias_factor(b3, step, real)
        return (*_adan_debiasing(b1, b2, step, real), c3, step == 1)

    def rule(u, m, v, n, previous, pre):
        c1, c2, c3, first = pre
        difference = _difference(u, previous, first)
        numerator, m, v = _adan_numerator(u, m, v, difference, b1, b2, c1, c2)
        extrapolated = u + _dtypes.complement(b2, n.dtype).astype(u.dtype) * difference
        n = _numerics.moving_average(n, _numerics.abs_square(extrapolated), b3, keep_infinite=True)
        denominator = jnp.sqrt(_numerics.debias(n, c3) + _dtypes.scalar(eps_root, n.dtype))
        denominator = denominator + _dtypes.scalar(eps, n.dtype)
        return numerator / denominator.astype(numerator.dtype), m, v, n, u

    return declare_powers(
        statistic(
            "scale_by_adan",
            ScaleByAdanState,
            rule,
            real=("nu",),
            follows_params=("mu", "delta", "previous"),
            needs_step=True,
            prepare=prepare,
            hyperparams={"b1": b1, "b2": b2, "b3": b3, "eps": eps, "eps_root": eps_root},
            math=r"\Delta = u - p \text{ (0 at the first step)};\quad "
            r"m \leftarrow \beta_1 m + (1 - \beta_1) u;\quad "
            r"v \leftarrow \beta_2 v + (1 - \beta_2) \Delta;\quad "
            r"n \leftarrow \beta_3 n + (1 - \beta_3) |u + (1 - \beta_2) \Delta|^2;\quad "
            r"p \leftarrow u;\quad "
            r"u \leftarrow \frac{m / (1 - \beta_1^t) + (1 - \beta_2) v / (1 - \beta_2^t)}"
            r"{\sqrt{n / (1 - \beta_3^t) + \epsilon} + \delta}",
        ),
        b1,
        b2,
        b3,
    )


# ---------------------------------------------------------------- NovoGrad


class AccumulateLayerSquareState(NamedTuple):
    r"""State of :func:`accumulate_layer_square`.

    Attributes:
      nu: the moving average of :math:`\|u\|^2`, one real scalar per leaf.
    """

    nu: Any


def accumulate_layer_square(
    decay: float | jax.Array = 0.25, *, step: Any = None
) -> GradientTransformation:
    r"""NovoGrad's layer-wise second moment: a moving average of each leaf's squared norm.

    .. math::
        v_1 = \|u_1\|^2, \qquad v_t = \rho\, v_{t-1} + (1 - \rho)\, \|u_t\|^2

    One scalar per leaf (per layer) instead of one per element: half the memory of Adam's
    optimizer state. The first step starts the average at :math:`\|u_1\|^2` (no bias
    towards 0, so no bias correction). The output is :math:`v_t` broadcast to the leaf's
    shape, so that it can stand in the denominator of :func:`gbopt.divide`.

    Args:
      decay: :math:`\rho` in [0, 1) (NovoGrad's :math:`\beta_2`, 0.25 in optax).
      step: kept for code written as ``with_step_count(lambda t: ...(step=t))``; the step
        comes from an enclosing :func:`gbopt.with_step_count`, or the transform keeps its
        own count when used alone.

    Returns:
      A transform with state :class:`AccumulateLayerSquareState` (inside a
      :class:`gbopt.StepCountState` when used alone).

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019 (arXiv:1905.11286), Alg. 1.
    """
    _validate.decay_rate("decay", decay)
    check_step_argument("accumulate_layer_square", step)

    def rule(u, v, step):
        norm_sq = jnp.sum(_numerics.abs_square(u)).astype(v.dtype)
        v = jnp.where(step == 1, norm_sq, _numerics.moving_average(v, norm_sq, decay))
        return jnp.broadcast_to(v, u.shape), v

    return statistic(
        "accumulate_layer_square",
        AccumulateLayerSquareState,
        rule,
        init=lambda p: (jnp.zeros([], jnp.float32),),
        real=("nu",),
        needs_step=True,
        hyperparams={"decay": decay},
        math=r"v \leftarrow \rho v + (1 - \rho) \lVert u \rVert^2 \; (v_1 = \lVert u \rVert^2);"
        r"\quad u \leftarrow v",
    )
