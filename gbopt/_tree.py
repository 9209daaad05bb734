"""Pytree helpers shared by the primitives: dtype policy, checked maps, zeros.

Dtype policy (one place for the whole library):

* statistics (momentum, moments, accumulators) are kept in the parameters' dtype
  promoted to at least float32 (:func:`state_dtype`): a bfloat16 ``b2 = 0.999`` would
  round to 1.0 and a float16 ``eps = 1e-8`` to 0;
* every transform returns updates in the dtype of the updates it received, so a
  chain's output has the gradients' dtype, and :func:`gbopt.apply_updates` casts the
  result to each parameter's dtype.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _is_none(x: Any) -> bool:
    return x is None


def path_str(path) -> str:
    """A pytree path in the user's terms, e.g. ``['dense']['w']`` or ``[0].w`` (root: empty)."""
    return jax.tree_util.keystr(tuple(path))


@functools.cache
def state_dtype(dtype) -> np.dtype:
    """The dtype statistics of a leaf of ``dtype`` are kept in (at least float32)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def fixed_dtype(dtype) -> Callable[[Any], np.dtype]:
    """A ``dtype_fn`` for :func:`full_like` that always answers ``dtype`` (canonicalized).

    For a statistic stored in a dtype the user chose (optax's ``mu_dtype``); without
    ``jax_enable_x64``, float64 becomes float32 as JAX would make it.
    """
    chosen = jax.dtypes.canonicalize_dtype(jnp.dtype(dtype))
    return lambda _: chosen


def check_float_params(params: Any, *, what: str = "params") -> None:
    """Raises a TypeError naming the first leaf of ``params`` that is not floating point."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = jnp.result_type(leaf)
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


def full_like(params: Any, fill_value: float, dtype_fn: Callable = state_dtype) -> Any:
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
    """
    check_float_params(params)
    keep = jax.lax.optimization_barrier(jnp.zeros([], bool))

    def full(p):
        dtype = dtype_fn(jnp.result_type(p))
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


def _raw_dtype(x: Any) -> np.dtype:
    """The dtype of ``x`` as stored (``jnp.result_type`` would map int64 to int32 without x64)."""
    dtype = getattr(x, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.asarray(x).dtype


def _level(x: Any) -> tuple[Any, list[tuple[Any, Any]]] | None:
    """One level of a pytree: ``(node_data, [(key, child), ...])``, or None for a leaf."""
    kids, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    if len(kids) == 1 and kids[0][0] == ():
        return None
    return treedef.node_data(), [(path[0], child) for path, child in kids]


def _describe(x: Any, level) -> str:
    """How a subtree reads in an error message: "None", "a dict", "an array of shape (3,)"."""
    if x is None:
        return "None"
    if level is None:
        if hasattr(x, "shape"):
            return f"an array of shape {x.shape}"
        return f"a {type(x).__name__} leaf"
    kind = type(x)
    if kind in (list, tuple):
        return f"a {kind.__name__} of length {len(x)}"
    if kind is dict:
        return f"a dict with keys {sorted(x, key=str)}"
    return f"a {kind.__name__}"


def _equal(x: Any, y: Any) -> bool:
    """``x == y`` for node metadata that may not compare to a plain bool."""
    try:
        return bool(x == y)
    except Exception:  # e.g. array-valued metadata of a custom pytree node
        return x is y


def _first_difference(
    a: Any,
    b: Any,
    path: tuple,
    *,
    what: str,
    reference_name: str,
    none_passes: bool,
    check_shapes: bool = True,
    dtypes: bool = False,
) -> tuple[str, str] | None:
    """The first place (in flattening order) where ``a`` and ``b`` differ, or None.

    Returns ``(description, kind)``, ``kind`` one of "structure", "shape", "dtype".
    """
    at = f"{what}{path_str(path)}"
    if a is None or b is None:
        if a is None and (b is None or none_passes):
            return None
        return (
            f"{at} is {_describe(a, _level(a))} but the {reference_name} has "
            f"{_describe(b, _level(b))} there",
            "structure",
        )
    la, lb = _level(a), _level(b)
    if la is None and lb is None:
        if check_shapes and np.shape(a) != np.shape(b):
            return (
                f"{at} has shape {np.shape(a)} but the {reference_name} there has shape "
                f"{np.shape(b)}",
                "shape",
            )
        if dtypes and _raw_dtype(a) != _raw_dtype(b):
            return (
                f"{at} has dtype {_raw_dtype(a).name} but the {reference_name} there has "
                f"dtype {_raw_dtype(b).name}",
                "dtype",
            )
        return None
    if la is None or lb is None or la[0][0] is not lb[0][0]:
        return (
            f"{at} is {_describe(a, la)} but the {reference_name} has {_describe(b, lb)} there",
            "structure",
        )
    a_keys = [k for k, _ in la[1]]
    b_keys = [k for k, _ in lb[1]]
    missing = [k for k in b_keys if k not in a_keys]
    if missing:
        child = dict(lb[1])[missing[0]]
        return (
            f"{at}{path_str([missing[0]])} is missing (the {reference_name} has "
            f"{_describe(child, _level(child))} there)",
            "structure",
        )
    extra = [k for k in a_keys if k not in b_keys]
    if extra:
        return f"{at}{path_str([extra[0]])} is not in the {reference_name}", "structure"
    if not _equal(la[0], lb[0]) or a_keys != b_keys:
        return (
            f"{at} is {_describe(a, la)} but the {reference_name} has {_describe(b, lb)} there",
            "structure",
        )
    for (k, x), (_, y) in zip(la[1], lb[1], strict=True):
        found = _first_difference(
            x,
            y,
            (*path, k),
            what=what,
            reference_name=reference_name,
            none_passes=none_passes,
            check_shapes=check_shapes,
            dtypes=dtypes,
        )
        if found:
            return found
    return None


def check_matches(
    updates: Any,
    reference: Any,
    *,
    what: str,
    reference_name: str,
    none_passes: bool = False,
    check_shapes: bool = True,
    dtypes: bool = False,
    fix: str | None = None,
) -> None:
    """Checks that ``updates`` has the structure and leaf shapes of ``reference``.

    Runs in Python when a function is traced (free at run time under ``jax.jit``); the
    common case (equal structures and shapes) costs one flatten of each tree.

    Args:
      updates: the tree to check.
      reference: the tree it must match (a state field, the parameters, a template).
      what: how the messages name ``updates`` (e.g. ``"updates"``).
      reference_name: how the messages name ``reference``.
      none_passes: accept ``None`` in ``updates`` where ``reference`` has a subtree.
      check_shapes: also compare leaf shapes (off for a mask of booleans).
      dtypes: also check that the leaves' dtypes are equal.
      fix: the how-to-fix sentence of every message, replacing the default ones
        (which speak of updates and parameters).

    Raises:
      ValueError: naming the first path where the two differ (a missing or extra key,
        ``None`` against an array, a list against a tuple) or where shapes differ,
        including shapes that would broadcast, or (with ``dtypes``) where dtypes differ.
    """
    u_leaves, u_def = jax.tree_util.tree_flatten(updates)
    r_leaves, r_def = jax.tree_util.tree_flatten(reference)
    if u_def == r_def and all(
        (not check_shapes or np.shape(u) == np.shape(r))
        and (not dtypes or _raw_dtype(u) == _raw_dtype(r))
        for u, r in zip(u_leaves, r_leaves, strict=True)
    ):
        return
    found = _first_difference(
        updates,
        reference,
        (),
        what=what,
        reference_name=reference_name,
        none_passes=none_passes,
        check_shapes=check_shapes,
        dtypes=dtypes,
    )
    if found is None:  # only ``None`` where ``none_passes`` allows it
        return
    problem, kind = found
    default_fix = {
        "structure": f"Pass {what} with exactly the structure of the parameters the state "
        "was built for (same keys, same container types, None in the same places), or "
        "call `init` again for new parameters.",
        "shape": "Shapes must match exactly (gbopt never broadcasts an update onto a "
        "parameter); check that the gradient was taken with respect to these parameters.",
        "dtype": "Cast it to the reference's dtype.",
    }[kind]
    raise ValueError(f"{problem}. {fix or default_fix}")


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


def map_leaves(fn: Callable, n_out: int, updates: Any, *trees: Any) -> tuple[Any, ...]:
    """Applies ``fn`` leaf by leaf and returns ``n_out`` trees shaped like ``updates``.

    ``fn(u, *others)`` returns a tuple of ``n_out`` arrays; ``trees`` must have the
    structure of ``updates`` (check it first with :func:`check_matches`).
    """
    leaves, treedef = jax.tree.flatten(updates)
    leaves = [as_array(u) for u in leaves]
    others = [treedef.flatten_up_to(t) for t in trees]
    outs = [fn(*args) for args in zip(leaves, *others, strict=True)]
    columns = list(zip(*outs, strict=True)) if outs else [()] * n_out
    return tuple(treedef.unflatten(list(c)) for c in columns)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a plain real number (known at trace time), not a bool or array."""
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


def moving_average(old: jax.Array, new: jax.Array, decay: Any) -> jax.Array:
    r"""One step of a moving average, :math:`\rho\,\text{old} + (1 - \rho)\,\text{new}`.

    The result has ``old``'s dtype (the statistics dtype).

    Computed as :math:`\text{old} + (1 - \rho)(\text{new} - \text{old})` with
    :math:`1 - \rho` from :func:`complement`, so that the two weights sum to exactly
    one. The naive form multiplies by ``float32(0.999) = 0.99900001287`` and by
    ``float32(0.001)``, whose sum is :math:`1 + 1.3 \times 10^{-8}`: the average then
    drifts by that much every step, 1.3e-6 relative after 200 Adam steps (1.3e-5 once
    it has settled), where this form stays within about 5e-8. (PyTorch computes Adam's
    first moment this way, with ``lerp_``, but not its second.)
    """
    dtype = old.dtype
    return old + complement(decay, dtype) * (cast(new, dtype) - old)
