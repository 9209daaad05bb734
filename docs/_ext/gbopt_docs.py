"""Sphinx extension of gbopt's site: bundled MathJax, API coverage, optional pages.

* **MathJax from the site itself**: the single-file MathJax 3 build (TeX input with every
  TeX package, SVG output, so no font files) that the PyPI package ``django-static-mathjax``
  ships is added to the site's ``_static`` folder; ``conf.py`` points ``mathjax_path`` at
  it. No page loads anything from a CDN.
* **API coverage**: after all pages are read, every public name of ``gbopt``,
  ``gbopt.schedules`` and ``gbopt.pytorch`` must be a documented Python object (an
  ``autosummary``/``autodoc`` entry); each one missing is a warning, so ``-W`` fails the build.
* **Notebooks**: ``notebooks/*.ipynb`` are copied to ``docs/notebooks/`` (ignored by git),
  where MyST-NB executes them at build time.
* **``gbopt-describe``**: the rule :func:`gbopt.describe` derives for an expression,
  computed when the page is built (so a family page cannot drift from the code).
* **``optional-toctree``**: a ``toctree`` whose entries are listed when the page exists and
  skipped silently when it does not (pages other work adds later: ``memory``, ``matrix``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import inspect
import json
import pathlib
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.directives.other import TocTree
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.matching import patfilter

logger = logging.getLogger(__name__)

MATHJAX_STATIC_NAME = "tex-svg-full.js"
API_MODULES = ("gbopt", "gbopt.schedules", "gbopt.pytorch", "gbopt.pytorch.lr_scheduler")


def mathjax_file() -> pathlib.Path:
    """The path of MathJax's single-file TeX-to-SVG build inside ``django-static-mathjax``."""
    try:
        root = importlib.resources.files("mathjax")
    except ModuleNotFoundError as err:
        raise RuntimeError(
            "The documentation needs MathJax from the `django-static-mathjax` package: "
            'install the docs extra, `pip install -e ".[docs]"`.'
        ) from err
    path = pathlib.Path(str(root / "static" / "mathjax" / "es5" / MATHJAX_STATIC_NAME))
    if not path.is_file():
        raise RuntimeError(f"MathJax's {MATHJAX_STATIC_NAME} is missing from {path.parent}.")
    return path


def public_names(module_name: str) -> list[str]:
    """A module's public API: its ``__all__``, or else its explicit re-exports.

    Without ``__all__``, the public names of a package's ``__init__`` are the ones it
    re-exports with the redundant alias, ``from gbopt._x import name as name`` (and
    ``from gbopt import pytorch as pytorch``), the convention of this project and of typed
    Python; helpers it imports for itself (``from importlib.metadata import version``) are not.
    """
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return sorted(module.__all__)
    tree = ast.parse(inspect.getsource(module))
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names += [a.asname for a in node.names if a.asname and a.asname == a.name]
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return sorted(n for n in set(names) if not n.startswith("_"))


def check_api_coverage(app: Sphinx, env) -> None:
    """Warn (an error under ``-W``) for every public name without an API entry."""
    documented = set(env.get_domain("py").objects)
    for module_name in API_MODULES:
        if module_name not in documented:
            logger.warning(
                "API reference: module %s has no entry (add `.. automodule::` or an "
                "autosummary line for it to docs/api/index.md).",
                module_name,
                type="gbopt",
                subtype="api",
            )
        for name in public_names(module_name):
            full = f"{module_name}.{name}"
            if full not in documented and full not in API_MODULES:  # modules: checked above
                logger.warning(
                    "API reference: public name %s has no entry; add it to an autosummary "
                    "table in docs/api/index.md.",
                    full,
                    type="gbopt",
                    subtype="api",
                )


class OptionalTocTree(TocTree):
    """A ``toctree`` that lists only the entries whose page exists in the source tree.

    With ``:glob:``, a pattern is kept when it matches a page that no earlier pattern of
    the same tree matched (so a trailing ``*`` lists "every other page", or nothing).
    """

    def run(self):
        """Drop the entries whose page is absent, then build the toctree of the rest."""
        current = self.env.current_document.docname
        if not hasattr(self.env, "gbopt_optional_toctrees"):
            self.env.gbopt_optional_toctrees = set()
        self.env.gbopt_optional_toctrees.add(current)
        base = current.rpartition("/")[0]
        remaining = set(self.env.found_docs) - {current}
        kept = []
        for entry in self.content:
            name = entry.strip()
            if not name:
                continue
            target = name.split("<")[-1].rstrip(">").strip().removesuffix(".md")
            docname = f"{base}/{target}" if base and not target.startswith("/") else target
            docname = docname.lstrip("/")
            if "glob" in self.options and any(c in target for c in "*?["):
                matches = set(patfilter(remaining, docname))
                if matches:
                    kept.append(entry)
                    remaining -= matches
            elif docname in remaining:
                kept.append(entry)
                remaining.discard(docname)
        self.content = StringList(kept, source=current)
        if not kept:
            return []
        return super().run()


def copy_notebooks(app: Sphinx, config) -> None:
    """Mirror ``notebooks/*.ipynb`` into ``docs/notebooks/``, where MyST-NB executes them.

    A copy, not a link: links resolve the same whether or not the file system follows
    symbolic links; an unchanged notebook is not rewritten, so it is not rebuilt.
    """
    source = pathlib.Path(app.confdir).parent / "notebooks"
    target = pathlib.Path(app.confdir) / "notebooks"
    target.mkdir(exist_ok=True)
    wanted = {p.name for p in source.glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in sorted(wanted):
        text = _site_notebook((source / name).read_text(encoding="utf-8"))
        dst = target / name
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            dst.write_text(text, encoding="utf-8")


def execute_only(app: Sphinx, config) -> None:
    """``-D gbopt_execute_notebooks=01_tour_of_the_optimizers``: execute only those notebooks.

    The value is ``all`` (the default) or notebook file stems, comma-separated; the other
    notebooks' pages are built from the stored notebook, without outputs. The tests use
    it: ``tests/test_notebooks.py`` executes every notebook already, and
    ``tests/test_site.py`` checks one notebook page's rendered outputs, so its build
    executes that one only.
    """
    wanted = config.gbopt_execute_notebooks.strip()
    if wanted == "all":
        return
    names = sorted(p.stem for p in (pathlib.Path(app.confdir).parent / "notebooks").glob("*.ipynb"))
    keep = {w.strip() for w in wanted.split(",") if w.strip()}
    if keep - set(names):
        raise ExtensionError(
            f"gbopt_execute_notebooks names {sorted(keep - set(names))}, which are not notebooks "
            f"in notebooks/; give 'all' or some of {names}, comma-separated."
        )
    config.nb_execution_excludepatterns = [f"{n}.ipynb" for n in names if n not in keep]


def _site_notebook(text: str) -> str:
    """The notebook as the site shows it: the cell that installs gbopt in Colab is hidden.

    It is still executed (it does nothing outside Colab); MyST-NB's ``remove-cell`` tag
    leaves it out of the page.
    """
    nb = json.loads(text)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "google.colab" in "".join(cell["source"]):
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "remove-cell" not in tags:
                tags.append("remove-cell")
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


class DescribeDirective(SphinxDirective):
    """``{gbopt-describe} EXPRESSION``: the rule :func:`gbopt.describe` derives, at build time.

    The expression is evaluated with ``gbopt``, ``optax`` and ``jnp`` in scope; the page
    shows the LaTeX rule and the plain-text description (symbols, values, state fields).
    """

    required_arguments = 1
    final_argument_whitespace = True
    has_content = False

    def run(self):
        """Evaluate the expression, describe it, and return a math block and a text block."""
        import jax.numpy as jnp
        import optax

        import gbopt

        expression = self.arguments[0]
        try:
            tx = eval(expression, {"gbopt": gbopt, "optax": optax, "jnp": jnp})  # noqa: S307
            described = gbopt.describe(tx)
        except Exception as err:  # a broken example is a build error (-W)
            logger.warning(
                "gbopt-describe: %s raised %s: %s",
                expression,
                type(err).__name__,
                err,
                location=self.get_location(),
                type="gbopt",
                subtype="describe",
            )
            return []
        code = nodes.literal_block(
            f"gbopt.describe({expression})", f"gbopt.describe({expression})", language="python"
        )
        math = nodes.math_block(described.latex(), described.latex(), nowrap=False, number=None)
        math["docname"] = self.env.current_document.docname
        text = nodes.literal_block(str(described), str(described), language="text")
        container = nodes.container(classes=["gbopt-describe"])
        container += [code, math, text]
        return [container]


REPOSITORY = "https://github.com/gbopt/gbopt/blob/main"
_OUTSIDE_LINK = re.compile(r"\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def link_outside_files(app: Sphinx, docname: str, source: list) -> None:
    """Links from a page to a file of the repository outside ``docs/`` go to the repository.

    ``[RESULTS.md](../benchmarks/RESULTS.md)`` is right on GitHub, where the page is read in
    place; on the site the file is not a page, so the link points at it in the repository.
    """
    page_dir = (pathlib.Path(app.srcdir) / docname).parent
    root = pathlib.Path(app.srcdir).parent.resolve()
    docs = pathlib.Path(app.srcdir).resolve()

    def repl(match: re.Match) -> str:
        target = (page_dir / match.group(1)).resolve()
        if docs in target.parents or root not in target.parents or not target.exists():
            return match.group(0)
        rel = target.relative_to(root).as_posix()
        return f"]({REPOSITORY}/{rel}{match.group(2) or ''})"

    source[0] = _OUTSIDE_LINK.sub(repl, source[0])


def mark_optional_toctrees_outdated(app: Sphinx, env, added, changed, removed) -> list[str]:
    """Pages with an ``optional-toctree`` are re-read when a page appears or disappears."""
    if not (added or removed):
        return []
    return sorted(getattr(env, "gbopt_optional_toctrees", set()) & env.found_docs)


def clear_generated(app: Sphinx, config) -> None:
    """Remove the API pages autosummary wrote last time, so a removed name leaves none."""
    generated = pathlib.Path(app.confdir) / "api" / "generated"
    if generated.is_dir():
        for page in generated.glob("*.rst"):
            page.unlink()


def add_mathjax(app: Sphinx, config) -> None:
    """Serve the bundled MathJax from the site's ``_static`` folder."""
    config.html_static_path = [*config.html_static_path, str(mathjax_file())]


def setup(app: Sphinx) -> dict:
    """Register the extension's hooks and its directive."""
    app.connect("config-inited", add_mathjax)
    app.add_config_value("gbopt_execute_notebooks", "all", "env", types=[str])
    app.connect("config-inited", copy_notebooks)
    app.connect("config-inited", execute_only)
    app.connect("config-inited", clear_generated)
    app.connect("env-check-consistency", check_api_coverage)
    app.connect("source-read", link_outside_files)
    app.connect("env-get-outdated", mark_optional_toctrees_outdated)
    app.add_directive("optional-toctree", OptionalTocTree)
    app.add_directive("gbopt-describe", DescribeDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
