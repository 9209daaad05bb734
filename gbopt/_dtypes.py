"""The dtype policy, in one place for the whole library, and the casts that apply it.

* Statistics (momentum, moments, accumulators) are computed in the parameters' dtype
  promoted to at least float32 (:func:`state_dtype`): a bfloat16 ``b2 = 0.999`` would
  round to 1.0 and a float16 ``eps = 1e-8`` to 0. They are *stored* in that dtype
  unless a transform is given a storage dtype (``mu_dtype``, ``nu_dtype``, ...).
* Every transform returns updates in the dtype of the updates it received, so a chain's
  output has the gradients' dtype, and :func:`gbopt.apply_updates` casts the result to
  each parameter's dtype.
* Complex parameters keep complex statistics, except where a rule takes a modulus
  (:math:`|g|^2`): those are real (:func:`real_dtype`).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@functools.cache
def state_dtype(dtype) -> np.dtype:
    """The dtype statistics of a leaf of ``dtype`` are kept in (at least float32)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


@functools.cache
def real_dtype(dtype) -> np.dtype:
    """The real dtype of the same precision (complex64 -> float32); real dtypes unchanged."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.dtype(jnp.finfo(dtype).dtype)
    return dtype


def as_array(x: Any) -> jax.Array:
    """``x`` as a JAX array; Python and NumPy numbers are converted.

    Arrays (and tracers) are returned as they are: on the hot path this costs one
    ``isinstance`` check, where ``jnp.asarray`` costs about 18 us per leaf outside ``jit``.
    """
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def cast(x: Any, dtype) -> jax.Array:
    """``x`` in ``dtype``: ``x`` itself when it has that dtype already (no work at trace time).

    Python and NumPy numbers are converted first (:func:`as_array`).
    """
    x = as_array(x)
    return x if x.dtype == dtype else x.astype(dtype)


def cast_like(tree: Any, like: Any) -> Any:
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, y: cast(x, jnp.result_type(y)), tree, like)


def cast_tree(tree: Any, dtype_fn: Callable = state_dtype) -> Any:
    """Casts each leaf ``x`` of ``tree`` to ``dtype_fn(x.dtype)``."""
    return jax.tree.map(lambda x: cast(x, dtype_fn(jnp.result_type(x))), tree)


def per_dtype(fn: Callable[[np.dtype], Any]) -> Callable[[np.dtype], Any]:
    """``fn(dtype)`` memoized by dtype; make a fresh one in each ``update`` call.

    For values derived from hyperparameters in each leaf's compute dtype (a bias
    correction, a signed learning rate): computed once per dtype rather than once per
    leaf, they stay out of the per-leaf program. XLA would merge the copies, but only
    after tracing, lowering and compiling them (thousands of scalar operations for a
    tree of 1,000 leaves: compile time is part of gbopt's performance contract).
    """
    return functools.cache(fn)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.ndarray))


def scalar(value: Any, dtype) -> jax.Array | np.ndarray:
    """A hyperparameter as a scalar of ``dtype`` (a number, a schedule's value, an array).

    A Python number becomes a NumPy scalar, which JAX embeds as a literal: no device
    work at trace time (``jnp.asarray`` would dispatch an operation for every leaf).
    """
    if is_number(value):
        return np.asarray(value, dtype)
    return jnp.asarray(value).astype(dtype)


def complement(value: Any, dtype) -> jax.Array:
    """``1 - value`` in ``dtype``; for a Python number the subtraction is exact in float64.

    ``float32(1) - float32(0.999)`` is off by 1.3e-5 relative; ``float32(1 - 0.999)`` by 5e-8.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.asarray(1.0 - value, dtype)  # a literal, as in :func:`scalar`
    return (1 - jnp.asarray(value).astype(dtype)).astype(dtype)
