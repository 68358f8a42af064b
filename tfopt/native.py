"""Native multi-tensor kernels: one op per step updates every variable, with the reference's bits.

TensorFlow dispatches every kernel of a graph on its own, so a step over many small
variables pays that cost once per op and per variable, and a chain of elementwise ops
over a large one makes a pass over memory (and a temporary) per op. ``native.cc``
holds three ops, ``TfoptApplyGradientDescent``, ``TfoptApplyMomentum`` and
``TfoptApplyAdam``, that each take all N variables of a step (with their slots) and
update them in place in one pass, the work split over all their elements on
TensorFlow's intra-op threads. Each runs the plain-ops reference element by element
with the same IEEE roundings in the same order (it is built with
``-ffp-contract=off``: no multiply-add fused), so it gives the same numbers bit for bit;
``tests/test_native.py`` checks that on every rule and dtype. (It relies on TensorFlow's own
``tf.sqrt`` being correctly rounded, as in the PyPI wheels; a TensorFlow built from source with
AVX-512 and Eigen's fast math approximates it, and those tests would say so.)

The ops are built on first use with the C++ compiler (``$CXX``, else ``g++``) against
the installed TensorFlow's headers (``tf.sysconfig``), about 15 s once, and cached in
``$TFOPT_CACHE_DIR`` (default ``~/.cache/tfopt``) under a key of the source, TensorFlow's
version, the compiler and the CPU. Where that fails (no compiler, say) tfopt warns once
and runs TensorFlow's own kernels instead: the same numbers, slower. ``TFOPT_NATIVE=0``
turns the native ops off. They have no XLA kernel and no GPU kernel, so inside ``jit_compile=True``
code, under a ``tf.distribute`` strategy and for variables on another device than the CPU the
optimizers use TensorFlow's kernels, per variable (one native op runs per dtype and CPU device). A SavedModel
holding the ops loads after ``tfopt.native.load()``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings

import tensorflow as tf

from tfopt.fused import DTYPES  # the same two as TensorFlow's fused kernels

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native.cc")
_FLAGS = ["-shared", "-fPIC", "-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-w"]
_state: dict = {}
_plain_python = tf.autograph.experimental.do_not_convert  # called while tracing a step: no AutoGraph here


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _compiler() -> list[str]:
    """``$CXX`` (which may carry arguments, e.g. ``ccache g++``), else ``g++``."""
    command = shlex.split(os.environ.get("CXX") or "g++")
    if not command or shutil.which(command[0]) is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX') or 'g++'}) on PATH; set CXX")
    return command


def _cache_path(compiler: list[str]) -> str:
    with open(SOURCE, "rb") as f:
        source = f.read()
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    key = hashlib.sha256(b"\0".join([
        source, tf.__version__.encode(), tf.sysconfig.get_include().encode(), " ".join(_FLAGS).encode(),
        version.encode(), _cpu_flags().encode(), platform.machine().encode(), sys.version.encode(),
    ])).hexdigest()[:16]
    root = os.environ.get("TFOPT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tfopt")
    return os.path.join(root, f"native-{key}.so")


def _build(path: str, compiler: list[str]) -> None:
    """Compile ``native.cc`` to ``path``; one process at a time, the file appears whole or not at all."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return
        fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=os.path.dirname(path))
        os.close(fd)
        try:
            command = [*compiler, *_FLAGS, *tf.sysconfig.get_compile_flags(), SOURCE, "-o", partial,
                       *tf.sysconfig.get_link_flags()]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(compiler)} failed on native.cc:\n{done.stderr[-2000:]}")
            os.chmod(partial, 0o755)  # mkstemp made it private; a shared cache must be readable
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


@_plain_python
def load():
    """The loaded op library, building it first if needed; ``None`` if it cannot be had (warns once)."""
    if "library" not in _state:
        _state["library"] = None
        if os.environ.get("TFOPT_NATIVE", "1").lower() in ("0", "false", "no", "off"):
            return None
        try:
            compiler = _compiler()
            path = _cache_path(compiler)
            if not os.path.exists(path):
                _build(path, compiler)
            _state["library"] = tf.load_op_library(path)
        except Exception as error:  # noqa: BLE001  (any failure: fall back, say why)
            warnings.warn(f"tfopt's native kernels are unavailable ({error}); using TensorFlow's kernels, "
                          "with the same numbers, slower. Set TFOPT_NATIVE=0 to silence this.", stacklevel=4)
    return _state["library"]


@_plain_python
def in_xla_context() -> bool:
    """Whether ops made now are compiled by XLA (``tf.function(jit_compile=True)``), which knows no native op."""
    if tf.executing_eagerly():
        return False
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


@_plain_python
def takes(variable: tf.Variable) -> bool:
    """Whether the native ops can update ``variable``: float32/float64, on the CPU, not a distributed variable."""
    if variable.dtype not in DTYPES or isinstance(variable, tf.distribute.DistributedValues):
        return False  # (a mirrored variable's handle is one replica's; its own assign ops update them all)
    return tf.DeviceSpec.from_string(variable.device or "").device_type in (None, "CPU")


@_plain_python
def usable() -> bool:
    """Whether a step made now may use the native ops."""
    return not in_xla_context() and load() is not None


@_plain_python
def gradient_descent(variables, grads, learning_rate) -> None:
    """``x <- x - lr * g`` for every variable, in one op."""
    load().tfopt_apply_gradient_descent(var=[v.handle for v in variables], grad=grads, learning_rate=learning_rate)


@_plain_python
def momentum(variables, velocities, grads, learning_rate, momentum, nesterov: bool) -> None:
    """``d <- lr * g + momentum * d; x <- x - d`` (Nesterov: ``x <- x - (lr * g + momentum * d)``), in one op."""
    load().tfopt_apply_momentum(var=[v.handle for v in variables], velocity=[d.handle for d in velocities],
                                grad=grads, learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)


@_plain_python
def adam(variables, ms, vs, grads, *, learning_rate, beta_1, one_minus_beta_1, correction_1, beta_2,
         one_minus_beta_2, correction_2, epsilon, **_) -> None:
    """Adam's Algorithm 1 (``tfopt.adam.adam_update``) for every variable, in one op."""
    load().tfopt_apply_adam(var=[v.handle for v in variables], m=[m.handle for m in ms], v=[v.handle for v in vs],
                            grad=grads, learning_rate=learning_rate, beta_1=beta_1, one_minus_beta_1=one_minus_beta_1,
                            correction_1=correction_1, beta_2=beta_2, one_minus_beta_2=one_minus_beta_2,
                            correction_2=correction_2, epsilon=epsilon)
