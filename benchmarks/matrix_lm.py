"""AdamW, Muon, Shampoo and SOAP on the character-level language model: steps and time to a target.

Run from the repository root::

    python benchmarks/matrix_lm.py                 # all five rows, then the table and the plot
    python benchmarks/matrix_lm.py --optimizers muon   # one optimizer: writes its JSON
    python benchmarks/matrix_lm.py --report        # table and plot from the JSON files
    python benchmarks/matrix_lm.py --report --time 5   # first time the best rates side by side
    python benchmarks/matrix_lm.py --smoke         # tiny (used by the tests)

The model and data are ``gbopt.demo.charlm`` (the standard library's ``.py`` files; the
last 10 % of the bytes held out). The default size is 4 layers of width 256 (MLP 1024),
context 64: 3.30M parameters (3.15M in the 16 hidden matrices), trained for 150 steps of
batch 16 with a validation every 10 steps; the whole comparison, sweeps included, took
46 minutes on 2 CPU cores shared with other jobs (load average 4-6). ``--d-model 128 --steps 300
--eval-every 25`` is the earlier 0.87M-parameter comparison (about 20 minutes).

Five rows: AdamW, Muon, SOAP, and Shampoo twice: ``shampoo`` with the defaults of
``gbopt.shampoo`` (Distributed Shampoo's: RMSProp grafting without bias correction,
summed momentum) and ``shampoo_adam_graft`` with ``graft_type="adam"`` and
``moving_average_for_momentum=True``, the setting ``docs/matrix.md`` recommends (the
defaults take far larger steps than Adam at one rate; that page explains it).

Each optimizer runs a three-point learning-rate grid, a rate times 1/3, 1 and 3, centred
on the best rate of the 0.87M-parameter sweeps (AdamW and ``shampoo_adam_graft`` 1e-3,
``shampoo`` 3.3e-4, SOAP 3e-3; Muon's matrices 0.02, with its AdamW part at 3e-3); where
the best rate is at an edge of the grid, the grid is extended by a factor of 3 past that
edge (up to ``--extend`` times) so that the best rate is bracketed. AdamW's and Muon's
sweeps run as one ``jax.vmap`` over the rates (Shampoo's and SOAP's preconditioner
refresh is a ``lax.cond`` on the step, which ``vmap`` would turn into a refresh at every
step, so their rates run one after another; a rate added at an edge runs alone). The
best rate is the one with the lowest final validation loss. Its step is then timed
alone (``--time-steps`` consecutive steps after a warm-up; for Shampoo and SOAP that is
3 preconditioner periods, so the refresh is included at its frequency). Separate runs
see different loads on a shared machine, so ``--report --time N`` then times the best
rates side by side (N rounds, each running ``K`` = 10 consecutive steps of every
optimizer in random order, so one refresh of Shampoo's roots or SOAP's bases per round:
the refresh amortised at its frequency; the median over rounds of the mean step) and the
table uses that figure, and its ratio to AdamW's. The wall-clock time to a target is the
steps to the target (at the evaluation marks) times the step time; evaluation is not
counted. "state B/param" is the optimizer state's bytes over the number of parameters
(from ``jax.eval_shape`` of ``init``; the embeddings, head, norms and biases keep
AdamW's 8 bytes in every row).

The target (``--target``; default ``adamw``) is the best AdamW run's final validation
loss: the table then reads "steps and time to reach AdamW's final quality", the
speed-run convention; a number sets a fixed target instead. Each optimizer's results go
to ``--out/matrix_lm_<name>.json`` so that the runs can be split over several
invocations; ``--report`` reads them back, prints the table and plots every curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# LAPACK (eigh, qr) threads spin-wait on a busy CPU: a 256 x 256 eigh took 5 s with the
# default threads and 57 ms with one, on 2 shared cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gbopt  # noqa: E402
from gbopt.demo import charlm  # noqa: E402

K = 10  # the preconditioner period of Shampoo and SOAP

# Each grid is centred on the best rate of the sweeps on the 0.87M-parameter model
# (benchmarks/RESULTS.md), so that the bigger model's sweeps need fewer rates added at
# an edge (``--extend`` adds them where the best rate moved).
OPTIMIZERS = {
    # name: (factory lr -> transform, learning-rate grid, vmappable)
    "adamw": (
        lambda lr: gbopt.chain(gbopt.adam(lr), gbopt.add_decayed_weights(0.0)),
        (1e-3 / 3, 1e-3, 3e-3),
        True,
    ),
    # the matrices' rate; the AdamW part (embeddings, head, norms, biases) keeps 3e-3
    "muon": (lambda lr: gbopt.muon(lr, adam_learning_rate=3e-3), (0.02 / 3, 0.02, 0.06), True),
    "shampoo": (
        lambda lr: gbopt.shampoo(lr, preconditioning_compute_steps=K),
        (1e-3 / 9, 1e-3 / 3, 1e-3),
        False,
    ),
    # bias-corrected (Adam) grafting and averaged momentum: an Adam-sized step at one rate
    # (docs/matrix.md: why the defaults above stall on this model)
    "shampoo_adam_graft": (
        lambda lr: gbopt.shampoo(
            lr,
            preconditioning_compute_steps=K,
            graft_type="adam",
            moving_average_for_momentum=True,
        ),
        (1e-3 / 3, 1e-3, 3e-3),
        False,
    ),
    "soap": (lambda lr: gbopt.soap(lr, precondition_frequency=K), (1e-3, 3e-3, 1e-2), False),
}


def setup(args):
    config = charlm.CharLMConfig(
        seq_len=args.seq_len, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads
    )
    corpus = charlm.load_corpus(args.bytes, seed=0)
    train = jnp.asarray(corpus.train)
    valid = charlm.eval_batch(corpus.valid, config.seq_len, 64)
    params = charlm.init_params(jax.random.key(args.seed), config)
    return config, train, valid, params


def make_step(make, config, train, batch_size):
    def step(params, state, key, lr):
        tx = make(lr)
        batch = charlm.sample_batch(key, train, batch_size, config.seq_len)
        grads = jax.grad(charlm.loss)(params, batch, config)
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    return step


_JITTED: dict = {}


def jitted(name, config, train, valid, batch_size, vmapped):
    """One optimizer's jitted step and evaluation (vmapped over rates, or one rate).

    Built once per process (the data are fixed), so that a rate added at an edge of the
    grid and the timing of the best rate reuse the sweep's compiled code: Shampoo's step
    takes tens of seconds to compile on this model.
    """
    key = (name, config, batch_size, id(train), id(valid), vmapped)
    if key not in _JITTED:
        step = make_step(OPTIMIZERS[name][0], config, train, batch_size)
        evaluate = lambda p: charlm.evaluate(p, valid, config)  # noqa: E731
        if vmapped:
            step, evaluate = jax.vmap(step, in_axes=(0, 0, None, 0)), jax.vmap(evaluate)
        _JITTED[key] = jax.jit(step), jax.jit(evaluate)
    return _JITTED[key]


def run(name, lrs, args, config, train, valid, params, vmapped):
    """Trains with each rate; returns (eval steps, losses (n_lrs, n_evals), sweep seconds).

    ``vmapped``: all rates as one ``jax.vmap`` (a single rate runs without it, on the
    step that :func:`time_steps` reuses).
    """
    make = OPTIMIZERS[name][0]
    vmapped = vmapped and len(lrs) > 1
    jstep, evaluate = jitted(name, config, train, valid, args.batch_size, vmapped)
    keys = jax.random.split(jax.random.key(args.seed + 1), args.steps)
    marks = list(range(0, args.steps + 1, args.eval_every))
    lrs = jnp.asarray(lrs, jnp.float32)
    t0 = time.perf_counter()
    if vmapped:
        n = lrs.shape[0]
        ps = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), params)
        ss = jax.vmap(lambda lr: make(lr).init(params))(lrs)
        out = [np.asarray(evaluate(ps))]
        for i in range(args.steps):
            ps, ss = jstep(ps, ss, keys[i], lrs)
            if (i + 1) in marks:
                out.append(np.asarray(evaluate(ps)))
        return marks, np.stack(out, axis=1), time.perf_counter() - t0
    curves = []
    for lr in lrs:
        p, s = params, make(lr).init(params)
        losses = [float(evaluate(p))]
        for i in range(args.steps):
            p, s = jstep(p, s, keys[i], lr)
            if (i + 1) in marks:
                losses.append(float(evaluate(p)))
        curves.append(losses)
    return marks, np.asarray(curves), time.perf_counter() - t0


def time_steps(name, lr, args, config, train, valid, params):
    """Per-step seconds of ``n`` consecutive steps of the rate alone (after 1 untimed step)."""
    make = OPTIMIZERS[name][0]
    jstep, _ = jitted(name, config, train, valid, args.batch_size, False)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.time_steps + 1)
    lr = jnp.float32(lr)
    state = make(lr).init(params)
    t0 = time.perf_counter()
    params, state = jstep(params, state, keys[0], lr)
    jax.block_until_ready(params)
    first_s = time.perf_counter() - t0  # compiles unless a one-rate run did
    times = []
    for key in keys[1:]:
        t0 = time.perf_counter()
        params, state = jstep(params, state, key, lr)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
    return times, first_s


def time_interleaved(results, args, config, train, params, rounds: int) -> dict:
    """Per-step seconds of each best rate, timed side by side.

    Each round runs ``K`` consecutive steps of every optimizer (random order); an
    optimizer's figure is the median over rounds of its mean step in a round, so that
    the machine's load, which drifts between separate runs, weighs on all alike.
    """
    import random

    rng = random.Random(args.seed)
    runs = {}
    for r in results:
        make = OPTIMIZERS[r["name"]][0]
        lr = jnp.float32(r["learning_rates"][r["best"]])
        jstep = jax.jit(make_step(make, config, train, args.batch_size))
        p, s = params, make(lr).init(params)
        p, s = jstep(p, s, jax.random.key(0), lr)  # compile, and the first step
        jax.block_until_ready(p)
        runs[r["name"]] = [jstep, p, s, lr]
    means = {n: [] for n in runs}
    keys = jax.random.split(jax.random.key(args.seed + 3), K)
    for _ in range(rounds):
        order = list(runs)
        rng.shuffle(order)
        for n in order:
            jstep, p, s, lr = runs[n]
            t0 = time.perf_counter()
            for key in keys:
                p, s = jstep(p, s, key, lr)
            jax.block_until_ready(p)
            means[n].append((time.perf_counter() - t0) / K)
            runs[n][1:3] = [p, s]
    return {n: float(np.median(v)) for n, v in means.items()}


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_optimizer(name, args, config, train, valid, params) -> dict:
    _, sweep, vmappable = OPTIMIZERS[name]
    load_before = load_average()
    marks, losses, sweep_s = run(name, sweep, args, config, train, valid, params, vmappable)
    sweep = list(sweep)
    for _ in range(args.extend):
        final = np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)
        best = int(np.argmin(final))
        if 0 < best < len(sweep) - 1 or len(sweep) == 1:
            break
        lr = sweep[0] / 3 if best == 0 else sweep[-1] * 3  # the best is on an edge: extend
        _, more, more_s = run(name, [lr], args, config, train, valid, params, vmappable)
        sweep = [lr, *sweep] if best == 0 else [*sweep, lr]
        losses = np.concatenate([more, losses] if best == 0 else [losses, more])
        sweep_s += more_s
    final = np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)
    best = int(np.argmin(final))
    times, first_s = time_steps(name, sweep[best], args, config, train, valid, params)
    state = jax.eval_shape(OPTIMIZERS[name][0](jnp.float32(sweep[best])).init, params)
    return {
        "name": name,
        "learning_rates": list(sweep),
        "vmapped": vmappable,
        "marks": marks,
        "losses": losses.tolist(),
        "best": best,
        "step_seconds": times,
        "first_timed_call_seconds": first_s,
        "sweep_seconds": sweep_s,
        "load_average": [load_before, load_average()],
        "config": {
            k: getattr(args, k.replace("-", "_"))
            for k in ("steps", "eval_every", "d_model", "layers", "heads", "seq_len")
        }
        | {"batch_size": args.batch_size, "bytes": args.bytes, "seed": args.seed},
        "params": charlm.count_params(params),
        "state_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def steps_to(marks, curve, target):
    for m, loss in zip(marks, curve, strict=True):
        if np.isfinite(loss) and loss <= target:
            return m
    return None


def report(results: list[dict], target_arg: str, out: str) -> int:
    by = {r["name"]: r for r in results}
    if target_arg == "adamw":
        if "adamw" not in by:
            print("--target adamw needs AdamW's results; give a number instead.")
            return 1
        a = by["adamw"]
        target = float(a["losses"][a["best"]][-1])
        label = f"AdamW's final loss, {target:.3f}"
    else:
        target, label = float(target_arg), target_arg
    head = [
        "optimizer",
        "learning rates (sweep)",
        "best",
        "final val loss (best)",
        f"steps to {target:.3f}",
        f"time to {target:.3f}",
        "time / step",
        "step / AdamW",
        "state B/param",
        "sweep wall-clock",
    ]

    def step_of(r):
        return float(r.get("step_interleaved", np.mean(r["step_seconds"])))

    rows = []
    for r in results:
        lrs, best = r["learning_rates"], r["best"]
        curve = np.asarray(r["losses"][best], dtype=float)
        reached = steps_to(r["marks"], curve, target)
        mean = step_of(r)
        ratio = "—" if "adamw" not in by else f"{mean / step_of(by['adamw']):.2f}×"
        state = "—" if "state_bytes" not in r else f"{r['state_bytes'] / r['params']:.2f}"
        rows.append(
            [
                r["name"],
                " / ".join(f"{lr:.3g}" for lr in lrs) + (" (vmap)" if r["vmapped"] else ""),
                f"{lrs[best]:.3g}",
                f"{curve[-1]:.3f}",
                "not reached" if reached is None else str(reached),
                "—" if reached is None else f"{reached * mean:.1f} s",
                f"{1e3 * mean:.0f} ms" + ("" if "step_interleaved" in r else " (alone)"),
                ratio,
                state,
                f"{r['sweep_seconds']:.0f} s",
            ]
        )
    first = results[0]
    c = first["config"]
    print(
        f"char LM: {first['params']:,} parameters ({c['layers']} layers, width {c['d_model']}, "
        f"context {c['seq_len']}), batch {c['batch_size']}, {c['steps']} steps, validation "
        f"every {c['eval_every']}; target: {label}; JAX {first['jax']}\n"
    )
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nfinal validation loss of every rate:")
    for r in results:
        pairs = zip(r["learning_rates"], r["losses"], strict=True)
        finals = ", ".join(f"{lr:.3g}: {loss[-1]:.3f}" for lr, loss in pairs)
        print(f"  {r['name']}: {finals}  (load average {' -> '.join(r['load_average'])})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(plots need matplotlib)")
        return 0
    os.makedirs(out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    top = 0.0
    for k, r in enumerate(results):
        for j, lr in enumerate(r["learning_rates"]):
            loss = np.asarray(r["losses"][j], dtype=float)
            top = max(top, float(np.nanmax(loss[:1])))
            ax.plot(
                r["marks"],
                loss,
                color=f"C{k}",
                lw=2.0 if j == r["best"] else 1.0,
                alpha=1.0 if j == r["best"] else 0.35,
                label=f"{r['name']} {lr:.3g}",
            )
    ax.axhline(target, color="gray", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats / byte)")
    ax.set_ylim(max(0.0, target - 0.6), min(6.0, top + 0.2))
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"char LM on Python's standard library ({first['params'] / 1e6:.2f}M parameters)")
    path = os.path.join(out, "matrix_lm_loss.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nLoss curves: {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bytes", type=int, default=1_000_000)
    parser.add_argument("--time-steps", type=int, default=3 * K, help="steps timed alone")
    parser.add_argument("--target", default="adamw", help="validation loss (nats/byte), or 'adamw'")
    parser.add_argument(
        "--extend", type=int, default=2, help="rates added where the best is on an edge"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gbopt-out")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--report", action="store_true", help="only the table and the plot")
    parser.add_argument(
        "--time", type=int, default=0, help="rounds of side-by-side timing of the best rates"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, 10 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.eval_every, args.d_model, args.layers = 10, 5, 16, 1
        args.heads, args.seq_len, args.batch_size, args.bytes = 2, 16, 8, 20_000
        args.time_steps, args.extend = 3, 1  # one extra rate at an edge, not two
    names = args.optimizers.split(",")
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizers {unknown}; choose from {list(OPTIMIZERS)}")
    os.makedirs(args.out, exist_ok=True)
    paths = {n: os.path.join(args.out, f"matrix_lm_{n}.json") for n in names}
    if not args.report:
        config, train, valid, params = setup(args)
        print(
            f"char LM: {charlm.count_params(params):,} parameters; JAX {jax.__version__} on "
            f"{jax.devices()[0].platform}; load average {load_average()}",
            flush=True,
        )
        for name in names:
            result = run_optimizer(name, args, config, train, valid, params)
            with open(paths[name], "w") as f:
                json.dump(result, f)
            print(
                f"{name}: sweep {result['sweep_seconds']:.0f} s, best "
                f"{result['learning_rates'][result['best']]:g}, wrote {paths[name]}",
                flush=True,
            )
        if len(names) < len(OPTIMIZERS):
            return 0
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        print(f"missing results: {missing}; run those optimizers first.")
        return 1
    results = []
    for name in names:
        with open(paths[name]) as f:
            results.append(json.load(f))
    if args.time:
        config, train, _, params = setup(args)
        load_before = load_average()
        step = time_interleaved(results, args, config, train, params, args.time)
        for r in results:
            r["step_interleaved"] = step[r["name"]]
            r["step_interleaved_load"] = [load_before, load_average()]
            with open(paths[r["name"]], "w") as f:
                json.dump(r, f)
        print(f"side-by-side step times (s): {step}; load {load_before} -> {load_average()}")
    return report(results, args.target, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
