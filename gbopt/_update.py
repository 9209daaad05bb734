"""Applying updates to parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gbopt import _tree


def apply_updates(params: Any, updates: Any) -> Any:
    r"""Returns ``params + updates``, leaf by leaf, in each parameter's dtype.

    .. math:: w \leftarrow w + u

    The sum is taken in the wider of the two dtypes and cast back to the parameter's
    dtype, so a float32 update applied to bfloat16 parameters leaves them bfloat16.
    ``None`` leaves (in either tree) leave the parameter unchanged.

    Raises:
      ValueError: if the trees differ in structure or a leaf's shape differs from its
        parameter's (naming the path).
    """
    _tree.check_matches(updates, params, what="updates", reference_name="params", none_passes=True)

    def add(p, u):
        if p is None or u is None:
            return p
        p_dtype = jnp.result_type(p)
        wide = jnp.promote_types(p_dtype, jnp.result_type(u))
        return (jnp.asarray(p).astype(wide) + jnp.asarray(u).astype(wide)).astype(p_dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)
