r"""Sign methods: signSGD, Signum and Lion, each a chain ending in the sign of a statistic.

Two primitives are new here: :func:`sign`, the element-wise sign, and
:func:`lion_momentum`, Lion's pair of moving averages (one read, one kept). The rest is
the catalog's usual pieces::

    sign_sgd = chain(sign(), scale_by_learning_rate(lr))
    signum   = chain(ema(beta), sign(), scale_by_learning_rate(lr))
    lion     = chain(lion_momentum(b1, b2), sign(), add_decayed_weights(wd),
                     scale_by_learning_rate(lr))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _numerics, _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, elementwise, named, statistic
from gbopt._combine import chain
from gbopt._maps import scale_by_learning_rate
from gbopt._regularize import add_decayed_weights
from gbopt._statistics import ema


def sign() -> GradientTransformation:
    r"""Replaces every element of the updates by its sign.

    .. math:: u \leftarrow \operatorname{sign}(u) \in \{-1, 0, 1\}

    (For a complex element, :math:`u / |u|`, as ``jnp.sign``.) optax:
    ``optax.scale_by_sign()``.

    Returns:
      A stateless transform (state ``()``).

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
      ICML 2018.
    """
    return elementwise("sign", jnp.sign, math=r"\operatorname{sign}(u)")


class LionMomentumState(NamedTuple):
    r"""State of :func:`lion_momentum`.

    Attributes:
      mu: the moving average :math:`m` (decay :math:`\beta_2`), one array per parameter.
    """

    mu: Any


def lion_momentum(
    b1: float | jax.Array = 0.9, b2: float | jax.Array = 0.99, *, dtype: Any = None
) -> GradientTransformation:
    r"""Lion's momentum: returns one interpolation of the kept average, keeps another.

    .. math::
        c_t = \beta_1 m_{t-1} + (1 - \beta_1)\, u_t, \qquad
        m_t = \beta_2 m_{t-1} + (1 - \beta_2)\, u_t, \qquad
        \text{output} = c_t, \qquad m_0 = 0

    With :math:`\beta_1 = \beta_2 = \beta` the output is :math:`m_t`, the moving average
    of :func:`gbopt.ema` (Signum's momentum).

    Args:
      b1: :math:`\beta_1` in [0, 1), the weight of the average in the output.
      b2: :math:`\beta_2` in [0, 1), the decay of the kept average.
      dtype: the storage dtype of :math:`m` (optax's ``mu_dtype``); None for the
        parameters' dtype, bfloat16 included (a first moment follows the parameters).

    Returns:
      A transform with state :class:`LionMomentumState`.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023, Alg. 2.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)

    def rule(u, mu):
        return _numerics.moving_average(mu, u, b1), _numerics.moving_average(mu, u, b2)

    return statistic(
        "lion_momentum",
        LionMomentumState,
        rule,
        dtype=dtype,
        follows_params=("mu",),
        hyperparams={"b1": b1, "b2": b2},
        math=r"\beta_1 m + (1-\beta_1) u;\; m \leftarrow \beta_2 m + (1-\beta_2) u",
    )


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""signSGD: step by the sign of each gradient element.

    .. math:: w \leftarrow w - \alpha_t \operatorname{sign}(g)

    Drop-in for ``optax.sign_sgd`` (same signature and rule).

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule ``count -> value``.

    Returns:
      ``chain(sign(), scale_by_learning_rate(learning_rate))``.

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite.

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
      ICML 2018.
    """
    return named(
        "sign_sgd",
        chain(sign(), scale_by_learning_rate(learning_rate)),
        learning_rate=learning_rate,
    )


def signum(
    learning_rate: ScalarOrSchedule,
    beta: float | jax.Array = 0.9,
    accumulator_dtype: Any | None = None,
) -> GradientTransformation:
    r"""Signum: step by the sign of a moving average of the gradient.

    .. math::
        m_t = \beta m_{t-1} + (1 - \beta)\, g_t, \qquad
        w \leftarrow w - \alpha_t \operatorname{sign}(m_t)

    Drop-in for ``optax.signum`` (same signature and rule; the average is not debiased,
    which would not change its sign).

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule.
      beta: :math:`\beta` in [0, 1).
      accumulator_dtype: the storage dtype of :math:`m`; None for the parameters' dtype,
        bfloat16 included (a first moment follows the parameters).

    Returns:
      ``chain(ema(beta, dtype=accumulator_dtype), sign(),
      scale_by_learning_rate(learning_rate))``.

    References:
      Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
      ICML 2018, Alg. 3.
    """
    _validate.decay_rate("beta", beta)
    average = ema(beta, dtype=accumulator_dtype)
    return named(
        "signum",
        chain(average, sign(), scale_by_learning_rate(learning_rate)),
        learning_rate=learning_rate,
        beta=beta,
    )


def lion(
    learning_rate: ScalarOrSchedule,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    mu_dtype: Any | None = None,
    weight_decay: float | jax.Array = 1e-3,
    mask: Any = None,
) -> GradientTransformation:
    r"""Lion: the sign of an interpolated momentum, with decoupled weight decay.

    .. math::
        c_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        w \leftarrow w - \alpha_t \left(\operatorname{sign}(c_t) + \lambda w\right), \qquad
        m_t = \beta_2 m_{t-1} + (1 - \beta_2) g_t

    Drop-in for ``optax.lion`` (same signature, defaults and rule). As in optax and
    PyTorch's AdamW, the weight decay is multiplied by the learning rate (the paper
    multiplies it by the schedule's factor only).

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule; typically 3-10 times
        smaller than AdamW's.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      mu_dtype: the storage dtype of :math:`m`; None for the parameters' dtype, at
        least float32.
      weight_decay: :math:`\lambda` >= 0.
      mask: where to apply the weight decay (a pytree of booleans or a function of the
        parameters), as :func:`gbopt.add_decayed_weights`.

    Returns:
      ``chain(lion_momentum(b1, b2, dtype=mu_dtype), sign(),
      add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """
    return named(
        "lion",
        chain(
            lion_momentum(b1, b2, dtype=mu_dtype),
            sign(),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        ),
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        weight_decay=weight_decay,
    )
