r"""Optimizer-state sharding over a data-parallel mesh axis (ZeRO stage 1).

gbopt keeps no distribution layer of its own: its state is a pytree of arrays, and
JAX's sharding places it. Every transform's state follows the sharding of the
parameters (see :func:`gbopt._placement.full_like`), so model-parallel training needs
nothing from gbopt. In data-parallel training the parameters are replicated over the
data axis, and so, by that rule, is the state: each device holds all of it. Adam's two
moments are twice the parameters. :func:`state_shardings` splits each state array
over the data axis instead (Rajbhandari et al., 2020, ZeRO stage 1): each device keeps
:math:`1/n` of the state, and ``jax.jit`` turns the replicated update into a sharded
one (each device updates its slice of the parameters, which are then gathered).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gbopt import _tree


def _axes(entry: Any) -> tuple[str, ...]:
    """The mesh axes a PartitionSpec entry names (``None``, one name or a tuple)."""
    if entry is None:
        return ()
    if isinstance(entry, str):
        return (entry,)
    return tuple(entry)


def _base_spec(path, leaf, mesh: Mesh) -> list:
    """The spec ``leaf`` already has on ``mesh``, one entry per dimension."""
    ndim = len(leaf.shape)
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, NamedSharding) or sharding.is_fully_replicated:
        return [None] * ndim
    if tuple(sharding.mesh.shape.items()) != tuple(mesh.shape.items()):
        raise ValueError(
            f"state{_tree.path_str(path)} is sharded over a mesh with axes "
            f"{dict(sharding.mesh.shape)}, but `mesh` has axes {dict(mesh.shape)}. Pass the "
            "mesh the parameters live on (or a state without shardings, e.g. "
            "`jax.eval_shape(tx.init, params)` of unsharded parameters)."
        )
    spec = list(sharding.spec)
    return spec + [None] * (ndim - len(spec))


def state_shardings(state: Any, mesh: Mesh, axis_name: str | Sequence[str]) -> Any:
    r"""Shardings that split optimizer state over a data-parallel axis (ZeRO stage 1).

    Each array of ``state`` is split over ``axis_name`` along its largest dimension
    whose size (per shard, if the array is already sharded over other mesh axes) is
    divisible by the number of devices :math:`n` on that axis; an array with no such
    dimension (a step count, an odd-sized bias) stays replicated over it. The
    parameters stay replicated; each device then holds about :math:`1/n` of the state::

        mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
        replicated = NamedSharding(mesh, P())
        state_sh = gbopt.state_shardings(jax.eval_shape(tx.init, params), mesh, "data")
        state = jax.jit(tx.init, out_shardings=state_sh)(params)
        step = jax.jit(train_step, in_shardings=(replicated, state_sh, batch_sh),
                       out_shardings=(replicated, state_sh))

    The update is element-wise, so it needs no communication of its own: ``jax.jit``
    computes each slice of the update where its state lives and gathers the new
    parameters (an all-gather the size of the parameters; the gradients' all-reduce
    may become a reduce-scatter). Results are those of the unsharded update. Use mesh
    axes of type ``Auto`` (or ``jax.sharding.reshard`` the updates) so that the
    compiler may insert that gather.

    State that is already sharded over other axes of ``mesh`` (model parallelism on a
    2-D mesh) keeps that sharding and is split over ``axis_name`` in addition. That
    sharding is read from the leaves: those of ``tx.init(params)`` have it, and so do
    those of ``jax.eval_shape(tx.init, params)`` on a mesh with ``Explicit`` axes; with
    ``Auto`` axes ``eval_shape`` returns leaves without sharding, which are taken as
    replicated over the other axes (pass the initialised state instead).

    Args:
      state: a pytree of arrays or of ``jax.ShapeDtypeStruct``, e.g.
        ``jax.eval_shape(tx.init, params)`` (nothing is allocated) or ``tx.init(params)``.
      mesh: the ``jax.sharding.Mesh`` the step runs on.
      axis_name: the data-parallel axis of ``mesh``, or a tuple of axes (split over
        their product).

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``state``, for
      ``jax.jit(..., out_shardings=...)`` or ``jax.device_put``.

    Raises:
      ValueError: if ``axis_name`` is not an axis of ``mesh``, or a state array is
        sharded over a different mesh (naming its path).

    Example:
      >>> import jax, jax.numpy as jnp, gbopt
      >>> mesh = jax.make_mesh((1,), ("data",))
      >>> state = {"nu": jax.ShapeDtypeStruct((3, 8), jnp.float32),
      ...          "count": jax.ShapeDtypeStruct((), jnp.int32)}
      >>> {k: s.spec for k, s in gbopt.state_shardings(state, mesh, "data").items()}
      {'count': P(), 'nu': P(None, 'data')}

    References:
      Rajbhandari, Rasley, Ruwase & He, "ZeRO: Memory Optimizations Toward Training
      Trillion Parameter Models", SC 2020 (stage 1: optimizer-state partitioning).
      Xu et al., "Automatic Cross-Replica Sharding of Weight Update in Data-Parallel
      Training", 2020 (the same idea in XLA).
    """
    data_axes = _axes(axis_name)
    missing = [a for a in data_axes if a not in mesh.axis_names]
    if not data_axes or missing:
        raise ValueError(
            f"`axis_name` must name axes of the mesh, {tuple(mesh.axis_names)}; got "
            f"{axis_name!r}. Pass the data-parallel axis, e.g. `axis_name={mesh.axis_names[0]!r}`."
        )
    n = math.prod(mesh.shape[a] for a in data_axes)

    def leaf_sharding(path, leaf):
        spec = _base_spec(path, leaf, mesh)
        used = {a for entry in spec for a in _axes(entry)}
        best = None
        if not used & set(data_axes):
            for dim, entry in enumerate(spec):
                size, split = leaf.shape[dim], math.prod(mesh.shape[a] for a in _axes(entry))
                per_shard = size // split
                fits = size % split == 0 and per_shard % n == 0
                if fits and (best is None or per_shard > best[1]):
                    best = (dim, per_shard)
        if best is not None:
            dim = best[0]
            axes = _axes(spec[dim]) + data_axes
            spec[dim] = axes[0] if len(axes) == 1 else axes
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree_util.tree_map_with_path(leaf_sharding, state)
