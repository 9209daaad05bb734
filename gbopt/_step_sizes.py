r"""Per-element step sizes that adapt without a global learning rate: Adadelta and Rprop.

Two new statistics:

* :func:`scale_by_update_rms`, Adadelta's "units correction": multiply by the root of a
  moving average of the squared *outputs* (the past steps), so that the step has the
  units of the parameters;
* :func:`rprop_step_sizes`, Rprop's per-element step sizes, grown while the gradient
  keeps its sign and shrunk when it flips.

::

    adadelta = chain(divide(identity(), chain(accumulate_square(rho), add(eps), sqrt())),
                     scale_by_update_rms(rho, eps), scale_by_learning_rate(lr))
    rprop    = chain(rprop_step_sizes(lr, eta_minus, eta_plus, min_step, max_step), scale(-1))
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from gbopt import _dtypes, _numerics, _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, named, statistic
from gbopt._combine import chain, divide
from gbopt._maps import add, identity, scale, scale_by_learning_rate, sqrt
from gbopt._regularize import add_decayed_weights
from gbopt._statistics import accumulate_square
from gbopt._tree_checks import refuse_complex


class ScaleByUpdateRmsState(NamedTuple):
    r"""State of :func:`scale_by_update_rms`.

    Attributes:
      e_x: the moving average of the squared outputs :math:`E[\Delta x^2]`, one array per
        parameter.
    """

    e_x: Any


def scale_by_update_rms(
    decay: float | jax.Array = 0.9, eps: float | jax.Array = 1e-6
) -> GradientTransformation:
    r"""Adadelta's units correction: multiplies by the RMS of the past outputs.

    .. math::
        \Delta_t = \sqrt{e_{t-1} + \epsilon}\; u_t, \qquad
        e_t = \rho e_{t-1} + (1 - \rho)\, \Delta_t^2, \qquad
        \text{output} = \Delta_t

    with :math:`e_0 = 0` (:math:`e_t` is Zeiler's :math:`E[\Delta x^2]_t`). A statistic
    of its own output: the state is updated after the output is computed.

    Args:
      decay: :math:`\rho` in [0, 1).
      eps: :math:`\epsilon` >= 0, inside the root (it sets the first step's size).

    Returns:
      A transform with state :class:`ScaleByUpdateRmsState`.

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012, Alg. 1 (step 5-6).
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("eps", eps)

    def rule(u, e_x):
        # lax and a NumPy literal for a number eps (u and e_x share the compute dtype): no
        # nested jit or eager scalar array to trace per leaf
        dx = jax.lax.mul(jax.lax.sqrt(jax.lax.add(e_x, _dtypes.scalar(eps, e_x.dtype))), u)
        return dx, _numerics.moving_average(e_x, jax.lax.mul(dx, dx), decay)

    return statistic(
        "scale_by_update_rms",
        ScaleByUpdateRmsState,
        rule,
        hyperparams={"decay": decay, "eps": eps},
        math=r"\Delta = \sqrt{e + \delta}\, u;\quad e \leftarrow \rho e + (1 - \rho) \Delta^2;"
        r"\quad u \leftarrow \Delta",
    )


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-6,
    weight_decay: float | jax.Array = 0.0,
    weight_decay_mask: Any = None,
) -> GradientTransformation:
    r"""Adadelta: RMSProp's scaling times the RMS of the past steps.

    .. math::
        \tilde g_t = g_t + \lambda w, \qquad
        v_t = \rho v_{t-1} + (1 - \rho) \tilde g_t^2, \qquad
        \Delta_t = \frac{\sqrt{e_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, \tilde g_t, \\
        e_t = \rho e_{t-1} + (1 - \rho) \Delta_t^2, \qquad
        w \leftarrow w - \alpha_t \Delta_t

    (:math:`v_t` is Zeiler's :math:`E[g^2]_t`, :math:`e_t` his :math:`E[\Delta x^2]_t`;
    :math:`\lambda` is ``weight_decay``, 0 by default, when it adds nothing and
    :func:`gbopt.describe` leaves it out.) Drop-in for ``optax.adadelta`` (same
    signature, defaults and rule); the paper has no learning rate
    (``learning_rate=None``, optax's default; PyTorch's ``lr=1.0`` is the same).

    Args:
      learning_rate: :math:`\alpha` (a number or a schedule), or None for none.
      rho: :math:`\rho` in [0, 1).
      eps: :math:`\epsilon` >= 0, inside both roots.
      weight_decay: :math:`\lambda` >= 0, L2 (added to the gradient).
      weight_decay_mask: where the weight decay applies.

    Returns:
      ``chain(add_decayed_weights(weight_decay, weight_decay_mask), divide(identity(),
      chain(accumulate_square(rho), add(eps), sqrt())), scale_by_update_rms(rho, eps),
      [scale_by_learning_rate(learning_rate)])``.

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
    """
    pieces = [
        add_decayed_weights(weight_decay, weight_decay_mask),
        divide(identity(), chain(accumulate_square(rho), add(eps), sqrt())),
        scale_by_update_rms(rho, eps),
    ]
    if learning_rate is None:
        pieces.append(scale(-1.0))
    else:
        pieces.append(scale_by_learning_rate(learning_rate))
    return named(
        "adadelta",
        chain(*pieces),
        learning_rate=learning_rate,
        rho=rho,
        eps=eps,
        weight_decay=weight_decay,
    )


class RpropStepSizesState(NamedTuple):
    r"""State of :func:`rprop_step_sizes`.

    Attributes:
      step_sizes: the per-element step sizes :math:`\Delta`, one array per parameter.
      previous: the previous output :math:`\Delta \operatorname{sign}(g)` (0 where the
        sign flipped), one array per parameter.
    """

    step_sizes: Any
    previous: Any


def rprop_step_sizes(
    learning_rate: float | jax.Array,
    eta_minus: float | jax.Array = 0.5,
    eta_plus: float | jax.Array = 1.2,
    min_step_size: float | jax.Array = 1e-6,
    max_step_size: float | jax.Array = 50.0,
    *,
    clip_unchanged: bool = False,
) -> GradientTransformation:
    r"""Rprop's per-element step sizes (iRprop⁻): signed steps that grow while the sign holds.

    With :math:`s = \operatorname{sign}(u_t)\operatorname{sign}(p_{t-1})` (:math:`p` the
    previous output):

    .. math::
        \Delta_t = \begin{cases}
          \operatorname{clip}(\eta^+ \Delta_{t-1}) & s > 0 \\
          \operatorname{clip}(\eta^- \Delta_{t-1}) & s < 0 \\
          \Delta_{t-1} & s = 0
        \end{cases}, \qquad
        p_t = \text{output} = \begin{cases} 0 & s < 0 \\
          \Delta_t \operatorname{sign}(u_t) & \text{otherwise} \end{cases}

    with :math:`\Delta_0` = ``learning_rate``, :math:`p_0 = 0`, and clip to
    [``min_step_size``, ``max_step_size``]. After a sign flip the step is skipped and
    the next comparison sees :math:`s = 0` (Igel & Hüsken's iRprop⁻). The sign of the
    product is taken as the product of the signs, which does not underflow (optax and
    PyTorch multiply the two numbers first; they agree everywhere else).

    Args:
      learning_rate: :math:`\Delta_0` > 0, the initial step size.
      eta_minus: :math:`\eta^-` in (0, 1), the factor after a sign flip.
      eta_plus: :math:`\eta^+` > 1, the factor while the sign holds.
      min_step_size: the smallest step size.
      max_step_size: the largest step size.
      clip_unchanged: also clip where :math:`s = 0` (PyTorch's ``Rprop`` does; optax's
        ``scale_by_rprop`` does not). It matters only for a ``learning_rate`` outside the
        bounds.

    Returns:
      A transform with state :class:`RpropStepSizesState`; it outputs :math:`p_t` (a
      step to be negated for descent).

    Raises:
      TypeError: for complex parameters or updates (the message names the leaf): the sign
        test compares real numbers.

    References:
      Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
      The RPROP Algorithm", ICNN 1993; Igel & Hüsken, "Empirical evaluation of the
      improved Rprop learning algorithms", Neurocomputing 2003.
    """
    _validate.positive("learning_rate", learning_rate)
    for name, value in (
        ("eta_minus", eta_minus),
        ("eta_plus", eta_plus),
        ("min_step_size", min_step_size),
        ("max_step_size", max_step_size),
    ):
        _validate.non_negative(name, value)
    _validate.flag("clip_unchanged", clip_unchanged)

    def rule(u, step_sizes, previous):
        # lax operations, and NumPy literals for numbers (u, the step sizes and the previous
        # output share the compute dtype; injected hyperparameters stay arrays): the same
        # numbers as jnp.where/jnp.clip with scalars, without their nested jit calls and
        # eager scalar arrays in every leaf's trace
        lit = functools.partial(_dtypes.scalar, dtype=step_sizes.dtype)
        lax = jax.lax
        s = lax.mul(lax.sign(u), lax.sign(previous))
        grows, shrinks = lax.gt(s, lit(0)), lax.lt(s, lit(0))
        scaled = lax.select(
            grows,
            lax.mul(step_sizes, lit(eta_plus)),
            lax.select(shrinks, lax.mul(step_sizes, lit(eta_minus)), step_sizes),
        )
        clipped = lax.min(lax.max(scaled, lit(min_step_size)), lit(max_step_size))
        new_sizes = (
            clipped if clip_unchanged else lax.select(lax.eq(s, lit(0)), step_sizes, clipped)
        )
        out = lax.select(shrinks, lax.full_like(new_sizes, 0), lax.mul(new_sizes, lax.sign(u)))
        return out, new_sizes, out

    tx = statistic(
        "rprop_step_sizes",
        RpropStepSizesState,
        rule,
        init=(learning_rate, 0.0),
        hyperparams={
            "learning_rate": learning_rate,
            "eta_minus": eta_minus,
            "eta_plus": eta_plus,
            "min_step_size": min_step_size,
            "max_step_size": max_step_size,
        },
        # The fields in order: the step sizes Delta, then the previous output p.
        math=r"s = \operatorname{sign}(u) \operatorname{sign}(p);\quad "
        r"\Delta \leftarrow \begin{cases} \min(\eta^+ \Delta, \Delta_{\max}) & s > 0 \\ "
        r"\max(\eta^- \Delta, \Delta_{\min}) & s < 0 \\ \Delta & s = 0 \end{cases};\quad "
        r"p \leftarrow \begin{cases} 0 & s < 0 \\ \Delta \operatorname{sign}(u) & "
        r"\text{otherwise} \end{cases};\quad u \leftarrow p",
    )
    why = "Rprop compares the signs of real numbers (optax's rprop does not take them either)."

    def init_fn(params):
        refuse_complex("rprop_step_sizes", params, "params", why)
        return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        refuse_complex("rprop_step_sizes", updates, "updates", why)
        return tx.update(updates, state, params, **extra_args)

    out = GradientTransformation(init_fn, update_fn)
    out.__dict__.update(tx.__dict__)  # its info (for describe) and the kit's marks
    return out


def rprop(
    learning_rate: float | jax.Array,
    eta_minus: float | jax.Array = 0.5,
    eta_plus: float | jax.Array = 1.2,
    min_step_size: float | jax.Array = 1e-6,
    max_step_size: float | jax.Array = 50.0,
) -> GradientTransformation:
    r"""Rprop: per-element step sizes driven by the sign of the gradient alone.

    .. math::
        s_t = \operatorname{sign}(g_t) \operatorname{sign}(p_{t-1}), \qquad
        \Delta_t = \begin{cases}
          \min(\eta^+ \Delta_{t-1}, \Delta_{\max}) & s_t > 0 \\
          \max(\eta^- \Delta_{t-1}, \Delta_{\min}) & s_t < 0 \\
          \Delta_{t-1} & s_t = 0
        \end{cases}, \\
        p_t = \begin{cases} 0 & s_t < 0 \\
          \Delta_t \operatorname{sign}(g_t) & \text{otherwise} \end{cases}, \qquad
        w \leftarrow w - p_t

    with :math:`\Delta_0` = ``learning_rate`` and :math:`p_0 = 0`: each element's step
    size grows while its gradient keeps its sign and shrinks when it flips, and no step
    is taken where the sign flipped (:func:`rprop_step_sizes`, iRprop⁻). Drop-in for
    ``optax.rprop`` (same signature, defaults and rule; ``learning_rate`` is the initial
    step size).

    Args:
      learning_rate: :math:`\Delta_0` > 0, the initial step size.
      eta_minus: :math:`\eta^-` in (0, 1), the factor after a sign flip.
      eta_plus: :math:`\eta^+` > 1, the factor while the sign holds.
      min_step_size: :math:`\Delta_{\min}`, the smallest step size.
      max_step_size: :math:`\Delta_{\max}`, the largest step size.

    Returns:
      ``chain(rprop_step_sizes(learning_rate, eta_minus, eta_plus, min_step_size,
      max_step_size), scale(-1))``.

    Raises:
      TypeError: for complex parameters (optax's ``rprop`` does not take them either).

    References:
      Riedmiller & Braun, ICNN 1993; Igel & Hüsken, Neurocomputing 2003.
    """
    return named(
        "rprop",
        chain(
            rprop_step_sizes(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
            scale(-1.0),
        ),
        learning_rate=learning_rate,
        eta_minus=eta_minus,
        eta_plus=eta_plus,
        min_step_size=min_step_size,
        max_step_size=max_step_size,
    )
