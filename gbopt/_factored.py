r"""Second moments in sublinear memory: Adafactor's factored average, SM3's cover.

Both keep, for a matrix of :math:`n \times m` parameters, statistics of size
:math:`n + m` instead of :math:`nm`, and hand on a full-size estimate of the second
moment that the usual pieces then use as Adam's :math:`\hat r` would be::

    adafactor = chain(divide(identity(), chain(factored_second_moment(...), sqrt())),
                      clip_by_block_rms(1.0), scale_by_learning_rate(lr, flip_sign=False),
                      scale_by_param_block_rms(), scale(-1))
    sm3       = chain(divide(identity(), chain(cover_second_moment(), add(1e-8), sqrt())),
                      ema(momentum), scale_by_learning_rate(lr))

The new primitives are :func:`factored_second_moment`, :func:`cover_second_moment`, and
two per-leaf maps: :func:`clip_by_block_rms` and :func:`scale_by_param_block_rms`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gbopt import _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, elementwise, named, statistic
from gbopt._combine import chain, divide
from gbopt._maps import add, identity, scale, scale_by_learning_rate, sqrt
from gbopt._regularize import add_decayed_weights
from gbopt._statistics import ema


def _abs_sq(u: jax.Array) -> jax.Array:
    """:math:`|u|^2`, real also for a complex ``u``."""
    return jnp.real(u * jnp.conj(u)) if jnp.iscomplexobj(u) else u * u


def factored_dims(shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int):
    """The two axes a second moment of ``shape`` is factored over, or None.

    The two largest axes (the largest last, ties broken by position as ``np.argsort``),
    provided the smaller of them has at least ``min_dim_size_to_factor`` elements.
    """
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


class FactoredSecondMomentState(NamedTuple):
    r"""State of :func:`factored_second_moment`.

    Attributes:
      v_row: per factored leaf, the average of :math:`u^2` over its largest axis
        (shape (1,) for a leaf that is not factored).
      v_col: per factored leaf, the average over its second-largest axis (shape (1,)
        for a leaf that is not factored).
      v: per unfactored leaf, the full average of :math:`u^2` (shape (1,) for a
        factored leaf).
    """

    v_row: Any
    v_col: Any
    v: Any


def factored_second_moment(
    decay_rate: float | jax.Array = 0.8,
    *,
    decay_offset: int | jax.Array = 0,
    min_dim_size_to_factor: int = 128,
    eps: float | jax.Array = 1e-30,
    factored: bool = True,
) -> GradientTransformation:
    r"""Adafactor's second moment: row and column averages whose outer product estimates it.

    With :math:`\hat\beta_t = 1 - (t - t_0)^{-c}` (:math:`c` ``decay_rate``,
    :math:`t_0` ``decay_offset``, :math:`t` the 1-based step) and
    :math:`G = |u_t|^2 + \epsilon`, for a leaf factored over axes :math:`(a, b)`
    (:math:`b` the largest):

    .. math::
        R_t = \hat\beta_t R_{t-1} + (1 - \hat\beta_t)\, \operatorname{mean}_b G, \qquad
        C_t = \hat\beta_t C_{t-1} + (1 - \hat\beta_t)\, \operatorname{mean}_a G, \qquad
        \text{output} = \frac{R_t\, C_t}{\operatorname{mean}_a R_t}

    (the outer product along :math:`a, b`); for any other leaf,
    :math:`V_t = \hat\beta_t V_{t-1} + (1 - \hat\beta_t) G` and the output is :math:`V_t`.
    The state is :math:`O(n + m)` for an :math:`n \times m` matrix.

    Divided into the gradient under a root (``divide(identity(), chain(this, sqrt()))``)
    this is optax's ``scale_by_factored_rms`` (there the factors' roots are applied one
    after the other; the difference is rounding).

    .. note:: optax computes :math:`\hat\beta_t` in float32 whatever the parameters'
       dtype; gbopt in the compute dtype (float64 for float64 parameters), which moves a
       float64 run by about 1e-8 relative from optax's.

    Args:
      decay_rate: :math:`c` > 0, the exponent of the decay schedule.
      decay_offset: :math:`t_0`, the step at which a fine-tuning phase starts.
      min_dim_size_to_factor: factor a leaf only if its two largest axes both have at
        least this many elements.
      eps: :math:`\epsilon` >= 0, added to the squares.
      factored: False keeps full averages for every leaf (RMSProp with Adafactor's
        schedule).

    Returns:
      A transform with state :class:`FactoredSecondMomentState` (with a step count when
      used alone).

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, Alg. 4 and 5.
    """
    _validate.non_negative("eps", eps)
    _validate.flag("factored", factored)
    _validate.whole_number("min_dim_size_to_factor", min_dim_size_to_factor, 1)

    def init(param):
        shape = np.shape(param)
        dims = factored_dims(shape, factored, min_dim_size_to_factor)
        # A fresh array per field: a state whose leaves share a buffer cannot be donated.
        if dims is None:
            return jnp.zeros((1,), jnp.float32), jnp.zeros((1,), jnp.float32), jnp.zeros(shape)
        a, b = dims
        return (
            jnp.zeros(shape[:b] + shape[b + 1 :], jnp.float32),
            jnp.zeros(shape[:a] + shape[a + 1 :], jnp.float32),
            jnp.zeros((1,), jnp.float32),
        )

    def prepare(dtype, step):
        t = (step - decay_offset).astype(dtype)
        return 1 - t ** -jnp.asarray(decay_rate, dtype)

    def rule(u, v_row, v_col, v, *, pre):
        beta = pre.astype(v.dtype)
        g2 = _abs_sq(u) + jnp.asarray(eps, v.dtype)
        dims = factored_dims(u.shape, factored, min_dim_size_to_factor)
        if dims is None:
            v = beta * v + (1 - beta) * g2
            return v, v_row, v_col, v
        a, b = dims
        v_row = beta * v_row + (1 - beta) * jnp.mean(g2, axis=b)
        v_col = beta * v_col + (1 - beta) * jnp.mean(g2, axis=a)
        a_in_row = a - 1 if a > b else a
        row = v_row / jnp.mean(v_row, axis=a_in_row, keepdims=True)
        return jnp.expand_dims(row, b) * jnp.expand_dims(v_col, a), v_row, v_col, v

    return statistic(
        "factored_second_moment",
        FactoredSecondMomentState,
        rule,
        init=init,
        real=FactoredSecondMomentState._fields,
        needs_step=True,
        prepare=prepare,
        hyperparams={
            "decay_rate": decay_rate,
            "decay_offset": decay_offset,
            "min_dim_size_to_factor": min_dim_size_to_factor,
            "eps": eps,
            "factored": factored,
        },
        # The fields in order: R (v_row), C (v_col), V (v).
        math=r"\hat\beta_t = 1 - (t - t_0)^{-c};\quad "
        r"R \leftarrow \hat\beta_t R + (1 - \hat\beta_t) \operatorname{mean}_b(|u|^2 + \delta);"
        r"\quad C \leftarrow \hat\beta_t C "
        r"+ (1 - \hat\beta_t) \operatorname{mean}_a(|u|^2 + \delta);"
        r"\quad V \leftarrow \hat\beta_t V "
        r"+ (1 - \hat\beta_t)(|u|^2 + \delta) \text{ (not factored)};"
        r"\quad u \leftarrow \frac{R C}{\operatorname{mean}_a R} \text{ (factored) or } V",
    )


def clip_by_block_rms(threshold: float | jax.Array) -> GradientTransformation:
    r"""Scales each leaf down so that its root mean square is at most ``threshold``.

    .. math:: u \leftarrow \frac{u}{\max\!\left(1, \operatorname{rms}(u) / \tau\right)}

    Args:
      threshold: :math:`\tau` > 0 (Adafactor's update clipping, the paper's :math:`d` = 1).

    References:
      Shazeer & Stern, 2018, §6 ("update clipping").
    """
    _validate.positive("threshold", threshold)

    def fn(u):
        rms = jnp.sqrt(jnp.mean(_abs_sq(u)))
        return u / jnp.maximum(1, rms / jnp.asarray(threshold, rms.dtype)).astype(u.dtype)

    return elementwise(
        "clip_by_block_rms",
        fn,
        hyperparams={"threshold": threshold},
        math=r"u / \max(1, \operatorname{rms}(u) / \tau)",
    )


def scale_by_param_block_rms(min_scale: float | jax.Array = 1e-3) -> GradientTransformation:
    r"""Multiplies each leaf by the root mean square of its parameter (at least ``min_scale``).

    .. math:: u \leftarrow u \cdot \max\!\left(\operatorname{rms}(w), \epsilon_2\right)

    Adafactor's relative step size: the step is proportional to the scale of the
    parameter it changes.

    Args:
      min_scale: :math:`\epsilon_2` >= 0 (1e-3 in the paper and optax).

    References:
      Shazeer & Stern, 2018, §8 ("relative step size").
    """
    _validate.non_negative("min_scale", min_scale)

    def fn(u, *, param):
        rms = jnp.sqrt(jnp.mean(_abs_sq(param.astype(u.dtype))))
        floor = jnp.asarray(min_scale, rms.dtype)
        return u * jnp.where(rms <= floor, floor, rms).astype(u.dtype)

    return elementwise(
        "scale_by_param_block_rms",
        fn,
        needs_params=True,
        hyperparams={"min_scale": min_scale},
        math=r"u \cdot \max(\operatorname{rms}(w), \epsilon_2)",
    )


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float | jax.Array = 0.8,
    decay_offset: int | jax.Array = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | jax.Array | None = 1.0,
    momentum: float | jax.Array | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: float | jax.Array | None = None,
    eps: float | jax.Array = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> GradientTransformation:
    r"""Adafactor: RMS scaling by a factored second moment, update clipping, relative steps.

    .. math::
        \hat\beta_t = 1 - t^{-c}, \qquad
        R_t = \hat\beta_t R_{t-1} + (1 - \hat\beta_t) \operatorname{mean}_b(g_t^2 + \epsilon),
        \qquad
        C_t = \hat\beta_t C_{t-1} + (1 - \hat\beta_t) \operatorname{mean}_a(g_t^2 + \epsilon),
        \\
        \hat V_t = \frac{R_t C_t}{\operatorname{mean}_a R_t} \text{ for a matrix, else }
        V_t = \hat\beta_t V_{t-1} + (1 - \hat\beta_t)(g_t^2 + \epsilon), \\
        U_t = \frac{g_t}{\sqrt{\hat V_t}}, \qquad
        \hat U_t = \frac{U_t}{\max(1, \operatorname{rms}(U_t)/\tau)}, \qquad
        w \leftarrow w - \alpha_t \max(\operatorname{rms}(w), 10^{-3})\, \hat U_t

    For a leaf whose two largest axes :math:`a, b` both have ``min_dim_size_to_factor``
    elements or more, the second moment is the outer product of its row and column
    averages :math:`R, C` (:func:`gbopt.factored_second_moment`); any other leaf keeps the
    full average :math:`V`. ``momentum`` adds an :func:`gbopt.ema` of :math:`\hat U_t`
    and ``weight_decay_rate`` a decoupled :math:`\lambda w` after the learning rate.

    Drop-in for ``optax.adafactor`` (same signature, defaults and rule; each option
    adds or removes one piece of the chain, as there).

    Args:
      learning_rate: :math:`\alpha` (number or schedule), or None for none (the relative
        step size alone).
      min_dim_size_to_factor: factor a leaf only if its two largest axes both have at
        least this many elements.
      decay_rate: :math:`c` of the decay schedule :math:`\hat\beta_t = 1 - t^{-c}`.
      decay_offset: the step at which a fine-tuning phase starts.
      multiply_by_parameter_scale: multiply by the parameters' RMS (relative step).
      clipping_threshold: :math:`\tau` > 0 (the paper's :math:`d` = 1), or None for no
        update clipping.
      momentum: a first-moment decay in [0, 1), or None for none.
      dtype_momentum: the storage dtype of the first moment.
      weight_decay_rate: a decoupled weight decay (after the learning rate, so not
        multiplied by it), or None.
      eps: :math:`\epsilon` >= 0, added to the squared gradients.
      factored: factor the second moment of matrices.
      weight_decay_mask: where the weight decay applies (pytree of booleans or function).

    Returns:
      ``chain(divide(identity(), chain(factored_second_moment(...), sqrt())),
      [clip_by_block_rms(clipping_threshold)],
      [scale_by_learning_rate(learning_rate, flip_sign=False)],
      [scale_by_param_block_rms()], [ema(momentum, dtype=dtype_momentum)],
      [add_decayed_weights(weight_decay_rate, weight_decay_mask)], scale(-1))``.

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018.
    """
    _validate.flag("multiply_by_parameter_scale", multiply_by_parameter_scale)
    pieces = [
        divide(
            identity(),
            chain(
                factored_second_moment(
                    decay_rate,
                    decay_offset=decay_offset,
                    min_dim_size_to_factor=min_dim_size_to_factor,
                    eps=eps,
                    factored=factored,
                ),
                sqrt(),
            ),
        )
    ]
    if clipping_threshold is not None:
        pieces.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        pieces.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        pieces.append(scale_by_param_block_rms())
    if momentum is not None:
        pieces.append(ema(momentum, dtype=dtype_momentum))
    if weight_decay_rate is not None:
        pieces.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
    pieces.append(scale(-1.0))
    return named(
        "adafactor",
        chain(*pieces),
        learning_rate=learning_rate,
        decay_rate=decay_rate,
        decay_offset=decay_offset,
        clipping_threshold=clipping_threshold,
        momentum=momentum,
        weight_decay_rate=weight_decay_rate,
        eps=eps,
    )


class CoverSecondMomentState(NamedTuple):
    r"""State of :func:`cover_second_moment`.

    Attributes:
      nu: per leaf of rank >= 2, the accumulators :math:`\mu^{(i)}` of the cover (the
        maxima of :math:`\nu` along every axis, one vector per axis, concatenated: size
        :math:`\sum_i n_i`); per leaf of rank < 2, the full accumulator. Named ``nu``
        as every second-moment statistic of gbopt, so that ``state_get(state, "mu")``
        reads :func:`sm3`'s momentum and ``"nu"`` its second moment.
    """

    nu: Any


def _split_axes(mu: jax.Array, shape: tuple[int, ...]) -> list[jax.Array]:
    """The per-axis vectors of a concatenated cover accumulator, each shaped to broadcast."""
    ends = np.cumsum(shape)
    parts = jnp.split(mu, ends[:-1])
    rank = len(shape)
    return [
        p.reshape([1] * i + [n] + [1] * (rank - i - 1))
        for i, (p, n) in enumerate(zip(parts, shape, strict=True))
    ]


def cover_second_moment() -> GradientTransformation:
    r"""SM3's accumulated squares, one accumulator per row, column, ... of each leaf.

    For a leaf of rank :math:`k \ge 2` the cover is its axis slices; with
    :math:`\mu^{(i)}` the accumulators of axis :math:`i`:

    .. math::
        \nu_t = u_t^2 + \min_i \mu^{(i)}_{t-1}, \qquad
        \mu^{(i)}_t = \max_{\text{axes} \ne i} \nu_t, \qquad \text{output} = \nu_t

    (SM3-II; :math:`\mu_0 = 0`). For a leaf of rank < 2 it is AdaGrad's sum of squares,
    :math:`\nu_t = \nu_{t-1} + u_t^2`. The state of an :math:`n \times m` matrix is
    :math:`n + m` numbers.

    Divided into the gradient under a root (``divide(identity(), chain(this, add(eps),
    sqrt()))``), this is optax's ``scale_by_sm3`` before its momentum (optax returns 0
    where :math:`\nu_t = 0`, which happens only for a zero gradient, where the quotient
    is 0 too). optax's fails on scalar leaves; here a scalar has one accumulator.

    Returns:
      A transform with state :class:`CoverSecondMomentState`.

    References:
      Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization",
      NeurIPS 2019, Alg. SM3-II.
    """

    def init(param):
        shape = np.shape(param)
        size = int(sum(shape)) if len(shape) >= 2 else max(1, math.prod(shape))
        return (jnp.zeros((size,), jnp.float32),)

    def rule(u, mu):
        shape = u.shape
        g2 = _abs_sq(u)
        if len(shape) < 2:
            nu = g2 + mu.reshape(shape)
            return nu, nu.reshape(-1)
        nu = g2 + functools.reduce(jnp.minimum, _split_axes(mu, shape))
        rank = len(shape)
        maxima = [jnp.max(nu, axis=tuple(j for j in range(rank) if j != i)) for i in range(rank)]
        return nu, jnp.concatenate(maxima)

    return statistic(
        "cover_second_moment",
        CoverSecondMomentState,
        rule,
        init=init,
        real=("nu",),
        math=r"\nu = |u|^2 + \min_i \mu^{(i)};\quad "
        r"\mu^{(i)} \leftarrow \max_{\text{axes} \ne i} \nu;\quad u \leftarrow \nu",
    )


def sm3(
    learning_rate: ScalarOrSchedule, momentum: float | jax.Array = 0.9
) -> GradientTransformation:
    r"""SM3: AdaGrad with one accumulator per row and column, then momentum.

    .. math::
        \nu_t = g_t^2 + \min_i \mu^{(i)}_{t-1}, \qquad
        \mu^{(i)} \leftarrow \max_{\text{axes} \ne i} \nu_t, \\
        m_t = \beta m_{t-1} + (1 - \beta) \frac{g_t}{\sqrt{\nu_t + 10^{-8}}}, \qquad
        w \leftarrow w - \alpha\, m_t

    Two statistics: the cover :math:`\mu^{(i)}`, one accumulator per row, column, ... of
    each parameter (:func:`gbopt.cover_second_moment`, state field ``nu``), and the
    momentum :math:`m` (:func:`gbopt.ema`, field ``mu``).

    Drop-in for ``optax.sm3`` (same signature, defaults and rule); ``learning_rate`` may
    also be a schedule here.

    Args:
      learning_rate: :math:`\alpha`.
      momentum: :math:`\beta` in [0, 1) (an exponential moving average, as in optax).

    Returns:
      ``chain(divide(identity(), chain(cover_second_moment(), add(1e-8), sqrt())),
      ema(momentum), scale_by_learning_rate(learning_rate))``.

    References:
      Anil, Gupta, Koren & Singer, "Memory-Efficient Adaptive Optimization",
      NeurIPS 2019.
    """
    return named(
        "sm3",
        chain(
            divide(identity(), chain(cover_second_moment(), add(1e-8), sqrt())),
            ema(momentum),
            scale_by_learning_rate(learning_rate),
        ),
        learning_rate=learning_rate,
        momentum=momentum,
    )
