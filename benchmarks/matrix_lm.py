"""AdamW, Muon, Shampoo and SOAP on the character-level language model: steps and time to a target.

Run from the repository root::

    python benchmarks/matrix_lm.py                 # 2 layers, width 64, 300 steps (CPU, minutes)
    python benchmarks/matrix_lm.py --d-model 128 --layers 4 --steps 1000   # bigger
    python benchmarks/matrix_lm.py --smoke         # tiny (used by the tests)

The model and data are ``gbopt.demo.charlm`` (the standard library's ``.py`` files; the
last 10 % of the bytes held out). Each optimizer runs a small learning-rate sweep; AdamW's
and Muon's sweeps run as one ``jax.vmap`` over the rates (Shampoo's and SOAP's
preconditioner refresh is a ``lax.cond`` on the step, which ``vmap`` would turn into a
refresh at every step, so their rates run one after another). The best rate (lowest final
validation loss) is then run alone and timed: the table gives its steps and wall-clock
seconds to the target validation loss, and the loss curves of every run are plotted to
``--out``.
"""

from __future__ import annotations

import argparse
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

OPTIMIZERS = {
    # name: (factory lr -> transform, sweep, vmappable)
    "adamw": (
        lambda lr: gbopt.chain(gbopt.adam(lr), gbopt.add_decayed_weights(0.0)),
        (1e-3, 3e-3, 1e-2),
        True,
    ),
    "muon": (lambda lr: gbopt.muon(lr, adam_learning_rate=3e-3), (0.01, 0.02, 0.05), True),
    "shampoo": (
        lambda lr: gbopt.shampoo(lr, preconditioning_compute_steps=10),
        (1e-3, 3e-3, 1e-2),
        False,
    ),
    "soap": (lambda lr: gbopt.soap(lr, precondition_frequency=10), (1e-3, 3e-3, 1e-2), False),
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


def run(name, lrs, args, config, train, valid, params, vmapped):
    """Trains with each rate; returns (eval steps, losses (n_lrs, n_evals), seconds)."""
    make = OPTIMIZERS[name][0]
    step = make_step(make, config, train, args.batch_size)
    evaluate = jax.jit(lambda p: charlm.evaluate(p, valid, config))
    keys = jax.random.split(jax.random.key(args.seed + 1), args.steps)
    marks = list(range(0, args.steps + 1, args.eval_every))
    lrs = jnp.asarray(lrs, jnp.float32)
    if vmapped:
        n = lrs.shape[0]
        ps = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), params)
        ss = jax.vmap(lambda lr: make(lr).init(params))(lrs)
        vstep = jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0)))
        veval = jax.jit(jax.vmap(lambda p: charlm.evaluate(p, valid, config)))
        out = [np.asarray(veval(ps))]
        jax.block_until_ready(vstep(ps, ss, keys[0], lrs))  # compile outside the timing
        t0 = time.perf_counter()
        for i in range(args.steps):
            ps, ss = vstep(ps, ss, keys[i], lrs)
            if (i + 1) in marks:
                out.append(np.asarray(veval(ps)))
        return marks, np.stack(out, axis=1), time.perf_counter() - t0
    curves, total = [], 0.0
    for lr in lrs:
        marks_, losses, seconds = run_one(step, make, lr, params, keys, marks, evaluate)
        curves.append(losses)
        total += seconds
    return marks, np.stack(curves), total


def run_one(step, make, lr, params, keys, marks, evaluate, target=None):
    """One run, timed (evaluation excluded); stops early once ``target`` is reached."""
    state = make(lr).init(params)
    jstep = jax.jit(step)
    jax.block_until_ready(jstep(params, state, keys[0], lr))  # compile outside the timing
    losses, seconds, reached = [float(evaluate(params))], 0.0, None
    for i in range(len(keys)):
        t0 = time.perf_counter()
        params, state = jstep(params, state, keys[i], lr)
        jax.block_until_ready(params)
        seconds += time.perf_counter() - t0
        if (i + 1) in marks:
            losses.append(float(evaluate(params)))
            if target is not None and losses[-1] <= target and reached is None:
                reached = (i + 1, seconds)
                break
    return marks, np.asarray(losses), (seconds if target is None else (reached, seconds, i + 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bytes", type=int, default=200_000)
    parser.add_argument("--target", type=float, default=2.4, help="validation loss (nats/byte)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gbopt-out")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--smoke", action="store_true", help="tiny model, 10 steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.eval_every, args.d_model, args.layers = 10, 5, 16, 1
        args.heads, args.seq_len, args.batch_size, args.bytes = 2, 16, 8, 20_000
    config, train, valid, params = setup(args)
    print(
        f"char LM: {charlm.count_params(params):,} parameters ({args.layers} layers, width "
        f"{args.d_model}, context {args.seq_len}), batch {args.batch_size}, {args.steps} steps; "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}\n"
    )
    rows, curves = [], {}
    for name in args.optimizers.split(","):
        make, sweep, vmappable = OPTIMIZERS[name]
        marks, losses, sweep_s = run(name, sweep, args, config, train, valid, params, vmappable)
        best = int(np.nanargmin(np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)))
        curves[name] = (marks, losses, sweep)
        step = make_step(make, config, train, args.batch_size)
        keys = jax.random.split(jax.random.key(args.seed + 1), args.steps)
        evaluate = jax.jit(lambda p: charlm.evaluate(p, valid, config))
        _, _, (reached, seconds, done) = run_one(
            step, make, jnp.float32(sweep[best]), params, keys, marks, evaluate, args.target
        )
        rows.append(
            [
                name,
                " / ".join(f"{lr:g}" for lr in sweep) + (" (vmap)" if vmappable else ""),
                f"{sweep[best]:g}",
                f"{losses[best, -1]:.3f}",
                "-" if reached is None else str(reached[0]),
                "-" if reached is None else f"{reached[1]:.1f} s",
                f"{1e3 * seconds / done:.1f} ms",
                f"{sweep_s:.0f} s",
            ]
        )
    head = [
        "optimizer",
        "learning rates",
        "best",
        "final val loss",
        f"steps to {args.target}",
        f"time to {args.target}",
        "time / step",
        "sweep time",
    ]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(plots need matplotlib)")
        return 0
    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, (marks, losses, sweep)) in enumerate(curves.items()):
        for j, lr in enumerate(sweep):
            ax.plot(
                marks,
                losses[j],
                color=f"C{k}",
                alpha=0.35 + 0.65 * (j == int(np.nanargmin(losses[:, -1]))),
                label=f"{name} {lr:g}",
            )
    ax.axhline(args.target, color="gray", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats / byte)")
    ax.set_ylim(top=min(6.0, float(np.nanmax([c[1][:, 0].max() for c in curves.values()])) + 0.2))
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("char LM on Python's standard library")
    path = os.path.join(args.out, "matrix_lm_loss.png")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nLoss curves: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
