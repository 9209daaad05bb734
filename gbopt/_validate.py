"""Argument checks, run once when a transform is built (never inside ``update``).

Values that are traced (under ``jit``, ``vmap`` or ``grad``) cannot be inspected and
are accepted as they are; concrete numbers are checked and a bad one raises an error
that names the argument, the value and what is allowed: a ``TypeError`` for a value
that is not a real number, a ``ValueError`` for a number outside the allowed range.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(name: str, value: Any, forms: str = "") -> np.ndarray | None:
    """Returns ``value`` as a float64 array when it can be inspected, else None.

    ``forms`` names accepted forms other than numbers (for the TypeError message).
    """
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, got the bool {value!r}.")
    if isinstance(value, numbers.Real):
        return np.asarray(float(value))
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(value)
        # jnp.issubdtype knows bfloat16 and the other ml_dtypes (np.issubdtype does not).
        if arr.dtype == bool or not (
            jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)
        ):
            raise TypeError(f"`{name}` must be a real number, got an array of dtype {arr.dtype}.")
        if arr.size == 0:
            raise ValueError(f"`{name}` must not be empty, got an array of shape {arr.shape}.")
        # An array (e.g. a batch of learning rates) is checked element by element.
        return arr.astype(np.float64)
    raise TypeError(
        f"`{name}` must be a number (a Python float, a NumPy scalar or a JAX array){forms}, "
        f"got {type(value).__name__}: {value!r}."
    )


def _low_precision_hint(name: str, value: Any) -> str:
    """Why a value held in a dtype narrower than float32 may have been rounded, and the fix."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating) or jnp.dtype(dtype).itemsize >= 4:
        return ""
    return (
        f" `{name}` arrived as a {jnp.dtype(dtype).name} array, which rounds it (in bfloat16 "
        "0.999 becomes 1.0): optax.inject_hyperparams stores hyperparameters in the "
        "parameters' dtype. Use gbopt.inject_hyperparams, which stores them in float32, or "
        "optax.inject_hyperparams(..., hyperparam_dtype=jnp.float32)."
    )


def _check(name: str, value: Any, ok, allowed: str, forms: str = "", hint: str = "") -> None:
    x = _concrete(name, value, forms)
    if x is None:
        return
    for v in np.ravel(x):
        if math.isnan(v) or not ok(v):
            shown = value if np.ndim(x) == 0 else f"{float(v)} (in {name} = {value!r})"
            raise ValueError(
                f"`{name}` must be {allowed}; got {shown}.{hint}" + _low_precision_hint(name, value)
            )


def non_negative(name: str, value: Any) -> None:
    """Checks a finite ``value >= 0`` (eps, weight decay, initial accumulators)."""
    _check(name, value, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def positive(name: str, value: Any) -> None:
    """Checks a finite ``value > 0`` (clipping norms)."""
    _check(name, value, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def decay_rate(name: str, value: Any) -> None:
    """Checks a decay or momentum coefficient in ``[0, 1)``."""
    _check(
        name,
        value,
        lambda v: 0 <= v < 1,
        "in [0, 1) (at 1 nothing is ever forgotten and a bias correction divides by "
        "zero; above 1 the statistic diverges, below 0 it oscillates)",
    )


def finite(name: str, value: Any) -> None:
    """Checks any finite number (scaling factors, added constants)."""
    _check(name, value, math.isfinite, "a finite number")


def nesterov_momentum(name: str, value: Any) -> None:
    """Checks that a Nesterov momentum coefficient is not zero (it would be plain SGD)."""
    x = _concrete(name, value)
    if x is not None and np.any(x == 0):
        raise ValueError(
            f"`{name}` must be in (0, 1) with Nesterov momentum (with 0 it is plain SGD); "
            f"got {value!r}. Set it, e.g. {name}=0.9, or use the method without Nesterov."
        )


def whole_number(name: str, value: Any, minimum: int, *, meaning: str = "") -> int:
    """Checks an int ``>= minimum`` (a number of steps, a size) and returns it as ``int``.

    ``meaning`` (e.g. ``" (a number of steps)"``) is added to the TypeError's message.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int{meaning}; got {type(value).__name__}: {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value}.")
    return int(value)


def flag(name: str, value: Any) -> None:
    """Checks a boolean option (``nesterov=``, ``debias=``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {type(value).__name__}: {value!r}.")


def learning_rate(value: Any, name: str = "learning_rate") -> None:
    """Checks a learning rate: a finite number >= 0, or a schedule ``count -> value``."""
    if callable(value):
        return
    _check(
        name,
        value,
        lambda v: math.isfinite(v) and v >= 0,
        "a finite number >= 0",
        forms=" or a schedule `count -> value`",
        hint=" (A schedule `count -> value` is accepted too. gbopt flips the sign for "
        "descent itself; for ascent use scale_by_learning_rate(..., flip_sign=False).)",
    )


# The checks gbopt's factories apply to their hyperparameters, by argument name: what
# set_hyperparams applies to a new value (it has the state, not the factory).
_BY_NAME = {
    "learning_rate": lambda name, value: learning_rate(value, name),
    "max_learning_rate": lambda name, value: learning_rate(value, name),
    "b1": decay_rate,
    "b2": decay_rate,
    "b3": decay_rate,
    "decay": decay_rate,
    "momentum": decay_rate,
    "eps": non_negative,
    "eps_root": non_negative,
    "weight_decay": non_negative,
    "initial_accumulator_value": non_negative,
    "initial_scale": non_negative,
    "max_norm": positive,
    # gbopt.pytorch's names (PyTorch's): `betas` is checked element by element.
    "lr": lambda name, value: learning_rate(value, name),
    "betas": decay_rate,
    "dampening": non_negative,
    "lr_decay": non_negative,
}


def hyperparameter(name: str, value: Any) -> None:
    """Checks a new value of a hyperparameter as gbopt's factories check that argument.

    ``learning_rate``: a finite number >= 0; ``b1``, ``b2``, ``decay``, ``momentum``: in
    [0, 1); ``eps``, ``weight_decay``, initial accumulators: finite and >= 0;
    ``max_norm``: finite and > 0; any other name: finite. Traced values pass unchecked.
    """
    _BY_NAME.get(name, finite)(name, value)
