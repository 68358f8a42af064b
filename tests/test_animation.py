"""tfopt.lab.animation: the GIF has the frames asked for, each one different, runs drawn where they are."""

import types

import numpy as np
import pytest
from PIL import Image

from tfopt.lab import animation, problems
from tfopt.lab.results import ConvergenceResult


def result(path, problem, status="converged"):
    path = np.asarray(path, dtype=np.float64).reshape(len(path), -1)
    losses = np.asarray(problem.loss(path), dtype=np.float64)
    return ConvergenceResult(status=status, iterations=len(path), path=path, losses=losses, x_final=path[-1],
                             loss_final=float(losses[-1]), nearest_minimum=None, distance_to_minimum=None,
                             wall_time=0.1)


def frames_of(path):
    with Image.open(path) as gif:
        frames, durations = [], []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
            durations.append(gif.info["duration"])
    return frames, durations


@pytest.mark.parametrize("updates, frames, spacing", [(2000, 100, "log"), (150, 100, "log"), (150, 30, "linear"),
                                                      (20, 100, "log"), (0, 10, "log")])
def test_frame_steps_cover_the_run_in_at_most_frames_steps(updates, frames, spacing):
    steps = animation.frame_steps(updates, frames, spacing)
    assert steps[0] == 0 and steps[-1] == updates and len(steps) <= frames
    assert np.all(np.diff(steps) > 0)
    if updates + 1 <= frames:
        np.testing.assert_array_equal(steps, np.arange(updates + 1))
    elif spacing == "log":
        assert len(steps) >= frames - 2
        np.testing.assert_array_equal(steps[:6], np.arange(6))  # the first updates, one by one
    else:
        assert np.ptp(np.diff(steps)) <= 1  # evenly spaced, to rounding


def test_2d_gif_has_distinct_frames_with_the_run_heads_moving(tmp_path):
    himmelblau = problems.himmelblau
    t = np.linspace(0, 1, 150)[:, None]
    runs = {"A lr=0.1": result((1 - t) * np.array([-4.0, 0.0]) + t * np.array([3.0, 2.0]), himmelblau),
            "B lr=1": result([[-4.0, 1.0], [-5.0, 3.0], [40.0, 80.0]], himmelblau, status="exploded")}
    path = animation.animate_paths(runs, himmelblau, tmp_path / "runs.gif", frames=30, fps=10, pause=2.0)
    assert path == tmp_path / "runs.gif" and path.stat().st_size < 300_000
    frames, durations = frames_of(path)
    assert len(frames) == 30 and frames[0].shape == (403, 460, 3)  # 6.4 x 5.6 in at 72 dpi
    for a, b in zip(frames, frames[1:]):
        assert np.any(a != b)  # every frame shows A one step further
    changed = np.any(frames[0] != frames[-1], axis=-1)
    assert 0.001 < changed.mean() < 0.2  # the trails moved; the background did not
    assert durations[0] == 100 and durations[-1] == 100 + 2000


def test_1d_gif_moves_points_along_the_curve(tmp_path):
    quartic = problems.quartic
    runs = {"A": result(np.linspace(2.0, -1.125, 40), quartic), "B": result(np.full(40, 0.0), quartic, "max_iters")}
    frames, _ = frames_of(animation.animate_paths(runs, quartic, tmp_path / "q.gif", frames=100, dpi=50))
    assert len(frames) == 41  # 0 .. 40 updates, each shown
    assert all(np.any(a != b) for a, b in zip(frames[:-1], frames[1:]))


def test_bad_arguments_raise_before_drawing(tmp_path):
    himmelblau = problems.himmelblau
    runs = {"A": result([[-4.0, 0.0], [-3.0, 0.0]], himmelblau)}
    with pytest.raises(ValueError, match="does not end in .gif"):
        animation.animate_paths(runs, himmelblau, tmp_path / "a.png")
    with pytest.raises(ValueError, match="dim 1 or 2"):
        animation.animate_paths(runs, types.SimpleNamespace(name="cube", dim=3), tmp_path / "a.gif")
    no_path = {"A": ConvergenceResult("converged", 1, None, None, np.zeros(2), 0.0, None, None, 0.0)}
    with pytest.raises(ValueError, match="record_path=True"):
        animation.animate_paths(no_path, himmelblau, tmp_path / "a.gif")
    with pytest.raises(ValueError, match="frames"):
        animation.animate_paths(runs, himmelblau, tmp_path / "a.gif", frames=1)
    with pytest.raises(ValueError, match="spacing"):
        animation.frame_steps(10, 5, "cubic")
    assert not (tmp_path / "a.gif").exists()
