"""Step speed: one optimizer step of tfopt against Keras 3, and against the memory-bandwidth bound.

For each layout of float32 variables

    A      1 variable      x 16,777,216
    B      64 variables    x 262,144
    C      1,024 variables x 4,096
    model  the trainable variables of keras.applications.MobileNetV2 (weights=None): 158, 3.5M parameters

it times one ``apply_gradients`` of tfopt's GradientDescent, Momentum and Adam (their defaults, the
native multi-tensor ops of ``tfopt.kernels.native``; and the other paths: ``fused=False``, the plain-ops
reference; Adam's ``fused=True``, TensorFlow's ``ResourceApplyAdam``; and "(fallback)": the default with
the native ops switched off for that row only, as with ``TFOPT_NATIVE=0``) and of Keras 3's SGD,
SGD(momentum) and Adam, in ``tf.function`` and eagerly. A "floor" row passes every input of an
Adam step to one op that computes nothing: what TensorFlow's runtime costs per input, before any
update (about 3 us per captured tensor in a ``tf.function``, which is what layout C is made of).
Issue 13's rows: an RMSprop and a Lion written here as users write them (``tfopt.Optimizer`` subclasses)
and AdamW as a chain (``scale_by_adam``, ``add_decayed_weights``, ``scale_by_learning_rate``), all run by
the op the rule compiler derives from their ``update`` (``tfopt.kernels.compiler``), beside Keras 3's
RMSprop, Lion and AdamW; and on layout C, "first call": the first call of a fresh ``tf.function`` step
(tracing, graph set-up and one step; slots built beforehand, compiled rules already cached).
And "fit" (issue 13): ``model.fit`` per epoch of a small real model (an MLP 64-512-512-512-10, 564k parameters
in 8 variables, on scikit-learn's 1,797 8x8 digits; synthetic digits of a fixed seed without scikit-learn),
batch 32, with ``tfopt.Adam(1e-3).as_keras()`` and ``tfopt.RMSprop(1e-3).as_keras()`` (the compiled rule)
beside Keras 3's Adam and RMSprop, and "(per-variable)": the same ``as_keras()`` optimizer with Keras's
per-variable ``update_step`` for every variable (as before the native step). Keras does not compile the step
with XLA here (``jit_compile="auto"`` is off on CPU-only machines). Each configuration has its model (the same
initial weights); the first epoch (tracing) is not timed, then the configurations take turns, one epoch each.
Gradients are fixed tensors made beforehand. Every configuration is
warmed up, then the configurations take turns, one step each, so that the noise of a shared
machine falls on all of them alike; a row is the median of its repeats.

The bound: a step reads and writes every parameter, gradient and slot once: 12 bytes per float32
parameter for GradientDescent, 20 for Momentum, 28 for Adam. The bandwidth is measured in the same
turns, as an in-place ``a += s * b`` over two arrays of 2^24 float32 (TensorFlow's own in-place
kernel, ``ResourceApplyGradientDescent``, on all cores: 12 bytes per element), so
"x bound" = ms / (bytes / bandwidth).

Peak extra memory (``tf.function``): each layout runs in its own subprocess (``--quick``: all in
this process). After the timing, per configuration, it returns freed memory to the system
(``malloc_trim``), resets the peak resident set size (``/proc/self/clear_refs``), runs two steps,
and reports the peak minus the resident size just before them (which holds params, grads, every
configuration's slots and the traced graphs), in MB and in units of the layout's largest variable.

Usage:
    python benchmarks/step_speed.py            # full run, a few minutes (layouts A, B, C, model, fit)
    python benchmarks/step_speed.py --quick    # under a minute: layouts A, B, C at 1/8 of their
                                               # size, no model, no fit, fewer repeats, no fused=False rows
    python benchmarks/step_speed.py --layouts fit           # model.fit per epoch only (about a minute)
    python benchmarks/step_speed.py --quick --layouts A,fit # any subset; --quick: fewer fit turns
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tfopt  # noqa: E402

BYTES_PER_PARAM = {"sgd": 12, "momentum": 20, "adam": 28, "rmsprop": 20, "lion": 20, "adamw": 28}
"""float32: read x, g and the slots, write x and the slots."""
BASELINE = {"sgd": "Keras SGD", "momentum": "Keras SGD(momentum)", "adam": "Keras Adam", "rmsprop": "Keras RMSprop",
            "lion": "Keras Lion", "adamw": "Keras AdamW"}
LR = 1e-3
WEIGHT_DECAY = 0.004  # Keras AdamW's default


class UserRMSprop(tfopt.Optimizer):
    """A rule as a user writes it (issue 13): v <- rho*v + (1-rho)*g^2;  x <- x - lr * g / (sqrt(v) + eps)."""

    slot_names = ("v",)
    rho = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)
    epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

    def update(self, grad, slots, *, learning_rate, rho, epsilon, **_):
        v = rho * slots["v"] + (1 - rho) * tf.square(grad)
        return learning_rate * grad / (tf.sqrt(v) + epsilon), {"v": v}


class UserLion(tfopt.Optimizer):
    """Lion as a user writes it: x <- x - lr * sign(b1*m + (1-b1)*g);  m <- b2*m + (1-b2)*g."""

    slot_names = ("m",)
    beta_1 = tfopt.Hyperparameter(0.9, check=tfopt.checks.closed_unit_interval)
    beta_2 = tfopt.Hyperparameter(0.99, check=tfopt.checks.unit_interval)

    def update(self, grad, slots, *, learning_rate, beta_1, beta_2, **_):
        m = slots["m"]
        delta = learning_rate * tf.sign(beta_1 * m + (1 - beta_1) * grad)
        return delta, {"m": beta_2 * m + (1 - beta_2) * grad}


def chain_adamw():
    """AdamW as a chain of transforms (Keras AdamW's numbers up to epsilon's placement)."""
    t = tfopt.transforms
    return tfopt.chain(t.scale_by_adam(), t.add_decayed_weights(WEIGHT_DECAY), t.scale_by_learning_rate(LR))


@functools.lru_cache
def layout_shapes(name: str, quick: bool) -> list[tuple[int, ...]]:
    scale = 8 if quick else 1
    if name == "A":
        return [(16_777_216 // scale,)]
    if name == "B":
        return [(262_144 // scale,)] * 64
    if name == "C":
        return [(4_096,)] * (1_024 // scale)
    model = keras.applications.MobileNetV2(weights=None)
    return [tuple(v.shape) for v in model.trainable_variables]


def configurations(quick: bool) -> list[tuple[str, str, object]]:
    """(label, rule, factory) for every optimizer under test; the Keras 3 one of a rule is its baseline."""
    configs = [
        ("tfopt GradientDescent", "sgd", lambda: tfopt.GradientDescent(LR)),
        ("tfopt GradientDescent(fused=False)", "sgd", lambda: tfopt.GradientDescent(LR, fused=False)),
        ("Keras SGD", "sgd", lambda: keras.optimizers.SGD(LR)),
        ("tfopt Momentum", "momentum", lambda: tfopt.Momentum(LR, momentum=0.9)),
        ("tfopt Momentum(fused=False)", "momentum", lambda: tfopt.Momentum(LR, momentum=0.9, fused=False)),
        ("Keras SGD(momentum)", "momentum", lambda: keras.optimizers.SGD(LR, momentum=0.9)),
        ("tfopt Adam", "adam", lambda: tfopt.Adam(LR)),
        ("tfopt Adam(fused=True)", "adam", lambda: tfopt.Adam(LR, fused=True)),
        ("tfopt Adam(fused=False)", "adam", lambda: tfopt.Adam(LR, fused=False)),
        ("Keras Adam", "adam", lambda: keras.optimizers.Adam(LR)),
        ("floor: Adam's inputs, no update", "adam", CapturesOnly),
        ("tfopt GradientDescent (fallback)", "sgd", lambda: WithoutNative(tfopt.GradientDescent(LR))),
        ("tfopt Momentum (fallback)", "momentum", lambda: WithoutNative(tfopt.Momentum(LR, momentum=0.9))),
        ("tfopt Adam (fallback)", "adam", lambda: WithoutNative(tfopt.Adam(LR))),
    ] + USER_CONFIGURATIONS
    if quick:
        configs = [c for c in configs if "fused=False" not in c[0]]
    if importlib.util.find_spec("tf_keras") is not None:  # legacy Keras 2 optimizers (fused kernels)
        import tf_keras

        legacy = tf_keras.optimizers.legacy
        configs += [
            ("tf_keras legacy SGD", "sgd", lambda: legacy.SGD(LR)),
            ("tf_keras legacy SGD(momentum)", "momentum", lambda: legacy.SGD(LR, momentum=0.9)),
            ("tf_keras legacy Adam", "adam", lambda: legacy.Adam(LR)),
        ]
    return configs


USER_CONFIGURATIONS = [  # issue 13: rules and chains compiled from their update (tfopt.kernels.compiler)
    ("tfopt user RMSprop", "rmsprop", lambda: UserRMSprop(LR)),
    ("Keras RMSprop", "rmsprop", lambda: keras.optimizers.RMSprop(LR)),
    ("tfopt user Lion", "lion", lambda: UserLion(LR)),
    ("Keras Lion", "lion", lambda: keras.optimizers.Lion(LR)),
    ("tfopt chain AdamW", "adamw", chain_adamw),
    ("Keras AdamW", "adamw", lambda: keras.optimizers.AdamW(LR, weight_decay=WEIGHT_DECAY)),
]
FIRST_CALL = ["tfopt user RMSprop", "Keras RMSprop", "tfopt user Lion", "Keras Lion", "tfopt chain AdamW",
              "Keras AdamW", "tfopt Adam", "Keras Adam"]
"""The optimizers whose first call (trace and first run) of a ``tf.function`` step is timed on layout C."""


class CapturesOnly:
    """The floor of a step: one op taking every input an Adam step takes (variables, two slots each,
    gradients) and computing nothing, so a row shows what the runtime costs per input before any update."""

    def build(self, variables):
        self.slots = [tf.Variable(tf.zeros_like(v)) for v in variables for _ in range(2)]

    def apply_gradients(self, pairs):
        grads, variables = zip(*pairs)
        handles = [v.handle for v in variables] + [s.handle for s in self.slots]
        tf.raw_ops.IdentityN(input=handles + list(grads))


class WithoutNative:
    """An optimizer whose steps run as if the native ops were unavailable (``TFOPT_NATIVE=0``, no compiler):
    ``tfopt.kernels.native.usable`` says no while its step is made (traced, or run eagerly), and only then."""

    def __init__(self, opt):
        self.opt = opt

    def build(self, variables):
        self.opt.build(variables)

    def apply_gradients(self, pairs):
        usable, tfopt.kernels.native.usable = tfopt.kernels.native.usable, lambda: False
        try:
            self.opt.apply_gradients(pairs)
        finally:
            tfopt.kernels.native.usable = usable


def make_step(label: str, factory, variables: list, grads: list, compiled: bool):
    """Build the optimizer and its slots; return a function applying one step."""
    opt = factory()
    targets = [v.value for v in variables] if label.startswith("tf_keras") else variables
    if hasattr(opt, "build"):
        opt.build(targets)

    def step():
        opt.apply_gradients(zip(grads, targets))

    return tf.function(step) if compiled else step


def make_probe():
    """The bandwidth probe: in-place a += s * b over 2^24 float32 (12 bytes per element)."""
    n = 1 << 24
    a, b = tf.Variable(tf.zeros([n])), tf.random.normal([n])
    s = tf.constant(-1e-9)

    @tf.function
    def probe():
        tf.raw_ops.ResourceApplyGradientDescent(var=a.handle, alpha=s, delta=b)

    return probe, 12 * n


def take_turns(functions: dict, repeats: int, warmup: int, budget: float) -> dict[str, float]:
    """Median seconds per call; each function is called once per turn, in turn."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in functions}
    for turn in range(repeats):
        for name, fn in functions.items():
            if turn >= 3 and sum(samples[name]) > budget:
                continue  # slow configurations stop after 3 repeats once over their time budget
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def make_variables(shapes):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
    grads = [tf.constant(rng.normal(size=s).astype("float32")) for s in shapes]
    return variables, grads


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_extra_bytes(step) -> int:
    """Peak resident memory of two calls of ``step`` above the resident memory before them."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM)
    step()
    step()
    return max(0, _status("VmHWM") - before)


def first_call_rows(name: str, quick: bool, variables: list, grads: list, params: int) -> list[dict]:
    """The first call of a fresh ``tf.function`` step (tracing, graph set-up, one step) of each of ``FIRST_CALL``,
    its slots built beforehand; compiled rules are already in the cache (built by the timing runs)."""
    factories = {label: (rule, factory) for label, rule, factory in configurations(quick)}
    rows = []
    for label in FIRST_CALL:
        rule, factory = factories[label]
        step = make_step(label, factory, variables, grads, compiled=True)
        gc.collect()  # (not inside the timing: the timing runs' graphs are garbage by now)
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
        rows.append(dict(layout=name, optimizer=label, rule=rule, mode="first call", ms=seconds * 1e3,
                         bound_ms=None, bandwidth_gbs=None, params=params, variables=len(variables),
                         largest_bytes=4 * max(int(np.prod(v.shape)) for v in variables)))
    return rows


# ------------------------------------------------------------------------- model.fit per epoch (issue 13)
FIT_WIDTHS = (512, 512, 512)
FIT_BATCH = 32


def _per_variable(keras_opt):
    """``keras_opt`` (an ``as_keras()`` optimizer) with Keras's per-variable ``update_step`` for every variable."""
    keras_opt._native = False
    return keras_opt


FIT_CONFIGURATIONS = [
    ("tfopt Adam.as_keras()", "adam", lambda: tfopt.Adam(LR).as_keras()),
    ("tfopt Adam.as_keras() (per-variable)", "adam", lambda: _per_variable(tfopt.Adam(LR).as_keras())),
    ("Keras Adam", "adam", lambda: keras.optimizers.Adam(LR)),
    ("tfopt RMSprop.as_keras()", "rmsprop", lambda: tfopt.RMSprop(LR).as_keras()),
    ("tfopt RMSprop.as_keras() (per-variable)", "rmsprop", lambda: _per_variable(tfopt.RMSprop(LR).as_keras())),
    ("Keras RMSprop", "rmsprop", lambda: keras.optimizers.RMSprop(LR)),
]
FIT_TARGETS = ("tfopt Adam.as_keras()", "tfopt RMSprop.as_keras()")


def fit_data() -> tuple[np.ndarray, np.ndarray, str]:
    """scikit-learn's 1,797 digits (pixels / 16), or as many synthetic ones of a fixed seed without scikit-learn."""
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return (x / 16.0).astype("float32"), y.astype("int32"), "scikit-learn digits"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=1797).astype("int32")
    centers = rng.uniform(size=(10, 64))
    x = np.clip(centers[y] + rng.normal(scale=0.2, size=(1797, 64)), 0, 1).astype("float32")
    return x, y, "synthetic digits"


def fit_model():
    keras.utils.set_random_seed(0)  # every configuration starts from the same weights
    layers = [keras.layers.Dense(width, activation="relu") for width in FIT_WIDTHS]
    return keras.Sequential([keras.Input((64,)), *layers, keras.layers.Dense(10)])


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit_rows(quick: bool) -> list[dict]:
    """``model.fit`` seconds per epoch of each of ``FIT_CONFIGURATIONS``: one untimed epoch each (tracing), then
    the configurations take turns, one epoch each; a row is the median of its turns."""
    x, y, _ = fit_data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    models, rules = {}, {}
    for label, rule, factory in FIT_CONFIGURATIONS:
        models[label], rules[label] = fit_model(), rule
        models[label].compile(optimizer=factory(), loss=loss)
    timer = _EpochTimer()
    samples = {label: [] for label in models}
    for turn in range(1 + (4 if quick else 7)):
        for label, model in models.items():
            model.fit(x, y, batch_size=FIT_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
            if turn:
                samples[label].append(timer.seconds)
    variables = models[FIT_CONFIGURATIONS[0][0]].trainable_variables
    params, largest = sum(int(np.prod(v.shape)) for v in variables), 4 * max(int(np.prod(v.shape)) for v in variables)
    return [dict(layout="fit", optimizer=label, rule=rules[label], mode="fit epoch", ms=statistics.median(times) * 1e3,
                 bound_ms=None, bandwidth_gbs=None, params=params, variables=len(variables), largest_bytes=largest,
                 jit_compile=bool(models[label].jit_compile), steps=-(-len(x) // FIT_BATCH))
            for label, times in samples.items()]


def run_layout(name: str, quick: bool) -> list[dict]:
    """All rows of one layout (run in a subprocess of its own)."""
    if name == "fit":
        return fit_rows(quick)
    probe, probe_bytes = make_probe()
    shapes = layout_shapes(name, quick)
    variables, grads = make_variables(shapes)
    params = sum(int(np.prod(s)) for s in shapes)
    largest = 4 * max(int(np.prod(s)) for s in shapes)
    rows = []
    for compiled in (True, False):
        mode = "tf.function" if compiled else "eager"
        steps, rules = {"bandwidth": probe}, {}
        for label, rule, factory in configurations(quick):
            steps[label] = make_step(label, factory, variables, grads, compiled)
            rules[label] = rule
        medians = take_turns(steps, repeats=3 if quick else 7, warmup=1 if quick else 2, budget=1.0 if quick else 4.0)
        bandwidth = probe_bytes / medians.pop("bandwidth")
        for label, seconds in medians.items():
            row = dict(layout=name, optimizer=label, rule=rules[label], mode=mode, ms=seconds * 1e3,
                       bound_ms=BYTES_PER_PARAM[rules[label]] * params / bandwidth * 1e3, bandwidth_gbs=bandwidth / 1e9,
                       params=params, variables=len(shapes), largest_bytes=largest)
            if compiled:
                row["extra_bytes"] = peak_extra_bytes(steps[label])
            rows.append(row)
        del steps
    if name == "C":
        rows += first_call_rows(name, quick, variables, grads, params)
    return rows


def run_layout_in_subprocess(name: str, quick: bool) -> list[dict]:
    args = [sys.executable, os.path.abspath(__file__), "--layout-child", name] + (["--quick"] if quick else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- table
def print_table(rows: list[dict]) -> None:
    ms = {(r["layout"], r["mode"], r["optimizer"]): r["ms"] for r in rows}
    header = (f"{'layout':7s} {'optimizer':39s} {'mode':11s} {'ms':>9s} {'Keras/ours':>10s} {'x bound':>8s} "
              f"{'extra MB':>9s} {'(vars)':>7s}")
    print(header)
    print("-" * len(header))
    for r in rows:
        speedup = ms[(r["layout"], r["mode"], BASELINE[r["rule"]])] / r["ms"]
        extra = r.get("extra_bytes")
        memory = f"{extra / 2**20:9.1f} {extra / r['largest_bytes']:7.2f}" if extra is not None else ""
        bound = f"{r['ms'] / r['bound_ms']:8.2f}" if r["bound_ms"] else f"{'-':>8s}"
        print(f"{r['layout']:7s} {r['optimizer']:39s} {r['mode']:11s} {r['ms']:9.2f} {speedup:9.1f}x {bound} {memory}")


DEFAULTS = {"sgd": "tfopt GradientDescent", "momentum": "tfopt Momentum", "adam": "tfopt Adam"}


def print_targets(rows: list[dict]) -> None:
    """The issue's targets, each checked on this run's rows: PASS or MISS, with the numbers."""
    by_key = {(r["layout"], r["mode"], r["optimizer"]): r for r in rows}
    lines = []

    def check(layout, mode, rule, what, ok, detail):
        if (layout, mode, DEFAULTS[rule]) in by_key:
            lines.append(f"{'PASS' if ok else 'MISS'}  {layout:5s} {mode:11s} {DEFAULTS[rule]:22s} {what:24s} {detail}")

    for rule, label in DEFAULTS.items():
        for layout in ("A", "B", "C", "model"):
            for mode in ("tf.function", "eager"):
                ours, keras_row = by_key.get((layout, mode, label)), by_key.get((layout, mode, BASELINE[rule]))
                if ours is None:
                    continue
                bound, speedup = ours["ms"] / ours["bound_ms"], keras_row["ms"] / ours["ms"]
                keras_bound = keras_row["ms"] / keras_row["bound_ms"]
                if mode == "tf.function" and layout in ("A", "B"):
                    check(layout, mode, rule, "<= 1.3x bound", bound <= 1.3, f"{bound:.2f}x")
                if mode == "tf.function" and layout == "A":
                    check(layout, mode, rule, ">= 5x Keras", speedup >= 5,
                          f"{speedup:.1f}x (Keras runs at {keras_bound:.1f}x the bound here)")
                if mode == "tf.function" and layout == "C":
                    check(layout, mode, rule, "faster than Keras", speedup > 1, f"{speedup:.1f}x")
                    check(layout, mode, rule, "aim: <= 20 ms", ours["ms"] <= 20, f"{ours['ms']:.1f} ms")
                if mode == "eager" and layout == "C":
                    check(layout, mode, rule, ">= 10x Keras eager", speedup >= 10, f"{speedup:.1f}x")
                if "extra_bytes" in ours:
                    extra = ours["extra_bytes"] / ours["largest_bytes"]
                    floor = by_key.get((layout, mode, "floor: Adam's inputs, no update"), {}).get("extra_bytes", 0)
                    check(layout, mode, rule, "extra <= 1 variable", extra <= 1,
                          f"{extra:.2f} variables ({ours['extra_bytes'] / 2**20:.2f} MB; "
                          f"the floor row: {floor / 2**20:.2f} MB)")
    for rule, label in DEFAULTS.items():  # issue 10: without the native ops, never slower than Keras
        fallback = f"{label} (fallback)"
        for layout in ("A", "B", "C"):
            ours, keras_row = by_key.get((layout, "tf.function", fallback)), by_key.get((layout, "tf.function",
                                                                                          BASELINE[rule]))
            if ours is not None and keras_row is not None:
                ok = ours["ms"] <= keras_row["ms"]
                lines.append(f"{'PASS' if ok else 'MISS'}  {layout:5s} {'tf.function':11s} {fallback:33s} "
                             f"{'<= Keras':10s} {keras_row['ms'] / ours['ms']:.2f}x Keras "
                             f"({ours['ms']:.2f} ms vs {keras_row['ms']:.2f} ms)")
    lines += user_rule_targets(by_key)
    lines += fit_targets(by_key)
    print("\nTargets (issues 6, 10 and 13), on this run:")
    print("\n".join(lines))


def user_rule_targets(by_key: dict) -> list[str]:
    """Issue 13: user rules and a chain, compiled, beside Keras 3's matching optimizers."""
    lines = []

    def line(ok, layout, mode, label, what, detail):
        lines.append(f"{'PASS' if ok else 'MISS'}  {layout:5s} {mode:11s} {label:22s} {what:24s} {detail}")

    for label in ("tfopt user RMSprop", "tfopt user Lion", "tfopt chain AdamW"):
        for layout in ("A", "B", "C"):
            ours = by_key.get((layout, "tf.function", label))
            if ours is None:
                continue
            keras_row = by_key[(layout, "tf.function", BASELINE[ours["rule"]])]
            bound, speedup = ours["ms"] / ours["bound_ms"], keras_row["ms"] / ours["ms"]
            if layout in ("A", "B"):
                line(bound <= 1.3, layout, "tf.function", label, "<= 1.3x bound", f"{bound:.2f}x")
            else:
                line(speedup >= 2, layout, "tf.function", label, ">= 2x Keras", f"{speedup:.1f}x "
                     f"({ours['ms']:.2f} ms vs {keras_row['ms']:.2f} ms)")
        first = by_key.get(("C", "first call", label))
        if first is not None:
            keras_first = by_key[("C", "first call", BASELINE[first["rule"]])]
            ratio = first["ms"] / keras_first["ms"]
            line(ratio <= 0.2, "C", "first call", label, "<= 1/5 of Keras", f"{ratio:.2f} of Keras "
                 f"({first['ms'] / 1e3:.2f} s vs {keras_first['ms'] / 1e3:.2f} s)")
    return lines


def fit_targets(by_key: dict) -> list[str]:
    """Issue 13: ``model.fit`` per epoch with an ``as_keras()`` optimizer <= with Keras 3's own."""
    lines = []
    for label in FIT_TARGETS:
        ours = by_key.get(("fit", "fit epoch", label))
        if ours is None:
            continue
        keras_row = by_key[("fit", "fit epoch", BASELINE[ours["rule"]])]
        slow = by_key.get(("fit", "fit epoch", f"{label} (per-variable)"))
        before = f"; per-variable {slow['ms']:.0f} ms" if slow else ""
        lines.append(f"{'PASS' if ours['ms'] <= keras_row['ms'] else 'MISS'}  {'fit':5s} {'fit epoch':11s} "
                     f"{label:24s} {'fit per epoch <= Keras':24s} {keras_row['ms'] / ours['ms']:.2f}x Keras "
                     f"({ours['ms']:.0f} ms vs {keras_row['ms']:.0f} ms{before})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A, B, C at 1/8 of their size, fewer repeats")
    parser.add_argument("--layouts", help="comma-separated subset of A,B,C,model,fit (default: all; --quick: A,B,C)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--layout-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.layout_child:
        print(json.dumps(run_layout(args.layout_child, args.quick)))
        return

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs; "
          f"tf_keras {'installed' if importlib.util.find_spec('tf_keras') else 'not installed'}")
    start, rows = time.perf_counter(), []
    for name in (args.layouts or ("A,B,C" if args.quick else "A,B,C,model,fit")).split(","):
        layout_start = time.perf_counter()
        layout_rows = run_layout(name, quick=True) if args.quick else run_layout_in_subprocess(name, quick=False)
        rows += layout_rows
        first = layout_rows[0]
        if name == "fit":
            print(f"layout fit: model.fit of an MLP {'-'.join(map(str, (64, *FIT_WIDTHS, 10)))} on {fit_data()[2]}, "
                  f"{first['variables']} variables, {first['params']:,} parameters, {first['steps']} steps of "
                  f"{FIT_BATCH} per epoch, jit_compile={first['jit_compile']}; "
                  f"{time.perf_counter() - layout_start:.0f} s", flush=True)
            continue
        bandwidths = " / ".join(f"{r['bandwidth_gbs']:.1f}" for r in layout_rows if r["optimizer"] == BASELINE["sgd"])
        print(f"layout {name}: {first['variables']} variables, {first['params']:,} parameters, largest "
              f"{first['largest_bytes'] / 2**20:.2f} MB; bandwidth {bandwidths} GB/s (tf.function / eager turns); "
              f"{time.perf_counter() - layout_start:.0f} s", flush=True)
    print()
    print_table(rows)
    print(f"\nKeras/ours: Keras 3's time for the same rule and mode over ours (higher is faster). x bound: ms over "
          f"the bandwidth bound. extra MB: peak memory of a tf.function step beyond params, grads and slots; "
          f"(vars): the same in units of the largest variable. fit epoch: ms per epoch of model.fit. "
          f"Total {time.perf_counter() - start:.0f} s.")
    print_targets(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
