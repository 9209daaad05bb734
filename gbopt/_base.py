"""The contract: a gradient transformation is a pure ``(init, update)`` pair.

``init(params) -> state`` builds the state for a pytree of parameters.
``update(updates, state, params=None, **extra_args) -> (updates, state)`` maps a
pytree of gradients (the *updates stream*) to a pytree of updates and a new state.
Both are pure functions of arrays, so they compose with ``jax.jit``, ``jax.vmap``,
``jax.grad``, ``jax.lax.scan`` and sharding.

:class:`GradientTransformation` subclasses optax's
``GradientTransformationExtraArgs`` (adding no fields), so optax, Flax's
``TrainState`` and ``nnx.Optimizer`` accept a gbopt transform wherever they accept
an optax one, and never wrap it again.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gbopt import _dtypes, _numerics, _placement, _tree_checks

PyTree = Any
Params = Any
Updates = Any
OptState = Any
ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]


class InitFn(Protocol):
    """Builds the state of a transform from the parameters."""

    def __call__(self, params: Params) -> OptState: ...


class UpdateFn(Protocol):
    """Maps updates and state to new updates and state."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(optax.GradientTransformationExtraArgs):
    """A pure ``(init, update)`` pair; the type every gbopt factory returns.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
        Extra keyword arguments (optax passes ``value=``, ``grad=``, ``value_fn=``) are
        accepted by every gbopt transform and handed on by every combinator.
    """

    # No ``__slots__``: each instance has a ``__dict__`` that holds its ``info``.

    @property
    def info(self) -> TransformInfo | None:
        """What the transform is made of (:class:`TransformInfo`); None if built elsewhere."""
        return self.__dict__.get("info")


EMPTY_STATE: tuple[()] = ()
"""The state of a transform that keeps none: the empty tuple ``()``.

Not a NamedTuple such as ``optax.EmptyState``: JAX flattens and rebuilds a plain tuple
in C++ but rebuilds a NamedTuple by calling Python, which cost about 0.3 µs per stateless
member on every jitted call (``benchmarks/RESULTS.md``, 10 tiny leaves). Code that tests
for "no state" should test ``state == ()``, which ``optax.EmptyState()`` also passes.
"""


def as_transform(tx: Any, *, argument: str = "transform") -> GradientTransformation:
    """Returns ``tx`` as a gbopt transform; optax transforms are accepted as they are.

    Raises:
      TypeError: if ``tx`` is not an ``(init, update)`` pair, naming ``argument``.
    """
    if isinstance(tx, GradientTransformation):
        return tx
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return GradientTransformation(tx.init, tx.update)
    if isinstance(tx, optax.GradientTransformation):
        tx = optax.with_extra_args_support(tx)
        return GradientTransformation(tx.init, tx.update)
    if callable(getattr(tx, "gradient_transformation", None)):
        raise TypeError(
            f"`{argument}` must be a gradient transformation; got a {type(tx).__name__} "
            "(e.g. optax.MultiSteps), which is not one itself: pass its "
            "`.gradient_transformation()`, e.g. "
            "`optax.MultiSteps(tx, every_k_schedule=4).gradient_transformation()`."
        )
    shown = repr(tx)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    raise TypeError(
        f"`{argument}` must be a gradient transformation (an (init, update) pair such as "
        f"gbopt.adam(1e-3) or optax.adam(1e-3)); got {type(tx).__name__}: {shown}. "
        "If you passed a factory such as gbopt.adam, call it: gbopt.adam(learning_rate)."
    )


def expect_state(state: Any, cls: type, who: str) -> None:
    """Raises a ValueError unless ``state`` is a ``cls``, the state ``who`` builds.

    A check in Python at trace time: free at run time under ``jax.jit``.
    """
    if not isinstance(state, cls):
        raise ValueError(
            f"{who} got a state of type {type(state).__name__}, not the {cls.__name__} its "
            "`init` builds. Pass the state that this transform's `init` returned (or the "
            "one its last `update` returned)."
        )


def expect_keyed_state(
    state: Any, cls: type, field: str, keys: Any, who: str, noun: str, fix: str
) -> None:
    """Raises a ValueError unless ``state`` is a ``cls`` whose dict ``field`` has ``keys``.

    For states keyed by name (hyperparameters, labels): a state built for other names
    would be read wrongly. ``noun`` names the keys in the message, ``fix`` ends it.
    """
    if isinstance(state, cls) and set(getattr(state, field)) == set(keys):
        return
    got = sorted(getattr(state, field)) if isinstance(state, cls) else type(state).__name__
    article = "an" if cls.__name__[0] in "AEIOU" else "a"
    raise ValueError(
        f"{who} expects {article} {cls.__name__} with {noun} {sorted(keys)}; got {got}. {fix}"
    )


# ---------------------------------------------------------------------------------------
# What a transform says about itself (for gbopt.describe, error messages and docs).


class TransformInfo(NamedTuple):
    """What a transform is made of; ``tx.info`` on every transform gbopt builds.

    Attributes:
      name: the factory's name, e.g. ``"ema"``, ``"adam"``, ``"chain"``.
      kind: ``"statistic"`` (keeps a running statistic), ``"map"`` (stateless,
        element-wise), ``"combinator"`` (``chain``, ``divide``, ``with_step_count``),
        ``"wrapper"`` (partition, hyperparameters, safety, stacking), ``"optimizer"``
        (a named chain) or ``"transform"`` (anything else, e.g. a global clip).
      hyperparams: the arguments that shape the rule, by name (``{"decay": 0.9}``).
      children: the transforms it is built from, in order.
      math: the rule of this piece in LaTeX, with ``u`` standing for its input (None
        for combinators, whose rule is the composition of their children's).
      state: the names of the statistics it keeps (its state's fields).
    """

    name: str
    kind: str
    hyperparams: dict
    children: tuple
    math: str | None
    state: tuple[str, ...] = ()


def with_info(
    tx: Any,
    name: str,
    kind: str = "transform",
    *,
    hyperparams: dict | None = None,
    children: tuple = (),
    math: str | None = None,
    state: tuple[str, ...] = (),
) -> GradientTransformation:
    """Returns ``tx`` as a gbopt transform carrying a :class:`TransformInfo`."""
    tx = as_transform(tx)
    out = GradientTransformation(tx.init, tx.update)
    out.__dict__["info"] = TransformInfo(
        name, kind, dict(hyperparams or {}), tuple(children), math, tuple(state)
    )
    return out


def named(name: str, tx: Any, **hyperparams: Any) -> GradientTransformation:
    """Marks ``tx`` (usually a :func:`gbopt.chain`) as the optimizer ``name``.

    The state and the rule are ``tx``'s own; :func:`gbopt.describe` shows the name and the
    hyperparameters above the rule of the chain.
    """
    return with_info(tx, name, "optimizer", hyperparams=hyperparams, children=(tx,))


def info_of(tx: Any) -> TransformInfo | None:
    """The :class:`TransformInfo` of ``tx``, or None for a transform built elsewhere (optax)."""
    return getattr(tx, "__dict__", {}).get("info")


def declare_powers(tx: GradientTransformation, *decays: Any) -> GradientTransformation:
    r"""Records on ``tx`` the decays :math:`\beta` whose :math:`1 - \beta^t` its update reads.

    A step owner (:func:`gbopt.with_step_count`) computes them together, as one vector
    (:func:`gbopt._numerics.shared_powers`); the piece still computes any it is not given.
    """
    tx.__dict__["powers"] = tuple(decays)
    return tx


def declared_powers(tx: Any) -> list:
    """The decays declared (:func:`declare_powers`) by ``tx`` and the pieces it is built from."""
    out, stack, seen = [], [tx], set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        out.extend(getattr(t, "__dict__", {}).get("powers", ()))
        info = info_of(t)
        if info is not None:
            stack.extend(info.children)
    return out


# ---------------------------------------------------------------------------------------
# The step count: kept once, by a step owner, and handed to the pieces that need it.

_STEP_SHARED: contextvars.ContextVar[bool] = contextvars.ContextVar("gbopt_step", default=False)

STEP_KEY = "gbopt_step"
"""The extra keyword argument that carries the 1-based step from a step owner
(:func:`gbopt.with_step_count`, :func:`gbopt.inject_hyperparams`) to the pieces inside it."""


@contextlib.contextmanager
def sharing_step():
    """Inside it, step-dependent pieces being initialised keep no count of their own.

    A step owner calls its members' ``init`` inside this context and later passes the step
    to their ``update`` as the extra argument :data:`STEP_KEY`; a piece initialised
    outside any owner keeps its own count (a :class:`StepCountState`).
    """
    token = _STEP_SHARED.set(True)
    try:
        yield
    finally:
        _STEP_SHARED.reset(token)


def step_is_shared() -> bool:
    """Whether an ``init`` now running is inside a step owner (:func:`sharing_step`)."""
    return _STEP_SHARED.get()


class StepCountState(NamedTuple):
    """The state of a step owner: one count for every step-dependent piece inside it.

    Attributes:
      count: updates applied so far (int32, saturating); the step of the next update is
        ``count + 1``.
      inner_state: the state of the transform inside.
    """

    count: jax.Array
    inner_state: Any


def _owning_step(inner_init: Callable, inner_update: Callable, who: str):
    """``(init, update)`` for a piece that needs the step: shared in an owner, else its own.

    ``inner_update(updates, state, params, step, **extra_args)`` gets the 1-based step.
    """

    def init_fn(params):
        if step_is_shared():
            return inner_init(params)
        with sharing_step():
            inner = inner_init(params)
        return StepCountState(_placement.zero_count(params), inner)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, StepCountState) and STEP_KEY in extra_args:  # in an owner
            return inner_update(updates, state, params, extra_args[STEP_KEY], **extra_args)
        expect_state(state, StepCountState, who)
        count = _numerics.safe_increment(state.count)
        updates, inner = inner_update(
            updates, state.inner_state, params, count, **{**extra_args, STEP_KEY: count}
        )
        return updates, StepCountState(count, inner)

    return init_fn, update_fn


class SharedStep:
    """What :func:`gbopt.with_step_count` passes to a ``build(step)`` function.

    Pieces built with ``step=`` set to it read the step from their owner; it is there so
    that code written for ``with_step_count(lambda t: ...)`` keeps working.
    """

    def __repr__(self) -> str:
        return "gbopt.SHARED_STEP"


SHARED_STEP = SharedStep()


def check_step_argument(who: str, step: Any) -> None:
    """Refuses a ``step=`` that is not the owner's marker (the step always comes as data)."""
    if step is not None and step is not SHARED_STEP:
        raise TypeError(
            f"`step` of {who} is set by gbopt.with_step_count, which passes the step count "
            f"as data; got {type(step).__name__}. Build the piece inside "
            "`gbopt.with_step_count(...)` (or leave `step` out: alone, it keeps its own count)."
        )


# ---------------------------------------------------------------------------------------
# The kit: a leaf rule becomes a statistic, an element-wise function becomes a map.


def _storage(spec: Any, param_dtype: Any, real: bool = False, follows: bool = False) -> np.dtype:
    """The dtype a statistic is stored in for a parameter of ``param_dtype``.

    The policy is :func:`gbopt._dtypes.storage`'s: ``spec`` None gives the parameter's
    dtype for a statistic that ``follows`` the parameters (a first moment) and that dtype
    widened to at least float32 for any other; a statistic that is ``real`` for complex
    parameters (:math:`|g|^2`) is stored in the real dtype of its precision; a complex
    statistic asked in a real dtype is stored as pairs of that dtype (:func:`_pairs`).
    """
    return _dtypes.storage(jnp.dtype(param_dtype), _spec(spec), real=real, follows=follows)[0]


def _spec(spec: Any) -> np.dtype | None:
    return None if spec is None else jnp.dtype(spec)


def _pairs(spec: Any, param_dtype: Any, real: bool = False, follows: bool = False) -> bool:
    """Whether the statistic is complex but stored as (real, imaginary) pairs of ``spec``."""
    return _dtypes.storage(jnp.dtype(param_dtype), _spec(spec), real=real, follows=follows)[1]


def _load(s: jax.Array, wide: Any, paired: bool) -> jax.Array:
    """A stored statistic in the compute dtype of a leaf computed in ``wide``.

    Pairs are reassembled into the complex value; a complex statistic of a real
    parameter (a complex storage dtype asked for) gives its real part.
    """
    if paired:
        c = _dtypes.from_pairs(s, _dtypes.promote(_dtypes.state_dtype(s.dtype), jnp.complex64))
        return _dtypes.cast(c, _dtypes.promote(c.dtype, wide))
    if jnp.issubdtype(s.dtype, jnp.complexfloating) and not jnp.issubdtype(
        wide, jnp.complexfloating
    ):
        s = jnp.real(s)
    return _dtypes.cast(s, _compute_dtype(s.dtype, wide))


def _store(new: jax.Array, s: jax.Array, paired: bool) -> jax.Array:
    """A new statistic in the layout and dtype of the stored one ``s``."""
    if paired:
        return _dtypes.to_pairs(new, s.dtype)
    return _dtypes.cast(new, s.dtype)


def _is_paired(u: jax.Array, s: jax.Array, name: str, field: str, shaped: bool) -> bool:
    """Whether the stored ``s`` holds the complex statistic of ``u`` as pairs; checks it.

    ``shaped``: the statistic is shaped like the parameter (then ``s`` must be ``u``'s
    shape and 2); otherwise only its last axis is known to be 2.
    """
    if not (
        jnp.issubdtype(u.dtype, jnp.complexfloating)
        and not jnp.issubdtype(s.dtype, jnp.complexfloating)
    ):
        return False
    if np.shape(s) != (*np.shape(u), 2) if shaped else np.shape(s)[-1:] != (2,):
        raise ValueError(
            f"{name}: the state's `{field}` holds real values of shape {np.shape(s)}, but the "
            f"updates are complex ({u.dtype}); a complex statistic stored in a real dtype "
            "keeps its real and imaginary parts on a last axis of size 2. Build the state "
            "with `init` from the complex parameters."
        )
    return True


def _is_complex(x: Any) -> bool:
    return getattr(getattr(x, "dtype", None), "kind", "") == "c"


def _unpaired(updates: Any, reference: Any) -> Any:
    """``reference`` with each leaf stored as pairs for a complex update shown unpaired.

    For the shape check against the updates: a paired leaf has one more axis, of size 2.
    Real updates (the common case) return ``reference`` after one flatten of ``updates``.
    """
    u_leaves, u_def = jax.tree.flatten(updates)
    if not any(_is_complex(u) for u in u_leaves):
        return reference
    r_leaves, r_def = jax.tree.flatten(reference)
    if u_def != r_def:
        return reference

    def view(u, r):
        if (
            _is_complex(u)
            and not _is_complex(r)
            and np.ndim(r) == np.ndim(u) + 1
            and np.shape(r)[-1] == 2
        ):
            return np.broadcast_to(np.zeros((), bool), np.shape(r)[:-1])
        return r

    return r_def.unflatten([view(u, r) for u, r in zip(u_leaves, r_leaves, strict=True)])


def check_storage_dtype(name: str, dtype: Any) -> None:
    """Raises a TypeError unless ``dtype`` is None or a floating-point (or complex) dtype."""
    if dtype is None:
        return
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not jnp.issubdtype(resolved, jnp.inexact):
        raise TypeError(
            f"`{name}` must be a floating-point dtype (e.g. jnp.bfloat16, jnp.float32) or "
            f"None (the default storage: the parameters' dtype for a first moment, at least "
            f"float32 for any other statistic); got {dtype!r}. Statistics are fractions: an "
            "integer or boolean dtype cannot hold them."
        )


def _widest(params: Any) -> np.dtype:
    """The widest real statistics dtype of the parameters (float32 at least)."""
    dtypes = [
        _dtypes.real_dtype(_dtypes.state_dtype(jnp.result_type(x))) for x in jax.tree.leaves(params)
    ]
    return _dtypes.result_type(*dtypes) if dtypes else jnp.dtype(jnp.float32)


def _compute_dtype(stored: Any, like: Any) -> np.dtype:
    """The dtype a stored statistic is computed in: widened, and at least ``like``'s precision."""
    wide = _dtypes.state_dtype(stored)
    if jnp.issubdtype(wide, jnp.complexfloating):
        return _dtypes.promote(wide, like)
    return _dtypes.promote(wide, _dtypes.real_dtype(like))


def _context(
    step: Any, prepare: Callable | None, cache: dict, dtype: Any, shared: dict | None = None
) -> dict:
    """A leaf rule's keywords: ``pre`` (from ``prepare``, once per dtype) or ``step``."""
    ctx = {} if step is None else {"step": step}
    if prepare is None:
        return ctx
    if dtype not in cache:
        cache[dtype] = prepare(dtype, **ctx, **(shared or {}))
    return {"pre": cache[dtype]}


def statistic(
    name: str,
    state_type: type,
    rule: Callable[..., tuple],
    *,
    init: float | tuple | Callable = 0.0,
    dtype: Any = None,
    real: tuple[str, ...] = (),
    follows_params: tuple[str, ...] = (),
    shared: tuple[str, ...] = (),
    needs_step: bool = False,
    needs_params: bool = False,
    prepare: Callable[..., Any] | None = None,
    hyperparams: dict | None = None,
    math: str | None = None,
) -> GradientTransformation:
    r"""Turns a leaf rule into a transform that keeps a running statistic of the updates.

    Everything but the rule is done here, once for every statistic: the state type check,
    the check that the updates have the state's structure and shapes, the initial state
    (filled arrays that follow the parameters' sharding), the dtype policy (the rule
    computes in at least float32; each statistic is stored in its storage dtype and the
    output returned in the incoming dtype), and the step count.

    Args:
      name: the factory's name, used in every message (e.g. ``"ema"``).
      state_type: a NamedTuple class, one field per statistic; each holds one tree.
      rule: ``rule(u, *stats, **ctx) -> (out, *new_stats)`` for one leaf. ``u`` and the
        statistics arrive in the compute dtype (the wider of the parameter's dtype and
        float32; complex stays complex). ``ctx`` holds ``param`` when ``needs_params``,
        and either ``pre`` (the value of ``prepare`` for this leaf's compute dtype) when
        ``prepare`` is given, or ``step`` (the 1-based step, int32) when ``needs_step``.
      init: the initial value of every statistic (or one per field), or a function
        ``init(param) -> tuple`` of one array per field, for statistics not shaped like
        the parameter (factored moments, Kronecker factors).
      dtype: the storage dtype of every statistic (or one per field): None for the
        default below, or a floating or complex dtype (storage narrows; the rule still
        computes in at least float32). A real dtype for a field that is complex (a
        complex parameter's first moment) stores its real and imaginary parts on a
        trailing axis of size 2 and the rule sees the complex value; a complex dtype for
        a real parameter's field is stored as asked and the rule sees its real part.
      real: the fields that hold real values for a complex parameter (a second moment
        :math:`|g|^2`); the others are complex like the parameter.
      follows_params: the fields stored by default in the parameter's own dtype, also
        bfloat16 and float16: statistics linear in the updates (first moments, momentum,
        copies of a previous update), whose rounding is relative to themselves, as
        optax stores ``mu``. Every other field is stored by default in the parameter's
        dtype widened to at least float32: second moments, sums of squares, maxima and
        step sizes, where a narrow dtype would stop the statistic from moving (Adam's
        ``nu`` with ``b2 = 0.999`` changes by :math:`10^{-3}` of itself, less than half a
        bfloat16 ulp). See :func:`gbopt._dtypes.storage`.
      shared: the fields that hold one real scalar for the whole tree rather than one
        array per parameter (NAdam's momentum product): initialised from ``init``, stored
        in the widest statistics dtype of the parameters, replicated where they live;
        every leaf's rule sees it, and the first leaf's new value is kept.
      needs_step: the rule reads ``step``: shared with an enclosing step owner, or kept
        in a :class:`StepCountState` around the statistics when used alone.
      needs_params: the rule reads ``param``; ``update`` must then be given ``params``.
      prepare: ``prepare(dtype, step=..., **shared) -> value`` (``step`` when
        ``needs_step``; each ``shared`` field's current value, by name), computed once per
        compute dtype and update, not per leaf: scalars derived from the step, the
        hyperparameters or a shared statistic (a schedule's value, a bias correction,
        NAdam's coefficients), which would otherwise be traced and compiled once per leaf.
      hyperparams: the hyperparameters, by name, for :func:`gbopt.describe`.
      math: the rule in LaTeX (``u`` the input), for :func:`gbopt.describe`.

    Returns:
      A :class:`GradientTransformation` with state ``state_type`` (inside a
      :class:`StepCountState` when it needs the step and keeps its own).

    Example (a statistic is its leaf rule and nothing else)::

        class EmaState(NamedTuple):
            mu: Any

        def ema(decay):
            def rule(u, mu):
                mu = mu + (1 - decay) * (u - mu)
                return mu, mu          # (output, new statistic)
            return statistic("ema", EmaState, rule)
    """
    fields = state_type._fields
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,) * len(fields)
    for field, spec in zip(fields, dtypes, strict=True):
        check_storage_dtype(f"{field}_dtype" if len(fields) > 1 else "dtype", spec)
    unknown = [f for f in (*real, *follows_params, *shared) if f not in fields]
    if unknown:
        raise ValueError(
            f"{name}: `real`, `follows_params` and `shared` must name fields of "
            f"{state_type.__name__} {fields}; got {unknown}."
        )
    shaped_like_params = not callable(init)
    fills = init if isinstance(init, tuple) else (init,) * len(fields)
    layouts = [{"real": field in real, "follows": field in follows_params} for field in fields]

    def init_stats(params):
        if shaped_like_params:
            trees = [
                _placement.scalar_like(params, fill, _widest(params))
                if field in shared
                else _placement.full_like(
                    params,
                    fill,
                    functools.partial(_storage, spec, **layout),
                    pairs_fn=functools.partial(_pairs, spec, **layout),
                )
                for field, fill, spec, layout in zip(fields, fills, dtypes, layouts, strict=True)
            ]
            return state_type(*trees)
        _placement.check_float_params(params)
        leaves, treedef = jax.tree.flatten(params)

        def one(p):
            arrays = init(p)
            dtype = jnp.result_type(p)
            return tuple(
                _dtypes.to_pairs(a, _storage(spec, dtype, **layout))
                if _pairs(spec, dtype, **layout)
                else _dtypes.cast(a, _storage(spec, dtype, **layout))
                for a, spec, layout in zip(arrays, dtypes, layouts, strict=True)
            )

        columns = list(zip(*[one(p) for p in leaves], strict=True)) or [()] * len(fields)
        return state_type(*(treedef.unflatten(list(c)) for c in columns))

    def update_stats(updates, stats, params, step, **extra_args):
        del extra_args
        expect_state(stats, state_type, name)
        reference = getattr(stats, fields[0])
        if shaped_like_params and not layouts[0]["real"] and fields[0] not in shared:
            reference = _unpaired(updates, reference)
        _tree_checks.check_matches(
            updates,
            reference,
            what="updates",
            reference_name=f"state's `{fields[0]}`",
            check_shapes=shaped_like_params,
        )
        others = []
        if needs_params:
            if params is None:
                raise ValueError(
                    f"{name} needs the parameters: call `update(updates, state, params)`."
                )
            others.append(params)
        cache: dict = {}

        def leaf(u, *rest):
            u = _dtypes.as_array(u)
            stats_ = rest[: len(fields)]
            wide = _compute_dtype(u.dtype, stats_[0].dtype) if stats_ else u.dtype
            paired = [
                not layout["real"]
                and f not in shared
                and _is_paired(u, s, name, f, shaped_like_params)
                for s, f, layout in zip(stats_, fields, layouts, strict=True)
            ]
            args = [_load(s, wide, p) for s, p in zip(stats_, paired, strict=True)]
            now = {f: a for f, a in zip(fields, args, strict=True) if f in shared}
            ctx = _context(step if needs_step else None, prepare, cache, wide, now)
            if needs_params:
                ctx["param"] = rest[len(fields)]
            out, *new = rule(_dtypes.cast(u, wide), *args, **ctx)
            new = [_store(n, s, p) for n, s, p in zip(new, stats_, paired, strict=True)]
            return (_dtypes.cast(out, u.dtype), *new)

        leaves, treedef = jax.tree.flatten(updates)
        columns = [
            [getattr(stats, f)] * len(leaves)
            if f in shared
            else treedef.flatten_up_to(getattr(stats, f))
            for f in fields
        ]
        columns += [treedef.flatten_up_to(o) for o in others]
        results = [leaf(*args) for args in zip(leaves, *columns, strict=True)]
        out = treedef.unflatten([r[0] for r in results])
        new = [
            (results[0][1 + i] if results else getattr(stats, f))
            if f in shared
            else treedef.unflatten([r[1 + i] for r in results])
            for i, f in enumerate(fields)
        ]
        return out, state_type(*new)

    info = {
        "hyperparams": hyperparams,
        "math": math,
        "state": fields,
    }
    if not needs_step:

        def init_fn(params):
            return init_stats(params)

        def update_fn(updates, state, params=None, **extra_args):
            return update_stats(updates, state, params, None, **extra_args)

        return with_info(GradientTransformation(init_fn, update_fn), name, "statistic", **info)
    init_fn, update_fn = _owning_step(init_stats, update_stats, name)
    return with_info(GradientTransformation(init_fn, update_fn), name, "statistic", **info)


def elementwise(
    name: str,
    fn: Callable[..., jax.Array],
    *,
    needs_step: bool = False,
    needs_params: bool = False,
    prepare: Callable[..., Any] | None = None,
    hyperparams: dict | None = None,
    math: str | None = None,
) -> GradientTransformation:
    r"""Turns an element-wise function into a stateless transform (a map).

    ``fn(u, **ctx) -> out`` is applied to every leaf in the compute dtype (the leaf's dtype
    widened to at least float32) and the result cast back to the leaf's dtype. ``ctx``
    holds ``step``, ``param`` and ``pre`` as for :func:`statistic`. A map that needs the
    step shares its owner's or keeps its own count in a :class:`StepCountState`.

    Example::

        def add(value):
            return elementwise("add", lambda u: u + value, hyperparams={"value": value},
                               math=r"u + \delta")
    """

    def apply(updates, params, step):
        if needs_params and params is None:
            raise ValueError(f"{name} needs the parameters: call `update(updates, state, params)`.")
        cache: dict = {}

        def leaf(u, *param):
            u = _dtypes.as_array(u)
            wide = _dtypes.state_dtype(u.dtype)
            ctx = _context(step if needs_step else None, prepare, cache, wide)
            if needs_params:
                ctx["param"] = param[0]
            return _dtypes.cast(fn(_dtypes.cast(u, wide), **ctx), u.dtype)

        if needs_params:
            return jax.tree.map(leaf, updates, params)
        return jax.tree.map(leaf, updates)

    info = {"hyperparams": hyperparams, "math": math}
    if not needs_step:

        def init_fn(params):
            del params
            return EMPTY_STATE

        def update_fn(updates, state, params=None, **extra_args):
            del extra_args
            return apply(updates, params, None), state

        return with_info(GradientTransformation(init_fn, update_fn), name, "map", **info)

    def init_inner(params):
        del params
        return EMPTY_STATE

    def update_inner(updates, state, params, step, **extra_args):
        del extra_args
        return apply(updates, params, step), state

    init_fn, update_fn = _owning_step(init_inner, update_inner, name)
    return with_info(GradientTransformation(init_fn, update_fn), name, "map", **info)


# ---------------------------------------------------------------------------------------
# Pieces that depend on the parameters' tree cannot run on stacked leaves.

_INSIDE = contextvars.ContextVar("gbopt_inside_stack_leaves", default=False)


def refuse_inside(who: str) -> None:
    """Raises if called while a :func:`gbopt.stack_leaves` transform runs its inner transform.

    For transforms that depend on the parameters' structure (names, paths, per-leaf
    shapes): inside :func:`gbopt.stack_leaves` they would see the stacked view instead.
    """
    if _INSIDE.get():
        raise ValueError(
            f"{who} depends on the parameters' tree (paths, per-parameter shapes), but it "
            "runs inside gbopt.stack_leaves, whose inner transform sees leaves stacked in "
            "groups. Put stack_leaves inside it instead, e.g. "
            "gbopt.multi_transform({'a': gbopt.stack_leaves(gbopt.adam(1e-3)), ...}, labels) "
            "or gbopt.chain(gbopt.add_decayed_weights(1e-4, mask), "
            "gbopt.stack_leaves(gbopt.adam(1e-3)))."
        )


@contextlib.contextmanager
def inside_stack_leaves():
    """Marks that the inner transform of :func:`gbopt.stack_leaves` is running."""
    token = _INSIDE.set(True)
    try:
        yield
    finally:
        _INSIDE.reset(token)
