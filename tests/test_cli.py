"""The tfopt command: every bad argument is one line and a non-zero exit, never a traceback; help and errors
come at once, without TensorFlow; ``tfopt doctor`` reports what a bug report needs."""

import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt
from tfopt import cli
from tfopt.kernels import native
from tfopt.lab import problems as problems_lib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RUN = ["run", "--optimizer", "adam", "--learning-rate", "0.1", "--problem", "himmelblau"]


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "error:" in err and "Traceback" not in err
    return err


ERRORS = {
    "unknown optimizer": (["run", "--optimizer", "adamx", "--learning-rate", "0.1", "--problem", "himmelblau"],
                          ["'adamx'", "gradient_descent, momentum, adam"]),
    "unknown problem": (["run", "--optimizer", "adam", "--learning-rate", "0.1", "--problem", "himmelbla"],
                        ["'himmelbla'", ", ".join(cli.PROBLEMS)]),
    "learning rate not a number": (["run", "--optimizer", "adam", "--learning-rate", "fast", "--problem", "booth"],
                                   ["'fast'", "positive number"]),
    "negative learning rate": (["run", "--optimizer", "adam", "--learning-rate", "-0.1", "--problem", "booth"],
                               ["'-0.1'", "positive number"]),
    "zero learning rate": (["run", "--optimizer", "adam", "--lr", "0", "--problem", "booth"], ["positive number"]),
    "nan learning rate": (["run", "--optimizer", "adam", "--lr", "nan", "--problem", "booth"], ["positive number"]),
    "infinite learning rate": (["run", "--optimizer", "adam", "--lr", "inf", "--problem", "booth"],
                               ["positive number"]),
    "malformed init": ([*RUN, "--init", "-4;0"], ["malformed '-4;0'", "comma-separated numbers"]),
    "non-numeric init": ([*RUN, "--init", "a,b"], ["malformed 'a,b'"]),
    "non-finite init": ([*RUN, "--init=nan,0"], ["malformed 'nan,0'"]),
    "empty init": ([*RUN, "--init="], ["malformed ''"]),
    "init missing its value": ([*RUN, "--init"], ["--init", "expected one argument"]),
    "init of the wrong length": ([*RUN, "--init", "-4,0,1"], ["3 numbers", "dim 2", "--init=-4,0"]),
    "max-iters not a whole number": ([*RUN, "--max-iters", "1e3"], ["'1e3'", ">= 1"]),
    "max-iters zero": ([*RUN, "--max-iters", "0"], ["'0'", ">= 1"]),
    "plot to a missing folder": ([*RUN, "--plot", "/no/such/folder/x.png"], ["cannot write", "/no/such/folder"]),
    "plot of an unknown type": ([*RUN, "--plot", "out.txt"], ["'out.txt'", ".png"]),
    "missing required arguments": (["run", "--optimizer", "adam"], ["required", "--learning-rate", "--problem"]),
    "unknown command": (["frobnicate"], ["'frobnicate'", "bench", "run", "problems", "doctor"]),
    "no command": ([], ["required", "COMMAND"]),
    "unknown option": (["bench", "--fast"], ["unrecognized arguments: --fast"]),
    "unknown option of problems": (["problems", "--all"], ["unrecognized arguments: --all"]),
    "malformed import path": (["bench", "--optimizer", "my rules:RMSprop"], ["malformed import path 'my rules:RMSprop'",
                                                                          "package.module:ClassName"]),
    "dotted path without a colon": (["bench", "--optimizer", "my_rules.rules.RMSprop"],
                                    ["did you mean my_rules.rules:RMSprop?", "gradient_descent, momentum, adam"]),
    "malformed --set": (["bench", "--set", "rho"], ["malformed 'rho'", "NAME=VALUE"]),
    "malformed --set value": ([*RUN, "--set", "rho="], ["malformed 'rho='"]),
    "malformed learning rates": (["bench", "--learning-rates", "1e-3,fast"], ["'1e-3,fast'", "positive numbers"]),
    "negative learning rates": (["bench", "--learning-rates", "1e-3,-1"], ["'1e-3,-1'", "positive numbers"]),
    "unknown suite": (["bench", "--suite", "fast"], ["invalid choice: 'fast'", "analytic", "train", "all"]),
    "zero workers": (["bench", "--workers", "0"], ["'0'", ">= 1"]),
    "malformed ray address": (["bench", "--ray", "head node"], ["malformed Ray address 'head node'", "auto"]),
}


@pytest.mark.parametrize("argv, expected", ERRORS.values(), ids=ERRORS.keys())
def test_bad_arguments_exit_2_with_one_line(capsys, argv, expected):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    one_line_error(err)
    for text in expected:
        assert text in err


def test_unwritable_output_folders(capsys, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for folder in (a_file, a_file / "report"):  # a file, and a folder that cannot be created under a file
        code, out, err = run_cli(capsys, "bench", "--out", str(folder))
        assert code == 2 and out == ""
        assert f"cannot write to '{folder}'" in one_line_error(err)
        assert "writable folder" in err


@pytest.mark.parametrize("command", [[], ["bench"], ["run"], ["problems"], ["doctor"]])
def test_help_everywhere(capsys, command):
    code, out, err = run_cli(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: tfopt {' '.join(command)}".rstrip())


def test_static_names_match_the_library():
    from tfopt.lab import bench

    assert list(cli.PROBLEMS) == problems_lib.names()
    assert cli.SUITES == bench.SUITES
    assert set(cli.OPTIMIZERS.values()) == set(tfopt.RULES), (
        "tfopt.cli.OPTIMIZERS comes from tfopt._RULE_HOMES: "
        f"add {sorted(set(tfopt.RULES) - set(cli.OPTIMIZERS.values()))} there")
    for name, class_name in cli.OPTIMIZERS.items():
        assert cli.optimizer_name(class_name) == name  # the class name works as a command-line name too


@pytest.mark.parametrize("spelling", ["gd", "SGD", "GradientDescent", "gradient-descent", "gradient_descent",
                                      "GRADIENT_DESCENT", "gradientdescent"])
def test_optimizer_spellings(spelling):
    assert cli.optimizer_name(spelling) == "gradient_descent"


def test_import_paths_pass_the_parser_as_given():
    assert cli.optimizer_name("my_rules.rules:RMSprop") == "my_rules.rules:RMSprop"
    assert cli.optimizer_name("pkg.mod:Outer.Inner") == "pkg.mod:Outer.Inner"
    args = cli.build_parser().parse_args(["bench", "--optimizer", "adam", "--optimizer", "mypkg.rules:RMSprop",
                                          "--learning-rates", "1e-3,1e-2", "--set", "rho=0.8", "--hp", "beta_1=0.8"])
    assert args.optimizers == ["adam", "mypkg.rules:RMSprop"] and args.learning_rates == [1e-3, 1e-2]
    assert args.settings == [("rho", "0.8"), ("beta_1", "0.8")]


@pytest.fixture
def in_examples(monkeypatch):
    """Run from examples/, as its README says: the command finds ``my_rules`` in the current folder."""
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(EXAMPLES))])


BAD_RULES = {
    "module not found": ("no_such_package.rules:RMSprop",
                         "cannot import tfopt rule 'no_such_package.rules:RMSprop': ModuleNotFoundError: "
                         "No module named 'no_such_package'"),
    "no such class": ("my_rules.rules:RMSpro",
                      "module 'my_rules.rules' has no 'RMSpro'; it defines the tfopt optimizers RMSprop"),
    "not a class": ("my_rules.rules:tf", "'my_rules.rules:tf' is not a tfopt.Optimizer subclass (it is a module)"),
    "not an optimizer": ("argparse:ArgumentParser", "not a tfopt.Optimizer subclass (it is a class ArgumentParser)"),
    "the base class": ("tfopt:Optimizer", "is tfopt.Optimizer itself"),
}


@pytest.mark.parametrize("path, message", BAD_RULES.values(), ids=BAD_RULES.keys())
def test_bad_import_paths_exit_2_with_one_line(capsys, in_examples, tmp_path, path, message):
    for command in (["bench", "--out", str(tmp_path)], ["run", "--lr", "0.1", "--problem", "booth"]):
        code, out, err = run_cli(capsys, *command, "--optimizer", path)
        assert code == 2 and out == ""
        assert message in one_line_error(err), err
        assert err.startswith(f"tfopt {command[0]}: error: --optimizer: ")


def test_a_module_that_fails_to_import_is_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "broken_rules.py").write_text("import tensorflow\nraise RuntimeError('my module is broken')\n")
    (tmp_path / "exiting_rules.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    code, out, err = run_cli(capsys, *RUN[:1], "--optimizer", "broken_rules:X", *RUN[3:])
    assert code == 2 and "RuntimeError: my module is broken" in one_line_error(err)
    code, out, err = run_cli(capsys, *RUN[:1], "--optimizer", "exiting_rules:X", *RUN[3:])
    assert code == 2 and "importing 'exiting_rules' called exit()" in one_line_error(err)


SET_ERRORS = {
    "unknown for one": (["run", "--optimizer", "my_rules.rules:RMSprop", "--set", "rhoo=0.8"],
                        "--set rhoo=0.8: RMSprop has no hyperparameter 'rhoo'; its hyperparameters are rho, epsilon"),
    "unknown for all": (["bench", "--optimizer", "momentum", "--optimizer", "my_rules.rules:RMSprop",
                         "--set", "beta_1=0.8"],
                        "none of the optimizers has a hyperparameter 'beta_1'; Momentum has momentum, nesterov; "
                        "RMSprop has rho, epsilon"),
    "not a number": (["run", "--optimizer", "adam", "--set", "beta_1=high"], "--set beta_1=high: 'high' is not a "
                                                                             "number"),
    "out of range": (["run", "--optimizer", "my_rules.rules:RMSprop", "--set", "rho=1.5"],
                     "--set rho=1.5 (RMSprop): Invalid rho: 1.5"),
    "not a bool": (["run", "--optimizer", "momentum", "--set", "nesterov=maybe"], "'maybe' is not true or false"),
    "the learning rate": (["run", "--optimizer", "adam", "--set", "learning_rate=0.1"], "with --learning-rate"),
}


@pytest.mark.parametrize("argv, message", SET_ERRORS.values(), ids=SET_ERRORS.keys())
def test_bad_settings_exit_2_with_one_line(capsys, in_examples, tmp_path, argv, message):
    extra = ["--out", str(tmp_path / "r")] if argv[0] == "bench" else ["--lr", "0.1", "--problem", "booth"]
    code, out, err = run_cli(capsys, *argv, *extra)
    assert code == 2 and out == ""
    assert message in one_line_error(err), err


def test_run_a_user_rule_with_settings(capsys, in_examples):
    code, out, err = run_cli(capsys, "run", "--optimizer", "my_rules.rules:RMSprop", "--lr", "0.1",
                             "--problem", "himmelblau", "--set", "rho=0.8", "--set", "epsilon=1e-6",
                             "--max-iters", "50")
    assert code == 0, err
    assert out.startswith("RMSprop lr=0.1 on himmelblau from (-4, 0)\n")
    code, out, err = run_cli(capsys, "run", "--optimizer", "Momentum", "--lr", "0.01", "--problem", "booth",
                             "--set", "nesterov=true", "--hp", "momentum=0.5", "--max-iters", "5")
    assert code == 0 and out.startswith("Momentum lr=0.01 on booth"), err


def test_init_parsing():
    assert cli.point("-4,0") == (-4.0, 0.0)
    assert cli.point(" [ -4 , 0.5 ] ") == (-4.0, 0.5)
    assert cli._join_option_values(["run", "--init", "-4,0", "--lr", "1"]) == ["run", "--init=-4,0", "--lr", "1"]


def test_problems_lists_every_problem_with_its_minima(capsys):
    code, out, err = run_cli(capsys, "problems")
    assert code == 0 and err == ""
    for problem in problems_lib.ALL.values():
        assert problem.name in out and problem.description in out
    assert "(3, 2), (-2.805118, 3.131313), (-3.77931, -3.283186), (3.584428, -1.848127)" in out


def test_run_prints_the_outcome_and_plots(capsys, tmp_path):
    figure = tmp_path / "run.png"
    code, out, err = run_cli(capsys, *RUN, "--init", "-4,0", "--max-iters", "400", "--plot", str(figure))
    assert code == 0, err
    assert out.startswith("Adam lr=0.1 on himmelblau from (-4, 0)\n")
    assert re.search(r"status: +converged after \d+ iterations", out)
    assert "nearest minimum:  (-3.77931, -3.283186)" in out
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert f"Figure written to {figure.resolve()}" in out


def test_run_animates_to_a_gif(capsys, tmp_path):
    movie = tmp_path / "run.gif"
    code, out, err = run_cli(capsys, *RUN, "--init", "-4,0", "--max-iters", "200", "--animate", str(movie))
    assert code == 0, err
    assert movie.read_bytes()[:6] == b"GIF89a"
    assert f"Animation written to {movie.resolve()}" in out
    code, out, err = run_cli(capsys, *RUN, "--animate", str(tmp_path / "run.mp4"))
    assert code == 2 and "must end in .gif" in err and not (tmp_path / "run.mp4").exists()


def test_run_reports_an_explosion(capsys):
    code, out, _ = run_cli(capsys, "run", "--optimizer", "gd", "--lr", "0.1", "--problem", "quartic")
    assert code == 0
    assert "exploded at iteration 5" in out and "nearest minimum" not in out


def test_bench_says_where_it_wrote_the_report(capsys, tmp_path, monkeypatch):
    from tfopt.lab import bench

    def fake_run_benchmark(out_dir, quick, progress, **kwargs):
        assert (Path(out_dir), quick, progress) == (tmp_path / "r", True, False)
        assert [type(o) for o in kwargs["optimizers"]] == [tfopt.GradientDescent, tfopt.Momentum, tfopt.Adam]
        assert kwargs["learning_rates"] is None and kwargs["hyperparameters"] == {}  # each suite's own default
        assert (kwargs["suite"], kwargs["workers"], kwargs["ray"]) == ("analytic", None, None)
        return bench.Report(runs=[], basin={}, settings={}, out_dir=Path(out_dir),
                            files=[Path(out_dir) / "a.png", Path(out_dir) / "report.md"], total_time=0.0)

    monkeypatch.setattr(bench, "run_benchmark", fake_run_benchmark)
    code, out, err = run_cli(capsys, "bench", "--quick", "--no-progress", "--out", str(tmp_path / "r"))
    assert code == 0 and err == ""
    assert f"Report written to {(tmp_path / 'r' / 'report.md').resolve()}" in out
    assert (tmp_path / "r").is_dir()


def test_bench_passes_the_suite_and_where_to_run(capsys, tmp_path, monkeypatch):
    from tfopt.lab import bench

    seen = {}

    def fake_run_benchmark(out_dir, quick, progress, **kwargs):
        seen.update(kwargs)
        return bench.Report(runs=[], basin={}, settings={}, out_dir=Path(out_dir),
                            files=[Path(out_dir) / "train_results.csv", Path(out_dir) / "report.md"], total_time=0.0)

    monkeypatch.setattr(bench, "run_benchmark", fake_run_benchmark)
    code, out, err = run_cli(capsys, "bench", "--suite", "train", "--workers", "3", "--out", str(tmp_path))
    assert code == 0, err
    assert (seen["suite"], seen["workers"], seen["ray"]) == ("train", 3, None)
    assert "with train_results.csv and 0 PNG figures" in out
    code, out, err = run_cli(capsys, "bench", "--suite", "all", "--ray", "127.0.0.1:6379", "--workers", "2",
                             "--out", str(tmp_path))
    assert code == 2 and "give --workers or --ray, not both" in err
    code, out, err = run_cli(capsys, "bench", "--ray", "auto", "--out", str(tmp_path))
    assert code == 2 and "--ray runs the training trials: add --suite train" in err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    code, out, err = run_cli(capsys, "bench", "--suite", "all", "--ray", "ray://head:10001", "--out", str(tmp_path))
    assert code == 2 and 'pip install "tfopt[ray]"' in err
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    code, out, err = run_cli(capsys, "bench", "--suite", "train", "--out", str(tmp_path))
    assert code == 2 and "scikit-learn is not installed" in err and 'pip install "tfopt[train]"' in err


def test_bench_default_output_folder(monkeypatch):
    args = cli.build_parser().parse_args(["bench"])
    assert args.out == Path("tfopt-report") and not args.quick and args.progress
    assert args.optimizers is None and args.learning_rates is None and args.settings == []
    assert (args.suite, args.workers, args.ray) == ("analytic", None, None)


def test_bench_takes_several_optimizers_rates_and_settings(capsys, tmp_path, monkeypatch, in_examples):
    from my_rules.rules import RMSprop

    from tfopt.lab import bench

    seen = {}

    def fake_run_benchmark(out_dir, quick, progress, **kwargs):
        seen.update(kwargs)
        return bench.Report(runs=[], basin={}, settings={}, out_dir=Path(out_dir), files=[], total_time=0.0)

    monkeypatch.setattr(bench, "run_benchmark", fake_run_benchmark)
    code, out, err = run_cli(capsys, "bench", "--out", str(tmp_path), "--optimizer", "ADAM", "--optimizer",
                             "my_rules.rules:RMSprop", "--optimizer", "momentum", "--optimizer", "adam",
                             "--learning-rates", "1e-3,0.05", "--set", "rho=0.8", "--set", "beta_1=0.5")
    assert code == 0, err
    adam, rmsprop, momentum = seen["optimizers"]  # in order, the repeat dropped
    assert (type(adam), type(rmsprop), type(momentum)) == (tfopt.Adam, RMSprop, tfopt.Momentum)
    assert float(rmsprop.rho) == 0.8 and float(adam.beta_1) == 0.5 and float(momentum.momentum) == 0.7
    assert seen["learning_rates"] == [1e-3, 0.05] and seen["hyperparameters"] == {"rho": 0.8, "beta_1": 0.5}


def subprocess_env(**changes):
    """This environment with tfopt from this tree and ``changes`` (None removes a variable)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def imported_modules(importtime_stderr):
    """The modules a ``python -X importtime`` run imported, from its stderr."""
    lines = importtime_stderr.splitlines()
    return {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}


def test_python_dash_m_tfopt_help_imports_no_tensorflow():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tfopt", "--help"], capture_output=True,
                          text=True, env=subprocess_env(TF_CPP_MIN_LOG_LEVEL=None), timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: tfopt") and "bench" in done.stdout and "doctor" in done.stdout
    modules = imported_modules(done.stderr)
    assert {"tfopt", "tfopt.cli", "argparse"} <= modules
    assert not {m for m in modules if m.split(".")[0] in ("tensorflow", "keras")}
    assert "Traceback" not in done.stderr


FAST = [["--help"], ["bench", "--help"], ["run", "--help"], ["problems", "--help"], ["doctor", "--help"],
        ["run", "--optimizer", "adamx", "--lr", "0.1", "--problem", "booth"], ["bench", "--fast"], ["frobnicate"], [],
        ["bench", "--optimizer", "adam", "--optimizer", "mypkg.rules:RMSprop", "--set", "rho"],
        ["bench", "--optimizer", "mypkg.rules.RMSprop"], ["bench", "--learning-rates", "1e-3,x"]]


def test_help_and_argument_errors_are_fast_and_import_no_tensorflow():
    script = f"""if True:
        import sys, time
        start = time.perf_counter()
        from tfopt import cli
        codes = [cli.main(argv) for argv in {FAST!r}]
        print("RESULT", codes, round(time.perf_counter() - start, 3), sorted(
            {{m.split(".")[0] for m in sys.modules}} & {{"tensorflow", "keras"}}))
        """
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", script], capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    codes, seconds, heavy = re.search(r"RESULT (\[.*?\]) (\S+) (\[.*\])", done.stdout).groups()
    assert eval(codes) == [0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2]
    assert heavy == "[]", f"{heavy} imported by tfopt's command line before any command ran"
    assert float(seconds) < 1.0, f"{len(FAST)} helps and errors took {seconds} s"
    assert "tensorflow" not in imported_modules(done.stderr)


# ------------------------------------------------------------------- quiet
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796224142.541288    2920 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796224142.541752    2920 cudart_stub.cc:31] Could not find cuda drivers on your machine.
W0000 00:00:1796224142.541752    2920 some.cc:1] a warning
E0000 00:00:1796224150.756782    2920 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error
E0000 00:00:1796224150.756782    2920 other.cc:52] a real error
/some/file.py:3: UserWarning: a Python warning
I1203 10:11:12.123456    2920 port.cc:153] an info line with a real time stamp
"""


@pytest.mark.parametrize("level, gpus, kept", [
    (0, False, [0, 1, 2, 3, 4, 5, 6, 7]),
    (1, True, [3, 4, 5, 6]),
    (2, True, [4, 5, 6]),
    (2, False, [5, 6]),  # no GPU: CUDA's cuInit error only says so
    (3, False, [6]),
])
def test_start_up_lines_hidden_by_the_log_level(level, gpus, kept):
    lines = START_UP.splitlines(keepends=True)
    assert [i for i, line in enumerate(lines) if not cli._hidden(line, level, gpus)] == kept


def test_tf_cpp_min_log_level_is_set_only_if_unset(monkeypatch, capsys):
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cli.main(["--help"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli.main(["--help"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == onednn  # it changes numerics: never touched


def test_held_stderr_holds_file_descriptor_2(capfd):
    os.write(2, b"before\n")
    with cli._held_stderr() as held:
        os.write(2, b"from C\n")  # as TensorFlow's libraries write
    os.write(2, b"after\n")
    assert held.text == "from C\n"
    assert capfd.readouterr().err == "before\nafter\n"


# ------------------------------------------------------------------- doctor
X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512_fp16 amx_tile amx_bf16
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
"""


def test_cpu_info():
    assert cli.cpu_info(X86) == ("Intel(R) Xeon(R) Platinum 8480+",
                                 ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512fp16", "amx"], [])
    model, present, missing = cli.cpu_info(ARM)
    assert (present, missing) == (["asimd"], ["neon", "sve"])
    assert model  # platform.processor() or the machine, as /proc/cpuinfo names no model here
    assert cli.cpu_info("") == (platform.processor() or platform.machine() or "unknown", [], [])
    assert cli.cpu_info("flags : sse sse2\n")[2] == list(cli.X86_FEATURES)


def test_compiler_version(monkeypatch):
    monkeypatch.setenv("CXX", "/no/such/compiler")
    assert cli.compiler_version() == ("/no/such/compiler", "not found")
    monkeypatch.setenv("CXX", f"{sys.executable} -c 'print(\"fake c++ 1.0\")'")  # $CXX may carry arguments
    assert cli.compiler_version()[1] == "fake c++ 1.0"


def fake_native(monkeypatch, **found):
    monkeypatch.setattr(native, "load", lambda: object() if found["loaded"] else None)
    defaults = dict(enabled=True, library=None, flags=None, compiler="g++", compiler_version="g++ 12.2.0",
                    cache_dir="/cache/tfopt", log=None, error=None)
    monkeypatch.setattr(native, "diagnostics", lambda: {**defaults, **found}, raising=False)


def test_doctor_reports_versions_and_loaded_native_kernels(capsys, monkeypatch):
    fake_native(monkeypatch, loaded=True, library="/cache/tfopt/native-1234.so", flags=["-march=native", "-O3"])
    code, out, err = run_cli(capsys, "doctor")
    assert code == 0, out
    for label, version in [("tfopt", tfopt.__version__), ("TensorFlow", tf.__version__),
                           ("Keras", keras.__version__), ("NumPy", np.__version__),
                           ("Python", platform.python_version())]:
        assert re.search(rf"^{label} +{re.escape(version)}", out, re.M), (label, out)
    for label in ("platform", "CPU", "CPU features", "C++ compiler", "native kernels"):
        assert re.search(rf"^{re.escape(label)}  ", out, re.M), (label, out)
    assert "native kernels  loaded: /cache/tfopt/native-1234.so" in out
    assert "-march=native -O3" in out and "/cache/tfopt" in out


def test_doctor_shows_why_the_native_kernels_did_not_load(capsys, monkeypatch, tmp_path):
    log = tmp_path / "build.log"
    log.write_text("".join(f"log line {i}\n" for i in range(1, 31)))
    fake_native(monkeypatch, loaded=False, error="g++ failed on native.cc: error: no such header", log=str(log))
    code, out, err = run_cli(capsys, "doctor")
    assert code == 1
    assert "native kernels  NOT loaded: g++ failed on native.cc: error: no such header" in out
    assert str(log) in out
    assert "log line 30" in out and "log line 11" in out and "log line 10\n" not in out  # the last 20 lines
    assert "same numbers, slower" in out


def test_doctor_without_native_diagnostics(capsys, monkeypatch):
    """An older ``tfopt.kernels.native`` without ``diagnostics()``: the reason comes from ``load()``'s warning."""
    def load():
        warnings.warn("tfopt: native kernels unavailable (no C++ compiler)", stacklevel=2)

    monkeypatch.setattr(native, "load", load)
    monkeypatch.delattr(native, "diagnostics", raising=False)
    code, out, err = run_cli(capsys, "doctor")
    assert code == 1 and "NOT loaded: tfopt: native kernels unavailable (no C++ compiler)" in out


def test_doctor_with_native_kernels_turned_off_in_a_fresh_process():
    """The real thing, in a fresh process and with the default log level: quiet, and exit 1 as turned off."""
    done = subprocess.run([sys.executable, "-m", "tfopt", "doctor"], capture_output=True, text=True, timeout=600,
                          env=subprocess_env(TFOPT_NATIVE="0", TF_CPP_MIN_LOG_LEVEL=None))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"TensorFlow      {tf.__version__}" in done.stdout and f"Keras           {keras.__version__}" in done.stdout
    assert "native kernels  disabled: " in done.stdout and "TFOPT_NATIVE=0" in done.stdout
    assert "C++ compiler    " in done.stdout
    assert not re.search(r"absl::InitializeLog|^[IW]\d{4} |oneDNN|cuInit", done.stderr, re.M), done.stderr


def test_a_wrapper_around_any_optimizer_by_name(capsys, tmp_path, monkeypatch):
    import argparse

    assert cli.optimizer_name("Lookahead(ADAM)") == "lookahead(adam)"
    assert cli.optimizer_name("apply-if-finite(lookahead(gd))") == "apply_if_finite(lookahead(gradient_descent))"
    assert cli.optimizer_name("moving_average(my_rules.rules:RMSprop)") == "moving_average(my_rules.rules:RMSprop)"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown wrapper 'lookahed'"):
        cli.optimizer_name("lookahed(adam)")
    code, out, err = run_cli(capsys, "run", "--optimizer", "lookahead(adam)", "--learning-rate", "0.1",
                             "--problem", "himmelblau", "--set", "sync_period=4", "--set", "beta_1=0.8")
    assert code == 0, err
    assert out.startswith("Lookahead(Adam) lr=0.1 on himmelblau")
    expected = tfopt.Lookahead(tfopt.Adam(0.1, beta_1=0.8), sync_period=4)
    x_final = tfopt.convergence_test(expected, "himmelblau").x_final
    assert f"x_final:          {cli._fmt(x_final)}" in out
    code, out, err = run_cli(capsys, "run", "--optimizer", "lookahead(adam)", "--learning-rate", "0.1",
                             "--problem", "himmelblau", "--set", "sync_period=0")
    assert code == 2 and "sync_period" in err

    from tfopt.lab import bench

    seen = {}

    def fake_run_benchmark(out_dir, quick, progress, **kwargs):
        seen.update(kwargs)
        return bench.Report(runs=[], basin={}, settings={}, out_dir=Path(out_dir), files=[], total_time=0.0)

    monkeypatch.setattr(bench, "run_benchmark", fake_run_benchmark)
    code, out, err = run_cli(capsys, "bench", "--optimizer", "multi_steps(momentum)", "--optimizer", "adam",
                             "--set", "every_k=3", "--out", str(tmp_path))
    assert code == 0, err
    wrapped, adam = seen["optimizers"]
    assert isinstance(wrapped, tfopt.MultiSteps) and wrapped.get_config()["every_k"] == 3
    assert isinstance(wrapped.inner_optimizer, tfopt.Momentum) and isinstance(adam, tfopt.Adam)
    assert list(bench.make_optimizers(seen["optimizers"])) == ["MultiSteps(Momentum)", "Adam"]
