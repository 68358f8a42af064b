"""Building and caching the native ops (``tfopt.kernels.native.build``/``load``) on any machine.

The ladder of flag sets, compilers that reject a flag, fail outright or are missing, caches that
cannot be written or are not private: most cases use a fake compiler (a shell script that answers
``--version`` and writes an empty library), so they take no time. Real builds check that every flag
set of this machine's ladder compiles with every compiler found here, and that a build from the last
(portable) set gives the reference's bits, in a subprocess of its own (one process loads one library).
"""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import tfopt
from tfopt.kernels import native

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE_ISA = ("-march=native", "-mcpu=native")

FAKE_CXX = """#!/bin/sh
[ "$1" = --version ] && {{ echo "fakecxx 1.0"; exit 0; }}
echo "$*" >> "{calls}"
{body}
"""
WRITES_EMPTY_LIBRARY = 'out=""; prev=""; for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done; : > "$out"'
REJECTS_NATIVE_ISA = ('case " $* " in *" -march=native "*|*" -mcpu=native "*) '
                      'echo "fakecxx: error: unrecognized command-line option" >&2; exit 1;; esac')
FAILS = 'echo "native.cc:1:1: error: this compiler compiles nothing" >&2; exit 1'


def fake_compiler(tmp_path, *body: str) -> tuple[str, str]:
    """A compiler script running ``body``; returns ``(path, file listing each compile call)``."""
    path, calls = tmp_path / "fakecxx", tmp_path / "calls"
    path.write_text(FAKE_CXX.format(calls=calls, body="\n".join(body)))
    path.chmod(0o755)
    return str(path), str(calls)


def read(path) -> str:
    with open(path) as f:
        return f.read()


def compile_calls(calls: str) -> list[str]:
    return read(calls).splitlines() if os.path.exists(calls) else []


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No library loaded yet, an empty cache, no overrides; ``fresh.cache`` is the cache folder."""
    monkeypatch.setattr(native, "_state", {})
    for name in ("CXX", "TFOPT_NATIVE", "TFOPT_NATIVE_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TFOPT_CACHE_DIR", str(cache))
    fresh.cache = cache
    return fresh


def only_warning(record) -> str:
    """The text of the one warning recorded; it fits on one line."""
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert "\n" not in messages[0] and len(messages[0]) < 400, messages[0]
    return messages[0]


def steps_like_the_reference():
    """Optimizers still work (on whatever path load() left): the same bits as fused=False."""
    results = []
    for fused in (None, False):
        opt, x = tfopt.Adam(0.1, fused=fused), tf.Variable([1.0, -2.0])
        for _ in range(3):
            opt.apply_gradients([(tf.constant([0.5, 0.25]), x)])
        results.append(np.concatenate([x.numpy(), opt.get_slot(x, "m").numpy(), opt.get_slot(x, "v").numpy()]))
    np.testing.assert_array_equal(results[0].view(np.uint32), results[1].view(np.uint32))


# ------------------------------------------------------------------ the ladder
@pytest.mark.parametrize("machine, first", [("x86_64", ("-march=native", "-mno-avx512f")),
                                            ("aarch64", ("-mcpu=native",)), ("riscv64", ())])
def test_every_ladder_ends_with_the_compilers_own_baseline(monkeypatch, machine, first):
    monkeypatch.delenv("TFOPT_NATIVE_FLAGS", raising=False)
    ladder = native.flag_sets(machine)
    assert ladder[0] == first and ladder[-1] == ()


def test_flags_from_the_environment_replace_the_ladder(monkeypatch):
    monkeypatch.setenv("TFOPT_NATIVE_FLAGS", "-march=x86-64-v3 -mtune=generic")
    assert native.flag_sets() == [("-march=x86-64-v3", "-mtune=generic")]


def test_a_rejected_flag_takes_the_next_set_quietly(fresh, tmp_path, monkeypatch):
    cxx, calls = fake_compiler(tmp_path, REJECTS_NATIVE_ISA, WRITES_EMPTY_LIBRARY)
    monkeypatch.setenv("CXX", cxx)
    path, flags, notes = native.build()
    assert flags == native.flag_sets()[-1] and os.path.exists(path)
    assert len(compile_calls(calls)) == len(native.flag_sets())
    assert [note for note in notes if "failed" in note and "unrecognized command-line option" in note]
    # the failure is remembered: a second start compiles nothing
    assert native.build()[0] == path and len(compile_calls(calls)) == len(native.flag_sets())


def test_the_library_is_private_and_whole(fresh, tmp_path, monkeypatch):
    cxx, _ = fake_compiler(tmp_path, WRITES_EMPTY_LIBRARY)
    monkeypatch.setenv("CXX", cxx)
    path, _, notes = native.build()
    assert notes == [] and os.path.dirname(path) == str(fresh.cache)
    assert os.stat(fresh.cache).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert not [f for f in os.listdir(fresh.cache) if f.endswith(".partial")]


# -------------------------------------------------------------------- failures
@pytest.mark.parametrize("kind", ["missing", "failing", "rejects_native_and_fails"])
def test_no_library_warns_once_in_one_line_and_falls_back(fresh, tmp_path, monkeypatch, kind):
    if kind == "missing":
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    else:
        body = [FAILS] if kind == "failing" else [REJECTS_NATIVE_ISA, FAILS]
        monkeypatch.setenv("CXX", fake_compiler(tmp_path, *body)[0])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert native.load() is None and native.load() is None  # decided once: one warning, one try
        steps_like_the_reference()
    message = only_warning(record)
    assert "native kernels unavailable" in message and "same" in message and "TFOPT_NATIVE=0" in message
    if kind == "missing":
        assert "no C++ compiler" in message and "no-such-c++" in message
    else:
        assert "this compiler compiles nothing" in message or "unrecognized" in message
        log = native.diagnostics()["log"]
        assert f"full log: {log}" in message and "error: this compiler compiles nothing" in read(log)
    assert not [f for f in os.listdir(fresh.cache) if f.endswith((".so", ".partial"))] if fresh.cache.exists() else True


def test_turned_off_by_the_environment_is_silent(fresh, monkeypatch):
    monkeypatch.setenv("TFOPT_NATIVE", "0")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert native.load() is None
    assert record == [] and native.diagnostics()["error"] == "turned off by TFOPT_NATIVE=0"


# ------------------------------------------------------------------- the cache
def test_a_cache_that_cannot_be_made_builds_privately(fresh, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TFOPT_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setenv("CXX", fake_compiler(tmp_path, WRITES_EMPTY_LIBRARY)[0])
    path, _, notes = native.build()
    assert not path.startswith(str(blocker)) and os.path.exists(path)
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert notes and "unusable" in notes[0]


@pytest.mark.parametrize("error", [errno.EROFS, errno.ENOSPC], ids=["read_only", "full"])
def test_a_read_only_or_full_cache_builds_privately(fresh, tmp_path, monkeypatch, error):
    """Root ignores mode bits, so the write into the cache fails by a patched ``mkstemp`` instead."""
    monkeypatch.setenv("CXX", fake_compiler(tmp_path, WRITES_EMPTY_LIBRARY)[0])
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir == str(fresh.cache):
            raise OSError(error, os.strerror(error))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    path, _, notes = native.build()
    assert os.path.dirname(path) != str(fresh.cache) and os.path.exists(path)
    assert notes == [f"cache folder {fresh.cache} unusable ({os.strerror(error)}); built in {os.path.dirname(path)}"]


def test_a_planted_world_writable_library_is_not_used(fresh, tmp_path, monkeypatch):
    cxx, calls = fake_compiler(tmp_path, WRITES_EMPTY_LIBRARY)
    monkeypatch.setenv("CXX", cxx)
    os.makedirs(fresh.cache, mode=0o700)
    name = native.library_name([cxx], "fakecxx 1.0", native.flag_sets()[0])
    planted = fresh.cache / (name + ".so")
    planted.write_text("not a library")
    planted.chmod(0o666)
    path, _, notes = native.build()
    assert path == str(planted) and read(path) == ""  # rebuilt over it, by this user's compiler
    assert os.stat(path).st_mode & 0o777 == 0o644 and len(compile_calls(calls)) == 1
    assert "writable by others" in notes[0]


@pytest.mark.parametrize("how", ["world_writable", "someone_elses"])
def test_a_cache_folder_others_control_is_not_used(fresh, tmp_path, monkeypatch, how):
    cxx, _ = fake_compiler(tmp_path, WRITES_EMPTY_LIBRARY)
    monkeypatch.setenv("CXX", cxx)
    os.makedirs(fresh.cache)
    name = native.library_name([cxx], "fakecxx 1.0", native.flag_sets()[0])
    planted = fresh.cache / (name + ".so")
    planted.write_text("not a library")
    if how == "world_writable":
        os.chmod(fresh.cache, 0o777)
    else:
        os.chmod(fresh.cache, 0o700)
        if os.getuid() != 0:
            pytest.skip("making a folder someone else's needs root")
        os.chown(fresh.cache, 65534, 65534)
    path, _, notes = native.build()
    assert not path.startswith(str(fresh.cache)) and read(planted) == "not a library"
    assert "unusable" in notes[0] and ("writable by others" in notes[0] or "someone else" in notes[0])
    with warnings.catch_warnings(record=True) as record:  # load() says so, in one line
        warnings.simplefilter("always")
        monkeypatch.setattr(tf, "load_op_library", lambda p: object())
        native.load()
    assert "unusable" in only_warning(record)


# -------------------------------------------------------------- real compilers
def compilers_found() -> list[str]:
    """Every C++ compiler on PATH, each once (g++, c++, clang++ and their versioned names)."""
    names = ["g++", "c++", "clang++"] + [f"g++-{v}" for v in range(9, 16)] + [f"clang++-{v}" for v in range(11, 22)]
    found = {}
    for name in names:
        path = shutil.which(name)
        if path:
            found.setdefault(os.path.realpath(path), name)
    return sorted(found.values())


@pytest.mark.parametrize("flags", native.flag_sets(), ids=lambda f: " ".join(f) or "baseline")
@pytest.mark.parametrize("cxx", compilers_found())
def test_every_flag_set_builds_with_every_compiler_found(cxx, flags):
    """What CI would have caught: the source compiles under each flag set tfopt may use, on each compiler here.

    Built in the cache (where the first use on this machine finds it again).
    """
    command = [cxx]
    folder = native._private_dir(native.cache_dir())
    path = native._compile(command, flags, folder, native.library_name(command, native.compiler_version(command),
                                                                           flags))
    assert os.path.getsize(path) > 0


def test_a_build_from_the_portable_flag_set_gives_the_reference_bits(tmp_path):
    """A compiler that rejects ``-march=native``: the ladder's last set is built, loaded, and bit-identical.

    Runs the bit-for-bit tests of ``test_native.py`` in a subprocess (one process loads one library).
    """
    cxx, _ = fake_compiler(tmp_path, REJECTS_NATIVE_ISA, 'exec g++ "$@"')
    env = {**os.environ, "CXX": cxx, "TFOPT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONWARNINGS": "error::UserWarning"}
    env.pop("TFOPT_NATIVE_FLAGS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", os.path.join(HERE, "test_native.py"),
         "-k", "equals_the_reference_bit_for_bit"],
        capture_output=True, text=True, env=env, timeout=600, cwd=os.path.dirname(HERE),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tfopt native kernels: loaded, flags: (none)" in done.stdout


def test_only_a_checked_private_file_is_loaded(tmp_path, monkeypatch):
    """The checks are made on the open file that is loaded: a symlink, or a file others can write, is refused."""
    loaded = []
    monkeypatch.setattr(tf, "load_op_library", lambda path: loaded.append(path) or object())
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    library = folder / "native-x.so"
    library.write_text("")
    library.chmod(0o644)
    native._load_checked(str(library))
    assert loaded and loaded[-1].startswith("/proc/self/fd/")
    link = folder / "native-link.so"
    link.symlink_to(library)
    with pytest.raises(OSError):  # O_NOFOLLOW
        native._load_checked(str(link))
    library.chmod(0o666)
    with pytest.raises(native.BuildError, match="not a private regular file"):
        native._load_checked(str(library))
    library.chmod(0o644)
    folder.chmod(0o777)
    with pytest.raises(native.BuildError, match="writable by others"):
        native._load_checked(str(library))
    assert len(loaded) == 1


def test_a_build_killed_or_timed_out_is_tried_again(fresh, tmp_path, monkeypatch):
    """Only a compiler's own error is remembered (``.failed``); a killed build leaves a ``.log`` and is retried."""
    cxx, calls = fake_compiler(tmp_path, 'kill -9 $$')
    monkeypatch.setenv("CXX", cxx)
    monkeypatch.setenv("TFOPT_NATIVE_FLAGS", "-O2")
    with pytest.raises(native.BuildError) as first:
        native.build()
    assert first.value.log.endswith(".log") and not [f for f in os.listdir(fresh.cache) if f.endswith(".failed")]
    with pytest.raises(native.BuildError):
        native.build()
    assert len(compile_calls(calls)) == 2  # tried again
