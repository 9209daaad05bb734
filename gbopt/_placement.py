"""Where state lives: initial statistics and counts that follow the parameters' placement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gbopt._dtypes import state_dtype
from gbopt._tree import path_str


def check_float_params(params: Any, *, what: str = "params") -> None:
    """Raises a TypeError naming the first leaf of ``params`` that is not floating point."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        try:
            dtype = jnp.result_type(leaf)
        except TypeError:
            raise TypeError(
                f"{what}{path_str(path)} is a {type(leaf).__name__}, not an array: the tree "
                "handed to the optimizer may hold only arrays. An Equinox module holds "
                "functions and other static fields too: filter it first, e.g. "
                "`tx.init(eqx.filter(model, eqx.is_inexact_array))` (and the same for the "
                "gradients)."
            ) from None
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{what}{path_str(path)} has dtype {jnp.dtype(dtype).name}; gradient "
                "transformations need floating-point parameters (an integer or boolean "
                "parameter cannot take a fractional step). Cast it, e.g. "
                "`jnp.asarray(x, jnp.float32)`, or leave it out of the optimized tree."
            )


def _on_device(leaf: Any) -> bool:
    """Whether ``leaf`` is a JAX array (or a tracer of one): host data has no placement."""
    return isinstance(leaf, jax.Array)


def full_like(
    params: Any,
    fill_value: float,
    dtype_fn: Callable = state_dtype,
    *,
    pairs_fn: Callable | None = None,
) -> Any:
    """Arrays of ``fill_value`` shaped and sharded like each leaf of ``params``.

    Each result is in ``dtype_fn(leaf.dtype)`` and has the sharding of its leaf, so
    optimizer state follows the parameters over a mesh, whether ``init`` runs eagerly
    or under ``jax.jit`` without ``out_shardings``. ``None`` leaves stay ``None``.

    A constant built under ``jit`` (``jnp.zeros_like`` of a tracer) depends on no input:
    XLA places it on one device (optax's state does so), and with explicit mesh axes
    it fails unless the call runs under ``jax.set_mesh``. Here the fill is instead
    selected against the parameter, ``where(keep, p, fill)``, so that sharding
    propagation gives it the parameter's sharding. ``keep`` is a ``False`` passed
    through ``lax.optimization_barrier``, which the compiler cannot fold: the select
    survives until the program is partitioned, and each device then fills its own
    shard (exactly ``fill_value``, whatever the parameter holds, inf and NaN
    included). The parameter is read once, at ``init``; no ``update`` pays for it.
    Host (NumPy) leaves have no placement to follow and are not copied to a device.

    Where ``pairs_fn(leaf.dtype)`` is true, the complex value ``fill_value + 0j`` is
    stored as its real and imaginary parts on a trailing axis of size 2 (the layout
    of :func:`gbopt._dtypes.to_pairs`), in the real ``dtype_fn(leaf.dtype)``.
    """
    check_float_params(params)
    keep = jax.lax.optimization_barrier(jnp.zeros([], bool))

    def full(p):
        dtype = dtype_fn(jnp.result_type(p))
        if pairs_fn is not None and pairs_fn(jnp.result_type(p)):
            if not _on_device(p):
                parts = [np.full(np.shape(p), fill_value), np.zeros(np.shape(p))]
                return jnp.asarray(np.stack(parts, axis=-1), dtype)
            zero = jnp.zeros([], dtype)
            re = jnp.where(keep, jnp.real(p).astype(dtype), jnp.asarray(fill_value, dtype))
            im = jnp.where(keep, jnp.imag(p).astype(dtype), zero)
            return jnp.stack([re, im], axis=-1)
        if not _on_device(p):
            return jnp.full(np.shape(p), fill_value, dtype)
        return jnp.where(keep, p.astype(dtype), jnp.asarray(fill_value, dtype))

    return jax.tree.map(full, params)


def zeros_like(params: Any, dtype_fn: Callable = state_dtype) -> Any:
    """Zeros shaped and sharded like each leaf of ``params`` (see :func:`full_like`)."""
    return full_like(params, 0.0, dtype_fn)


def scalar_like(params: Any, value: Any, dtype) -> jax.Array:
    """A scalar ``value`` of ``dtype`` replicated over the devices of ``params``.

    For the scalars of a state (step counts, NAdam's momentum product). The
    parameters pass through ``lax.optimization_barrier`` beside it (an identity, no
    copy), so that the program which makes it runs where they live: under ``jit``, a
    state holding only a count (``sgd`` with a schedule) would otherwise be built on
    one device (the unused parameters are pruned), and eagerly, the first update would
    move the scalar and compile the step a second time. Inside ``shard_map`` the
    program already runs on the mesh, and the scalar is kept apart from the
    per-device parameters so that it stays invariant across the mesh.
    """
    scalar = jnp.full([], value, dtype)
    if getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()):
        return scalar
    leaves = [leaf for leaf in jax.tree.leaves(params) if _on_device(leaf)]
    scalar, _ = jax.lax.optimization_barrier((scalar, leaves))
    return scalar


def zero_count(params: Any) -> jax.Array:
    """A step count of 0 (int32) replicated over the devices of ``params`` (:func:`scalar_like`)."""
    return scalar_like(params, 0, jnp.int32)
