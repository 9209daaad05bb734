r"""``torch.optim``'s optimizers, rule for rule, as gbopt transforms.

Each constructor has the name of a ``torch.optim`` class and its arguments, with the
same names and defaults, less ``params``: the parameters go to ``init``, and passing
them first (``AdamW(model.parameters(), lr=1e-3)``) raises a one-line error that says
so. The implementation flags (``foreach``, ``fused``, ``capturable``,
``differentiable``) are accepted and ignored: XLA fuses the update and compiles it for
any device, and every gbopt transform is differentiable, so the rule is the same.
It returns a :class:`gbopt.GradientTransformation` that follows PyTorch's update rule
exactly: in float64, 200 steps of each stay within 1e-12 of ``torch.optim`` on CPU
(``tests/test_pytorch.py``), including with a learning-rate schedule::

    torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.1)
    gbopt.pytorch.SGD(lr=0.1, momentum=0.9, dampening=0.1)

Each is a :func:`gbopt.chain` of gbopt primitives (printed in its docstring), so it can
be rebuilt or changed piece by piece.

**Learning-rate schedules.** ``lr`` may be a schedule ``count -> lr`` (``count`` is 0
at the first step); :mod:`gbopt.pytorch.lr_scheduler` has PyTorch's schedulers as
such functions (``lr=lr_scheduler.StepLR(0.1, step_size=30)``). ``momentum`` and each
of ``betas`` may be schedules too, as ``OneCycleLR`` and ``CyclicLR`` make them
(``betas=(one_cycle.momentum, 0.999)``): each is read at the count, as the learning
rate is.

**Where the conventions differ** (docs/conventions.md): PyTorch keeps the learning rate
outside the momentum buffer (``SGD``, ``RMSprop``), as ``optax.sgd`` does but the
textbook (:func:`gbopt.momentum`) and ``optax.rmsprop`` do not; the difference shows
only with a schedule. ``Adagrad`` and ``RMSprop`` add ``eps`` outside the root (optax
and the textbook's RMSProp inside). ``SGD``'s first momentum step is undamped, and
``Adam(amsgrad=True)`` takes the maximum of the raw second moment; optax reproduces
neither. ``NAdam`` uses Dozat's momentum schedule, which optax's ``nadam`` does not.

**Complex parameters** follow PyTorch, which runs each rule on ``torch.view_as_real(p)``:
the real and imaginary parts are separate reals, each with its own second moment
(:math:`\operatorname{Re}(g)^2`, :math:`\operatorname{Im}(g)^2`). gbopt's core optimizers
and optax use one real :math:`|g|^2` per complex element instead.

.. warning:: ``maximize=True`` negates the gradient *before* weight decay, as PyTorch
   does, so weight decay still pulls the parameters towards 0.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gbopt import _validate
from gbopt._averaging import averaged_iterate
from gbopt._base import GradientTransformation, ScalarOrSchedule
from gbopt._combine import chain, divide, with_step_count
from gbopt._hyperparams import inject_hyperparams
from gbopt._maps import (
    add,
    bias_correction,
    identity,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    sqrt,
)
from gbopt._regularize import add_decayed_weights
from gbopt._statistics import (
    _validate_momentum_decay,
    accumulate_centered_square,
    accumulate_inf_norm,
    accumulate_square,
    ema,
    nadam_momentum,
    running_max,
    trace,
)
from gbopt._statistics_adaptive import rectification
from gbopt._step_sizes import rprop_step_sizes, scale_by_update_rms
from gbopt._torch_lbfgs import lbfgs_step
from gbopt.pytorch import lr_scheduler as lr_scheduler

__all__ = [
    "RAdam",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "NAdam",
    "Adamax",
    "Adadelta",
    "ASGD",
    "Rprop",
    "LBFGS",
]

Number = float | jax.Array


def _is_zero(value: Any) -> bool:
    """True for a concrete 0 (a traced value may be anything, so it is not zero)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {type(value).__name__}: {value!r}.")


def _betas(betas: Any) -> tuple[Any, Any]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(
            f"`betas` must be a pair (beta1, beta2), e.g. (0.9, 0.999); got {betas!r}."
        ) from None
    _validate.decay_rate("betas[0]", b1)
    _validate.decay_rate("betas[1]", b2)
    return b1, b2


def _has_schedule(value: Any) -> bool:
    """Whether ``momentum`` or ``betas`` holds a schedule (``OneCycleLR(...).momentum``)."""
    if isinstance(value, (tuple, list)):
        return any(callable(v) for v in value)
    return callable(value)


# ``torch.optim``'s implementation flags, accepted and ignored (keyword-only here).
_FLAG_DEFAULTS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}
_FLAGS = {
    "SGD": ("foreach", "differentiable", "fused"),
    "Adagrad": ("foreach", "differentiable", "fused"),
    "RMSprop": ("capturable", "foreach", "differentiable"),
    "Adam": ("foreach", "capturable", "differentiable", "fused"),
    "AdamW": ("foreach", "capturable", "differentiable", "fused"),
    "NAdam": ("foreach", "capturable", "differentiable"),
    "Adamax": ("foreach", "differentiable", "capturable"),
    "RAdam": ("foreach", "capturable", "differentiable"),
    "Adadelta": ("foreach", "capturable", "differentiable"),
    "ASGD": ("foreach", "differentiable", "capturable"),
    "Rprop": ("capturable", "foreach", "differentiable"),
    "LBFGS": (),
}


def _parameters_kind(x: Any) -> str | None:
    """What ``x`` is when it looks like PyTorch's ``params`` argument, else None."""
    module = type(x).__module__ or ""
    if module.startswith("torch"):
        return f"a {type(x).__name__}"
    if hasattr(x, "parameters") and callable(x.parameters):
        return f"a module ({type(x).__name__})"
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(g, dict) for g in x):
            return f"a list of {len(x)} parameter groups (dicts)"
        return f"a {type(x).__name__} of {len(x)} items"
    if isinstance(x, dict):
        return f"a dict of {len(x)} entries"
    if isinstance(x, collections.abc.Iterator):
        return f"an iterator ({type(x).__name__})"
    return None


def _torch_optimizer(factory: Callable) -> Callable:
    """Gives a constructor PyTorch's calling habits, with one-line errors where they fail.

    Adds ``torch.optim``'s implementation flags of the class (``foreach``, ``fused``,
    ``capturable``, ``differentiable``) as keyword-only arguments that are checked and
    ignored: XLA fuses the update and traces it for any device, and every gbopt
    transform is differentiable, so each flag's setting gives the same rule. A first
    argument that is the parameters (PyTorch's ``params``) raises a TypeError that says
    they go to ``init``. A schedule as ``momentum`` or in ``betas`` makes the optimizer
    ``inject_hyperparams(optimizer)(...)``: its state then shows their current values.
    """
    name = factory.__name__
    flags = _FLAGS[name]
    signature = inspect.signature(factory)
    parameters = list(signature.parameters.values()) + [
        inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=_FLAG_DEFAULTS[f])
        for f in flags
    ]
    full = signature.replace(parameters=parameters)

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        kind = _parameters_kind(args[0]) if args else None
        if kind is not None:
            groups = "parameter groups" in kind
            raise TypeError(
                f"gbopt.pytorch.{name} got the parameters ({kind}) as its first argument; "
                + (
                    f"parameter groups become gbopt.multi_transform({{label: "
                    f"gbopt.pytorch.{name}(...)}}, param_labels) (docs/pytorch.md, "
                    "'Parameter groups'), and the parameters go to `init`."
                    if groups
                    else f"build it without them, tx = gbopt.pytorch.{name}(lr=...), and "
                    "pass the parameters to `init`: state = tx.init(params)."
                )
            )
        try:
            bound = full.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"gbopt.pytorch.{name}: {e}") from None
        for flag in flags:
            value = bound.arguments.pop(flag, None)
            if not (value is None or isinstance(value, bool)):
                raise TypeError(
                    f"`{flag}` must be True, False or None, got {type(value).__name__}: "
                    f"{value!r}. (gbopt accepts it and ignores it: XLA fuses the update.)"
                )
        scheduled = [k for k in ("momentum", "betas") if _has_schedule(bound.arguments.get(k))]
        if scheduled:
            # PyTorch's OneCycleLR and CyclicLR rewrite momentum or betas[0] before each
            # step: inject_hyperparams reads the schedule at the count, keeps its value in
            # the state, and builds the rule with it (the other arguments stay as given).
            if isinstance(bound.arguments.get("betas"), list):
                bound.arguments["betas"] = tuple(bound.arguments["betas"])
            static = [k for k in full.parameters if k not in scheduled]
            return inject_hyperparams(build, static_args=static)(*bound.args, **bound.kwargs)
        return factory(*bound.args, **bound.kwargs)

    build.__signature__ = full
    return build


def _is_complex(x: Any) -> bool:
    return x is not None and jnp.iscomplexobj(x)


def _as_real(tree: Any) -> Any:
    """Each complex leaf as ``torch.view_as_real`` sees it (parts on a new last axis).

    Real leaves (and None) are unchanged.
    """

    def leaf(x):
        if not _is_complex(x):
            return x
        x = jnp.asarray(x)
        return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)

    return jax.tree.map(leaf, tree)


def _back_to_complex(tree: Any, like: Any) -> Any:
    """The inverse of :func:`_as_real` for the leaves that are complex in ``like``."""

    def leaf(x, ref):
        if x is None or not _is_complex(ref):
            return x
        return jax.lax.complex(x[..., 0], x[..., 1]).astype(jnp.result_type(ref))

    return jax.tree.map(leaf, tree, like, is_leaf=lambda x: x is None)


def _view_as_real(tx: GradientTransformation) -> GradientTransformation:
    r"""``tx`` applied to complex leaves as PyTorch applies its optimizers to them.

    ``torch.optim`` runs its rule on ``torch.view_as_real(p)``: the real and imaginary
    parts are two independent reals, each with its own second moment
    (:math:`\operatorname{Re}(g)^2` and :math:`\operatorname{Im}(g)^2`, where gbopt's core
    and optax use one real :math:`|g|^2`). The state of a complex leaf has its shape plus
    a last axis of 2; a tree without complex leaves is passed through untouched (same
    state, same program).
    """

    def has_complex(tree):
        return any(_is_complex(x) for x in jax.tree.leaves(tree))

    def init_fn(params):
        return tx.init(_as_real(params) if has_complex(params) else params)

    def update_fn(updates, state, params=None, **extra_args):
        if not (has_complex(updates) or has_complex(params)):
            return tx.update(updates, state, params, **extra_args)
        out, state = tx.update(_as_real(updates), state, _as_real(params), **extra_args)
        return _back_to_complex(out, updates), state

    return GradientTransformation(init_fn, update_fn)


def _torch_semantics(factory: Callable[..., GradientTransformation]):
    """Decorates a constructor so that complex parameters follow PyTorch (:func:`_view_as_real`)."""

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        return _view_as_real(factory(*args, **kwargs))

    return build


def _gradient(weight_decay: Any, maximize: bool) -> list[GradientTransformation]:
    """PyTorch's first two lines: negate for ``maximize``, then add L2 weight decay."""
    pieces = [scale(-1.0)] if maximize else []
    if not _is_zero(weight_decay):
        pieces.append(add_decayed_weights(weight_decay))
    return pieces


@_torch_optimizer
@_torch_semantics
def SGD(
    lr: ScalarOrSchedule = 1e-3,
    momentum: Number = 0,
    dampening: Number = 0,
    weight_decay: Number = 0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.SGD``: SGD with momentum, dampening, Nesterov and L2 weight decay.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda \theta_{t-1} \\
        b_1 &= g_1, \qquad b_t = \mu\, b_{t-1} + (1 - \tau)\, g_t \\
        \theta_t &= \theta_{t-1} - \gamma_t\, b_t
          \quad\text{or, with Nesterov,}\quad
          \theta_{t-1} - \gamma_t\, (g_t + \mu b_t)

    (:math:`\gamma` ``lr``, :math:`\mu` ``momentum``, :math:`\tau` ``dampening``,
    :math:`\lambda` ``weight_decay``; the minus sign of :math:`\pm` for ``maximize``.)

    .. warning:: The learning rate multiplies the buffer (it is *outside* the velocity),
       as in ``optax.sgd`` but not in the textbook's Alg. 8.2 (:func:`gbopt.momentum`);
       the two differ once the learning rate changes. The first step is **not damped**
       (:math:`b_1 = g_1`), which ``optax`` cannot reproduce; ``gbopt`` does it with
       a dampening schedule that is 1 at the first step.

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``.
      momentum: :math:`\mu` in [0, 1) (PyTorch also accepts values >= 1, which diverge),
        or a schedule ``count -> momentum`` (e.g. ``OneCycleLR(...).momentum``).
      dampening: :math:`\tau` in [0, 1].
      weight_decay: :math:`\lambda` >= 0 (L2: added to the gradient).
      nesterov: use Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
      maximize: ascend the objective instead of descending.

    Returns:
      ``chain([scale(-1)], [add_decayed_weights(weight_decay)],
      [scale_by_schedule(1 at the first step, else 1 - dampening)],
      [trace(momentum, nesterov=nesterov)], scale_by_learning_rate(lr))``, the bracketed
      pieces present only when their option is set (inside :func:`gbopt.with_step_count`
      when ``dampening`` needs the step).

    Raises:
      ValueError: for a hyperparameter out of range, or ``nesterov=True`` without
        momentum or with dampening (as PyTorch).

    References:
      Sutskever et al., "On the importance of initialization and momentum in deep
      learning", ICML 2013; ``torch.optim.SGD`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    _validate.decay_rate("momentum", momentum)
    _validate.non_negative("weight_decay", weight_decay)
    _validate.non_negative("dampening", dampening)
    if isinstance(dampening, numbers.Real) and dampening > 1:
        raise ValueError(
            f"`dampening` must be in [0, 1] (the fraction of each new gradient left out of "
            f"the momentum buffer); got {dampening!r}."
        )
    _flag("nesterov", nesterov)
    _flag("maximize", maximize)
    if nesterov and (_is_zero(momentum) or not _is_zero(dampening)):
        raise ValueError(
            "`nesterov=True` needs `momentum` > 0 and `dampening` = 0 (torch.optim.SGD "
            f"raises the same); got momentum={momentum!r}, dampening={dampening!r}. Set "
            "momentum, e.g. 0.9, and dampening=0, or use nesterov=False."
        )
    with_momentum = not _is_zero(momentum)
    damped = with_momentum and not _is_zero(dampening)

    def build(step):
        pieces = _gradient(weight_decay, maximize)
        if damped:
            # b_1 = g_1, b_t = mu b_{t-1} + (1 - dampening) g_t: the input of the trace is
            # scaled by 1 at the first step (count 0) and by 1 - dampening after.
            pieces.append(
                scale_by_schedule(
                    lambda count: jnp.where(count == 0, 1.0, 1 - dampening), step=step
                )
            )
        if with_momentum:
            pieces.append(trace(momentum, nesterov=nesterov))
        pieces.append(scale_by_learning_rate(lr, step=step))
        return chain(*pieces)

    return with_step_count(build) if damped else build(None)


def _lr_decay_schedule(lr: ScalarOrSchedule, lr_decay: Number) -> ScalarOrSchedule:
    r"""Adagrad's :math:`\gamma_t / (1 + (t - 1)\,\eta)`, with ``count`` = :math:`t - 1`."""
    if _is_zero(lr_decay):
        return lr
    base: Callable = lr if callable(lr) else (lambda count: lr)
    return lambda count: base(count) / (1 + count * lr_decay)


@_torch_optimizer
@_torch_semantics
def Adagrad(
    lr: ScalarOrSchedule = 1e-2,
    lr_decay: Number = 0,
    weight_decay: Number = 0,
    initial_accumulator_value: Number = 0,
    eps: Number = 1e-10,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adagrad``: AdaGrad with ``eps`` outside the root and ``lr_decay``.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda \theta_{t-1}, \qquad
        \tilde\gamma_t = \frac{\gamma_t}{1 + (t - 1)\,\eta} \\
        s_t &= s_{t-1} + g_t^2, \qquad
        \theta_t = \theta_{t-1} - \tilde\gamma_t\, \frac{g_t}{\sqrt{s_t} + \epsilon}

    (:math:`\eta` ``lr_decay``, :math:`s_0` ``initial_accumulator_value``.) This is the
    textbook's Alg. 8.4 (:func:`gbopt.adagrad`) with other defaults.

    .. warning:: ``optax.adagrad`` puts ``eps`` **inside** the root and starts from
       :math:`s_0 = 0.1`; it cannot reproduce PyTorch's default ``eps=1e-10``
       (docs/conventions.md §3). gbopt's ``adagrad(..., eps_in_sqrt=True,
       initial_accumulator_value=0.1)`` is optax's rule.

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``.
      lr_decay: :math:`\eta` >= 0; the learning rate at step :math:`t` is divided by
        :math:`1 + (t-1)\eta` (a schedule, multiplied into ``lr``'s).
      weight_decay: :math:`\lambda` >= 0 (L2).
      initial_accumulator_value: :math:`s_0` >= 0.
      eps: :math:`\epsilon` >= 0, outside the root.
      maximize: ascend the objective instead of descending.

    Returns:
      ``chain([scale(-1)], [add_decayed_weights(weight_decay)],
      divide(identity(), chain(accumulate_square(initial_accumulator_value=...), sqrt(),
      add(eps))), scale_by_learning_rate(lr / (1 + count * lr_decay)))``.

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 2011; ``torch.optim.Adagrad`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    _validate.non_negative("lr_decay", lr_decay)
    _validate.non_negative("weight_decay", weight_decay)
    _validate.non_negative("initial_accumulator_value", initial_accumulator_value)
    _validate.non_negative("eps", eps)
    _flag("maximize", maximize)
    return chain(
        *_gradient(weight_decay, maximize),
        divide(
            identity(),
            chain(
                accumulate_square(initial_accumulator_value=initial_accumulator_value),
                sqrt(),
                add(eps),
            ),
        ),
        scale_by_learning_rate(_lr_decay_schedule(lr, lr_decay)),
    )


@_torch_optimizer
@_torch_semantics
def RMSprop(
    lr: ScalarOrSchedule = 1e-2,
    alpha: Number = 0.99,
    eps: Number = 1e-8,
    weight_decay: Number = 0,
    momentum: Number = 0,
    centered: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.RMSprop``: RMSProp with ``eps`` outside the root, lr outside the buffer.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda \theta_{t-1}, \qquad
        v_t = \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        \tilde v_t &= v_t \;\text{or, centered,}\;
          \max(v_t - \bar g_t^2, 0), \quad \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \\
        b_t &= \mu b_{t-1} + \frac{g_t}{\sqrt{\tilde v_t} + \epsilon}, \qquad
        \theta_t = \theta_{t-1} - \gamma_t\, b_t

    (without momentum :math:`b_t` is the fraction itself; :math:`v_0 = \bar g_0 = b_0 = 0`.)

    .. warning:: Three conventions differ from the textbook's Alg. 8.5
       (:func:`gbopt.rmsprop`) and from ``optax.rmsprop``'s defaults: ``eps`` is
       **outside** the root (``eps_in_sqrt=False`` in both), the decay defaults to
       0.99 (not 0.9), so the first step is :math:`10\gamma\,\mathrm{sign}(g)`, and the
       learning rate multiplies the momentum buffer from **outside** (optax's
       ``rmsprop(momentum=...)`` puts it inside, which differs under a schedule).
       The centered variance is clamped at 0 (PyTorch returns NaN when round-off makes it
       negative, docs/conventions.md §4.4); where it is not negative the rule is PyTorch's.

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``.
      alpha: :math:`\alpha` in [0, 1), the decay of the moving averages.
      eps: :math:`\epsilon` >= 0, outside the root.
      weight_decay: :math:`\lambda` >= 0 (L2).
      momentum: :math:`\mu` in [0, 1), or a schedule ``count -> momentum``.
      centered: divide by the root of the estimated variance instead of the second
        moment (Graves, 2013).
      maximize: ascend the objective instead of descending.

    Returns:
      ``chain([scale(-1)], [add_decayed_weights(weight_decay)], divide(identity(),
      chain(accumulate_square(alpha) or accumulate_centered_square(alpha), sqrt(),
      add(eps))), [trace(momentum)], scale_by_learning_rate(lr))``.

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Tieleman & Hinton, Lecture 6.5, 2012; Graves, "Generating Sequences With
      Recurrent Neural Networks", 2013; ``torch.optim.RMSprop`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    _validate.decay_rate("alpha", alpha)
    _validate.non_negative("eps", eps)
    _validate.non_negative("weight_decay", weight_decay)
    _validate.decay_rate("momentum", momentum)
    _flag("centered", centered)
    _flag("maximize", maximize)
    second_moment = accumulate_centered_square(alpha) if centered else accumulate_square(alpha)
    pieces = [
        *_gradient(weight_decay, maximize),
        divide(identity(), chain(second_moment, sqrt(), add(eps))),
    ]
    if not _is_zero(momentum):
        pieces.append(trace(momentum))
    pieces.append(scale_by_learning_rate(lr))
    return chain(*pieces)


@_torch_optimizer
@_torch_semantics
def Adam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Number, Number] = (0.9, 0.999),
    eps: Number = 1e-8,
    weight_decay: Number = 0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adam``: Adam, AMSGrad, L2 or decoupled weight decay.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \;[+\, \lambda \theta_{t-1}], \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \frac{v_t \;\text{or, AMSGrad,}\; \max_{k \le t} v_k}{1 - \beta_2^t},
        \qquad
        \theta_t = \theta_{t-1}\;[-\, \gamma_t \lambda \theta_{t-1}]
          - \gamma_t \frac{m_t / (1 - \beta_1^t)}{\sqrt{\hat v_t} + \epsilon}

    The first bracket is L2 decay (default), the second decoupled decay
    (``decoupled_weight_decay=True``, i.e. :func:`AdamW`). This is the textbook's
    Alg. 8.7 (:func:`gbopt.adam`, ``optax.adam``) when ``amsgrad=False``.

    .. warning:: AMSGrad here takes the maximum of the **raw** :math:`v_t` and then
       divides by :math:`1 - \beta_2^t`; ``optax.amsgrad`` takes the maximum of the
       bias-corrected :math:`\hat v_t` and differs (0.59 after 200 steps in
       docs/conventions.md §3). The bias corrections are computed so that float32 tracks the
       float64 rule at least as closely as PyTorch's float32 (``optax.adam`` in float32
       is 10 times further off, docs/conventions.md §4.5).

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) or a schedule ``count -> beta``
        (``OneCycleLR`` and ``CyclicLR`` schedule :math:`\beta_1`).
      eps: :math:`\epsilon` >= 0, outside the root.
      weight_decay: :math:`\lambda` >= 0.
      amsgrad: divide by the root of the largest second moment so far.
      maximize: ascend the objective instead of descending.
      decoupled_weight_decay: decay the parameters by :math:`\gamma_t\lambda\theta`
        instead of adding :math:`\lambda\theta` to the gradient (AdamW).

    Returns:
      ``with_step_count(lambda t: chain([scale(-1)], [add_decayed_weights(weight_decay)],
      divide(chain(ema(b1), bias_correction(b1, step=t)), chain(accumulate_square(b2),
      [running_max()], bias_correction(b2, step=t), sqrt(), add(eps))),
      [add_decayed_weights(weight_decay)], scale_by_learning_rate(lr, step=t)))``, weight
      decay before the division (L2) or after it (decoupled).

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Reddi, Kale &
      Kumar, "On the Convergence of Adam and Beyond", ICLR 2018; Loshchilov & Hutter,
      "Decoupled Weight Decay Regularization", ICLR 2019; ``torch.optim.Adam``.
    """
    _validate.learning_rate(lr, "lr")
    b1, b2 = _betas(betas)
    _validate.non_negative("eps", eps)
    _validate.non_negative("weight_decay", weight_decay)
    _flag("amsgrad", amsgrad)
    _flag("maximize", maximize)
    _flag("decoupled_weight_decay", decoupled_weight_decay)

    def build(t):
        second_moment = [accumulate_square(b2), *([running_max()] if amsgrad else [])]
        direction = divide(
            chain(ema(b1), bias_correction(b1, step=t)),
            chain(*second_moment, bias_correction(b2, step=t), sqrt(), add(eps)),
        )
        return _decayed(direction, lr, t, weight_decay, maximize, decoupled_weight_decay)

    return with_step_count(build)


def _decayed(direction, lr, t, weight_decay, maximize, decoupled) -> GradientTransformation:
    """``direction`` with L2 decay before it or decoupled decay after it, then ``-lr``."""
    if decoupled:
        return chain(
            *_gradient(0, maximize),
            direction,
            *([] if _is_zero(weight_decay) else [add_decayed_weights(weight_decay)]),
            scale_by_learning_rate(lr, step=t),
        )
    return chain(*_gradient(weight_decay, maximize), direction, scale_by_learning_rate(lr, step=t))


@_torch_optimizer
def AdamW(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Number, Number] = (0.9, 0.999),
    eps: Number = 1e-8,
    weight_decay: Number = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.AdamW``: Adam with decoupled weight decay (default 1e-2).

    .. math::
        \theta_t = \theta_{t-1} - \gamma_t \lambda\, \theta_{t-1}
          - \gamma_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    with :math:`\hat m_t, \hat v_t` as in :func:`Adam`. PyTorch multiplies the
    parameters by :math:`1 - \gamma_t\lambda` before the Adam step; gbopt adds
    :math:`-\gamma_t\lambda\theta_{t-1}` to the update, which is the same number up to
    one rounding.

    .. warning:: ``optax.adamw``'s ``weight_decay`` defaults to 1e-4, PyTorch's to 1e-2.

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) or a schedule ``count -> beta``
        (``OneCycleLR`` and ``CyclicLR`` schedule :math:`\beta_1`).
      eps: :math:`\epsilon` >= 0, outside the root.
      weight_decay: :math:`\lambda` >= 0, decoupled.
      amsgrad: as in :func:`Adam`.
      maximize: ascend the objective instead of descending (the decay still shrinks
        the parameters).

    Returns:
      ``Adam(lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
      decoupled_weight_decay=True)``.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
      ``torch.optim.AdamW`` (PyTorch 2.13).
    """
    return Adam(
        lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True
    )


@_torch_optimizer
@_torch_semantics
def NAdam(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[Number, Number] = (0.9, 0.999),
    eps: Number = 1e-8,
    weight_decay: Number = 0,
    momentum_decay: Number = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.NAdam``: Adam with Nesterov momentum and Dozat's momentum schedule.

    .. math::
        \mu_t &= \beta_1\left(1 - \tfrac12\, 0.96^{t\psi}\right), \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1}\;[-\,\gamma_t\lambda\theta_{t-1}]
          - \gamma_t\, \frac{\frac{1 - \mu_t}{1 - \prod_{k\le t}\mu_k}\, g_t
            + \frac{\mu_{t+1}}{1 - \prod_{k \le t+1}\mu_k}\, m_t}
            {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    with :math:`g_t` the gradient (plus :math:`\lambda\theta_{t-1}` for L2 decay) and
    :math:`\psi` ``momentum_decay``.

    .. warning:: ``optax.nadam`` has no momentum schedule (:math:`\mu_t = \beta_1`); it
       equals ``NAdam(momentum_decay=math.inf)`` and differs from PyTorch's default by
       7e-2 after 200 steps (docs/conventions.md §3). PyTorch keeps
       :math:`\prod\mu_k` in its default dtype (float32), which costs a float64 run 3e-9
       to 4e-8; gbopt keeps it in the parameters' dtype, so it matches PyTorch run with
       ``torch.set_default_dtype(torch.float64)``.

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``. PyTorch's default is 2e-3.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) or a schedule ``count -> beta``
        (``OneCycleLR`` and ``CyclicLR`` schedule :math:`\beta_1`).
      eps: :math:`\epsilon` >= 0, outside the root.
      weight_decay: :math:`\lambda` >= 0.
      momentum_decay: :math:`\psi` >= 0 (``math.inf`` gives :math:`\mu_t = \beta_1`).
      decoupled_weight_decay: decoupled (AdamW-style) instead of L2 decay (NAdamW).
      maximize: ascend the objective instead of descending.

    Returns:
      ``with_step_count(lambda t: chain([scale(-1)], [add_decayed_weights(weight_decay)],
      divide(nadam_momentum(b1, momentum_decay, step=t), chain(accumulate_square(b2),
      bias_correction(b2, step=t), sqrt(), add(eps))), [add_decayed_weights(weight_decay)],
      scale_by_learning_rate(lr, step=t)))``.

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop;
      ``torch.optim.NAdam`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    b1, b2 = _betas(betas)
    _validate.non_negative("eps", eps)
    _validate.non_negative("weight_decay", weight_decay)
    _flag("decoupled_weight_decay", decoupled_weight_decay)
    _flag("maximize", maximize)
    _validate_momentum_decay(momentum_decay)

    def build(t):
        direction = divide(
            nadam_momentum(b1, momentum_decay, step=t),
            chain(accumulate_square(b2), bias_correction(b2, step=t), sqrt(), add(eps)),
        )
        return _decayed(direction, lr, t, weight_decay, maximize, decoupled_weight_decay)

    return with_step_count(build)


@_torch_optimizer
@_torch_semantics
def Adamax(
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[Number, Number] = (0.9, 0.999),
    eps: Number = 1e-8,
    weight_decay: Number = 0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adamax``: Adam with the infinity norm in the denominator.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\theta_{t-1}, \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \\
        u_t &= \max(\beta_2 u_{t-1},\; |g_t| + \epsilon), \qquad
        \theta_t = \theta_{t-1} - \frac{\gamma_t}{1 - \beta_1^t}\, \frac{m_t}{u_t}

    ``eps`` sits inside the maximum, in PyTorch and in ``optax.adamax`` alike (the
    same rule as ``optax.adamax`` when ``weight_decay=0``).

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``. PyTorch's default is 2e-3.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) or a schedule ``count -> beta``
        (``OneCycleLR`` and ``CyclicLR`` schedule :math:`\beta_1`).
      eps: :math:`\epsilon` >= 0, inside the maximum.
      weight_decay: :math:`\lambda` >= 0 (L2).
      maximize: ascend the objective instead of descending.

    Returns:
      ``with_step_count(lambda t: chain([scale(-1)], [add_decayed_weights(weight_decay)],
      divide(chain(ema(b1), bias_correction(b1, step=t)), accumulate_inf_norm(b2,
      eps=eps)), scale_by_learning_rate(lr, step=t)))``.

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1;
      ``torch.optim.Adamax`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    b1, b2 = _betas(betas)
    _validate.non_negative("eps", eps)
    _validate.non_negative("weight_decay", weight_decay)
    _flag("maximize", maximize)

    def build(t):
        direction = divide(
            chain(ema(b1), bias_correction(b1, step=t)), accumulate_inf_norm(b2, eps=eps)
        )
        return _decayed(direction, lr, t, weight_decay, maximize, False)

    return with_step_count(build)


def __dir__() -> list[str]:
    """The public names only."""
    return list(__all__)


def _root_bias_correction(b2: Any) -> Callable[[jax.Array], jax.Array]:
    r"""The schedule :math:`1 / \sqrt{1 - \beta_2^t}`, with ``count`` = :math:`t - 1`."""

    def factor(count):
        dtype = jnp.result_type(float)
        t = jnp.asarray(count, jnp.int32) + 1
        if isinstance(b2, numbers.Real):
            one_minus = -jnp.expm1(t.astype(dtype) * jnp.asarray(math.log(b2), dtype))
        else:
            one_minus = 1 - jnp.asarray(b2, dtype) ** t.astype(dtype)
        return 1 / jnp.sqrt(one_minus)

    return factor


@_torch_optimizer
def RAdam(
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[Number, Number] = (0.9, 0.999),
    eps: Number = 1e-8,
    weight_decay: Number = 0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.RAdam``: rectified Adam, with L2 or decoupled weight decay.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \;[+\, \lambda \theta_{t-1}], \qquad
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \rho_\infty &= \frac{2}{1 - \beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        \theta_t &= \theta_{t-1}\;[-\, \gamma_t \lambda \theta_{t-1}] - \gamma_t
          \begin{cases}
            \dfrac{m_t}{1 - \beta_1^t}\, r_t\, \dfrac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}
              & \rho_t > 5 \\
            \dfrac{m_t}{1 - \beta_1^t} & \text{otherwise}
          \end{cases}

    The first bracket is L2 decay (default), the second decoupled decay
    (``decoupled_weight_decay=True``).

    .. warning:: PyTorch adds :math:`\epsilon` to :math:`\sqrt{v_t}` *before* debiasing;
       ``optax.radam`` (and :func:`gbopt.radam`) to :math:`\sqrt{\hat v_t}`, after it, and
       compare :math:`\rho_t \ge 5` where PyTorch compares :math:`\rho_t > 5` (gbopt's
       :func:`gbopt.rectification` compares with :math:`\ge`; the two differ only on a
       step where :math:`\rho_t` is exactly 5).

    Args:
      lr: :math:`\gamma` >= 0, or a schedule ``count -> lr``.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon` >= 0, added to :math:`\sqrt{v_t}`.
      weight_decay: :math:`\lambda` >= 0.
      decoupled_weight_decay: decay the parameters by :math:`\gamma_t\lambda\theta`
        instead of adding :math:`\lambda\theta` to the gradient.
      maximize: ascend the objective instead of descending.

    Returns:
      ``with_step_count(lambda t: chain([scale(-1)], [add_decayed_weights(weight_decay)],
      divide(chain(ema(b1), bias_correction(b1, step=t)), chain(accumulate_square(b2),
      sqrt(), add(eps), scale_by_schedule(1 / sqrt(1 - b2 ** (count + 1)), step=t),
      rectification(b2, 5.0, step=t))), [add_decayed_weights(weight_decay)],
      scale_by_learning_rate(lr, step=t)))``, weight decay before the division (L2) or
      after it (decoupled).

    Raises:
      ValueError: for a hyperparameter out of range.

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020;
      ``torch.optim.RAdam`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    b1, b2 = _betas(betas)
    _validate.non_negative("eps", eps)
    _validate.non_negative("weight_decay", weight_decay)
    _flag("decoupled_weight_decay", decoupled_weight_decay)
    _flag("maximize", maximize)

    def build(t):
        direction = divide(
            chain(ema(b1), bias_correction(b1, step=t)),
            chain(
                accumulate_square(b2),
                sqrt(),
                add(eps),
                scale_by_schedule(_root_bias_correction(b2), step=t),
                rectification(b2, 5.0, step=t),
            ),
        )
        return _decayed(direction, lr, t, weight_decay, maximize, decoupled_weight_decay)

    return with_step_count(build)


@_torch_optimizer
def Adadelta(
    lr: ScalarOrSchedule = 1.0,
    rho: Number = 0.9,
    eps: Number = 1e-6,
    weight_decay: Number = 0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adadelta``: Zeiler's Adadelta with a learning rate and L2 weight decay.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda \theta_{t-1}, \qquad
        v_t = \rho v_{t-1} + (1 - \rho) g_t^2, \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t, \qquad
        u_t = \rho u_{t-1} + (1 - \rho) \Delta_t^2, \qquad
        \theta_t = \theta_{t-1} - \gamma_t \Delta_t

    The rule of :func:`gbopt.adadelta` (and ``optax.adadelta``) with PyTorch's defaults.

    Args:
      lr: :math:`\gamma` >= 0 (1.0 is the paper's rule), or a schedule ``count -> lr``.
      rho: :math:`\rho` in [0, 1).
      eps: :math:`\epsilon` >= 0, inside both roots.
      weight_decay: :math:`\lambda` >= 0 (L2).
      maximize: ascend the objective instead of descending.

    Returns:
      ``chain([scale(-1)], [add_decayed_weights(weight_decay)], divide(identity(),
      chain(accumulate_square(rho), add(eps), sqrt())), scale_by_update_rms(rho, eps),
      scale_by_learning_rate(lr))``.

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012;
      ``torch.optim.Adadelta`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    _validate.decay_rate("rho", rho)
    _validate.non_negative("eps", eps)
    _validate.non_negative("weight_decay", weight_decay)
    _flag("maximize", maximize)
    return chain(
        *_gradient(weight_decay, maximize),
        divide(identity(), chain(accumulate_square(rho), add(eps), sqrt())),
        scale_by_update_rms(rho, eps),
        scale_by_learning_rate(lr),
    )


def _asgd_step_size(lr: Number, lambd: Number, alpha: Number) -> Callable:
    r"""ASGD's :math:`\eta = \gamma / (1 + \lambda\gamma c)^{\alpha}` at count :math:`c`.

    The count is an int32; it is taken to JAX's default float (float64 in a float64 run)
    before the arithmetic, which int32 and a Python float would do in float32.
    """

    def schedule(count):
        c = jnp.asarray(count).astype(jnp.result_type(float))
        return lr / (1 + lambd * lr * c) ** alpha

    return schedule


@_torch_optimizer
def ASGD(
    lr: Number = 1e-2,
    lambd: Number = 1e-4,
    alpha: Number = 0.75,
    t0: Number = 1e6,
    weight_decay: Number = 0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.ASGD``: SGD with a decaying step and an average of the iterates.

    .. math::
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda_w \theta_{t-1}, \qquad
        \eta_t = \frac{\gamma}{(1 + \lambda \gamma (t - 1))^{\alpha}}, \\
        \theta_t &= \theta_{t-1} - \eta_t \left(g_t + \lambda \theta_{t-1}\right), \qquad
        \bar\theta_t = \bar\theta_{t-1} + \mu_t (\theta_t - \bar\theta_{t-1}), \quad
        \mu_t = \frac{1}{\max(1, t - 1 - t_0)}

    (:math:`\lambda_w` ``weight_decay``, :math:`\lambda` ``lambd``.) PyTorch writes the
    step as :math:`\theta (1 - \lambda\eta_t) - \eta_t g_t`, the same number up to
    rounding. The average :math:`\bar\theta` (PyTorch's ``state["ax"]``) is in the
    state: ``gbopt.state_get(state, "ax")``.

    .. note:: PyTorch keeps :math:`\eta` and :math:`\mu` as tensors of its default
       dtype (float32 unless ``torch.set_default_dtype(torch.float64)``); gbopt
       computes them in the parameters' precision.

    Args:
      lr: :math:`\gamma` >= 0 (a number: the decay of :math:`\eta` is the schedule).
      lambd: :math:`\lambda` >= 0, the decay term.
      alpha: :math:`\alpha`, the power of the step's decay.
      t0: :math:`t_0` >= 0, the step at which averaging starts.
      weight_decay: :math:`\lambda_w` >= 0 (L2).
      maximize: ascend the objective instead of descending.

    Returns:
      ``chain([scale(-1)], [add_decayed_weights(weight_decay)],
      [add_decayed_weights(lambd)], scale_by_learning_rate(count -> lr / (1 + lambd *
      lr * count) ** alpha), averaged_iterate(t0))``.

    References:
      Polyak & Juditsky, SIAM J. Control Optim. 1992; ``torch.optim.ASGD`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    if callable(lr):
        raise TypeError(
            "`lr` of ASGD must be a number: its step already follows the schedule "
            "lr / (1 + lambd * lr * t) ** alpha (PyTorch reads `lr` only there)."
        )
    _validate.non_negative("lambd", lambd)
    _validate.finite("alpha", alpha)
    _validate.non_negative("t0", t0)
    _validate.non_negative("weight_decay", weight_decay)
    _flag("maximize", maximize)
    pieces = _gradient(weight_decay, maximize)
    if not _is_zero(lambd):
        pieces.append(add_decayed_weights(lambd))
    pieces += [
        scale_by_learning_rate(_asgd_step_size(lr, lambd, alpha)),
        averaged_iterate(t0),
    ]
    return chain(*pieces)


def _pair(name: str, value: Any, example: str) -> tuple[Any, Any]:
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair, e.g. {example}; got {value!r}.") from None
    return low, high


@_torch_optimizer
def Rprop(
    lr: Number = 1e-2,
    etas: tuple[Number, Number] = (0.5, 1.2),
    step_sizes: tuple[Number, Number] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Rprop``: resilient backpropagation (iRprop⁻).

    .. math::
        \Delta_t = \operatorname{clip}\!\left(\Delta_{t-1} \cdot
          \begin{cases} \eta^+ & g_t g_{t-1} > 0 \\ \eta^- & g_t g_{t-1} < 0 \\
          1 & \text{else} \end{cases}\right), \qquad
        \theta_t = \theta_{t-1} - \Delta_t \operatorname{sign}(g_t)
        \;\; (0 \text{ and } g_t := 0 \text{ after a flip})

    with :math:`\Delta_0` = ``lr`` and clip to ``step_sizes``. This is
    :func:`gbopt.rprop` (the paper's rule) with PyTorch's clipping also when the sign
    product is 0. (optax's ``rprop`` lags one step behind, see :func:`gbopt.rprop`.)

    Args:
      lr: :math:`\Delta_0` > 0, the initial step size (a number: PyTorch reads it once).
      etas: :math:`(\eta^-, \eta^+)`, with :math:`0 < \eta^- < 1 < \eta^+`.
      step_sizes: the (smallest, largest) step size.
      maximize: ascend the objective instead of descending.

    Returns:
      ``chain([scale(-1)], rprop_step_sizes(lr, *etas, *step_sizes, clip_unchanged=True),
      scale(-1))``.

    References:
      Riedmiller & Braun, ICNN 1993; Igel & Hüsken, Neurocomputing 2003;
      ``torch.optim.Rprop`` (PyTorch 2.13).
    """
    if callable(lr):
        raise TypeError(
            "`lr` of Rprop must be a number: it is the initial step size, which PyTorch "
            "reads once (a learning-rate scheduler does not change Rprop's steps)."
        )
    _validate.positive("lr", lr)
    eta_minus, eta_plus = _pair("etas", etas, "(0.5, 1.2)")
    low, high = _pair("step_sizes", step_sizes, "(1e-6, 50)")
    if not 0.0 < eta_minus < 1.0 < eta_plus:
        raise ValueError(
            f"`etas` must satisfy 0 < etaminus < 1 < etaplus (as torch.optim.Rprop); got {etas!r}."
        )
    _flag("maximize", maximize)
    return chain(
        *_gradient(0, maximize),
        rprop_step_sizes(lr, eta_minus, eta_plus, low, high, clip_unchanged=True),
        scale(-1.0),
    )


@_torch_optimizer
def LBFGS(
    lr: Number = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformation:
    r"""``torch.optim.LBFGS``: **one** ``update`` **is one** ``step(closure)``.

    PyTorch's step runs up to ``max_iter`` L-BFGS iterations, re-evaluating the objective
    through the closure; here the closure is the objective passed as ``value_fn``::

        # torch: loss = opt.step(closure)
        updates, state = tx.update(grads, state, params, value=loss, value_fn=loss_fn)
        params = gbopt.apply_updates(params, updates)

    (``grads`` and ``value`` are the gradient and loss at ``params``: the closure's first
    call, which torch makes inside ``step``; ``value`` may be left out.) Each iteration:

    .. math::
        y = g - g_{-}, \quad s = t_{-} d_{-}, \quad
        \text{keep } (y, s) \text{ if } y^\top s > 10^{-10}, \quad
        d = -H g \;\text{(two-loop recursion, } H_0 = \tfrac{y^\top s}{y^\top y} I),
        \quad \theta \leftarrow \theta + t d

    with :math:`t = \min(1, 1/\|g\|_1)\,` ``lr`` at the very first iteration and ``lr``
    after, or the strong-Wolfe line search's :math:`t` (``line_search_fn="strong_wolfe"``,
    PyTorch's ``_strong_wolfe`` ported). The stopping rules are PyTorch's: no step when
    :math:`\max|g| \le` ``tolerance_grad``; stop after ``max_iter`` iterations or
    ``max_eval`` evaluations, or when :math:`g^\top d > -` ``tolerance_change``, or when the
    step or the change of the loss is below ``tolerance_change``. The loop is a
    ``jax.lax.while_loop``, so the update compiles once.

    Not a chain of per-gradient primitives (each iteration evaluates the objective
    anew); for optax's one-gradient-per-update L-BFGS, see :func:`gbopt.lbfgs`.

    Args:
      lr: the step length before (or without) the line search.
      max_iter: iterations per update.
      max_eval: objective evaluations per update (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when the largest gradient element is at most this.
      tolerance_change: stop when the step, the loss change or the slope is below this.
      history_size: the pairs kept.
      line_search_fn: None or ``"strong_wolfe"``.

    Returns:
      A transform with state :class:`gbopt._torch_lbfgs.TorchLbfgsState`; ``update``
      needs ``params`` and ``value_fn``.

    References:
      Nocedal & Wright, *Numerical Optimization*, Alg. 7.4, 7.5, 3.5, 3.6;
      ``torch.optim.LBFGS`` (PyTorch 2.13).
    """
    _validate.learning_rate(lr, "lr")
    if callable(lr):
        raise TypeError("`lr` of LBFGS must be a number (PyTorch reads it at each step).")
    max_iter = _validate.whole_number("max_iter", max_iter, 1)
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    max_eval = _validate.whole_number("max_eval", max_eval, 1)
    _validate.non_negative("tolerance_grad", tolerance_grad)
    _validate.non_negative("tolerance_change", tolerance_change)
    history_size = _validate.whole_number("history_size", history_size, 1)
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(
            f"`line_search_fn` must be None or 'strong_wolfe' (as torch.optim.LBFGS); got "
            f"{line_search_fn!r}."
        )
    return lbfgs_step(
        lr, max_iter, max_eval, tolerance_grad, tolerance_change, history_size, line_search_fn
    )
