"""The benchmark scripts still run: their smallest configurations, a few steps each.

Timing is never asserted here (speed is measured by the scripts themselves, on a quiet
machine); these tests only prove that the scripts and their tables keep working.
"""

import os
import re
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, BENCHMARKS)
    try:
        import adam_step
        import suite

        yield suite, adam_step
    finally:
        sys.path.remove(BENCHMARKS)


def test_suite_smoke_prints_every_section(scripts, tmp_path, capsys):
    suite, _ = scripts
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
    _, adam_step = scripts
    assert adam_step.main(["--smoke"]) == 0
    text = capsys.readouterr().out
    assert "| gbopt.adam | optax.adam | gbopt/optax |" in text
    assert len(re.findall(r"\*\*\d+\.\d\d×\*\*", text)) == 2  # one ratio per tree
