r"""Polyak's step size, read from the objective's value passed as ``update(..., value=f(w))``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _validate
from gbopt._base import EMPTY_STATE, GradientTransformation, ScalarOrSchedule, named, with_info
from gbopt._combine import chain
from gbopt._maps import scale_by_learning_rate
from gbopt._regularize import global_squared_norm

_VARIANTS = ("sps", "sps+")
_TINY = float(jnp.finfo(jnp.float64).eps)


def scale_by_polyak(
    f_min: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""Multiplies the updates by Polyak's step size, from the objective's value.

    .. math::
        u \leftarrow \min\!\left(\frac{f(w) - f^\star}{\|u\|^2 + \epsilon},\;
        \gamma_{\max}\right) u

    with :math:`(f(w) - f^\star)_+` for ``variant="sps+"``, and a step of 0 where
    :math:`\|u\|^2 + \epsilon` is at most float64's machine epsilon (a stationary point).
    :math:`\|u\|` is the norm of the whole tree. ``update`` needs the keyword argument
    ``value=f(w)`` (a scalar), as optax's ``scale_by_polyak``.

    Args:
      f_min: :math:`f^\star`, a lower bound on the objective (0 for interpolating models).
      max_learning_rate: :math:`\gamma_{\max}` >= 0.
      eps: :math:`\epsilon` >= 0, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"``.

    Returns:
      A stateless transform (state ``()``).

    Raises:
      ValueError: for a bad ``variant`` or a negative ``max_learning_rate``/``eps``; at
        ``update``, when ``value=`` is missing.

    References:
      Loizou et al., "Stochastic Polyak Step-size for SGD", AISTATS 2021;
      Garrigos et al., "Function value learning", 2023 (SPS+).
    """
    if variant not in _VARIANTS:
        raise ValueError(f"`variant` must be 'sps' or 'sps+'; got {variant!r}.")
    _validate.non_negative("max_learning_rate", max_learning_rate)
    _validate.non_negative("eps", eps)

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params
        if "value" not in extra_args:
            raise ValueError(
                "scale_by_polyak needs the objective's value: call "
                "`update(grads, state, params, value=loss)` (Polyak's step size is "
                "(f(w) - f_min) / ||g||^2)."
            )
        sq = global_squared_norm(updates)
        dtype = sq.dtype
        gap = jnp.asarray(extra_args["value"]).astype(dtype) - jnp.asarray(f_min, dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denom = sq + jnp.asarray(eps, dtype)
        step = jnp.where(
            denom <= _TINY,
            jnp.zeros([], dtype),
            jnp.minimum(gap / denom, jnp.asarray(max_learning_rate, dtype)),
        )

        def leaf(u):
            u = _dtypes.as_array(u)
            wide = _dtypes.promote(u.dtype, dtype)
            return _dtypes.cast(_dtypes.cast(u, wide) * step.astype(wide), u.dtype)

        return jax.tree.map(leaf, updates), state

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "scale_by_polyak",
        hyperparams={
            "f_min": f_min,
            "max_learning_rate": max_learning_rate,
            "eps": eps,
            "variant": variant,
        },
        math=r"\min\left(\frac{f - f^\star}{\|u\|^2 + \epsilon}, \gamma_{\max}\right) u",
    )


def polyak_sgd(
    max_learning_rate: float | jax.Array = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float | jax.Array = 0.0,
    eps: float | jax.Array = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""SGD with Polyak's step size (SPS).

    .. math::
        w \leftarrow w - s_t \min\!\left(\frac{f(w) - f^\star}{s_t^2\|g\|^2 + \epsilon},
        \gamma_{\max}\right) g

    Drop-in for ``optax.polyak_sgd`` (same signature, defaults and rule: ``scaling``
    multiplies the gradient before the step size is computed, so with the default
    ``scaling=1`` it is Loizou et al.'s SPS_max). ``update`` needs ``value=f(w)``.

    Args:
      max_learning_rate: :math:`\gamma_{\max}`.
      scaling: :math:`s`, a number or a schedule.
      f_min: :math:`f^\star`.
      eps: :math:`\epsilon`.
      variant: ``"sps"`` or ``"sps+"``.

    Returns:
      ``chain(scale_by_learning_rate(scaling), scale_by_polyak(f_min,
      max_learning_rate, eps, variant))``.

    References:
      Loizou et al., "Stochastic Polyak Step-size for SGD: An Adaptive Learning Rate for
      Fast Convergence", AISTATS 2021.
    """
    return named(
        "polyak_sgd",
        chain(
            scale_by_learning_rate(scaling),
            scale_by_polyak(f_min, max_learning_rate, eps, variant),
        ),
        max_learning_rate=max_learning_rate,
        scaling=scaling,
        f_min=f_min,
        variant=variant,
    )
