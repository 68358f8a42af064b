"""The convergence benchmark: a quick run writes the report files with the right content."""

import csv
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import tfopt
from tfopt.lab import bench
from tfopt.lab import problems as problems_lib
from tfopt.lab.harness import convergence_test

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("sensitivity.png", "paths_himmelblau.png", "paths_rosenbrock.png", "loss_curves.png",
           "basins_himmelblau.png")
ANIMATION = "animation_himmelblau.gif"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    printed = []
    report = bench.run_benchmark(out, quick=True, progress=False, echo=printed.append)
    return report, out, "\n".join(printed)


def test_quick_bench_writes_every_file(quick):
    report, out, _ = quick
    for name in ("report.md", "results.csv", "results.json", *FIGURES):
        assert (out / name).is_file(), name
        assert (out / name) in report.files
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == PNG
    assert (out / ANIMATION).read_bytes()[:6] == b"GIF89a" and (out / ANIMATION) in report.files


def test_csv_has_the_columns_and_one_row_per_run(quick):
    _, out, _ = quick
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == bench.CSV_COLUMNS == (
        "problem", "optimizer", "learning_rate", "status", "iterations", "iters_to_tol", "reached_tol",
        "loss_gap", "distance", "wall_time")
    keys = {(r["problem"], r["optimizer"], float(r["learning_rate"])) for r in rows}
    assert keys == {(p, o, lr) for p in bench.QUICK_PROBLEMS for o in bench.OPTIMIZERS for lr in bench.LEARNING_RATES}
    assert len(rows) == len(keys) == 18
    for r in rows:
        assert r["status"] in ("converged", "exploded", "max_iters")
        iterations, to_tol = int(r["iterations"]), int(r["iters_to_tol"])
        if r["reached_tol"] == "True":
            assert 0 <= to_tol <= iterations
            assert float(r["loss_gap"]) <= bench.TOL or r["status"] == "exploded"
        else:
            assert to_tol == bench.MAX_ITERS  # never reached: the budget counts
        assert float(r["wall_time"]) > 0
        if r["status"] == "exploded":
            assert r["loss_gap"] in ("inf", "nan")


def test_json_is_strict_and_matches_the_csv(quick):
    report, out, _ = quick

    def no_nan(token):
        raise AssertionError(f"non-standard JSON number {token}")

    data = json.loads((out / "results.json").read_text(), parse_constant=no_nan)
    assert data["settings"]["quick"] is True and data["settings"]["tol"] == bench.TOL
    assert data["settings"]["problems"] == list(bench.QUICK_PROBLEMS)
    assert len(data["runs"]) == len(report.runs) == 18
    assert set(data["runs"][0]) == set(bench.CSV_COLUMNS) | {"x_final", "nearest_minimum"}
    assert sum(data["basins"]["counts"].values()) == bench.QUICK_BASIN_GRID ** 2


def test_report_md_has_the_tables_and_every_figure(quick):
    _, out, _ = quick
    text = (out / "report.md").read_text()
    assert "| optimizer | himmelblau | rosenbrock | solved | mean iters |" in text
    assert "| problem | optimizer | lr | status | iters | iters to 0.001 |" in text
    assert text.count("\n| Adam lr=0.1 |") == 1
    for name in (*FIGURES, ANIMATION):
        assert f"]({name})" in text
    assert "How to read it" in text
    # The figures a person looks at first come first: the glance table, then learning-rate sensitivity.
    assert text.index("### At a glance") < text.index("## Learning-rate sensitivity") < text.index(ANIMATION)
    assert "| himmelblau | Adam |" in text  # the sensitivity summary table


def test_printed_table(quick):
    report, _, printed = quick
    assert printed.splitlines()[0].split() == ["problem", "optimizer", "lr", "status", "iters", "iters", "to",
                                               "0.001", "loss", "-", "f_min", "dist.", "to", "min", "time", "(s)"]
    assert "At a glance" in printed and f"{len(report.runs)} runs" in printed
    printed.encode("ascii")  # readable on any terminal


def test_a_stacked_batch_equals_one_call_per_problem(quick):
    report, _, _ = quick
    for name in bench.QUICK_PROBLEMS:
        problem = problems_lib.get(name)
        alone = convergence_test(tfopt.Momentum(), problem, learning_rate=list(bench.LEARNING_RATES),
                                 max_iters=bench.MAX_ITERS)
        stacked = [r for r in report.runs if r.problem == name and r.optimizer == "Momentum"]
        for run, single in zip(stacked, alone):
            assert (run.status, run.iterations) == (single.status, single.iterations)
            np.testing.assert_array_equal(run.result.x_final, single.x_final)
            np.testing.assert_array_equal(run.result.losses, single.losses)


def test_iterations_to_tolerance():
    losses = np.array([5.0, 2.0, 1.0005, 1.0, 3.0])
    assert bench.iterations_to_tolerance(losses, 1.0, 9.0, 100) == (3, True)  # losses[2] is after update 3
    assert bench.iterations_to_tolerance(losses, 0.0, 9.0, 100) == (100, False)  # never: the budget
    assert bench.iterations_to_tolerance(losses, 1.0, 1.0, 100) == (0, True)  # the start is already there
    assert bench.iterations_to_tolerance(np.array([np.inf, np.nan]), 0.0, 9.0, 7) == (7, False)


def test_glance_cells():
    def run(problem, status, iterations, to_tol, reached):
        return bench.Run(problem=problem, optimizer="Adam", learning_rate=0.1, status=status, iterations=iterations,
                         iters_to_tol=to_tol, reached_tol=reached, loss_gap=0.0, distance=0.0, wall_time=1.0,
                         x_final=[0.0], nearest_minimum=[0.0])

    header, rows = bench.glance([run("a", "converged", 50, 40, True), run("b", "exploded", 3, 2000, False),
                                 run("c", "max_iters", 2000, 2000, False), run("d", "converged", 80, 2000, False)])
    assert header == ("optimizer", "a", "b", "c", "d", "solved", "mean iters")
    assert rows == [("Adam lr=0.1", "40", "exploded", "> 2000", "elsewhere", "1/4", "1510")]


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_examples_bench_command_lists_the_user_rule(tmp_path, monkeypatch, capsys):
    """``examples/my_rules/README.md``'s first ``tfopt bench`` command, as written, from examples/."""
    from tfopt import cli

    readme = (EXAMPLES / "my_rules" / "README.md").read_text()
    command = re.search(r"^tfopt bench (--optimizer adam --optimizer my_rules.rules:RMSprop --quick)\b", readme, re.M)
    assert command, "the example's README should show the bench command"
    monkeypatch.chdir(EXAMPLES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(EXAMPLES))])
    code = cli.main(["bench", *shlex.split(command.group(1)), "--out", str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["optimizer"] for r in rows[:6]] == ["Adam"] * 3 + ["RMSprop"] * 3
    assert {r["optimizer"] for r in rows} == {"Adam", "RMSprop"} and len(rows) == 12
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["rules"] == {"Adam": "Adam", "RMSprop": "my_rules.rules:RMSprop"}
    assert "| RMSprop lr=0.1 |" in (tmp_path / "report.md").read_text()
    assert re.search(r"^RMSprop lr=0.01 ", out, re.M)  # the printed glance table


def test_make_optimizers_labels_settings_and_errors():
    sys.path.insert(0, str(EXAMPLES))
    from my_rules.rules import RMSprop

    built = bench.make_optimizers(["Adam", RMSprop, "my_rules.rules:RMSprop", tfopt.Momentum(0.1, momentum=0.5)],
                                  hyperparameters={"rho": 0.5, "nesterov": True})
    assert list(built) == ["Adam", "RMSprop", "Momentum"]  # the repeated class once; an instance as it is
    assert float(built["RMSprop"].rho) == 0.5 and built["Momentum"].nesterov is False
    adam = type("Adam", (tfopt.Adam,), {"__module__": "my_rules.rules"})  # a second class called Adam
    assert list(bench.make_optimizers(["Adam", adam])) == ["Adam", "my_rules.rules:Adam"]
    with pytest.raises(ValueError, match="no optimizer here has a hyperparameter 'rhoo'; theirs are Adam: beta_1"):
        bench.make_optimizers(["Adam", RMSprop], hyperparameters={"rhoo": 0.5})
    with pytest.raises(ValueError, match="Cannot import tfopt rule 'nope:X'"):
        bench.make_optimizers(["nope:X"])
