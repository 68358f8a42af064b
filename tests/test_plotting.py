"""tfopt.lab.plotting: each function draws the right artists, on a new figure or a given axes, headless."""

import ast
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from tfopt.lab import plotting, problems
from tfopt.lab.results import ConvergenceResult

PNG = b"\x89PNG\r\n\x1a\n"


def result(path, losses=None, status="converged", problem=None):
    """A ConvergenceResult with the given path (and losses: the problem's, by default)."""
    path = np.asarray(path, dtype=np.float64).reshape(len(path), -1)
    if losses is None:
        losses = np.asarray(problem.loss(path)) if len(path) else np.zeros(0)
    losses = np.asarray(losses, dtype=np.float64)
    x_final = path[-1] if len(path) else np.full(path.shape[1], np.nan)
    return ConvergenceResult(status=status, iterations=len(path) + (status == "exploded"), path=path, losses=losses,
                             x_final=x_final, loss_final=float(losses[-1]) if len(losses) else np.nan,
                             nearest_minimum=None, distance_to_minimum=None, wall_time=0.1)


@pytest.fixture
def quartic_runs():
    q = problems.quartic
    return {
        "GradientDescent lr=0.001": result(np.linspace(2.0, 0.1, 200), problem=q, status="max_iters"),
        "Momentum lr=0.01": result(np.linspace(2.0, -1.125, 80), problem=q),
        "GradientDescent lr=0.1": result([-8.0, 4e3, -1e11, np.inf], losses=[1e4, 1e14, 1e44, np.inf],
                                         status="exploded"),
    }


@pytest.fixture
def himmelblau_runs():
    h = problems.himmelblau
    line = np.linspace([-4.0, 0.0], [-3.779310253377747, -3.2831859912861696], 50)
    return {
        "Adam lr=0.1": result(line, problem=h),
        "Adam lr=0.001": result(line[:20], problem=h, status="max_iters"),
        "GradientDescent lr=0.1": result([[30.0, -4.0], [-3e4, 5e2], [np.inf, -np.inf]],
                                         losses=[1e6, 1e18, np.inf], status="exploded"),
    }


def markers(ax, marker):
    return [line for line in ax.lines if line.get_marker() == marker and line.get_linestyle() == "None"]


# ----------------------------------------------------------------- 1-D paths
def test_paths_1d_one_line_and_end_marker_per_run(quartic_runs):
    fig = plotting.plot_paths_1d(quartic_runs, problems.quartic)
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # the plot and its colour bar
    assert len(ax.lines) == 2 * len(quartic_runs) + 1  # path + end marker per run, the minima
    assert len(markers(ax, "o")) == 1 and len(markers(ax, "s")) == 1 and len(markers(ax, "X")) == 1
    (stars,) = markers(ax, "*")
    assert np.allclose(stars.get_ydata(), [m[0] for m in problems.quartic.minima])
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "x"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("Momentum lr=0.01 (converged, 80 it.)") for label in labels)


def test_paths_1d_any_number_of_runs_get_distinct_colours():
    q = problems.quartic
    runs = {f"run {i}": result(np.linspace(2.0, -1.0 + 0.1 * i, 30), problem=q) for i in range(12)}
    ax = plotting.plot_paths_1d(runs, q).axes[0]
    colours = {tuple(line.get_color()) for line in ax.lines[:-1:2]}
    assert len(colours) == 12


def test_paths_1d_colour_scale_spans_the_whole_loss_range(quartic_runs):
    ax = plotting.plot_paths_1d(quartic_runs, problems.quartic).axes[0]
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    values = mesh.get_array()
    assert mesh.norm.vmin == pytest.approx(values.min()) and mesh.norm.vmax == pytest.approx(values.max())
    assert values.min() > 0 and values.max() / values.min() > 1e4  # log scale, nothing clipped to a floor of 1


def test_paths_1d_draws_on_a_given_axes(quartic_runs):
    fig = Figure()
    ax = fig.add_subplot()
    out = plotting.plot_paths_1d(quartic_runs, problems.quartic, ax=ax, colorbar=False, legend=False)
    assert out is fig and fig.axes == [ax] and ax.get_legend() is None


def test_exploded_end_marker_stays_inside_the_box(quartic_runs):
    ax = plotting.plot_paths_1d(quartic_runs, problems.quartic).axes[0]
    (cross,) = markers(ax, "X")
    lo, hi = problems.quartic.domain[0]
    assert lo <= cross.get_ydata()[0] <= hi


# ----------------------------------------------------------------- 2-D paths
def test_paths_2d_marks_starts_ends_and_every_minimum(himmelblau_runs):
    h = problems.himmelblau
    fig = plotting.plot_paths_2d(himmelblau_runs, h)
    ax = fig.axes[0]
    assert len(ax.lines) == 3 * len(himmelblau_runs) + 1  # path, start, end per run; the minima
    (stars,) = markers(ax, "*")
    assert np.allclose(np.column_stack([stars.get_xdata(), stars.get_ydata()]), h.minima)
    starts = [line for line in markers(ax, "o") if line.get_markerfacecolor() == "white"]
    assert len(starts) == len(himmelblau_runs)
    assert all(np.allclose([s.get_xdata()[0], s.get_ydata()[0]], h.default_init) for s in starts)
    (cross,) = markers(ax, "X")
    assert all(lo <= v[0] <= hi for v, (lo, hi) in zip((cross.get_xdata(), cross.get_ydata()), h.domain))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "y")
    assert ax.get_xlim() == h.domain[0] and ax.get_ylim() == h.domain[1]
    assert len(fig.axes) == 2  # with a colour bar
    assert ax.get_legend() is not None


def test_paths_2d_path_starts_at_init(himmelblau_runs):
    ax = plotting.plot_paths_2d(himmelblau_runs, problems.himmelblau, init=(0.5, 0.5)).axes[0]
    path = ax.lines[0]
    assert (path.get_xdata()[0], path.get_ydata()[0]) == (0.5, 0.5)


def test_paths_2d_on_a_given_axes_with_a_colour_bar_axes(himmelblau_runs):
    fig = Figure()
    ax, cax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    assert plotting.plot_paths_2d(himmelblau_runs, problems.himmelblau, ax=ax, colorbar=cax) is fig
    assert fig.axes == [ax, cax] and cax.get_ylabel().startswith("loss")


def test_paths_need_the_right_dimension_and_a_recorded_path(himmelblau_runs, quartic_runs):
    with pytest.raises(ValueError, match="dim 2"):
        plotting.plot_paths_2d(quartic_runs, problems.quartic)
    with pytest.raises(ValueError, match="dim 1"):
        plotting.plot_paths_1d(himmelblau_runs, problems.himmelblau)
    unrecorded = {"a": result([[0.0, 0.0]], problem=problems.himmelblau)}
    unrecorded = {"a": ConvergenceResult(**{**unrecorded["a"].__dict__, "path": None, "losses": None})}
    with pytest.raises(ValueError, match="record_path"):
        plotting.plot_paths_2d(unrecorded, problems.himmelblau)


# --------------------------------------------------------------- loss curves
def test_loss_curves_log_scale_one_curve_and_end_marker_per_run(himmelblau_runs):
    fig = plotting.plot_loss_curves(himmelblau_runs, problem=problems.himmelblau)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "loss − f_min"
    assert len(ax.lines) == 2 * len(himmelblau_runs)  # no floor line: every gap here is positive
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("Adam lr=0.1") and labels[2].startswith("GradientDescent lr=0.1 (exploded")
    top = ax.get_ylim()[1]
    assert top < 1e10  # the exploded run does not stretch the axis
    (cross,) = markers(ax, "X")
    assert cross.get_ydata()[0] == pytest.approx(top)


def test_loss_curves_guard_zero_and_negative_gaps():
    runs = {
        "zero": result([[0.0]] * 3, losses=[1.0, 0.5, 0.0]),
        "below f_min": result([[0.0]] * 3, losses=[1.0, 1e-3, -1e-7]),
    }
    ax = plotting.plot_loss_curves(runs, f_min=0.0).axes[0]
    curves = ax.lines[0::2][:2]
    floor = ax.lines[-1]
    assert floor.get_linestyle() == ":"
    for curve in curves:
        y = np.asarray(curve.get_ydata())
        assert np.all(y > 0) and y[-1] == pytest.approx(floor.get_ydata()[0])


def test_loss_curves_styles_and_given_axes(himmelblau_runs):
    fig = Figure()
    ax = fig.add_subplot()
    styles = {"Adam lr=0.1": {"color": "red", "ls": "--"}}
    assert plotting.plot_loss_curves(himmelblau_runs, ax=ax, problem=problems.himmelblau, styles=styles,
                                     legend=False) is fig
    assert ax.lines[0].get_color() == "red" and ax.lines[0].get_linestyle() == "--"
    assert ax.get_legend() is None


def test_loss_curves_without_f_min_draw_the_loss():
    ax = plotting.plot_loss_curves({"a": result([[1.0], [0.5]], losses=[4.0, 2.0])}).axes[0]
    assert ax.get_ylabel() == "loss"
    assert list(ax.lines[0].get_ydata()) == [4.0, 2.0]


# ----------------------------------------------------------------- basins
class FakeBatch:
    """What plot_basins reads from a BatchResult: len, status, x_final."""

    def __init__(self, status, x_final):
        self.status, self.x_final = np.asarray(status), np.asarray(x_final, dtype=np.float32)

    def __len__(self):
        return len(self.status)


def basin_batch(n=4):
    h = problems.himmelblau
    minima = np.asarray(h.minima)
    k = n * n
    x_final = minima[np.arange(k) % 4].copy()
    status = np.array(["converged"] * k, dtype=object)
    status[1], x_final[1] = "exploded", [np.inf, np.nan]
    status[2] = status[3] = "max_iters"
    status[5], x_final[5] = "converged", [-0.270845, -0.923039]  # the local maximum: elsewhere
    return FakeBatch(status.astype(str), x_final)


def test_basins_one_colour_per_minimum_and_outcome():
    h = problems.himmelblau
    batch = basin_batch()
    fig = plotting.plot_basins(batch, h)
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    category, names = plotting.basin_categories(batch, h)
    assert np.array_equal(np.asarray(mesh.get_array()).ravel(), category)
    assert category[1] == 4 and category[2] == category[3] == 5 and category[5] == 6
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 4 + 3  # four minima, exploded, unconverged, and "elsewhere" (present here)
    assert labels[4] == "exploded: 1" and labels[5] == "unconverged (max_iters): 2"
    (stars,) = markers(ax, "*")
    assert len(stars.get_xdata()) == len(h.minima)
    assert ax.get_xlabel() == "start x" and ax.get_ylabel() == "start y"


def test_basins_hide_elsewhere_when_absent_and_accept_starts_and_ax():
    h = problems.himmelblau
    batch = basin_batch(3)
    batch.status[5] = "max_iters"
    rng = np.random.default_rng(0)
    starts = rng.uniform(-5, 5, size=(len(batch), 2))  # not a grid: drawn as a scatter
    fig = Figure()
    ax = fig.add_subplot()
    assert plotting.plot_basins(batch, h, ax=ax, starts=starts) is fig
    assert len(ax.get_legend().get_texts()) == 4 + 2
    assert not any(isinstance(c, QuadMesh) for c in ax.collections)
    with pytest.raises(ValueError, match="starts="):
        plotting.plot_basins(FakeBatch(["converged"] * 5, np.zeros((5, 2))), h)


def test_basin_grid_order_matches_the_map():
    grid = plotting.basin_grid(problems.himmelblau, 3)
    assert grid.shape == (9, 2)
    assert np.array_equal(grid[:3, 1], [-5.0, -5.0, -5.0]) and np.array_equal(grid[:3, 0], [-5.0, 0.0, 5.0])


# ----------------------------------------------------------------- headless
def test_figures_save_headless_without_pyplot_or_global_style_changes(tmp_path, himmelblau_runs, quartic_runs):
    before = dict(matplotlib.rcParams)
    paths = {
        "p1.png": lambda s: plotting.plot_paths_1d(quartic_runs, problems.quartic, save=s),
        "p2.png": lambda s: plotting.plot_paths_2d(himmelblau_runs, problems.himmelblau, save=s),
        "l.png": lambda s: plotting.plot_loss_curves(himmelblau_runs, problem=problems.himmelblau, save=s),
        "b.png": lambda s: plotting.plot_basins(basin_batch(), problems.himmelblau, save=s),
    }
    for name, draw in paths.items():
        assert isinstance(draw(tmp_path / name), Figure)
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert dict(matplotlib.rcParams) == before


def test_matplotlib_is_imported_only_inside_the_functions():
    tree = ast.parse(Path(plotting.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module for node in top_level if isinstance(node, ast.ImportFrom) and node.module]
    assert not any(name.startswith("matplotlib") for name in names)
