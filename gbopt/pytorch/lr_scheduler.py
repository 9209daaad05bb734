r"""``torch.optim.lr_scheduler``'s schedulers as functions of the step count.

PyTorch's scheduler holds the optimizer and rewrites ``param_group["lr"]`` each time
``scheduler.step()`` is called; gbopt's optimizers read the learning rate from a
schedule, a function ``count -> lr`` of the number of steps taken before (0 at the
first step). Each class here has the name and the arguments of a PyTorch scheduler,
with the optimizer replaced by the base learning rate it would have read from it
(``lr``, the ``lr=`` the PyTorch optimizer was built with), and returns that function::

    torch:  opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    gbopt:  tx = gbopt.pytorch.AdamW(lr=lr_scheduler.StepLR(1e-3, step_size=30, gamma=0.1))

For a scheduler stepped once per optimizer step, the value at ``count`` is
``get_last_lr()`` after ``count`` calls of ``scheduler.step()``: in float64 the
sequences agree with PyTorch 2.13 to 1e-12 (``tests/test_pytorch_lr_scheduler.py``;
the recursive "chainable" updates PyTorch applies and the closed forms used here differ
by rounding only, which the recursion accumulates: 8e-15 over 300 steps of
``CosineAnnealingLR``, 9e-14 over 3,000). A scheduler stepped once per epoch is
``lambda count: schedule(count // steps_per_epoch)``.

``OneCycleLR`` and ``CyclicLR`` also schedule the momentum (``cycle_momentum=True``,
PyTorch's default): pass ``schedule.momentum`` as the optimizer's ``momentum`` or
``betas[0]``, e.g. ``AdamW(lr=s, betas=(s.momentum, 0.999))``.

The functions use ``jax.numpy`` only, so they run under ``jax.jit`` and also serve as
``learning_rate=`` of optax. They compute in the count's precision: gbopt hands
schedules an int64 count when 64-bit types are enabled, so a float64 run gets float64
learning rates.

Not provided: ``ReduceLROnPlateau``, which depends on the loss rather than the step
count; ``optax.contrib.reduce_on_plateau`` does it (docs/pytorch.md).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gbopt import _validate

__all__ = [
    "LRSchedule",
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "CyclicLR",
    "SequentialLR",
    "ChainedScheduler",
]


class LRSchedule:
    """A PyTorch scheduler as a schedule: call it with the step count to get the lr.

    Attributes:
      name: the PyTorch class it reproduces.
      momentum: the momentum (or ``betas[0]``) schedule, for ``OneCycleLR`` and
        ``CyclicLR`` with ``cycle_momentum=True``; otherwise None.
      base_lr: the base learning rate (``None`` where the scheduler sets its own).
      factor: for the schedulers that PyTorch applies multiplicatively to the current
        lr ("chainable"), the factor ``count -> lr(count) / base_lr`` that
        :class:`ChainedScheduler` multiplies; otherwise None.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[Any], Any],
        *,
        base_lr: Any = None,
        factor: Callable[[Any], Any] | None = None,
        momentum: Callable[[Any], Any] | None = None,
        restarts_from_previous: bool = False,
    ) -> None:
        self.name = name
        self._fn = fn
        self.base_lr = base_lr
        self.factor = factor
        self.momentum = momentum
        self._restarts_from_previous = restarts_from_previous

    def __call__(self, count: Any) -> jax.Array:
        """The learning rate after ``count`` steps (``count`` an int or an int array)."""
        return self._fn(jnp.asarray(count))

    def __repr__(self) -> str:
        return f"gbopt.pytorch.lr_scheduler.{self.name}(...)"


def _lr(lr: Any) -> None:
    _validate.non_negative("lr", lr)


def _steps(name: str, value: Any, minimum: int) -> int:
    return _validate.whole_number(name, value, minimum, meaning=" (a number of steps)")


def _multiplicative(name: str, lr: Any, factor: Callable[[Any], Any], **kw: Any) -> LRSchedule:
    _lr(lr)
    return LRSchedule(name, lambda c: lr * factor(c), base_lr=lr, factor=factor, **kw)


def LambdaLR(lr: float, lr_lambda: Callable[[Any], Any]) -> LRSchedule:
    r"""``LambdaLR``: the base lr times a function of the count.

    .. math:: \gamma_t = \gamma_0\, f(t)

    ``lr_lambda`` is called with a traced count inside gbopt's ``update`` under
    ``jax.jit``: write it with ``jax.numpy`` (``jnp.where`` for ``if``, ``jnp.cos`` for
    ``math.cos``, ``jnp.minimum`` for ``min``); gbopt says so when it is not.

    Args:
      lr: :math:`\gamma_0`, the optimizer's ``lr`` (>= 0).
      lr_lambda: :math:`f`, a function of the count. (PyTorch's list of one function
        per parameter group becomes one schedule per group of
        :func:`gbopt.multi_transform`.)

    Returns:
      An :class:`LRSchedule`.

    Raises:
      TypeError, ValueError: for a negative ``lr`` or a ``lr_lambda`` that is not callable.
    """
    _lr(lr)
    if not callable(lr_lambda):
        raise TypeError(
            f"`lr_lambda` must be a function of the count; got {type(lr_lambda).__name__}."
        )
    return LRSchedule("LambdaLR", lambda c: lr * lr_lambda(c), base_lr=lr)


def MultiplicativeLR(lr: float, lr_lambda: Callable[[Any], Any]) -> LRSchedule:
    r"""``MultiplicativeLR``: the lr multiplied by ``lr_lambda(k)`` at each step ``k >= 1``.

    .. math:: \gamma_t = \gamma_0 \prod_{k=1}^{t} f(k)

    The product is recomputed from the count with a ``jax.lax.fori_loop`` of :math:`t`
    iterations (the schedule keeps no state), so it costs :math:`O(t)` scalar
    operations per step; a constant factor is :func:`ExponentialLR`, and a product with
    a closed form is cheaper as :func:`LambdaLR`.

    Args:
      lr: :math:`\gamma_0` (>= 0).
      lr_lambda: :math:`f`, a function of the count written with ``jax.numpy``.

    Returns:
      An :class:`LRSchedule` (chainable).
    """
    if not callable(lr_lambda):
        raise TypeError(
            f"`lr_lambda` must be a function of the count; got {type(lr_lambda).__name__}."
        )

    def factor(c):
        one = jnp.ones([], jnp.result_type(float))
        return jax.lax.fori_loop(1, c + 1, lambda k, p: p * lr_lambda(k), one)

    return _multiplicative("MultiplicativeLR", lr, factor, restarts_from_previous=True)


def StepLR(lr: float, step_size: int, gamma: float = 0.1) -> LRSchedule:
    r"""``StepLR``: multiplies the lr by ``gamma`` every ``step_size`` steps.

    .. math:: \gamma_t = \gamma_0\, g^{\lfloor t / s \rfloor}

    Args:
      lr: :math:`\gamma_0` (>= 0).
      step_size: :math:`s` >= 1.
      gamma: :math:`g` >= 0.

    Returns:
      An :class:`LRSchedule` (chainable).

    Example:
      >>> from gbopt.pytorch import lr_scheduler
      >>> lr = lr_scheduler.StepLR(0.1, step_size=2, gamma=0.5)
      >>> [round(float(lr(count)), 6) for count in range(5)]
      [0.1, 0.1, 0.05, 0.05, 0.025]
    """
    step_size = _steps("step_size", step_size, 1)
    _validate.non_negative("gamma", gamma)
    return _multiplicative("StepLR", lr, lambda c: gamma ** (c // step_size))


def MultiStepLR(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> LRSchedule:
    r"""``MultiStepLR``: multiplies the lr by ``gamma`` at each milestone.

    .. math:: \gamma_t = \gamma_0\, g^{\#\{i:\ m_i \le t\}}

    A milestone listed twice counts twice, as in PyTorch.

    Args:
      lr: :math:`\gamma_0` (>= 0).
      milestones: the counts :math:`m_i` >= 0 (ints) at which to decay.
      gamma: :math:`g` >= 0.

    Returns:
      An :class:`LRSchedule` (chainable).
    """
    ms = sorted(_steps(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones))
    _validate.non_negative("gamma", gamma)
    if not ms:
        return _multiplicative("MultiStepLR", lr, lambda c: jnp.ones_like(c, float))
    return _multiplicative(
        "MultiStepLR", lr, lambda c: gamma ** jnp.sum(c >= jnp.asarray(ms, c.dtype))
    )


def ConstantLR(lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> LRSchedule:
    r"""``ConstantLR``: the lr times ``factor`` for the first ``total_iters`` steps.

    .. math:: \gamma_t = \gamma_0 \cdot (\,c \;\text{if}\; t < T \;\text{else}\; 1)

    Args:
      lr: :math:`\gamma_0` (>= 0).
      factor: :math:`c` in [0, 1].
      total_iters: :math:`T` >= 0.

    Returns:
      An :class:`LRSchedule` (chainable).
    """
    _unit_interval("factor", factor)
    total_iters = _steps("total_iters", total_iters, 0)
    return _multiplicative("ConstantLR", lr, lambda c: jnp.where(c < total_iters, factor, 1.0))


def _unit_interval(name: str, value: Any, *, low_open: bool = False) -> None:
    _validate.finite(name, value)
    if isinstance(value, numbers.Real) and (value > 1 or value < 0 or (low_open and value == 0)):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"`{name}` must be in {interval} (as PyTorch requires); got {value}.")


def LinearLR(
    lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
) -> LRSchedule:
    r"""``LinearLR``: the lr times a factor going linearly from ``start_factor`` to ``end_factor``.

    .. math:: \gamma_t = \gamma_0 \left(a + (b - a)\, \frac{\min(t, T)}{T}\right)

    Args:
      lr: :math:`\gamma_0` (>= 0).
      start_factor: :math:`a` in (0, 1].
      end_factor: :math:`b` in [0, 1].
      total_iters: :math:`T` >= 1.

    Returns:
      An :class:`LRSchedule` (chainable).
    """
    _unit_interval("start_factor", start_factor, low_open=True)
    _unit_interval("end_factor", end_factor)
    total_iters = _steps("total_iters", total_iters, 1)
    return _multiplicative(
        "LinearLR",
        lr,
        lambda c: (
            start_factor + (end_factor - start_factor) * jnp.minimum(total_iters, c) / total_iters
        ),
    )


def ExponentialLR(lr: float, gamma: float) -> LRSchedule:
    r"""``ExponentialLR``: multiplies the lr by ``gamma`` at every step.

    .. math:: \gamma_t = \gamma_0\, g^{t}

    Args:
      lr: :math:`\gamma_0` (>= 0).
      gamma: :math:`g` >= 0.

    Returns:
      An :class:`LRSchedule` (chainable).
    """
    _validate.non_negative("gamma", gamma)
    return _multiplicative("ExponentialLR", lr, lambda c: gamma**c)


def PolynomialLR(lr: float, total_iters: int = 5, power: float = 1.0) -> LRSchedule:
    r"""``PolynomialLR``: a polynomial decay to 0 over ``total_iters`` steps.

    .. math:: \gamma_t = \gamma_0 \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    Args:
      lr: :math:`\gamma_0` (>= 0).
      total_iters: :math:`T` >= 1.
      power: :math:`p` >= 0.

    Returns:
      An :class:`LRSchedule` (chainable).
    """
    total_iters = _steps("total_iters", total_iters, 1)
    _validate.non_negative("power", power)

    def factor(c):
        base = 1.0 - jnp.minimum(total_iters, c) / total_iters
        # 0 ** p is 0 (1 for p = 0) as in Python; XLA's jitted pow gives NaN at 0.
        at_zero = jnp.where(jnp.asarray(power) == 0, 1.0, 0.0)
        return jnp.where(base > 0, jnp.where(base > 0, base, 1.0) ** power, at_zero)

    return _multiplicative("PolynomialLR", lr, factor)


def CosineAnnealingLR(lr: float, T_max: int, eta_min: float = 0.0) -> LRSchedule:
    r"""``CosineAnnealingLR``: half a cosine from ``lr`` to ``eta_min`` over ``T_max`` steps.

    .. math::
        \gamma_t = \eta_{\min} + \tfrac12(\gamma_0 - \eta_{\min})
          \left(1 + \cos\frac{\pi t}{T_{\max}}\right)

    Past ``T_max`` the cosine goes on (back up to ``lr`` at :math:`2T_{\max}`, and so
    on), as PyTorch's does. PyTorch computes each value from the previous one (its
    "chainable" form), which accumulates rounding: the two differ by 8e-15 after 300
    steps and 9e-14 after 3,000.

    Args:
      lr: :math:`\gamma_0` (>= 0).
      T_max: :math:`T_{\max}` >= 1.
      eta_min: :math:`\eta_{\min}` >= 0.

    Returns:
      An :class:`LRSchedule`; chainable (multiplicative) when ``eta_min == 0``.
    """
    _lr(lr)
    T_max = _steps("T_max", T_max, 1)
    _validate.non_negative("eta_min", eta_min)

    def cosine(c):
        return (1 + jnp.cos(jnp.pi * c / T_max)) / 2

    factor = cosine if isinstance(eta_min, numbers.Real) and eta_min == 0 else None
    return LRSchedule(
        "CosineAnnealingLR",
        lambda c: eta_min + (lr - eta_min) * cosine(c),
        base_lr=lr,
        factor=factor,
    )


def CosineAnnealingWarmRestarts(
    lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0
) -> LRSchedule:
    r"""``CosineAnnealingWarmRestarts`` (SGDR): cosine cycles of ``T_0``, ``T_0 T_mult``, ...

    .. math::
        \gamma_t = \eta_{\min} + \tfrac12(\gamma_0 - \eta_{\min})
          \left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    with :math:`T_i = T_0 T_{mult}^{\,i}` the length of the current cycle and
    :math:`T_{cur}` the steps since it began (PyTorch's ``step()`` without an epoch).

    Args:
      lr: :math:`\gamma_0` (>= 0).
      T_0: :math:`T_0` >= 1, the first cycle's length.
      T_mult: :math:`T_{mult}` >= 1 (an int), the growth of the cycles.
      eta_min: :math:`\eta_{\min}` >= 0.

    Returns:
      An :class:`LRSchedule`.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """
    _lr(lr)
    T_0 = _steps("T_0", T_0, 1)
    T_mult = _validate.whole_number("T_mult", T_mult, 1)
    _validate.non_negative("eta_min", eta_min)
    if T_mult == 1:

        def position(c):
            return c % T_0, T_0

    else:
        # Cycle i starts at T_0 (T_mult**i - 1) / (T_mult - 1); the int32 count ends first.
        starts, lengths = [0], [T_0]
        while starts[-1] + lengths[-1] < 2**31:
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * T_mult)

        def position(c):
            begin = jnp.asarray(starts[1:], c.dtype)
            i = jnp.sum(c >= begin)
            start = jnp.where(i > 0, begin[jnp.maximum(i - 1, 0)], 0)
            return c - start, jnp.asarray(lengths, jnp.result_type(float))[i]

    def fn(c):
        t_cur, t_i = position(c)
        return eta_min + (lr - eta_min) * (1 + jnp.cos(jnp.pi * t_cur / t_i)) / 2

    return LRSchedule("CosineAnnealingWarmRestarts", fn, base_lr=lr)


def _anneal(strategy: str):
    if strategy == "cos":
        return lambda start, end, pct: end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)
    return lambda start, end, pct: (end - start) * pct + start


def OneCycleLR(
    max_lr: float,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> LRSchedule:
    r"""``OneCycleLR``: warm up to ``max_lr``, then anneal far below the start (Smith).

    Two phases (three with ``three_phase``), each annealing (cosine or linear) from one
    value to the next over the count:

    .. math::
        \frac{\gamma_{\max}}{d} \xrightarrow{\ p T - 1\ } \gamma_{\max}
        \xrightarrow{\ T - 1\ } \frac{\gamma_{\max}}{d\, d_f}
        \qquad\left(\text{three phases: }
        \tfrac{\gamma_{\max}}{d} \to \gamma_{\max} \to \tfrac{\gamma_{\max}}{d}
        \to \tfrac{\gamma_{\max}}{d\, d_f}\right)

    and the momentum the other way (``max_momentum`` → ``base_momentum`` → ``max_momentum``).
    The learning rate PyTorch's optimizer was built with is not used, as in PyTorch.

    .. warning:: PyTorch raises after ``total_steps + 1`` optimizer steps; a schedule
       cannot raise under ``jax.jit``, so past that count this one keeps its last value.

    Args:
      max_lr: :math:`\gamma_{\max}` (>= 0).
      total_steps: :math:`T`, or None to use ``epochs * steps_per_epoch``.
      epochs: an int >= 1, used with ``steps_per_epoch`` when ``total_steps`` is None.
      steps_per_epoch: an int >= 1.
      pct_start: :math:`p`, a float in [0, 1]: the fraction of the cycle spent warming up.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      cycle_momentum: build the momentum schedule, ``.momentum``, to pass as the
        optimizer's ``momentum`` or ``betas[0]`` (PyTorch does this by default).
      base_momentum: the momentum's low value, in [0, 1).
      max_momentum: the momentum's high value (its start and end), in [0, 1).
      div_factor: :math:`d`, the start is ``max_lr / div_factor``.
      final_div_factor: :math:`d_f`, the end is ``max_lr / (div_factor * final_div_factor)``.
      three_phase: anneal back to the start before the final decay.

    Returns:
      An :class:`LRSchedule` whose ``.momentum`` is the momentum schedule (None without
      ``cycle_momentum``).

    Raises:
      ValueError: as PyTorch, for missing or non-positive step counts, a ``pct_start``
        outside [0, 1], or an unknown ``anneal_strategy``.

    References:
      Smith & Topin, "Super-Convergence", 2018; ``torch.optim.lr_scheduler.OneCycleLR``.
    """
    if total_steps is not None:
        total = _steps("total_steps", total_steps, 1)
    elif epochs is not None and steps_per_epoch is not None:
        total = _steps("epochs", epochs, 1) * _steps("steps_per_epoch", steps_per_epoch, 1)
    else:
        raise ValueError(
            "OneCycleLR needs `total_steps`, or both `epochs` and `steps_per_epoch` (as PyTorch's)."
        )
    if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
        raise ValueError(f"`pct_start` must be a float in [0, 1]; got {pct_start!r}.")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"`anneal_strategy` must be 'cos' or 'linear'; got {anneal_strategy!r}.")
    _validate.flag("cycle_momentum", cycle_momentum)
    _validate.flag("three_phase", three_phase)
    _lr(max_lr)
    _validate.positive("div_factor", div_factor)
    _validate.positive("final_div_factor", final_div_factor)
    initial = max_lr / div_factor
    lrs = {"initial": initial, "max": max_lr, "min": initial / final_div_factor}
    moms = {"max": max_momentum, "base": base_momentum}
    if three_phase:
        phases = [
            (float(pct_start * total) - 1, "initial", "max", "max", "base"),
            (float(2 * pct_start * total) - 2, "max", "initial", "base", "max"),
            (total - 1, "initial", "min", "max", "max"),
        ]
    else:
        phases = [
            (float(pct_start * total) - 1, "initial", "max", "max", "base"),
            (total - 1, "max", "min", "base", "max"),
        ]
    anneal = _anneal(anneal_strategy)

    def piecewise(values: dict, which: int) -> Callable[[Any], Any]:
        def fn(c):
            c = jnp.minimum(c, total)
            out, starts = None, [0.0] + [p[0] for p in phases[:-1]]
            for i in reversed(range(len(phases))):
                end, start = phases[i][0], starts[i]
                pct = (c - start) / (end - start)
                value = anneal(values[phases[i][which]], values[phases[i][which + 1]], pct)
                out = value if out is None else jnp.where(c <= end, value, out)
            return out

        return fn

    momentum = None
    if cycle_momentum:
        _decay_or_momentum("base_momentum", base_momentum)
        _decay_or_momentum("max_momentum", max_momentum)
        momentum = piecewise(moms, 3)
    return LRSchedule("OneCycleLR", piecewise(lrs, 1), momentum=momentum)


def _decay_or_momentum(name: str, value: Any) -> None:
    _validate.decay_rate(name, value)


def CyclicLR(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
) -> LRSchedule:
    r"""``CyclicLR``: the lr cycles between ``base_lr`` and ``max_lr`` (Smith's CLR).

    With :math:`S = S_{up} + S_{down}`, cycle :math:`k = \lfloor 1 + t/S \rfloor` and
    :math:`x = 1 + t/S - k`:

    .. math::
        h = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases},\qquad
        \gamma_t = \gamma_{base} + (\gamma_{\max} - \gamma_{base})\, h\, s(\cdot)

    (:math:`r = S_{up}/S`); :math:`s` is 1 (``triangular``), :math:`2^{1-k}`
    (``triangular2``), :math:`g^{t}` (``exp_range``), or ``scale_fn`` applied to
    :math:`k` (``scale_mode="cycle"``) or :math:`t` (``"iterations"``). The momentum
    moves the other way: :math:`\mu_t = \mu_{\max} - (\mu_{\max} - \mu_{base})\, h\, s`.

    The learning rate PyTorch's optimizer was built with is replaced by ``base_lr``,
    as in PyTorch.

    Args:
      base_lr: the cycle's low bound (>= 0), where it starts.
      max_lr: the cycle's high bound (>= 0).
      step_size_up: :math:`S_{up}` >= 1, steps from ``base_lr`` up to ``max_lr``.
      step_size_down: :math:`S_{down}` >= 1, or None for ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (ignored with
        ``scale_fn``).
      gamma: :math:`g`, for ``exp_range``.
      scale_fn: a custom :math:`s`, written with ``jax.numpy``.
      scale_mode: ``"cycle"`` or ``"iterations"``, the argument of ``scale_fn``.
      cycle_momentum: build ``.momentum`` (PyTorch's default cycles the momentum).
      base_momentum: the momentum's low bound (at ``max_lr``), in [0, 1).
      max_momentum: the momentum's high bound (at ``base_lr``), in [0, 1).

    Returns:
      An :class:`LRSchedule` whose ``.momentum`` is the momentum schedule.

    Raises:
      ValueError: for an unknown ``mode`` without ``scale_fn``, as PyTorch.

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """
    _lr(base_lr)
    _lr(max_lr)
    up = float(_steps("step_size_up", step_size_up, 1))
    down = float(_steps("step_size_down", step_size_down, 1)) if step_size_down else up
    total, ratio = up + down, up / (up + down)
    if scale_fn is None:
        if mode == "triangular":
            scale, scale_mode = (lambda x: 1.0), "cycle"
        elif mode == "triangular2":
            scale, scale_mode = (lambda x: 1 / (2.0 ** (x - 1))), "cycle"
        elif mode == "exp_range":
            scale, scale_mode = (lambda x: gamma**x), "iterations"
        else:
            raise ValueError(
                f"`mode` must be 'triangular', 'triangular2' or 'exp_range' (or pass "
                f"`scale_fn`); got {mode!r}."
            )
    elif not callable(scale_fn):
        raise TypeError(f"`scale_fn` must be a function; got {type(scale_fn).__name__}.")
    else:
        scale = scale_fn
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"`scale_mode` must be 'cycle' or 'iterations'; got {scale_mode!r}.")
    _validate.flag("cycle_momentum", cycle_momentum)

    def height(c):
        cycle = jnp.floor(1 + c / total)
        x = 1.0 + c / total - cycle
        factor = jnp.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        return factor * scale(cycle if scale_mode == "cycle" else c)

    momentum = None
    if cycle_momentum:
        _decay_or_momentum("base_momentum", base_momentum)
        _decay_or_momentum("max_momentum", max_momentum)

        def momentum(c):
            return max_momentum - (max_momentum - base_momentum) * height(c)

    return LRSchedule(
        "CyclicLR", lambda c: base_lr + (max_lr - base_lr) * height(c), momentum=momentum
    )


def _schedules(schedulers: Any, who: str) -> list[LRSchedule]:
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError(f"{who} needs at least one scheduler.")
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRSchedule):
            raise TypeError(
                f"`schedulers[{i}]` must be a gbopt.pytorch.lr_scheduler schedule such as "
                f"StepLR(lr, 30); got {type(s).__name__}: {s!r}."
            )
    return schedulers


def SequentialLR(schedulers: Sequence[LRSchedule], milestones: Sequence[int]) -> LRSchedule:
    r"""``SequentialLR``: one scheduler after another, each restarted at its milestone.

    .. math:: \gamma_t = s_k(t - m_k) \quad\text{for}\quad m_k \le t < m_{k+1},\ m_0 = 0

    Each scheduler uses its own ``lr`` (in PyTorch they share the optimizer's).

    Args:
      schedulers: :math:`s_0, \dots, s_n`, schedules of this module.
      milestones: :math:`m_1 < \dots < m_n`, one fewer than ``schedulers``.

    Returns:
      An :class:`LRSchedule` (its ``.momentum`` is None: pass a member's ``.momentum``
      yourself).

    Raises:
      ValueError: for lengths that do not fit, or a ``MultiplicativeLR`` after the
        first scheduler (PyTorch continues it from the previous scheduler's lr, which
        a function of the count cannot know).
    """
    schedulers = _schedules(schedulers, "SequentialLR")
    milestones = [_steps(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones)]
    if len(milestones) != len(schedulers) - 1:
        raise ValueError(
            f"SequentialLR needs one milestone fewer than schedulers; got {len(schedulers)} "
            f"schedulers and {len(milestones)} milestones."
        )
    if milestones != sorted(milestones):
        raise ValueError(f"`milestones` must be increasing; got {milestones}.")
    for i, s in enumerate(schedulers[1:], 1):
        if s._restarts_from_previous:
            raise ValueError(
                f"`schedulers[{i}]` is a {s.name}, which PyTorch continues from the lr the "
                "previous scheduler left; write the sequence with LambdaLR instead."
            )

    def fn(c):
        out = schedulers[0](c)
        for m, s in zip(milestones, schedulers[1:], strict=True):
            out = jnp.where(c >= m, s(jnp.maximum(c - m, 0)), out)
        return out

    return LRSchedule("SequentialLR", fn)


def ChainedScheduler(schedulers: Sequence[LRSchedule]) -> LRSchedule:
    r"""``ChainedScheduler``: the product of chainable schedulers' factors.

    .. math:: \gamma_t = \gamma_0 \prod_i f_i(t)

    PyTorch steps each scheduler in turn on the same lr; for the chainable ones
    (``StepLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``, ``ExponentialLR``,
    ``PolynomialLR``, ``MultiplicativeLR``, ``CosineAnnealingLR`` with ``eta_min=0``)
    each multiplies it by its own ratio, so the result is the product of their factors.

    .. warning:: Past ``T_max`` of a ``CosineAnnealingLR`` member, PyTorch's cosine
       restarts from its own base lr and drops the factors of the members before it;
       this product does not (it agrees up to ``T_max``).

    Args:
      schedulers: chainable schedules of this module, all with the same ``lr``.

    Returns:
      An :class:`LRSchedule` (chainable).

    Raises:
      ValueError: for a member that is not chainable (``LambdaLR``, ``OneCycleLR``,
        ``CyclicLR``, ``CosineAnnealingWarmRestarts``, ``CosineAnnealingLR`` with
        ``eta_min > 0``, nested ``SequentialLR``) or members with different ``lr``.
    """
    schedulers = _schedules(schedulers, "ChainedScheduler")
    for i, s in enumerate(schedulers):
        if s.factor is None:
            raise ValueError(
                f"`schedulers[{i}]` ({s.name}) is not chainable: PyTorch sets its lr from "
                "the base lr instead of multiplying the current one, so the chain's result "
                "depends on the order of the members. Write the product as "
                "LambdaLR(lr, lambda count: ...) instead."
            )
    base = schedulers[0].base_lr
    if any(s.base_lr is not base and s.base_lr != base for s in schedulers[1:]):
        raise ValueError(
            "ChainedScheduler's members must have the same `lr` (in PyTorch they share the "
            f"optimizer's); got {[s.base_lr for s in schedulers]}."
        )

    def factor(c):
        out = schedulers[0].factor(c)
        for s in schedulers[1:]:
            out = out * s.factor(c)
        return out

    return _multiplicative("ChainedScheduler", base, factor)
