"""Structure checks between trees, with messages that name the first path that differs."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from gbopt._tree import path_str


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


def _short(x: Any, limit: int = 120) -> str:
    """``repr(x)``, cut to ``limit`` characters."""
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    if a_keys == b_keys and not _equal(la[0], lb[0]) and la[0][0] is lb[0][0]:
        kind = getattr(la[0][0], "__name__", str(la[0][0]))
        return (
            f"{at} and the {reference_name} there are both a {kind}, but their static "
            f"(non-array) fields differ: {_short(la[0][1])} against {_short(lb[0][1])}. "
            "Static fields (flax.struct.field(pytree_node=False), Equinox's "
            "eqx.field(static=True)) are part of the tree's structure",
            "structure",
        )
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


def refuse_complex(who: str, tree: Any, argument: str, why: str) -> None:
    """Raises a TypeError naming the first complex leaf of ``tree``, if any.

    Args:
      who: the transform, for the message.
      tree: the parameters or updates.
      argument: how the message names ``tree`` (``"params"``, ``"updates"``).
      why: the sentence that says why ``who`` takes real numbers only.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if np.issubdtype(_raw_dtype(leaf), np.complexfloating):
            raise TypeError(
                f"{who} does not take complex parameters: {argument}{path_str(path)} is "
                f"{_raw_dtype(leaf)}. {why} Optimize the real and imaginary parts as two real "
                "parameters (e.g. `jnp.stack([x.real, x.imag])`), or use an optimizer that "
                "takes complex parameters, such as gbopt.adam or gbopt.sgd."
            )
