r"""The adaptive family of optax's catalog, each a :func:`gbopt.chain` of primitives.

Every function here has optax 0.2.8's name, signature and defaults, so that ``optax.X`` can
be swapped for ``gbopt.X``; in float64 each follows optax's trajectory to 1e-10 over 100
steps (``tests/test_adaptive.py``). Where a paper's rule differs from optax's, the
docstring says how, and the paper's rule is one composition away.

Symbols: :math:`\alpha_t` the learning rate (a number or a schedule), :math:`g_t` the
gradient, :math:`w` the parameters, :math:`t` the 1-based step, :math:`\lambda` the
weight decay; :math:`\hat m_t = m_t / (1 - \beta_1^t)` and
:math:`\hat v_t = v_t / (1 - \beta_2^t)` are Adam's debiased moments. The step is counted
once per optimizer (:func:`gbopt.with_step_count`) for every bias correction and schedule.

``mask`` (a pytree of bools shaped like the parameters or a prefix of them, or a function
``params -> mask``) limits weight decay to some parameters, as in optax, through
:func:`gbopt.masked`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import jax

from gbopt import _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, named
from gbopt._combine import chain, divide, with_step_count
from gbopt._maps import add, bias_correction, identity, scale_by_learning_rate, sqrt
from gbopt._partition import masked
from gbopt._regularize import add_decayed_weights
from gbopt._statistics import (
    accumulate_inf_norm,
    accumulate_square,
    ema,
    nadam_momentum,
    running_max,
    trace,
)
from gbopt._statistics_adaptive import (
    accumulate_layer_square,
    accumulate_yogi_square,
    rectification,
    scale_by_adan,
    scale_by_belief,
    scale_by_trust_ratio,
)

Number = float | jax.Array
Mask = Any | Callable[[Any], Any] | None
WeightDecay = float | jax.Array | Callable[[jax.Array], Any]


def _optimizer(factory: Callable) -> Callable:
    """Marks what ``factory`` returns as the optimizer of its name, with its arguments.

    :func:`gbopt.describe` then shows the name and the hyperparameters above the chain;
    the signature is ``factory``'s (``inspect.signature`` follows ``__wrapped__``), which
    ``optax.inject_hyperparams`` reads.
    """
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def build(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return named(factory.__name__, factory(*args, **kwargs), **bound.arguments)

    return build


def _first_moment(b1, mu_dtype, nesterov: bool) -> GradientTransformation:
    r"""The numerator: :math:`\hat m_t`, or with ``nesterov`` Dozat's Nesterov estimate.

    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.
    """
    _validate.flag("nesterov", nesterov)
    if nesterov:
        # Dozat's numerator with a constant momentum (no momentum schedule, as optax).
        return nadam_momentum(b1, math.inf, dtype=mu_dtype)
    return chain(ema(b1, dtype=mu_dtype), bias_correction(b1))


def _adam_denominator(b2, eps, eps_root) -> GradientTransformation:
    r""":math:`\sqrt{\hat v_t + \epsilon_r} + \epsilon`."""
    return chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(), add(eps))


def _decay(weight_decay: WeightDecay, mask: Mask) -> GradientTransformation:
    """``add_decayed_weights(weight_decay)``, limited to ``mask`` (a prefix tree or function)."""
    return _masked(add_decayed_weights(weight_decay), mask)


def _masked(tx: GradientTransformation, mask: Mask) -> GradientTransformation:
    """``tx`` where ``mask`` is True; ``None`` and ``True`` mean everywhere, as in optax."""
    if mask is None or mask is True:
        return tx
    return masked(tx, mask)


@_optimizer
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
    eps_root: Number = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: WeightDecay = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""AdamW: Adam with decoupled weight decay.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \quad
        w \leftarrow w - \alpha_t \left(\frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_r}
          + \epsilon} + \lambda w\right)

    With ``nesterov=True`` (:func:`nadamw`), :math:`\hat m_t` is replaced by Dozat's
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`.

    .. note:: The decay is multiplied by the learning rate :math:`\alpha_t`, as in optax
       and PyTorch; Loshchilov & Hutter multiply it by the schedule multiplier only
       (:math:`w \leftarrow w - \eta_t(\alpha \hat m / \ldots + \lambda w)`): with a
       constant rate that is ``weight_decay = λ / α`` here. optax's default
       ``weight_decay`` is 1e-4, PyTorch's ``AdamW`` 1e-2 (:func:`gbopt.pytorch.AdamW`).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root (for meta-gradients).
      mu_dtype: the dtype :math:`m` is stored in; ``None``: the parameters' dtype,
        bfloat16 included (a first moment follows the parameters).
      weight_decay: :math:`\lambda` >= 0, or a schedule ``count -> value``.
      mask: where to decay (see the module docstring); ``None``: everywhere.
      nesterov: Dozat's Nesterov momentum (NAdamW).

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), bias_correction(b1)),
      chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(),
      add(eps))), add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate)))``;
      with ``nesterov``, ``nadam_momentum(b1, math.inf)`` is the numerator;
      with a ``mask``, the decay is inside :func:`gbopt.masked`.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule), or a flag that
        is not a bool.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    return with_step_count(
        chain(
            divide(_first_moment(b1, mu_dtype, nesterov), _adam_denominator(b2, eps, eps_root)),
            _decay(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
    eps_root: Number = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""NAdam as optax has it: Adam with Dozat's Nesterov momentum and a constant :math:`\beta_1`.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \quad
        \pi_t = \beta_1 \pi_{t-1} \;(\pi_0 = 1), \\
        \tilde m_t = \frac{\beta_1 m_t}{1 - \beta_1 \pi_t}
          + \frac{(1 - \beta_1) g_t}{1 - \pi_t}, \qquad
        w \leftarrow w - \alpha_t \frac{\tilde m_t}{\sqrt{\hat v_t + \epsilon_r} + \epsilon}

    :math:`\pi_t = \beta_1^t` is the product of the momentum coefficients, kept in the
    state (one scalar; :func:`gbopt.nadam_momentum` keeps it for a momentum schedule,
    whose product is not a power). optax's ``nadam`` is ``adam`` with ``nesterov=True``;
    so is this one, and ``nesterov=False`` is Adam.

    .. note:: Dozat's paper and PyTorch's ``NAdam`` use a momentum *schedule*
       :math:`\mu_t = \beta_1 (1 - \frac12 0.96^{t\psi})`, which optax does not:
       :func:`gbopt.pytorch.NAdam` is PyTorch's rule, and
       ``gbopt.pytorch.NAdam(momentum_decay=math.inf)`` is this one. Dozat's Alg. 2 also
       multiplies :math:`\hat v_t` by :math:`\beta_2`; optax and PyTorch do not.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      mu_dtype: the dtype :math:`m` is stored in (``None``: the parameters' dtype).
      nesterov: keep True (optax's ``nadam`` is a partial of ``adam`` with this flag).

    Returns:
      ``with_step_count(chain(divide(nadam_momentum(b1, math.inf),
      chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(),
      add(eps))), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    return with_step_count(
        chain(
            divide(_first_moment(b1, mu_dtype, nesterov), _adam_denominator(b2, eps, eps_root)),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
    eps_root: Number = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: WeightDecay = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""NAdamW: :func:`nadam` with decoupled weight decay (:func:`adamw` with ``nesterov=True``).

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \quad
        \pi_t = \beta_1 \pi_{t-1} \;(\pi_0 = 1), \\
        \tilde m_t = \frac{\beta_1 m_t}{1 - \beta_1 \pi_t}
          + \frac{(1 - \beta_1) g_t}{1 - \pi_t}, \qquad
        w \leftarrow w - \alpha_t \left(\frac{\tilde m_t}{\sqrt{\hat v_t + \epsilon_r}
          + \epsilon} + \lambda w\right)

    with Dozat's :math:`\tilde m_t` of :func:`nadam` (:math:`\pi_t = \beta_1^t`, kept in
    the state).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      mu_dtype: the dtype :math:`m` is stored in (``None``: the parameters' dtype).
      weight_decay: :math:`\lambda` >= 0, or a schedule (optax's default 1e-4).
      mask: where to decay; ``None``: everywhere.
      nesterov: keep True (optax's ``nadamw`` is a partial of ``adamw`` with this flag).

    Returns:
      ``adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
      nesterov=nesterov)``, that is ``with_step_count(chain(divide(
      nadam_momentum(b1, math.inf), chain(accumulate_square(b2),
      bias_correction(b2), add(eps_root), sqrt(), add(eps))),
      add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Loshchilov & Hutter, ICLR 2019; Dozat, ICLR 2016 workshop.
    """
    return adamw.__wrapped__(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov
    )


@_optimizer
def adamax(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
) -> GradientTransformation:
    r"""Adamax: Adam with the exponentially weighted infinity norm in the denominator.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        u_t = \max(\beta_2 u_{t-1},\, |g_t| + \epsilon), \qquad
        w \leftarrow w - \alpha_t \frac{\hat m_t}{u_t}

    ``eps`` sits inside the maximum (optax, PyTorch); Kingma & Ba's §7.1 has none.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, inside the maximum.

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), bias_correction(b1)),
      accumulate_inf_norm(b2, eps=eps)), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1.
    """
    return with_step_count(
        chain(
            divide(chain(ema(b1), bias_correction(b1)), accumulate_inf_norm(b2, eps=eps)),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
    weight_decay: WeightDecay = 1e-4,
    mask: Mask = None,
) -> GradientTransformation:
    r"""AdamaxW: :func:`adamax` with decoupled weight decay.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        u_t = \max(\beta_2 u_{t-1},\, |g_t| + \epsilon), \qquad
        w \leftarrow w - \alpha_t \left(\frac{\hat m_t}{u_t} + \lambda w\right)

    as :func:`adamax`, with the decay :math:`\lambda w` added before the learning rate.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, inside the maximum.
      weight_decay: :math:`\lambda` >= 0, or a schedule (optax's default 1e-4).
      mask: where to decay; ``None``: everywhere.

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), bias_correction(b1)),
      accumulate_inf_norm(b2, eps=eps)), add_decayed_weights(weight_decay),
      scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Kingma & Ba, ICLR 2015, §7.1; Loshchilov & Hutter, ICLR 2019.
    """
    return with_step_count(
        chain(
            divide(chain(ema(b1), bias_correction(b1)), accumulate_inf_norm(b2, eps=eps)),
            _decay(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
    eps_root: Number = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformation:
    r"""AMSGrad: Adam divided by the root of the largest (debiased) second moment so far.

    .. math::
        \bar v_t = \max(\bar v_{t-1}, \hat v_t), \qquad
        w \leftarrow w - \alpha_t \frac{\hat m_t}{\sqrt{\bar v_t + \epsilon_r} + \epsilon}

    with :math:`\hat m_t` replaced by :math:`m_t` when ``bias_correction_mu=False`` and
    :math:`\hat v_t` by :math:`v_t` when ``bias_correction_nu=False`` (optax's options).

    .. note:: Reddi et al.'s Alg. 2 has no bias correction and no :math:`\epsilon`: it is
       ``amsgrad(lr, b1, b2, eps=0, bias_correction_mu=False, bias_correction_nu=False)``
       (tested against the paper's formula in NumPy). PyTorch's ``Adam(amsgrad=True)``
       takes the maximum of the *raw* :math:`v_t` and then debiases it
       (:func:`gbopt.pytorch.Adam`).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      mu_dtype: the dtype :math:`m` is stored in (``None``: the parameters' dtype).
      bias_correction_mu: debias :math:`m_t`.
      bias_correction_nu: debias :math:`v_t` before the maximum.

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), [bias_correction(b1)]),
      chain(accumulate_square(b2), [bias_correction(b2)], running_max(),
      add(eps_root), sqrt(), add(eps))), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule), or a flag that
        is not a bool.

    References:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018, Alg. 2.
    """
    _validate.flag("bias_correction_mu", bias_correction_mu)
    _validate.flag("bias_correction_nu", bias_correction_nu)
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)

    def build():
        numerator = [ema(b1, dtype=mu_dtype)]
        if bias_correction_mu:
            numerator.append(bias_correction(b1))
        denominator = [accumulate_square(b2)]
        if bias_correction_nu:
            denominator.append(bias_correction(b2))
        denominator += [running_max(), add(eps_root), sqrt(), add(eps)]
        return chain(
            divide(chain(*numerator), chain(*denominator)),
            scale_by_learning_rate(learning_rate),
        )

    return with_step_count(build())


@_optimizer
def radam(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-8,
    eps_root: Number = 0.0,
    threshold: Number = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""RAdam: Adam whose adaptive step is rectified, and skipped while its variance is intractable.

    .. math::
        \rho_\infty = \frac{2}{1 - \beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        w \leftarrow w - \alpha_t \begin{cases}
          r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_r} + \epsilon) & \rho_t \ge \tau \\
          \hat m_t & \text{otherwise}\end{cases}

    (:math:`\tau` ``threshold``; ``nesterov`` replaces :math:`\hat m_t` as in :func:`nadam`.)

    .. note:: Liu et al.'s Alg. 2 uses :math:`\tau = 4` (their code 5, as optax) and no
       :math:`\epsilon`. PyTorch's ``RAdam`` compares :math:`\rho_t > 5` and adds
       :math:`\epsilon` to :math:`\sqrt{v_t}` before debiasing (its denominator is
       :math:`(\sqrt{v_t} + \epsilon)/\sqrt{1 - \beta_2^t}`): that rule is
       :func:`gbopt.pytorch.RAdam`.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      threshold: :math:`\tau`, the shortest moving average whose variance is trusted.
      nesterov: Dozat's Nesterov momentum.

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), bias_correction(b1)),
      chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(),
      add(eps), rectification(b2, threshold))),
      scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    return with_step_count(
        chain(
            divide(
                _first_moment(b1, None, nesterov),
                chain(_adam_denominator(b2, eps, eps_root), rectification(b2, threshold)),
            ),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-16,
    eps_root: Number = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""AdaBelief: Adam with the second moment of :math:`g - m` (the belief) in the denominator.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        s_t = \beta_2 s_{t-1} + (1 - \beta_2)|g_t - m_t|^2 + \epsilon_r, \quad
        w \leftarrow w - \alpha_t \frac{m_t / (1 - \beta_1^t)}{\sqrt{s_t / (1 - \beta_2^t)}
          + \epsilon}

    (``nesterov`` replaces :math:`m_t / (1 - \beta_1^t)` by Dozat's
    :math:`\beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 - \beta_1^t)`, as
    in :func:`nadam`.) The first moment is kept once, for the numerator and the belief
    (:func:`gbopt.scale_by_belief`), as in optax.

    .. note:: Zhuang et al.'s Alg. 2 uses one :math:`\epsilon` = 1e-8 in both places (and
       the same placement); optax's defaults are 1e-16 for both.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, added to :math:`s_t` at every step.
      nesterov: Dozat's Nesterov momentum.

    Returns:
      ``with_step_count(chain(scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
      scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
      Gradients", NeurIPS 2020.
    """
    return with_step_count(
        chain(
            scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def yogi(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-3,
) -> GradientTransformation:
    r"""Yogi: Adam with an additive, sign-controlled second moment.

    .. math::
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = v_{t-1} - (1 - \beta_2)\operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2, \quad
        w \leftarrow w - \alpha_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    with :math:`m_0 = v_0 = 10^{-6}` (optax's initial value for both).

    .. note:: Zaheer et al.'s Alg. 2 has no bias correction (it divides :math:`m_t` by
       :math:`\sqrt{v_t} + \epsilon`) and starts :math:`m_0 = 0`; optax debiases both. The
       paper's rule is ``chain(divide(ema(b1), chain(accumulate_yogi_square(b2), sqrt(),
       add(eps))), scale_by_learning_rate(lr))`` (tested against NumPy).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root (1e-3, as in the paper).

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1, initial_value=1e-6),
      bias_correction(b1)), chain(accumulate_yogi_square(b2), bias_correction(b2),
      sqrt(), add(eps))), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.
    """
    _validate.non_negative("eps", eps)
    return with_step_count(
        chain(
            divide(
                chain(ema(b1, initial_value=1e-6), bias_correction(b1)),
                chain(
                    accumulate_yogi_square(b2, initial_accumulator_value=1e-6),
                    bias_correction(b2),
                    sqrt(),
                    add(eps),
                ),
            ),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def adan(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.98,
    b2: Number = 0.92,
    b3: Number = 0.99,
    eps: Number = 1e-8,
    eps_root: Number = 1e-8,
    weight_decay: WeightDecay = 0.0,
    mask: Mask = None,
) -> GradientTransformation:
    r"""Adan: adaptive Nesterov momentum from gradient differences.

    .. math::
        \Delta_t = g_t - g_{t-1}\ (\Delta_1 = 0), \quad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) \Delta_t, \\
        n_t = \beta_3 n_{t-1} + (1 - \beta_3)\,|g_t + (1 - \beta_2)\Delta_t|^2, \quad
        w \leftarrow w - \alpha_t \left(
          \frac{\hat m_t + (1 - \beta_2)\hat v_t}{\sqrt{\hat n_t + \epsilon_r} + \epsilon}
          + \lambda w\right)

    (each hat the debiasing by its own :math:`\beta`.)

    .. note:: Xie et al.'s Alg. 1 writes the decays as :math:`1 - \beta` (their
       :math:`\beta_1 = 0.02` is ``b1=0.98`` here), has no bias correction (their code
       has), and applies weight decay as a proximal step,
       :math:`w \leftarrow (w - \alpha \cdot \text{step}) / (1 + \lambda\alpha)`; optax,
       and this function, add :math:`\lambda w` to the update instead (the two agree to
       first order in :math:`\lambda\alpha`).

    The previous gradient :math:`g_{t-1}` is kept once, for the numerator and the
    denominator (:func:`gbopt.scale_by_adan`), as in optax.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1), the momentum's decay.
      b2: :math:`\beta_2` in [0, 1), the decay of the gradient differences.
      b3: :math:`\beta_3` in [0, 1), the decay of the squared extrapolated gradient.
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      weight_decay: :math:`\lambda` >= 0, or a schedule.
      mask: where to decay; ``None``: everywhere.

    Returns:
      ``with_step_count(chain(scale_by_adan(b1, b2, b3, eps, eps_root),
      add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
      Models", IEEE TPAMI 2024 (arXiv:2208.06677).
    """
    return with_step_count(
        chain(
            scale_by_adan(b1, b2, b3, eps, eps_root),
            _decay(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def novograd(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.25,
    eps: Number = 1e-6,
    eps_root: Number = 0.0,
    weight_decay: WeightDecay = 0.0,
) -> GradientTransformation:
    r"""NovoGrad: a layer-wise second moment, the weight decay inside the momentum.

    .. math::
        v_1 = \|g_1\|^2, \quad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\|g_t\|^2, \quad
        m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_r} + \epsilon} + \lambda w,
        \quad w \leftarrow w - \alpha_t m_t

    with one :math:`v` per leaf (the norm is over the whole leaf) and :math:`m_0 = 0`.
    The same rule as Ginsburg et al.'s Alg. 1 (which has no :math:`\epsilon_r`).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1), the momentum (no :math:`1 - \beta_1` factor).
      b2: :math:`\beta_2` in [0, 1), the decay of the layer-wise second moment.
      eps: :math:`\epsilon` >= 0, outside the root.
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      weight_decay: :math:`\lambda` >= 0, or a schedule.

    Returns:
      ``with_step_count(chain(divide(identity(),
      chain(accumulate_layer_square(b2), add(eps_root), sqrt(), add(eps))),
      add_decayed_weights(weight_decay), trace(b1),
      scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
      Training of Deep Networks", 2019 (arXiv:1905.11286).
    """
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    return with_step_count(
        chain(
            divide(
                identity(),
                chain(accumulate_layer_square(b2), add(eps_root), sqrt(), add(eps)),
            ),
            add_decayed_weights(weight_decay),
            trace(b1),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: Number = 0.9,
    b2: Number = 0.999,
    eps: Number = 1e-6,
    eps_root: Number = 0.0,
    weight_decay: WeightDecay = 0.0,
    mask: Mask = None,
) -> GradientTransformation:
    r"""LAMB: AdamW's direction, rescaled layer by layer by its trust ratio.

    .. math::
        r_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_r} + \epsilon} + \lambda w, \qquad
        w \leftarrow w - \alpha_t \frac{\|w\|}{\|r_t\|}\, r_t

    with norms per leaf (a ratio of 1 where either norm is 0). The same rule as You et
    al.'s Alg. 2 (with :math:`\phi` the identity).

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon` >= 0, outside the root (1e-6, as in the paper).
      eps_root: :math:`\epsilon_r` >= 0, inside the root.
      weight_decay: :math:`\lambda` >= 0, or a schedule.
      mask: where to decay; ``None``: everywhere.

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), bias_correction(b1)),
      chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(),
      add(eps))), add_decayed_weights(weight_decay), scale_by_trust_ratio(),
      scale_by_learning_rate(learning_rate)))``.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
      minutes", ICLR 2020.
    """
    _validate.non_negative("eps", eps)
    _validate.non_negative("eps_root", eps_root)
    return with_step_count(
        chain(
            divide(_first_moment(b1, None, False), _adam_denominator(b2, eps, eps_root)),
            _decay(weight_decay, mask),
            scale_by_trust_ratio(),
            scale_by_learning_rate(learning_rate),
        )
    )


@_optimizer
def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: WeightDecay = 0.0,
    weight_decay_mask: Mask = True,
    trust_coefficient: Number = 0.001,
    eps: Number = 0.0,
    trust_ratio_mask: Mask = True,
    momentum: Number = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""LARS: SGD with momentum on the layer-wise trust-ratio-scaled, decayed gradient.

    .. math::
        d_t = g_t + \lambda w, \qquad
        b_t = \mu\, b_{t-1} - \alpha_t\, \eta \frac{\|w\|}{\|d_t\| + \epsilon}\, d_t, \qquad
        w \leftarrow w + b_t

    (norms per leaf, a ratio of 1 where either is 0; ``nesterov`` returns
    :math:`-\alpha_t(\ldots) + \mu b_t`; the learning rate is inside the velocity, as in
    optax.)

    .. note:: You et al.'s eq. 6 puts the decay in the ratio's denominator,
       :math:`\eta \|w\| / (\|g\| + \lambda \|w\|)`; optax (and this function) divide by
       :math:`\|g + \lambda w\|`.

    Args:
      learning_rate: :math:`\alpha`, a number >= 0 or a schedule ``count -> value``.
      weight_decay: :math:`\lambda` >= 0, or a schedule.
      weight_decay_mask: where to decay (True: everywhere).
      trust_coefficient: :math:`\eta` (1e-3).
      eps: :math:`\epsilon` >= 0, added to :math:`\|d_t\|`.
      trust_ratio_mask: where to apply the trust ratio (True: everywhere).
      momentum: :math:`\mu` in [0, 1).
      nesterov: Nesterov's momentum.

    Returns:
      ``chain(add_decayed_weights(weight_decay), scale_by_trust_ratio(
      trust_coefficient=trust_coefficient, eps=eps), scale_by_learning_rate(learning_rate),
      trace(momentum, nesterov=nesterov))``, each of the first two inside
      :func:`gbopt.masked` when its mask is not True.

    Raises:
      ValueError: for a hyperparameter out of range (naming it).
      TypeError: for a hyperparameter that is not a number (or a schedule).

    References:
      You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017.
    """
    _validate.flag("nesterov", nesterov)
    return chain(
        _decay(weight_decay, weight_decay_mask),
        _masked(
            scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask
        ),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov=nesterov),
    )
