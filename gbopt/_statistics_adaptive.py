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
Statistics are kept in at least float32 and, for :math:`|g|^2` of complex parameters, in the
real counterpart; updates come back in the dtype they arrived in (:mod:`gbopt._tree`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _numerics, _tree, _validate
from gbopt._base import EMPTY_STATE, GradientTransformation, expect_state


def _real_state_dtype(dtype) -> Any:
    """The statistics dtype of a leaf of ``dtype``, real (``|g|^2`` of a complex leaf)."""
    wide = _tree.state_dtype(dtype)
    return jnp.finfo(wide).dtype if jnp.issubdtype(wide, jnp.complexfloating) else wide


def _abs_sq(x: jax.Array) -> jax.Array:
    """:math:`|x|^2`, real also for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return x * x


def _own_step(build: Callable[[jax.Array], GradientTransformation]) -> GradientTransformation:
    """``build(step)`` inside its own :func:`gbopt.with_step_count` (used alone)."""
    from gbopt._combine import with_step_count

    return with_step_count(build)


def _leafwise(
    who: str,
    state_type: type,
    init: Callable[[Any], tuple],
    rule: Callable[..., tuple],
    *,
    fresh: bool = False,
    check_shapes: bool = True,
) -> GradientTransformation:
    """A statistic from a per-leaf ``rule(u, *stats) -> (out, *new_stats)``.

    ``init(params)`` returns one tree per field of ``state_type``. With ``fresh``, ``rule``
    is a factory called once per ``update`` (for values memoized per dtype with
    :func:`gbopt._tree.per_dtype`). ``out`` is cast back to the incoming update's dtype,
    each statistic to its stored dtype. ``check_shapes=False`` for per-leaf scalars.
    """
    fields = state_type._fields

    def init_fn(params):
        return state_type(*init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(state, state_type, who)
        for name in fields:
            _tree.check_matches(
                updates,
                getattr(state, name),
                what="updates",
                reference_name=f"state's `{name}`",
                check_shapes=check_shapes,
            )
        leaf_rule = rule() if fresh else rule

        def leaf(u, *stats):
            out, *new = leaf_rule(u, *stats)
            new = [_tree.cast(n, s.dtype) for n, s in zip(new, stats, strict=True)]
            return (_tree.cast(out, u.dtype), *new)

        out, *new = _tree.map_leaves(leaf, 1 + len(fields), updates, *state)
        return out, state_type(*new)

    return GradientTransformation(init_fn, update_fn)


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
            & \|w\| > 0 \text{ and } \|u\| > 0 \\
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

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            if not jax.tree.leaves(updates):
                return updates, state
            raise ValueError(
                "scale_by_trust_ratio needs the parameters: call "
                "`update(updates, state, params)` with `params` (the ratio is ‖w‖ / ‖u‖)."
            )
        _tree.check_matches(updates, params, what="updates", reference_name="params")

        def leaf(u, w):
            u = _tree.as_array(u)
            wide = _tree.state_dtype(u.dtype)
            real = _real_state_dtype(u.dtype)
            g = _tree.cast(u, wide)
            c = _tree.scalar(min_norm, real)
            w_norm = jnp.sqrt(jnp.sum(_abs_sq(_tree.cast(w, _tree.state_dtype(w.dtype)))))
            u_norm = jnp.sqrt(jnp.sum(_abs_sq(g)))
            w_norm, u_norm = w_norm.astype(real), u_norm.astype(real)
            ratio = (
                _tree.scalar(trust_coefficient, real)
                * jnp.maximum(w_norm, c)
                / (jnp.maximum(u_norm, c) + _tree.scalar(eps, real))
            )
            zero = jnp.logical_or(jnp.maximum(w_norm, c) == 0, jnp.maximum(u_norm, c) == 0)
            ratio = jnp.where(zero, jnp.ones([], real), ratio)
            return _tree.cast(g * ratio.astype(wide), u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------- rectification (RAdam)


def _rho(b2, step: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    r""":math:`(\rho_\infty, \rho_t)` of RAdam in ``dtype``."""
    if isinstance(b2, numbers.Real) and not isinstance(b2, bool):
        rho_inf = jnp.asarray(2.0 / (1.0 - b2) - 1.0, dtype)
        beta = jnp.asarray(b2, dtype)
    else:
        beta = jnp.asarray(b2).astype(dtype)
        rho_inf = 2 / (1 - beta) - 1
    t = step.astype(dtype)
    b2t = beta**t
    return rho_inf, rho_inf - 2 * t * b2t / _numerics.one_minus_power(b2, step, dtype)


def rectification(
    b2: float | jax.Array = 0.999,
    threshold: float | jax.Array = 5.0,
    *,
    step: jax.Array | None = None,
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

    The paper and optax compare :math:`\rho_t \ge \tau` (paper: :math:`\tau = 4`; optax
    and Liu et al.'s code: 5); PyTorch compares :math:`\rho_t > 5`. The two differ only on
    a step where :math:`\rho_t` is exactly the threshold.

    Args:
      b2: :math:`\beta_2` in [0, 1), the decay of the second moment being rectified.
      threshold: :math:`\tau`, the shortest average deemed tractable.
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count.

    Returns:
      A stateless map of the denominator (state ``()``, or a
      :class:`gbopt.StepCountState` when ``step`` is None).

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020,
      Alg. 2 and eq. 7.
    """
    _validate.decay_rate("b2", b2)
    _validate.finite("threshold", threshold)
    if step is None:
        return _own_step(lambda t: rectification(b2, threshold, step=t))

    def factor(dtype):
        rho_inf, rho_t = _rho(b2, step, dtype)
        r = jnp.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return rho_t >= _tree.scalar(threshold, dtype), r

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        per_dtype = _tree.per_dtype(factor)

        def leaf(d):
            d = _tree.as_array(d)
            wide = _real_state_dtype(d.dtype)
            active, r = per_dtype(wide)
            x = _tree.cast(d, _tree.state_dtype(d.dtype))
            return _tree.cast(
                jnp.where(active, x / r.astype(x.dtype), jnp.ones([], x.dtype)), d.dtype
            )

        return jax.tree.map(leaf, updates), state

    return GradientTransformation(init_fn, update_fn)


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
    ones where it is not. The statistic keeps its own :math:`m` (the numerator's
    :func:`gbopt.ema` keeps another: the two are the same number).

    Args:
      b1: :math:`\beta_1` in [0, 1), the decay of the prediction :math:`m`.
      b2: :math:`\beta_2` in [0, 1), the decay of :math:`s`.
      eps_root: :math:`\epsilon_r` >= 0, added to :math:`s_t` at every step and kept in
        it (optax's ``eps_root``; Zhuang et al.'s Alg. 2 adds it the same way).

    Returns:
      A transform with state :class:`AccumulateBeliefState`; it outputs :math:`s_t`.

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020, Alg. 2.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps_root", eps_root)

    def init(params):
        return _tree.zeros_like(params), _tree.zeros_like(params, _real_state_dtype)

    def rule(u, m, s):
        g = _tree.cast(u, m.dtype)
        m = _tree.moving_average(m, g, b1)
        s = _tree.moving_average(s, _abs_sq(g - m), b2) + _tree.scalar(eps_root, s.dtype)
        return s, m, s

    return _leafwise("accumulate_belief", AccumulateBeliefState, init, rule)


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
        v_t = v_{t-1} - (1 - \beta_2)\, \operatorname{sign}(v_{t-1} - u_t^2)\, u_t^2

    Adam's :math:`v_t = v_{t-1} - (1 - \beta_2)(v_{t-1} - u_t^2)` moves by a fraction of the
    difference, so a few large gradients raise it quickly and it then forgets them
    multiplicatively; Yogi's step is at most :math:`(1 - \beta_2) u_t^2` either way, which
    keeps the effective learning rate from growing fast when :math:`v` falls.

    Args:
      b2: :math:`\beta_2` in [0, 1).
      initial_accumulator_value: :math:`v_0` >= 0; 1e-6 in the paper and optax.

    Returns:
      A transform with state :class:`AccumulateYogiSquareState`; it outputs :math:`v_t`.

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018, Alg. 2.
    """
    _validate.decay_rate("b2", b2)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)

    def init(params):
        return (_tree.full_like(params, initial_accumulator_value, _real_state_dtype),)

    def rule(u, v):
        g2 = _abs_sq(_tree.cast(u, _tree.state_dtype(u.dtype))).astype(v.dtype)
        v = v - _tree.complement(b2, v.dtype) * jnp.sign(v - g2) * g2
        return v, v

    return _leafwise("accumulate_yogi_square", AccumulateYogiSquareState, init, rule)


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


def _difference(u, previous, step):
    """``u - previous``, 0 at the first step (there is no previous gradient)."""
    return jnp.where(step == 1, jnp.zeros([], u.dtype), u - previous)


def adan_momentum(
    b1: float | jax.Array = 0.98,
    b2: float | jax.Array = 0.92,
    *,
    step: jax.Array | None = None,
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
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count.

    Returns:
      A transform with state :class:`AdanMomentumState` (inside a
      :class:`gbopt.StepCountState` when ``step`` is None).

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models", IEEE TPAMI 2024 (arXiv:2208.06677), Alg. 1.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    if step is None:
        return _own_step(lambda t: adan_momentum(b1, b2, step=t))

    def corrections(dtype):
        return (
            _numerics.one_minus_power(b1, step, dtype),
            _numerics.one_minus_power(b2, step, dtype),
        )

    def init(params):
        return _tree.zeros_like(params), _tree.zeros_like(params), _tree.zeros_like(params)

    def make_rule():
        per_dtype = _tree.per_dtype(corrections)

        def rule(u, m, v, previous):
            g = _tree.cast(u, m.dtype)
            c1, c2 = per_dtype(_real_state_dtype(m.dtype))
            m = _tree.moving_average(m, g, b1)
            v = _tree.moving_average(v, _difference(g, previous, step), b2)
            out = m / c1.astype(m.dtype) + _tree.complement(b2, m.dtype) * (v / c2.astype(m.dtype))
            return out, m, v, g

        return rule

    return _leafwise("adan_momentum", AdanMomentumState, init, make_rule, fresh=True)


class AdanExtrapolationState(NamedTuple):
    r"""State of :func:`adan_extrapolation`.

    Attributes:
      previous: the previous updates :math:`u_{t-1}`.
    """

    previous: Any


def adan_extrapolation(
    b2: float | jax.Array = 0.92, *, step: jax.Array | None = None
) -> GradientTransformation:
    r"""Adan's extrapolated gradient, whose square its denominator averages.

    .. math:: \text{output} = u_t + (1 - \beta_2)(u_t - u_{t-1}), \qquad
        u_0 := u_1 \;(\text{no difference at the first step})

    Followed by ``accumulate_square(b3)``, ``bias_correction(b3)``, ``add(eps_root)``,
    ``sqrt()`` and ``add(eps)`` it is Adan's denominator :math:`\sqrt{\hat n_t +
    \epsilon_r} + \epsilon`.

    Args:
      b2: :math:`\beta_2` in [0, 1) (the same as :func:`adan_momentum`'s).
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count.

    Returns:
      A transform with state :class:`AdanExtrapolationState` (inside a
      :class:`gbopt.StepCountState` when ``step`` is None).

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models", IEEE TPAMI 2024 (arXiv:2208.06677), Alg. 1, line 5.
    """
    _validate.decay_rate("b2", b2)
    if step is None:
        return _own_step(lambda t: adan_extrapolation(b2, step=t))

    def init(params):
        return (_tree.zeros_like(params),)

    def rule(u, previous):
        g = _tree.cast(u, previous.dtype)
        out = g + _tree.complement(b2, g.dtype) * _difference(g, previous, step)
        return out, g

    return _leafwise("adan_extrapolation", AdanExtrapolationState, init, rule)


# ---------------------------------------------------------------- NovoGrad


class AccumulateLayerSquareState(NamedTuple):
    r"""State of :func:`accumulate_layer_square`.

    Attributes:
      nu: the moving average of :math:`\|u\|^2`, one real scalar per leaf.
    """

    nu: Any


def accumulate_layer_square(
    decay: float | jax.Array = 0.25, *, step: jax.Array | None = None
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
      step: the 1-based step, when an enclosing :func:`gbopt.with_step_count` keeps it;
        otherwise the transform keeps its own count.

    Returns:
      A transform with state :class:`AccumulateLayerSquareState` (inside a
      :class:`gbopt.StepCountState` when ``step`` is None).

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019 (arXiv:1905.11286), Alg. 1.
    """
    _validate.decay_rate("decay", decay)
    if step is None:
        return _own_step(lambda t: accumulate_layer_square(decay, step=t))

    def init(params):
        _tree.check_float_params(params)
        return (
            jax.tree.map(
                lambda p: _tree.scalar_like(p, 0, _real_state_dtype(jnp.result_type(p))), params
            ),
        )

    def rule(u, v):
        g = _tree.cast(u, _tree.state_dtype(u.dtype))
        norm_sq = jnp.sum(_abs_sq(g)).astype(v.dtype)
        v = jnp.where(step == 1, norm_sq, _tree.moving_average(v, norm_sq, decay))
        return jnp.broadcast_to(v, u.shape), v

    return _leafwise(
        "accumulate_layer_square", AccumulateLayerSquareState, init, rule, check_shapes=False
    )
