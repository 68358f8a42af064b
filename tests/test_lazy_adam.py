"""tfopt.LazyAdam: touched rows only for tf.IndexedSlices, tfopt.Adam for dense gradients.

Rule (tfopt/optimizers/lazy_adam.py; TFA's LazyAdam with the paper's epsilon), slots m, v from 0, t the global step:
    sparse, rows r:  m[r] <- b1*m[r] + (1-b1)*g_r;  v[r] <- b2*v[r] + (1-b2)*g_r^2
                     x[r] <- x[r] - lr * (m[r]/(1-b1^t)) / (sqrt(v[r]/(1-b2^t)) + eps);  other rows unchanged
    dense: tfopt.Adam.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose, assert_array_equal

import tfopt
from tfopt.optimizers.adam import Adam
from tfopt.optimizers.lazy_adam import LazyAdam

STEPS = [([1, 4, 1, 7], 1), ([2, 2, 8], 2), ([4, 0], 3), ([7], 4), ([1, 8, 3], 5)]


def numpy_lazy_adam(x, steps, *, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, tfa_epsilon=False):
    """The row-wise definition in float64: ``steps`` are ``(indices, values)``; repeated indices are summed.

    ``tfa_epsilon``: TFA's epsilon-hat form ``lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``.
    """
    x = np.array(x, np.float64)
    m, v = np.zeros_like(x), np.zeros_like(x)
    for t, (indices, values) in enumerate(steps, 1):
        g = np.zeros_like(x)
        np.add.at(g, indices, values)
        r = np.unique(indices)
        m[r] = beta_1 * m[r] + (1 - beta_1) * g[r]
        v[r] = beta_2 * v[r] + (1 - beta_2) * g[r] ** 2
        if tfa_epsilon:
            x[r] = x[r] - learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m[r] / (np.sqrt(v[r]) + epsilon)
        else:
            x[r] = x[r] - learning_rate * (m[r] / (1 - beta_1**t)) / (np.sqrt(v[r] / (1 - beta_2**t)) + epsilon)
    return x, m, v


def sparse_steps(rng, rows=9, cols=3):
    return [(np.array(ids), rng.normal(size=(len(ids), cols))) for ids, _ in STEPS]


def run_sparse(opt, x0, steps, dtype=tf.float64):
    x = tf.Variable(x0.astype(dtype.as_numpy_dtype))
    for indices, values in steps:
        opt.apply_gradients([(tf.IndexedSlices(tf.constant(values, dtype), tf.constant(indices),
                                               tf.constant(x0.shape)), x)])
    return x


def test_defaults_are_tfa():
    opt = LazyAdam()
    assert (float(opt.learning_rate), float(opt.beta_1), float(opt.beta_2), float(opt.epsilon)) == (
        0.001, 0.9, 0.999, 1e-7)
    assert LazyAdam.lazy and not Adam.lazy and issubclass(LazyAdam, Adam)
    assert LazyAdam().slot_names == ("m", "v")


@pytest.mark.parametrize("kwargs", [{}, {"learning_rate": 0.1, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}],
                         ids=str)
def test_float64_sparse_matches_row_wise_numpy_reference(kwargs):
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(9, 3))
    steps = sparse_steps(rng)
    opt = LazyAdam(**kwargs)
    x = run_sparse(opt, x0, steps)
    want_x, want_m, want_v = numpy_lazy_adam(x0, steps, **kwargs)
    assert_allclose(x.numpy(), want_x, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "m").numpy(), want_m, rtol=1e-12, atol=1e-300)
    assert_allclose(opt.get_slot(x, "v").numpy(), want_v, rtol=1e-12, atol=1e-300)


def test_sparse_touches_only_given_rows():
    """Rows not in the indices keep their variable, m and v bit for bit, also after earlier steps moved them."""
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(9, 3)).astype(np.float32)
    x = tf.Variable(x0)
    opt = LazyAdam(0.1)
    seen = set()
    for indices, values in sparse_steps(rng):
        before = [x.numpy(), *(opt.get_slot(x, n).numpy() for n in ("m", "v"))] if seen else None
        opt.apply_gradients([(tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(indices),
                                               tf.constant(x0.shape)), x)])
        untouched = [i for i in range(9) if i not in set(indices)]
        after = [x.numpy(), *(opt.get_slot(x, n).numpy() for n in ("m", "v"))]
        if before is None:
            assert_array_equal(after[0][untouched], x0[untouched])
            for slot in after[1:]:
                assert_array_equal(slot[untouched], 0.0)
        else:
            for old, new in zip(before, after):
                assert_array_equal(new[untouched], old[untouched])
        assert np.all(after[0][sorted(set(indices))] != (before or [x0])[0][sorted(set(indices))])
        seen |= set(indices.tolist())


def test_sparse_differs_from_adam_on_the_dense_gradient():
    """The point of the rule: Adam also decays (and moves) the rows a step does not touch."""
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(9, 3))
    steps = sparse_steps(rng)
    lazy = run_sparse(LazyAdam(0.1), x0, steps)
    dense = tf.Variable(x0)
    adam = Adam(0.1)
    for indices, values in steps:
        adam.apply_gradients([(tf.convert_to_tensor(tf.IndexedSlices(
            tf.constant(values), tf.constant(indices), tf.constant(x0.shape))), dense)])
    assert not np.allclose(lazy.numpy(), dense.numpy())


@pytest.mark.parametrize("fused", [None, False, True])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.float16])
def test_dense_is_adam_bit_for_bit(dtype, fused):
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=(4, 5))
    ours, adams = tf.Variable(x0, dtype=dtype), tf.Variable(x0, dtype=dtype)
    lazy_opt, adam_opt = LazyAdam(0.01, fused=fused), Adam(0.01, fused=fused)
    for _ in range(5):
        g = tf.constant(rng.normal(size=(4, 5)), dtype)
        lazy_opt.apply_gradients([(g, ours)])
        adam_opt.apply_gradients([(g, adams)])
    assert_array_equal(ours.numpy(), adams.numpy())
    for name in ("m", "v"):
        assert_array_equal(lazy_opt.get_slot(ours, name).numpy(), adam_opt.get_slot(adams, name).numpy())


def test_sparse_full_rows_every_step_is_adam():
    """When every step touches every row once, lazy and dense agree (float64, 1e-12)."""
    rng = np.random.default_rng(4)
    x0 = rng.normal(size=(5, 2))
    steps = [(rng.permutation(5), rng.normal(size=(5, 2))) for _ in range(4)]
    x = run_sparse(LazyAdam(0.05), x0, steps)
    dense = tf.Variable(x0)
    adam = Adam(0.05)
    for indices, values in steps:
        adam.apply_gradients([(tf.convert_to_tensor(tf.IndexedSlices(
            tf.constant(values), tf.constant(indices), tf.constant(x0.shape))), dense)])
    assert_allclose(x.numpy(), dense.numpy(), rtol=1e-12)


def test_against_tfa_epsilon_hat_form():
    """TFA's LazyAdam places epsilon as Keras does (eps hat = eps * sqrt(1 - b2^t)). The two differ by about
    eps / sqrt(v_hat) relative to the step: with the default eps = 1e-7 and unit-normal gradients (some tiny) the
    total movement differs by < 1e-3 relative (3.4e-4 measured), the variables (of order 1) by < 2e-6 absolute
    (1.4e-6 measured)."""
    rng = np.random.default_rng(5)
    x0 = rng.normal(size=(9, 3))
    steps = sparse_steps(rng)
    x = run_sparse(LazyAdam(0.01), x0, steps)
    tfa_x, _, _ = numpy_lazy_adam(x0, steps, learning_rate=0.01, tfa_epsilon=True)
    assert_allclose(x.numpy() - x0, tfa_x - x0, rtol=1e-3)
    assert_allclose(x.numpy(), tfa_x, rtol=0, atol=2e-6)


def test_tf_function_and_half_precision():
    """Inside tf.function (no retrace across steps), float16: the same rows move as eagerly in float32 arithmetic."""
    rng = np.random.default_rng(6)
    x0 = rng.normal(size=(9, 3))
    steps = sparse_steps(rng)
    x = tf.Variable(x0.astype(np.float16))
    opt = LazyAdam(0.01)
    opt.build([x])  # (slots made outside: a first trace that creates variables is traced again)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float16), tf.TensorSpec([None], tf.int64)])
    def step(values, indices):
        opt.apply_gradients([(tf.IndexedSlices(values, indices, tf.constant([9, 3])), x)])

    for indices, values in steps:
        step(tf.constant(values, tf.float16), tf.constant(indices, tf.int64))
    assert step.experimental_get_tracing_count() == 1
    want, _, _ = numpy_lazy_adam(x0.astype(np.float16).astype(np.float64),
                                 [(i, v.astype(np.float16).astype(np.float64)) for i, v in steps], learning_rate=0.01)
    assert_allclose(x.numpy().astype(np.float64), want, rtol=2e-3)
    assert opt.get_slot(x, "m").dtype == tf.float16


def test_conformance_kit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        report = tfopt.testing.check_optimizer(LazyAdam, skip=("mirrored", "xla", "keras"))
    assert "sparse" in report.checked


@pytest.mark.parametrize("kwargs, name", [
    ({"beta_1": 1.0}, "beta_1"), ({"beta_2": -0.1}, "beta_2"), ({"epsilon": -1e-7}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"), ({"learning_rate": -1.0}, "learning"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LazyAdam(**kwargs)
