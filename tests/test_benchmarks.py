"""The benchmark scripts still run: their smallest configurations, a few steps each.

Timing is never asserted here (speed is measured by the scripts themselves, on a quiet
machine); these tests only prove that the scripts and their tables keep working.
"""

import os
import re
import sys

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, BENCHMARKS)
    try:
        import adam_step
        import small_leaves
        import suite

        yield suite, adam_step, small_leaves
    finally:
        sys.path.remove(BENCHMARKS)


def test_suite_smoke_prints_every_section(scripts, tmp_path, capsys):
    suite, _, _ = scripts
    out = tmp_path / "results.md"
    assert suite.main(["--smoke", "--output", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    for heading in (
        "# gbopt benchmark suite (smoke)",
        "## Step time, bytes and compile time per workload",
        "### Summary: gbopt / optax step time (compile time)",
        "## Compile time (trace + lower + compile) against leaf count",
        "## Whole runs as one compiled call, sweeps as one vmapped call",
        "**A sweep over 4 learning rates**",
    ):
        assert heading in text
    for name in ("sgd+momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        assert f"| {name} |" in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_adam_step_smoke_prints_the_ratio(scripts, capsys):
    _, adam_step, _ = scripts
    assert adam_step.main(["--smoke"]) == 0
    text = capsys.readouterr().out
    assert "| gbopt.adam | optax.adam | gbopt/optax |" in text
    assert len(re.findall(r"\*\*\d+\.\d\d×\*\*", text)) == 2  # one ratio per tree


def test_skip_nonfinite_smoke_prints_its_table(capsys):
    sys.path.insert(0, BENCHMARKS)
    try:
        import skip_nonfinite
    finally:
        sys.path.remove(BENCHMARKS)
    assert skip_nonfinite.main(["--smoke", "--rounds", "2"]) == 0
    text = capsys.readouterr().out
    assert "| parameters | transform | wall | / adam | CPU | / adam |" in text
    for name in skip_nonfinite.TRANSFORMS:
        assert text.count(f"| {name} |") == 2  # one row per tree
    assert len(re.findall(r"\*\*\d+\.\d\d×\*\*", text)) == 8
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_small_leaves_smoke_compares_four_layouts(scripts, capsys):
    *_, small_leaves = scripts
    assert small_leaves.main(["--smoke"]) == 0
    text = capsys.readouterr().out
    for layout in ("optax (per leaf)", "gbopt (per leaf)", "packed, static slices"):
        assert f"| {layout} |" in text
    assert "| packed, offsets in the state |" in text


def test_packed_prototype_equals_the_unpacked_optimizer(scripts):
    """The layout prototype computes the same updates as the optimizer it wraps.

    Each element goes through the same operations in both layouts; only the rounding of
    XLA's loops may differ (a scalar loop against a vectorized one): 1e-6 is 8 float32 ulps.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    import gbopt

    *_, small_leaves = scripts
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.float32(0.5)}
    plain, packed = gbopt.adam(1e-2), small_leaves.packed_with_runtime_offsets(gbopt.adam(1e-2))
    s_plain, s_packed = plain.init(params), packed.init(params)
    for t in range(3):
        grads = jax.tree.map(lambda x: jnp.sin(x * (t + 1)), params)
        u_plain, s_plain = plain.update(grads, s_plain, params)
        u_packed, s_packed = packed.update(grads, s_packed, params)
        assert jax.tree.structure(u_packed) == jax.tree.structure(u_plain)
        for a, b in zip(jax.tree.leaves(u_plain), jax.tree.leaves(u_packed), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
        params = gbopt.apply_updates(params, u_plain)


def test_suite_catalog_section_times_a_name_against_optax(scripts, capsys):
    suite, _, _ = scripts
    assert suite.main(["--smoke", "--only", "catalog", "--name", "adamw"]) == 0
    text = capsys.readouterr().out
    assert "## The catalog: step and compile time against optax, name by name" in text
    assert "### Summary: gbopt / optax step time (compile time), the catalog" in text
    assert text.count("| adamw |") == 3  # step times, XLA figures, summary
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    with pytest.raises(SystemExit, match="not in the catalog"):
        suite.main(["--smoke", "--only", "catalog", "--name", "no_such_optimizer"])


@pytest.mark.slow
def test_suite_catalog_section_times_every_catalog_b_name(scripts, capsys):
    suite, _, _ = scripts
    import _harness

    assert suite.main(["--smoke", "--only", "catalog"]) == 0
    text = capsys.readouterr().out
    assert "## The catalog: gbopt / optax step time (compile time) per name" in text
    for opt in _harness.CATALOG_B:
        assert f"| {opt.name} |" in text
    for opt in _harness.CATALOG:  # the first catalog table, and its summary, name by name
        assert text.count(f"| {opt.name} |") == 3


def test_memory_script_counts_bytes_and_trains():
    """benchmarks/memory.py: its byte table and one short quantized digits run."""
    sys.path.insert(0, BENCHMARKS)
    try:
        import memory
    finally:
        sys.path.remove(BENCHMARKS)
    text = "\n".join(memory.memory_table(layers=1, width=128, rounds=1))
    for name, counted in (("float32", "8.000"), ("bf16 moments", "4.000")):
        assert f"| {name} | **{counted}** |" in text
    # the 128 x 128 weight quantized (codes + a float32 scale per row of 128, the row
    # being shorter than a block), the bias in float32, the int32 count
    n = 128 * 128 + 128
    eight = (128 * 128 * 2 + 2 * 4 * 128 + 128 * 8 + 4) / n
    four = (128 * 128 * 1 + 2 * 4 * 128 + 128 * 8 + 4) / n
    assert f"| 8-bit | **{eight:.3f}** |" in text and f"| 4-bit | **{four:.3f}** |" in text
    tx = memory.adam_variants(1e-3)["8-bit"]
    loss = memory.digits_run(tx, seed=0, steps=3, batch=16)
    assert 0 < loss < 5


def _script(name):
    sys.path.insert(0, BENCHMARKS)
    try:
        return __import__(name)
    finally:
        sys.path.remove(BENCHMARKS)


def test_matrix_step_smoke_prints_the_table(capsys):
    assert _script("matrix_step").main(["--smoke", "--rounds", "1", "--compiles", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("optax.contrib.muon", "gbopt.muon", "adamw"):
        assert f"| {name} |" in out
    for name in ("shampoo", "soap"):
        for row in ("step without refresh", "step with refresh", "amortised (refresh every 10)"):
            assert f"{name}, {row}" in out
    assert "state B/param" in out


def test_matrix_lm_smoke_prints_the_table(tmp_path, capsys):
    assert _script("matrix_lm").main(["--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("adamw", "muon", "shampoo", "shampoo_adam_graft", "soap"):
        assert f"| {name} |" in out
    assert "| step / AdamW | state B/param |" in out
    assert (tmp_path / "matrix_lm_loss.png").exists()
    # the JSON of each optimizer is what --report reads back
    assert _script("matrix_lm").main(["--smoke", "--out", str(tmp_path), "--report"]) == 0
    assert "| soap |" in capsys.readouterr().out


def test_median_interval_is_the_sign_tests_and_covers_the_median(scripts):
    import _harness
    import numpy as np

    assert _harness.median_interval(range(9, 0, -1)) == (2, 8)  # 96.1%
    assert _harness.median_interval([3, 1, 2, 6, 5, 4]) == (1, 6)  # 96.9%
    assert _harness.median_interval([1, 2, 3, 4, 5]) is None  # no 95% interval from 5
    # Its coverage on a skewed distribution (lognormal, median 1) over 4,000 draws of 9:
    # at least the promised 95% (exactly 96.1% in expectation, sd 0.3%).
    rng = np.random.default_rng(0)
    draws = rng.lognormal(0.0, 0.5, size=(4000, 9))
    hits = sum(lo <= 1.0 <= hi for lo, hi in map(_harness.median_interval, draws))
    assert hits / len(draws) >= 0.95


def test_catalog_compile_times_carry_a_control_and_intervals(scripts, capsys, monkeypatch):
    suite, _, _ = scripts
    monkeypatch.setitem(suite.SETTINGS["smoke"], "catalog_compile_budget_s", 60)
    assert suite.main(["--smoke", "--only", "catalog", "--name", "adamw"]) == 0
    text = capsys.readouterr().out
    # gbopt / optax and optax / optax, each a median inside its interval (9 rounds)
    got = re.search(
        r"\(([\d.]+)× \[([\d.]+)–([\d.]+)\]; control ([\d.]+)× \[([\d.]+)–([\d.]+)\]\)", text
    )
    assert got, text
    ratio, low, high, control, c_low, c_high = map(float, got.groups())
    assert low <= ratio <= high and c_low <= control <= c_high
    assert "Of the 1 cells with a 95% interval" in text
    assert "The control, optax / optax in the same rounds (1 cells)" in text
