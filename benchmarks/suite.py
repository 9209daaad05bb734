"""gbopt vs optax vs torch.optim on the CPU: step time, bytes, compile time, memory, scan, vmap.

Run from the repository root::

    python benchmarks/suite.py            # the full suite (about 15 minutes on 2 cores)
    python benchmarks/suite.py --quick    # smaller workloads, fewer rounds (under 2 minutes)
    python benchmarks/suite.py --smoke    # seconds: proves the script runs (used by the tests)

It prints markdown; ``--output FILE`` also writes it to FILE. JAX runs on the CPU unless
``JAX_PLATFORMS`` says otherwise: on a GPU machine, ``JAX_PLATFORMS=cuda python
benchmarks/suite.py`` times gbopt and optax on the GPU (and the in-place kernel gives the
HBM bandwidth reached); the torch.optim rows stay on the CPU. See ``_harness.py`` for how
steps are built and timed. Only ratios measured side by side in one run mean much on a
shared machine: each table says how noisy its rounds were.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import NamedTuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gbopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

# Rounds x steps per round, per mode; a time budget per measurement caps slow machines.
# Sessions per comparison (see _harness.compare): two, in opposite creation orders; the
# smoke run (which only proves that the script runs) has one, so each step compiles once.
SETTINGS = {
    "full": dict(
        rounds=1000,
        budget_s=24.0,
        counts=(100, 300, 1000, 3000),
        compile_reps=3,
        compile_budget_s=8,
        catalog_compile_budget_s=24,
        sessions=2,
    ),
    "quick": dict(
        rounds=200,
        budget_s=0.6,
        counts=(100, 300),
        compile_reps=1,
        compile_budget_s=0,
        catalog_compile_budget_s=12,
        sessions=2,
    ),
    "smoke": dict(
        rounds=2,
        budget_s=1.0,
        counts=(10,),
        compile_reps=1,
        compile_budget_s=0,
        catalog_compile_budget_s=0,
        sessions=1,
    ),
}


def emit(out: list[str], text: str = "") -> None:
    print(text, flush=True)
    out.append(text)


# ---------------------------------------------------------------------------------------
# Step time, bytes, compile time and memory, per workload and optimizer


def _jax_info(runner: h.JaxRunner):
    return (runner.stats, runner.state_bytes) if isinstance(runner, h.JaxRunner) else None


class CompileTimes(NamedTuple):
    """Compile times (trace + lower + compile) of gbopt and optax, from interleaved rounds."""

    gbopt_s: float  # median
    optax_s: float  # median
    ratio: float  # median of the rounds' gbopt / optax
    interval: tuple[float, float] | None  # 95% interval of that median (median_interval)
    control: float  # median of the rounds' optax / optax (catalog; else nan)
    control_interval: tuple[float, float] | None


def compile_times(
    opt: h.Optimizer, params, t: h.Comparison, budget_s: float, fresh: bool = False
) -> CompileTimes:
    """Compile times of gbopt and optax, and the median of their ratios over rounds.

    The sessions' compiles, plus more interleaved rounds (up to 9 in all) while they fit in
    ``budget_s``. The ratio is the median of the rounds' ratios: the compiles of a round
    run back to back, so a change in the machine's load moves them together.

    With ``fresh`` (the catalog), only the further rounds count when at least three fit:
    the sessions' compiles are each program's first in the process (colder caches, and in
    the quick mode only two of them), which for programs that compile in 30-100 ms moved
    single cells by 2x between runs. Each further round also compiles optax's program a
    second time: the *control*, optax / optax in the same rounds, is what the statistic
    reads for two compiles of one program, so a gbopt / optax cell differs from 1 by more
    than noise only where its interval excludes 1 while the control's includes it.
    """
    g = [i[0].total_s for i in t.info["gbopt"]]
    o = [i[0].total_s for i in t.info["optax"]]
    c: list[float] = []
    first = len(g)
    p = jax.tree.map(jnp.asarray, params)
    start = time.perf_counter()
    sides = [(opt.optax, optax.apply_updates, o), (opt.gbopt, gbopt.apply_updates, g)]
    if fresh:
        sides.append((opt.optax, optax.apply_updates, c))
    while len(g) - (first if fresh else 0) < 9 and (
        time.perf_counter() - start + sum(x[-1] for x in (g, o, c) if x) < budget_s
    ):
        for make, apply, acc in sides[:: 1 if len(g) % 2 else -1]:
            tx = make()
            acc.append(h.compile_step(h.step_fn(tx, apply), p, tx.init(p), p).total_s)
    if fresh and len(g) - first >= 3:
        g, o = g[first:], o[first:]
    else:
        c = []
    ratios = [a / b for a, b in zip(g, o, strict=True)]
    controls = [a / b for a, b in zip(c, o, strict=True)] if c else []
    return CompileTimes(
        statistics.median(g),
        statistics.median(o),
        statistics.median(ratios),
        h.median_interval(ratios),
        statistics.median(controls) if controls else float("nan"),
        h.median_interval(controls) if controls else None,
    )


_CATALOG_COMPILES = (
    "the median ratio over 3 to 9 interleaved rounds of compiles (trace + lower + compile), "
    "made after the step-time sessions with Python's garbage collector paused in each, as "
    "many as fit in the mode's catalog budget (else the sessions' own compiles). Each round "
    "compiles optax's program twice: the *control*, optax / optax in the same rounds, shows "
    "what the statistic reads for one program against itself. In brackets, the 95% interval "
    "of each median (the sign test's, for 6 or more rounds)."
)


def _compare_jax(factories: dict, s: dict) -> h.Comparison:
    """gbopt against optax (and the in-place kernel) with the mode's rounds, budget and
    sessions, keeping XLA's analyses of each compiled step."""
    return h.compare(
        factories,
        rounds=s["rounds"],
        budget_s=s["budget_s"],
        keep=_jax_info,
        sessions=s["sessions"],
    )


def bench_workload(
    wl: h.Workload,
    s: dict,
    bandwidth: h.BandwidthRunner | None,
    out,
    summary,
    optimizers: list[h.Optimizer] = h.OPTIMIZERS,
    catalog: bool = False,
):
    params, grads = wl.arrays()
    try:
        import torch  # noqa: F401

        use_torch = True
    except ImportError:
        use_torch = False
    emit(out, f"### {wl.label()}\n")
    time_rows, xla_rows = [], []
    n = wl.size
    for opt in optimizers:
        factories = {
            "gbopt": lambda opt=opt: h.JaxRunner(opt.gbopt(), gbopt.apply_updates, params, grads),
            "optax": lambda opt=opt: h.JaxRunner(opt.optax(), optax.apply_updates, params, grads),
        }
        if bandwidth is not None and wl.leaves == 1:
            factories["in-place kernel"] = lambda: bandwidth
        t = _compare_jax(factories, s)
        (g_stats, g_state), (o_stats, o_state) = t.info["gbopt"][0], t.info["optax"][0]
        ct = (
            compile_times(opt, params, t, s["catalog_compile_budget_s"], fresh=True)
            if catalog
            else compile_times(opt, params, t, s["compile_budget_s"])
        )
        r = t.ratio("gbopt", "optax")
        summary.setdefault(opt.name, {})[wl.name] = (r, ct)
        torch_cells = ["—", "—"]
        if use_torch and opt.torch is not None:
            torch_factories = {
                name: (lambda f=f: h.TorchRunner(f, params, grads))
                for name, f in opt.torch().items()
            }
            tt = h.compare(
                torch_factories,
                rounds=s["rounds"],
                budget_s=s["budget_s"] / 2,
                sessions=s["sessions"],
            )
            for i, name in enumerate(("torch foreach", "torch fused")):
                if name in torch_factories:
                    ratio_to_optax = tt.median(name) / t.median("optax")
                    torch_cells[i] = f"{h.ms(tt.median(name))} ({h.ratio(ratio_to_optax)})"
        noise = max(t.spread("gbopt"), t.spread("optax"))
        time_rows.append(
            [opt.name, h.ms(t.median("gbopt")), h.ms(t.median("optax")), *torch_cells]
            + [f"**{h.ratio(r)}**", h.ratio(t.best("gbopt") / t.best("optax"))]
            + ["—" if noise != noise else f"±{noise:.0%}", t.count]
        )
        if bandwidth is not None:
            if "in-place kernel" in factories:
                rmw = bandwidth.gbps(t.median("in-place kernel"))
                summary.setdefault("_rmw", []).append(rmw)
            else:
                rmw = statistics.median(summary.get("_rmw", [float("nan")]))
            achieved = opt.min_bytes * n / t.median("gbopt") / 1e9
            gbs = f"{achieved:.1f} ({achieved / rmw:.0%})"
        else:
            gbs = "—"
        xla_rows.append(
            [
                opt.name,
                f"{g_stats.bytes_accessed / n:.1f} / {o_stats.bytes_accessed / n:.1f} "
                f"({opt.min_bytes})",
                f"{g_stats.fusions} / {o_stats.fusions}",
                f"{ct.gbopt_s:.2f} / {ct.optax_s:.2f} ({_compile_cell(ct)})",
                f"{g_stats.temp_bytes:,} / {o_stats.temp_bytes:,}",
                f"{g_state / (4 * n):.2f} / {o_state / (4 * n):.2f}",
                gbs,
            ]
        )
    emit(
        out,
        h.table(
            [
                "optimizer",
                "gbopt",
                "optax",
                "torch foreach (/optax)",
                "torch fused (/optax)",
                "gbopt/optax",
                "ratio of best",
                "noise",
                "rounds",
            ],
            time_rows,
        ),
    )
    emit(out)
    emit(
        out,
        h.table(
            [
                "optimizer",
                "XLA bytes/param gbopt / optax (rule's minimum)",
                "fused loops",
                "compile s (ratio)",
                "temp bytes",
                "state / params",
                "gbopt GB/s (of in-place kernel)",
            ],
            xla_rows,
        ),
    )
    emit(out)


# ---------------------------------------------------------------------------------------
# The catalog: optax's names that gbopt has, each against optax's own


def _selected_workloads(mode: str, workloads: list[str] | None) -> list[h.Workload]:
    """The mode's workloads whose name contains one of ``workloads`` (all for None)."""
    return [w for w in h.workloads(mode) if not workloads or any(k in w.name for k in workloads)]


def bench_catalog(
    mode: str, s: dict, names: list[str] | None, workloads: list[str] | None, out
) -> None:
    selected = [o for o in h.CATALOG if not names or o.name in names]
    emit(out, "## The catalog: step and compile time against optax, name by name\n")
    emit(
        out,
        "Each row calls `gbopt.<name>` and `optax.<name>` with the same arguments (optax's "
        "defaults; learning rate 1e-3, LARS 1.0); columns as in the section above, except "
        f"compile time: {_CATALOG_COMPILES}\n",
    )
    summary: dict = {}
    wls = _selected_workloads(mode, workloads)
    for wl in wls:
        bench_workload(wl, s, None, out, summary, selected, catalog=True)
    emit(out, "### Summary: gbopt / optax step time (compile time), the catalog\n")
    names_ = [w.name for w in wls]
    rows = [
        [opt.name]
        + [
            f"{h.ratio(summary[opt.name][w][0])} ({h.ratio(summary[opt.name][w][1].ratio)})"
            for w in names_
        ]
        for opt in selected
    ]
    emit(out, h.table(["optimizer", *names_], rows))
    emit(out)
    emit(out, _compile_verdict({(o, w): cs[w][1] for o, cs in summary.items() for w in cs}))


def _compile_cell(ct: CompileTimes) -> str:
    """``ratio [interval]``, and the control's, for the XLA table's compile column."""

    def span(interval):
        return "" if interval is None else f" [{interval[0]:.2f}–{interval[1]:.2f}]"

    cell = h.ratio(ct.ratio) + span(ct.interval)
    if not math.isnan(ct.control):
        cell += f"; control {h.ratio(ct.control)}{span(ct.control_interval)}"
    return cell


def _compile_verdict(compiles: dict[tuple[str, str], CompileTimes]) -> str:
    """How many cells' compile ratios are at most 1, and which differ from 1 beyond noise.

    A cell counts as at most 1.00× as the tables print it (to two decimals); those above
    are listed with their intervals and controls.
    """
    if not compiles:
        return ""

    def count(cells, value, interval):
        over = [k for k, c in cells if round(value(c), 2) > 1]
        above = [k for k, c in cells if interval(c) is not None and interval(c)[0] > 1]
        below = [k for k, c in cells if interval(c) is not None and interval(c)[1] < 1]
        return over, above, below

    cells = list(compiles.items())
    over, above, below = count(cells, lambda c: c.ratio, lambda c: c.interval)
    controlled = [(k, c) for k, c in cells if not math.isnan(c.control)]
    c_over, c_above, c_below = count(controlled, lambda c: c.control, lambda c: c.control_interval)
    ranged = sum(c.interval is not None for _, c in cells)
    listed = ", ".join(f"{o} ({w})" for o, w in above) or "none"
    over_list = "; ".join(f"{o} ({w}) {_compile_cell(compiles[o, w])}" for o, w in over)
    return (
        f"Compile time, gbopt / optax: at most 1.00× in {len(cells) - len(over)} of "
        f"{len(cells)} cells. Of the {ranged} cells with a 95% interval (6 or more rounds), "
        f"the interval lies wholly below 1 in {len(below)} and wholly above 1 in "
        f"{len(above)} ({listed}). The control, optax / optax in the same rounds "
        f"({len(controlled)} cells), is above 1.00× in {len(c_over)}; its interval lies "
        f"wholly above 1 in {len(c_above)} and wholly below 1 in {len(c_below)}."
        + (f" Above 1.00×: {over_list}." if over else "")
        + "\n"
    )


# ---------------------------------------------------------------------------------------
# Compile time against leaf count


def bench_compile_scaling(s: dict, out) -> None:
    emit(out, "## Compile time (trace + lower + compile) against leaf count\n")
    emit(
        out,
        "Leaves of 64 float32 each, one donated step; medians of "
        f"{s['compile_reps']} interleaved compile(s) per cell. All leaves have one shape, "
        "so XLA compiles each distinct fused loop once; trace and lower grow with the leaf "
        "count.\n",
    )
    cases = [("adam", lambda: gbopt.adam(1e-3), lambda: optax.adam(1e-3))]
    if s["compile_reps"] > 1:
        cases.append(
            (
                "clip_by_global_norm + adam",
                lambda: gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.adam(1e-3)),
                lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
            )
        )
    rows = []
    for name, make_g, make_o in cases:
        for count in s["counts"]:
            p = {f"w{i:04d}": jnp.full((64,), 0.5, jnp.float32) for i in range(count)}
            libs = {"gbopt": (make_g, gbopt.apply_updates), "optax": (make_o, optax.apply_updates)}
            got: dict[str, list[h.CompiledStep]] = {k: [] for k in libs}
            for rep in range(s["compile_reps"]):
                for lib in list(libs)[rep % 2 :] + list(libs)[: rep % 2]:
                    make, apply = libs[lib]
                    tx = make()
                    got[lib].append(h.compile_step(h.step_fn(tx, apply), p, tx.init(p), p))

            def med(lib, attr, got=got):
                return statistics.median(getattr(c, attr) for c in got[lib])

            rows.append(
                [name, count]
                + [
                    f"{med(lib, 'trace_s'):.2f} / {med(lib, 'lower_s'):.2f} / "
                    f"{med(lib, 'compile_s'):.2f} = **{med(lib, 'total_s'):.2f}**"
                    for lib in libs
                ]
                + [h.ratio(med("gbopt", "total_s") / med("optax", "total_s"))]
            )
    emit(
        out,
        h.table(
            [
                "transform",
                "leaves",
                "gbopt trace / lower / compile = total (s)",
                "optax (s)",
                "gbopt/optax",
            ],
            rows,
        ),
    )
    emit(out)


# ---------------------------------------------------------------------------------------
# Whole runs as one compiled call (lax.scan) and sweeps as one vmapped call


def rosenbrock(p):
    return (1.0 - p["x"]) ** 2 + 100.0 * (p["y"] - p["x"] ** 2) ** 2


def logistic_problem(n: int = 512, d: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    w_true = rng.standard_normal(d, dtype=np.float32)
    y = (x @ w_true + 0.5 * rng.standard_normal(n, dtype=np.float32) > 0).astype(np.float32)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def loss(p):
        logits = x @ p["w"] + p["b"]
        return jnp.mean(jax.nn.softplus(logits) - y * logits)

    return loss, {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}


def make_scan_run(loss, make_tx, apply, steps):
    """``run(params, lr) -> (params, final loss)``: the whole run as one ``lax.scan``."""

    def run(params, lr):
        tx = make_tx(lr)

        def body(carry, _):
            p, state = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, state = tx.update(grads, state, p)
            return (apply(p, updates), state), value

        (params, _), values = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return params, values[-1]

    return run


def make_loop_run(loss, make_tx, apply, steps):
    """The same run as a Python loop of jitted, donated steps (lr passed, compiled once)."""

    def step(p, state, lr):
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = make_tx(lr).update(grads, state, p)
        return apply(p, updates), state, value

    jstep = jax.jit(step, donate_argnums=(0, 1))

    def run(params, lr):
        p = jax.tree.map(jnp.array, params)
        state = make_tx(lr).init(p)
        value = None
        for _ in range(steps):
            p, state, value = jstep(p, state, lr)
        return p, value

    return run


def timed(fn, *args, reps: int = 1):
    """Median wall time of ``fn(*args)`` (results ready, after one untimed call)."""
    result = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_scan_vmap(mode: str, out) -> None:
    steps = 20 if mode == "smoke" else 1000
    n_lr = 4 if mode == "smoke" else 64
    reps = 1 if mode == "smoke" else 3 if mode == "quick" else 9
    budget = 0.5 if mode == "smoke" else 1.5 if mode == "quick" else 10.0
    sessions = SETTINGS[mode]["sessions"]
    emit(out, "## Whole runs as one compiled call, sweeps as one vmapped call\n")
    emit(
        out,
        f"Adam, {steps} steps. *Loop*: a Python loop of jitted, donated steps (compiled "
        "once, learning rate passed as an argument). *Scan*: the whole run as one "
        "`jax.lax.scan` in one `jax.jit`. Times exclude compilation: loops and scans are "
        "each timed in interleaved rounds (gbopt and optax, two sessions as above); "
        "compile times are listed separately.\n",
    )
    loss_lr, p_lr = logistic_problem()
    problems = [
        ("Rosenbrock from (-1.5, 2)", rosenbrock, {"x": jnp.float32(-1.5), "y": jnp.float32(2)}),
        ("logistic regression (512 x 32)", loss_lr, p_lr),
    ]
    libs = {
        "gbopt": (lambda lr: gbopt.adam(lr), gbopt.apply_updates),
        "optax": (lambda lr: optax.adam(lr), optax.apply_updates),
    }
    rows = []
    lr = jnp.float32(1e-2)
    for label, loss, params in problems:

        def loop_runner(lib, loss=loss, params=params):
            make_tx, apply = libs[lib]
            return h.CallRunner(make_loop_run(loss, make_tx, apply, steps), params, lr)

        def scan_runner(lib, loss=loss, params=params):
            make_tx, apply = libs[lib]
            t0 = time.perf_counter()
            scan = jax.jit(make_scan_run(loss, make_tx, apply, steps)).lower(params, lr).compile()
            runner = h.CallRunner(scan, params, lr)
            runner.compile_s = time.perf_counter() - t0
            return runner

        loops = h.compare(
            {lib: (lambda lib=lib: loop_runner(lib)) for lib in libs},
            rounds=reps,
            budget_s=budget,
            sessions=sessions,
        )
        scans = h.compare(
            {lib: (lambda lib=lib: scan_runner(lib)) for lib in libs},
            rounds=1000,
            budget_s=budget,
            keep=lambda r: (r.compile_s, r.result[0]),
            sessions=sessions,
        )
        cells = []
        for lib in libs:
            loop, scan = loops.median(lib), scans.median(lib)
            compile_s = statistics.median(c for c, _ in scans.info[lib])
            cells += [h.ms(loop), h.ms(scan), f"**{loop / scan:.0f}×**", h.ms(compile_s)]
        diff = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(
                jax.tree.leaves(scans.info["gbopt"][0][1]),
                jax.tree.leaves(scans.info["optax"][0][1]),
                strict=True,
            )
        )
        rows.append([label, *cells, h.ratio(scans.ratio("gbopt", "optax")), f"{diff:.1e}"])
    emit(
        out,
        h.table(
            [
                "problem",
                "gbopt loop",
                "gbopt scan",
                "scan speed-up",
                "scan compile",
                "optax loop",
                "optax scan",
                "scan speed-up",
                "scan compile",
                "gbopt/optax scan",
                "max |gbopt - optax| after the run",
            ],
            rows,
        ),
    )
    emit(out)

    # The sweep: n_lr learning rates on the logistic regression.
    lrs = jnp.logspace(-4, 0, n_lr, dtype=jnp.float32)
    g_make, g_apply = libs["gbopt"]
    o_make, o_apply = libs["optax"]
    g_run = make_scan_run(loss_lr, g_make, g_apply, steps)
    sweep = jax.jit(jax.vmap(g_run, in_axes=(None, 0)))
    t0 = time.perf_counter()
    sweep_c = sweep.lower(p_lr, lrs).compile()
    c_sweep = time.perf_counter() - t0
    single = jax.jit(g_run).lower(p_lr, lrs[0]).compile()
    o_scan = jax.jit(make_scan_run(loss_lr, o_make, o_apply, steps)).lower(p_lr, lrs[0]).compile()
    o_loop = make_loop_run(loss_lr, o_make, o_apply, steps)
    runners = {
        "vmap": h.CallRunner(sweep_c, p_lr, lrs),
        "seq": h.CallRunner(lambda: [single(p_lr, x)[1] for x in lrs]),
        "oscan": h.CallRunner(lambda: [o_scan(p_lr, x)[1] for x in lrs]),
    }
    t = h.interleave(runners, rounds=max(1, reps), warmup=1, budget_s=budget)
    t_sweep, t_seq, t_oscan = t.median("vmap"), t.median("seq"), t.median("oscan")
    losses_v, losses_seq = runners["vmap"].result[1], runners["seq"].result
    losses_oscan = runners["oscan"].result
    # The slow baseline (seconds) once, between two timings of the vmapped call.
    t_oloop, losses_oloop = timed(lambda: [o_loop(p_lr, x)[1] for x in lrs])
    t_sweep = statistics.median([t_sweep, timed(sweep_c, p_lr, lrs)[0]])

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))

    emit(
        out,
        f"**A sweep over {n_lr} learning rates** (logistic regression, {steps} Adam steps "
        f"each, learning rates 1e-4 … 1; the vmapped call compiled in {c_sweep:.2f} s):\n",
    )
    emit(
        out,
        h.table(
            ["how", "time", "vmapped call is faster by", "final losses vs the vmapped call"],
            [
                [f"gbopt: one vmapped scan call ({n_lr} runs)", h.ms(t_sweep), "1×", "—"],
                [
                    f"gbopt: {n_lr} scan calls in a Python loop",
                    h.ms(t_seq),
                    f"{t_seq / t_sweep:.1f}×",
                    f"max rel. diff {rel(losses_seq, losses_v):.1e}",
                ],
                [
                    f"optax: {n_lr} runs, each one scan call",
                    h.ms(t_oscan),
                    f"{t_oscan / t_sweep:.1f}×",
                    f"max rel. diff {rel(losses_oscan, losses_v):.1e}",
                ],
                [
                    f"optax: {n_lr} runs, each a Python loop of jitted steps",
                    h.ms(t_oloop),
                    f"**{t_oloop / t_sweep:.0f}×**",
                    f"max rel. diff {rel(losses_oloop, losses_v):.1e}",
                ],
            ],
        ),
    )
    emit(out)


# ---------------------------------------------------------------------------------------


def bench_catalog_b(
    mode: str,
    s: dict,
    out: list[str],
    names: list[str] | None = None,
    workloads: list[str] | None = None,
) -> None:
    """Step and compile time of the catalog's names against optax's, per workload."""
    wls = _selected_workloads(mode, workloads)
    emit(out, "## The catalog: gbopt / optax step time (compile time) per name\n")
    emit(
        out,
        "Same protocol as the step-time tables above (medians of interleaved rounds), for "
        f"each catalog name with optax's arguments. Compile time: {_CATALOG_COMPILES} Notes: "
        + "; ".join(f"{o.name}: {o.note}" for o in h.CATALOG_B if o.note)
        + ".\n",
    )
    rows, compiles = [], {}
    for opt in [o for o in h.CATALOG_B if not names or o.name in names]:
        cells = [opt.name]
        for wl in wls:
            params, grads = wl.arrays()
            donate = () if opt.name == "lbfgs" else (0, 1)
            factories = {
                "gbopt": lambda o=opt, p=params, g=grads, d=donate: h.JaxRunner(
                    o.gbopt(), gbopt.apply_updates, p, g, donate=d
                ),
                "optax": lambda o=opt, p=params, g=grads, d=donate: h.JaxRunner(
                    o.optax(), optax.apply_updates, p, g, donate=d
                ),
            }
            t = _compare_jax(factories, s)
            ct = compile_times(opt, params, t, s["catalog_compile_budget_s"], fresh=True)
            compiles[opt.name, wl.name] = ct
            cells.append(
                f"{h.ratio(t.ratio('gbopt', 'optax'))} ({h.ratio(ct.ratio)}); "
                f"{h.ms(t.median('gbopt'))}"
            )
        rows.append(cells)
    emit(out, h.table(["name", *[w.label() for w in wls]], rows))
    emit(out, "\nEach cell: step-time ratio (compile-time ratio); gbopt's median step.\n")
    emit(out, _compile_verdict(compiles))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller workloads (< 2 minutes)")
    group.add_argument("--smoke", action="store_true", help="the smallest configuration")
    parser.add_argument("--output", help="also write the markdown to this file")
    parser.add_argument(
        "--only",
        choices=["steps", "compile", "scan", "catalog"],
        action="append",
        help="run only these sections (repeatable); 'catalog' (not in the default run) times "
        "the optax names of the catalog (adamw ... lars) on the same workloads",
    )
    parser.add_argument(
        "--name",
        action="append",
        help="with --only catalog: time only these names (repeatable)",
    )
    parser.add_argument(
        "--workload",
        action="append",
        help="with --only catalog: only the workloads whose name contains this (repeatable)",
    )
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    s = SETTINGS[mode]
    sections = set(args.only or ["steps", "compile", "scan"])
    out: list[str] = []
    start = time.perf_counter()
    emit(out, f"# gbopt benchmark suite ({mode})\n")
    for line in h.machine_lines():
        emit(out, line)
    emit(out)

    if "steps" in sections:
        wls = h.workloads(mode)
        bandwidth = None
        if mode != "smoke":
            bandwidth = h.BandwidthRunner(max(w.size for w in wls))
            t = h.interleave({"k": bandwidth}, rounds=3, steps=10)
            emit(
                out,
                f"In-place read-modify-write kernel `x <- a*x + b` on {max(w.size for w in wls):,}"
                f" float32 (8 bytes per element): **{bandwidth.gbps(t.median('k')):.1f} GB/s** "
                "before the runs; it is re-timed inside the one-large-leaf rounds, and the "
                "GB/s columns below use that figure.\n",
            )
        emit(out, "## Step time, bytes and compile time per workload\n")
        emit(
            out,
            "Medians of per-step times over interleaved rounds, in two sessions that create "
            "the implementations in opposite orders (gbopt and optax in one block, the "
            "PyTorch implementations in the next; their ratio to optax compares medians of "
            "the two blocks); *gbopt/optax* is the geometric mean over the sessions of the "
            "median per-round ratio, *ratio of best* compares the fastest steps; *noise* is "
            "the half inter-quartile range of gbopt's and optax's step times; *compile* is "
            "the median of 2 to 7 interleaved compiles. Conventions per optimizer: "
            + "; ".join(f"{o.name}: {o.note}" for o in h.OPTIMIZERS)
            + ". Second table: XLA's `cost_analysis()` bytes accessed per parameter, fused "
            "loops in the compiled step, compile time (trace + lower + compile), "
            "`memory_analysis()` temporary bytes, state size over parameter size, and gbopt's "
            "effective bandwidth (the rule's minimum bytes over the step time).\n",
        )
        summary: dict = {}
        for wl in wls:
            bench_workload(wl, s, bandwidth, out, summary)
        emit(out, "### Summary: gbopt / optax step time (compile time)\n")
        names = [w.name for w in wls]
        rows = [
            [opt.name]
            + [
                f"{h.ratio(summary[opt.name][w][0])} ({h.ratio(summary[opt.name][w][1].ratio)})"
                for w in names
            ]
            for opt in h.OPTIMIZERS
        ]
        emit(out, h.table(["optimizer", *names], rows))
        emit(out)
    if "catalog" in sections:
        known = {o.name for o in h.CATALOG + h.CATALOG_B}
        if set(args.name or ()) - known:
            raise SystemExit(f"--name: not in the catalog: {sorted(set(args.name) - known)}")
        if not args.name or set(args.name) & {o.name for o in h.CATALOG}:
            bench_catalog(mode, s, args.name, args.workload, out)
        if not args.name or set(args.name) & {o.name for o in h.CATALOG_B}:
            bench_catalog_b(mode, s, out, args.name, args.workload)
    if "compile" in sections:
        bench_compile_scaling(s, out)
    if "scan" in sections:
        bench_scan_vmap(mode, out)
    emit(out, f"_Suite ran in {time.perf_counter() - start:.0f} s._")
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
