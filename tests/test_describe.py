"""gbopt.describe: the rule derived from the composition matches each docstring's formula."""

import inspect
import re
import warnings

import jax.numpy as jnp
import optax
import pytest

import gbopt

GREEK = (
    "alpha beta gamma delta epsilon eta lambda mu nu rho sigma tau theta kappa omega xi zeta"
).split()
PARAMETER_SYMBOLS = {"w", r"\phi", r"\theta", "t"}  # the parameters and the step, not state


# Factories that take a learning rate and need more to be built.
EXTRA_ARGS = {"decay_after_step": {"weight_decay": 1e-2}}


def _build(name):
    """``gbopt.<name>(learning_rate=1e-3)``, quietly (a deprecated alias or a default key warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(gbopt, name)(learning_rate=1e-3, **EXTRA_ARGS.get(name, {}))


def _optimizers():
    """Every public factory of gbopt whose transform says it is an optimizer.

    Each is built from a learning rate (and EXTRA_ARGS); ``test_every_optimizer_is_found``
    pins the ones that must be here.
    """
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
        assert {p.name for p in required} <= {"learning_rate", *EXTRA_ARGS.get(name, ())}, (
            f"gbopt.{name} needs arguments besides `learning_rate`: give this test a way to "
            "build it."
        )
        info = _build(name).info
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


def _tokens(math: str) -> set[str]:
    """Hyperparameter-like symbols: Greek letters, with a numeric or short subscript."""
    found = set()
    pattern = r"\\(" + "|".join(GREEK) + r")(?![A-Za-z])(?:_(\{[^}]*\}|[A-Za-z0-9]))?"
    for m in re.finditer(pattern, math):
        sub = (m.group(2) or "").strip("{}")
        found.add(rf"\{m.group(1)}" + (f"_{sub}" if sub and sub not in ("t", "k") else ""))
    return found


def _argument_symbols(factory) -> dict[str, str]:
    """Each documented argument's symbol: ``b1: :math:`\\rho_1` in [0, 1)`` gives b1 -> rho_1."""
    doc = inspect.getdoc(factory)
    args = doc.split("Args:", 1)[1].split("Returns:", 1)[0] if "Args:" in doc else ""
    out = {}
    for m in re.finditer(r"^  (\w+): :math:`([^`]+)`", args, re.M):
        tokens = _tokens(m.group(2))
        bare = re.fullmatch(r"\\[A-Za-z]+(_\{?\w+\}?)?", m.group(2).strip())
        if bare and len(tokens) == 1:
            out[m.group(1)] = tokens.pop()
    return out


def _statistics(math: str) -> set[str]:
    """The statistics a formula updates: assignments (``s \\leftarrow ...``) and recurrences
    (``m_t = \\beta_1 m_{t-1} + ...``), less the parameters and the step."""
    found = set()
    pieces = math.split(r"\leftarrow")
    for before in pieces[:-1]:
        lhs = re.split(r",|;|\\qquad|\\quad|\\\\", before)[-1]
        found.add(re.sub(r"\s+", " ", lhs).strip())
    for m in re.finditer(r"((?:\\bar |\\tilde )?\\?[A-Za-z]+)_\{t-1\}", math):
        found.add(m.group(1))
    return found - PARAMETER_SYMBOLS


def test_every_optimizer_is_found():
    assert {
        "sgd",
        "momentum",
        "nesterov",
        "adagrad",
        "rmsprop",
        "rmsprop_nesterov",
        "adam",
        "adamw",
        "lion",
        "adafactor",
        "muon",
        "shampoo",
        "soap",
    } <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_rule_matches_the_docstring_formula(name):
    """Structure, not strings: the same arguments in the formula, as many statistics."""
    factory = getattr(gbopt, name)
    tx = _build(name)
    described = gbopt.describe(tx)
    doc_math = _docstring_math(factory)
    assert doc_math, f"gbopt.{name}'s docstring has no `.. math::` block"
    # The arguments whose symbols the docstring's formula uses (those with a value of 0,
    # such as eps_root=0, add nothing and need not appear in the derived rule) ...
    defaults = {k: v.default for k, v in inspect.signature(factory).parameters.items()} | {
        "learning_rate": 1e-3
    }
    symbols = _argument_symbols(factory)
    in_formula = {a for a, sym in symbols.items() if sym in _tokens(doc_math)}
    doc_statistics = _statistics(doc_math)
    # A formula written on Adam's debiased moments (\hat m_t, \hat v_t) without restating
    # them uses their decays b1 and b2 and their two statistics.
    for hat, arg in ((r"\hat m", "b1"), (r"\hat v", "b2")):
        letter = hat[-1]
        defined = re.search(
            rf"(?<![A-Za-z\\])(?<!\\bar )(?<!\\tilde ){letter}(_t)?\s*(=|\\leftarrow)", doc_math
        )
        if hat in doc_math and not defined and arg in symbols:
            in_formula.add(arg)
            doc_statistics.add(hat)
    nonzero = {  # None and 0.0 mean "not used" (adam's eps_root)
        a
        for a in in_formula
        if not (defaults.get(a) is None or (isinstance(defaults[a], float) and defaults[a] == 0))
    }
    # ... are the arguments the derived rule shows, by name (describe pairs each symbol of
    # the chain with the optimizer's argument of that value).
    shown = set(described.names.values())
    # An argument equal to one shown is the same symbol in the derived rule (adabelief's
    # eps_root = eps = 1e-16 is one delta).
    shown_values = {defaults.get(a) for a in shown}
    nonzero = {a for a in nonzero if a in shown or defaults.get(a) not in shown_values}
    assert nonzero <= shown <= in_formula, (nonzero, shown, in_formula, str(described))
    # As many statistics, each kept in a state field reached by that name.
    statistics = {s for s in described.statistics if s != "t"}
    assert len(doc_statistics) == len(statistics), (doc_statistics, str(described))
    groups = _groups(tx)
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)} if groups else {"w": jnp.ones(3)}
    state = tx.init(params)
    for field in set(described.statistics.values()):
        if not groups:
            gbopt.state_get(state, field)
            continue
        # A field of one parameter group, or of each (a step count, a moment): once in
        # every group that has it, and read there by name.
        per_group = _per_group(state, field)
        assert per_group and set(per_group.values()) == {1}, (field, per_group)
        for group in per_group:
            gbopt.state_get(state, field, group=group)


def _groups(tx) -> tuple:
    """The labels of the parameter groups of ``tx`` (a multi_transform inside), or ()."""
    info = tx.info
    while info is not None:
        if info.hyperparams.get("groups"):
            return tuple(info.hyperparams["groups"])
        info = info.children[0].info if len(info.children) == 1 else None
    return ()


def _per_group(state, field) -> dict:
    """How many times ``field`` occurs in each parameter group of ``state``."""
    counts = {}
    for path, _ in optax.tree_utils.tree_get_all_with_path(state, field):
        group = next(
            (
                key.key
                for prev, key in zip(path, path[1:], strict=False)
                if getattr(prev, "name", None) == "inner_states" and hasattr(key, "key")
            ),
            None,
        )
        counts[group] = counts.get(group, 0) + 1
    return counts


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
    assert text.splitlines()[0].startswith("adam(learning_rate=0.001, b1=0.8, b2=0.99, eps=1e-07")
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


@pytest.mark.parametrize("name", ["muon", "shampoo", "soap", "lbfgs", "signum"])
def test_every_kind_of_optimizer_is_described(name):
    """Matrix rules (a wrapper over matrices and the rest), L-BFGS, sign rules: a rule ending
    in the parameter update, naming the state fields of its statistics."""
    tx = _build(name)
    described = gbopt.describe(tx)
    assert described.lines[-1][0] == "w" and str(described)
    assert described.statistics  # each keeps statistics, and describe names their fields
