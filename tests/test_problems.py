"""Tests for tfopt.problems: values, minima, shapes, dtypes, batching, lookup."""

import dataclasses
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfopt import problems  # noqa: E402

PROBLEMS = list(problems.ALL.values())
POLYNOMIAL = ["quartic", "himmelblau", "rosenbrock", "beale", "booth", "goldstein_price", "six_hump_camel"]


def by_name(names):
    return [pytest.param(problems.ALL[n], id=n) for n in names]


ALL_PARAMS = by_name(problems.names())

# Tolerances, float64 throughout.
F_MIN_TOL = 1e-15  # |f(minimiser) - f_min| <= F_MIN_TOL * max(1, |f_min|)
GRAD_TOL = 1e-9  # |grad f(minimiser)|_inf at the float64-rounded minimiser
REF_RTOL = 1e-12  # agreement with the NumPy reference formulas below
REF_ATOL = 1e-12  # only matters where f is ~0 (cos/exp cancellation)


# ---------------------------------------------------------------------------
# Independent NumPy float64 reference formulas (textbook form, ** powers).
# ---------------------------------------------------------------------------


def np_quartic(p):
    x = p[..., 0]
    return 2 * x**4 + 3 * x**3 + 2


def np_himmelblau(p):
    x, y = p[..., 0], p[..., 1]
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def np_rosenbrock(p):
    x, y = p[..., 0], p[..., 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def np_beale(p):
    x, y = p[..., 0], p[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def np_booth(p):
    x, y = p[..., 0], p[..., 1]
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def np_rastrigin(p):
    return 10 * p.shape[-1] + np.sum(p**2 - 10 * np.cos(2 * np.pi * p), axis=-1)


def np_ackley(p):
    x, y = p[..., 0], p[..., 1]
    return (
        -20 * np.exp(-0.2 * np.sqrt(0.5 * (x**2 + y**2)))
        - np.exp(0.5 * (np.cos(2 * np.pi * x) + np.cos(2 * np.pi * y)))
        + np.e
        + 20
    )


def np_goldstein_price(p):
    x, y = p[..., 0], p[..., 1]
    a = 1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x**2 - 14 * y + 6 * x * y + 3 * y**2)
    b = 30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x**2 + 48 * y - 36 * x * y + 27 * y**2)
    return a * b


def np_six_hump_camel(p):
    x, y = p[..., 0], p[..., 1]
    return (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2


REFERENCE = {
    "quartic": np_quartic,
    "himmelblau": np_himmelblau,
    "rosenbrock": np_rosenbrock,
    "beale": np_beale,
    "booth": np_booth,
    "rastrigin": np_rastrigin,
    "ackley": np_ackley,
    "goldstein_price": np_goldstein_price,
    "six_hump_camel": np_six_hump_camel,
}


def random_points(problem, n, seed=0):
    """n uniform points in the problem's domain, float64, shape [n, dim]."""
    rng = np.random.default_rng(seed)
    lo = np.array([d[0] for d in problem.domain])
    hi = np.array([d[1] for d in problem.domain])
    return lo + (hi - lo) * rng.random((n, problem.dim))


def f64(problem, x):
    return problem.loss(tf.constant(x, tf.float64)).numpy()


def grad64(problem, x):
    x = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        f = problem.loss(x)
    return tape.gradient(f, x).numpy()


# ---------------------------------------------------------------------------
# Registry and metadata.
# ---------------------------------------------------------------------------


def test_registry_order_and_names():
    names = problems.names()
    assert names[:2] == ["quartic", "himmelblau"]
    assert names == list(problems.ALL)
    assert set(REFERENCE) == set(names)
    for name in [
        "quartic",
        "himmelblau",
        "rosenbrock",
        "beale",
        "booth",
        "rastrigin",
        "ackley",
        "goldstein_price",
        "six_hump_camel",
    ]:
        assert getattr(problems, name) is problems.ALL[name]
        assert problems.ALL[name].name == name


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_metadata_shapes(problem):
    assert isinstance(problem, problems.Problem)
    assert problem.dim == len(problem.domain) == len(problem.default_init)
    assert len(problem.minima) >= 1
    for m in problem.minima:
        assert len(m) == problem.dim
    assert isinstance(problem.f_min, float)
    assert problem.description.startswith("f(")


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_minima_and_init_inside_domain(problem):
    for point in list(problem.minima) + [problem.default_init]:
        for v, (lo, hi) in zip(point, problem.domain):
            assert lo < v < hi, (point, problem.domain)


def test_problem_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        problems.himmelblau.f_min = 1.0


def test_get_lookup():
    assert problems.get("himmelblau") is problems.himmelblau
    assert problems.get("HimmelBlau") is problems.himmelblau
    assert problems.get("six-hump-camel") is problems.six_hump_camel
    assert problems.get("Goldstein-Price") is problems.goldstein_price
    assert problems.get(problems.rosenbrock) is problems.rosenbrock
    for name in problems.names():
        assert problems.get(name) is problems.ALL[name]


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        problems.get("himmelblow")
    message = str(info.value)
    assert "himmelblow" in message
    for name in problems.names():
        assert name in message


def test_get_wrong_type():
    with pytest.raises(TypeError):
        problems.get(3)


# ---------------------------------------------------------------------------
# Values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_value_at_minima_is_f_min(problem):
    values = f64(problem, np.array(problem.minima))
    tol = F_MIN_TOL * max(1.0, abs(problem.f_min))
    np.testing.assert_allclose(values, problem.f_min, rtol=0, atol=tol)


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_gradient_vanishes_at_minima(problem):
    for m in problem.minima:
        g = grad64(problem, np.array(m))
        assert np.all(np.isfinite(g)), (m, g)
        assert np.max(np.abs(g)) <= GRAD_TOL, (m, g)


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_f_min_is_global_minimum_on_a_grid(problem):
    # Dense grid over the plotting box: nothing lies below f_min.
    axes = [np.linspace(lo, hi, 301 if problem.dim == 2 else 20001) for lo, hi in problem.domain]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    values = f64(problem, grid)
    assert values.min() >= problem.f_min - 1e-12 * max(1.0, abs(problem.f_min))


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_default_init_is_worse_than_f_min(problem):
    value = f64(problem, np.array(problem.default_init))
    assert value > problem.f_min + 1e-3


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_matches_numpy_reference(problem):
    points = np.concatenate(
        [
            random_points(problem, 500, seed=1234),
            np.array(problem.minima),
            np.array([problem.default_init]),
        ]
    )
    expected = REFERENCE[problem.name](points)
    np.testing.assert_allclose(f64(problem, points), expected, rtol=REF_RTOL, atol=REF_ATOL)


def test_quartic_guide_facts():
    # The TensorFlow guide's loss: minimum at -9/8, flat inflection point at 0.
    q = problems.quartic
    assert q.minima == ((-9 / 8,),)
    assert q.f_min == 2 * (9 / 8) ** 4 - 3 * (9 / 8) ** 3 + 2 == 0.93212890625
    assert f64(q, np.array([0.0])) == 2.0
    assert grad64(q, np.array([0.0]))[0] == 0.0
    assert q.default_init == (2.0,)
    assert f64(q, np.array([2.0])) == 58.0


def test_himmelblau_minima_match_design_digits():
    design = [(3, 2), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)]
    np.testing.assert_allclose(problems.himmelblau.minima, design, atol=1e-6)
    assert problems.himmelblau.default_init == (-4.0, 0.0)


# ---------------------------------------------------------------------------
# Shapes, dtypes, compilation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ALL_PARAMS)
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)], ids=str)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda d: d.name)
def test_output_shape_and_dtype(problem, batch_shape, dtype):
    n = int(np.prod(batch_shape))
    x = random_points(problem, n).reshape(batch_shape + (problem.dim,))
    out = problem.loss(tf.constant(x, dtype))
    assert out.shape == batch_shape
    assert out.dtype == dtype


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_float32_close_to_float64(problem):
    x = random_points(problem, 50).astype(np.float32)
    out32 = problem.loss(tf.constant(x)).numpy()
    out64 = f64(problem, x.astype(np.float64))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)


def test_integer_input_becomes_float32():
    out = problems.booth.loss(tf.constant([1, 3]))
    assert out.dtype == tf.float32
    assert out.numpy() == 0.0


def test_variable_input_and_call():
    v = tf.Variable([3.0, 2.0], dtype=tf.float64)
    with tf.GradientTape() as tape:
        f = problems.himmelblau(v)
    assert f.numpy() == 0.0
    np.testing.assert_array_equal(tape.gradient(f, v).numpy(), [0.0, 0.0])


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_tf_function_and_xla_match_eager(problem):
    x = tf.constant(random_points(problem, 64), tf.float32)

    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = problem.loss(x)
        return f, tape.gradient(f, x)

    f_eager, g_eager = value_and_grad(x)
    for jit in (False, True):
        f_c, g_c = tf.function(value_and_grad, jit_compile=jit)(x)
        np.testing.assert_allclose(f_c.numpy(), f_eager.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g_c.numpy(), g_eager.numpy(), rtol=1e-4, atol=1e-4)
        assert np.all(np.isfinite(g_c.numpy()))


@pytest.mark.parametrize("problem", ALL_PARAMS)
def test_gradient_matches_finite_differences(problem):
    x = random_points(problem, 20, seed=7)
    g = grad64(problem, x)
    h = 1e-6
    for i in range(problem.dim):
        e = np.zeros(problem.dim)
        e[i] = h
        fd = (f64(problem, x + e) - f64(problem, x - e)) / (2 * h)
        scale = np.maximum(1.0, np.abs(g[:, i]))
        assert np.all(np.abs(fd - g[:, i]) <= 1e-5 * scale), (fd, g[:, i])


# ---------------------------------------------------------------------------
# Batched evaluation is bit-identical to row-by-row evaluation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("problem", by_name(POLYNOMIAL))
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=lambda d: d.name)
def test_batch_bit_identical_to_rows(problem, dtype):
    x = tf.constant(random_points(problem, 17, seed=3), dtype)

    def value_and_grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            f = problem.loss(x)
        return f.numpy(), tape.gradient(f, x).numpy()

    f_batch, g_batch = value_and_grad(x)
    f_nested, _ = value_and_grad(tf.reshape(x[:16], (4, 4, problem.dim)))
    for i in range(x.shape[0]):
        f_row, g_row = value_and_grad(x[i])
        assert f_row.tobytes() == f_batch[i].tobytes(), i
        assert g_row.tobytes() == g_batch[i].tobytes(), i
    assert f_nested.reshape(-1).tobytes() == f_batch[:16].tobytes()


@pytest.mark.parametrize("problem", by_name(["rastrigin", "ackley"]))
def test_batch_close_to_rows_transcendental(problem):
    # cos/exp kernels may differ in the last bit between vector and scalar paths.
    x = tf.constant(random_points(problem, 17, seed=3), tf.float64)
    f_batch = problem.loss(x).numpy()
    f_rows = np.array([problem.loss(x[i]).numpy() for i in range(17)])
    np.testing.assert_allclose(f_rows, f_batch, rtol=1e-14, atol=1e-14)


def test_large_batch():
    x = tf.constant(random_points(problems.himmelblau, 10000), tf.float32)
    for problem in PROBLEMS:
        if problem.dim == 2:
            assert problem.loss(x).shape == (10000,)


def test_ackley_is_exactly_zero_at_origin_in_float32():
    x = tf.zeros([2], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        f = problems.ackley.loss(x)
    assert f.numpy() == 0.0
    np.testing.assert_array_equal(tape.gradient(f, x).numpy(), [0.0, 0.0])
    assert math.isclose(problems.ackley.loss(tf.constant([1e-30, 0.0])).numpy(), 0.0, abs_tol=1e-6)
