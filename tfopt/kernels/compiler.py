"""The rule compiler: any elementwise ``update`` becomes one native multi-tensor op, with the plain ops' bits.

A rule's ``update`` (a ``tfopt.Optimizer`` subclass's, a built-in's, a ``tfopt.chain``'s) is traced once on
symbolic tensors of the compute dtype: ``grad``, ``param`` and each slot of unknown shape, each per-step scalar
(learning rate, hyperparameters, ``step``, ``step_values``, ``gradient_values``) a scalar. If every op of the
graph is one that TensorFlow's CPU kernels round correctly and that acts element by element, the graph is
translated into a C++ loop body, one statement per op in the graph's order::

    AddV2 Add Sub Mul RealDiv Div Neg Square Sqrt Abs Sign Floor Ceil Minimum Maximum SquaredDifference
    Less LessEqual Greater GreaterEqual Equal NotEqual LogicalAnd LogicalOr LogicalNot Select SelectV2
    Cast (float32, float64, bool) Const ZerosLike OnesLike Fill Identity EnsureShape StopGradient AddN (1, 2)

built into a small library of its own (no TensorFlow headers: a fraction of a second, with the op library's
flags and ``-ffp-contract=off``, cached by the source in ``tfopt.kernels.native``'s private cache) and run
by the op ``TfoptApplyRule`` (``native.cc``): all variables of a step (with their slots) in one op, in place,
the work split over all elements on TensorFlow's threads. Each element gets the ops' IEEE roundings in the
graph's order, so the numbers are the plain ops' bit for bit (``tests/test_compiler.py``), slots included.
Eigen runs a vector path over whole packets of a tensor and a scalar path over its last ``size % packet``
elements, and ``Minimum``, ``Maximum`` and ``Sign`` differ between the two on edge values (two zeros of either
sign, denormals, the sign bit of a NaN): the op runs each element as its path does (``packet`` is measured on
this TensorFlow at first use). What is not reproduced: the sign and payload of a NaN made from two NaNs
(``a + b`` of two NaNs may keep the other one, as the compiler orders the operands of a commutative op).

The compiler *declines* (and the optimizer takes its per-variable plain ops, as before) when:

* an op is not in the list: a transcendental one (``Exp``, ``Log``, ``Pow``, ``Tanh``...: TensorFlow's are not
  correctly rounded, a C++ one would differ), ``Rsqrt`` and ``Reciprocal`` (Eigen approximates them), a
  reduction (``Sum``: Lamb's trust ratio, Adafactor's factored moments), anything shape-dependent or stateful;
* ``update`` cannot be traced on tensors of unknown shape (it reads ``grad.shape``, calls ``.numpy()``, mixes
  dtypes), changes the optimizer's Python state (``self.t += 1``), or gives a different graph on a later trace
  (it reads Python state that changes);
* the rule has ``slot_shape`` (slots of another shape than the variable), more than 16 slots, or an output
  of another dtype than the compute dtype.

``explain(optimizer)`` says which, in one line (``None`` when the rule compiles).

The API, for callers that hold variables, slots and gradients (``Optimizer._apply_native``, Keras's adapter)::

    rule = compiler.rule_for(optimizer, tf.float32, scalars)   # a CompiledRule, or None (declined)
    compiler.apply(rule, variables, slots, grads, scalars)     # one op: every variable and slot, in place

``scalars`` maps every input name of ``update`` but the per-element ones (``grad``, ``param``, the slots) to
a scalar tensor of the compute dtype (``Optimizer._apply`` makes them), ``slots`` is one dict per variable
(slot name -> variable), ``grads`` dense tensors of the compute dtype. Variables are float16, bfloat16 (stepped
in float32, rounded once, as the plain ops do), float32 or float64, on the CPU, not distributed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import os
import stat
import threading
import weakref

import numpy as np
import tensorflow as tf

from tfopt.kernels import native

MAX_SLOTS = 16
"""At most this many slots per variable (``native.cc``'s ``kMaxRuleSlots``)."""

DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)
"""Variable dtypes the op takes; half precision is stepped in float32."""

_C_TYPES = {tf.float32: "float", tf.float64: "double", tf.bool: "bool"}
_UNARY = {
    "Neg": "(-{0})", "Square": "({0} * {0})", "Sqrt": "std::sqrt({0})", "Abs": "std::fabs({0})",
    "Floor": "std::floor({0})", "Ceil": "std::ceil({0})", "LogicalNot": "(!{0})",
    "Sign": "tfopt_sign_{mode}({0})",
}
_BINARY = {
    "AddV2": "({0} + {1})", "Add": "({0} + {1})", "Sub": "({0} - {1})", "Mul": "({0} * {1})",
    "RealDiv": "({0} / {1})", "Div": "({0} / {1})", "SquaredDifference": "tfopt_squared_difference({0}, {1})",
    "Less": "({0} < {1})", "LessEqual": "({0} <= {1})", "Greater": "({0} > {1})", "GreaterEqual": "({0} >= {1})",
    "Equal": "({0} == {1})", "NotEqual": "({0} != {1})", "LogicalAnd": "({0} && {1})", "LogicalOr": "({0} || {1})",
    "Minimum": "tfopt_min_{mode}({0}, {1})", "Maximum": "tfopt_max_{mode}({0}, {1})",
}
_PASS_THROUGH = {"Identity", "EnsureShape", "StopGradient", "PreventGradient", "Snapshot"}
_INEXACT = {
    "Rsqrt": "Eigen may compute it with an approximation (a/sqrt(b) traced as a*rsqrt(b)?)",
    "Reciprocal": "Eigen may compute it with an approximation; write 1 / x",
    "Inv": "Eigen may compute it with an approximation; write 1 / x",
}
_TRANSCENDENTAL = {
    "Exp", "Expm1", "Log", "Log1p", "Pow", "Tanh", "Sigmoid", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan",
    "Atan2", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Erf", "Erfc", "Softplus", "Softsign", "Lgamma",
    "Digamma", "Xlogy", "Xlog1py", "Elu", "Selu", "Gelu",
}

_PRELUDE = r"""// Generated by tfopt/kernels/compiler.py from an optimizer's update rule: do not edit.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace {
// TensorFlow's CPU kernels (Eigen) run a vector path over whole packets and a scalar path over the last
// (size % packet) elements of a tensor, and a few ops differ between the two:
// * Minimum/Maximum propagate NaN; otherwise the vector path is the min/max instruction, which returns the
//   second operand of equal values (+0, -0) and, denormals being taken as zero, a zero for a denormal; the
//   scalar path returns the first of equal values and the operand itself;
// * Sign of a NaN: the vector path clears its sign bit, the scalar path returns it as it is.
template <typename T> inline T tfopt_daz(T a) {
  return std::fabs(a) < std::numeric_limits<T>::min() ? std::copysign(T(0), a) : a;
}
template <typename T> inline T tfopt_min_packet(T a, T b) {
  if (std::isnan(a)) return a;
  const T x = tfopt_daz(a), y = tfopt_daz(b);
  return x < y ? x : y;
}
template <typename T> inline T tfopt_max_packet(T a, T b) {
  if (std::isnan(a)) return a;
  const T x = tfopt_daz(a), y = tfopt_daz(b);
  return x > y ? x : y;
}
template <typename T> inline T tfopt_min_scalar(T a, T b) {
  return std::isnan(a) ? a : std::isnan(b) ? b : (b < a ? b : a);
}
template <typename T> inline T tfopt_max_scalar(T a, T b) {
  return std::isnan(a) ? a : std::isnan(b) ? b : (a < b ? b : a);
}
template <typename T> inline T tfopt_sign_packet(T a) {
  return std::isnan(a) ? std::fabs(a) : (a > T(0) ? T(1) : (a < T(0) ? T(-1) : T(0)));
}
template <typename T> inline T tfopt_sign_scalar(T a) {
  return std::isnan(a) ? a : (a > T(0) ? T(1) : (a < T(0) ? T(-1) : T(0)));
}
template <typename T> inline T tfopt_squared_difference(T a, T b) { const T d = a - b; return d * d; }
template <typename T, typename B> inline T tfopt_bits(B bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}
}  // namespace
"""


class Declined(Exception):
    """The rule cannot be compiled; ``str()`` says why in one line."""


@dataclasses.dataclass(frozen=True)
class CompiledRule:
    """A rule's loop body for one compute dtype, ready to run once ``register``-ed (``rule_for`` does it).

    ``key``: the hash of the generated code (it changes with the rule's math), ``slot_names`` the slots
    in the op's order, ``scalar_names`` the per-step scalars the body reads, in the op's order.
    """

    key: str
    dtype: tf.DType
    slot_names: tuple[str, ...]
    scalar_names: tuple[str, ...]
    function: str
    cost: int
    path_dependent: bool

    @property
    def symbol(self) -> str:
        return f"tfopt_rule_{self.key}"

    def source(self) -> str:
        return self.function.replace("@NAME@", self.symbol)


# ------------------------------------------------------------------------------------------------ tracing
def _placeholders(dtype: tf.DType, slot_names, scalar_names):
    grad = tf.compat.v1.placeholder(dtype, shape=None, name="grad")
    param = tf.compat.v1.placeholder(dtype, shape=None, name="param")
    slots = {name: tf.compat.v1.placeholder(dtype, shape=None, name=f"slot_{i}") for i, name in enumerate(slot_names)}
    scalars = {name: tf.compat.v1.placeholder(dtype, shape=[], name=f"scalar_{i}")
               for i, name in enumerate(scalar_names)}
    return grad, param, slots, scalars


def _python_state(obj, seen=None) -> list:
    """A snapshot of ``obj``'s attributes (and of the modules it holds: a chain's transforms), to restore."""
    seen = set() if seen is None else seen
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return []
    seen.add(id(obj))
    state = [(obj, dict(vars(obj)), {k: _contents(v) for k, v in vars(obj).items() if _contents(v) is not None})]
    for value in list(vars(obj).values()):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, tf.Module) and not isinstance(item, tf.Variable):
                state += _python_state(item, seen)
    return state


def _contents(value):
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return None


def _restore(state: list) -> list[str]:
    """Put back what tracing changed; return the names of the attributes it changed."""
    changed = []
    for obj, attributes, contents in state:
        now = vars(obj)
        names = {k for k in set(now) | set(attributes) if now.get(k, _MISSING) is not attributes.get(k, _MISSING)}
        names |= {k for k, c in contents.items() if k not in names and _changed(now.get(k), c)}
        for name in names:
            if name in contents:
                _put_back(attributes[name], contents[name])
            if name in attributes:
                object.__setattr__(obj, name, attributes[name])
            else:
                object.__delattr__(obj, name)
        changed += sorted(names)
    return changed


_MISSING = object()


def _changed(value, contents) -> bool:
    if isinstance(value, list):
        return len(value) != len(contents) or any(a is not b for a, b in zip(value, contents))
    return set(value) != set(contents) or any(value[k] is not contents[k] for k in contents)


def _put_back(container, contents) -> None:
    if isinstance(container, list):
        container[:] = contents
    else:
        container.clear()
        container.update(contents)


def _trace(optimizer, dtype: tf.DType, scalar_names) -> tuple:
    """``update`` on symbolic tensors in a graph of its own: ``(graph, inputs, outputs)``; ``Declined`` if not."""
    if getattr(optimizer, "slot_shape", None) is not None:
        raise Declined("its slots have shapes of their own (slot_shape), not the variable's")
    slot_names = tuple(optimizer.slot_names)
    if len(slot_names) > MAX_SLOTS:
        raise Declined(f"it has {len(slot_names)} slots per variable (at most {MAX_SLOTS})")
    state = _python_state(optimizer)
    graph = tf.Graph()
    try:
        with graph.as_default():
            grad, param, slots, scalars = _placeholders(dtype, slot_names, scalar_names)
            delta, new_slots = optimizer.update(grad, dict(slots), param=param, **scalars)
            if not isinstance(new_slots, dict) or set(new_slots) != set(slot_names):
                raise Declined("update does not return exactly its slots")
            outputs = [tf.convert_to_tensor(delta, dtype)] + [tf.convert_to_tensor(new_slots[n], dtype)
                                                             for n in slot_names]
    except Declined:
        raise
    except Exception as error:  # noqa: BLE001  (whatever stops the trace: the plain ops will say it, or run)
        raise Declined(f"update cannot be traced on tensors of unknown shape: {type(error).__name__}: "
                       f"{_one_line(error)}") from None
    finally:
        changed = _restore(state)
    changed = [name for name in changed if not name.startswith("_self_")] or changed  # (tf.Module's tracking)
    if changed:
        raise Declined(f"update changes the optimizer's Python state ({', '.join(changed)}): its numbers depend on "
                       "when and how often it is called")
    inputs = {grad.op.name: "g[i]", param.op.name: "x[i]"}
    inputs.update({slots[n].op.name: f"s{k}[i]" for k, n in enumerate(slot_names)})
    inputs.update({scalars[n].op.name: n for n in scalar_names})
    return graph, inputs, outputs


def _one_line(error) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."


# -------------------------------------------------------------------------------------------- translation
def _literal(value, dtype: tf.DType) -> str:
    if dtype == tf.bool:
        return "true" if bool(value) else "false"
    ctype = _C_TYPES[dtype]
    value = np.asarray(value, dtype.as_numpy_dtype)
    if np.isfinite(value):
        return f"{ctype}({float(value).hex()}{'f' if dtype == tf.float32 else ''})"
    bits = value.view(np.uint32 if dtype == tf.float32 else np.uint64)
    return f"tfopt_bits<{ctype}>({int(bits)}u{'ll' if dtype == tf.float64 else ''})"


def _check_dtype(op, tensor) -> None:
    if tensor.dtype not in _C_TYPES:
        raise Declined(f"op {op.name} ({op.type}) works on {tensor.dtype.name}; only float32, float64 and bool "
                       "are translated")


def _translate(graph, inputs: dict, outputs: list, dtype: tf.DType):
    """The loop body of ``outputs`` (C++ statements), the scalars it reads, and whether it has min/max."""
    for op in graph.get_operations():
        if op.op_def.is_stateful and op.type != "Placeholder":
            raise Declined(f"update has a stateful op, {op.name} ({op.type})")
        if op.control_inputs:
            raise Declined(f"op {op.name} ({op.type}) has control dependencies (an assertion?)")
    names, lines, used, min_max = {}, [], [], False
    varying = {}  # tensor name -> whether it has the variable's shape (depends on grad, param or a slot)

    def visit(tensor):
        nonlocal min_max
        if tensor.name in names:
            return names[tensor.name]
        op = tensor.op
        _check_dtype(op, tensor)
        if op.type == "Placeholder":
            expression = inputs[op.name]
            varying[tensor.name] = expression.endswith("[i]")
            if not varying[tensor.name]:  # a per-step scalar
                if expression not in used:
                    used.append(expression)
                expression = f"k{used.index(expression)}"
            names[tensor.name] = expression
            return expression
        if op.type in _PASS_THROUGH or (op.type == "AddN" and len(op.inputs) == 1):
            names[tensor.name] = visit(op.inputs[0])
            varying[tensor.name] = varying[op.inputs[0].name]
            return names[tensor.name]
        expression = _expression(op, tensor, visit)
        varying[tensor.name] = any(varying.get(t.name, False) for t in op.inputs)
        if op.type in ("Minimum", "Maximum", "Sign"):
            min_max = True
        name = f"t{len(lines)}"
        lines.append(f"const {_C_TYPES[tensor.dtype]} {name} = {expression};")
        names[tensor.name] = name
        return name

    results = [visit(t) for t in outputs]
    for position, tensor in enumerate(outputs):
        if not varying[tensor.name]:  # the plain ops would fail: a scalar assigned to (or subtracted from) a tensor
            what = "the step (delta)" if position == 0 else f"new slot {position - 1}"
            raise Declined(f"{what} is a scalar: it depends on no gradient, variable or slot")
    return lines, results, used, min_max


def _expression(op, tensor, visit) -> str:
    kind = op.type
    if kind == "Const":
        value = tf.make_ndarray(op.get_attr("value"))
        if value.shape != ():
            raise Declined(f"constant {op.name} has shape {value.shape}; only scalars are translated")
        return _literal(value, tensor.dtype)
    if kind in ("ZerosLike", "OnesLike"):
        visit(op.inputs[0])
        return _literal(0 if kind == "ZerosLike" else 1, tensor.dtype)
    if kind == "Fill":
        dims = op.inputs[0].op
        if dims.type != "Const" or tf.make_ndarray(dims.get_attr("value")).size != 0:
            raise Declined(f"op {op.name} (Fill) makes a tensor of another shape")
        return visit(op.inputs[1])
    if kind == "AddN" and len(op.inputs) == 2:
        kind = "AddV2"
    if kind == "Cast":
        source = visit(op.inputs[0])
        _check_dtype(op, op.inputs[0])
        if op.inputs[0].dtype == tf.bool:
            return f"({source} ? {_literal(1, tensor.dtype)} : {_literal(0, tensor.dtype)})"
        if tensor.dtype == tf.bool:
            return f"({source} != 0)"
        return f"static_cast<{_C_TYPES[tensor.dtype]}>({source})"
    if kind in ("Select", "SelectV2"):
        return "({} ? {} : {})".format(*(visit(t) for t in op.inputs))
    if kind in _UNARY:
        return _UNARY[kind].format(visit(op.inputs[0]), mode="@MODE@")
    if kind in _BINARY:
        a, b = visit(op.inputs[0]), visit(op.inputs[1])
        if op.inputs[0].dtype != op.inputs[1].dtype:
            raise Declined(f"op {op.name} ({kind}) mixes dtypes")
        return _BINARY[kind].format(a, b, mode="@MODE@")
    if kind in _INEXACT:
        raise Declined(f"op {op.name} ({kind}): {_INEXACT[kind]}")
    if kind in _TRANSCENDENTAL:
        raise Declined(f"op {op.name} ({kind}) is transcendental: TensorFlow's kernel is not correctly rounded, "
                       "so no C++ function gives its bits")
    raise Declined(f"op {op.name} ({kind}) is not one the compiler translates (not elementwise, or not exact)")


def _function(lines, results, used, min_max, dtype: tf.DType, slot_count: int) -> str:
    """The entry point ``fn(x, slots, g, scalars, n, tail)`` (see ``native.cc``), its name left as ``@NAME@``."""
    ctype = _C_TYPES[dtype]
    head = ['extern "C" __attribute__((visibility("default"))) void @NAME@(void* x_, void* const* slots_, '
            "const void* g_, const void* k_, int64_t n, int tail) {",
            f"  using C = {ctype};",
            "  C* __restrict__ x = static_cast<C*>(x_);",
            "  const C* __restrict__ g = static_cast<const C*>(g_);",
            "  const C* __restrict__ k = static_cast<const C*>(k_);"]
    head += [f"  C* __restrict__ s{j} = static_cast<C*>(slots_[{j}]);" for j in range(slot_count)]
    head += [f"  const C k{j} = k[{j}];  // {name}" for j, name in enumerate(used)]
    head.append("  (void)k; (void)g; (void)tail;")
    # every load and op of the element, then its stores: the element's reads see the old values
    body = "\n".join("      " + line for line in lines + [f"const C delta_ = {results[0]};"]
                     + [f"const C new_{j}_ = {results[j + 1]};" for j in range(slot_count)]
                     + [f"s{j}[i] = new_{j}_;" for j in range(slot_count)] + ["x[i] = x[i] - delta_;"])
    loop = "    for (int64_t i = 0; i < n; ++i) {{\n{}\n    }}"
    if min_max:
        code = (f"  if (tail) {{\n{loop.format(body.replace('@MODE@', 'scalar'))}\n  }} else {{\n"
                f"{loop.format(body.replace('@MODE@', 'packet'))}\n  }}")
    else:
        code = f"  {{\n{loop.format(body)}\n  }}"
    return "\n".join(head) + "\n" + code + "\n}\n"


def translate(optimizer, dtype: tf.DType, scalar_names) -> CompiledRule:
    """Trace ``optimizer.update`` in ``dtype`` with these per-step scalars and translate it; ``Declined`` if not."""
    graph, inputs, outputs = _trace(optimizer, dtype, tuple(scalar_names))
    lines, results, used, min_max = _translate(graph, inputs, outputs, dtype)
    slot_names = tuple(optimizer.slot_names)
    function = _function(lines, results, used, min_max, dtype, len(slot_names))
    key = hashlib.sha256(function.encode()).hexdigest()[:20]
    cost = 4 * (len(slot_names) + 2) + 2 * len(lines)
    return CompiledRule(key=key, dtype=dtype, slot_names=slot_names, scalar_names=tuple(used), function=function,
                        cost=max(1, cost), path_dependent=min_max)


# -------------------------------------------------------------------------------------- building, loading
_lock = threading.RLock()
_registered: dict[str, object] = {}  # rule key -> the loaded library holding it (kept alive)
_failed: dict[str, str] = {}  # rule key -> why it did not build
_packets: dict[tf.DType, int] = {}


def _native_handle():
    """``native.cc``'s library as ``ctypes`` sees it: the very copy TensorFlow loaded (``RTLD_NOLOAD``)."""
    if "ctypes" not in native._state:
        path = native._state["path"]
        native._state["ctypes"] = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    return native._state["ctypes"]


def _load_plain(path: str):
    """``ctypes.CDLL`` of a library in a private folder, checked like ``native._load_checked``.

    Loaded by its own path (unique: it names the source's hash), not by descriptor: the dynamic loader takes
    a ``/proc/self/fd/N`` it has seen before (another library, loaded through the same descriptor number) for
    that library. The folder and the file are checked private (nobody else can swap them) before and after.
    """
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not native._is_private_file(os.fstat(folder)):
            raise native.BuildError(f"{os.path.dirname(path)} is writable by others or someone else's; not loading")
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) and native._is_private_file(info)):
            raise native.BuildError(f"{path} is not a private regular file; not loading")
        library = ctypes.CDLL(path)
        now = os.stat(path)
        if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            raise native.BuildError(f"{path} changed while it was loaded")
        return library
    finally:
        os.close(fd)


def register(rules) -> None:
    """Build the rules not yet loaded, all in one library (one compiler run), and register them with the op.

    ``native.BuildError`` if they do not build; the op library must be loaded (``native.load()``).
    """
    with _lock:
        todo = list({r.key: r for r in rules if r.key not in _registered}.values())
        if not todo:
            return
        source = _PRELUDE + "\n".join(r.source() for r in todo)
        library = _load_plain(native.build_plain(source))
        handle = _native_handle()
        for rule in todo:
            address = ctypes.cast(getattr(library, rule.symbol), ctypes.c_void_p).value
            handle.tfopt_register_rule(rule.key.encode(), ctypes.c_void_p(address),
                                       ctypes.c_int(rule.dtype.as_datatype_enum))
            _registered[rule.key] = library


def packet(dtype: tf.DType) -> int:
    """How many elements Eigen's vector path takes at once in this TensorFlow (0: it has none): measured."""
    if dtype not in _packets:
        with tf.init_scope():
            n = 63
            low = tf.minimum(tf.fill([n], tf.constant(-0.0, dtype)), tf.zeros([n], dtype)).numpy()
        tail = int(np.signbit(low).sum())  # the scalar path returns the first zero (-0), the vector one the second
        _packets[dtype] = 0 if tail == n else tail + 1
    return _packets[dtype]


# --------------------------------------------------------------------------------------------- dispatch
_decisions = weakref.WeakKeyDictionary()
"""optimizer -> {(dtype, scalar names): (CompiledRule or Declined, the optimizer's fingerprint then)}"""


@native._plain_python
def rule_for(optimizer, dtype: tf.DType, scalars) -> CompiledRule | None:
    """The compiled rule of ``optimizer`` in compute dtype ``dtype`` for these per-step scalars, built and
    registered; ``None`` if the compiler declines it (``explain`` says why) or it does not build.

    ``update`` is traced again whenever the optimizer's Python state (its attributes and its classes' plain
    values, a chain's transforms' too) changed since the last call: a rule whose graph then changes reads
    Python state and is declined from then on.
    """
    names = tuple(scalars)
    decisions = _decisions.setdefault(optimizer, {})
    previous, fingerprint = decisions.get((dtype, names), (None, None)), _fingerprint(optimizer)
    if isinstance(previous[0], Declined) or (previous[0] is not None and previous[1] == fingerprint):
        return previous[0] if isinstance(previous[0], CompiledRule) else None
    try:
        rule = translate(optimizer, dtype, names)
        if previous[0] is not None and previous[0].key != rule.key:
            raise Declined("update gave another graph on a later call: it reads Python state that changes")
        if rule.key in _failed:
            raise Declined(_failed[rule.key])
        if rule.key not in _registered:
            try:
                register([rule])
            except (native.BuildError, OSError, AttributeError) as error:
                _failed[rule.key] = f"its op did not build: {_one_line(error)}"
                raise Declined(_failed[rule.key]) from None
    except Declined as declined:
        decisions[(dtype, names)] = (declined, fingerprint)
        return None
    decisions[(dtype, names)] = (rule, fingerprint)
    return rule


_PLAIN = (int, float, str, bool, bytes, type(None))


def _fingerprint(optimizer) -> tuple:
    """What the optimizer's Python state is now: its attributes (and a chain's transforms'), by identity (plain
    values by value), and the plain values of their classes."""
    parts = []
    for obj, attributes, contents in _python_state(optimizer):
        parts.append(tuple((k, _identity(v)) for k, v in attributes.items()))
        parts.append(tuple((k, tuple(map(_identity, c if isinstance(c, list) else c.values())))
                           for k, c in contents.items()))
        for cls in type(obj).__mro__[:-1]:
            parts.append(tuple((k, v) for k, v in vars(cls).items() if isinstance(v, _PLAIN)))
    return tuple(parts)


def _identity(value):
    return (type(value), value) if isinstance(value, _PLAIN) else id(value)


def _next_scalar_names(optimizer) -> tuple[str, ...]:
    """The per-step scalars of ``optimizer``'s next step (``gradient_values``' excepted), its Python state kept."""
    state = _python_state(optimizer)
    try:
        with tf.init_scope():
            step = tf.cast(optimizer.iterations + 1, tf.float64)
            return tuple(optimizer._step_inputs(optimizer._hyperparameter_values(step), step))
    finally:
        _restore(state)


def prepare(optimizers, dtypes=(tf.float32, tf.float64)) -> None:
    """Build the compiled rules of ``optimizers`` in ``dtypes`` now, all in one library (one compiler run)
    instead of one per rule at first step; rules the compiler declines are skipped (``explain`` says why)."""
    rules = []
    for optimizer in optimizers:
        names = _next_scalar_names(optimizer)
        for dtype in dtypes:
            try:
                rules.append(translate(optimizer, tf.as_dtype(dtype), names))
            except Declined:
                pass
    register(rules)


def explain(optimizer, dtype: tf.DType = tf.float32) -> str | None:
    """Why ``optimizer``'s rule is not compiled in ``dtype`` (one line), or ``None`` if it is.

    The decision of its last step, if it has stepped; else that of a trace now, with the per-step scalars of
    its next step (``gradient_values`` not included: a rule that has them is judged at its first step).
    """
    dtype = tf.as_dtype(dtype)
    for (decided_dtype, _), (decision, _) in _decisions.get(optimizer, {}).items():
        if decided_dtype == dtype:
            return str(decision) if isinstance(decision, Declined) else None
    if getattr(optimizer, "_apply_multi", None) is not None:
        return None  # a hand-written native op (tfopt.kernels.native)
    try:
        translate(optimizer, dtype, _next_scalar_names(optimizer))
    except Declined as declined:
        if optimizer._reads_every_gradient():
            return f"{declined} (before its first step: gradient_values' inputs are not known yet)"
        return str(declined)
    return None


def takes(variable) -> bool:
    """Whether the op can update ``variable``: float16/bfloat16/float32/float64, on the CPU, not distributed."""
    if variable.dtype not in DTYPES or isinstance(variable, tf.distribute.DistributedValues):
        return False
    return _on_cpu(variable.device or "")


@functools.lru_cache(maxsize=256)
def _on_cpu(device: str) -> bool:
    return tf.DeviceSpec.from_string(device).device_type in (None, "CPU")


@native._plain_python
def apply(rule: CompiledRule, variables, slots, grads, scalars) -> None:
    """One op: ``x <- x - delta`` and every slot, for all ``variables`` (one dtype), in place.

    ``slots``: one dict per variable (``rule.slot_names`` -> variable), ``grads`` dense tensors of
    ``rule.dtype`` (the compute dtype), ``scalars`` per-step scalars of ``rule.dtype`` by name.
    """
    values = [scalars[name] for name in rule.scalar_names]
    vector = tf.stack(values) if values else tf.zeros([0], rule.dtype)
    native.load().tfopt_apply_rule(
        var=[v.handle for v in variables],
        slots=[s[name].handle for name in rule.slot_names for s in slots],
        grad=grads, scalars=vector, T=variables[0].dtype, rule=rule.key,
        packet=packet(rule.dtype) if rule.path_dependent else 0, cost=rule.cost)


__all__ = ["CompiledRule", "Declined", "apply", "explain", "prepare", "register", "rule_for", "takes", "translate"]


_ELEMENTWISE = (set(_UNARY) | set(_BINARY) | _PASS_THROUGH | set(_INEXACT) | _TRANSCENDENTAL
                | {"Placeholder", "Const", "ZerosLike", "OnesLike", "AddN", "Cast", "Select", "SelectV2"})


def elementwise(optimizer) -> bool:
    """Whether each element of ``optimizer``'s step depends only on the same element of the gradient, the
    variable and the slots (and on per-step scalars): then the rows of one variable are independent runs.

    Wider than what the compiler accepts: transcendental and inexact ops (Ftrl's ``Pow``) are elementwise
    too. Not elementwise: rules with ``gradient_values`` (values from every gradient of a step, e.g.
    ``clip_by_global_norm``), slots of their own shapes (Adafactor), reductions (Lamb's norms), ranks or
    shapes (Muon), and any op outside the elementwise set, e.g. ``Fill`` of a shape.
    """
    if getattr(optimizer, "_apply_multi", None) is not None:
        return True  # a hand-written native op: elementwise by construction
    if optimizer._reads_every_gradient():
        return False
    try:
        graph, _, _ = _trace(optimizer, tf.float32, _next_scalar_names(optimizer))
    except Declined:
        return False
    return all(op.type in _ELEMENTWISE and not (op.type == "Const" and op.get_attr("value").tensor_shape.dim)
               for op in graph.get_operations())
