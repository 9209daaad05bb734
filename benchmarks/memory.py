"""Optimizer-state memory against accuracy: narrow, quantized and compensated Adam, side by side.

Prints markdown tables (``benchmarks/RESULTS.md`` keeps a run):

1. **Bytes per parameter** of Adam's state, float32 moments → bfloat16 moments → 8-bit →
   4-bit (:func:`gbopt.quantize_state`), counted from the state itself and from the
   compiled step's ``memory_analysis()`` (arguments, outputs and temporaries of one
   jitted ``update + apply_updates`` with params and state donated): the temporaries show
   whether the step hides a float32 copy of the whole state.
2. **Step time** of those steps, interleaved rounds, median of the per-round ratios to
   float32.
3. **Accuracy** on scikit-learn's handwritten digits (no download): a tanh MLP
   64-256-256-10 (two weight matrices above the 4,096-element threshold, the rest kept in
   float32), minibatches of 128, final loss on the whole training set, mean over seeds:
   Adam and AdamW (optax's, wrapped) in float32, bf16 moments, 8 and 4 bits.
4. **bfloat16 parameters** (no float32 master copy) under a cosine-decayed learning rate:
   plain, with :func:`gbopt.kahan_summation`, with :func:`gbopt.stochastic_rounding`, and
   the float32 run they should track.

Run: ``python benchmarks/memory.py`` (a few minutes on two CPU cores), or ``--smoke``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gbopt
from gbopt.demo.problems import cross_entropy, load_digits, mlp_apply, mlp_init


def adam_bf16(learning_rate):
    """Adam with both moments stored in bfloat16 (arithmetic in float32)."""
    try:
        return gbopt.adam(learning_rate, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    except TypeError:  # a gbopt.adam without the storage dtypes: the same chain, composed
        return gbopt.with_step_count(
            gbopt.chain(
                gbopt.divide(
                    gbopt.chain(gbopt.ema(0.9, dtype=jnp.bfloat16), gbopt.bias_correction(0.9)),
                    gbopt.chain(
                        gbopt.accumulate_square(0.999, dtype=jnp.bfloat16),
                        gbopt.bias_correction(0.999),
                        gbopt.sqrt(),
                        gbopt.add(1e-8),
                    ),
                ),
                gbopt.scale_by_learning_rate(learning_rate),
            )
        )


def adam_variants(learning_rate, weight_decay=None):
    """The storage formats of one Adam (AdamW: optax's, with ``weight_decay``).

    8 and 4 bits with ``quantize_state``'s default stochastic rounding, and with nearest
    rounding (bitsandbytes' and torchao's).
    """
    if weight_decay is None:
        base = lambda: gbopt.adam(learning_rate)  # noqa: E731
        narrow = adam_bf16(learning_rate)
    else:
        base = lambda: optax.adamw(learning_rate, weight_decay=weight_decay)  # noqa: E731
        narrow = optax.adamw(learning_rate, weight_decay=weight_decay, mu_dtype=jnp.bfloat16)
    q = gbopt.quantize_state
    return {
        "float32": base(),
        "bf16 moments" if weight_decay is None else "bf16 first moment": narrow,
        "8-bit": q(base(), bits=8, block_size=256),
        "4-bit": q(base(), bits=4, block_size=128),
        "8-bit, nearest rounding": q(base(), bits=8, block_size=256, rounding="nearest"),
        "4-bit, nearest rounding": q(base(), bits=4, block_size=128, rounding="nearest"),
    }


# ---------------------------------------------------------------------------------------
# 1-2. Bytes and step time


def layer_stack(layers: int, width: int) -> dict:
    """A stack of square layers (weights and biases), like a transformer's blocks."""
    rng = np.random.default_rng(0)
    return {
        f"layer{i:02d}": {
            "w": jnp.asarray(rng.normal(size=(width, width)) * 0.02, jnp.float32),
            "b": jnp.zeros((width,), jnp.float32),
        }
        for i in range(layers)
    }


def make_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def tree_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def memory_table(layers: int, width: int, rounds: int) -> list[str]:
    params = layer_stack(layers, width)
    n = sum(x.size for x in jax.tree.leaves(params))
    grads = jax.tree.map(lambda p: p * 0.5 + 1e-3, params)
    variants = adam_variants(1e-3)
    lines = [
        f"Adam on {layers} layers of {width}x{width} (+ biases): {n:,} parameters, "
        f"float32 params and gradients. Bytes per parameter:",
        "",
        "| state | state (counted) | compiled: arguments | outputs | temporaries "
        "| temporaries / float32 state |",
        "|---|---|---|---|---|---|",
    ]
    steps, states = {}, {}
    f32_state_bytes = 8 * n
    for name, tx in variants.items():
        state = tx.init(params)
        counted = tree_bytes(state) / n
        step = make_step(tx)
        compiled = step.lower(params, state, grads).compile()
        mem = compiled.memory_analysis()
        lines.append(
            f"| {name} | **{counted:.3f}** | {mem.argument_size_in_bytes / n:.3f} "
            f"| {mem.output_size_in_bytes / n:.3f} | {mem.temp_size_in_bytes / n:.3f} "
            f"| {mem.temp_size_in_bytes / f32_state_bytes:.2f} |"
        )
        steps[name], states[name] = step, state
    lines += [
        "",
        "(Arguments are params + state + gradients: 8 bytes of params and gradients plus "
        "the state. A temporary float32 copy of the whole state would be 8 bytes per "
        "parameter, 1.00 in the last column.)",
        "",
    ]
    # step time: interleaved rounds, random order, median of per-round ratios
    live = {k: (jax.tree.map(jnp.copy, params), states[k]) for k in variants}
    for k in variants:  # warm up
        p, s = live[k]
        live[k] = steps[k](p, s, grads)
        jax.block_until_ready(live[k])
    times = {k: [] for k in variants}
    order = list(variants)
    rng = np.random.default_rng(1)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            p, s = live[k]
            t0 = time.perf_counter()
            live[k] = steps[k](p, s, grads)
            jax.block_until_ready(live[k])
            times[k].append(time.perf_counter() - t0)
    lines += [
        f"Step time (update + apply, jitted, donated; median of {rounds} interleaved rounds):",
        "",
        "| state | step (ms) | / float32 |",
        "|---|---|---|",
    ]
    for k in variants:
        ratio = statistics.median(a / b for a, b in zip(times[k], times["float32"], strict=True))
        lines.append(f"| {k} | {statistics.median(times[k]) * 1e3:.1f} | **{ratio:.2f}×** |")
    return lines


# ---------------------------------------------------------------------------------------
# 3-4. Accuracy on the digits


def digits_run(tx, seed: int, steps: int, batch: int, param_dtype=jnp.float32) -> float:
    """Trains the 64-256-256-10 MLP; returns the final loss on the whole training set."""
    x_np, y_np = load_digits()
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    key = jax.random.key(seed)
    params = mlp_init(key, (64, 256, 256, 10))
    params = jax.tree.map(lambda p: p.astype(param_dtype), params)
    indices = jax.random.randint(jax.random.fold_in(key, 1), (steps, batch), 0, x.shape[0])

    def loss(params, idx):
        wide = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return cross_entropy(mlp_apply(wide, x[idx]), y[idx])

    @jax.jit
    def train(params, state):
        def body(carry, idx):
            params, state = carry
            grads = jax.grad(loss)(params, idx)
            updates, state = tx.update(grads, state, params)
            return (gbopt.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(body, (params, state), indices)
        wide = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return cross_entropy(mlp_apply(wide, x), y)

    return float(train(params, tx.init(params)))  # init outside: nothing to constant-fold


def accuracy_table(seeds: int, steps: int, batch: int) -> list[str]:
    lines = [
        f"Digits MLP 64-256-256-10 (tanh), minibatches of {batch}, {steps} steps, "
        f"learning rate 1e-3; final loss on all 1,797 examples, mean of {seeds} seeds "
        "(same seeds, same minibatches for every row); *seed spread*: the standard "
        "deviation over seeds relative to the mean; *paired*: the mean over seeds of each "
        "seed's relative difference to float32 with the same seed, ± its standard error:",
        "",
        "| optimizer | state | final loss | seed spread | vs float32 (paired) | target |",
        "|---|---|---|---|---|---|",
    ]
    for label, wd in (("Adam", None), ("AdamW (optax, wd 1e-2)", 1e-2)):
        results = {}
        for name in adam_variants(1e-3, wd):
            results[name] = np.array(
                [digits_run(adam_variants(1e-3, wd)[name], s, steps, batch) for s in range(seeds)]
            )
        ref = results["float32"]
        for name, values in results.items():
            rel = (values - ref) / ref
            se = rel.std(ddof=1) / np.sqrt(seeds) if seeds > 1 else float("nan")
            spread = values.std(ddof=1) / values.mean() if seeds > 1 else float("nan")
            paired = "" if name == "float32" else f"{rel.mean():+.2%} ± {se:.2%}"
            target = {"8-bit": "≤ 1 %", "4-bit": "≤ 3 %"}.get(name, "")
            lines.append(
                f"| {label} | {name} | {values.mean():.5f} | {spread:.1%} | {paired} | {target} |"
            )
    return lines


def charlm_run(tx, seed: int, steps: int, batch: int, config) -> float:
    """Trains gbopt.demo.charlm's model; returns its loss on the held-out text (nats/byte)."""
    from gbopt.demo import charlm

    corpus = charlm.load_corpus(400_000, seed=0)
    params = charlm.init_params(jax.random.key(seed), config)
    data = jnp.asarray(corpus.train)

    @jax.jit
    def train(params, state):
        def body(carry, key):
            params, state = carry
            b = charlm.sample_batch(key, data, batch, config.seq_len)
            grads = jax.grad(charlm.loss)(params, b, config)
            updates, state = tx.update(grads, state, params)
            return (gbopt.apply_updates(params, updates), state), None

        keys = jax.random.split(jax.random.key(seed + 100), steps)
        (params, _), _ = jax.lax.scan(body, (params, state), keys)
        return params

    params = train(params, tx.init(params))
    valid = charlm.eval_batch(corpus.valid, config.seq_len)
    return float(charlm.evaluate(params, valid, config))


def charlm_table(seeds: int, steps: int, batch: int) -> list[str]:
    from gbopt.demo import charlm

    config = charlm.CharLMConfig(seq_len=64, d_model=64, n_layers=2, n_heads=4)
    n = charlm.count_params(charlm.init_params(jax.random.key(0), config))
    lines = [
        f"Character-level transformer (gbopt.demo.charlm: d=64, 2 layers, 4 heads, context "
        f"64; {n:,} parameters, the 64x64 and larger matrices quantized) on the standard "
        f"library's source, batches of {batch}, {steps} steps, learning rate 3e-3; loss on "
        f"held-out text (nats per byte), mean of {seeds} seeds:",
        "",
        "| optimizer | state | held-out loss | vs float32 | target |",
        "|---|---|---|---|---|",
    ]
    for label, wd in (("Adam", None), ("AdamW (optax, wd 1e-2)", 1e-2)):
        results = {}
        for name in ("float32", "8-bit", "4-bit"):
            results[name] = statistics.mean(
                charlm_run(adam_variants(3e-3, wd)[name], s, steps, batch, config)
                for s in range(seeds)
            )
        for name, value in results.items():
            rel = (value - results["float32"]) / results["float32"]
            target = {"8-bit": "≤ 1 %", "4-bit": "≤ 3 %"}.get(name, "")
            lines.append(f"| {label} | {name} | {value:.4f} | {rel:+.2%} | {target} |")
    return lines


def moment_table(seeds: int, steps: int, batch: int, rounding: str = "nearest") -> list[str]:
    """8-bit Adam with one moment quantized at a time: which one moves the loss."""

    def adam(quantize_mu: bool, quantize_nu: bool):
        def q(tx):
            return gbopt.quantize_state(tx, rounding=rounding)

        mu, nu = gbopt.ema(0.9), gbopt.accumulate_square(0.999)
        return gbopt.with_step_count(
            gbopt.chain(
                gbopt.divide(
                    gbopt.chain(q(mu) if quantize_mu else mu, gbopt.bias_correction(0.9)),
                    gbopt.chain(
                        q(nu) if quantize_nu else nu,
                        gbopt.bias_correction(0.999),
                        gbopt.sqrt(),
                        gbopt.add(1e-8),
                    ),
                ),
                gbopt.scale_by_learning_rate(1e-3),
            )
        )

    lines = [
        f"Which moment: Adam with `quantize_state` around one statistic only (8-bit, "
        f"{rounding} rounding, {steps} steps, mean of {seeds} seeds):",
        "",
        "| quantized | final loss | vs float32 |",
        "|---|---|---|",
    ]
    ref = None
    for name, flags in (
        ("none", (False, False)),
        ("first moment (mu)", (True, False)),
        ("second moment (nu)", (False, True)),
        ("both", (True, True)),
    ):
        value = statistics.mean(digits_run(adam(*flags), s, steps, batch) for s in range(seeds))
        ref = value if ref is None else ref
        lines.append(f"| {name} | {value:.5f} | {(value - ref) / ref:+.2%} |")
    return lines


def bf16_table(seeds: int, steps: int, batch: int) -> list[str]:
    peak = 1e-3

    def schedule(count):
        return peak * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, steps) / steps))

    # Adam's first moment follows the parameters' dtype by default (bfloat16 here); the
    # compensations are compared with it in float32, so that only the parameters' rounding
    # differs from the float32 run, and the default is measured on its own row.
    def adam(**kwargs):
        return gbopt.adam(schedule, **kwargs)

    f32_mu = {"mu_dtype": jnp.float32}
    rows = {
        "float32 params": (lambda: adam(), jnp.float32),
        "bf16 params, plain": (lambda: adam(**f32_mu), jnp.bfloat16),
        "bf16 params + kahan_summation": (
            lambda: gbopt.chain(adam(**f32_mu), gbopt.kahan_summation()),
            jnp.bfloat16,
        ),
        "bf16 params + stochastic_rounding": (
            lambda: gbopt.chain(adam(**f32_mu), gbopt.stochastic_rounding(0)),
            jnp.bfloat16,
        ),
        "bf16 params + kahan_summation, bf16 mu (default)": (
            lambda: gbopt.chain(adam(), gbopt.kahan_summation()),
            jnp.bfloat16,
        ),
    }
    lines = [
        f"bfloat16 parameters, no float32 master copy: the same MLP, Adam with a cosine "
        f"decay from {peak:g} to 0 over {steps} steps (late updates fall below half an ulp), "
        f"forward pass in float32, Adam's moments in float32 (`mu_dtype=jnp.float32`) "
        f"except on the last row; final loss, mean of {seeds} seeds:",
        "",
        "| parameters | extra state / param | final loss | vs float32 | target |",
        "|---|---|---|---|---|",
    ]
    ref = None
    for name, (build, dtype) in rows.items():
        value = statistics.mean(digits_run(build(), s, steps, batch, dtype) for s in range(seeds))
        ref = value if ref is None else ref
        extra = {"kahan_summation": "2 bytes", "stochastic_rounding": "a key"}
        extra = next((v for k, v in extra.items() if k in name), "")
        target = "≤ 1 %" if "+" in name else ""
        lines.append(f"| {name} | {extra} | {value:.5f} | {(value - ref) / ref:+.2%} | {target} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument(
        "--tables",
        default="memory,accuracy,charlm,moment,bf16",
        help="comma-separated subset of memory,accuracy,charlm,moment,bf16",
    )
    args = parser.parse_args(argv)
    chosen = set(args.tables.split(","))
    if args.smoke:
        sizes = dict(layers=2, width=256, rounds=3)
        acc = low = dict(seeds=1, steps=20, batch=32)
        lm = dict(seeds=1, steps=5, batch=4)
    else:
        sizes = dict(layers=8, width=512, rounds=10)
        acc = dict(seeds=5, steps=300, batch=128)
        low = dict(seeds=2, steps=1000, batch=128)
        lm = dict(seeds=2, steps=300, batch=16)
    print("## Optimizer-state memory: narrow, quantized, compensated (benchmarks/memory.py)")
    print()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; `{' '.join(sys.argv)}`")
    print()
    for name, table, kwargs in (
        ("memory", memory_table, sizes),
        ("accuracy", accuracy_table, acc),
        ("charlm", charlm_table, lm),
        ("moment", moment_table, {**acc, "seeds": min(acc["seeds"], 2)}),
        ("bf16", bf16_table, low),
    ):
        if name not in chosen:
            continue
        print("\n".join(table(**kwargs)))
        print()
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
