r"""Learning-rate schedules: functions from the step count to a value.

A schedule is any function ``count -> value``, where ``count`` is the number of updates
applied before the current one (0 at the first update). Every ``learning_rate`` in gbopt
accepts one, and :func:`gbopt.inject_hyperparams` accepts one for any numeric
hyperparameter. optax's schedules are gbopt schedules as they are: this module gives the
common ones clear names and checked arguments, and builds them with optax (the same
functions, so results equal optax's bit for bit)::

    import gbopt
    from gbopt import schedules

    lr = schedules.warmup_cosine_decay(0.0, peak_value=1e-3, warmup_steps=100, decay_steps=10_000)
    tx = gbopt.adam(lr)

Symbols: :math:`t` the count, :math:`I` ``init_value``, :math:`E` ``end_value``,
:math:`B` ``transition_begin``, :math:`T` the number of transition (or decay) steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from gbopt import _validate

__all__ = [
    "Schedule",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "join",
    "linear",
    "piecewise_constant",
    "polynomial",
    "warmup_cosine_decay",
]

Schedule = Callable[[jax.Array], jax.Array]
"""A function from the 0-based count of updates applied to a value."""


def _steps(name: str, value: Any, *, minimum: int) -> None:
    _validate.whole_number(name, value, minimum, meaning=" (a number of steps)")


def constant(value: float | jax.Array) -> Schedule:
    r"""The same value at every step.

    .. math:: \eta_t = I

    Args:
      value: :math:`I`, a finite number.

    Returns:
      ``optax.constant_schedule(value)``.
    """
    _validate.finite("value", value)
    return optax.constant_schedule(value)


def polynomial(
    init_value: float | jax.Array,
    end_value: float | jax.Array,
    power: float | jax.Array,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""A polynomial ramp from ``init_value`` to ``end_value``, then constant.

    .. math::
        \eta_t = \begin{cases}
          I & t < B \\
          (I - E) \left(1 - \frac{t - B}{T}\right)^{p} + E & B \le t < B + T \\
          E & t \ge B + T
        \end{cases}

    Args:
      init_value: :math:`I`.
      end_value: :math:`E`.
      power: :math:`p` (1 is :func:`linear`).
      transition_steps: :math:`T` >= 1.
      transition_begin: :math:`B` >= 0, steps held at :math:`I` first.

    Returns:
      ``optax.polynomial_schedule(...)`` with these arguments.

    Raises:
      TypeError, ValueError: naming the argument, for a non-integer or too small step
        count or a non-finite value.
    """
    _validate.finite("init_value", init_value)
    _validate.finite("end_value", end_value)
    _validate.finite("power", power)
    _steps("transition_steps", transition_steps, minimum=1)
    _steps("transition_begin", transition_begin, minimum=0)
    return optax.polynomial_schedule(
        init_value, end_value, power, transition_steps, transition_begin
    )


def linear(
    init_value: float | jax.Array,
    end_value: float | jax.Array,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""A linear ramp from ``init_value`` to ``end_value`` (warm-up or decay), then constant.

    .. math::
        \eta_t = I + (E - I)\, \mathrm{clip}\!\left(\frac{t - B}{T}, 0, 1\right)

    Args:
      init_value: :math:`I`.
      end_value: :math:`E`.
      transition_steps: :math:`T` >= 1.
      transition_begin: :math:`B` >= 0.

    Returns:
      ``optax.linear_schedule(...)`` with these arguments.

    Raises:
      TypeError, ValueError: naming the argument.
    """
    _validate.finite("init_value", init_value)
    _validate.finite("end_value", end_value)
    _steps("transition_steps", transition_steps, minimum=1)
    _steps("transition_begin", transition_begin, minimum=0)
    return optax.linear_schedule(init_value, end_value, transition_steps, transition_begin)


def exponential_decay(
    init_value: float | jax.Array,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    *,
    staircase: bool = False,
    end_value: float | jax.Array | None = None,
) -> Schedule:
    r"""Multiplies ``init_value`` by ``decay_rate`` every ``transition_steps`` steps.

    .. math::
        \eta_t = I \cdot r^{\,\max(t - B, 0) / T}
        \quad\left(\text{or } r^{\lfloor \max(t - B, 0) / T \rfloor} \text{ with staircase}\right)

    clipped at ``end_value`` when it is given (from below for :math:`r < 1`).

    Args:
      init_value: :math:`I`.
      transition_steps: :math:`T` >= 1.
      decay_rate: :math:`r` > 0 (< 1 decays, > 1 grows).
      transition_begin: :math:`B` >= 0.
      staircase: decay in whole steps of :math:`T`.
      end_value: the value at which the decay stops, or ``None``.

    Returns:
      ``optax.exponential_decay(...)`` with these arguments.

    Raises:
      TypeError, ValueError: naming the argument.
    """
    _validate.finite("init_value", init_value)
    _steps("transition_steps", transition_steps, minimum=1)
    _validate.positive("decay_rate", decay_rate)
    _steps("transition_begin", transition_begin, minimum=0)
    if end_value is not None:
        _validate.finite("end_value", end_value)
    return optax.exponential_decay(
        init_value,
        transition_steps,
        decay_rate,
        transition_begin,
        staircase=staircase,
        end_value=end_value,
    )


def cosine_decay(
    init_value: float | jax.Array,
    decay_steps: int,
    alpha: float | jax.Array = 0.0,
    exponent: float | jax.Array = 1.0,
) -> Schedule:
    r"""Half a cosine from ``init_value`` down to ``alpha * init_value`` (Loshchilov & Hutter).

    .. math::
        \eta_t = I \left[\alpha + (1 - \alpha)
          \left(\tfrac12\left(1 + \cos\frac{\pi \min(t, T)}{T}\right)\right)^{p}\right]

    Args:
      init_value: :math:`I`.
      decay_steps: :math:`T` >= 1.
      alpha: the final value as a fraction of :math:`I`.
      exponent: :math:`p`.

    Returns:
      ``optax.cosine_decay_schedule(...)`` with these arguments.

    Raises:
      TypeError, ValueError: naming the argument.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """
    _validate.finite("init_value", init_value)
    _steps("decay_steps", decay_steps, minimum=1)
    _validate.finite("alpha", alpha)
    _validate.finite("exponent", exponent)
    return optax.cosine_decay_schedule(init_value, decay_steps, alpha, exponent)


def warmup_cosine_decay(
    init_value: float | jax.Array,
    peak_value: float | jax.Array,
    warmup_steps: int,
    decay_steps: int,
    end_value: float | jax.Array = 0.0,
    exponent: float | jax.Array = 1.0,
) -> Schedule:
    r"""A linear warm-up to ``peak_value``, then a cosine decay to ``end_value``.

    With :math:`W` warm-up steps, :math:`P` the peak and :math:`T` the total length:

    .. math::
        \eta_t = \begin{cases}
          I + (P - I)\, t / W & t < W \\
          E + (P - E) \left(\tfrac12\left(1 + \cos\frac{\pi \min(t - W, T - W)}{T - W}
            \right)\right)^{p} & t \ge W
        \end{cases}

    Args:
      init_value: :math:`I`, the value at the first step (often 0).
      peak_value: :math:`P`, reached after ``warmup_steps``.
      warmup_steps: :math:`W` >= 0.
      decay_steps: :math:`T` > :math:`W`, the length of the whole schedule (warm-up
        included, as in optax).
      end_value: :math:`E`.
      exponent: :math:`p`.

    Returns:
      ``optax.warmup_cosine_decay_schedule(...)`` with these arguments.

    Raises:
      TypeError, ValueError: naming the argument.
    """
    _validate.finite("init_value", init_value)
    _validate.finite("peak_value", peak_value)
    _validate.finite("end_value", end_value)
    _validate.finite("exponent", exponent)
    _steps("warmup_steps", warmup_steps, minimum=0)
    _steps("decay_steps", decay_steps, minimum=warmup_steps + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value, peak_value, warmup_steps, decay_steps, end_value, exponent
    )


def piecewise_constant(
    init_value: float | jax.Array, boundaries_and_scales: Mapping[int, float]
) -> Schedule:
    r"""Multiplies the value by a factor at each boundary (step decay).

    .. math:: \eta_t = I \prod_{i:\, t \ge b_i} s_i

    Args:
      init_value: :math:`I`.
      boundaries_and_scales: ``{b_i: s_i}``, step counts (ints >= 0) to factors (>= 0);
        e.g. ``{30_000: 0.1, 60_000: 0.1}`` divides the value by 10 twice.

    Returns:
      ``optax.piecewise_constant_schedule(...)`` with these arguments.

    Raises:
      TypeError, ValueError: naming the boundary or factor.
    """
    _validate.finite("init_value", init_value)
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            "`boundaries_and_scales` must be a dict {step: factor}, e.g. {1000: 0.1}; got "
            f"{type(boundaries_and_scales).__name__}."
        )
    for boundary, factor in boundaries_and_scales.items():
        _steps(f"boundaries_and_scales key {boundary!r}", boundary, minimum=0)
        _validate.non_negative(f"boundaries_and_scales[{boundary}]", factor)
    return optax.piecewise_constant_schedule(init_value, dict(boundaries_and_scales))


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Runs schedules one after the other; each restarts its count at its boundary.

    .. math::
        \eta_t = s_k(t - b_{k}) \quad\text{for } b_k \le t < b_{k+1},
        \qquad b_0 = 0

    Args:
      schedules: :math:`s_0, \dots, s_n`, functions of the count (any of this module's
        or optax's).
      boundaries: :math:`b_1 < \dots < b_n`, one fewer than ``schedules``.

    Returns:
      ``optax.join_schedules(schedules, boundaries)``.

    Raises:
      TypeError, ValueError: for a schedule that is not callable, boundaries that are
        not increasing ints, or lengths that do not fit.

    Example:
      >>> from gbopt import schedules
      >>> lr = schedules.join([schedules.linear(0.0, 1e-3, 100), schedules.constant(1e-3)], [100])
      >>> float(lr(50)), float(lr(500))
      (0.0005000000237487257, 0.0010000000474974513)
    """
    schedules, boundaries = list(schedules), list(boundaries)
    for i, s in enumerate(schedules):
        if not callable(s):
            raise TypeError(
                f"`schedules[{i}]` must be a function of the count; got {type(s).__name__}: {s!r}."
            )
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            "`boundaries` must have one entry fewer than `schedules` (where each schedule "
            f"after the first starts); got {len(boundaries)} boundaries for "
            f"{len(schedules)} schedules."
        )
    for i, b in enumerate(boundaries):
        _steps(f"boundaries[{i}]", b, minimum=1)
        if i and b <= boundaries[i - 1]:
            raise ValueError(f"`boundaries` must be increasing; got {boundaries}.")
    return optax.join_schedules(schedules, boundaries)


def __dir__() -> list[str]:
    """The public names only (not the typing helpers this module imports)."""
    return list(__all__)
