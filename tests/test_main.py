"""The main job, ``python -m gbopt``: its race, its tables, its plots and its errors."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt
from gbopt.demo import problems as _problems
from gbopt.demo import race as _race
from gbopt.demo.main import main

OPTIMIZER_NAMES = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop_nesterov", "adam"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def parse_sections(stdout: str) -> dict[str, dict]:
    """Each problem's initial loss and table rows, from the race's markdown output."""
    sections = {}
    for block in stdout.split("\n## ")[1:]:
        name = block.split(":", 1)[0]
        initial = float(re.search(r"initial loss (\S+);", block).group(1))
        lines = [line for line in block.splitlines() if line.startswith("| ")]
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        rows = [
            dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[1:]
        ]
        sections[name] = {"initial": initial, "rows": rows}
    return sections


def assert_valid_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200, image.shape
    assert np.ptp(image[..., :3]) > 0.5, f"{path} is blank"


# --- The whole race, in process -----------------------------------------------------------


def test_race_every_optimizer_on_every_problem(tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["--steps", "60", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out

    sections = parse_sections(stdout)
    assert list(sections) == list(_problems.PROBLEMS)
    for name, section in sections.items():
        rows = section["rows"]
        assert [r["optimizer"] for r in rows] == OPTIMIZER_NAMES, name
        for r in rows:
            final = float(r["final loss"])
            assert math.isfinite(final) and final < section["initial"], (name, r)
            steps = r["steps to tolerance"]
            assert steps == "-" or 0 < int(steps) <= 60, (name, r)
            assert re.fullmatch(r"\d+\.\d (us|ms)|\d+\.\d\d ms", r["time / step"]), r
            lr = (
                _problems.PROBLEMS[name]().learning_rates[r["optimizer"]]
                if name != "digits"
                else None
            )
            if lr is not None:
                assert float(r["learning rate"]) == lr

    expected = [f"{p}_loss.png" for p in _problems.PROBLEMS]
    expected += [f"{p}_paths.png" for p in ("rosenbrock", "quadratic", "saddle")]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for path in out.iterdir():
        assert_valid_png(path)
    assert f"written to {out.resolve()}" in stdout


def test_subprocess_smoke_run(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(Path(gbopt.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    argv = ["--problem", "quadratic", "--optimizers", "sgd,adam", "--steps", "40", "--out", "out"]
    proc = subprocess.run(
        [sys.executable, "-m", "gbopt", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = parse_sections(proc.stdout)["quadratic"]["rows"]
    assert [r["optimizer"] for r in rows] == ["sgd", "adam"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "quadratic_loss.png",
        "quadratic_paths.png",
    ]
    assert str((tmp_path / "out").resolve()) in proc.stdout


# --- Options and errors --------------------------------------------------------------------


def test_help_lists_options_problems_and_optimizers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--problem",
        "--optimizers",
        "--steps",
        "--learning-rate",
        "--seed",
        "--out",
        "--batch-size",
    ):
        assert option in text
    for name in [*_problems.PROBLEMS, *OPTIMIZER_NAMES]:
        assert name in text
    assert 'pip install "gbopt[notebooks]"' in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--optimizers", "adamw"],
            "unknown optimizer 'adamw'; valid optimizers: "
            + ", ".join([*OPTIMIZER_NAMES, "muon", "shampoo", "soap"]),
        ),
        (["--optimizers", "sgd,Nadam"], "unknown optimizer 'nadam'"),
        (
            ["--problem", "beale"],
            "unknown problem 'beale'; valid problems: rosenbrock, quadratic, saddle, digits",
        ),
    ],
)
def test_unknown_names_list_the_valid_ones(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "expected a whole number >= 1, got 0"),
        (["--steps", "ten"], "expected a whole number, got 'ten'"),
        (["--learning-rate", "-0.1"], "expected a finite number > 0, got -0.1"),
        (["--learning-rate", "nan"], "expected a finite number > 0, got nan"),
        (["--batch-size", "-3"], "expected a whole number >= 0, got -3"),
    ],
)
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_learning_rate_overrides_the_tuned_rates_and_divergence_shows(tmp_path, capsys):
    argv = ["--problem", "rosenbrock", "--optimizers", "sgd", "adam", "--learning-rate", "0.05"]
    assert main([*argv, "--steps", "30", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "learning rate 0.05 for every optimizer" in stdout
    sgd, adam = parse_sections(stdout)["rosenbrock"]["rows"]
    assert sgd["learning rate"] == adam["learning rate"] == "0.05"
    # Gradient descent at 0.05 on Rosenbrock (curvature ~ 1000 near the start) diverges.
    assert "(diverged)" in sgd["final loss"] and sgd["steps to tolerance"] == "-"
    assert math.isfinite(float(adam["final loss"]))


def test_without_the_optional_packages_it_runs_what_it_can(tmp_path, capsys, monkeypatch):
    for module in ("matplotlib", "sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    out = tmp_path / "o"
    assert main(["--optimizers", "sgd,adam", "--steps", "5", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    hint = 'install it with: pip install "gbopt[notebooks]"'
    assert f"note: plots skipped, they need matplotlib; {hint}" in captured.err
    assert "note: skipping digits: the digits problem needs scikit-learn" in captured.err
    assert list(parse_sections(captured.out)) == ["rosenbrock", "quadratic", "saddle"]
    assert not out.exists()

    assert main(["--problem", "digits", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    needs = "the digits problem needs scikit-learn (its handwritten digits ship inside it)"
    assert f"error: {needs}; {hint}" in captured.err
    assert captured.out == ""


# --- The training loop ---------------------------------------------------------------------


def test_run_records_the_loss_before_each_step_as_numpy_gradient_descent():
    problem = _problems.quadratic()
    result = _race.run(problem, "sgd", steps=250, learning_rate=0.03)

    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    rotation = np.array([[c, -s], [s, c]])
    hessian = rotation @ np.diag([1.0, 50.0]) @ rotation.T
    w = np.array([-4.0, 1.0])
    path, losses = [], []
    for _ in range(251):
        path.append(w)
        losses.append(0.5 * w @ hessian @ w)
        w = w - 0.03 * (hessian @ w)
    losses = np.array(losses)

    # float32 against float64: a few ulps of float32 per step, compounded over the steps.
    np.testing.assert_allclose(result.path, np.array(path), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(result.losses, losses, rtol=5e-5)
    reached = np.flatnonzero(losses <= problem.tolerance)
    assert reached.size and result.steps_to_tolerance == reached[0]
    assert result.final_loss == result.losses[250]
    assert result.learning_rate == 0.03 and result.seconds_per_step > 0


def test_chunked_loop_equals_one_call_and_reports_progress(monkeypatch):
    problem = _problems.rosenbrock()
    whole = _race.run(problem, "nesterov", steps=20)
    monkeypatch.setattr(_race, "MAX_CHUNK", 8)
    progress = []
    chunked = _race.run(problem, "nesterov", steps=20, on_progress=progress.append)
    assert progress == [7, 7, 6]  # 21 recorded points in 3 chunks of 7
    np.testing.assert_array_equal(chunked.losses, whole.losses)
    np.testing.assert_array_equal(chunked.path, whole.path)


def test_the_progress_bar_waits_a_second_before_it_appears():
    stream = io.StringIO()
    bar = _race._progress_bar(100, "saddle", stream)
    assert bar.delay == 1.0 and bar.total == 100 and bar.desc == "saddle"
    bar.update(100)
    bar.close()
    assert stream.getvalue() == ""  # a race shorter than a second shows no bar


def test_steps_to_tolerance_is_none_when_not_reached():
    result = _race.run(_problems.rosenbrock(), "sgd", steps=10)
    assert result.steps_to_tolerance is None
    assert result.losses.shape == (11,) and result.path.shape == (11, 2)


def test_digits_minibatches_follow_the_seed():
    problem = _problems.digits(batch_size=16)
    first = _race.run(problem, "sgd", steps=12, seed=0)
    again = _race.run(problem, "sgd", steps=12, seed=0)
    other = _race.run(problem, "sgd", steps=12, seed=1)
    np.testing.assert_array_equal(first.losses, again.losses)
    assert not np.array_equal(first.losses[1:], other.losses[1:])
    assert first.path is None and first.losses[-1] < first.losses[0]


# --- The problems --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rosenbrock", "quadratic", "saddle"])
def test_surfaces_attain_their_minimum_with_zero_gradient(name):
    problem = _problems.PROBLEMS[name]()
    assert set(problem.learning_rates) == set(OPTIMIZER_NAMES)
    for point in problem.minimizers:
        w = jnp.asarray(point, jnp.float32)
        assert float(problem.loss(w)) == problem.minimum
        np.testing.assert_array_equal(jax.grad(problem.loss)(w), 0.0)
    (x0, x1), (y0, y1) = problem.bounds
    start = np.asarray(problem.init(jax.random.key(0)))
    assert x0 < start[0] < x1 and y0 < start[1] < y1


def test_digits_loss_is_the_mean_softmax_cross_entropy():
    problem = _problems.digits(batch_size=0)
    assert not problem.stochastic and problem.examples == 1797
    x, y = _problems.load_digits()
    assert (
        x.shape == (1797, 64)
        and 0 <= x.min()
        and x.max() == 1
        and set(np.unique(y)) == set(range(10))
    )
    params = problem.init(jax.random.key(3))
    assert {k: v["w"].shape for k, v in params.items()} == {"layer0": (64, 32), "layer1": (32, 10)}
    logits = _problems.mlp_apply(params, jnp.asarray(x))
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean()
    np.testing.assert_allclose(problem.loss(params), expected, rtol=1e-6)
    described = _race.describe(problem, 10, 2.3)
    assert "10 steps on the whole set of 1797 (full batch); initial loss 2.3" in described
    assert "minibatches of 16" in _race.describe(_problems.digits(batch_size=16), 10, 2.3)
    with pytest.raises(
        ValueError, match=r"`batch_size` must be >= 0 \(0 for the whole set\), got -1"
    ):
        _problems.digits(batch_size=-1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimizers", ""], "--optimizers got no name; valid optimizers: "),
        (["--optimizers", " , "], "--optimizers got no name"),
        (["--problem", ""], "--problem got no name; valid problems: "),
        (["--seed", "99999999999999999999"], "expected a whole number from 0 to 4294967295"),
        (["--seed", "-1"], "expected a whole number >= 0, got -1"),
        (["--steps", "1000000000000000"], "--steps 1000000000000000 would need about"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(argv, message, capsys, monkeypatch):
    from gbopt.demo import race

    def no_work(*args, **kwargs):
        raise AssertionError("the race started")

    monkeypatch.setattr(race, "race", no_work)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_out_must_be_a_writable_folder(tmp_path, capsys, monkeypatch):
    from gbopt.demo import race

    monkeypatch.setattr(race, "race", lambda *a, **k: pytest.fail("the race started"))
    a_file = tmp_path / "plots.png"
    a_file.write_text("")
    for out, message in [
        (a_file, f"--out {a_file} is a file"),
        (a_file / "sub", f"--out {a_file / 'sub'} cannot be created"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--out", str(out), "--problem", "quadratic"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    # A folder that does not exist yet is fine (the race creates it when it plots).
    new = tmp_path / "a" / "b"
    monkeypatch.setattr(race, "race", lambda *a, **k: 0)
    assert main(["--out", str(new), "--problem", "quadratic"]) == 0


@pytest.mark.slow
def test_charlm_problem_races_the_matrix_optimizers_only_when_named(tmp_path, capsys):
    assert (
        main(
            [
                "--problem",
                "charlm",
                "--steps",
                "3",
                "--optimizers",
                "adam,muon,sgd",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    sections = parse_sections(capsys.readouterr().out)
    assert list(sections) == ["charlm"]
    # sgd has no tuned rate on charlm: it does not run there
    assert [r["optimizer"] for r in sections["charlm"]["rows"]] == ["adam", "muon"]
    assert "charlm" not in _problems.PROBLEMS  # not in the default race
