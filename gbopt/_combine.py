"""Combinators: how primitives compose into optimizers.

Three kinds of pieces make every optimizer a plain :func:`chain`:

* **statistics** replace the updates stream by a running statistic of it and keep it in
  their state: :func:`gbopt.trace`, :func:`gbopt.ema`, :func:`gbopt.accumulate_square`,
  :func:`gbopt.bias_correction`;
* **element-wise maps** keep no state: :func:`gbopt.scale`,
  :func:`gbopt.scale_by_learning_rate`, :func:`gbopt.add`, :func:`gbopt.sqrt`;
* **combinators**: :func:`chain` applies transforms in sequence; :func:`divide` sends
  the *same* incoming stream through two sub-pipelines and divides the first output by
  the second. Adam needs two statistics of the same gradient (a first moment above the
  line, a root of the second moment below it); ``divide`` is what makes that a
  composition rather than a monolith.

Then each rule reads like its formula, and where ``eps`` sits is the order of two
primitives::

    adagrad = chain(divide(identity(), chain(accumulate_square(), sqrt(), add(eps))),
                    scale_by_learning_rate(lr))                       # δ + √r
    rmsprop = chain(divide(identity(), chain(accumulate_square(rho), add(eps), sqrt())),
                    scale_by_learning_rate(lr))                       # √(δ + r)

Step count. Several pieces of one optimizer may depend on the step ``t`` (Adam's two
bias corrections and a learning-rate schedule). :func:`with_step_count` keeps the count
once, in the optimizer's state, and hands it to the pieces inside as data (the extra
argument ``gbopt_step``): those pieces then keep no count of their own. Used alone, the
same pieces keep their own. The structure is built, and its arguments validated, once,
when the optimizer is constructed; ``update`` only computes.

Combinators hand ``params`` and every extra keyword argument to each member, so optax
transforms (which may ask for ``value=`` or ``grad=``) work inside them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _numerics, _placement, _tree_checks
from gbopt._base import (
    SHARED_STEP,
    STEP_KEY,
    GradientTransformation,
    StepCountState,
    as_transform,
    declared_powers,
    expect_state,
    sharing_step,
    step_is_shared,
    with_info,
)


def chain(*transforms: Any) -> GradientTransformation:
    r"""Applies transforms in sequence: the updates of one are the input of the next.

    .. math:: u = f_n(\dots f_2(f_1(g)))

    Args:
      *transforms: gbopt or optax gradient transformations.

    Returns:
      A transform whose state is the tuple of the members' states.

    Raises:
      TypeError: if a member is not a gradient transformation (naming its index).
      ValueError: at ``update``, for a state that is not a tuple of one state per member.

    Example:
      >>> import gbopt
      >>> tx = gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.sgd(0.1))
    """
    txs = tuple(as_transform(t, argument=f"transforms[{i}]") for i, t in enumerate(transforms))

    def init_fn(params):
        return tuple(t.init(params) for t in txs)

    def update_fn(updates, state, params=None, **extra_args):
        if type(state) is not tuple or len(state) != len(txs):
            raise ValueError(
                f"chain of {len(txs)} transforms got a state that is not a tuple of "
                f"{len(txs)} member states ({type(state).__name__}). Pass the state that "
                "this chain's `init` returned (or the one its last `update` returned)."
            )
        new_state = []
        for t, s in zip(txs, state, strict=True):
            updates, s = t.update(updates, s, params, **extra_args)
            new_state.append(s)
        return updates, tuple(new_state)

    return with_info(
        GradientTransformation(init_fn, update_fn), "chain", "combinator", children=txs
    )


class DivideState(NamedTuple):
    """State of :func:`divide`: the states of its two branches."""

    numerator: Any
    denominator: Any


def _quotient(a: Any, b: Any) -> jax.Array:
    """``a / b``; for one floating dtype and one shape, ``lax.div`` (no nested jit to trace)."""
    a, b = _dtypes.as_array(a), _dtypes.as_array(b)
    if a.dtype == b.dtype and a.shape == b.shape and jnp.issubdtype(a.dtype, jnp.inexact):
        return jax.lax.div(a, b)
    return a / b


def divide(numerator: Any, denominator: Any) -> GradientTransformation:
    r"""Sends the same updates through two transforms and divides their outputs.

    .. math:: u = \frac{N(g)}{D(g)}

    Both branches see the incoming updates in the statistics dtype (at least float32),
    the quotient is taken there and cast back to the incoming dtype, so that a float16
    ``eps`` in the denominator does not round to zero before the division.

    Args:
      numerator: the transform whose output is divided, e.g. :func:`gbopt.identity`
        (RMSProp, AdaGrad) or ``chain(ema(b1), bias_correction(b1))`` (Adam).
      denominator: the transform to divide by, e.g.
        ``chain(accumulate_square(b2), bias_correction(b2), sqrt(), add(eps))``.

    Returns:
      A transform with state :class:`DivideState`.

    Raises:
      TypeError: if a branch is not a gradient transformation.
      ValueError: at ``update``, for a state that is not a :class:`DivideState`, or
        branches whose outputs differ in structure or shapes.
    """
    num = as_transform(numerator, argument="numerator")
    den = as_transform(denominator, argument="denominator")

    def init_fn(params):
        return DivideState(num.init(params), den.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(state, DivideState, "divide")
        wide = _dtypes.cast_tree(updates)
        n, n_state = num.update(wide, state.numerator, params, **extra_args)
        d, d_state = den.update(wide, state.denominator, params, **extra_args)
        _tree_checks.check_matches(
            d, n, what="the denominator's output", reference_name="numerator's output"
        )
        out = jax.tree.map(
            lambda a, b, g: _dtypes.cast(_quotient(a, b), jnp.result_type(g)), n, d, updates
        )
        return out, DivideState(n_state, d_state)

    return with_info(
        GradientTransformation(init_fn, update_fn), "divide", "combinator", children=(num, den)
    )


def with_step_count(transform: Any) -> GradientTransformation:
    r"""Keeps one step count for every step-dependent piece of a transform.

    The pieces inside that read the step (:func:`gbopt.bias_correction`, a scheduled
    :func:`gbopt.scale_by_learning_rate`, :func:`gbopt.scale_by_schedule`,
    :func:`gbopt.nadam_momentum`, and any statistic built with ``needs_step``) then keep
    no count of their own: the count is kept once, here, and handed to them as data. The
    transform is built once, at construction; ``update`` only computes.

    Nested inside another step owner (an outer ``with_step_count`` or
    :func:`gbopt.inject_hyperparams`), it keeps no count either and passes the outer one on.

    Args:
      transform: the transform, e.g. ``chain(ema(0.9), bias_correction(0.9))``; or, as in
        earlier versions, a function ``build(step) -> transform``, called once with
        :data:`gbopt.SHARED_STEP`.

    Returns:
      A transform with state :class:`StepCountState` (the inner state alone when nested
      in another step owner).

    Raises:
      TypeError: if ``transform`` is neither a transform nor a function returning one.
      ValueError: at ``update``, for a state that is not a :class:`StepCountState`.

    Example:
      >>> import gbopt
      >>> debiased_momentum = gbopt.with_step_count(
      ...     gbopt.chain(gbopt.ema(0.9), gbopt.bias_correction(0.9)))
    """
    if isinstance(transform, tuple) and hasattr(transform, "init"):
        inner = as_transform(transform, argument="transform")
    elif callable(transform):
        inner = as_transform(transform(SHARED_STEP), argument="build(step)")
    else:
        raise TypeError(
            "`transform` must be a gradient transformation (e.g. `gbopt.chain(gbopt.ema(0.9), "
            f"gbopt.bias_correction(0.9))`); got {type(transform).__name__}: {transform!r}."
        )

    powers = declared_powers(inner)

    def init_fn(params):
        if step_is_shared():
            return inner.init(params)
        with sharing_step():
            inner_state = inner.init(params)
        return StepCountState(_placement.zero_count(params), inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, StepCountState) and STEP_KEY in extra_args:
            return inner.update(updates, state, params, **extra_args)  # nested in an owner
        expect_state(state, StepCountState, "with_step_count")
        count = _numerics.safe_increment(state.count)
        with _numerics.shared_powers(count, powers, _dtypes.compute_dtypes(updates)):
            updates, inner_state = inner.update(
                updates, state.inner_state, params, **{**extra_args, STEP_KEY: count}
            )
        return updates, StepCountState(count, inner_state)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "with_step_count",
        "combinator",
        children=(inner,),
        state=("count",),
    )
