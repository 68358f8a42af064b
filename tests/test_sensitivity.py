"""tfopt.lab.sensitivity: one batched call per optimizer and dimension; GD checked against NumPy float64."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from tfopt.lab import harness, sensitivity
from tfopt.lab.sensitivity import Sensitivity, SensitivityCurve

PNG = b"\x89PNG\r\n\x1a\n"


def booth_gd_numpy(rates, max_iters=2000, tol=1e-3):
    """Iterations to ``f <= tol`` of gradient descent on Booth from (-8, 8), in float64, one rate per row."""
    x = np.tile([-8.0, 8.0], (len(rates), 1))
    lr = np.asarray(rates)[:, None]
    iters = np.full(len(rates), max_iters)
    reached = np.zeros(len(rates), bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, max_iters + 1):
            a, b = x[:, 0] + 2 * x[:, 1] - 7, 2 * x[:, 0] + x[:, 1] - 5
            x = x - lr * np.stack([2 * a + 4 * b, 4 * a + 2 * b], axis=1)
            a, b = x[:, 0] + 2 * x[:, 1] - 7, 2 * x[:, 0] + x[:, 1] - 5
            hit = ~reached & (a * a + b * b <= tol)
            iters[hit], reached[hit] = t, True
    return iters, reached


def test_one_call_per_optimizer_and_dimension(monkeypatch):
    calls = []
    real = harness.convergence_test

    def counting(optimizer, problem, init=None, **kwargs):
        calls.append((type(optimizer).__name__, np.shape(init), np.shape(kwargs["learning_rate"])))
        return real(optimizer, problem, init, **kwargs)

    monkeypatch.setattr(harness, "convergence_test", counting)
    rates = sensitivity.log_grid(1e-3, 0.1, 16)
    result = sensitivity.learning_rate_sensitivity(["GradientDescent", "Adam"], ["booth", "quartic", "himmelblau"],
                                                   rates, max_iters=50)
    # 2 optimizers x 2 dimensions; the 2-D call holds both 2-D problems' whole grids.
    assert result.calls == len(calls) == 4
    assert sorted(calls) == sorted([(o, shape, (n,)) for o in ("GradientDescent", "Adam")
                                    for shape, n in (((16, 1), 16), ((32, 2), 32))])
    assert [(c.problem, c.optimizer) for c in result.curves] == [
        (p, o) for p in ("booth", "quartic", "himmelblau") for o in ("GradientDescent", "Adam")]
    for curve in result.curves:
        np.testing.assert_array_equal(curve.learning_rates, rates)


def test_gradient_descent_on_booth_matches_numpy_and_the_stability_bound():
    """Booth is quadratic with Hessian [[10, 8], [8, 10]] (eigenvalues 18 and 2): GD is stable iff lr < 2/18."""
    result = sensitivity.learning_rate_sensitivity(["GradientDescent"], ["booth"])
    curve = result.curve("booth", "GradientDescent")
    assert result.calls == 1 and len(curve.learning_rates) == 64
    iters, reached = booth_gd_numpy(curve.learning_rates)
    np.testing.assert_array_equal(curve.reached, reached)
    # float32 against float64: the loss crosses 1e-3 at most one iteration apart.
    assert np.max(np.abs(curve.iterations - iters)) <= 1
    lo, hi = curve.stable_range
    above = curve.learning_rates[curve.learning_rates > hi][0]
    assert hi < 1 / 9 < above
    assert curve.stable_ranges == [(lo, hi)]
    assert curve.stable_decades == pytest.approx(np.log10(hi / lo))
    assert np.all(curve.status[curve.learning_rates > 0.3] == "exploded")
    best_lr, best_iters = curve.best
    assert best_iters == curve.iterations[curve.reached].min() and best_lr == hi  # faster up to the edge
    row = curve.summary()
    assert row["stable_points"] == reached.sum() and row["points"] == 64
    assert tuple(row) == sensitivity.SUMMARY_COLUMNS


def hand_curve(problem, optimizer, reached, status=None, iterations=None):
    reached = np.asarray(reached, bool)
    k = len(reached)
    iterations = np.where(reached, np.arange(10, 10 + k), 100) if iterations is None else np.asarray(iterations)
    status = np.where(reached, "converged", "max_iters") if status is None else np.asarray(status)
    return SensitivityCurve(problem=problem, optimizer=optimizer, learning_rates=np.geomspace(1e-3, 1, k),
                            iterations=iterations, reached=reached, status=status, max_iters=100, tol=1e-3,
                            wall_time=0.1)


def test_stable_ranges_widest_and_best():
    curve = hand_curve("p", "A", [0, 1, 1, 0, 1, 1, 1, 0], iterations=[100, 9, 5, 100, 7, 5, 6, 100])
    lr = curve.learning_rates
    assert curve.stable_ranges == [(lr[1], lr[2]), (lr[4], lr[6])]
    assert curve.stable_range == (lr[4], lr[6])
    assert curve.stable_decades == pytest.approx(np.log10(lr[6] / lr[4]))
    assert curve.best == (lr[2], 5)  # a tie: the smaller rate
    single = hand_curve("p", "A", [0, 0, 1, 0])
    assert single.stable_range == (single.learning_rates[2],) * 2 and single.stable_decades == 0
    never = hand_curve("p", "A", [0, 0, 0])
    assert never.stable_ranges == [] and never.stable_range is None and never.best is None
    assert np.isnan(never.stable_decades) and never.summary()["stable_low"] is None


@pytest.mark.parametrize("rates, message", [([], "non-empty"), ([0.1, -1e-3], "positive"),
                                            ([0.1, np.nan], "positive"), ([[0.1]], "non-empty")])
def test_bad_grids_raise_before_running(rates, message, monkeypatch):
    monkeypatch.setattr(harness, "convergence_test", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(ValueError, match=message):
        sensitivity.learning_rate_sensitivity(["Adam"], ["booth"], rates)
    with pytest.raises(ValueError, match="points"):
        sensitivity.log_grid(1e-4, 1.0, 1)


def test_plots_draw_curves_shades_and_strips(tmp_path):
    exploded = np.array(["max_iters"] * 2 + ["converged"] * 4 + ["exploded"] * 2)
    curves = [hand_curve("booth", "A", [0, 0, 1, 1, 1, 1, 0, 0], status=exploded),
              hand_curve("booth", "B", [0, 1, 1, 0, 1, 1, 0, 0]),
              hand_curve("quartic", "A", [1] * 8), hand_curve("quartic", "B", [0] * 8)]
    result = Sensitivity(curves=curves, problems=["booth", "quartic"], optimizers=["A", "B"], calls=2, wall_time=1)
    fig = sensitivity.plot_sensitivity(result, "booth", save=tmp_path / "s.png")
    assert isinstance(fig, Figure) and (tmp_path / "s.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.patches) == 3  # one shade per stable range: A has one, B two
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "A: stable 0.0072–0.14 (1.3 dec.)" and labels[1].startswith("B: stable")
    (crosses,) = [line for line in ax.lines if line.get_marker() == "x" and len(line.get_xdata())]  # A's
    np.testing.assert_allclose(crosses.get_xdata(), curves[0].learning_rates[6:])
    never = sensitivity.plot_sensitivity(curves[2:4]).axes[0].get_legend().get_texts()[1].get_text()
    assert never == "B: never within tol"
    grid = sensitivity.plot_sensitivity_grid(result, columns=3)
    assert [a.get_title() for a in grid.axes if a.get_visible()] == ["booth", "quartic"]
    with pytest.raises(ValueError, match="name one with problem="):
        sensitivity.plot_sensitivity(result)
    with pytest.raises(ValueError, match="several problems"):
        sensitivity.plot_sensitivity(curves[1:3])
    with pytest.raises(KeyError, match="the problems are"):
        sensitivity.plot_sensitivity(result, "rosenbrock")


def test_report_section_writes_the_figure_the_sentence_and_the_table(tmp_path):
    curves = [hand_curve("booth", "A", [0, 0, 1, 1, 1, 1, 0, 0]), hand_curve("booth", "B", [0] * 8)]
    result = Sensitivity(curves=curves, problems=["booth"], optimizers=["A", "B"], calls=1, wall_time=2.5)
    section = sensitivity.report_section(result, tmp_path, style={"font.size": 16})
    assert (tmp_path / "sensitivity.png").read_bytes()[:8] == PNG
    text = "\n".join(section.lines())
    assert text.startswith("## Learning-rate sensitivity")
    assert "![Iterations to tolerance against the learning rate](sensitivity.png)" in text
    assert "loss − f_min ≤ 0.001" in text and "8 learning rates" in text and "after 100 iterations" in text
    assert "| booth | A | 0.0072 – 0.14 | 1.29 | 0.0072 | 12 |" in text  # 3 of 7 steps of 3 decades
    assert "| booth | B | none |  |  |  |" in text


def test_a_problem_beside_others_gives_its_own_curve_for_rules_that_are_not_elementwise():
    """Adafactor averages over the variable: quartic's rows must not see another problem's coordinates."""
    rates = sensitivity.log_grid(1e-2, 1.0, 6)
    mixed = sensitivity.learning_rate_sensitivity(["Adafactor"], ["booth", "quartic"], rates, max_iters=200)
    alone = sensitivity.learning_rate_sensitivity(["Adafactor"], ["quartic"], rates, max_iters=200)
    a, b = mixed.curve("quartic", "Adafactor"), alone.curve("quartic", "Adafactor")
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_array_equal(a.status, b.status)
