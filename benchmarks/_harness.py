"""Shared machinery of the benchmark scripts: workloads, compiled steps, interleaved timing.

Conventions (the same for every library, so that only ratios measured side by side count):

* one step is ``updates, state = tx.update(grads, state, params);
  params = apply_updates(params, updates)`` in one ``jax.jit`` with ``params`` and
  ``state`` donated, float32, gradients fixed (the optimizer's work, not the model's);
* each step is timed alone (dispatch to result ready); XLA:CPU finishes all outputs of
  an executable together, so waiting for one leaf waits for the step;
* implementations are timed in interleaved rounds of one step each, in a random order
  every round, and a ratio is the median of the per-round ratios: the load of a shared
  machine changes over seconds, and both sides of each ratio see the same load (a fixed
  rotation would always run one implementation right after the same other one, whose
  spinning worker threads it would then compete with);
* JAX and PyTorch are timed in separate blocks: each runtime's worker threads spin for
  a while after a step, and would slow whichever step of the other runtime comes next;
* every comparison runs in two sessions that create the implementations in opposite
  orders, and its ratio is the geometric mean of the two sessions' ratios: in A/A tests
  (one optimizer against a second copy of itself) the copy created first was 5-9 %
  faster, consistently, for reasons of memory placement we did not pin down;
* Python's garbage collector is paused while timing (as ``timeit`` does): a collection
  triggered by one library's thousands of output arrays would land on whichever step
  runs next;
* compile time is trace + lower + compile of a fresh function (no cache can answer).
"""

from __future__ import annotations

import datetime
import gc
import math
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import gbopt

# ---------------------------------------------------------------------------------------
# Machine and versions


def machine_lines() -> list[str]:
    """A few markdown lines naming the machine, the versions and the date."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = [f"Python {platform.python_version()}", f"jax {jax.__version__}"]
    versions += [f"jaxlib {jaxlib.__version__}", f"optax {optax.__version__}"]
    versions += [f"numpy {np.__version__}"]
    try:
        import torch

        versions.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        versions.append("torch not installed")
    versions.append(f"gbopt {gbopt.__version__}")
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return [
        f"- Machine: {os.cpu_count()} CPU cores ({cpu}); JAX devices: {devices} "
        f"({jax.default_backend()}).",
        f"- Versions: {', '.join(versions)}.",
        f"- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; "
        f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.",
    ]


# ---------------------------------------------------------------------------------------
# Workloads (float32 NumPy trees; each script turns them into device arrays)


def transformer_shapes(layers: int, d: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Leaf shapes of a pre-norm transformer: embedding, per layer 12 leaves, final norm."""
    shapes: dict[str, tuple[int, ...]] = {"embed": (vocab, d)}
    for i in range(layers):
        shapes |= {
            f"l{i:02d}.ln1.scale": (d,),
            f"l{i:02d}.ln1.bias": (d,),
            f"l{i:02d}.attn.qkv.w": (d, 3 * d),
            f"l{i:02d}.attn.qkv.b": (3 * d,),
            f"l{i:02d}.attn.out.w": (d, d),
            f"l{i:02d}.attn.out.b": (d,),
            f"l{i:02d}.ln2.scale": (d,),
            f"l{i:02d}.ln2.bias": (d,),
            f"l{i:02d}.mlp.in.w": (d, 4 * d),
            f"l{i:02d}.mlp.in.b": (4 * d,),
            f"l{i:02d}.mlp.out.w": (4 * d, d),
            f"l{i:02d}.mlp.out.b": (d,),
        }
    shapes |= {"final_ln.scale": (d,), "final_ln.bias": (d,)}
    return shapes


@dataclass(frozen=True)
class Workload:
    """A named tree of parameter shapes."""

    name: str
    shapes: dict[str, tuple[int, ...]]

    @property
    def size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes.values())

    @property
    def leaves(self) -> int:
        return len(self.shapes)

    def label(self) -> str:
        leaves = "1 leaf" if self.leaves == 1 else f"{self.leaves} leaves"
        return f"{self.name} ({leaves}, {_count(self.size)} params)"

    def arrays(self, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Parameters and gradients (gradients spanning several magnitudes)."""
        rng = np.random.default_rng(seed)
        params, grads = {}, {}
        for i, (k, s) in enumerate(self.shapes.items()):
            params[k] = rng.standard_normal(s, dtype=np.float32)
            grads[k] = rng.standard_normal(s, dtype=np.float32) * np.float32(10.0 ** (i % 5 - 3))
        return params, grads


def _count(n: int) -> str:
    return f"{n / 2**20:.1f}M" if n >= 2**20 else f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def workloads(mode: str) -> list[Workload]:
    """The issue's workloads ('full'), scaled down for 'quick', minimal for 'smoke'."""
    if mode == "smoke":
        return [Workload("tiny", {f"w{i}": (8,) for i in range(10)})]
    quick = mode == "quick"
    return [
        Workload("one large leaf", {"w": (2**22 if quick else 2**24,)}),
        Workload(
            "transformer-shaped",
            transformer_shapes(layers=3, d=128, vocab=2048)
            if quick
            else transformer_shapes(layers=16, d=128, vocab=8192),
        ),
        Workload("many small leaves", {f"w{i:04d}": (512,) for i in range(200 if quick else 1000)}),
        Workload("10 tiny leaves", {f"w{i}": (8,) for i in range(10)}),
    ]


# ---------------------------------------------------------------------------------------
# Optimizers: the same rule (or the nearest one, noted) in each library


@dataclass(frozen=True)
class Optimizer:
    """One update rule in gbopt, optax and torch.optim, with equal hyperparameters."""

    name: str
    gbopt: Callable[[], Any]
    optax: Callable[[], Any]
    torch: Callable[..., dict[str, Any]] | None  # name -> factory(params, **impl flags)
    min_bytes: int  # float32 bytes per parameter the rule must move (read + write)
    note: str = ""


def _torch_factories(cls_name: str, kwargs: dict, fused: bool) -> dict[str, Callable]:
    import torch

    cls = getattr(torch.optim, cls_name)
    out = {"torch foreach": lambda ps: cls(ps, **kwargs, foreach=True)}
    if fused:
        out["torch fused"] = lambda ps: cls(ps, **kwargs, fused=True)
    return out


LR = 1e-3

OPTIMIZERS = [
    Optimizer(
        "sgd+momentum",
        lambda: gbopt.momentum(LR, 0.9),
        lambda: optax.sgd(LR, momentum=0.9),
        lambda: _torch_factories("SGD", {"lr": LR, "momentum": 0.9}, fused=True),
        20,
        "same rule at a constant learning rate",
    ),
    Optimizer(
        "nesterov",
        lambda: gbopt.nesterov(LR, 0.9),
        lambda: optax.sgd(LR, momentum=0.9, nesterov=True),
        lambda: _torch_factories("SGD", {"lr": LR, "momentum": 0.9, "nesterov": True}, True),
        20,
        "same rule at a constant learning rate",
    ),
    Optimizer(
        "adagrad",
        lambda: gbopt.adagrad(LR, eps=1e-7),
        lambda: optax.adagrad(LR, eps=1e-7),
        lambda: _torch_factories("Adagrad", {"lr": LR, "eps": 1e-7}, fused=True),
        20,
        "eps outside the root in gbopt and torch, inside (and r0 = 0.1) in optax",
    ),
    Optimizer(
        "rmsprop",
        lambda: gbopt.rmsprop(LR, decay=0.9, eps=1e-8),
        lambda: optax.rmsprop(LR, decay=0.9, eps=1e-8),
        lambda: _torch_factories("RMSprop", {"lr": LR, "alpha": 0.9, "eps": 1e-8}, fused=False),
        20,
        "eps inside the root in gbopt and optax, outside in torch (no fused RMSprop)",
    ),
    Optimizer(
        "adam",
        lambda: gbopt.adam(LR),
        lambda: optax.adam(LR),
        lambda: _torch_factories("Adam", {"lr": LR}, fused=True),
        28,
        "same rule",
    ),
]


def _catalog(name: str, min_bytes: int, lr: float = LR, **kwargs: Any) -> Optimizer:
    """An optax name that gbopt has: the same call, at optax's defaults but the rate."""
    return Optimizer(
        name,
        lambda: getattr(gbopt, name)(lr, **kwargs),
        lambda: getattr(optax, name)(lr, **kwargs),
        None,
        min_bytes,
        "same rule",
    )


# The catalog's adaptive family (issue 14), timed by ``suite.py --only catalog``. The bytes
# are float32 per parameter: gradient and parameter read, parameter written, and each
# per-element state array read and written (AdaBelief and Adan keep more arrays in gbopt
# than the rule needs; the XLA-bytes column shows what they cost).
CATALOG = [
    _catalog("adamw", 28),
    _catalog("nadam", 28),
    _catalog("nadamw", 28),
    _catalog("adamax", 28),
    _catalog("adamaxw", 28),
    _catalog("amsgrad", 36),
    _catalog("radam", 28),
    _catalog("adabelief", 28),
    _catalog("yogi", 28),
    _catalog("adan", 44),
    _catalog("novograd", 20),
    _catalog("lamb", 28),
    _catalog("lars", 20, lr=1.0),
]


def _with_extra(tx: Any, **extra: Any) -> Any:
    """``tx`` whose ``update`` always gets ``extra`` (Polyak's ``value=``), for the runners."""
    return type(tx)(tx.init, lambda u, s, p=None: tx.update(u, s, p, **extra))


# The catalog's names (optax's name, signature and defaults), gbopt against optax with the
# same arguments; the PyTorch column of the suite does not apply (torch.optim has other rules).
# L-BFGS is timed without its line search (optax's own transform on both sides): the rows
# time the memory and the two-loop recursion, which gbopt implements.
CATALOG_B = [
    Optimizer(
        name,
        (lambda n=name, k=kwargs: getattr(gbopt, n)(**k)),
        (lambda n=name, k=kwargs: getattr(optax, n)(**k)),
        None,
        0,
        note,
    )
    for name, kwargs, note in [
        ("sign_sgd", {"learning_rate": LR}, ""),
        ("signum", {"learning_rate": LR}, ""),
        ("lion", {"learning_rate": LR}, ""),
        ("adafactor", {"learning_rate": LR, "min_dim_size_to_factor": 128}, ""),
        ("sm3", {"learning_rate": LR}, ""),
        ("adadelta", {"learning_rate": LR}, ""),
        ("rprop", {"learning_rate": LR}, "optax's lags a step (another rule, same work)"),
        ("noisy_sgd", {"learning_rate": LR, "key": 0}, ""),
        ("optimistic_gradient_descent", {"learning_rate": LR}, ""),
        ("optimistic_adam", {"learning_rate": LR}, ""),
        ("optimistic_adam_v2", {"learning_rate": LR}, ""),
        ("fromage", {"learning_rate": LR}, ""),
        (
            "lbfgs",
            {"learning_rate": LR, "linesearch": None, "memory_size": 5},
            "no line search, and no donated buffers on either side (optax's state aliases "
            "its inputs, which a donating step refuses)",
        ),
    ]
] + [
    Optimizer(
        "polyak_sgd",
        lambda: _with_extra(gbopt.polyak_sgd(), value=jnp.asarray(1.0)),
        lambda: _with_extra(optax.polyak_sgd(), value=jnp.asarray(1.0)),
        None,
        0,
        "value=1.0 passed to update",
    )
]


# ---------------------------------------------------------------------------------------
# Compiled JAX steps and what XLA says about them


def step_fn(tx: Any, apply: Callable) -> Callable:
    """The standard training step (a fresh function each call, so no cache answers)."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    return step


def count_fusions(hlo_text: str) -> int:
    """Number of fused loops (kernels) in an optimized HLO module."""
    entry = hlo_text[hlo_text.find("ENTRY") :]
    return len(re.findall(r"= \S+ fusion\(", entry))


@dataclass
class CompiledStep:
    """A compiled, donated step with its compile time and XLA's cost and memory figures."""

    compiled: Any
    trace_s: float
    lower_s: float
    compile_s: float
    bytes_accessed: float
    fusions: int
    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.compile_s


def compile_step(fn: Callable, *args: Any, donate: Sequence[int] = (0, 1)) -> CompiledStep:
    """Traces, lowers and compiles ``fn`` (timing each) and reads XLA's analyses.

    Python's garbage collector is run before and paused during the timed part, as
    ``timeit`` does: otherwise a collection of whatever earlier compiles left (tens of
    milliseconds with JAX's objects alive) lands in whichever compile happens to
    trigger it, and a comparison of two compiles measures the other's garbage.
    """
    jitted = jax.jit(fn, donate_argnums=tuple(donate))
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        traced = jitted.trace(*args)
        t1 = time.perf_counter()
        lowered = traced.lower()
        t2 = time.perf_counter()
        compiled = lowered.compile()
        t3 = time.perf_counter()
    finally:
        if was_enabled:
            gc.enable()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    return CompiledStep(
        compiled,
        t1 - t0,
        t2 - t1,
        t3 - t2,
        float(cost.get("bytes accessed", float("nan"))),
        count_fusions(compiled.as_text()),
        int(mem.temp_size_in_bytes),
        int(mem.argument_size_in_bytes),
        int(mem.output_size_in_bytes),
        int(mem.alias_size_in_bytes),
    )


def tree_bytes(tree: Any) -> int:
    return sum(int(x.nbytes) for x in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------
# Runners: objects with .run() -> seconds for one step, stateful


class JaxRunner:
    """Runs a compiled step on its own copy of the parameters and state."""

    def __init__(
        self, tx: Any, apply: Callable, params: Any, grads: Any, donate: Sequence[int] = (0, 1)
    ):
        self.params = jax.tree.map(jnp.array, params)
        self.grads = jax.tree.map(jnp.array, grads)
        self.state = tx.init(self.params)
        self.state_bytes = tree_bytes(self.state)
        self.stats = compile_step(
            step_fn(tx, apply), self.params, self.state, self.grads, donate=donate
        )
        self._first = lambda tree: jax.tree.leaves(tree)[0]

    def run(self) -> float:
        t0 = time.perf_counter()
        self.params, self.state = self.stats.compiled(self.params, self.state, self.grads)
        self._first(self.params).block_until_ready()
        return time.perf_counter() - t0


class TorchRunner:
    """Runs ``optimizer.step()`` with fixed gradients already in ``.grad``."""

    def __init__(self, factory: Callable, params: dict, grads: dict):
        import torch

        self.params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in params.values()]
        for p, g in zip(self.params, grads.values(), strict=True):
            p.grad = torch.from_numpy(g.copy())
        self.opt = factory(self.params)
        self.opt.step()  # allocate the state

    def run(self) -> float:
        t0 = time.perf_counter()
        self.opt.step()
        return time.perf_counter() - t0


class BandwidthRunner:
    """The in-place read-modify-write kernel ``x <- a x + b`` (8 bytes per float32)."""

    def __init__(self, n: int):
        self.x = jnp.ones((n,), jnp.float32)
        self.n = n
        f = jax.jit(lambda x: x * jnp.float32(0.999) + jnp.float32(1e-3), donate_argnums=0)
        self.compiled = f.lower(self.x).compile()

    def run(self) -> float:
        t0 = time.perf_counter()
        self.x = self.compiled(self.x)
        self.x.block_until_ready()
        return time.perf_counter() - t0

    def gbps(self, seconds: float) -> float:
        return 8 * self.n / seconds / 1e9


class CallRunner:
    """Times ``fn(*args)`` until its results are ready."""

    def __init__(self, fn: Callable, *args: Any):
        self.fn, self.args = fn, args

    def run(self) -> float:
        t0 = time.perf_counter()
        self.result = jax.block_until_ready(self.fn(*self.args))
        return time.perf_counter() - t0


@dataclass
class Timings:
    """Per-step times of several runners, measured in interleaved rounds."""

    rounds: dict[str, list[list[float]]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(t for r in self.rounds[name] for t in r)

    def best(self, name: str) -> float:
        return min(t for r in self.rounds[name] for t in r)

    @property
    def count(self) -> int:
        return len(next(iter(self.rounds.values())))

    def ratio(self, name: str, reference: str) -> float:
        """Median over rounds of (round median of ``name``) / (round median of reference)."""
        per_round = [
            statistics.median(a) / statistics.median(b)
            for a, b in zip(self.rounds[name], self.rounds[reference], strict=True)
        ]
        return statistics.median(per_round)

    def spread(self, name: str) -> float:
        """Relative half-width of the middle half of the round medians (noise estimate)."""
        meds = sorted(statistics.median(r) for r in self.rounds[name])
        if len(meds) < 5:
            return float("nan")
        q1, _, q3 = statistics.quantiles(meds, n=4)
        return (q3 - q1) / 2 / statistics.median(meds)


@dataclass
class Comparison:
    """Interleaved timings from sessions with opposite creation orders, and runner info."""

    sessions: list[Timings]
    info: dict[str, list[Any]]  # name -> what each session's runner left (stats, sizes)

    def median(self, name: str) -> float:
        return statistics.median(t for s in self.sessions for r in s.rounds[name] for t in r)

    def best(self, name: str) -> float:
        return min(s.best(name) for s in self.sessions)

    def ratio(self, name: str, reference: str) -> float:
        """Geometric mean over sessions of the median per-round ratio."""
        logs = [np.log(s.ratio(name, reference)) for s in self.sessions]
        return float(np.exp(np.mean(logs)))

    def spread(self, name: str) -> float:
        times = sorted(t for s in self.sessions for r in s.rounds[name] for t in r)
        if len(times) < 5:
            return float("nan")
        q1, _, q3 = statistics.quantiles(times, n=4)
        return (q3 - q1) / 2 / statistics.median(times)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.sessions)


def compare(
    factories: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    budget_s: float,
    keep: Callable[[Any], Any] = lambda runner: None,
    sessions: int = 2,
) -> Comparison:
    """Builds the runners (in opposite orders in alternate sessions) and interleaves them.

    ``keep(runner)`` is what to remember of each runner (its compile statistics, say)
    once the session ends and the runner, with its arrays, is dropped.
    """
    names = list(factories)
    out = Comparison([], {n: [] for n in names})
    for k in range(sessions):
        runners = {n: factories[n]() for n in (names if k % 2 == 0 else names[::-1])}
        out.sessions.append(interleave(runners, rounds=rounds, budget_s=budget_s / sessions))
        for n, r in runners.items():
            out.info[n].append(keep(r))
        del runners
    return out


def interleave(
    runners: dict[str, Any],
    *,
    rounds: int,
    steps: int = 1,
    warmup: int = 2,
    budget_s: float = 1e9,
) -> Timings:
    """Times ``steps`` steps of each runner per round, in a random order every round.

    Stops early (after at least 5 rounds) once ``budget_s`` seconds have passed.
    """
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name].run()
    out = Timings({n: [] for n in names})
    shuffle = random.Random(0).shuffle
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for r in range(rounds):
            order = list(names)
            shuffle(order)
            for name in order:
                out.rounds[name].append([runners[name].run() for _ in range(steps)])
            if r >= 4 and time.perf_counter() - start > budget_s:
                break
            if r % 50 == 49:
                gc.enable()
                gc.collect()
                gc.disable()
    finally:
        gc.enable()
    return out


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median of ``values``, or None if too few.

    The sign test's: the k-th smallest and the k-th largest value, with k the largest rank
    for which P(Binomial(n, 1/2) < k) <= (1 - level) / 2, so the interval holds the true
    median with probability at least ``level`` whatever the distribution. For 9 values it
    is the 2nd and the 8th (96.1%); for 6 the extremes (96.9%); below 6 there is none.
    """
    xs = sorted(values)
    n = len(xs)
    tail, below, k = (1 - level) / 2, 0.0, 0
    while k < n and below + math.comb(n, k) / 2**n <= tail:
        below += math.comb(n, k) / 2**n
        k += 1
    return None if k == 0 else (xs[k - 1], xs[n - k])


# ---------------------------------------------------------------------------------------
# Markdown


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return x if isinstance(x, str) else f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def ratio(x: float) -> str:
    return "—" if x != x else f"{x:.2f}×"
