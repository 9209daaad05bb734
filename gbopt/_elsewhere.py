"""Where to find what optax users reach for and gbopt does not re-implement.

``gbopt.<name>`` for such a name raises an AttributeError that says where it is and that
optax's wrappers accept gbopt transforms as they are (every gbopt transform is an optax
``GradientTransformationExtraArgs``), and :func:`gbopt.chain` accepts optax's.
"""

from __future__ import annotations

# name -> (where it is, what it does, an example with a gbopt transform or None)
_KNOWN = {
    "MultiSteps": (
        "optax.MultiSteps",
        "gradient accumulation over k steps; its `accumulator_dtype` (e.g. jnp.float64) "
        "keeps the parameters' precision",
        "optax.MultiSteps(gbopt.adam(1e-3), every_k_schedule=4)",
    ),
    "apply_if_finite": (
        "optax.apply_if_finite",
        "skips updates with non-finite gradients; gbopt's own counterpart is gbopt.skip_nonfinite",
        "optax.apply_if_finite(gbopt.adam(1e-3), max_consecutive_errors=5)",
    ),
    "lookahead": (
        "optax.lookahead",
        "Lookahead's slow and fast weights",
        "optax.lookahead(gbopt.adam(1e-3), sync_period=6, slow_step_size=0.5)",
    ),
    "contrib": (
        "optax.contrib",
        "optax's contributed optimizers and wrappers: Prodigy, Schedule-Free, Muon, SAM, "
        "reduce_on_plateau, ...",
        "optax.contrib.schedule_free(gbopt.sgd(1.0), learning_rate=1.0)",
    ),
    "scale_by_zoom_linesearch": (
        "optax.scale_by_zoom_linesearch",
        "the zoom line search, gbopt.lbfgs's default",
        "gbopt.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30))",
    ),
    "scale_by_backtracking_linesearch": (
        "optax.scale_by_backtracking_linesearch",
        "the backtracking (Armijo) line search",
        "gbopt.chain(gbopt.sgd(1.0), optax.scale_by_backtracking_linesearch(15))",
    ),
}


def missing(name: str) -> AttributeError:
    """The AttributeError for ``gbopt.<name>``: where to find it, if optax has it."""
    import optax

    if name in _KNOWN:
        where, what, example = _KNOWN[name]
    elif not name.startswith("_") and hasattr(optax, name):
        where, what, example = f"optax.{name}", None, None
    else:
        return AttributeError(f"module 'gbopt' has no attribute {name!r}")
    detail = f" ({what})" if what else ""
    usage = f", e.g. `{example}`" if example else ""
    return AttributeError(
        f"gbopt does not re-implement {name}{detail}: use {where}. optax's wrappers accept "
        "gbopt transforms as they are (every gbopt transform is an optax "
        f"GradientTransformationExtraArgs) and gbopt.chain accepts optax's{usage}."
    )
