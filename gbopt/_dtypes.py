r"""The dtype policy, in one place for the whole library, and the casts that apply it.

* Statistics (momentum, moments, accumulators) are *computed* in the parameters' dtype
  promoted to at least float32 (:func:`state_dtype`): a bfloat16 ``b2 = 0.999`` would
  round to 1.0 and a float16 ``eps = 1e-8`` to 0. Only storage may narrow.
* Where they are *stored* (:func:`storage`) depends on the statistic, unless a transform
  is given a storage dtype (``mu_dtype``, ``nu_dtype``, ...):

  - a statistic linear in the updates (a first moment: Adam's ``mu``, the momentum
    ``trace``, a copy of the previous update) *follows the parameters*: a bfloat16 or
    float16 parameter keeps it in its own dtype, as optax documents for
    ``mu_dtype=None``. Its rounding error is relative to the statistic itself (at most
    :math:`2^{-8}` in bfloat16), like the parameter's own;
  - every other statistic (second moments :math:`|g|^2`, AdaGrad's sum, maxima, step
    sizes, averages whose weight becomes small) is stored in at least float32: with
    ``b2 = 0.999`` the new square's share of Adam's ``nu`` is :math:`10^{-3}`, below
    half a bfloat16 ulp (at least :math:`2^{-9} \approx 1.95 \times 10^{-3}` of the
    value), so a bfloat16 ``nu`` would stop moving (``tests/test_storage_dtypes.py``
    shows optax's freeze).

* Every transform returns updates in the dtype of the updates it received, so a chain's
  output has the gradients' dtype, and :func:`gbopt.apply_updates` casts the result to
  each parameter's dtype.
* Complex parameters keep complex statistics, except where a rule takes a modulus
  (:math:`|g|^2`): those are real (:func:`real_dtype`). A *real* storage dtype asked for
  a complex statistic (``mu_dtype=jnp.bfloat16`` with complex64 parameters) keeps both
  parts: the statistic is stored as real and imaginary parts along a trailing axis of
  size 2 in that dtype (:func:`to_pairs`) and reassembled for the arithmetic
  (:func:`from_pairs`); optax casts the complex value to the real dtype and so drops the
  imaginary part. A *complex* storage dtype asked for a real parameter's statistic is
  honoured (its imaginary part stays 0); the arithmetic uses the real part.
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
def storage(param_dtype, spec=None, *, real: bool = False, follows: bool = False):
    """``(dtype, pairs)``: how a statistic of a parameter of ``param_dtype`` is stored.

    Args:
      param_dtype: the parameter's dtype.
      spec: the storage dtype asked for (``mu_dtype=...``), or None for the default.
      real: the statistic is real-valued for complex parameters (:math:`|g|^2`); it is
        stored in the real dtype of the precision asked for (or of the parameter).
      follows: the statistic follows the parameters (a first moment): by default it is
        stored in the parameter's own dtype, bfloat16 and float16 included, where any
        other is stored in :func:`state_dtype` (at least float32).

    Returns:
      The storage dtype, and whether the statistic is complex but stored as real and
      imaginary parts on a trailing axis of size 2 (a real ``spec`` for a complex
      statistic).
    """
    param = jnp.dtype(param_dtype)
    if spec is None:
        dtype = param if follows and jnp.issubdtype(param, jnp.inexact) else state_dtype(param)
        return (real_dtype(dtype) if real else dtype), False
    spec = jnp.dtype(spec)
    if real:
        return real_dtype(spec), False
    if jnp.issubdtype(param, jnp.complexfloating) and not jnp.issubdtype(spec, jnp.complexfloating):
        return spec, True
    return spec, False


@functools.cache
def real_dtype(dtype) -> np.dtype:
    """The real dtype of the same precision (complex64 -> float32); real dtypes unchanged."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.dtype(jnp.finfo(dtype).dtype)
    return dtype


@functools.cache
def result_type(*dtypes) -> np.dtype:
    """The dtype all of ``dtypes`` fit in, by JAX's standard promotion.

    Also when the user runs with ``jax_numpy_dtype_promotion="strict"``, which refuses to
    promote float32 and bfloat16 (here: float32) or complex64 and float32. For the leaves
    of one tree, a statistic over all of them (a global norm, L-BFGS's dot products) meets
    float32, bfloat16 and complex leaves together.
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.result_type(*dtypes))


def promote(a, b) -> np.dtype:
    """The dtype both ``a`` and ``b`` fit in: :func:`result_type` of the two."""
    return result_type(a, b)


def to_pairs(x: jax.Array, dtype) -> jax.Array:
    """A complex ``x`` as its real and imaginary parts on a new last axis, in the real ``dtype``."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1).astype(dtype)


def from_pairs(x: jax.Array, dtype) -> jax.Array:
    """The complex array of ``dtype`` whose parts :func:`to_pairs` stored in ``x``."""
    part = real_dtype(dtype)
    return jax.lax.complex(x[..., 0].astype(part), x[..., 1].astype(part)).astype(dtype)


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


def compute_dtypes(tree: Any) -> list[np.dtype]:
    """The real compute dtypes (:func:`state_dtype`, real part) of the inexact leaves of ``tree``.

    In the order of the leaves (so that a program built from them is the same every time).
    """
    # The arrays' dtypes first (a few), then the cached policy functions.
    kinds = dict.fromkeys(
        x.dtype if isinstance(x, jax.Array) else jnp.result_type(x) for x in jax.tree.leaves(tree)
    )
    return list(
        dict.fromkeys(real_dtype(state_dtype(d)) for d in kinds if jnp.issubdtype(d, jnp.inexact))
    )


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
