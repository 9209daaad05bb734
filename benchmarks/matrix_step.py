"""Matrix optimizers' steps on a GPT-2-small-shaped tree: Muon vs optax, Shampoo/SOAP vs AdamW.

Run from the repository root::

    python benchmarks/matrix_step.py --optimizers muon          # 12 layers: Muon vs optax
    python benchmarks/matrix_step.py --optimizers shampoo       # 12 layers: vs AdamW
    python benchmarks/matrix_step.py --optimizers soap          # 12 layers: vs AdamW
    python benchmarks/matrix_step.py --layers 2                 # all rows, 2 layers
    python benchmarks/matrix_step.py --smoke                    # tiny (used by the tests)

The tree is GPT-2 small's (default 12 layers, d = 768): per layer a 768×2304 (qkv),
768×768 (attention out), 768×3072 (MLP in) and 3072×768 (MLP out) matrix, plus the
biases and layer norms; the 50257×768 token and 1024×768 position embeddings and the
final norm. The 48 matrices go to the matrix rule, the rest to AdamW, in both libraries
(124.4M parameters, 84.9M of them in the matrices). One step is a jitted, donated
``update + apply_updates`` in float32 with fixed gradients.

* **Muon vs optax.contrib.muon** (same arguments: learning rate 0.02, the same leaves):
  each round times one step of each, in random order; the step ratio is the median of
  the per-round ratios. Compile time (trace + lower + compile) is the median of
  ``--compiles`` fresh compiles, interleaved.
* **Shampoo and SOAP vs AdamW**: a step that recomputes the preconditioner (Shampoo's
  inverse roots, SOAP's eigenbases) and one that does not are timed separately, each
  interleaved with AdamW's step: the optimizer built with a refresh every step
  (frequency 1) and with none (frequency 10⁹), both from step ``K + 1`` (the state's
  step counts are set there, so that the first call's one-off eigendecompositions, which only
  start the run, are not timed). The amortised step for the default frequency ``K`` = 10
  is ``(refresh + (K − 1) × plain) / K``. Shampoo uses blocks of 768 (its default 128
  would cut GPT-2's matrices into 216 blocks per layer); SOAP rotates every dimension
  (the largest, 3072, is under its ``max_precond_dim``).
* **State B/param**: the optimizer state's bytes over the number of parameters (all of
  them, so the embeddings' AdamW state is counted). ``XLA temp`` is the compiled step's
  scratch memory.

On a shared CPU the absolute times vary with the load (printed); the ratios are
measured side by side.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# LAPACK (eigh, qr) threads spin-wait on a busy CPU: a 256 x 256 eigh took 5 s with the
# default threads and 57 ms with one, on 2 shared cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import gbopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

K = 10  # the default preconditioner period of Shampoo and SOAP here
NEVER = 10**9


def is_matrix(name: str) -> bool:
    return name.endswith(".w")


def gpt2_shapes(layers: int, d: int, vocab: int, context: int) -> dict[str, tuple[int, ...]]:
    return h.transformer_shapes(layers, d, vocab) | {"pos_embed": (context, d)}


def factories(shapes, block: int):
    rule = lambda path, x: is_matrix(path[-1])  # noqa: E731
    dims = {k: (optax.contrib.MuonDimensionNumbers() if is_matrix(k) else None) for k in shapes}
    return {
        "optax.contrib.muon": lambda: optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims),
        "gbopt.muon": lambda: gbopt.muon(0.02, matrix_rule=rule),
        "adamw": lambda: gbopt.chain(gbopt.adam(1e-3), gbopt.add_decayed_weights(0.0)),
        "shampoo": lambda k: gbopt.shampoo(
            1e-3, block_size=block, preconditioning_compute_steps=k, matrix_rule=rule
        ),
        "soap": lambda k: gbopt.soap(3e-3, precondition_frequency=k, matrix_rule=rule),
    }


def set_count(state, n: int):
    """The state with every step count (a ``count`` field of a state tuple) set to ``n``."""

    def go(x):
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            x = type(x)(*(go(v) for v in x))
            if "count" in x._fields:
                x = x._replace(count=jnp.asarray(n, x.count.dtype))
            return x
        if isinstance(x, (tuple, list)):
            return type(x)(go(v) for v in x)
        if isinstance(x, dict):
            return {k: go(v) for k, v in x.items()}
        return x

    return go(state)


class Runner:
    """A compiled, donated step on its own parameters and state."""

    def __init__(self, tx, params, grads, state=None):
        params = jax.tree.map(jnp.array, params)
        self.grads = jax.tree.map(jnp.array, grads)
        state = tx.init(params) if state is None else state
        self.state_bytes = h.tree_bytes(state)
        self.step = h.compile_step(h.step_fn(tx, optax.apply_updates), params, state, self.grads)
        self.params, self.state = params, state

    def run(self) -> float:
        t0 = time.perf_counter()
        self.params, self.state = self.step.compiled(self.params, self.state, self.grads)
        jax.block_until_ready(self.params)
        return time.perf_counter() - t0


def interleaved(runners: dict, rounds: int, rng) -> dict[str, list[float]]:
    times = {n: [] for n in runners}
    for _ in range(rounds):
        order = list(runners)
        rng.shuffle(order)
        for n in order:
            times[n].append(runners[n].run())
            print(f"  {n}: {h.ms(times[n][-1])}", flush=True)
    return times


def med_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def muon_rows(facts, params, grads, n_params, args, rng):
    names = ["optax.contrib.muon", "gbopt.muon"]
    runners = {n: Runner(facts[n](), params, grads) for n in names}
    compiles = {n: [runners[n].step.total_s] for n in names}
    for _ in range(args.compiles - 1):
        for n in names:
            tx = facts[n]()
            compiles[n].append(
                h.compile_step(
                    h.step_fn(tx, optax.apply_updates), params, tx.init(params), grads
                ).total_s
            )
    print(f"  compiles: { {n: [round(c, 1) for c in v] for n, v in compiles.items()} }", flush=True)
    for _ in range(args.warmup):
        for r in runners.values():
            r.run()
    times = interleaved(runners, args.rounds, rng)
    base = "optax.contrib.muon"
    rows = []
    for n in names:
        comp = statistics.median(compiles[n])
        rows.append(
            [
                n,
                h.ms(statistics.median(times[n])),
                h.ratio(med_ratio(times[n], times[base])),
                h.ms(comp),
                h.ratio(comp / statistics.median(compiles[base])),
                f"{runners[n].state_bytes / n_params:.2f}",
                f"{runners[n].step.temp_bytes / 2**20:.0f} MiB",
                f"{len(times[n])}",
            ]
        )
    head = ["optimizer", "step (median)", "step / optax", "compile", "compile / optax"]
    return h.table([*head, "state B/param", "XLA temp", "steps timed"], rows)


def preconditioned_rows(name, facts, params, grads, n_params, args, rng):
    adamw = Runner(facts["adamw"](), params, grads)
    for _ in range(args.warmup):
        adamw.run()
    default_tx = facts[name](K)
    compile_default = h.compile_step(
        h.step_fn(default_tx, optax.apply_updates), params, default_tx.init(params), grads
    ).total_s
    # no refresh: frequency 10^9, from step K + 1
    tx = facts[name](NEVER)
    print(f"  compile: {name} (every {K}) {compile_default:.1f} s", flush=True)
    plain = Runner(tx, params, grads, set_count(tx.init(params), K + 1))
    for _ in range(args.warmup):
        plain.run()
    t_plain = interleaved({"adamw": adamw, "plain": plain}, args.rounds, rng)
    state_bytes, temp = plain.state_bytes, plain.step.temp_bytes
    params_now, state_now = plain.params, plain.state
    del plain
    # a refresh at every step: frequency 1, continuing from the same state
    refresh = Runner(facts[name](1), params_now, grads, state_now)
    t_ref = interleaved({"adamw": adamw, "refresh": refresh}, args.rounds, rng)
    a_plain = statistics.median(t_plain["adamw"])
    a_ref = statistics.median(t_ref["adamw"])
    p, r = statistics.median(t_plain["plain"]), statistics.median(t_ref["refresh"])
    rp, rr = (
        med_ratio(t_plain["plain"], t_plain["adamw"]),
        med_ratio(t_ref["refresh"], t_ref["adamw"]),
    )
    amort = (r + (K - 1) * p) / K
    amort_ratio = (rr + (K - 1) * rp) / K
    compile_adamw = adamw.step.total_s
    rows = [
        [
            "adamw",
            h.ms(statistics.median(t_plain["adamw"] + t_ref["adamw"])),
            "1.00×",
            h.ms(compile_adamw),
            "1.00×",
            f"{adamw.state_bytes / n_params:.2f}",
            f"{adamw.step.temp_bytes / 2**20:.0f} MiB",
        ],
        [f"{name}, step without refresh", h.ms(p), h.ratio(rp), "", "", "", ""],
        [f"{name}, step with refresh", h.ms(r), h.ratio(rr), "", "", "", ""],
        [
            f"**{name}, amortised (refresh every {K})**",
            h.ms(amort),
            h.ratio(amort_ratio),
            h.ms(compile_default),
            h.ratio(compile_default / compile_adamw),
            f"{state_bytes / n_params:.2f}",
            f"{temp / 2**20:.0f} MiB",
        ],
    ]
    note = (
        f"AdamW's median step alongside: {h.ms(a_plain)} (plain phase), {h.ms(a_ref)} "
        f"(refresh phase); {args.rounds} round(s) per phase"
    )
    head = ["optimizer", "step (median)", "step / AdamW", "compile", "compile / AdamW"]
    return h.table([*head, "state B/param", "XLA temp"], rows) + "\n\n" + note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compiles", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--block-size", type=int, default=768, help="Shampoo's blocks")
    parser.add_argument("--optimizers", default="muon,shampoo,soap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="d = 64, vocab 512, 1 layer")
    args = parser.parse_args(argv)
    if args.smoke:
        args.d_model, args.vocab, args.layers, args.context, args.block_size = 64, 512, 1, 128, 64
    shapes = gpt2_shapes(args.layers, args.d_model, args.vocab, args.context)
    work = h.Workload(f"GPT-2-shaped, {args.layers} layer(s), d={args.d_model}", shapes)
    n_params = work.size
    n_matrix = sum(math.prod(s) for k, s in shapes.items() if is_matrix(k))
    print("\n".join(h.machine_lines()))
    print(
        f"\nWorkload: {work.name}, {len(shapes)} leaves: {n_params / 1e6:.1f}M parameters, "
        f"{n_matrix / 1e6:.1f}M "
        f"in {sum(map(is_matrix, shapes))} matrices; load average {load()}\n",
        flush=True,
    )
    facts = factories(shapes, args.block_size)
    params, grads = work.arrays(0)
    rng = random.Random(args.seed)
    for which in args.optimizers.split(","):
        t0 = time.perf_counter()
        if which == "muon":
            print(muon_rows(facts, params, grads, n_params, args, rng))
        elif which in ("shampoo", "soap"):
            print(preconditioned_rows(which, facts, params, grads, n_params, args, rng))
        else:
            parser.error(f"--optimizers: unknown {which!r}; choose from muon, shampoo, soap")
        print(f"\n({which}: {time.perf_counter() - t0:.0f} s; load average {load()})\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
