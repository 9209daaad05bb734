"""Matrix optimizers' steps on a GPT-2-small-shaped tree: Muon vs optax, Shampoo/SOAP vs AdamW.

Run from the repository root::

    python benchmarks/matrix_step.py              # 2 layers of GPT-2 small (d = 768)
    python benchmarks/matrix_step.py --layers 12  # all of GPT-2 small (slow on a CPU)
    python benchmarks/matrix_step.py --smoke      # tiny (used by the tests)

The tree is ``_harness.transformer_shapes(layers, 768, 50257)``: per layer a
768×2304 (qkv), 768×768 (out), 768×3072 (MLP in) and 3072×768 (MLP out) matrix, plus
biases, norms and the 50257×768 embedding. The matrices go to the matrix rule, the rest
to AdamW, in both libraries. One step is the harness's jitted, donated
``update + apply_updates``, float32, fixed gradients; implementations are timed in
interleaved rounds (random order each round) and a ratio is the median of the per-round
ratios. Shampoo and SOAP recompute their preconditioners every 10 steps, and each round
times 10 consecutive steps, so their figures include that cost amortised. Compile time is
the median of interleaved fresh compiles (trace + lower + compile). "State B/param" is
the optimizer state's bytes per parameter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# LAPACK (eigh, qr) threads spin-wait on a busy CPU: a 256 x 256 eigh took 5 s with the
# default threads and 57 ms with one, on 2 shared cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import optax  # noqa: E402

import gbopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

K = 10  # preconditioner period of Shampoo and SOAP


def is_matrix(name: str) -> bool:
    return name.endswith(".w")


def factories(shapes):
    rule = lambda path, x: is_matrix(path[-1])  # noqa: E731
    dims = {k: (optax.contrib.MuonDimensionNumbers() if is_matrix(k) else None) for k in shapes}
    return {
        "optax.contrib.muon": lambda: optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims),
        "gbopt.muon": lambda: gbopt.muon(0.02, matrix_rule=rule),
        "gbopt.adam (AdamW)": lambda: gbopt.chain(gbopt.adam(1e-3), gbopt.add_decayed_weights(0.0)),
        "gbopt.shampoo": lambda: gbopt.shampoo(
            1e-3, block_size=768, preconditioning_compute_steps=K, matrix_rule=rule
        ),
        "gbopt.soap": lambda: gbopt.soap(3e-3, precondition_frequency=K, matrix_rule=rule),
    }


class Runner:
    def __init__(self, tx, params, grads):
        self.step = h.compile_step(
            h.step_fn(tx, optax.apply_updates), params, tx.init(params), grads
        )
        self.params, self.state, self.grads = params, tx.init(params), grads
        self.state_bytes = h.tree_bytes(self.state)

    def run(self):
        t0 = time.perf_counter()
        self.params, self.state = self.step.compiled(self.params, self.state, self.grads)
        jax.block_until_ready(self.params)
        return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compiles", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--optimizers", default=None, help="comma-separated subset of the rows")
    parser.add_argument("--smoke", action="store_true", help="d = 64, vocab 512, 1 layer")
    args = parser.parse_args(argv)
    d, vocab, layers = (64, 512, 1) if args.smoke else (args.d_model, args.vocab, args.layers)
    shapes = h.transformer_shapes(layers, d, vocab)
    work = h.Workload(f"GPT-2-shaped, {layers} layer(s), d={d}", shapes)
    n_params = work.size
    print("\n".join(h.machine_lines()))
    print(f"\nWorkload: {work.label()}\n")
    facts = factories(shapes)
    if args.optimizers:
        keep = args.optimizers.split(",")
        facts = {k: v for k, v in facts.items() if any(x in k for x in keep)}

    def fresh(name):
        params, grads = work.arrays(0)
        return Runner(facts[name](), params, grads)

    runners = {name: fresh(name) for name in facts}
    timings = h.interleave(runners, rounds=args.rounds, steps=K, warmup=1)
    per_step = {n: statistics.median(sum(r) / len(r) for r in timings.rounds[n]) for n in runners}

    def med_ratio(a, b):
        return statistics.median(
            (sum(x) / len(x)) / (sum(y) / len(y))
            for x, y in zip(timings.rounds[a], timings.rounds[b], strict=True)
        )

    # compile: interleaved fresh compiles
    compiles = {n: [] for n in facts}
    params, grads = work.arrays(0)
    for _ in range(args.compiles):
        for n in facts:
            tx = facts[n]()
            compiles[n].append(
                h.compile_step(
                    h.step_fn(tx, optax.apply_updates), params, tx.init(params), grads
                ).total_s
            )
    comp = {n: statistics.median(v) for n, v in compiles.items()}
    rows = []
    for n, r in runners.items():
        base = "optax.contrib.muon" if "muon" in n else "gbopt.adam (AdamW)"
        if base not in runners:
            base = n
        rows.append(
            [
                n,
                h.ms(per_step[n]),
                h.ratio(med_ratio(n, base)) + f" vs {base.split()[0]}",
                h.ms(comp[n]),
                h.ratio(comp[n] / comp[base]),
                f"{r.state_bytes / n_params:.2f}",
                f"{r.step.temp_bytes / 2**20:.0f} MiB",
            ]
        )
    print(
        h.table(
            [
                "optimizer",
                "step (median)",
                "step ratio",
                "compile",
                "compile ratio",
                "state B/param",
                "XLA temp",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
