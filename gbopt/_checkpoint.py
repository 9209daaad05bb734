"""Restoring optimizer state from a checkpoint, checked leaf by leaf against a template.

gbopt's states are pytrees of arrays with named structure (NamedTuples, dicts, tuples),
so any pytree checkpointer saves them: ``flax.serialization``, Orbax, ``pickle`` of the
arrays. What those libraries do not check is that what comes back fits the optimizer it
is restored into: ``flax.serialization.from_bytes`` accepts arrays of another shape, and
Orbax casts to the template's dtype. :func:`restore_state` checks structure, shapes and
dtypes, names the first path that differs, and returns the state in the template's
structure, on the template's devices.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gbopt import _tree, _tree_checks, _validate

_FIX = (
    "Restore into a template built by the same optimizer for parameters of the same "
    "structure, shapes and dtypes (`tx.init(params)`, or `jax.eval_shape(tx.init, params)` "
    "to allocate nothing)."
)


_FIRST_MOMENTS_FIX = (
    "States written before first moments followed the parameters' dtype (gbopt 0.1.0) "
    "keep Adam's `mu` and the momentum `trace` of bfloat16 and float16 parameters in "
    "float32; build the optimizer with that storage to restore them, e.g. "
    "`gbopt.adam(lr, mu_dtype=jnp.float32)` or `gbopt.momentum(lr, 0.9, "
    "accumulator_dtype=jnp.float32)`."
)


def _key(entry: Any) -> str:
    """A path entry as a string: dict keys, field names and indices alike."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flat_by_path(tree: Any) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """``{normalized path: (path, leaf)}`` for every leaf of ``tree``."""
    return {
        tuple(_key(k) for k in path): (path, leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _format_0(key: tuple[str, ...]) -> tuple[str, ...] | None:
    """A path of format 0 (gbopt 0.1.0) in today's format, or None for a leaf that is gone.

    In format 0 an optimizer built by :func:`gbopt.inject_hyperparams` kept a second step
    count of its own, inside the injected state (``inner_state.count``, with the rest one
    ``inner_state`` deeper); today the injected count is the only one.
    """
    for i in range(len(key) - 1):
        if key[i] == "inner_state" and "hyperparams" not in key[:i]:
            if key[i + 1] == "count" and len(key) == i + 2:
                return None
            if key[i + 1] == "inner_state":
                return key[: i + 1] + key[i + 2 :]
    return key


def _align(template: Any, restored: Any) -> Any:
    """``restored`` rebuilt in the structure of ``template``, matching leaves by path.

    Paths are compared as strings, so a NamedTuple field matches a dict key of the same
    name and a tuple index a list index or a ``"0"`` key: the forms Orbax (restoring
    without a target) and ``flax.serialization.to_state_dict`` write.
    """
    t_paths, t_def = jax.tree_util.tree_flatten_with_path(template)
    by_path = _flat_by_path(restored)
    wanted = {tuple(_key(k) for k in path) for path, _ in t_paths}
    if not wanted <= by_path.keys():  # perhaps an older format: migrate its paths
        migrated = {}
        for key, value in by_path.items():
            new = _format_0(key)
            if new is not None:
                migrated[new] = value
        if wanted == migrated.keys():
            by_path = migrated
    leaves, missing = [], []
    for path, _ in t_paths:
        key = tuple(_key(k) for k in path)
        if key in by_path:
            leaves.append(by_path.pop(key)[1])
        else:
            missing.append(path)
    if missing or by_path:
        parts = []
        if missing:
            parts.append(
                f"the template has an array at {_tree.path_str(missing[0])} that the "
                f"restored state lacks ({len(missing)} such path(s))"
            )
        if by_path:
            extra, _ = next(iter(by_path.values()))
            parts.append(
                f"the restored state has an array at {_tree.path_str(extra)} that the "
                f"template lacks ({len(by_path)} such path(s))"
            )
        raise ValueError(
            "the restored state does not have the structure of the template: "
            + "; ".join(parts)
            + f". Was it saved from another optimizer? {_FIX}"
        )
    return t_def.unflatten(leaves)


# Fields that hold a sum or average of squares (>= 0 by construction): gbopt's ``nu``.
_NON_NEGATIVE_FIELDS = frozenset({"nu"})


def _field(path: Any) -> str | None:
    """The name of the innermost NamedTuple field on ``path`` (None if there is none)."""
    for entry in reversed(tuple(path)):
        if isinstance(entry, jax.tree_util.GetAttrKey):
            return entry.name
    return None


def _check_values(restored: Any) -> None:
    """Raises a ValueError naming the first leaf with a value no optimizer state can hold.

    Non-finite values (NaN, inf), negative integers (step counts) and negative second
    moments (fields named ``nu``). One compiled reduction per leaf, one transfer in all.
    """
    flat = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
        if not isinstance(leaf, jax.core.Tracer)
    ]
    if not flat:
        return

    def problems(leaves):
        codes = []
        for (path, _), x in zip(flat, leaves, strict=True):
            x = jnp.asarray(x)
            if jnp.issubdtype(x.dtype, jnp.inexact):
                code = jnp.where(jnp.all(jnp.isfinite(x)), 0, 1)
                if _field(path) in _NON_NEGATIVE_FIELDS and not jnp.iscomplexobj(x):
                    code = jnp.where((code == 0) & jnp.any(x < 0), 3, code)
            elif jnp.issubdtype(x.dtype, jnp.integer) and jnp.issubdtype(
                x.dtype, jnp.signedinteger
            ):
                code = jnp.where(jnp.any(x < 0), 2, 0)
            else:
                code = jnp.zeros([], jnp.int32)
            codes.append(jnp.asarray(code, jnp.int32))
        return jnp.stack(codes)

    codes = np.asarray(jax.jit(problems)([leaf for _, leaf in flat]))
    bad = np.flatnonzero(codes)
    if bad.size == 0:
        return
    path, leaf = flat[bad[0]]
    what = {
        1: "a non-finite value (NaN or inf)",
        2: "a negative step count",
        3: "a negative second moment (a mean or sum of squares cannot be negative)",
    }[int(codes[bad[0]])]
    raise ValueError(
        f"the restored state has {what} at {_tree.path_str(path)} ({len(bad)} such "
        "array(s) in all): the next update would be NaN or skipped. Was the checkpoint "
        "written after a step that diverged, or edited by hand? Restore an earlier "
        "checkpoint, or pass check_values=False to restore it as it is (e.g. a second "
        "moment that overflowed to inf on purpose)."
    )


def restore_state(template: Any, restored: Any, *, check_values: bool = True) -> Any:
    """Checks a restored optimizer state against a template and returns it in its structure.

    ``restored`` may have the template's own structure (what ``flax.serialization.
    from_bytes(template, ...)`` or Orbax with a target return) or be a nested dict/list
    of the same arrays (what ``flax.serialization.msgpack_restore``,
    ``flax.serialization.to_state_dict`` or Orbax without a target return): leaves are
    matched by path, NamedTuple fields by name and tuple entries by index. Restoring
    without a target is the safer way, since nothing is cast or reshaped before the
    check::

        raw = ocp.StandardCheckpointer().restore(path)          # no target
        opt_state = gbopt.restore_state(tx.init(params), raw["opt_state"])

    Args:
      template: the state the optimizer expects: ``tx.init(params)``, or its abstract
        shape ``jax.eval_shape(tx.init, params)``.
      restored: the state read from the checkpoint.
      check_values: also refuse values no healthy state holds: NaN or inf anywhere, a
        negative integer (a step count), a negative second moment (a field named
        ``nu``). ``False`` restores them as they are (the opt-out, e.g. to inspect a
        diverged run). The check runs one compiled reduction over the arrays.

    Returns:
      The restored state with the template's structure (its NamedTuples, tuples and
      dicts), each leaf a ``jax.Array``: with the template leaf's sharding when that leaf
      was placed explicitly (a committed array, or a ``jax.ShapeDtypeStruct`` with a
      concrete sharding), otherwise on JAX's default device, as the template.

    Raises:
      ValueError: naming the first path where the restored state lacks an array the
        template has (or has one it lacks), where a shape differs, or where a dtype
        differs; with ``check_values``, naming the first path with a non-finite value,
        a negative count or a negative second moment.
    """
    _validate.flag("check_values", check_values)
    if jax.tree.structure(restored) != jax.tree.structure(template):
        restored = _align(template, restored)
    try:
        _tree_checks.check_matches(
            restored,
            template,
            what="restored state",
            reference_name="template",
            dtypes=True,
            fix=_FIX,
        )
    except ValueError as error:
        narrowed = r"has dtype float32 but the template there has dtype b?float16"
        if not re.search(narrowed, str(error)):
            raise
        raise ValueError(f"{error} {_FIRST_MOMENTS_FIX}") from None
    if check_values:
        _check_values(restored)

    def place(value: Any, like: Any) -> jax.Array:
        sharding = getattr(like, "sharding", None)
        if isinstance(like, jax.Array) and not like.committed:
            # Uncommitted like the template (JAX's default device): a committed array
            # would make the next jitted step compile again. Orbax returns committed
            # arrays; only a copy through the host releases them.
            if isinstance(value, jax.Array) and value.committed:
                value = np.asarray(value)
            return jnp.asarray(value)
        # An abstract template (from jax.eval_shape) may name an abstract mesh: no devices.
        if sharding is None or isinstance(
            getattr(sharding, "mesh", None), jax.sharding.AbstractMesh
        ):
            return jnp.asarray(value)
        return jax.device_put(value, sharding)

    return jax.tree.map(place, restored, template)
