"""The documentation site: built with warnings as errors, opened in a real headless browser.

One build (Sphinx + MyST-NB, which executes the notebooks) serves every test here. The
browser is Chromium from the system's packages, run with no network at all (every host name
resolves to nothing), so math typeset on these pages can only come from the site's own
MathJax. Each page is checked through its rendered DOM (``--dump-dom`` after a virtual time
budget) and a screenshot, written to ``$GBOPT_SITE_SCREENSHOTS`` when it is set.
"""

import fcntl
import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    # No network: every host name resolves to nothing (the pages are file:// URLs).
    "--host-resolver-rules=MAP * ~NOTFOUND",
]

# Run in the page after it has loaded and MathJax has typeset it; the verdict is written
# into the DOM, which --dump-dom prints.
PROBE = """
<script>
window.addEventListener("load", () => {
  const report = () => {
    const images = [...document.querySelectorAll("main img, article img")].map((img) => ({
      src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight,
    }));
    const containers = document.querySelectorAll("mjx-container");
    const verdict = {
      mathjax: typeof window.MathJax === "object" && !!window.MathJax.startup,
      math: containers.length,
      svg: [...containers].filter((c) => c.querySelector("svg")).length,
      errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
      images: images,
    };
    const out = document.createElement("pre");
    out.id = "gbopt-probe";
    out.textContent = JSON.stringify(verdict);
    document.body.appendChild(out);
  };
  const ready = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
  (ready ? ready.then(report) : Promise.resolve().then(report));
});
</script>
"""


def _need(thing: str, found: object) -> None:
    """Skip without the tool on a developer's machine; fail in CI, which must install it."""
    if found:
        return
    message = f"{thing} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    _need("chromium (apt-get install chromium)", path)
    return path


EXECUTED_NOTEBOOK = "01_tour_of_the_optimizers"  # the notebook page checked for outputs


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    """The site, built once with the README's command (warnings are errors).

    One setting differs: only the notebook whose page is checked below is executed
    (``-D gbopt_execute_notebooks=...``); ``tests/test_notebooks.py`` executes every
    notebook already, and executing them twice cost about two minutes of the suite.
    Under pytest-xdist the workers share one build: the first to take the lock builds it
    in their common temporary folder, the others wait and reuse it.
    """
    try:
        import myst_nb  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        _need('the docs extra (pip install -e ".[docs]")', None)
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out = shared / "gbopt-site"
    out.mkdir(exist_ok=True)
    with open(out / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = out / "built"
        if not done.exists():
            result = subprocess.run(
                [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
                 "-D", f"gbopt_execute_notebooks={EXECUTED_NOTEBOOK}",
                 "-d", str(out / "doctrees"), "docs", str(out / "html")],
                cwd=ROOT, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
            done.write_text("ok")
    return out / "html"


def _open(site: pathlib.Path, page: str, tmp_path: pathlib.Path, *, query: str = "") -> str:
    """The DOM of ``page`` after it rendered, with the probe's verdict; and a screenshot."""
    source = site / page
    probed = source.with_name(f"_probe_{source.name}")
    text = source.read_text(encoding="utf-8")
    probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    url = probed.as_uri() + query
    profile = tmp_path / f"profile-{source.stem}"
    common = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
              "--virtual-time-budget=20000", "--window-size=1280,1600"]  # fmt: skip
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=180
    ).stdout
    shots = pathlib.Path(os.environ.get("GBOPT_SITE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / (page.replace("/", "_").replace(".html", ".png"))
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {page}"
    probed.unlink()
    return dom


def _verdict(dom: str) -> dict:
    match = re.search(r'<pre id="gbopt-probe"[^>]*>(.*?)</pre>', dom, re.S)
    assert match, "the page never finished loading (no probe verdict in the DOM)"
    return json.loads(html.unescape(match.group(1)))


def _assert_math_rendered(verdict: dict, page: str, at_least: int) -> None:
    assert verdict["mathjax"], f"{page}: MathJax did not load"
    assert verdict["math"] >= at_least, f"{page}: {verdict['math']} typeset formulas"
    assert verdict["svg"] == verdict["math"], f"{page}: formulas without SVG output"
    assert verdict["errors"] == 0, f"{page}: MathJax reported errors"


def test_pages_load_nothing_from_the_network(site):
    pattern = re.compile(r'<(?:script|link|img)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', re.I)
    for page in site.rglob("*.html"):
        for tag in pattern.findall(page.read_text(encoding="utf-8")):
            # External *links* to pages are fine; only resources that a page loads count.
            if tag.lower().startswith("<link") and 'rel="stylesheet"' not in tag.lower():
                continue
            assert "colab-badge" in tag, f"{page.relative_to(site)} loads {tag}"
    assert (site / "_static" / "tex-svg-full.js").stat().st_size > 1_000_000


def test_landing_page_renders_the_described_rule(site, tmp_path):
    dom = _open(site, "index.html", tmp_path)
    _assert_math_rendered(_verdict(dom), "index.html", at_least=1)
    assert "gbopt.describe(" in dom and "ρ₁ = 0.9" in html.unescape(dom)


def test_optimizer_page_renders_math_and_describe(site, tmp_path):
    dom = _open(site, "optimizers/adam.html", tmp_path)
    verdict = _verdict(dom)
    _assert_math_rendered(verdict, "optimizers/adam.html", at_least=4)
    text = html.unescape(re.sub(r"<[^>]+>", "", dom))
    assert "w ← w - α_t (s / (1 - ρ₁ᵗ)) / (√(r / (1 - ρ₂ᵗ)) + δ)" in text
    assert "optax.clip_by_global_norm(g)" in text  # an optax step, opaque and named


def test_notebook_page_renders_math_and_its_plots(site, tmp_path):
    page = f"notebooks/{EXECUTED_NOTEBOOK}.html"
    verdict = _verdict(_open(site, page, tmp_path))
    _assert_math_rendered(verdict, page, at_least=5)
    plots = [i for i in verdict["images"] if "_images/" in (i["src"] or "")]
    assert len(plots) >= 3, verdict["images"]
    for image in plots:
        assert image["width"] > 200 and image["height"] > 100, image  # decoded and drawn


def test_benchmark_page_draws_its_plots(site, tmp_path):
    verdict = _verdict(_open(site, "benchmarks.html", tmp_path))
    plots = [i for i in verdict["images"] if "_images/" in (i["src"] or "")]
    # four drawn at build time from RESULTS.md's tables, and the language model's loss
    # curves (benchmarks/matrix_lm.py's figure)
    assert len(plots) == 5 and all(i["width"] > 200 for i in plots), verdict["images"]
    assert any(i["src"].endswith("matrix_lm_loss.png") for i in plots), verdict["images"]


def test_search_finds_the_adam_page(site, tmp_path):
    dom = _open(site, "search.html", tmp_path, query="?q=adam")
    listing = re.search(r'<ul[^>]*class="search"[^>]*>(.*?)</ul>', dom, re.S)
    assert listing, "the search page shows no results list"
    results = re.findall(r'<li[^>]*>\s*<a[^>]*href="([^"]+)"', listing.group(1))
    pages = [href.split("#")[0].split("?")[0] for href in results]
    assert "optimizers/adam.html" in pages[:3], pages  # the family page, at the top


def _docs_extension():
    pytest.importorskip("sphinx")
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        import gbopt_docs
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    return gbopt_docs


@pytest.mark.parametrize("missing", ["gbopt.adam", "gbopt.schedules.constant", "gbopt.pytorch"])
def test_an_undocumented_public_name_is_a_build_warning(missing, caplog):
    """The API coverage check (an error under -W) names each public name without an entry."""
    gbopt_docs = _docs_extension()
    import gbopt
    import gbopt.pytorch.lr_scheduler

    names = set(gbopt_docs.API_MODULES)
    names |= {f"gbopt.{n}" for n in gbopt.__all__}
    names |= {f"gbopt.pytorch.lr_scheduler.{n}" for n in gbopt.pytorch.lr_scheduler.__all__}
    names |= {f"gbopt.schedules.{n}" for n in gbopt.schedules.__all__}
    names |= {f"gbopt.pytorch.{n}" for n in gbopt.pytorch.__all__}

    class Domain:
        objects = {name: None for name in names - {missing}}

    class Env:
        def get_domain(self, name):
            assert name == "py"
            return Domain()

    with caplog.at_level("WARNING"):
        gbopt_docs.check_api_coverage(None, Env())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and missing in messages[0], messages
    caplog.clear()
    Domain.objects = dict.fromkeys(names)
    with caplog.at_level("WARNING"):
        gbopt_docs.check_api_coverage(None, Env())
    assert not caplog.records


def test_executing_only_some_notebooks_excludes_the_others_and_checks_the_names():
    """``-D gbopt_execute_notebooks``: the others are excluded; a wrong name is an error."""
    gbopt_docs = _docs_extension()
    from sphinx.errors import ExtensionError

    class App:
        confdir = str(ROOT / "docs")

    class Config:
        gbopt_execute_notebooks = f"{EXECUTED_NOTEBOOK}, 02_gd_sgd_and_minibatches"
        nb_execution_excludepatterns = ()

    stems = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    gbopt_docs.execute_only(App(), Config)
    expected = [
        f"{n}.ipynb" for n in stems if n not in {EXECUTED_NOTEBOOK, "02_gd_sgd_and_minibatches"}
    ]
    assert Config.nb_execution_excludepatterns == expected and len(expected) == len(stems) - 2
    Config.gbopt_execute_notebooks = "all"
    Config.nb_execution_excludepatterns = ()
    gbopt_docs.execute_only(App(), Config)
    assert Config.nb_execution_excludepatterns == ()
    Config.gbopt_execute_notebooks = "01_tour"
    with pytest.raises(ExtensionError, match="01_tour.*not notebooks in notebooks/"):
        gbopt_docs.execute_only(App(), Config)
