"""The documentation is part of the product: README code runs, docstrings are complete."""

import doctest
import importlib
import inspect
import pathlib
import re

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


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_pages_python_blocks_run_in_order(page):
    namespace: dict = {"__name__": f"docs.{page}"}
    for index, block in enumerate(_python_blocks(ROOT / "docs" / page)):
        exec(compile(block, f"docs/{page}[block {index}]", "exec"), namespace)


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
    """gbopt's modules, those of its subpackages (gbopt.pytorch) included."""
    pkg = pathlib.Path(gbopt.__file__).parent
    modules = [f"gbopt.{p.stem}" for p in pkg.glob("*.py") if p.stem != "__main__"]
    for init in pkg.glob("*/__init__.py"):
        sub = init.parent
        modules.append(f"gbopt.{sub.name}")
        modules += [
            f"gbopt.{sub.name}.{p.stem}"
            for p in sub.glob("*.py")
            if p.stem not in ("__init__", "__main__")
        ]
    return sorted(modules)


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
