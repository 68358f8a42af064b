"""Native multi-tensor kernels: one op per step updates every variable, with the reference's bits.

TensorFlow dispatches every kernel of a graph on its own, so a step over many small
variables pays that cost once per op and per variable, and a chain of elementwise ops
over a large one makes a pass over memory (and a temporary) per op. ``native.cc``
holds three ops, ``TfoptApplyGradientDescent``, ``TfoptApplyMomentum`` and
``TfoptApplyAdam``, that each take all N variables of a step (with their slots) and
update them in place in one pass, the work split over all their elements on
TensorFlow's intra-op threads. A fourth, ``TfoptApplyRule``, runs any other elementwise rule the same
way, its loop body generated from the rule's ``update`` by ``tfopt.kernels.compiler`` and built by
``build_plain`` (a small library without TensorFlow's headers, in the same cache). Each runs the
plain-ops reference element by element with the same IEEE roundings in the same order (it is built with
``-ffp-contract=off``: no multiply-add fused), so it gives the same numbers bit for bit;
``tests/test_native.py`` checks that on every rule and dtype. (It relies on TensorFlow's own
``tf.sqrt`` being correctly rounded, as in the PyPI wheels; a TensorFlow built from source with
AVX-512 and Eigen's fast math approximates it, and those tests would say so.)

Building. The ops are built on first use with the C++ compiler (``$CXX``, else ``g++``) against
the installed TensorFlow's headers (``tf.sysconfig``), about 15 s once. The instruction set is
chosen by a ladder of flag sets (``flag_sets()``), the first that compiles wins:

1. ``-march=native -mno-avx512f`` on x86-64 (``-mcpu=native`` on ARM): the host's vector
   units up to AVX2. AVX-512 is left out on purpose: the loops are memory-bound (AVX-512 measured
   no faster, see the README), and TensorFlow's bundled Eigen headers do not compile with every
   AVX-512 extension and compiler (AVX512-FP16 with g++ 12 stops in ``PacketMathFP16.h``);
2. no ISA flag at all: the compiler's own baseline, which TensorFlow's headers always accept.

Every set keeps ``-ffp-contract=off``, so every set gives the same bits. ``$TFOPT_NATIVE_FLAGS``
replaces the ladder by one set of your own (e.g. ``-march=x86-64-v3``).

Caching. A library is cached in ``$TFOPT_CACHE_DIR`` (default ``~/.cache/tfopt``), a folder made
private (0700), under a key of the source, TensorFlow's version, the flags, the compiler and the
CPU; a flag set that failed is remembered there too (``.failed``, with its log), so it is not
tried again. A cached library is loaded only if it and its folder belong to this user and nobody
else can write them (as pip and ccache guard theirs); otherwise, or where the cache cannot be
written (read-only, full), the library is built in a private temporary folder instead.

Failing. Where no flag set builds (no compiler, say) tfopt warns once, in one line naming the
error and the full log, and runs TensorFlow's own kernels instead: the same numbers, slower.
``TFOPT_NATIVE=0`` turns the native ops off; ``tfopt doctor`` shows all of the above.

They have no XLA kernel and no GPU kernel, so inside ``jit_compile=True``
code, under a ``tf.distribute`` strategy and for variables on another device than the CPU the
optimizers use TensorFlow's kernels, per variable (one native op runs per dtype and CPU device). A SavedModel
holding the ops loads after ``tfopt.kernels.native.load()``.

Speed (issue 13, measured on 2 shared cores). An op's own time depends on the bytes it moves, not on how
they are split into variables: 64 variables of 262,144 float32 take the same time as one of 16.8M, within the
noise (0.7-1.3x the bandwidth bound of ``benchmarks/step_speed.py``, both). Looking up and locking the
variables costs about 0.5 us per variable or slot (0.1 ms for Adam's 192), and neither the blocks of the
split (Eigen's 8, or fixed blocks of 64K or 256K elements) nor 1 thread against 2 changed the op's time.
What many variables add is outside the op: a ``tf.function`` call costs about 4-5 us per captured input
before its first op starts (1.1-2.1 ms for 64 variables' 130-262 inputs, 0.6-0.8 ms for one variable's),
the same for any op that takes them (the benchmark's "floor" row).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings

import tensorflow as tf

from tfopt.kernels.fused import DTYPES  # the same two as TensorFlow's fused kernels

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native.cc")
COMMON_FLAGS = ("-shared", "-fPIC", "-O3", "-ffp-contract=off", "-fno-math-errno", "-w")
"""Flags of every build: ``-ffp-contract=off`` keeps the bits; ``-fno-math-errno`` only lets sqrt vectorize."""
PLAIN_FLAGS = ("-std=c++17", "-fno-trapping-math")
"""And of ``build_plain``'s (compiled rules): ``-fno-trapping-math`` lets the selects of comparisons vectorize
(it assumes no floating-point exception is looked at; every value stays IEEE's, nothing is reassociated)."""
_state: dict = {}
_plain_python = tf.autograph.experimental.do_not_convert  # called while tracing a step: no AutoGraph here


class BuildError(RuntimeError):
    """No library could be had; ``str()`` is one line, ``log`` the path of the full compiler output."""

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log


def flag_sets(machine: str | None = None) -> list[tuple[str, ...]]:
    """The instruction-set flags to try, best first (see the module docstring); ``$TFOPT_NATIVE_FLAGS`` overrides."""
    if os.environ.get("TFOPT_NATIVE_FLAGS"):
        return [tuple(shlex.split(os.environ["TFOPT_NATIVE_FLAGS"]))]
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        return [("-march=native", "-mno-avx512f"), ()]
    if machine in ("aarch64", "arm64"):
        return [("-mcpu=native",), ()]
    return [()]


def cache_dir() -> str:
    return os.environ.get("TFOPT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tfopt")


def compiler() -> list[str]:
    """``$CXX`` (which may carry arguments, e.g. ``ccache g++``), else ``g++``."""
    command = shlex.split(os.environ.get("CXX") or "g++")
    if not command or shutil.which(command[0]) is None:
        raise BuildError(f"no C++ compiler '{os.environ.get('CXX') or 'g++'}' on PATH (set CXX to one)")
    return command


def compiler_version(command: list[str]) -> str:
    """The first line of ``command --version``."""
    try:
        done = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"{shlex.join(command)} --version failed: {error}") from error
    if done.returncode != 0:
        raise BuildError(f"{shlex.join(command)} --version failed: {_first_error(done.stderr)}")
    return (done.stdout.strip().splitlines() or ["unknown"])[0]


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def library_name(command: list[str], version: str, flags: tuple[str, ...]) -> str:
    """``native-<key>``: the key hashes everything the library depends on."""
    with open(SOURCE, "rb") as f:
        source = f.read()
    key = hashlib.sha256(b"\0".join([
        source, tf.__version__.encode(), tf.sysconfig.get_include().encode(), " ".join(COMMON_FLAGS).encode(),
        " ".join(flags).encode(), " ".join(command).encode(), version.encode(), _cpu_flags().encode(),
        platform.machine().encode(), sys.version.encode(),
    ])).hexdigest()[:16]
    return f"native-{key}"


def build_command(command: list[str], flags: tuple[str, ...], output: str) -> list[str]:
    return [*command, *COMMON_FLAGS, *flags, *tf.sysconfig.get_compile_flags(), SOURCE, "-o", output,
            *tf.sysconfig.get_link_flags()]


def _first_error(text: str) -> str:
    """The compiler's first ``error`` line, shortened (paths cut to their file name), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((x for x in lines if "error" in x.lower()), lines[-1] if lines else "no output")
    head, sep, rest = line.partition(": ")
    if sep and "/" in head:
        line = os.path.basename(head) + sep + rest
    return line if len(line) <= 160 else line[:157] + "..."


# ------------------------------------------------------------------ the cache
def _is_private(path: str) -> bool:
    """Owned by this user and writable by nobody else."""
    info = os.stat(path)
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _is_private_file(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load_checked(path: str):
    """``tf.load_op_library(path)``, checking what is loaded, not just the name.

    The folder is opened, the library opened inside it without following a symlink, both are checked
    private on their open descriptors, and the library is loaded from its descriptor
    (``/proc/self/fd/N``): a file swapped in after the checks is never the one loaded.
    """
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not _is_private_file(os.fstat(folder)):
            raise BuildError(f"{os.path.dirname(path)} became writable by others or someone else's; not loading")
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _is_private_file(info):
            raise BuildError(f"{path} is not a private regular file; not loading")
        by_descriptor = f"/proc/self/fd/{fd}"
        return tf.load_op_library(by_descriptor if os.path.exists(by_descriptor) else path)
    finally:
        os.close(fd)


def _private_dir(path: str) -> str:
    """``path``, made if missing (mode 0700); ``OSError`` if it cannot be made or is not private."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if not _is_private(path):
        raise PermissionError(f"{path} is writable by others or owned by someone else")
    return path


def _compile(command: list[str], flags: tuple[str, ...], directory: str, name: str, line=None) -> str:
    """Build ``directory/name.so``; one process at a time; the library appears whole or not at all.

    A compiler's error leaves ``name.failed`` holding its output (so the flag set is not tried again)
    and raises ``BuildError``; a build that timed out, was killed or could not start leaves ``name.log``
    instead (tried again next time). An ``OSError`` means the folder cannot be written.
    ``line(output)`` is the compiler's command line (default: ``native.cc``'s, ``build_command``).
    """
    line = line or (lambda output: build_command(command, flags, output))
    path, failed = os.path.join(directory, name + ".so"), os.path.join(directory, name + ".failed")
    with open(os.path.join(directory, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path) and _is_private(path):
            return path
        if os.path.exists(failed):
            raise BuildError(_read_first_line(failed), log=failed)
        fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=directory)
        os.close(fd)
        try:
            try:
                done = subprocess.run(line(partial), capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.SubprocessError) as error:
                done = subprocess.CompletedProcess([], 1, "", f"error: {error}")
            if done.returncode != 0:
                summary = f"{os.path.basename(command[0])} {' '.join(flags) or '(no ISA flags)'}: " + \
                          _first_error(done.stderr)
                transient = done.returncode < 0 or not done.args  # killed by a signal, timed out, not started
                log = os.path.join(directory, name + ".log") if transient else failed
                _write_log(log, summary, line("<output>"), done.stderr)
                raise BuildError(summary, log=log)
            os.chmod(partial, 0o644)  # mkstemp made it 0600; readable, writable by its owner only
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    return path


def _write_log(path: str, summary: str, command_line: list[str], output: str) -> None:
    with open(path, "w") as f:
        f.write(f"{summary}\n\n$ {shlex.join(command_line)}\n\n{output}")


def _read_first_line(path: str) -> str:
    with open(path) as f:
        return f.readline().strip()


def build(directory: str | None = None) -> tuple[str, tuple[str, ...], list[str]]:
    """Find or build the library: ``(path, flags, notes)``; ``BuildError`` if no flag set builds.

    Tries ``flag_sets()`` in order, in the cache folder (``directory``, default ``cache_dir()``)
    or, where that is not private or cannot be written, in a new private temporary folder.
    ``notes`` says why a private folder or a later flag set was used.
    """
    command = compiler()
    version = compiler_version(command)
    directory, notes, errors = directory or cache_dir(), [], []
    try:
        folder = _private_dir(directory)
    except OSError as error:
        folder = tempfile.mkdtemp(prefix="tfopt-native-")
        notes.append(f"cache folder {directory} unusable ({_reason(error)}); built in {folder}")
    for flags in flag_sets():
        name = library_name(command, version, flags)
        planted = os.path.join(folder, name + ".so")
        if os.path.exists(planted) and not _is_private(planted):
            notes.append(f"cache folder {folder} holds {os.path.basename(planted)} writable by others or owned by "
                         "someone else; rebuilt it privately")
        try:
            try:
                return _compile(command, flags, folder, name), flags, notes
            except OSError as error:  # the cache is read-only or full: build privately instead
                private = tempfile.mkdtemp(prefix="tfopt-native-")
                notes.append(f"cache folder {folder} unusable ({_reason(error)}); built in {private}")
                folder = private
                return _compile(command, flags, folder, name), flags, notes
        except BuildError as error:
            errors.append(error)
            notes.append(f"flags {' '.join(flags) or '(none)'} failed: {error}")
    last = errors[-1]  # the most portable set's error is the one that matters
    more = f" (after {len(errors) - 1} other flag set{'s' * (len(errors) > 2)} failed)" if len(errors) > 1 else ""
    raise BuildError(f"{last}{more}", log=last.log)


def build_plain(source: str, prefix: str = "rules") -> str:
    """Build ``source``, C++ without TensorFlow's headers (a compiled rule, ``tfopt.kernels.compiler``), into a
    shared library; return its path. Cached like the op library (under a key of the source, the flags, the
    compiler and the CPU), with the flags the op library was built with and ``COMMON_FLAGS``: it builds in well
    under a second. ``BuildError`` if it does not build (the op library must be loaded first)."""
    if load() is None:
        raise BuildError(f"the native op library is not loaded ({_state.get('error')})")
    command, flags = compiler(), tuple(_state["flags"] or ())
    key = hashlib.sha256(b"\0".join([
        source.encode(), " ".join(COMMON_FLAGS + PLAIN_FLAGS).encode(), " ".join(flags).encode(),
        " ".join(command).encode(),
        compiler_version(command).encode(), _cpu_flags().encode(), platform.machine().encode(),
    ])).hexdigest()[:16]
    name = f"{prefix}-{key}"
    try:
        folder = _private_dir(os.path.dirname(_state["path"]) if _state.get("path") else cache_dir())
        return _compile_source(command, flags, folder, name, source)
    except OSError:  # the cache cannot be written: a private folder of its own
        return _compile_source(command, flags, tempfile.mkdtemp(prefix="tfopt-rules-"), name, source)


def _compile_source(command: list[str], flags: tuple[str, ...], folder: str, name: str, source: str) -> str:
    path = os.path.join(folder, name + ".cc")
    if not (os.path.exists(path) and _is_private(path)):
        fd, partial = tempfile.mkstemp(suffix=".cc.partial", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(partial, path)
    return _compile(command, flags, folder, name,
                    line=lambda output: [*command, *COMMON_FLAGS, *flags, *PLAIN_FLAGS, path, "-o", output])


def _reason(error: OSError) -> str:
    return error.strerror or str(error) if isinstance(error, OSError) and error.errno else str(error)


# ------------------------------------------------------------------ loading
def _disabled() -> bool:
    return os.environ.get("TFOPT_NATIVE", "1").lower() in ("0", "false", "no", "off")


@_plain_python
def load():
    """The loaded op library, building it first if needed; ``None`` if it cannot be had (warns once, one line)."""
    if "library" not in _state:
        _state.update(library=None, path=None, flags=None, error=None, log=None, notes=[])
        if _disabled():
            _state["error"] = "turned off by TFOPT_NATIVE=0"
            return None
        try:
            path, flags, notes = build()
            _state.update(path=path, flags=list(flags), notes=notes)
            _state["library"] = _load_checked(path)
        except Exception as error:  # noqa: BLE001  (any failure: fall back, say why in one line)
            _state.update(error=" ".join(str(error).split()), log=getattr(error, "log", None))
            where = f"; full log: {_state['log']}" if _state["log"] else ""
            warnings.warn(f"tfopt: native kernels unavailable ({_state['error']}){where}. Results are the same, "
                          "only slower. Set TFOPT_NATIVE=0 to silence this.", stacklevel=4)
            return None
        unusable_cache = [note for note in _state["notes"] if note.startswith("cache folder")]
        if unusable_cache:
            warnings.warn(f"tfopt: {unusable_cache[-1]} (it is rebuilt on every start until the cache is fixed).",
                          stacklevel=4)
    return _state["library"]


def diagnostics() -> dict:
    """What ``load()`` found, for ``tfopt doctor`` (call ``load()`` first)."""
    try:
        command = compiler()
        version = compiler_version(command)
    except BuildError:
        command, version = None, None
    return dict(
        enabled=not _disabled(), loaded=_state.get("library") is not None, library=_state.get("path"),
        flags=_state.get("flags"), compiler=shlex.join(command) if command else None, compiler_version=version,
        cache_dir=cache_dir(), log=_state.get("log"), error=_state.get("error"), notes=list(_state.get("notes", [])),
    )


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
    """Adam's Algorithm 1 (``tfopt.optimizers.adam.adam_update``) for every variable, in one op."""
    load().tfopt_apply_adam(var=[v.handle for v in variables], m=[m.handle for m in ms], v=[v.handle for v in vs],
                            grad=grads, learning_rate=learning_rate, beta_1=beta_1, one_minus_beta_1=one_minus_beta_1,
                            correction_1=correction_1, beta_2=beta_2, one_minus_beta_2=one_minus_beta_2,
                            correction_2=correction_2, epsilon=epsilon)
