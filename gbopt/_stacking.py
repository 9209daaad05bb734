r"""Many small parameters: run a transform on stacks of same-shaped leaves.

A jitted step costs a few microseconds per array it returns, whatever the array's
size, and the cost per array grows with their number (on XLA:CPU, 1.1 µs each for
1,000 outputs, 3.3 µs each for 4,000). Adam on 1,000 leaves of 512 floats returns
3,000 arrays (parameters and two moments) and moves only 20 MB: the step is almost all
overhead. :func:`stack_leaves` lets the wrapped transform see each group of up to
``group_size`` small leaves of one shape and dtype as one stacked array, so its state
holds one array per group and statistic instead of one per leaf, and its arithmetic
runs as one loop per group. The updates it returns are per leaf again, and the
parameters stay exactly as the user built them.

This is the layout ``torch.optim``'s ``foreach`` and ``fused`` implementations get
from multi-tensor kernels, written in JAX: the stacking is a concatenation XLA fuses,
and nothing leaves JAX, so ``jit``, ``vmap``, ``grad`` and sharding work as before
(only small leaves are stacked; large, possibly sharded, ones are passed as they are).
``optax.flatten`` is the extreme case (everything in one vector); it gives a similar
step but each leaf then has its own slice offset, which XLA:CPU compiles as a
separate loop (1.9× optax's compile time on 1,000 leaves; ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from gbopt import _tree, _tree_checks, _validate
from gbopt._base import (
    GradientTransformation,
    as_transform,
    expect_state,
    inside_stack_leaves,
    with_info,
)


def _whole_rows(stack: jax.Array) -> jax.Array:
    """Reshards ``stack`` if it is split along its rows over an ``Explicit`` mesh axis.

    :func:`gbopt.state_shardings` may split stacked state that way (ZeRO-1), and JAX
    cannot take one row of an axis split over several devices; the updates are then
    gathered, as ZeRO-1 gathers the parameters.
    """
    sharding = getattr(jax.typeof(stack), "sharding", None)
    spec = getattr(sharding, "spec", None)
    if not spec or spec[0] is None:
        return stack
    return jax.sharding.reshard(stack, sharding.update(spec=PartitionSpec(None, *spec[1:])))


class LeafStacks(NamedTuple):
    """The tree a :func:`stack_leaves`-wrapped transform sees in place of the parameters.

    Attributes:
      stacks: one array per group, the group's leaves stacked along a new first axis.
      leaves: the leaves that are in no group (large ones, or alone of their shape), in
        the order of the parameters' leaves.
    """

    stacks: tuple[jax.Array, ...]
    leaves: tuple[Any, ...]


class _Plan(NamedTuple):
    treedef: Any
    n: int
    groups: tuple[tuple[int, ...], ...]  # leaf indices of each stack
    rest: tuple[int, ...]  # leaf indices passed as they are


def stack_leaves(
    transform: Any, *, group_size: int = 8, max_leaf_size: int = 16384
) -> GradientTransformation:
    r"""Runs ``transform`` on stacks of small same-shaped leaves: fewer, larger arrays.

    Leaves with at most ``max_leaf_size`` elements are grouped by shape and dtype, in
    the order of the tree's leaves, into groups of up to ``group_size``; each group is
    stacked into one array :math:`G_k = [x_{k_1}; \dots; x_{k_m}]` and ``transform``
    sees the tree :class:`LeafStacks` of these stacks and the remaining leaves. For a
    transform that treats every entry alike whatever leaf it is in (element-wise rules
    and global reductions: every gbopt optimizer and primitive, ``clip_by_global_norm``,
    optax's ``adam`` and ``sgd``) the updates are those of ``transform`` on the
    parameters themselves; the state holds one array per group and statistic.

    Use it for trees of many small leaves, where a jitted step's cost is the arrays it
    returns, not the arithmetic (``benchmarks/small_leaves.py``: Adam on 1,000 leaves
    of 512 floats steps in 0.5× optax's time and compiles in about 0.5× the time).
    Large leaves gain nothing: stacking copies them.

    Args:
      transform: a gbopt or optax transform whose result does not depend on how the
        entries are grouped into leaves. Not for transforms that read the parameters'
        structure (paths, labels, masks, per-leaf norms such as LARS / LAMB trust
        ratios): gbopt's own (:func:`multi_transform`, :func:`masked`,
        :func:`add_decayed_weights` with a mask) raise an error inside it; wrap
        ``stack_leaves`` inside them instead.
      group_size: the most leaves stacked into one array, >= 2. Larger groups mean
        fewer arrays per step (and a larger temporary update per group).
      max_leaf_size: the largest leaf (in elements) that is stacked, >= 1.

    Returns:
      A transform whose state is ``transform``'s state for the stacked tree (a
      :class:`LeafStacks` wherever ``transform`` keeps a tree like the parameters).
      ``params`` are stacked like the updates; extra keyword arguments are passed on.

    Raises:
      TypeError: if ``group_size`` or ``max_leaf_size`` is not an int, or the
        leaves of one group do not share a dtype in the updates (naming the leaves).
      ValueError: if they are out of range.

    Example:
      >>> import jax, jax.numpy as jnp, gbopt
      >>> params = {f"bias{i}": jnp.zeros(64) for i in range(100)}
      >>> len(jax.tree.leaves(gbopt.adam(1e-3).init(params)))  # a count, 2 x 100 moments
      201
      >>> tx = gbopt.stack_leaves(gbopt.adam(1e-3), group_size=32)
      >>> state = tx.init(params)  # per moment, stacks of 32, 32, 32 and 4 biases
      >>> [x.shape for x in jax.tree.leaves(state)[1:5]]
      [(32, 64), (32, 64), (32, 64), (4, 64)]
    """
    inner = as_transform(transform, argument="transform")
    group_size = _validate.whole_number("group_size", group_size, 2, meaning=" (leaves per stack)")
    max_leaf_size = _validate.whole_number(
        "max_leaf_size", max_leaf_size, 1, meaning=" (elements of a leaf)"
    )

    @functools.lru_cache(maxsize=64)
    def plan_for(treedef, shapes, dtypes) -> _Plan:
        by_kind: dict[tuple, list[int]] = {}
        for i, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
            if math.prod(shape) <= max_leaf_size:
                by_kind.setdefault((shape, dtype), []).append(i)
        groups = []
        for members in by_kind.values():
            for start in range(0, len(members), group_size):
                chunk = tuple(members[start : start + group_size])
                if len(chunk) > 1:
                    groups.append(chunk)
        grouped = {i for g in groups for i in g}
        rest = tuple(i for i in range(len(shapes)) if i not in grouped)
        return _Plan(treedef, len(shapes), tuple(groups), rest)

    def plan(tree: Any) -> _Plan:
        leaves, treedef = jax.tree.flatten(tree)
        shapes = tuple(tuple(np.shape(x)) for x in leaves)
        dtypes = tuple(jnp.result_type(x) for x in leaves)
        return plan_for(treedef, shapes, dtypes)

    def stacked(p: _Plan, tree: Any, what: str) -> LeafStacks | None:
        if tree is None:
            return None
        leaves = p.treedef.flatten_up_to(tree)
        stacks = []
        for group in p.groups:
            members = [leaves[i] for i in group]
            kinds = {jnp.result_type(x) for x in members}
            if len(kinds) > 1:
                paths = [_tree.path_str(k) for k, _ in _paths(p, group)]
                raise TypeError(
                    f"gbopt.stack_leaves stacks the {what} at {', '.join(paths)}, which have "
                    f"the same dtype in the parameters but {sorted(map(str, kinds))} in the "
                    f"{what}. Give the {what} the parameters' dtypes (e.g. "
                    "jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params))."
                )
            stacks.append(lax.concatenate([lax.expand_dims(x, (0,)) for x in members], 0))
        return LeafStacks(tuple(stacks), tuple(leaves[i] for i in p.rest))

    def unstacked(p: _Plan, view: LeafStacks) -> Any:
        leaves: list[Any] = [None] * p.n
        for group, stack in zip(p.groups, view.stacks, strict=True):
            stack = _whole_rows(stack)
            for row, i in enumerate(group):
                leaves[i] = lax.index_in_dim(stack, row, 0, keepdims=False)
        for i, x in zip(p.rest, view.leaves, strict=True):
            leaves[i] = x
        return p.treedef.unflatten(leaves)

    def _paths(p: _Plan, group):
        like = p.treedef.unflatten(list(range(p.n)))
        flat = jax.tree_util.tree_flatten_with_path(like)[0]
        return [flat[i] for i in group]

    def init_fn(params):
        p = plan(params)
        with inside_stack_leaves():
            return StackLeavesState(inner.init(stacked(p, params, "params")))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(state, StackLeavesState, "stack_leaves")
        if params is not None:
            _tree_checks.check_matches(updates, params, what="updates", reference_name="params")
        p = plan(params if params is not None else updates)
        view_updates = stacked(p, updates, "updates")
        view_params = stacked(p, params, "params")
        with inside_stack_leaves():
            out, inner_state = inner.update(view_updates, state.inner, view_params, **extra_args)
        return unstacked(p, out), StackLeavesState(inner_state)

    return with_info(
        GradientTransformation(init_fn, update_fn), "stack_leaves", "wrapper", children=(inner,)
    )


class StackLeavesState(NamedTuple):
    """State of :func:`stack_leaves`.

    Attributes:
      inner: the wrapped transform's state for the stacked tree (:class:`LeafStacks`
        wherever it keeps a tree like the parameters).
    """

    inner: Any
