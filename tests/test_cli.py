"""The tfopt command: every bad argument is one line and a non-zero exit, never a traceback."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tfopt
from tfopt import cli
from tfopt import problems as problems_lib

ROOT = Path(__file__).resolve().parents[1]
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
    "unknown optimizer": (["run", "--optimizer", "adamw", "--learning-rate", "0.1", "--problem", "himmelblau"],
                          ["'adamw'", "gradient_descent, momentum, adam"]),
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
    "unknown command": (["frobnicate"], ["'frobnicate'", "bench", "run", "problems"]),
    "no command": ([], ["required", "COMMAND"]),
    "unknown option": (["bench", "--fast"], ["unrecognized arguments: --fast"]),
    "unknown option of problems": (["problems", "--all"], ["unrecognized arguments: --all"]),
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


@pytest.mark.parametrize("command", [[], ["bench"], ["run"], ["problems"]])
def test_help_everywhere(capsys, command):
    code, out, err = run_cli(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: tfopt {' '.join(command)}".rstrip())


def test_static_names_match_the_library():
    assert list(cli.PROBLEMS) == problems_lib.names()
    assert set(cli.OPTIMIZERS.values()) <= set(tfopt.RULES)


@pytest.mark.parametrize("spelling", ["gd", "SGD", "GradientDescent", "gradient-descent", "gradient_descent"])
def test_optimizer_spellings(spelling):
    assert cli.optimizer_name(spelling) == "gradient_descent"


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


def test_run_reports_an_explosion(capsys):
    code, out, _ = run_cli(capsys, "run", "--optimizer", "gd", "--lr", "0.1", "--problem", "quartic")
    assert code == 0
    assert "exploded at iteration 5" in out and "nearest minimum" not in out


def test_bench_says_where_it_wrote_the_report(capsys, tmp_path, monkeypatch):
    from tfopt import bench

    def fake_run_benchmark(out_dir, quick, progress):
        assert (Path(out_dir), quick, progress) == (tmp_path / "r", True, False)
        return bench.Report(runs=[], basin={}, settings={}, out_dir=Path(out_dir),
                            files=[Path(out_dir) / "a.png", Path(out_dir) / "report.md"], total_time=0.0)

    monkeypatch.setattr(bench, "run_benchmark", fake_run_benchmark)
    code, out, err = run_cli(capsys, "bench", "--quick", "--no-progress", "--out", str(tmp_path / "r"))
    assert code == 0 and err == ""
    assert f"Report written to {(tmp_path / 'r' / 'report.md').resolve()}" in out
    assert (tmp_path / "r").is_dir()


def test_bench_default_output_folder(monkeypatch):
    args = cli.build_parser().parse_args(["bench"])
    assert args.out == Path("tfopt-report") and not args.quick and args.progress


def test_python_dash_m_tfopt_help():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "tfopt", "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: tfopt") and "bench" in done.stdout
    assert "Traceback" not in done.stderr
