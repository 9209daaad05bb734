r"""Hyperparameters as data: the learning rate (and any other) lives in the state as an array.

A factory such as :func:`gbopt.adam` closes over its hyperparameters: under ``jax.jit``
they are constants baked into the compiled program, so changing the learning rate
means building a new optimizer and compiling again (optax issues #577 and #353).
:func:`inject_hyperparams` moves them into the state instead::

    tx = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3, b1=0.9)
    state = tx.init(params)          # state.hyperparams == {"learning_rate": 1e-3, "b1": 0.9,
                                     #                       "b2": 0.999, "eps": 1e-8}
    state = gbopt.set_hyperparams(state, learning_rate=3e-4)   # same shapes, same dtypes:
    updates, state = step(grads, state, params)                # no recompilation

Because the hyperparameters are arrays in the state they are *data*: ``jax.vmap`` over a
batch of states runs a learning-rate sweep in one compiled call, and ``jax.grad`` of a
loss with respect to them is a hypergradient.

Dtype. Numeric hyperparameters are stored in float32, or float64 when the parameters
are float64 (or in ``hyperparam_dtype``), **never in the parameters' low-precision
dtype**: with bfloat16 parameters ``b2 = 0.999`` stays ``0.99900001`` instead of
rounding to ``1.0``, which in optax's ``inject_hyperparams`` (whose default is the
parameters' dtype) makes Adam's second-moment bias correction ``1 - b2**t`` zero and its
first step NaN (optax issue #1414). gbopt's primitives compute in at least float32
whatever the parameters' dtype, so the stored value is the value used.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gbopt import _dtypes, _numerics, _tree, _validate
from gbopt._base import (
    STEP_KEY,
    GradientTransformation,
    as_transform,
    expect_keyed_state,
    sharing_step,
    with_info,
)


class InjectHyperparamsState(NamedTuple):
    """State of a transform built by :func:`inject_hyperparams`.

    Attributes:
      count: updates applied so far (int32, saturating); schedules are read at it, and
        it is the only count of the optimizer inside (its step-dependent pieces read
        ``count + 1`` from here and keep none of their own).
      hyperparams: a dict from hyperparameter name to its current value, an array (a
        scheduled hyperparameter holds the value used by the last update, or its value
        at step 0 before the first one).
      inner_state: the state of the transform the factory builds.
    """

    count: jax.Array
    hyperparams: dict[str, jax.Array]
    inner_state: Any


def _is_dtype(value: Any) -> bool:
    """A dtype (``np.dtype``) or a scalar type such as ``jnp.float32`` or ``np.float16``."""
    if isinstance(value, np.dtype):
        return True
    if isinstance(value, type):
        try:
            jnp.dtype(value)
        except TypeError:
            return False
        return True
    return False


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a numeric hyperparameter (a real number or a numeric array)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)
    return False


def _default_dtype(tree: Any) -> np.dtype:
    """float32, or the widest floating dtype of ``tree`` when that is wider (float64)."""
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(tree):
        leaf_dtype = jnp.result_type(leaf)
        if jnp.issubdtype(leaf_dtype, jnp.floating):
            dtype = _dtypes.promote(dtype, _dtypes.state_dtype(leaf_dtype))
    return dtype


def _is_tuple_of_hyperparams(value: Any) -> bool:
    """A tuple of numbers and schedules, such as ``betas=(0.9, 0.999)`` or ``(schedule, 0.999)``.

    A tuple of integers only (an axis, a shape) is not one: it stays static.
    """
    return (
        isinstance(value, tuple)
        and len(value) > 0
        and all(_is_number(v) and np.ndim(v) == 0 or callable(v) for v in value)
        and not all(isinstance(v, (numbers.Integral, np.integer)) for v in value)
    )


def _scheduled(name: str, schedule: Any, count: jax.Array) -> Any:
    """A schedule's value at ``count``; a tuple's schedules are read element by element."""
    if not isinstance(schedule, tuple):
        return _numerics.schedule_value(schedule, count, name)
    return jnp.stack(
        [
            jnp.asarray(_numerics.schedule_value(v, count, f"{name}[{i}]") if callable(v) else v)
            for i, v in enumerate(schedule)
        ]
    )


def _as_hyperparam(value: Any, dtype) -> jax.Array:
    """``value`` as a strong array: numbers and floats in ``dtype``, integer arrays as they are."""
    if isinstance(value, (np.ndarray, jax.Array)) and jnp.issubdtype(value.dtype, jnp.integer):
        return jnp.asarray(value)
    return jnp.asarray(value, dtype)


def inject_hyperparams(
    factory: Callable[..., Any],
    *,
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    r"""Wraps a factory so that its numeric hyperparameters live in the state as arrays.

    ``inject_hyperparams(factory)(*args, **kwargs)`` takes the arguments of ``factory``
    and sorts each of them (defaults included):

    * a **number** (a Python ``int`` or ``float``, a NumPy or JAX numeric scalar or
      array) is stored in ``state.hyperparams[name]``, and the factory is rebuilt from
      those arrays at every ``update``: change it with :func:`set_hyperparams`;
    * a **schedule** (any callable, unless listed in ``static_args``) is evaluated at
      ``state.count`` (0 at the first update) before each update, and its value is
      stored, so the state always shows the value in use:

      .. math:: h_t = \mathrm{schedule}(t - 1), \qquad t = 1, 2, \dots

    * a **tuple** of numbers and schedules, not all integers (``betas=(0.9, 0.999)``, or
      ``betas=(schedule, 0.999)`` as PyTorch's ``OneCycleLR`` and ``CyclicLR`` schedule
      ``betas[0]``) is stored as one array of its length, each schedule read as above,
      and handed to the factory as a tuple again;
    * anything else (``bool`` flags, ``None``, strings, dtypes such as ``jnp.float32``
      for ``mu_dtype``, masks, names in ``static_args``) is passed to the factory
      unchanged, as a constant of the program.

    Under ``jax.jit`` the stored hyperparameters are traced values: changing them (with
    the same shape and dtype) reuses the compiled step.

    Args:
      factory: a function returning a gradient transformation, e.g. :func:`gbopt.adam`,
        :func:`gbopt.momentum`, or an optax factory.
      static_args: names of arguments to pass as they are even if numeric or callable
        (e.g. a callable that is not a schedule, or an integer that fixes a shape).
      hyperparam_dtype: the dtype hyperparameters are stored in. Default: float32, or
        float64 when the widest floating parameter is float64; never a dtype narrower
        than float32 unless asked for here. Integer arrays are stored as they are.

    Returns:
      A function with the signature of ``factory`` that returns a gbopt
      :class:`~gbopt.GradientTransformation` with state :class:`InjectHyperparamsState`.
      The arguments are checked when it is called, by building the transform once
      (schedules at step 0).

    Raises:
      TypeError: if ``factory`` is not callable, if the arguments do not fit its
        signature, or if ``hyperparam_dtype`` is not a floating dtype.
      ValueError: if ``static_args`` names an argument ``factory`` does not have.

    Example:
      >>> import jax, jax.numpy as jnp, gbopt
      >>> tx = gbopt.inject_hyperparams(gbopt.sgd)(learning_rate=0.1)
      >>> params = {"w": jnp.array([1.0])}
      >>> state = tx.init(params)
      >>> state = gbopt.set_hyperparams(state, learning_rate=0.5)
      >>> updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
      >>> updates["w"]
      Array([-0.5], dtype=float32)

    References:
      optax's ``inject_hyperparams`` (same call shape and state fields); optax issues
      #577, #353 (changing the learning rate without recompiling) and #1414 (bfloat16
      hyperparameters).
    """
    if not callable(factory):
        raise TypeError(
            f"`factory` must be a function that returns a gradient transformation, such as "
            f"gbopt.adam (not gbopt.adam(1e-3)); got {type(factory).__name__}: {factory!r}."
        )
    name = getattr(factory, "__name__", repr(factory))
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(factory)
    unknown = sorted(static - set(signature.parameters))
    if unknown:
        raise ValueError(
            f"`static_args` names {unknown}, which {name} does not take; its arguments are "
            f"{list(signature.parameters)}."
        )
    if hyperparam_dtype is not None:
        hyperparam_dtype = jnp.dtype(hyperparam_dtype)
        if not jnp.issubdtype(hyperparam_dtype, jnp.floating):
            raise TypeError(
                f"`hyperparam_dtype` must be a floating dtype such as jnp.float32; got "
                f"{hyperparam_dtype.name}."
            )

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"inject_hyperparams({name})(...): {e}") from None
        bound.apply_defaults()
        numeric: dict[str, Any] = {}
        schedules: dict[str, Any] = {}
        tuples: set[str] = set()
        for arg, value in bound.arguments.items():
            variadic = signature.parameters[arg].kind in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            )
            if arg in static or variadic:
                continue
            if _is_number(value):
                numeric[arg] = value
            elif _is_dtype(value):  # jnp.float32 is callable, but not a schedule
                continue
            elif callable(value):
                schedules[arg] = value
            elif _is_tuple_of_hyperparams(value):
                tuples.add(arg)
                if all(_is_number(v) for v in value):
                    numeric[arg] = value
                else:
                    schedules[arg] = value
        names = [a for a in bound.arguments if a in numeric or a in schedules]

        def make(hyperparams: dict[str, Any]) -> GradientTransformation:
            b = inspect.BoundArguments(signature, bound.arguments.copy())
            b.arguments.update(hyperparams)
            for arg in tuples:  # stored as one array, given to the factory as a tuple
                b.arguments[arg] = tuple(
                    b.arguments[arg][i] for i in range(len(bound.arguments[arg]))
                )
            return as_transform(factory(*b.args, **b.kwargs), argument=f"{name}(...)")

        def values_at(count, numbers_, dtype_of):
            values = {}
            for arg in names:
                if arg in schedules:
                    values[arg] = _as_hyperparam(
                        _scheduled(arg, schedules[arg], count), dtype_of(arg)
                    )
                else:
                    values[arg] = numbers_[arg]
            return values

        # Build once now, so that a bad value raises here and not at the first update.
        make(values_at(jnp.zeros([], jnp.int32), numeric, lambda arg: jnp.float32))

        def init_fn(params):
            dtype = _default_dtype(params) if hyperparam_dtype is None else hyperparam_dtype
            count = jnp.zeros([], jnp.int32)
            stored = {a: _as_hyperparam(v, dtype) for a, v in numeric.items()}
            hyperparams = values_at(count, stored, lambda arg: dtype)
            try:
                inner = make(hyperparams)
            except (ValueError, TypeError) as e:
                if jnp.dtype(dtype).itemsize >= 4:
                    raise
                raise type(e)(
                    f"{e} The hyperparameters are stored in {jnp.dtype(dtype).name} "
                    f"(hyperparam_dtype), which rounds them: "
                    + ", ".join(f"{a} = {hyperparams[a]}" for a in names)
                    + ". Use hyperparam_dtype=jnp.float32 (the default)."
                ) from e
            with sharing_step():  # one count: the inner optimizer reads this one
                inner_state = inner.init(params)
            return InjectHyperparamsState(count, hyperparams, inner_state)

        def update_fn(updates, state, params=None, **extra_args):
            expect_keyed_state(
                state,
                InjectHyperparamsState,
                "hyperparams",
                names,
                f"inject_hyperparams({name})",
                "hyperparameters",
                "Pass the state this transform's `init` returned (or its last `update`).",
            )
            fallback = _default_dtype(updates) if hyperparam_dtype is None else hyperparam_dtype
            stored = {}
            for arg, value in state.hyperparams.items():
                # Values put in the dict by hand (optax's habit) become strong arrays again.
                if not isinstance(value, (np.ndarray, jax.Array)) or getattr(
                    value, "weak_type", False
                ):
                    value = _as_hyperparam(value, fallback)
                stored[arg] = value

            def dtype_of(arg):
                return jnp.result_type(stored[arg])

            hyperparams = values_at(state.count, stored, dtype_of)
            count = _numerics.safe_increment(state.count)
            updates, inner_state = make(hyperparams).update(
                updates, state.inner_state, params, **{**extra_args, STEP_KEY: count}
            )
            return updates, InjectHyperparamsState(count, hyperparams, inner_state)

        return with_info(
            GradientTransformation(init_fn, update_fn),
            "inject_hyperparams",
            "wrapper",
            hyperparams={a: numeric.get(a, schedules.get(a)) for a in names},
            children=(make(values_at(jnp.zeros([], jnp.int32), numeric, lambda a: jnp.float32)),),
            state=("count", "hyperparams"),
        )

    return build


def _is_inject_state(x: Any) -> bool:
    return isinstance(x, InjectHyperparamsState)


def set_hyperparams(state: Any, *, group: Any = None, **values: Any) -> Any:
    r"""Returns ``state`` with new values for hyperparameters stored by :func:`inject_hyperparams`.

    Each value is cast to the dtype of the stored one and must have its shape, so a
    jitted step called with the new state is not traced again. ``state`` may be the
    state of an injected transform or any state containing exactly one
    (e.g. ``chain(clip_by_global_norm(1.0), inject_hyperparams(adam)(1e-3))``).

    **Parameter groups.** In the state of a :func:`gbopt.multi_transform` whose groups
    are injected transforms (PyTorch's parameter groups), ``set_hyperparams(state,
    lr=...)`` sets the value in every group, as ``for g in opt.param_groups: g["lr"] =
    ...`` does, and ``set_hyperparams(state, group="no_decay", lr=...)`` in one group
    (named by its label)::

        tx = gbopt.multi_transform(
            {"decay": gbopt.inject_hyperparams(gbopt.pytorch.AdamW)(lr=1e-3),
             "no_decay": gbopt.inject_hyperparams(gbopt.pytorch.AdamW)(lr=1e-3, weight_decay=0.0)},
            param_labels)
        state = gbopt.set_hyperparams(state, lr=5e-4)                    # every group
        state = gbopt.set_hyperparams(state, group="no_decay", lr=1e-4)  # one group

    A scheduled hyperparameter is overwritten by its schedule at the next update;
    set only the constant ones.

    Concrete values are checked as gbopt's factories check the argument of that name
    (the state does not know its factory): ``learning_rate`` finite and >= 0; ``b1``,
    ``b2``, ``decay``, ``momentum`` in [0, 1); ``eps``, ``eps_root``, ``weight_decay``
    and initial accumulators finite and >= 0; ``max_norm`` > 0; any other name finite.
    The check is on the value as stored (after the cast to the stored dtype), so a
    ``b2`` that rounds to 1.0 is refused. **Traced values** (``set_hyperparams`` called
    inside ``jax.jit``, ``jax.vmap`` or ``jax.grad``) cannot be inspected and are stored
    unchecked: a bad one gives what the rule computes (ascent for a negative learning
    rate, NaN or inf for ``b2 = 1``); check them before tracing.

    Args:
      state: an optimizer state containing one :class:`InjectHyperparamsState`, or one
        per group of a :func:`gbopt.multi_transform`.
      group: the label of the one group to change; ``None`` (default) changes the
        only injected state, or every group's.
      **values: new values by name, e.g. ``learning_rate=3e-4``: numbers, or arrays of
        the stored shape (traced values are fine, e.g. under ``jax.vmap`` or ``jax.grad``,
        but not checked).

    Returns:
      A new state; ``state`` is not modified.

    Raises:
      TypeError: when no value is given, or a value is not a real number or array.
      ValueError: when ``state`` holds no injected hyperparameters, or several sets of
        them that are not one per group, when ``group`` names no group, when a name is
        not one of them (in every group changed), when a shape differs from the stored one,
        or when a concrete value is outside what the factory accepts (above), naming it.

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> tx = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3)
      >>> state = gbopt.set_hyperparams(tx.init({"w": jnp.zeros(2)}), learning_rate=1e-4, b2=0.99)
      >>> float(state.hyperparams["b2"])
      0.9900000095367432
    """
    if not values:
        raise TypeError(
            "set_hyperparams needs at least one hyperparameter by name, e.g. "
            "`gbopt.set_hyperparams(state, learning_rate=1e-4)`."
        )
    targets = _addressed(state, group)

    def replace(node: Any, label: Any) -> Any:
        new = dict(node.hyperparams)
        for name, value in values.items():
            if name not in new:
                raise ValueError(
                    f"`{name}` is not an injected hyperparameter of this state"
                    + ("" if label is None else f" (group {label!r})")
                    + f"; it has "
                    f"{sorted(new)}. (Arguments passed as static are constants of the program.)"
                )
            if _is_tuple_of_hyperparams(value) and all(_is_number(v) for v in value):
                value = np.asarray(value, np.float64)  # betas=(0.95, 0.999)
            if not (_is_number(value) or isinstance(value, jax.core.Tracer)):
                raise TypeError(
                    f"`{name}` must be a real number or a numeric array; got "
                    f"{type(value).__name__}: {value!r}."
                )
            old = new[name]
            if jnp.shape(value) != jnp.shape(old):
                raise ValueError(
                    f"`{name}` has shape {jnp.shape(value)} but the stored value has shape "
                    f"{jnp.shape(old)}; a new shape would recompile the step. Pass an array of "
                    f"shape {jnp.shape(old)}."
                )
            cast = jnp.asarray(value).astype(jnp.result_type(old))
            if not isinstance(cast, jax.core.Tracer):
                # The value as stored (and used), checked as the factory checks it.
                _validate.hyperparameter(name, cast)
            new[name] = cast
        return node._replace(hyperparams=new)

    return jax.tree_util.tree_map_with_path(
        lambda path, node: replace(node, _group_of(path)) if path in targets else node,
        state,
        is_leaf=_is_inject_state,
    )


def _group_of(path: tuple) -> Any:
    """The label of the innermost ``multi_transform`` group on ``path``, or None."""
    label = None
    for key, nxt in zip(path[:-1], path[1:], strict=True):
        if getattr(key, "name", None) == "inner_states" and hasattr(nxt, "key"):
            label = nxt.key
    return label


def _addressed(state: Any, group: Any) -> list[tuple]:
    """The paths of the injected states that ``set_hyperparams(state, group=...)`` changes.

    One injected state: that one. Several, each in its own ``multi_transform`` group
    (PyTorch's parameter groups): all of them, or the one of ``group``.
    """
    found = [
        path
        for path, leaf in jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_inject_state)[0]
        if _is_inject_state(leaf)
    ]
    if not found:
        raise ValueError(
            f"`state` ({type(state).__name__}) holds no injected hyperparameters. Build the "
            "optimizer with gbopt.inject_hyperparams, e.g. "
            "`gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3)`."
        )
    labels = [_group_of(p) for p in found]
    if group is not None:
        chosen = [p for p, label in zip(found, labels, strict=True) if label == group]
        if not chosen:
            known = sorted({repr(label) for label in labels if label is not None})
            raise ValueError(
                f"`group={group!r}` names no group of injected hyperparameters; the state's "
                f"groups (labels of gbopt.multi_transform) are [{', '.join(known)}]."
            )
        found = chosen
    elif len(found) > 1 and None not in labels and len(set(labels)) == len(labels):
        return found  # one set per parameter group: change every group, as PyTorch's loop
    if len(found) > 1:
        where = ", ".join(f"state{_tree.path_str(p)}" for p in found)
        raise ValueError(
            f"`state` holds {len(found)} sets of injected hyperparameters (at {where}); "
            "set_hyperparams cannot tell which to change. Call it on the sub-state you mean "
            "and put the result back, e.g. with `._replace(...)`."
        )
    return found
