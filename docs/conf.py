"""Sphinx configuration of gbopt's documentation site.

Build it with the one command in README.md:

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Warnings are errors. Nothing is fetched from the network: MathJax is the copy that the
``django-static-mathjax`` package ships (PyPI), served by the built site itself, and the
notebooks in ``notebooks/`` (copied to ``docs/notebooks/`` at each build) are executed by
MyST-NB.
"""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))
# The gbopt of this source tree, here and in the notebooks' kernels (which inherit the
# environment), whatever copy of gbopt the interpreter has installed.
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import gbopt_docs  # noqa: E402

import gbopt  # noqa: E402

project = "gbopt"
author = "The gbopt developers"
copyright = "the gbopt developers"
release = gbopt.__version__
version = release

extensions = [
    "myst_nb",  # MyST markdown pages and notebooks (it loads myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "gbopt_docs",  # docs/_ext/gbopt_docs.py: API coverage check, optional pages, describe
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "jupyter_execute",
    "**.ipynb_checkpoints",
]
templates_path = ["_templates"]
# The pages taken from the README start at level-2 headings ("## Title"); the first one is
# the page's title. Every other warning is an error (-W).
suppress_warnings = ["myst.header"]
nitpicky = False

# ---- MyST and MyST-NB -------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "substitution"]
myst_heading_anchors = 3
nb_execution_mode = "cache"  # executed at build time; re-executed when a cell changes
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 300
nb_execution_raise_on_error = True  # a failing notebook fails the build
nb_execution_show_tb = True
nb_merge_streams = True

# ---- API reference --------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("References", "notes_style"), ("Example", "examples_style")]
add_module_names = True

# ---- Math: a bundled MathJax, no CDN -------------------------------------------------------
# gbopt_docs copies MathJax's single-file build (TeX input, SVG output: no font files) from
# the installed package into the site's _static folder; the pages load it from there.
mathjax_path = gbopt_docs.MATHJAX_STATIC_NAME
mathjax3_config = {"options": {"enableMenu": False}}

# ---- HTML ---------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"gbopt {release}"
html_static_path = ["_static"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_last_updated_fmt = None
html_copy_source = False
