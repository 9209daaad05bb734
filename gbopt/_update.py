"""Applying updates to parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _placement, _tree_checks


def _is_none(x: Any) -> bool:
    return x is None


def apply_updates(params: Any, updates: Any) -> Any:
    r"""Returns ``params + updates``, leaf by leaf, in each parameter's dtype.

    .. math:: w \leftarrow w + u

    The sum is taken in the wider of the two dtypes and cast back to the parameter's
    dtype, so a float32 update applied to bfloat16 parameters leaves them bfloat16.
    ``None`` leaves (in either tree) leave the parameter unchanged.

    Raises:
      ValueError: if the trees differ in structure or a leaf's shape differs from its
        parameter's (naming the path).
      TypeError: if a parameter that receives an update is not floating point (an
        integer parameter would silently round every step away), naming the path.
    """
    _tree_checks.check_matches(
        updates, params, what="updates", reference_name="params", none_passes=True
    )

    def add(p, u):
        if p is None or u is None:
            return p
        p_dtype = jnp.result_type(p)
        if not jnp.issubdtype(p_dtype, jnp.inexact):  # find its path for the message
            updated = jax.tree.map(
                lambda p, u: None if u is None else p, params, updates, is_leaf=_is_none
            )
            _placement.check_float_params(updated)
        p, u = _dtypes.as_array(p), _dtypes.as_array(u)
        wide = _dtypes.promote(p_dtype, u.dtype)
        p, u = _dtypes.cast(p, wide), _dtypes.cast(u, wide)
        # one dtype and one shape: lax.add, without the operator's nested jit call (the
        # operator for a checked broadcast, a scalar update)
        total = jax.lax.add(p, u) if p.shape == u.shape else p + u
        return _dtypes.cast(total, p_dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)
