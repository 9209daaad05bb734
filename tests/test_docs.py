"""The documentation is part of the product: README code runs, docstrings are complete."""

import doctest
import importlib
import inspect
import pathlib
import re
import sys

import pytest

import gbopt

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def _readme_blocks():
    return _python_blocks(ROOT / "README.md")


def test_readme_python_blocks_run_in_order():
    """Like a reader at a notebook: each block sees what the blocks before it defined."""
    namespace: dict = {}
    blocks = _readme_blocks()
    assert blocks
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md[block {index}]", "exec"), namespace)


# Pages that are prose and tables only (an index of notebooks, the site's tables of contents,
# the benchmark page whose code cells MyST-NB executes when the site is built); every other
# page must show code that runs, so that a page whose examples were lost fails here rather
# than passing empty.
PROSE_PAGES = {
    "explore.md",
    "notebooks.md",
    "benchmarks.md",
    "api/index.md",
    "optimizers/index.md",
}


def _docs_pages() -> list[str]:
    """Every markdown page of the site, subfolders included, less build outputs and copies."""
    pages = []
    for path in (ROOT / "docs").rglob("*.md"):
        rel = path.relative_to(ROOT / "docs")
        if rel.parts[0].startswith("_") or rel.parts[0] == "notebooks":
            continue
        pages.append(rel.as_posix())
    return sorted(pages)


PAGES = _docs_pages()


def run_page(page: str) -> int:
    """Executes a page's python blocks in order; returns how many ran."""
    blocks = _python_blocks(ROOT / "docs" / page)
    if not blocks:
        raise AssertionError(
            f"docs/{page} has no ```python block to run; a page of examples that runs nothing "
            "tests nothing (list a prose-only page in PROSE_PAGES)."
        )
    namespace: dict = {"__name__": f"docs.{page}"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/{page}[block {index}]", "exec"), namespace)
    return len(blocks)


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if p not in PROSE_PAGES])
def test_docs_pages_python_blocks_run_in_order(page):
    assert run_page(page) >= 1


def test_a_page_with_no_code_fails_rather_than_passing_empty(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "empty.md").write_text("# A page\n\nOnly prose.\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="has no ```python block"):
        run_page("empty.md")


def test_prose_pages_are_really_prose():
    for page in PROSE_PAGES:
        assert not _python_blocks(ROOT / "docs" / page), f"docs/{page} has code: run it"


def test_readme_gives_the_two_set_up_commands_and_ci_runs_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m gbopt" in readme
    test_cmd = re.search(r"^(python -m pytest[^\n#]*?)\s*(#.*)?$", readme, re.M).group(1).strip()
    assert test_cmd in ci.splitlines()


PUBLIC = [name for name in dir(gbopt) if not name.startswith("_")]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring(name):
    obj = getattr(gbopt, name)
    if inspect.ismodule(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return
    doc = inspect.getdoc(obj) or ""
    assert len(doc.split()) >= 5, f"gbopt.{name} needs a docstring"


def _modules():
    pkg = pathlib.Path(gbopt.__file__).parent
    names = []
    for p in pkg.rglob("*.py"):
        if p.stem == "__main__":
            continue
        parts = p.relative_to(pkg).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names.append(".".join(("gbopt", *parts)))
    return sorted(names)


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
