r"""``gbopt.describe``: the update rule of a transform, derived from its composition.

No rule is stored per optimizer. Each primitive states its own piece in ``tx.info.math``
(LaTeX, ``u`` its input): a map is an expression in ``u`` (``\sqrt{u}``), a statistic a
list of assignments ``s \leftarrow ...; u \leftarrow s`` whose last one gives its output.
The combinators compose the pieces: :func:`gbopt.chain` substitutes each output into the
next piece, :func:`gbopt.divide` puts its two branches over a fraction bar,
:func:`gbopt.with_step_count` adds :math:`t \leftarrow t + 1`, and parameter groups give
one rule per group. A hyperparameter symbol that two pieces use with different values
(Adam's two :math:`\rho`) gets a subscript in order of appearance; one used with the same
value (the :math:`\rho` of an average and of its bias correction) stays one symbol.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Any

import numpy as np

from gbopt._base import info_of

_SYMBOL = re.compile(r"\\[A-Za-z]+(?:_\{?\d+\}?)?|[A-Za-z](?:_\{?\d+\}?)?")
_NOT_SYMBOLS = {
    r"\frac", r"\tfrac", r"\sqrt", r"\leftarrow", r"\quad", r"\qquad", r"\max", r"\min",
    r"\left", r"\right", r"\prod", r"\sum", r"\le", r"\ge", r"\bar", r"\hat", r"\tilde",
    r"\cdot", r"\operatorname", r"\mathrm", r"\text", r"\lVert", r"\rVert", r"\|", r"\dots",
    r"\odot", r"\mathbf", r"\sign", r"\log", r"\exp", r"\begin", r"\end",
}  # fmt: skip
_INPUT = re.compile(r"(?<![\\A-Za-z])u(?![A-Za-z])")
_GREEK_TEXT = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "eta": "η",
    "lambda": "λ", "mu": "μ", "nu": "ν", "rho": "ρ", "sigma": "σ", "tau": "τ", "phi": "φ",
    "psi": "ψ", "theta": "θ", "kappa": "κ", "omega": "ω", "xi": "ξ", "zeta": "ζ",
}  # fmt: skip
_NAME_SYMBOLS = {
    "learning_rate": r"\alpha", "decay": r"\rho", "momentum": r"\mu", "eps": r"\delta",
    "value": r"\delta", "step_size": "c", "max_norm": "c", "weight_decay": r"\lambda",
    "b1": r"\beta_1", "b2": r"\beta_2", "b3": r"\beta_3", "trust_coefficient": r"\eta",
    "threshold": r"\tau", "eta": r"\eta", "gamma": r"\gamma", "alpha": r"\alpha",
    "beta": r"\beta", "beta1": r"\beta_1", "beta2": r"\beta_2",
    "diagonal_epsilon": r"\delta", "matrix_epsilon": r"\epsilon",
}  # fmt: skip


@dataclasses.dataclass
class Description:
    r"""The update rule of a transform, as :func:`gbopt.describe` derives it.

    ``str()`` is plain text for terminals; in a notebook the object shows itself as LaTeX
    (``_repr_latex_``) or markdown (``_repr_markdown_``).

    Attributes:
      name: the transform's name and hyperparameters, e.g.
        ``"adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08)"``.
      lines: the rule as LaTeX assignments ``(left, right)``, in the order they run; the
        last is the parameter update ``w \leftarrow ...``.
      symbols: each hyperparameter symbol (LaTeX) and the value it stands for.
      names: the optimizer's argument each symbol stands for, where it is known
        (``{r"\rho_1": "b1"}``).
      statistics: each statistic's symbol (LaTeX) and the state field that holds it
        (``"mu"``, ``"nu"``, ``"count"``), as :func:`gbopt.state_get` reads it.
    """

    name: str
    lines: list[tuple[str, str]]
    symbols: dict[str, str]
    statistics: dict[str, str]
    names: dict[str, str] = dataclasses.field(default_factory=dict)

    def latex(self) -> str:
        """The rule as one LaTeX ``aligned`` block."""
        rows = [rf"{lhs} &\leftarrow {rhs}" for lhs, rhs in self.lines]
        return r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"

    def legend(self) -> str:
        """Symbols and statistics in words (plain text)."""
        parts = []
        if self.symbols:
            parts.append(
                "where "
                + ", ".join(
                    f"{_text(s)} = {self.names[s] + ' = ' if s in self.names else ''}{v}"
                    for s, v in self.symbols.items()
                )
            )
        if self.statistics:
            parts.append(
                "state: "
                + ", ".join(f"{_text(s)} = {field}" for s, field in self.statistics.items())
            )
        return "\n".join(parts)

    def __str__(self) -> str:
        body = "\n".join(f"  {_text(lhs)} ← {_text(rhs)}" for lhs, rhs in self.lines)
        return f"{self.name}\n{body}\n{self.legend()}".rstrip()

    def __repr__(self) -> str:
        return str(self)

    def _repr_latex_(self) -> str:
        return f"$$ {self.latex()} $$"

    def _repr_markdown_(self) -> str:
        rows = []
        for symbol, value in self.symbols.items():
            name = f"`{self.names[symbol]}` = " if symbol in self.names else ""
            rows.append(f"| ${symbol}$ | hyperparameter | {name}`{value}` |")
        for symbol, field in self.statistics.items():
            rows.append(f"| ${symbol}$ | state | `{field}` |")
        table = "\n".join(["| symbol | | |", "|:--|:--|:--|", *rows]) if rows else ""
        return f"**`{self.name}`**\n\n$$\n{self.latex()}\n$$\n\n{table}".rstrip()


def describe(tx: Any) -> Description:
    r"""The update rule of a gbopt transform, derived from the primitives it is made of.

    Every primitive states its own piece (``tx.info.math``) and the combinators compose
    them: in sequence for :func:`gbopt.chain`, a fraction for :func:`gbopt.divide`, the
    step :math:`t` for :func:`gbopt.with_step_count`, one rule per group for
    :func:`gbopt.multi_transform` and :func:`gbopt.masked`. A transform built elsewhere
    (an optax transform inside a chain) is an opaque, named step.

    Args:
      tx: any gradient transformation (gbopt's or optax's).

    Returns:
      A :class:`Description`: plain text with ``str()``, LaTeX or markdown in a notebook,
      and its parts (``lines``, ``symbols``, ``statistics``) as data.

    Example:
      >>> import gbopt
      >>> print(gbopt.describe(gbopt.momentum(0.1, 0.9)))
      momentum(learning_rate=0.1, momentum=0.9)
        v ← μ v - α_t g
        w ← w + v
      where α = learning_rate = 0.1, μ = momentum = 0.9
      state: v = trace
    """
    builder = _Builder()
    root = info_of(tx)
    if root is None or root.kind != "optimizer":
        builder.title = _opaque_name(tx)
    out = builder.walk(tx, "g")
    lines = builder.lines + [("w", _simplify("w + " + out))]
    if builder.uses_step:
        lines.insert(0, ("t", "t + 1"))
        builder.statistics.setdefault("t", "count")
    values = list(builder.symbol_values())
    return Description(
        name=builder.title or _opaque_name(tx),
        lines=lines,
        symbols={s: _format(v) for s, v in values},
        statistics=builder.statistics,
        names=_argument_names(values, builder.optimizer_hyperparams),
    )


def _argument_names(values: list[tuple[str, Any]], hyperparams: dict) -> dict[str, str]:
    """Pairs each symbol with the optimizer argument of the same value (and usual symbol)."""
    names: dict[str, str] = {}
    free = dict(hyperparams)
    for prefer_symbol in (True, False):
        for symbol, value in values:
            if symbol in names:
                continue
            base = symbol.split("_")[0]
            for name, arg in list(free.items()):
                if isinstance(arg, bool):  # a flag (nesterov=True) is not the number 1
                    continue
                if not _same(arg, value) and not (callable(arg) and arg is value):
                    continue
                if prefer_symbol and _NAME_SYMBOLS.get(name) != base:
                    continue
                names[symbol] = name
                del free[name]
                break
    return names


class _Builder:
    """Walks a transform's ``info`` tree and collects the assignments of its rule."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []
        self.statistics: dict[str, str] = {}
        self.uses_step = False
        self.title: str | None = None
        self._symbols: list[tuple[str, Any]] = []  # (base symbol, value) in order
        self._state_letters: dict[str, int] = {}
        self._named = 0
        self.optimizer_hyperparams: dict[str, Any] = {}

    # -- symbols -------------------------------------------------------------------------
    def symbol_values(self):
        counts: dict[str, int] = {}
        for base, _ in self._symbols:
            counts[base] = counts.get(base, 0) + 1
        seen: dict[str, int] = {}
        for base, value in self._symbols:
            seen[base] = seen.get(base, 0) + 1
            yield (f"{base}_{seen[base]}" if counts[base] > 1 else base), value

    def _symbol(self, base: str, value: Any) -> str:
        """The symbol for ``base`` with ``value``: shared with an equal value, else a new one."""
        for i, (b, v) in enumerate(self._symbols):
            if b == base and _same(v, value):
                return f"\x00{i}\x00"  # placeholder, resolved in _resolve
        self._symbols.append((base, value))
        return f"\x00{len(self._symbols) - 1}\x00"

    def resolve(self, text: str) -> str:
        names = [s for s, _ in self.symbol_values()]
        text = re.sub(r"\x00(\d+)\x00", lambda m: names[int(m.group(1))], text)
        # A numbered symbol that had a subscript already: \alpha_1 with _t is \alpha_{1,t}.
        return re.sub(
            r"_(\d+)_(\{[^}]*\}|[A-Za-z0-9])",
            lambda m: "_{" + m.group(1) + "," + m.group(2).strip("{}") + "}",
            text,
        )

    def _state_letter(self, letter: str) -> str:
        n = self._state_letters.get(letter, 0) + 1
        self._state_letters[letter] = n
        return letter if n == 1 else f"{letter}^{{({n})}}"

    # -- the walk ------------------------------------------------------------------------
    def walk(self, tx: Any, x: str) -> str:
        out = self._walk(tx, x)
        self.lines = [(self.resolve(a), self.resolve(b)) for a, b in self.lines]
        self.statistics = {self.resolve(k): v for k, v in self.statistics.items()}
        return self.resolve(out)

    def _walk(self, tx: Any, x: str) -> str:
        info = info_of(tx)
        if info is None:
            return self._name_intermediate(rf"\operatorname{{{_tex_name(_opaque_name(tx))}}}({x})")
        if info.kind == "optimizer":
            if self.title is None:
                self.title = _call(info.name, info.hyperparams)
                self.optimizer_hyperparams = dict(info.hyperparams)
            if not info.children:  # a loop rather than a chain (gbopt.pytorch.LBFGS)
                return self._name_intermediate(rf"\operatorname{{{_tex_name(info.name)}}}({x})")
            return self._walk(info.children[0], x)
        if info.name == "with_step_count":
            self.uses_step = True
            return self._walk(info.children[0], x)
        if info.name == "chain":
            for child in info.children:
                x = self._walk(child, x)
            return x
        if info.name == "divide":
            x = self._name_intermediate(x) if not _atomic(x) else x
            num = self._walk(info.children[0], x)
            den = self._walk(info.children[1], x)
            return rf"\frac{{{num}}}{{{den}}}"
        if info.children and info.math is None:
            return self._groups(info, x)
        if info.math is None:
            return self._name_intermediate(rf"\operatorname{{{_tex_name(info.name)}}}({x})")
        return self._piece(info, x)

    def _groups(self, info, x: str) -> str:
        """A wrapper: parameter groups by label, a mask, or one inner transform (safety)."""
        if info.name == "masked":
            inner = self._walk(info.children[0], x)
            cases = [rf"{inner} & \text{{where the mask is true}}", rf"{x} & \text{{elsewhere}}"]
        elif len(info.children) == 1:
            return self._walk(info.children[0], x)
        else:
            labels = (
                info.hyperparams.get("groups")
                or info.hyperparams.get("labels")
                or range(1, len(info.children) + 1)
            )
            cases = [
                rf"{self._walk(child, x)} & \text{{group {_tex_name(str(label))}}}"
                for label, child in zip(labels, info.children, strict=False)
            ]
        body = r" \\ ".join(cases)
        return self._name_intermediate(rf"\begin{{cases}} {body} \end{{cases}}")

    def _name_intermediate(self, expr: str) -> str:
        if _atomic(expr):
            return expr
        self._named += 1
        name = r"\tilde g" if self._named == 1 else rf"\tilde g_{{{self._named}}}"
        self.lines.append((name, expr))
        return name

    def _piece(self, info, x: str) -> str:
        math = info.math
        parts = [p.strip() for p in re.split(r";|\\qquad|\\quad", math) if p.strip()]
        assigned = [p.split(r"\leftarrow")[0].strip() for p in parts if r"\leftarrow" in p]
        letters = [a for a in assigned if a != "u"]
        # Rename state letters that another piece already uses, and pair them with fields.
        renames = {a: self._state_letter(a) for a in letters}
        fields = list(info.state)
        if len(fields) == len(letters):
            for a, field in zip(letters, fields, strict=True):
                self.statistics[renames[a]] = field
        elif fields:
            for field in fields:
                self.statistics[rf"\text{{{_tex_name(field)}}}"] = field
        # Hyperparameter symbols of this piece, paired with its numeric hyperparameters.
        sym_map = self._hyper_symbols(info, math, set(letters))
        if re.search(r"(?<![A-Za-z\\_])t(?![A-Za-z])", math):
            self.uses_step = True

        def subst(text: str) -> str:
            for a, b in renames.items():
                if a != b:
                    text = _replace_symbol(text, a, b)
            for sym, placeholder in sym_map.items():
                text = _replace_symbol(text, sym, placeholder)
            return _substitute_input(text, x)

        out = x
        if not assigned:  # a map: an expression in u
            if len(_INPUT.findall(_strip_text(math))) > 1:  # name an input used twice
                x = self._name_intermediate(x)
            return _simplify(subst(math))
        for part in parts:
            if r"\leftarrow" in part:
                lhs, rhs = (s.strip() for s in part.split(r"\leftarrow", 1))
                if lhs == "u":
                    out = _simplify(subst(rhs))
                else:
                    self.lines.append((subst(lhs), _simplify(subst(rhs))))
            elif "=" in part:
                lhs, rhs = (s.strip() for s in part.split("=", 1))
                self.lines.append((subst(lhs), _simplify(subst(rhs))))
        return out

    def _hyper_symbols(self, info, math: str, letters: set[str]) -> dict[str, str]:
        """Maps each hyperparameter symbol of ``math`` to its placeholder."""
        found = []
        for token in _SYMBOL.findall(_strip_text(math)):
            if token in _NOT_SYMBOLS or token in ("u", "t") or token in letters:
                continue
            if token.startswith("\\") and token[1:].split("_")[0] not in _GREEK_TEXT:
                continue
            if token not in found:
                found.append(token)
        numeric = {
            k: v for k, v in info.hyperparams.items() if v is not None and not isinstance(v, bool)
        }
        out: dict[str, str] = {}
        if len(found) == 1 and len(numeric) >= 1:
            name = next(iter(numeric))
            if len(numeric) > 1:  # several: the one whose usual symbol this is
                name = next((k for k in numeric if _NAME_SYMBOLS.get(k) == found[0]), name)
            out[found[0]] = self._symbol(found[0], numeric[name])
            return out
        for sym in found:
            name = next((k for k in numeric if _NAME_SYMBOLS.get(k) == sym), None)
            if name is not None:
                out[sym] = self._symbol(sym, numeric[name])
        unpaired = [sym for sym in found if sym not in out]
        left = [k for k in numeric if not any(_NAME_SYMBOLS.get(k) == s for s in out)]
        if len(unpaired) == 1 and len(left) == 1:  # the one symbol left is the one value left
            out[unpaired[0]] = self._symbol(unpaired[0], numeric[left[0]])
        return out


# ---- LaTeX helpers ----------------------------------------------------------------------


def _strip_text(math: str) -> str:
    return re.sub(r"\\(?:text|operatorname|mathrm)\{[^}]*\}", "", math)


def _replace_symbol(text: str, symbol: str, replacement: str) -> str:
    after = r"(?![A-Za-z0-9]|_\{?\d)"  # \beta is not the start of \beta_1
    if symbol.startswith("\\"):
        pattern = re.escape(symbol) + after
    else:
        pattern = r"(?<![\\A-Za-z])" + re.escape(symbol) + after
    return re.sub(pattern, lambda m: replacement, text)


def _atomic(expr: str) -> bool:
    return bool(re.fullmatch(r"(\\tilde |\\hat |\\bar )?(\\[A-Za-z]+|[A-Za-z])(_\{?\w+\}?)?", expr))


def _top_level_ops(expr: str) -> bool:
    """Whether ``expr`` has a binary + or - outside braces and parentheses."""
    depth = 0
    for i, ch in enumerate(expr):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch in "+-" and depth == 0 and expr[:i].strip():
            return True
    return False


def _substitute_input(math: str, x: str) -> str:
    def repl(m: re.Match) -> str:
        before = math[: m.start()].rstrip()
        after = math[m.end() :].lstrip()
        enclosed = (before.endswith("{") and after.startswith("}")) or (
            before.endswith("|") and after.startswith("|")
        )
        additive_left = before == "" or before.endswith(("+", "(", "{", "="))
        additive_right = after == "" or after.startswith(("+", "-", ")", "}"))
        if enclosed or _atomic(x):
            return x
        if additive_left and additive_right and (not before.endswith("-")):
            return x
        if _top_level_ops(x) or x.startswith("-"):
            return rf"\left({x}\right)"
        return x

    return _INPUT.sub(repl, math)


def _simplify(expr: str) -> str:
    expr = re.sub(r"\s*\+\s*0(?![\d.\w])", "", expr)  # add(0): adds nothing
    expr = re.sub(r"\+\s*-", "- ", expr)
    expr = re.sub(r"-\s*-", "+ ", expr)
    return re.sub(r"\s+", " ", expr).strip()


def _tex_name(name: str) -> str:
    return name.replace("_", r"\_")


def _opaque_name(tx: Any) -> str:
    info = info_of(tx)
    if info is not None and info.kind in ("combinator", "wrapper") and info.children:
        inner = ", ".join(_opaque_name(child) for child in info.children)
        return f"{info.name}({inner})"
    if info is not None:
        return _call(info.name, info.hyperparams)
    update = getattr(tx, "update", None)
    for cell in getattr(update, "__closure__", None) or ():  # optax's with_extra_args_support
        inner = cell.cell_contents
        if getattr(update, "__qualname__", "").startswith("with_extra_args_support") and hasattr(
            inner, "update"
        ):
            return _opaque_name(inner)
    qualname = getattr(update, "__qualname__", type(tx).__name__)
    module = getattr(update, "__module__", "") or ""
    base = qualname.split(".<locals>")[0].split(".")[-1]
    package = module.split(".")[0]
    return f"{package}.{base}" if package and package != "gbopt" else base


def _call(name: str, hyperparams: dict) -> str:
    args = ", ".join(
        f"{k}={_format(v)}"
        for k, v in hyperparams.items()
        if v is not None and k not in ("labels", "groups")
    )
    return f"{name}({args})"


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):  # an option such as graft_type="rmsprop"
        return repr(value)
    if callable(value):
        return "schedule"
    if isinstance(value, tuple | list) and not all(isinstance(v, numbers.Number) for v in value):
        return repr(value)
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return f"{value:g}" if isinstance(value, float) else str(value)
    try:
        array = np.asarray(value)
    except Exception:  # a traced value
        return "array"
    if array.ndim == 0:
        return f"{array.item():g}"
    return f"array of shape {array.shape}"


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(np.asarray(a) == np.asarray(b)) and np.asarray(a).ndim == 0
    except Exception:
        return False


# ---- plain text -------------------------------------------------------------------------

_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_SUPERSCRIPTS = str.maketrans("0123456789t()+-", "⁰¹²³⁴⁵⁶⁷⁸⁹ᵗ⁽⁾⁺⁻")


def _group(text: str, start: int) -> tuple[str, int]:
    """The brace group starting at ``text[start] == '{'``: (content, index after it)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return text[start + 1 :], len(text)


def _needs_parens(text: str) -> bool:
    """Whether a plain-text operand of ``/`` needs parentheses."""
    text = text.strip()
    if " " not in text:
        return False
    m = re.fullmatch(r"[^\s(]*\((.*)\)", text)
    if m and _group(text.replace("(", "{").replace(")", "}"), text.index("("))[1] == len(text):
        return False
    return True


def _cases(match: re.Match) -> str:
    rows = []
    for row in match.group(1).split(r"\\"):
        value, _, condition = row.partition("&")
        rows.append(f"{_text(value)} ({_text(condition)})")
    return "{ " + "; ".join(rows) + " }"


def _text(tex: str) -> str:
    """A small LaTeX-to-Unicode rendering for terminals."""
    innermost = re.compile(r"\\begin\{cases\}((?:(?!\\begin\{cases\}).)*?)\\end\{cases\}")
    while innermost.search(tex):  # cases inside cases (a piecewise rule in a group)
        tex = innermost.sub(_cases, tex)
    out, i = [], 0
    while i < len(tex):
        if tex.startswith(r"\frac", i) or tex.startswith(r"\tfrac", i):
            i += 5 if tex.startswith(r"\frac", i) else 6
            num, i = _group(tex, i) if tex[i] == "{" else (tex[i], i + 1)
            den, i = _group(tex, i) if tex[i] == "{" else (tex[i], i + 1)
            n, d = _text(num), _text(den)
            n = f"({n})" if _needs_parens(n) else n
            d = f"({d})" if _needs_parens(d) else d
            out.append(f"{n} / {d}")
        elif re.match(r"\\(bar|tilde|hat)\b", tex[i:]):
            m = re.match(r"\\(bar|tilde|hat)\s*(\{[^}]*\}|\\[A-Za-z]+|[A-Za-z])", tex[i:])
            i += len(m.group(0))
            accent = {"bar": "\u0304", "tilde": "\u0303", "hat": "\u0302"}[m.group(1)]
            out.append(_text(m.group(2).strip("{}")) + accent)
        elif tex.startswith(r"\sqrt", i):
            i += 5
            arg, i = _group(tex, i)
            out.append(f"√({_text(arg)})")
        elif tex.startswith(r"\text{", i) or tex.startswith(r"\operatorname{", i):
            i = tex.index("{", i)
            arg, i = _group(tex, i)
            out.append(arg.replace(r"\_", "_"))
        elif tex[i] == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", tex[i:])
            if m is None:  # a lone backslash at the end
                i += 1
                continue
            word = m.group(1)
            i += len(m.group(0))
            out.append(
                _GREEK_TEXT.get(word)
                or {
                    "leftarrow": "←", "left": "", "right": "", "quad": "  ", "qquad": "  ",
                    "max": "max", "min": "min", "tilde": "~", "bar": "‾", "hat": "^",
                    "cdot": "·", "prod": "∏", "le": "≤", "_": "_", ",": " ", " ": " ",
                    "begin": "", "end": "", "cases": "", "dots": "…", "!": "", "|": "‖",
                    "lVert": "‖", "rVert": "‖", "ge": "≥", "ne": "≠", "infty": "∞",
                    "Delta": "Δ", "Pi": "Π", "pi": "π", "sim": "~", "mathcal": "", ";": " ",
                    "langle": "⟨", "rangle": "⟩", "big": "", "Big": "",
                }.get(word, word)
            )  # fmt: skip
        elif tex[i] in "_^":
            mark = tex[i]
            i += 1
            command = re.match(r"\\[A-Za-z]+", tex[i:])
            if i < len(tex) and tex[i] == "{":
                arg, i = _group(tex, i)
            elif command:  # a command as the script: \rho_\infty
                arg, i = command.group(0), i + len(command.group(0))
            else:
                arg, i = tex[i : i + 1], i + 1
            arg = _text(arg)
            table = _SUBSCRIPTS if mark == "_" else _SUPERSCRIPTS
            converted = arg.translate(table)
            if all(c in "₀₁₂₃₄₅₆₇₈₉⁰¹²³⁴⁵⁶⁷⁸⁹ᵗ⁽⁾⁺⁻" for c in converted):
                out.append(converted)
            else:
                out.append(f"{mark}{arg}" if len(arg) == 1 else f"{mark}({arg})")
        elif tex[i] in "{}":
            i += 1
        elif tex[i] == "&":
            i += 1
        else:
            out.append(tex[i])
            i += 1
    return re.sub(r"\s+", " ", "".join(out)).strip()
