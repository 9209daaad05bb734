"""gbopt.describe: the rule derived from the composition matches each docstring's formula."""

import inspect
import re

import jax.numpy as jnp
import optax
import pytest

import gbopt

GREEK = (
    "alpha beta gamma delta epsilon eta lambda mu nu rho sigma tau theta kappa omega xi zeta"
).split()
PARAMETER_SYMBOLS = {"w", r"\phi", r"\theta", "t"}  # the parameters and the step, not state


def _optimizers():
    """Every public factory of gbopt whose transform says it is an optimizer."""
    found = []
    for name in gbopt.__all__:
        factory = getattr(gbopt, name)
        if not inspect.isfunction(factory):
            continue
        params = inspect.signature(factory).parameters
        if "learning_rate" not in params:
            continue
        required = [
            p
            for p in params.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        assert [p.name for p in required] == ["learning_rate"], (
            f"gbopt.{name} needs arguments besides `learning_rate`: give this test a way to "
            "build it."
        )
        info = factory(learning_rate=1e-3).info
        if info is not None and info.kind == "optimizer":
            found.append(name)
    return found


OPTIMIZERS = _optimizers()


def _docstring_math(factory) -> str:
    """The display-math blocks (``.. math::``) of a docstring, joined."""
    doc = inspect.getdoc(factory)
    blocks = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(".. math::"):
            block = [line.split(".. math::", 1)[1]]
            for nxt in lines[i + 1 :]:
                if nxt.strip() and not nxt.startswith(" "):
                    break
                block.append(nxt)
            blocks.append(" ".join(block))
    return "; ".join(blocks)


def _symbols(math: str) -> set[str]:
    """Greek hyperparameter symbols with their numeric subscripts: {r'\\rho_1', r'\\alpha'}."""
    found = set()
    for m in re.finditer(r"\\(" + "|".join(GREEK) + r")(?![A-Za-z])(_\{?(\d)\}?|_\{(\d),)?", math):
        index = m.group(3) or m.group(4)
        found.add(rf"\{m.group(1)}" + (f"_{index}" if index else ""))
    return found


def _statistics(math: str) -> set[str]:
    """The left-hand sides of the assignments, less the parameters and the step."""
    found = set()
    pieces = math.split(r"\leftarrow")
    for before in pieces[:-1]:
        lhs = re.split(r",|;|\\qquad|\\quad|\\\\", before)[-1]
        found.add(re.sub(r"\s+", " ", lhs).strip())
    return found - PARAMETER_SYMBOLS


def test_every_optimizer_is_found():
    assert {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop_nesterov", "adam"} <= set(
        OPTIMIZERS
    )


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_rule_matches_the_docstring_formula(name):
    factory = getattr(gbopt, name)
    described = gbopt.describe(factory(learning_rate=1e-3))
    doc_math = _docstring_math(factory)
    assert doc_math, f"gbopt.{name}'s docstring has no `.. math::` block"
    rule = " ".join(rhs for _, rhs in described.lines)
    # The same hyperparameters (by symbol and index) ...
    assert _symbols(doc_math) == _symbols(rule) | _symbols(" ".join(described.symbols)), described
    # ... and the same statistics, each kept in a state field of that name.
    statistics = {s for s in described.statistics if s != "t"}
    assert _statistics(doc_math) == statistics, described
    state = factory(learning_rate=1e-3).init({"w": jnp.ones(3)})
    for field in described.statistics.values():
        gbopt.state_get(state, field)


def test_adam_is_bias_corrected_with_one_step_count():
    described = gbopt.describe(gbopt.adam(1e-3, b1=0.8, b2=0.99, eps=1e-7))
    assert described.lines[0] == ("t", "t + 1")
    assert [lhs for lhs, _ in described.lines] == ["t", "s", "r", "w"]
    update = described.lines[-1][1]
    assert r"1 - \rho_1^t" in update and r"1 - \rho_2^t" in update and r"\delta" in update
    assert described.symbols == {
        r"\rho_1": "0.8",
        r"\rho_2": "0.99",
        r"\delta": "1e-07",
        r"\alpha": "0.001",
    }
    assert described.names == {
        r"\rho_1": "b1",
        r"\rho_2": "b2",
        r"\delta": "eps",
        r"\alpha": "learning_rate",
    }
    assert described.statistics == {"s": "mu", "r": "nu", "t": "count"}
    text = str(described)
    assert text.splitlines()[0] == "adam(learning_rate=0.001, b1=0.8, b2=0.99, eps=1e-07)"
    assert "ρ₁ = b1 = 0.8" in text and "1 - ρ₂ᵗ" in text


def test_equal_decays_are_one_symbol():
    described = gbopt.describe(gbopt.adam(1e-3, b1=0.9, b2=0.9))
    assert r"\rho" in described.symbols and r"\rho_1" not in described.symbols


def test_clipping_then_adam_in_that_order():
    tx = gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.adam(1e-3))
    described = gbopt.describe(tx)
    order = [lhs for lhs, _ in described.lines]
    assert order == ["t", r"\tilde g", "s", "r", "w"]
    assert r"\min" in described.lines[1][1] and r"\lVert g \rVert" in described.lines[1][1]
    assert r"\tilde g" in described.lines[2][1]
    assert described.symbols["c"] == "1"
    assert described.name.startswith("chain(clip_by_global_norm(max_norm=1), adam(")


def test_an_optax_transform_is_an_opaque_named_step():
    tx = gbopt.chain(optax.clip_by_global_norm(1.0), gbopt.adam(1e-3))
    described = gbopt.describe(tx)
    assert described.lines[1] == (r"\tilde g", r"\operatorname{optax.clip\_by\_global\_norm}(g)")
    assert "optax.clip_by_global_norm(g)" in str(described)


def test_parameter_groups_give_one_rule_per_label():
    tx = gbopt.multi_transform({"w": gbopt.adam(1e-3), "b": gbopt.sgd(0.1)}, {"w": "w", "b": "b"})
    described = gbopt.describe(tx)
    cases = dict(described.lines)[r"\tilde g"]
    assert r"\text{group b}" in cases and r"\text{group w}" in cases
    assert r"\alpha_{1,t}" in cases and r"\alpha_{2,t}" in cases


def test_notebook_reprs_are_latex_and_markdown():
    described = gbopt.describe(gbopt.rmsprop(1e-2))
    latex = described._repr_latex_()
    assert latex.startswith("$$") and r"\begin{aligned}" in latex and r"\sqrt{r + \delta}" in latex
    markdown = described._repr_markdown_()
    assert "$$" in markdown and "| $\\rho$ | hyperparameter | `decay` = `0.9` |" in markdown
    assert "| $r$ | state | `nu` |" in markdown


def test_pytorch_constructors_are_described():
    for name in gbopt.pytorch.__all__:
        described = gbopt.describe(getattr(gbopt.pytorch, name)())
        assert described.lines[-1][0] == "w"
        state = getattr(gbopt.pytorch, name)().init({"w": jnp.ones(3)})
        for field in described.statistics.values():
            gbopt.state_get(state, field)
