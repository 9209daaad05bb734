"""Pytree helpers: paths in the user's terms, and a leaf-by-leaf map with several outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gbopt._dtypes import as_array


def _is_none(x: Any) -> bool:
    return x is None


def path_str(path) -> str:
    """A pytree path in the user's terms, e.g. ``['dense']['w']`` or ``[0].w`` (root: empty)."""
    return jax.tree_util.keystr(tuple(path))


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
