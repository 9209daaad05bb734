"""Per-device optimizer-state memory, replicated vs ZeRO stage 1 (gbopt.state_shardings).

Runs on simulated CPU devices (8 unless XLA_FLAGS says otherwise), so anyone can run it:

    python benchmarks/zero_memory.py

For every optimizer it trains an MLP (784-1024-1024-10, float32) data-parallel for a few
steps twice, once with the state replicated like the parameters (the default) and once
with the state split over the data axis, and prints the state bytes each device holds
(summed over its addressable shards), their ratio, the largest difference between the
two runs' parameters, and the collectives the compiler put in each step.
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import collections  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import gbopt  # noqa: E402

OPTIMIZERS = {
    "sgd": lambda: gbopt.sgd(1e-2),
    "momentum": lambda: gbopt.momentum(1e-2),
    "nesterov": lambda: gbopt.nesterov(1e-2),
    "adagrad": lambda: gbopt.adagrad(1e-2),
    "rmsprop": lambda: gbopt.rmsprop(1e-3),
    "rmsprop_nesterov": lambda: gbopt.rmsprop_nesterov(1e-3),
    "adam": lambda: gbopt.adam(1e-3),
}
SIZES = (784, 1024, 1024, 10)
COLLECTIVE = re.compile(
    r"\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)


def init_params(key):
    params = {}
    for i, (m, n) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        key, sub = jax.random.split(key)
        params[f"w{i}"] = jax.random.normal(sub, (m, n)) / np.sqrt(m)
        params[f"b{i}"] = jnp.zeros(n)
    return params


def loss(params, x, y):
    h = x
    for i in range(len(SIZES) - 1):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < len(SIZES) - 2:
            h = jax.nn.relu(h)
    return jnp.mean(cross_entropy(h, y))


def cross_entropy(logits, labels):
    return (
        jax.nn.logsumexp(logits, axis=-1)
        - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    )


def per_device_bytes(tree):
    total = collections.Counter()
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            total[shard.device] += shard.data.nbytes
    return max(total.values(), default=0)


def main(steps=3, batch=256):
    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(batch, SIZES[0])).astype(np.float32) for _ in range(steps)]
    ys = [rng.integers(0, SIZES[-1], size=batch) for _ in range(steps)]
    params0 = jax.jit(init_params, out_shardings=replicated)(jax.random.key(0))
    n_params = sum(p.size for p in jax.tree.leaves(params0))
    print(f"{n} devices, MLP {SIZES}: {n_params:,} float32 parameters, batch {batch}\n")
    header = (
        f"{'optimizer':<17} {'state/device, replicated':>25} {'ZeRO-1':>12} {'ratio':>6} "
        f"{'max |Δparams|':>14}  collectives (ZeRO-1 step)"
    )
    print(header)
    print("-" * len(header))
    for name, make in OPTIMIZERS.items():
        tx = make()

        def step(params, state, x, y, tx=tx):
            grads = jax.grad(loss)(params, x, y)
            updates, state = tx.update(grads, state, params)
            return gbopt.apply_updates(params, updates), state

        runs = {}
        state_sh = gbopt.state_shardings(jax.eval_shape(tx.init, params0), mesh, "data")
        for kind, sh in (("replicated", None), ("zero", state_sh)):
            state = jax.jit(tx.init, out_shardings=sh)(params0) if sh else tx.init(params0)
            jstep = jax.jit(
                step,
                in_shardings=(replicated, sh or replicated, split, split),
                out_shardings=(replicated, sh or replicated),
            )
            compiled = jstep.lower(params0, state, xs[0], ys[0]).compile()
            memory = per_device_bytes(state)
            params = params0
            for x, y in zip(xs, ys, strict=True):
                params, state = compiled(params, state, x, y)
            ops = collections.Counter(COLLECTIVE.findall(compiled.as_text()))
            runs[kind] = (memory, params, ops)
        (full, p_full, _), (zero, p_zero, ops) = runs["replicated"], runs["zero"]
        diff = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_zero), strict=True)
        )
        ratio = f"{full / zero:.2f}" if zero else "-"
        described = ", ".join(f"{k} x{v}" for k, v in sorted(ops.items())) or "none"
        print(f"{name:<17} {full:>23,} B {zero:>10,} B {ratio:>6} {diff:>14.1e}  {described}")


if __name__ == "__main__":
    main()
