r"""Parameter groups: another transform for some parameters, or none at all.

:func:`multi_transform` gives each parameter the transform of its *label* (biases a
larger learning rate, embeddings another optimizer); :func:`masked` applies one
transform to some parameters and passes the others through; :func:`freeze` and
:func:`set_to_zero` stop parameters from moving. Labels and masks are pytrees shaped like
the parameters (or a prefix of them), or functions building one from the parameters;
:func:`label_by_path` builds that function from the parameters' names.

Each inner transform sees only its own parameters: the others are replaced by
``optax.MaskedNode()`` (an empty pytree node), so it keeps state for its own
parameters only and its state reads like that of a model made of them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gbopt import _tree, _tree_checks
from gbopt._base import (
    EMPTY_STATE,
    GradientTransformation,
    as_transform,
    expect_keyed_state,
    expect_state,
    refuse_inside,
    with_info,
)

MaskedNode = optax.MaskedNode
"""The empty pytree node standing for a parameter another transform handles (optax's)."""


def _is_none(x: Any) -> bool:
    return x is None


def _broadcast(prefix: Any, tree: Any, *, what: str) -> list[Any]:
    """One entry of ``prefix`` per leaf of ``tree`` (``prefix`` a prefix tree of it).

    Raises:
      ValueError: naming the first path of ``prefix`` that is not in ``tree``, or the
        first leaf of ``tree`` that ``prefix`` does not cover.
    """
    treedef = jax.tree.structure(tree)
    try:
        full = jax.tree.map(
            lambda p, sub: jax.tree.map(lambda _: p, sub), prefix, tree, is_leaf=_is_none
        )
        return treedef.flatten_up_to(full)
    except (ValueError, TypeError):
        pass
    p_paths = [tuple(p) for p, _ in jax.tree_util.tree_flatten_with_path(prefix)[0]]
    t_paths = [tuple(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    where = "it does not fit the parameters' containers"
    for p in p_paths:
        if not any(t[: len(p)] == p for t in t_paths):
            where = f"{what}{_tree.path_str(p)} is not a path of the parameters"
            break
    else:
        for t in t_paths:
            if not any(t[: len(p)] == p for p in p_paths):
                where = f"the parameter at {_tree.path_str(t)} has no entry in {what}"
                break
    raise ValueError(
        f"{what} must have the structure of the parameters or of a prefix of them (e.g. "
        f"one entry per top-level key); {where}.\n  {what}: {jax.tree.structure(prefix)}\n"
        f"  parameters: {treedef}"
    )


def _paths(tree: Any) -> list[str]:
    return [_tree.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _select(tree: Any, keep: list[bool]) -> Any:
    """``tree`` with the leaves not kept replaced by :data:`MaskedNode`."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([x if k else MaskedNode() for x, k in zip(leaves, keep, strict=True)])


def _check_params(updates: Any, params: Any) -> None:
    """Updates must fit the parameters they are split like (named error, not a zip's)."""
    if params is not None:
        _tree_checks.check_matches(updates, params, what="updates", reference_name="params")


def _resolve(spec: Any, tree: Any, who: str) -> Any:
    refuse_inside(who)
    return spec(tree) if callable(spec) else spec


class MaskedState(NamedTuple):
    """State of :func:`masked`.

    Attributes:
      inner_state: the inner transform's state, for the selected parameters only.
    """

    inner_state: Any


def _mask_flags(mask: Any, updates: Any) -> list[bool]:
    flags = _broadcast(_resolve(mask, updates, "gbopt.masked's mask"), updates, what="mask")
    paths = _paths(updates)
    for path, flag in zip(paths, flags, strict=True):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(
                f"mask{path} is {type(flag).__name__}: {flag!r}; a mask holds Python bools "
                "(True: transform this parameter). Masks are fixed when the step is traced, "
                "so they cannot be arrays computed under jit."
            )
    return [bool(f) for f in flags]


def masked(transform: Any, mask: Any) -> GradientTransformation:
    r"""Applies ``transform`` to the parameters where ``mask`` is True; passes the rest through.

    .. math:: u_i \leftarrow \begin{cases} f(g)_i & m_i \\ g_i & \text{otherwise} \end{cases}

    Args:
      transform: a gbopt or optax transform; it sees (and keeps state for) the selected
        parameters only, the others replaced by :data:`MaskedNode`.
      mask: a pytree of bools shaped like the parameters or a prefix of them (a single
        bool selects all or none), or a function ``params -> mask``. At ``update`` the
        function is called with the updates (same structure and shapes).

    Returns:
      A transform with state :class:`MaskedState`. ``params`` are masked like the updates;
      extra keyword arguments are passed on unchanged.

    Raises:
      ValueError: if the mask does not fit the parameters (naming the path).
      TypeError: if a mask leaf is not a bool (naming the path).

    Example:
      >>> import jax, gbopt
      >>> no_decay_on_vectors = gbopt.masked(
      ...     gbopt.add_decayed_weights(1e-4), lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
    """
    inner = as_transform(transform, argument="transform")

    def init_fn(params):
        keep = _mask_flags(mask, params)
        return MaskedState(inner.init(_select(params, keep)))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(state, MaskedState, "masked")
        _check_params(updates, params)
        keep = _mask_flags(mask, updates)
        sub_params = None if params is None else _select(params, keep)
        out, inner_state = inner.update(
            _select(updates, keep), state.inner_state, sub_params, **extra_args
        )
        leaves, treedef = jax.tree.flatten(updates)
        new = treedef.flatten_up_to(out)
        merged = [n if k else u for n, u, k in zip(new, leaves, keep, strict=True)]
        return treedef.unflatten(merged), MaskedState(inner_state)

    return with_info(
        GradientTransformation(init_fn, update_fn), "masked", "wrapper", children=(inner,)
    )


class MultiTransformState(NamedTuple):
    """State of :func:`multi_transform`.

    Attributes:
      inner_states: a dict from label to the state of that label's transform, which
        covers the parameters with that label only.
    """

    inner_states: dict[Hashable, Any]


def multi_transform(
    transforms: Mapping[Hashable, Any], param_labels: Any
) -> GradientTransformation:
    r"""Applies a different transform to each group of parameters, chosen by label.

    .. math:: u_i = f_{\ell(i)}(g)_i

    where :math:`\ell(i)` is the label of parameter :math:`i`. Each transform sees only
    the parameters of its label (the others replaced by :data:`MaskedNode`) and keeps
    state for them only; a label without parameters keeps an empty state.

    Args:
      transforms: a dict from label to a gbopt or optax transform. Labels are hashable
        and mutually sortable (e.g. all strings), as they become dict keys of the state.
      param_labels: a pytree of labels shaped like the parameters or a prefix of them,
        or a function ``params -> labels`` (called with the updates at ``update``);
        :func:`label_by_path` builds one from the parameters' names.

    Returns:
      A transform with state :class:`MultiTransformState`. ``params`` are split like the
      updates; extra keyword arguments go unchanged to every transform.

    Raises:
      TypeError: if ``transforms`` is not a non-empty dict of transforms, or its labels
        cannot be sorted.
      ValueError: if a parameter's label is not a key of ``transforms``, or the labels do
        not fit the parameters (naming the path).

    Example:
      >>> import gbopt
      >>> tx = gbopt.multi_transform(
      ...     {"weights": gbopt.adam(1e-3), "biases": gbopt.adam(1e-2)},
      ...     gbopt.label_by_path(lambda path, leaf: "biases" if path[-1] == "bias" else "weights"),
      ... )

    References:
      optax's ``multi_transform`` (``partition``), which keeps each group's state in a
      ``MaskedState``; here it is the group's own state.
    """
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(
            "`transforms` must be a non-empty dict from label to transform, e.g. "
            "{'weights': gbopt.adam(1e-3), 'biases': gbopt.adam(1e-2)}; got "
            f"{type(transforms).__name__}: {transforms!r}."
        )
    try:
        labels_sorted = sorted(transforms)
    except TypeError:
        raise TypeError(
            f"the labels of `transforms` must be mutually sortable (e.g. all strings), since "
            f"they are the keys of the state's dict; got {list(transforms)}."
        ) from None
    txs = {
        label: as_transform(transforms[label], argument=f"transforms[{label!r}]")
        for label in labels_sorted
    }

    def labels_of(tree):
        labels = _broadcast(
            _resolve(param_labels, tree, "gbopt.multi_transform's param_labels"),
            tree,
            what="param_labels",
        )
        for path, label in zip(_paths(tree), labels, strict=True):
            try:
                known = label in txs
            except TypeError:  # unhashable
                known = False
            if not known:
                raise ValueError(
                    f"param_labels{path} is {label!r}, which is not a key of `transforms` "
                    f"(keys: {labels_sorted}). Add a transform for it (gbopt.set_to_zero() "
                    "freezes), or change the label."
                )
        return labels

    def init_fn(params):
        labels = labels_of(params)
        return MultiTransformState(
            {g: tx.init(_select(params, [lab == g for lab in labels])) for g, tx in txs.items()}
        )

    def update_fn(updates, state, params=None, **extra_args):
        expect_keyed_state(
            state,
            MultiTransformState,
            "inner_states",
            txs,
            "multi_transform",
            "labels",
            "Pass the state this transform's `init` returned.",
        )
        _check_params(updates, params)
        labels = labels_of(updates)
        leaves, treedef = jax.tree.flatten(updates)
        merged = list(leaves)
        new_states = {}
        for g, tx in txs.items():
            keep = [lab == g for lab in labels]
            sub_params = None if params is None else _select(params, keep)
            out, new_states[g] = tx.update(
                _select(updates, keep), state.inner_states[g], sub_params, **extra_args
            )
            for i, x in enumerate(treedef.flatten_up_to(out)):
                if keep[i]:
                    merged[i] = x
        return treedef.unflatten(merged), MultiTransformState(new_states)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "multi_transform",
        "wrapper",
        hyperparams={"groups": tuple(txs)},
        children=tuple(txs.values()),
    )


def _key_name(key: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return str(key)


def _is_nnx_variable(x: Any) -> bool:
    """Whether ``x`` is a Flax NNX ``Variable`` (checked by name: flax is not a dependency)."""
    return any(
        c.__name__ == "Variable" and c.__module__.startswith("flax.") for c in type(x).__mro__
    )


def label_by_path(rule: Callable[[tuple, Any], Hashable]) -> Callable[[Any], Any]:
    """Builds a labelling function ``params -> labels`` from a rule on each parameter's path.

    Args:
      rule: ``rule(path, leaf) -> label``, where ``path`` is the tuple of plain keys
        leading to the parameter (dict keys, attribute names, sequence indices), e.g.
        ``("params", "Dense_0", "bias")`` for a Flax linen bias, and ``leaf`` the array
        (use only its shape and dtype: labels are fixed when the step is traced).
        A Flax NNX ``Variable`` (what ``nnx.Optimizer`` hands to ``init``) counts as a
        leaf, and ``leaf`` is its value, so paths read the same at ``init`` (which sees
        ``Param`` variables) and at ``update`` (which sees plain arrays).

    Returns:
      A function for the ``param_labels`` of :func:`multi_transform` (or, with a rule
      returning bools, the ``mask`` of :func:`masked` and :func:`freeze`).

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> labels = gbopt.label_by_path(lambda path, leaf: path[-1])
      >>> labels({"dense": {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}})
      {'dense': {'b': 'b', 'w': 'w'}}
    """
    if not callable(rule):
        raise TypeError(
            f"`rule` must be a function (path, leaf) -> label; got {type(rule).__name__}."
        )

    def label(path, leaf):
        if _is_nnx_variable(leaf):
            leaf = leaf.get_value()
        return rule(tuple(_key_name(k) for k in path), leaf)

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(label, params, is_leaf=_is_nnx_variable)

    return labels


def set_to_zero() -> GradientTransformation:
    r"""Replaces every update by zero (the parameters do not move); keeps no state.

    .. math:: u \leftarrow 0

    Used as the transform of frozen parameters in :func:`multi_transform`, it keeps no
    optimizer state for them.
    """

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(jnp.zeros_like, updates), state

    return with_info(GradientTransformation(init_fn, update_fn), "set_to_zero", "map", math="0")


def freeze(mask: Any) -> GradientTransformation:
    r"""Sets the updates to zero where ``mask`` is True (those parameters do not move).

    .. math:: u_i \leftarrow 0 \quad \text{where } m_i

    Place it last in a chain (``chain(adam(1e-3), freeze(mask))``): the frozen parameters
    then stay bit for bit where they are, whatever comes before. The optimizer before it
    still keeps state for them; to keep none, give them :func:`set_to_zero` in a
    :func:`multi_transform` instead.

    Args:
      mask: bools shaped like the parameters or a prefix of them (True: frozen), or a
        function ``params -> mask``.

    Returns:
      ``masked(set_to_zero(), mask)``.
    """
    return masked(set_to_zero(), mask)
