"""Reading and setting an optimizer's state by name: ``mu``, ``nu``, ``count``, ``learning_rate``.

A gbopt state is a tree of NamedTuples (one per primitive, with named fields), tuples
(one entry per member of a chain) and dicts (parameter groups, injected hyperparameters).
Its *format* is documented in docs/state.md: every statistic is reached by its field name,
whatever its position, and a parameter group by its label. These functions find a name
anywhere in the tree, so a user never writes a positional path such as
``state.inner_state[0].numerator[0].mu``; ``optax.tree_utils.tree_get`` and ``tree_set``
find the same names (a name occurs once per group: an optimizer keeps one step count).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from gbopt import _tree


def _group_of(path: tuple) -> Any:
    """The parameter group a path runs through (a label of ``multi_transform``), or None."""
    group = None
    for prev, key in zip(path, path[1:], strict=False):
        if getattr(prev, "name", None) == "inner_states" and hasattr(key, "key"):
            group = key.key
    return group


def _matches(state: Any, name: str, group: Any) -> list[tuple[tuple, Any]]:
    found = optax.tree_utils.tree_get_all_with_path(state, name)
    if group is not None:
        groups = {_group_of(p) for p, _ in found}
        found = [(p, v) for p, v in found if _group_of(p) == group]
        if not found:
            raise KeyError(
                f"no `{name}` in parameter group {group!r}; the groups holding `{name}` are "
                f"{sorted(map(repr, groups - {None}))}."
            )
    return found


def _names(state: Any) -> list[str]:
    """Every field name and dict key that holds an array or a subtree, for messages."""
    names = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]:
        for key in path:
            for attr in ("name", "key"):
                value = getattr(key, attr, None)
                if isinstance(value, str):
                    names.add(value)
    return sorted(names - {"inner_state", "inner_states", "numerator", "denominator"})


def _where(found) -> str:
    return ", ".join(f"state{_tree.path_str(p)}" for p, _ in found)


def state_get(state: Any, name: str, *, group: Any = None) -> Any:
    """Reads a statistic, count or hyperparameter of an optimizer state by its name.

    Args:
      state: any gbopt (or optax) optimizer state.
      name: the field's name: ``"mu"``, ``"nu"``, ``"trace"``, ``"count"``, or an
        injected hyperparameter such as ``"learning_rate"``.
      group: the label of a parameter group (:func:`gbopt.multi_transform`), when the
        state has several.

    Returns:
      The value: a tree shaped like the parameters for a statistic, an array for a count
      or a hyperparameter.

    Raises:
      KeyError: when ``name`` is not in the state (the message lists the names it has), or
        is there once per parameter group and no ``group`` is given (the message lists
        the groups), or several times in one group.

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> tx = gbopt.adam(1e-3)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> gbopt.state_get(state, "mu")
      {'w': Array([0., 0.], dtype=float32)}
    """
    found = _matches(state, name, group)
    if not found:
        raise KeyError(f"no `{name}` in this state; it has {_names(state)}.")
    if len(found) > 1:
        groups = {_group_of(p) for p, _ in found}
        if None not in groups and len(groups) == len(found):
            raise KeyError(
                f"`{name}` is in each parameter group of this state ({sorted(map(repr, groups))}); "
                f"pass `group=` to choose one, e.g. "
                f"`gbopt.state_get(state, {name!r}, group={sorted(groups, key=str)[0]!r})`."
            )
        raise KeyError(
            f"`{name}` occurs {len(found)} times in this state (at {_where(found)}); read the "
            "one you mean from its sub-state."
        )
    return found[0][1]


def state_set(state: Any, *, group: Any = None, **values: Any) -> Any:
    """Returns ``state`` with new values for fields given by name; ``state`` is not changed.

    A name held once per parameter group is set in every group, unless ``group`` names
    one (as ``for g in opt.param_groups: g["lr"] = ...`` does in PyTorch). Each new value
    must have the structure of the old one; arrays are taken as they are, so keep the
    dtypes and shapes to reuse a compiled step.

    Args:
      state: any gbopt (or optax) optimizer state.
      group: the label of a parameter group, to set its fields only.
      **values: new values by name, e.g. ``mu=zeros``, ``count=jnp.int32(0)``.

    Returns:
      The new state.

    Raises:
      TypeError: when no value is given.
      KeyError: as :func:`state_get`, for a name not in the state or held several times
        in one group.
      ValueError: when a new value's tree structure differs from the old one's.

    Example:
      >>> import jax, jax.numpy as jnp, gbopt
      >>> tx = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> state = gbopt.state_set(state, learning_rate=3e-4)
      >>> float(gbopt.state_get(state, "learning_rate"))
      0.0003000000142492354
    """
    if not values:
        raise TypeError("state_set needs at least one field by name, e.g. `count=0`.")
    for name, value in values.items():
        found = _matches(state, name, group)
        if not found:
            raise KeyError(f"no `{name}` in this state; it has {_names(state)}.")
        per_group: dict = {}
        for path, _ in found:
            per_group.setdefault(_group_of(path), []).append(path)
        crowded = [g for g, paths in per_group.items() if len(paths) > 1]
        if crowded:
            raise KeyError(
                f"`{name}` occurs several times in one group of this state (at {_where(found)}); "
                "set the one you mean on its sub-state."
            )
        for path, old in found:
            new = jax.tree.map(lambda o, v: _like(v, o), old, value) if _same(old, value) else None
            if new is None:
                raise ValueError(
                    f"the new `{name}` does not have the structure of the old one at "
                    f"state{_tree.path_str(path)}: {jax.tree.structure(value)} vs "
                    f"{jax.tree.structure(old)}."
                )
            state = _replace_at(state, path, new)
    return state


def _same(old: Any, new: Any) -> bool:
    return jax.tree.structure(old) == jax.tree.structure(new)


def _like(value: Any, old: Any) -> Any:
    """``value`` as an array of ``old``'s dtype (a number becomes a strong array)."""
    import jax.numpy as jnp

    return jnp.asarray(value, dtype=jnp.result_type(old))


def _replace_at(tree: Any, path: tuple, value: Any) -> Any:
    """``tree`` with the subtree at ``path`` (optax's path keys) replaced by ``value``."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if hasattr(key, "name") and hasattr(tree, "_replace"):
        return tree._replace(**{key.name: _replace_at(getattr(tree, key.name), rest, value)})
    if hasattr(key, "key") and isinstance(tree, dict):
        return {**tree, key.key: _replace_at(tree[key.key], rest, value)}
    if hasattr(key, "idx"):
        items = list(tree)
        items[key.idx] = _replace_at(items[key.idx], rest, value)
        return type(tree)(items) if type(tree) in (list, tuple) else type(tree)(*items)
    raise TypeError(f"cannot replace a value under {type(tree).__name__} at {key!r}.")
