"""Argument checks, run once when a transform is built (never inside ``update``).

Values that are traced (under ``jit``, ``vmap`` or ``grad``) cannot be inspected and
are accepted as they are; concrete numbers are checked and a bad one raises an error
that names the argument, the value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(name: str, value: Any) -> np.ndarray | None:
    """Returns ``value`` as a float64 array when it can be inspected, else None."""
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
        f"`{name}` must be a number (a Python float, a NumPy scalar or a JAX array), "
        f"got {type(value).__name__}: {value!r}."
    )


def _check(name: str, value: Any, ok, allowed: str) -> None:
    x = _concrete(name, value)
    if x is None:
        return
    values = np.ravel(x)
    for v in values:
        if math.isnan(v) or not ok(v):
            shown = value if np.ndim(x) == 0 else f"{v!r} (in {name} = {value!r})"
            raise ValueError(f"`{name}` must be {allowed}; got {shown}.")


def non_negative(name: str, value: Any) -> None:
    """Checks a finite ``value >= 0`` (learning rates, weight decay, clipping norms)."""
    _check(name, value, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def positive(name: str, value: Any) -> None:
    """Checks a finite ``value > 0``."""
    _check(name, value, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def decay_rate(name: str, value: Any) -> None:
    """Checks a decay or momentum coefficient in ``[0, 1)``."""
    _check(
        name,
        value,
        lambda v: 0 <= v < 1,
        "in [0, 1) (1 would never forget, and 0 keeps no history)",
    )


def finite(name: str, value: Any) -> None:
    """Checks any finite number."""
    _check(name, value, math.isfinite, "a finite number")


def learning_rate(value: Any, name: str = "learning_rate") -> None:
    """Checks a learning rate: a finite number >= 0, or a schedule ``count -> value``."""
    if callable(value):
        return
    non_negative(name, value)
