r"""Optimistic methods for games and saddle points: the previous gradient as a correction.

One new primitive, :func:`optimistic_gradient`, which extrapolates from the previous
update; optimistic gradient descent puts it in front of the learning rate, optimistic
Adam puts Adam's direction in front of it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, named, statistic
from gbopt._combine import chain, divide, with_step_count
from gbopt._maps import add, bias_correction, scale, scale_by_learning_rate, sqrt
from gbopt._statistics import accumulate_square, ema, nadam_momentum


class OptimisticGradientState(NamedTuple):
    r"""State of :func:`optimistic_gradient`.

    Attributes:
      previous: the previous input :math:`u_{t-1}`, one array per parameter.
      started: one scalar for the whole tree, 0 before the first update and 1 after it
        (optax's ``is_initial_step``, negated).
    """

    previous: Any
    started: Any


def _at(value: Any, count: jax.Array) -> Any:
    return value(count) if callable(value) else value


def optimistic_gradient(
    alpha: ScalarOrSchedule = 1.0, beta: ScalarOrSchedule = 1.0
) -> GradientTransformation:
    r"""The generalized optimistic gradient: the update plus a step along its last change.

    .. math::
        \text{output} = (\alpha + \beta)\, u_t - \beta\, u_{t-1}
          = \alpha u_t + \beta (u_t - u_{t-1}), \qquad u_0 := u_1

    (At the first step there is no previous update and the output is
    :math:`\alpha u_1`, as in optax since its issue #1082.) With
    :math:`\alpha = \beta = 1` it is Popov's and Daskalakis et al.'s
    :math:`2 g_t - g_{t-1}`.

    Args:
      alpha: :math:`\alpha`, a number or a schedule ``count -> value``.
      beta: :math:`\beta`, a number or a schedule (the "negative momentum").

    Returns:
      A transform with state :class:`OptimisticGradientState` (and, when ``alpha`` or
      ``beta`` is a schedule, a step count when used alone).

    References:
      Mokhtari, Ozdaglar & Pattathil, "A Unified Analysis of Extra-gradient and
      Optimistic Gradient Methods for Saddle Point Problems", AISTATS 2020;
      Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not callable(value):
            _validate.finite(name, value)

    # The first step is told by a flag in the state, not by a step count: with constant
    # alpha and beta the transform keeps no count (as optax), whose increment would be a
    # kernel of its own in the compiled step.
    scheduled = callable(alpha) or callable(beta)

    def prepare(dtype, started, step=None):
        # Everything that is one value for the whole tree, once per dtype rather than
        # once per leaf (each operation traced per leaf is compile time on large trees).
        count = None if step is None else step - 1
        a, b = _at(alpha, count), _at(beta, count)
        if _dtypes.is_number(a) and _dtypes.is_number(b):
            both = _dtypes.scalar(a + b, dtype)  # alpha + beta in float64, as optax's
            b = _dtypes.scalar(b, dtype)
        else:
            b = jnp.asarray(b).astype(dtype)
            both = jnp.asarray(a).astype(dtype) + b
        return both, b, started == 0, jnp.ones_like(started)

    def rule(u, previous, started, *, pre):
        both, b, first, one = pre
        previous = jax.lax.select(first, u, previous)  # jnp.where without a nested jit
        return both * u - b * previous, u, one

    tx = statistic(
        "optimistic_gradient",
        OptimisticGradientState,
        rule,
        init=(0.0, 0.0),
        follows_params=("previous",),
        shared=("started",),
        needs_step=scheduled,
        prepare=prepare,
        hyperparams={"alpha": alpha, "beta": beta},
        # with a step count, the rule in step indices; without one, the previous input
        # by name (an index t would make gbopt.describe show a count that is not there)
        math=r"(\alpha + \beta) u_t - \beta u_{t-1}"
        if scheduled
        else r"(\alpha + \beta) u - \beta u_{\text{prev}}",
    )
    # `started` is bookkeeping, not a statistic of the rule: describe lists `previous` only
    tx.__dict__["info"] = tx.info._replace(state=("previous",))
    return tx


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule,
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
) -> GradientTransformation:
    r"""Optimistic gradient descent (OGD): an approximation of the extra-gradient method.

    .. math:: w \leftarrow w - \eta_t \left((\alpha + \beta)\, g_t - \beta\, g_{t-1}\right)

    Drop-in for ``optax.optimistic_gradient_descent`` (same signature, defaults and
    rule; ``alpha`` and ``beta`` may also be schedules here).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      alpha: :math:`\alpha`.
      beta: :math:`\beta`.

    Returns:
      ``chain(optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))``.

    References:
      Mokhtari, Ozdaglar & Pattathil, AISTATS 2020.
    """
    return named(
        "optimistic_gradient_descent",
        chain(optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate)),
        learning_rate=learning_rate,
        alpha=alpha,
        beta=beta,
    )


def _adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov) -> GradientTransformation:
    r"""Adam's direction :math:`\hat m / (\sqrt{\hat v + \bar\epsilon} + \epsilon)`."""
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    _validate.flag("nesterov", nesterov)
    if nesterov:
        first = nadam_momentum(b1, math.inf, dtype=mu_dtype)
    else:
        first = chain(ema(b1, dtype=mu_dtype), bias_correction(b1))
    second = chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(), add(eps))
    return divide(first, second)


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: float | jax.Array = 1.0,
    beta: float | jax.Array = 1.0,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any | None = None,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Optimistic Adam: the optimistic correction applied to Adam's direction.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \quad
        \pi_t = \beta_1 \pi_{t-1} \;(\pi_0 = 1), \\
        r_t = \frac{\beta_1 m_t / (1 - \beta_1 \pi_t) + (1 - \beta_1) g_t / (1 - \pi_t)}
          {\sqrt{\hat v_t + \bar\epsilon} + \epsilon}, \qquad
        w \leftarrow w - \eta_t \left((\alpha + \beta)\, r_t - \beta\, r_{t-1}\right)

    :math:`r_t` is Adam's direction with Dozat's Nesterov numerator (``nesterov=True``,
    the default, as optax; :math:`\pi_t = \beta_1^t` is kept in the state); with
    ``nesterov=False`` the numerator is :math:`m_t / (1 - \beta_1^t)` and there is no
    :math:`\pi`. The state keeps :math:`m, v, \pi` and the previous direction
    :math:`r_{t-1}`. Drop-in for ``optax.optimistic_adam_v2`` (same signature, defaults
    and rule).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      alpha: :math:`\alpha` of :func:`optimistic_gradient`.
      beta: :math:`\beta` of :func:`optimistic_gradient`.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\bar\epsilon` >= 0, inside the root.
      mu_dtype: storage dtype of the first moment (None: the parameters', >= float32).
      nesterov: Nesterov's form of the first moment.

    Returns:
      ``with_step_count(chain(divide(nadam_momentum(b1, inf, dtype=mu_dtype) (or
      chain(ema(b1, dtype=mu_dtype), bias_correction(b1))), chain(accumulate_square(b2),
      bias_correction(b2), add(eps_root), sqrt(), add(eps))),
      optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
    """
    direction = _adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov)
    return named(
        "optimistic_adam_v2",
        with_step_count(
            chain(
                direction, optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate)
            )
        ),
        learning_rate=learning_rate,
        alpha=alpha,
        beta=beta,
        b1=b1,
        b2=b2,
        eps=eps,
        nesterov=nesterov,
    )


def optimistic_adam(
    learning_rate: float | jax.Array,
    optimism: float | jax.Array | None = None,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Optimistic Adam, optax's first interface (deprecated there and here).

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \quad
        \pi_t = \beta_1 \pi_{t-1} \;(\pi_0 = 1), \\
        r_t = \frac{\beta_1 m_t / (1 - \beta_1 \pi_t) + (1 - \beta_1) g_t / (1 - \pi_t)}
          {\sqrt{\hat v_t + \bar\epsilon} + \epsilon}, \qquad
        w \leftarrow w - \left((\alpha + \beta)\, r_t - \beta\, r_{t-1}\right)

    with :math:`r_t` Adam's direction (as :func:`optimistic_adam_v2`),
    :math:`\alpha` ``learning_rate`` and :math:`\beta` ``optimism`` (default: the
    learning rate, as in the paper). Drop-in for ``optax.optimistic_adam``, including
    its ``DeprecationWarning`` and its refusal of schedules. It is
    ``optimistic_adam_v2(1.0, alpha=learning_rate, beta=optimism, ...)``.

    Args:
      learning_rate: :math:`\alpha`, a number (not a schedule).
      optimism: :math:`\beta`, or None for the learning rate.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\bar\epsilon` >= 0, inside the root.
      mu_dtype: storage dtype of the first moment (None: the parameters', >= float32).
      nesterov: Nesterov's form of the first moment.

    Returns:
      ``with_step_count(chain(divide(...Adam's direction...),
      optimistic_gradient(learning_rate, optimism), scale(-1)))``.

    Raises:
      ValueError: for a schedule as ``learning_rate`` (use :func:`optimistic_adam_v2`).

    References:
      Daskalakis et al., "Training GANs with Optimism", ICLR 2018.
    """
    warnings.warn(
        "`optimistic_adam` is deprecated (as in optax), please use `optimistic_adam_v2` instead.",
        category=DeprecationWarning,
        stacklevel=2,
    )
    if callable(learning_rate):
        raise ValueError(
            "This version of `optimistic_adam` does not support learning rate schedules "
            "(as optax's); use `optimistic_adam_v2`, which does."
        )
    if optimism is None:
        optimism = learning_rate
    direction = _adam_direction(b1, b2, eps, eps_root, mu_dtype, nesterov)
    return named(
        "optimistic_adam",
        with_step_count(
            chain(direction, optimistic_gradient(learning_rate, optimism), scale(-1.0))
        ),
        learning_rate=learning_rate,
        optimism=optimism,
        b1=b1,
        b2=b2,
        eps=eps,
        nesterov=nesterov,
    )
