"""The conformance kit: run tfopt's contract on your own rule.

    import tfopt

    class RMSprop(tfopt.Optimizer):
        ...

    tfopt.testing.check_optimizer(RMSprop)                          # built with its defaults
    tfopt.testing.check_optimizer(lambda: RMSprop(0.01, rho=0.8))   # or any factory
    tfopt.testing.check_optimizer(RMSprop, skip=("mirrored",))

``check_optimizer`` raises ``ConformanceError`` (an ``AssertionError``) whose message names each broken
property and the step where it broke, e.g. ``[per_variable] state per variable: after step 2, variable 1
differs when stepped together vs alone (max abs diff 0.3)``; it returns a ``Report`` (properties checked, with
their times, and skipped, with the reason) when all hold. ``PROPERTIES`` lists them (``name``, ``title``,
``doc``). Each property builds fresh optimizers from the factory, so properties are independent; all of them
run, and the error lists every failure (``ConformanceError.failures``: name -> message).

Exact properties compare bit for bit (the same ops run on both sides). Where a side legitimately rounds
differently the tolerance is stated in the property's doc: XLA (``jit_compile=True``, which may contract
multiply-adds), half precision, the all-reduce of ``MirroredStrategy`` (scaled by the rule's own measured
sensitivity to that reordering: ``MIRRORED_TOLERANCE``) and Keras's ``fit`` graph.

Gradients are fixed random tensors, not a model's loss, wherever eager and compiled runs are compared: a model's
own gradients may differ between eager and graph mode (grappler fuses MatMul + BiasAdd on some CPUs), which says
nothing about the optimizer.

Side effects on the calling process: if TensorFlow has not initialised its devices yet, ``check_optimizer``
splits the CPU into two logical devices (for ``MirroredStrategy``), as tfopt's own tests do; otherwise, with one
logical CPU, the ``mirrored`` property runs in a subprocess (the rule must be importable by its module path) or
is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np

__all__ = ["PROPERTIES", "ConformanceError", "ConformanceWarning", "Property", "Report", "check_optimizer"]


class ConformanceError(AssertionError):
    """One or more properties do not hold; ``failures`` maps each property's name to its message."""

    def __init__(self, failures: dict[str, str], report: Report | None = None):
        self.failures = dict(failures)
        self.report = report
        lines = [f"[{name}] {message}" for name, message in failures.items()]
        super().__init__(f"{len(lines)} propert{'y' if len(lines) == 1 else 'ies'} failed:\n" + "\n".join(lines))


class ConformanceWarning(UserWarning):
    """A property was skipped (it needs what this process cannot give, or what the rule does not support)."""


class _Skip(Exception):
    """Raised by a property that cannot run here; the reason becomes a warning, never a failure."""


@dataclasses.dataclass(frozen=True)
class Property:
    """One checked property: ``name`` (for ``skip=``/``only=``), a readable ``title``, and its ``doc``."""

    name: str
    title: str
    doc: str
    run: Callable = dataclasses.field(repr=False)


@dataclasses.dataclass
class Report:
    """What ``check_optimizer`` ran: ``checked`` name -> seconds, ``skipped`` name -> reason."""

    optimizer: str
    checked: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.checked.values())

    def __str__(self) -> str:
        lines = [f"{self.optimizer}: {len(self.checked)} properties hold ({self.seconds:.1f} s)"]
        lines += [f"  ok    {name:<16} {seconds:6.2f} s" for name, seconds in self.checked.items()]
        lines += [f"  skip  {name:<16} {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- helpers
STEPS = 3
XLA_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
"""XLA may contract a * b + c into one fused multiply-add: a rounding or so per op."""
MIRRORED_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
"""The all-reduce adds the replicas' halves of each batch in another order, so each gradient differs from the one
device's by a few float32 roundings of its largest terms (measured: at most 4 ulps of the tensor's largest
|entry|). A rule can amplify that far beyond rtol=1e-5 of an entry: FTRL's linear slot ``z`` accumulates terms
of size ``(n'^p - n^p) / lr * x`` (1/lr = 1000) that cancel, so an entry near 0 carries the rounding of terms
of size 1e3 (3e-5 at step 4, while bit for bit equal to one device fed the all-reduced gradients). So the allowed
difference of each entry is ``atol + rtol * |want| + MIRRORED_SENSITIVITY_FACTOR * S``, where S, the rule's
own sensitivity at that entry, is how far the one-device run moves when each gradient entry is moved by up to
``MIRRORED_REORDERING_ULPS`` ulps of its tensor's largest |entry| (uniform noise, two draws, the larger move).
The bit-for-bit comparison with one device fed the same gradients comes first, so a rule cannot hide a real
distribution bug in S, and a bug (a gradient averaged instead of summed, a slot updated once) moves the state by
far more than ten reorderings would."""
MIRRORED_REORDERING_ULPS = 4
"""The size of the all-reduce's reordering error, in float32 ulps of each gradient tensor's largest |entry|."""
MIRRORED_SENSITIVITY_FACTOR = 10
"""The margin on the measured sensitivity (two random draws estimate how far a worst-case reordering moves)."""
KERAS_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
"""Keras's ``fit`` computes the same loss with other ops (and may compile it with XLA)."""


def _fail(message: str):
    raise AssertionError(message)


def _max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    return float(np.nanmax(diff)) if diff.size else 0.0


def _bitwise_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _compare(got: dict, want: dict, when: str, how: str, *, tolerance: dict | None = None,
             allowance: dict | None = None):
    """Compare two ``{label: array}`` states; fail with "<when>, <label> differs <how> (max abs diff ...)".

    With ``tolerance`` (``rtol``, ``atol``) entries may differ by ``atol + rtol * |want|``, plus, per label, the
    entries of ``allowance[label]`` (an array of ``want``'s shape) if given."""
    for label, expected in want.items():
        actual = got.get(label)
        if actual is None:
            _fail(f"{when}, {label} is missing {how}")
        if tolerance is None:
            if not _bitwise_equal(actual, expected):
                _fail(f"{when}, {label} differs {how} (max abs diff {_max_diff(actual, expected):.3g})")
        else:
            a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
            extra = 0.0 if allowance is None else np.asarray(allowance.get(label, 0.0), np.float64)
            if a.shape != b.shape or not np.allclose(a, b, equal_nan=True, rtol=tolerance["rtol"],
                                                     atol=tolerance["atol"] + extra):
                also = f" + the measured sensitivity (up to {np.max(extra):.3g})" if allowance is not None else ""
                _fail(f"{when}, {label} differs {how} beyond rtol={tolerance['rtol']}, atol={tolerance['atol']}"
                      f"{also} (max abs diff {_max_diff(a, b):.3g})")


def _tf():
    import tensorflow as tf

    return tf


def _numpy(value):
    value = getattr(value, "value", value) if not hasattr(value, "numpy") else value
    return np.array(value.numpy())


def _state(opt, variables, labels=None) -> dict:
    """``{label: array}``: each variable, each of its slots, and ``iterations``."""
    labels = labels or [f"variable {i}" for i in range(len(variables))]
    state = {"iterations": np.array(int(opt.iterations.numpy()))}
    for label, variable in zip(labels, variables):
        state[label] = _numpy(variable)
        for name in opt.slot_names:
            try:
                slot = opt.get_slot(variable, name)
            except KeyError:
                continue
            state[f"slot {name!r} of {label}"] = _local(slot)
    return state


def _local(value):
    """A (possibly mirrored) variable's value, from its first component."""
    tf = _tf()
    if isinstance(value, tf.distribute.DistributedValues):
        value = value._values[0]  # noqa: SLF001  (every component is equal; checked in ``mirrored``)
    return _numpy(value)


def _grads(rng, shapes, dtype="float32") -> list:
    tf = _tf()
    return [tf.constant(rng.normal(size=shape).astype(dtype)) for shape in shapes]


def _model(rng, strategy=None):
    """A tiny ``keras.Sequential`` MLP (4 -> 5 tanh -> 2), float32, its weights drawn from ``rng``."""
    import contextlib

    import keras

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh", dtype="float32"),
                                  keras.layers.Dense(2, dtype="float32")])
        model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _shapes(variables) -> list:
    return [tuple(v.shape) for v in variables]


def _hyperparameters(opt) -> dict:
    """The declared hyperparameters (``tfopt.Hyperparameter``) of ``opt``'s class, by name."""
    from tfopt.core.hyperparameters import Hyperparameter, declarations

    return declarations(type(opt), Hyperparameter)


def _changeable(opt, name) -> bool:
    """A number or a variable (a schedule cannot be set to a number without a retrace)."""
    from tfopt.core.hyperparameters import _is_variable

    value = opt._hyper.get(name)  # noqa: SLF001
    return value is not None and _is_variable(value)


def _other_value(declaration, current: float):
    """A valid value of ``declaration`` different from ``current`` (``None`` if none is found)."""
    candidates = [current * 0.5, current * 0.8, current * 1.5, 0.5, 0.1, 0.01, 0.9, 2.0, 1.0, 0.0]
    for value in candidates:
        if value == current or not math.isfinite(value):
            continue
        try:
            declaration.check(declaration.name, value)
        except (ValueError, TypeError):
            continue
        return value
    return None


def _set_hyperparameter(opt, name, value) -> None:
    """``opt.<name> = value``; a variable the user owns is assigned, as the user would."""
    current = opt._hyper[name]  # noqa: SLF001
    if id(current) in opt._own_hyper_ids:  # noqa: SLF001
        setattr(opt, name, value)
    else:
        variable = getattr(current, "value", current) if not hasattr(current, "assign") else current
        variable.assign(np.full(variable.shape, value, variable.dtype.as_numpy_dtype))


def _changes(opt) -> list[tuple[str, float]]:
    """For each changeable hyperparameter, in declaration order, a different valid value."""
    found = []
    for name, declaration in _hyperparameters(opt).items():
        if not _changeable(opt, name):
            continue
        current = np.asarray(_numpy(opt._hyper[name]), np.float64).ravel()  # noqa: SLF001
        value = _other_value(declaration, float(current[0]) if current.size else 0.0)
        if value is not None:
            found.append((name, value))
    return found


def _hyper_values(opt) -> dict:
    return {name: float(np.asarray(_numpy(v)).ravel()[0]) for name, v in opt._hyper.items()  # noqa: SLF001
            if _changeable(opt, name)}


def _copy_state(source, target, source_vars, target_vars) -> None:
    """Give ``target`` the step count and slot values of ``source`` (and the variables' values)."""
    target.build(target_vars)
    target.iterations.assign(source.iterations)
    for s, t in zip(source_vars, target_vars):
        t.assign(_numpy(s))
        for name in source.slot_names:
            try:
                value = source.get_slot(s, name)
            except KeyError:  # no step yet: the target keeps its fresh slots
                continue
            target.get_slot(t, name).assign(_local(value))


def _clone(opt, **overrides):
    """A new optimizer from ``opt``'s config, with ``overrides``."""
    return type(opt).from_config({**opt.get_config(), **overrides})


class _Context:
    """What a property gets: ``make()`` builds a fresh optimizer; ``rng(k)`` a seeded generator."""

    def __init__(self, factory, target, lazy):
        self.factory, self.target, self.lazy_override = factory, target, lazy

    def make(self):
        from tfopt.core.optimizer import Optimizer

        opt = self.factory()
        if not isinstance(opt, Optimizer):
            raise TypeError(f"The factory returned a {type(opt).__name__}, not a tfopt.Optimizer.")
        return opt

    def lazy(self, opt) -> bool:
        return bool(getattr(opt, "lazy", False)) if self.lazy_override is None else self.lazy_override

    @staticmethod
    def rng(seed: int = 0):
        return np.random.default_rng(seed)


def _global_norm(opt) -> bool:
    """Whether ``opt`` couples its variables through a global norm (``global_clipnorm``, ``clip_by_global_norm``)."""
    if getattr(opt, "global_clipnorm", None) is not None:
        return True
    for part in getattr(opt, "transforms", None) or ():  # a chain: a transform with a ``reduce`` sees every variable
        reduce = getattr(type(part), "reduce", None)
        if reduce is not None and any(reduce is getattr(base, "reduce", None) for base in type(part).__mro__[1:]):
            continue  # inherited from the base Transform: does not reduce
        if reduce is not None or "globalnorm" in type(part).__name__.lower():
            return True
    return False


def _without_global_norm(ctx: _Context):
    """A factory of ``ctx``'s optimizer without global clipping (which legitimately couples variables)."""
    opt = ctx.make()
    if getattr(opt, "global_clipnorm", None) is not None:
        return lambda: _clone(ctx.make(), global_clipnorm=None)
    if _global_norm(opt):
        raise _Skip("the chain couples its variables through a global norm (clip_by_global_norm, or another "
                    "transform with a reduce): together == alone does not hold")
    return ctx.make


# ---------------------------------------------------------------------------------------- properties
def _slots(ctx: _Context):
    """Slots have their variable's shape and dtype, are non-trainable, one set per variable, created once (by
    ``build``, on first eager apply, and on first apply inside ``tf.function`` on a Keras model); ``get_slot``
    accepts a Keras variable and rejects an unknown slot name with ``KeyError``."""
    tf = _tf()
    rng = ctx.rng(1)
    opt = ctx.make()
    a, b = tf.Variable(rng.normal(size=3).astype("float32")), tf.Variable(rng.normal(size=(2, 1)))  # float64
    opt.build([a, b])
    before = len(opt.variables)
    for name in opt.slot_names:
        seen = set()
        for label, v in (("float32 variable", a), ("float64 variable", b)):
            slot = opt.get_slot(v, name)
            if id(slot) in seen:
                _fail(f"after build, two variables share the slot {name!r} object")
            seen.add(id(slot))
            if slot.dtype != v.dtype:
                _fail(f"after build, slot {name!r} of the {label} has dtype {slot.dtype.name}, not {v.dtype.name}")
            if slot.shape != v.shape and not hasattr(opt, "slot_shape"):
                _fail(f"after build, slot {name!r} of the {label} has shape {slot.shape}, not {v.shape}")
            if slot.trainable:
                _fail(f"after build, slot {name!r} of the {label} is trainable")
    for step in range(1, STEPS + 1):
        opt.apply_gradients(zip(_grads(rng, [(3,)]) + _grads(rng, [(2, 1)], "float64"), [a, b]))
        if len(opt.variables) != before:
            _fail(f"after step {step}, the optimizer has {len(opt.variables)} variables, {before} after build: "
                  "slots must be created once")
    try:
        opt.get_slot(a, "no such slot")
        _fail("get_slot(variable, 'no such slot') did not raise KeyError")
    except KeyError:
        pass

    model, opt = _model(rng), ctx.make()
    variables = model.trainable_variables
    step = tf.function(lambda grads: opt.apply_gradients(zip(grads, variables)))
    grads = _grads(rng, _shapes(variables))
    step(grads)
    count = len(opt.variables)
    step(grads)
    if int(opt.iterations.numpy()) != 2:
        _fail(f"after step 2 inside tf.function, iterations is {int(opt.iterations.numpy())}, not 2")
    if len(opt.variables) != count:
        _fail("after step 2 inside tf.function, new optimizer variables appeared: slots must be created once")
    for i, v in enumerate(variables):
        for name in opt.slot_names:
            try:
                slot = opt.get_slot(v, name)
            except KeyError:
                _fail(f"after a first apply inside tf.function, get_slot(Keras variable {i}, {name!r}) raised KeyError")
            if slot.dtype != v.dtype or (slot.shape != v.shape and not hasattr(opt, "slot_shape")):
                _fail(f"slot {name!r} of Keras variable {i}, created inside tf.function, is {slot.dtype.name} "
                      f"{slot.shape}, not {v.dtype} {tuple(v.shape)}")


def _per_variable(ctx: _Context):
    """Each variable's state is its own: two variables (same shape) stepped together equal each stepped alone by
    its own optimizer, bit for bit, step by step (slots and variables). Checked without global clipping."""
    tf = _tf()
    make = _without_global_norm(ctx)
    rng = ctx.rng(2)
    init = [rng.normal(size=(2, 3)).astype("float32") for _ in range(2)]
    together = [tf.Variable(x) for x in init]
    alone = [tf.Variable(x) for x in init]
    both, singles = make(), [make(), make()]
    for step in range(1, STEPS + 1):
        grads = _grads(rng, [(2, 3), (2, 3)])
        both.apply_gradients(zip(grads, together))
        for opt, g, v in zip(singles, grads, alone):
            opt.apply_gradients([(g, v)])
        for i in range(2):
            got = _state(both, [together[i]], [f"variable {i}"])
            want = _state(singles[i], [alone[i]], [f"variable {i}"])
            _compare(got, want, f"after step {step}", "when stepped together vs alone")


def _step_function(opt, variables, **kw):
    tf = _tf()
    return tf.function(lambda grads: opt.apply_gradients(zip(grads, variables)), **kw)


def _schedule_run(ctx, compiled: dict | None, seed=3):
    """Steps on a Keras model, every hyperparameter changed (one per step) after the first; state after each."""
    rng = ctx.rng(seed)
    model, opt = _model(ctx.rng(30)), ctx.make()
    variables = model.trainable_variables
    apply = _step_function(opt, variables, **compiled) if compiled is not None else (
        lambda grads: opt.apply_gradients(zip(grads, variables)))
    changes = _changes(opt)
    states = []
    for step in range(1, max(STEPS, len(changes) + 1) + 1):
        if step >= 2 and changes:
            _set_hyperparameter(opt, *changes[(step - 2) % len(changes)])
        apply(_grads(rng, _shapes(variables)))
        states.append(_state(opt, variables))
    return states


def _tf_function(ctx: _Context):
    """Eager and ``tf.function`` give the same numbers bit for bit, over several steps on a Keras model with a
    hyperparameter changed between steps."""
    for step, (eager, graph) in enumerate(zip(_schedule_run(ctx, None), _schedule_run(ctx, {})), 1):
        _compare(graph, eager, f"after step {step}", "in tf.function vs eager")


def _xla(ctx: _Context):
    """``tf.function(jit_compile=True)`` runs and stays close to eager: rtol=1e-5, atol=1e-6 (XLA may contract
    multiply-adds into FMAs, so not bit for bit)."""
    for step, (eager, xla) in enumerate(zip(_schedule_run(ctx, None), _schedule_run(ctx, {"jit_compile": True})), 1):
        _compare(xla, eager, f"after step {step}", "with jit_compile=True vs eager",
                 tolerance=XLA_TOLERANCE)


def _hyperparameters_property(ctx: _Context):
    """Each declared hyperparameter, set to another valid value between steps, reaches an already traced step
    without a retrace: the traced run equals, bit for bit, a reference where each step is taken by a fresh
    optimizer constructed with that step's values (and given the state so far)."""
    tf = _tf()
    rng = ctx.rng(4)
    opt = ctx.make()
    changes = _changes(opt)
    if not changes:
        raise _Skip("no hyperparameter held in a variable to change")
    init = [rng.normal(size=(3,)).astype("float32"), rng.normal(size=(2, 2)).astype("float32")]
    variables = [tf.Variable(x) for x in init]
    ref_vars = [tf.Variable(x) for x in init]
    step = _step_function(opt, variables)
    reference = None
    traces = None
    for k in range(len(changes) + 1):
        if k:
            _set_hyperparameter(opt, *changes[k - 1])
        grads = _grads(rng, _shapes(variables))
        step(grads)
        if k == 0:
            traces = step.experimental_get_tracing_count()  # (variables made on the first call: traced twice)
        elif step.experimental_get_tracing_count() != traces:
            _fail(f"after step {k + 1}, changing {changes[k - 1][0]} retraced the step function")
        fresh = _clone(opt, **_hyper_values(opt))
        if reference is not None:
            _copy_state(reference, fresh, ref_vars, ref_vars)
        fresh.apply_gradients(zip(grads, ref_vars))
        reference = fresh
        if k:
            what = f"after step {k + 1} ({changes[k - 1][0]} set to {changes[k - 1][1]:g} before it)"
            how = "in the traced step vs an optimizer constructed with the new values (change not honoured?)"
        else:
            what = "after step 1 (nothing changed yet)"
            how = ("in the traced step vs an optimizer rebuilt from get_config() (state outside the declared "
                   "hyperparameters, slots and iterations, or a config that loses an argument?)")
        _compare(_state(opt, variables), _state(reference, ref_vars), what, how)


def _step_counter(ctx: _Context):
    """The state lives in ``iterations`` and the slots only: ``iterations`` counts the steps (eager and in
    ``tf.function``), the traced run equals the eager one, and a fresh optimizer given the same ``iterations`` and
    slots takes the same next step as the one that took the steps (a Python step counter fails here)."""
    tf = _tf()
    rng = ctx.rng(5)
    init = rng.normal(size=(4,)).astype("float32")
    eager_var, graph_var = tf.Variable(init), tf.Variable(init)
    eager_opt, graph_opt = ctx.make(), ctx.make()
    graph_step = _step_function(graph_opt, [graph_var])
    for step in range(1, STEPS + 2):
        grads = _grads(rng, [(4,)])
        fresh, fresh_var = ctx.make(), tf.Variable(init)
        _copy_state(eager_opt, fresh, [eager_var], [fresh_var])
        eager_opt.apply_gradients([(grads[0], eager_var)])
        fresh.apply_gradients([(grads[0], fresh_var)])
        graph_step(grads)
        for label, opt in (("eager", eager_opt), ("tf.function", graph_opt)):
            if int(opt.iterations.numpy()) != step:
                _fail(f"after step {step} ({label}), iterations is {int(opt.iterations.numpy())}")
        _compare(_state(fresh, [fresh_var]), _state(eager_opt, [eager_var]),
                 f"after step {step}", "for a fresh optimizer given the same iterations and slots vs the "
                 "one that took the steps (state kept outside iterations and slots, e.g. a Python step counter?)")
        _compare(_state(graph_opt, [graph_var]), _state(eager_opt, [eager_var]),
                 f"after step {step}", "in tf.function vs eager")


def _checkpoint(ctx: _Context):
    """``tf.train.Checkpoint(model=..., optimizer=...)`` resumed by a fresh model and optimizer continues bit for
    bit like the run that never stopped: when the fresh optimizer is built before restoring, and when it is
    restored before any slot exists (deferred restoration, slots made inside ``tf.function``)."""
    tf = _tf()
    rng = ctx.rng(6)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")

    def stepper(model, opt):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x) - y) ** 2)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

        return step

    model, opt = _model(ctx.rng(60)), ctx.make()
    step = stepper(model, opt)
    for _ in range(STEPS):
        step()
    with tempfile.TemporaryDirectory() as directory:
        path = tf.train.Checkpoint(model=model, optimizer=opt).write(os.path.join(directory, "ckpt"))
        for _ in range(STEPS):
            step()
        want = _state(opt, model.trainable_variables)
        for how in ("built before restoring", "restored before any slot exists"):
            fresh_model, fresh_opt = _model(ctx.rng(61)), ctx.make()
            if how.startswith("built"):
                fresh_opt.build(fresh_model.trainable_variables)
            status = tf.train.Checkpoint(model=fresh_model, optimizer=fresh_opt).read(path)
            fresh_step = stepper(fresh_model, fresh_opt)
            for _ in range(STEPS):
                fresh_step()
            try:
                status.assert_existing_objects_matched()
            except AssertionError as error:
                _fail(f"optimizer {how}: the checkpoint did not restore every object: {error}")
            _compare(_state(fresh_opt, fresh_model.trainable_variables), want,
                     f"after step {2 * STEPS}", f"when resumed from step {STEPS} (optimizer {how}) vs never stopped")


def _sparse(ctx: _Context):
    """``tf.IndexedSlices`` gradients with repeated indices give the same variable and slots as their dense
    equivalent, bit for bit, step by step, and leave untouched rows alone. A lazy rule (``opt.lazy``, or
    ``check_optimizer(..., lazy=True)``) is checked against its row-wise definition instead: the touched rows step
    as a dense step of those rows alone, the other rows and their slots do not change."""
    tf = _tf()
    rng = ctx.rng(7)
    table = rng.normal(size=(9, 3)).astype("float32")
    sparse_var, dense_var = tf.Variable(table), tf.Variable(table)
    sparse_opt, dense_opt = ctx.make(), ctx.make()
    lazy = ctx.lazy(sparse_opt)
    for step, ids in enumerate(([1, 4, 1, 7, 1], [2, 2, 8], [4, 0, 4, 4]), 1):
        values = tf.constant(rng.normal(size=(len(ids), 3)).astype("float32"))
        grad = tf.IndexedSlices(values, tf.constant(ids), tf.constant(table.shape))
        rows = sorted(set(ids))
        before = _state(sparse_opt, [sparse_var])
        if lazy:  # the reference: the touched rows alone, as a dense variable with their slots
            row_var = tf.Variable(tf.gather(sparse_var, rows))
            row_opt = ctx.make()
            row_opt.build([row_var])
            row_opt.iterations.assign(sparse_opt.iterations)
            if step > 1:
                for name in sparse_opt.slot_names:
                    row_opt.get_slot(row_var, name).assign(tf.gather(sparse_opt.get_slot(sparse_var, name), rows))
            row_opt.apply_gradients([(tf.convert_to_tensor(tf.IndexedSlices(
                values, tf.constant([rows.index(i) for i in ids]), tf.constant([len(rows), 3]))), row_var)])
        sparse_opt.apply_gradients([(grad, sparse_var)])
        got = _state(sparse_opt, [sparse_var], ["the variable"])
        if not lazy:
            dense_opt.apply_gradients([(tf.convert_to_tensor(grad), dense_var)])
            _compare(got, _state(dense_opt, [dense_var], ["the variable"]),
                     f"after step {step}", "for IndexedSlices (repeated indices) vs the dense gradient")
        else:
            want = _state(row_opt, [row_var], ["the variable"])
            for label in want:
                if label != "iterations":
                    got[label] = got[label][rows]
            _compare(got, want, f"after step {step} (lazy rule)", "in the touched rows vs a dense step of those rows")
            untouched = [i for i in range(table.shape[0]) if i not in rows]
            after = _state(sparse_opt, [sparse_var])
            for label in after:
                old = before.get(label, np.zeros_like(after[label]))  # (no slot before the first step: zeros)
                if label != "iterations" and not _bitwise_equal(after[label][untouched], old[untouched]):
                    _fail(f"after step {step} (lazy rule), untouched rows of {label} changed")


def _none_gradients(ctx: _Context):
    """A ``None`` gradient skips its variable (unchanged, with its slots) with one warning naming it; all
    ``None`` raises ``ValueError`` and changes nothing."""
    tf = _tf()
    rng = ctx.rng(8)
    names = ["tfopt_check_a", "tfopt_check_b", "tfopt_check_c"]
    variables = [tf.Variable(rng.normal(size=(3,)).astype("float32"), name=n) for n in names]
    opt = ctx.make()
    opt.build(variables)
    before = _state(opt, variables)
    grads = _grads(rng, [(3,)] * 3)
    grads[1] = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.apply_gradients(zip(grads, variables))
    naming = [w for w in caught if names[1] in str(w.message)]
    if len(naming) != 1:
        _fail(f"step 1 with a None gradient for {names[1]!r}: {len(naming)} warnings name it, not 1 "
              f"(warnings: {[str(w.message) for w in caught]})")
    after = _state(opt, variables)
    for label in before:
        if "variable 1" in label and not _bitwise_equal(after[label], before[label]):
            _fail(f"step 1 with a None gradient for variable 1: {label} changed")
    opt = ctx.make()
    before = _state(opt, variables)
    try:
        opt.apply_gradients(zip([None] * 3, variables))
        _fail("a step with every gradient None did not raise ValueError")
    except ValueError:
        pass
    _compare(_state(opt, variables), before, "a step with every gradient None raised", "from before")


def _half_precision(ctx: _Context):
    """float16 and bfloat16 variables step without error, keep their dtype, have slots of their dtype, stay
    finite, and stay close to the float32 run on the same (rounded) gradients: within one unit in the last place
    of the half type per step, plus 5% of the distance the float32 run moved."""
    tf = _tf()
    steps = STEPS
    for dtype in (tf.float16, tf.bfloat16):
        rng = ctx.rng(9)
        init = tf.cast(tf.constant(rng.normal(size=(5,)).astype("float32")), dtype)
        grads = [tf.cast(g, dtype) for g in _grads(rng, [(5,)] * steps)]
        half, full = tf.Variable(init), tf.Variable(tf.cast(init, tf.float32))
        half_opt, full_opt = ctx.make(), ctx.make()
        for step, g in enumerate(grads, 1):
            half_opt.apply_gradients([(g, half)])
            full_opt.apply_gradients([(tf.cast(g, tf.float32), full)])
            if half.dtype != dtype:
                _fail(f"after step {step}, a {dtype.name} variable became {half.dtype.name}")
            for name in half_opt.slot_names:
                slot = half_opt.get_slot(half, name)
                if slot.dtype != dtype:
                    _fail(f"after step {step}, slot {name!r} of a {dtype.name} variable is {slot.dtype.name}")
        got = half.numpy().astype(np.float64)
        want, start = full.numpy().astype(np.float64), tf.cast(init, tf.float32).numpy().astype(np.float64)
        if not np.all(np.isfinite(got)):
            _fail(f"after step {steps}, a {dtype.name} variable is not finite: {got}")
        ulp = np.abs(want) * (2.0 ** -10 if dtype == tf.float16 else 2.0 ** -7) + 1e-6
        allowed = steps * ulp + 0.05 * np.abs(want - start)
        if np.any(np.abs(got - want) > allowed):
            _fail(f"after step {steps}, the {dtype.name} variable is {got}, the float32 run {want} "
                  f"(max abs diff {_max_diff(got, want):.3g}; allowed {allowed.max():.3g})")


@functools.cache
def two_replica_strategy():
    """One ``MirroredStrategy`` over the first two logical CPUs, shared by every check in this process.

    TensorFlow's collective ops keep per-process state keyed by group and instance numbers, which a second
    strategy over the same devices numbers again from the start: its all-reduces then abort with a shape
    mismatch against the first one's. So the kit (and tfopt's tests) make one and reuse it.
    """
    tf = _tf()
    return tf.distribute.MirroredStrategy(_logical_cpus()[:2])


def _mirrored(ctx: _Context):
    """Under ``MirroredStrategy`` with two replicas (two logical CPUs), a Keras model trained on global batches of
    8 (loss scaled by the global batch): (1) equals, bit for bit, one device fed the same all-reduced gradients
    (the optimizer's own part: slots, the sum across replicas, the update on each replica); (2) equals one device
    computing its own gradients within rtol=1e-5, atol=1e-6 plus 10 times the rule's measured sensitivity to the
    all-reduce's reordering (see ``MIRRORED_TOLERANCE``); the slots are mirrored and equal on both replicas."""
    tf = _tf()
    devices = _logical_cpus()
    if len(devices) < 2:
        return _mirrored_elsewhere(ctx, devices)
    strategy = two_replica_strategy()
    rng = ctx.rng(10)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def replica_step(model, opt, x, y):
        grads = _batch_gradients(model, x, y)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)

    model = _model(ctx.rng(100), strategy)
    with strategy.scope():
        opt = ctx.make()
    step = tf.function(lambda x, y: strategy.run(replica_step, args=(model, opt, x, y)))
    reduced = []
    for x_batch, y_batch in strategy.experimental_distribute_dataset(dataset):
        reduced.append([_local(g) for g in step(x_batch, y_batch)])
    got = _state(opt, model.trainable_variables)
    _compare(got, _single_device_state(ctx, dataset, fed=reduced), "after step 4",
             "on two replicas vs one device fed the same all-reduced gradients")
    want = _single_device_state(ctx, dataset)
    slack = [_single_device_state(ctx, dataset, noise_seed=seed) for seed in (1, 2)]
    allowance = {label: MIRRORED_SENSITIVITY_FACTOR * np.max(
        [np.abs(np.asarray(s[label], np.float64) - np.asarray(value, np.float64)) for s in slack], axis=0)
        for label, value in want.items()}
    _compare(got, want, "after step 4", "on two replicas vs one device", tolerance=MIRRORED_TOLERANCE,
             allowance=allowance)
    for i, v in enumerate(model.trainable_variables):
        for name in opt.slot_names:
            slot = opt.get_slot(v, name)
            if not isinstance(slot, tf.distribute.DistributedValues):
                _fail(f"slot {name!r} of variable {i} is not a mirrored variable")
            first, second = (_numpy(c) for c in strategy.experimental_local_results(slot))
            if not _bitwise_equal(first, second):
                _fail(f"after 4 steps, the two replicas' copies of slot {name!r} of variable {i} differ")


def _batch_gradients(model, x, y) -> list:
    """The gradients of the kit's loss on one (replica's part of a) global batch of 8: summed squares / 8."""
    tf = _tf()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((model(x) - y) ** 2) / 8.0
    return tape.gradient(loss, model.trainable_variables)


def _single_device_state(ctx: _Context, dataset, *, fed=None, noise_seed=None) -> dict:
    """The ``mirrored`` property's reference on one device: the model's own gradients of each batch, or the
    ``fed`` ones, or the own ones moved by reordering-sized noise (``MIRRORED_TOLERANCE``) drawn from
    ``noise_seed``; the state after the 4 steps."""
    tf = _tf()
    model, opt = _model(ctx.rng(100)), ctx.make()
    noise_rng = np.random.default_rng(noise_seed)
    ulps = MIRRORED_REORDERING_ULPS * 2.0 ** -23

    @tf.function
    def step(x, y, given, noise):
        grads = list(given) if fed is not None else _batch_gradients(model, x, y)
        if noise_seed is not None:  # each entry moved by up to `ulps` of its tensor's largest |entry|
            grads = [g + u * ulps * tf.reduce_max(tf.abs(g)) for g, u in zip(grads, noise)]
        opt.apply_gradients(zip(grads, model.trainable_variables))

    shapes = _shapes(model.trainable_variables)
    for k, (x_batch, y_batch) in enumerate(dataset):
        noise = [tf.constant(noise_rng.uniform(-1, 1, size=s).astype("float32")) for s in shapes]
        step(x_batch, y_batch, fed[k] if fed is not None else noise, noise)
    return _state(opt, model.trainable_variables)


def _logical_cpus() -> list[str]:
    """The names of this process's logical CPU devices."""
    return [d.name for d in _tf().config.list_logical_devices("CPU")]


def _import_path(target) -> str | None:
    """``module:qualname`` if ``target`` can be imported again by a new process, else ``None``."""
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is target else None


def _mirrored_elsewhere(ctx: _Context, devices):
    path = _import_path(ctx.target)
    if path is None:
        raise _Skip(f"this process has {len(devices)} logical CPU and TensorFlow has started, and "
                    f"{getattr(ctx.target, '__qualname__', ctx.target)!r} cannot be imported by a subprocess "
                    "(a lambda, a local or a __main__ object): pass a module-level class or function, or call "
                    "check_optimizer before TensorFlow initialises its devices")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), TF_CPP_MIN_LOG_LEVEL="2")
    code = "import sys, tfopt.testing as t; sys.exit(t._subprocess_main(sys.argv[1], sys.argv[2]))"
    args = [path, json.dumps({"lazy": ctx.lazy_override})]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("tfopt.testing:")]
    if done.returncode == 0 and lines:
        return
    if done.returncode == 3 and lines:
        raise _Skip(lines[-1].split(":", 1)[1].strip())
    if done.returncode == 1 and lines:
        _fail(lines[-1].split(":", 1)[1].strip() + " (in a subprocess with two logical CPUs)")
    raise _Skip(f"the subprocess with two logical CPUs did not run (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ''}")


def _subprocess_main(path: str, options: str) -> int:
    """Run the ``mirrored`` property on ``path`` (``module:qualname``) in this new process; 0 ok, 1 fail, 3 skip."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    module, qualname = path.split(":")
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConformanceWarning)
        try:
            check_optimizer(target, only=("mirrored",), **json.loads(options))
        except ConformanceError as error:
            print("tfopt.testing:", error.failures.get("mirrored", str(error)).replace("\n", " "))
            return 1
    skips = [str(w.message) for w in caught if issubclass(w.category, ConformanceWarning)]
    if skips:
        print("tfopt.testing:", skips[-1].replace("\n", " "))
        return 3
    print("tfopt.testing: ok")
    return 0


def _keras(ctx: _Context):
    """``opt.as_keras()`` in ``model.compile``/``model.fit`` on a tiny Keras model equals the same steps in a
    custom loop (``tf.function``) with the tfopt optimizer: rtol=1e-5, atol=1e-6 (Keras computes the same loss
    with other ops and may compile with XLA). Skipped (with a warning) if ``as_keras`` does not support the rule."""
    import keras

    tf = _tf()
    rng = ctx.rng(11)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 2)).astype("float32")
    try:
        keras_opt = ctx.make().as_keras()
    except (ValueError, NotImplementedError, TypeError) as error:
        raise _Skip(f"as_keras() does not support this rule: {error}") from None
    fitted, looped, opt = _model(ctx.rng(110)), _model(ctx.rng(110)), ctx.make()
    fitted.compile(optimizer=keras_opt, loss="mse")
    fitted.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, looped(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, looped.trainable_variables), looped.trainable_variables))

    for _ in range(2):
        for i in range(0, len(x), 8):
            step(x[i: i + 8], y[i: i + 8])
    got = {f"variable {i}": _numpy(v) for i, v in enumerate(fitted.trainable_variables)}
    want = {f"variable {i}": _numpy(v) for i, v in enumerate(looped.trainable_variables)}
    _compare(got, want, "after step 8", "in model.fit with as_keras() vs the custom loop",
             tolerance=KERAS_TOLERANCE)
    if int(keras_opt.iterations.numpy()) != 8:
        _fail(f"after 8 steps of model.fit, the Keras optimizer's iterations is {int(keras_opt.iterations.numpy())}")


def _bad_input(ctx: _Context):
    """Bad calls raise ``ValueError``/``TypeError`` (a schedule's negative rate: ``InvalidArgumentError``) before
    anything changes: unequal numbers of gradients and variables, a gradient of the wrong shape, a non-variable
    target, an integer variable, the same variable twice, a negative or NaN learning rate, and any hyperparameter
    value its check rejects. After each, no variable, slot, hyperparameter or ``iterations`` has changed."""
    tf = _tf()
    rng = ctx.rng(12)
    a = tf.Variable(rng.normal(size=(2,)).astype("float32"), name="tfopt_check_a")
    b = tf.Variable(rng.normal(size=(1, 1)).astype("float32"), name="tfopt_check_b")
    integer = tf.Variable([1, 2], name="tfopt_check_int")
    opt = ctx.make()
    opt.apply_gradients(zip(_grads(rng, [(2,), (1, 1)]), [a, b]))
    ga, gb = _grads(rng, [(2,), (1, 1)])
    calls = {
        "unequal numbers of gradients and variables": lambda: opt.apply_gradients([ga, gb], [a, b, tf.Variable(1.0)]),
        "a gradient of the wrong shape": lambda: opt.apply_gradients(zip([ga, tf.ones((2, 2))], [a, b])),
        "a non-variable target": lambda: opt.apply_gradients(zip([ga, ga], [a, tf.constant([1.0, 2.0])])),
        "an integer variable": lambda: opt.apply_gradients(zip([ga, tf.constant([1, 1])], [a, integer])),
        "the same variable twice": lambda: opt.apply_gradients(zip([ga, ga], [a, a])),
        "learning_rate = -0.1": lambda: setattr(opt, "learning_rate", -0.1),
        "learning_rate = NaN": lambda: setattr(opt, "learning_rate", float("nan")),
    }
    for name, declaration in _hyperparameters(opt).items():
        if name != "learning_rate" and _changeable(opt, name) and id(opt._hyper[name]) in opt._own_hyper_ids:  # noqa: SLF001
            for value in (-1.0, float("nan"), 1.0, float("inf")):
                try:
                    declaration.check(name, value)
                except (ValueError, TypeError):
                    calls[f"{name} = {value}"] = lambda n=name, v=value: setattr(opt, n, v)

    def snapshot():
        state = _state(opt, [a, b, integer])
        state.update({f"hyperparameter {n}": _numpy(v) for n, v in opt._hyper.items()  # noqa: SLF001
                      if _changeable(opt, n)})
        return state

    for what, call in calls.items():
        before = snapshot()
        try:
            call()
        except (ValueError, TypeError):
            wrong = None
        except Exception as error:  # noqa: BLE001
            wrong = error
        else:
            _fail(f"{what}: no error")
        _compare(snapshot(), before, f"{what} raised", "from before the call (half applied)")
        if wrong is not None:
            _fail(f"{what}: raised {type(wrong).__name__} ({_first_line(wrong)}), not an early ValueError or TypeError")

    opt = ctx.make()  # a schedule replaces the learning rate only before the first step
    opt.build([a, b])
    opt.learning_rate = lambda step: -1.0 + 0.0 * tf.cast(step, tf.float32)
    for _ in range(3):  # (a wrapper that accumulates, MultiSteps, reads the learning rate on a later call)
        before = snapshot()
        try:
            opt.apply_gradients(zip([ga, gb], [a, b]))
        except tf.errors.InvalidArgumentError:
            break
    else:
        _fail("a schedule returning a negative learning rate: no error in 3 calls")
    _compare(snapshot(), before, "a schedule returning a negative learning rate raised",
             "from before the call (half applied)")


def _config(ctx: _Context):
    """``type(opt).from_config(opt.get_config())`` has the same config and takes the same steps, bit for bit."""
    tf = _tf()
    rng = ctx.rng(13)
    opt = ctx.make()
    config = opt.get_config()
    clone = type(opt).from_config(config)
    if clone.get_config() != config:
        diff = {k: (config.get(k), clone.get_config().get(k)) for k in set(config) | set(clone.get_config())
                if config.get(k) != clone.get_config().get(k)}
        _fail(f"from_config(get_config()).get_config() differs: {diff}")
    init = rng.normal(size=(2, 3)).astype("float32")
    x, y = tf.Variable(init), tf.Variable(init)
    for step in range(1, STEPS + 1):
        grads = _grads(rng, [(2, 3)])
        opt.apply_gradients(zip(grads, [x]))
        clone.apply_gradients(zip(grads, [y]))
        _compare(_state(clone, [y]), _state(opt, [x]), f"after step {step}",
                 "for from_config(get_config()) vs the original")


PROPERTIES: tuple[Property, ...] = tuple(
    Property(name, title, " ".join(fn.__doc__.split()), fn)
    for name, title, fn in [
        ("slots", "slots", _slots),
        ("per_variable", "state per variable", _per_variable),
        ("tf_function", "eager == tf.function", _tf_function),
        ("xla", "eager ~ jit_compile", _xla),
        ("hyperparameters", "hyperparameter change without retrace", _hyperparameters_property),
        ("step_counter", "step counter in iterations", _step_counter),
        ("checkpoint", "checkpoint resume", _checkpoint),
        ("sparse", "sparse == dense", _sparse),
        ("none_gradients", "None gradients", _none_gradients),
        ("half_precision", "half precision", _half_precision),
        ("mirrored", "MirroredStrategy == one device", _mirrored),
        ("keras", "as_keras() fit == custom loop", _keras),
        ("bad_input", "bad input changes nothing", _bad_input),
        ("config", "config round trip", _config),
    ]
)
"""Every property ``check_optimizer`` runs, in order."""


def _two_logical_cpus() -> None:
    """Split the CPU into two logical devices if TensorFlow has not initialised its devices yet."""
    tf = _tf()
    try:
        cpus = tf.config.list_physical_devices("CPU")
        if cpus and len(tf.config.get_logical_device_configuration(cpus[0]) or []) < 2:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # devices already initialised: the mirrored property finds its own way
        pass


def check_optimizer(cls_or_factory, *, skip=(), only=None, lazy=None) -> Report:
    """Run tfopt's contract (``PROPERTIES``) on an optimizer; raise ``ConformanceError`` naming what broke.

    Args:
      cls_or_factory: a ``tfopt.Optimizer`` subclass (built with its defaults) or a function of no arguments
        returning a fresh optimizer (a lambda is fine; the ``mirrored`` property may then be skipped).
      skip: names of properties not to run (see ``PROPERTIES``).
      only: if given, run only these properties.
      lazy: whether sparse gradients update only the touched rows (``LazyAdam``); by default ``opt.lazy``.

    Returns a ``Report``: the properties that hold (with their seconds) and those skipped (with why; each
    skip is also a ``ConformanceWarning``). Raises ``ConformanceError`` (an ``AssertionError``) listing every
    failing property with the step and the value that differ.
    """
    from tfopt.core.optimizer import Optimizer

    if isinstance(cls_or_factory, Optimizer):
        name = type(cls_or_factory).__name__
        raise TypeError("check_optimizer takes a class or a function returning a fresh optimizer, not an "
                        f"instance: pass {name} or lambda: {name}(...).")
    if not callable(cls_or_factory):
        raise TypeError(f"check_optimizer takes a tfopt.Optimizer subclass or a factory, not {cls_or_factory!r}.")
    names = [p.name for p in PROPERTIES]
    for name in [*skip, *(only or ())]:
        if name not in names:
            raise ValueError(f"Unknown property {name!r}; the properties are {names}.")
    selected = [p for p in PROPERTIES if p.name not in skip and (only is None or p.name in only)]
    if any(p.name == "mirrored" for p in selected):
        _two_logical_cpus()
    ctx = _Context(cls_or_factory, cls_or_factory, lazy)
    sample = ctx.make()  # fails early (TypeError) if the factory does not return an optimizer
    report = Report(getattr(cls_or_factory, "__qualname__", None) or type(sample).__name__)
    failures = {}
    logger = _tf().get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # a broken rule retraces; TensorFlow's retracing advice would bury the report
    try:
        for prop in PROPERTIES:
            if prop not in selected:
                report.skipped[prop.name] = "skipped by the caller"
                continue
            start = time.perf_counter()
            try:
                prop.run(ctx)
            except _Skip as reason:
                report.skipped[prop.name] = str(reason)
                warnings.warn(f"tfopt.testing: {prop.title} ({prop.name}) skipped: {reason}", ConformanceWarning,
                              stacklevel=2)
                continue
            except AssertionError as error:
                failures[prop.name] = f"{prop.title}: {error}"
            except Exception as error:  # noqa: BLE001  (the rule broke: say where)
                line, kind = _first_line(error), type(error).__name__
                failures[prop.name] = f"{prop.title}: raised {line if line.startswith(kind) else f'{kind}: {line}'}"
            report.checked[prop.name] = time.perf_counter() - start
    finally:
        logger.setLevel(level)
    if failures:
        for name in failures:
            report.checked.pop(name, None)
        raise ConformanceError(failures, report)
    return report


def _first_line(error: Exception) -> str:
    """The line that says what went wrong (for ``tf.function``'s "in user code:" errors, the last one)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return repr(error)
    return lines[-1] if lines[0].startswith("in user code") else lines[0]
