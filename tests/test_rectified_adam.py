"""tfopt.RectifiedAdam against TensorFlow Addons' golden values and a float64 NumPy reference.

Rule (tfopt/optimizers/rectified_adam.py; TFA's RectifiedAdam), slots m, v (and vhat) starting at 0, t the 1-based step:
    m <- b1*m + (1-b1)*g;  v <- b2*v + (1-b2)*g^2;  vhat <- max(vhat, v) (amsgrad)
    rho_inf = 2/(1-b2) - 1;  rho_t = rho_inf - 2 t b2^t / (1-b2^t)
    r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
    x <- x - lr_t * (r_t * m_hat / (sqrt(v_hat) + eps) if rho_t >= sma_threshold else m_hat)
    lr_t: TFA's warmup (linear up for W = total_steps*warmup_proportion steps, then linear down to min_lr)
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.rectified_adam import RectifiedAdam


def numpy_radam(x, grads, *, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                sma_threshold=5.0, total_steps=0, warmup_proportion=0.1, min_lr=0.0, weight_decay=0.0):
    """TFA's _resource_apply_dense, transcribed in float64 NumPy (weight decay TFA's coupled form)."""
    x = np.array(x, np.float64)
    m, v, vhat = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for t, g in enumerate(grads, 1):
        lr = learning_rate
        if total_steps > 0:
            warmup = total_steps * warmup_proportion
            decay_steps = max(total_steps - warmup, 1)
            lr = lr * t / warmup if t <= warmup else lr + (min_lr - lr) / decay_steps * min(t - warmup, decay_steps)
        sma_inf = 2 / (1 - beta_2) - 1
        sma_t = sma_inf - 2 * t * beta_2**t / (1 - beta_2**t)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        vhat = np.maximum(vhat, v)
        m_hat = m / (1 - beta_1**t)
        v_hat = np.sqrt((vhat if amsgrad else v) / (1 - beta_2**t))
        if sma_t >= sma_threshold:
            r = np.sqrt((sma_t - 4) / (sma_inf - 4) * (sma_t - 2) / (sma_inf - 2) * sma_inf / sma_t)
            u = r * m_hat / (v_hat + epsilon)
        else:
            u = m_hat
        x = x - lr * (u + weight_decay * x)
    return x, m, v, vhat


# ------------------------------------------------------------------------------------------ TFA's golden values
def run_dense_sample(iterations, opt):
    """TFA's run_dense_sample (rectified_adam_test.py): two float32 variables, constant gradients."""
    var_0, var_1 = tf.Variable([1.0, 2.0]), tf.Variable([3.0, 4.0])
    grads = [tf.constant([0.1, 0.2]), tf.constant([0.03, 0.04])]
    for _ in range(iterations):
        opt.apply_gradients(list(zip(grads, [var_0, var_1])))
    return var_0.numpy(), var_1.numpy()


def run_sparse_sample(iterations, opt):
    """TFA's run_sparse_sample: IndexedSlices touching row 0 of var_0 and row 1 of var_1."""
    var_0, var_1 = tf.Variable([1.0, 2.0]), tf.Variable([3.0, 4.0])
    grads = [tf.IndexedSlices(tf.constant([0.1]), tf.constant([0]), tf.constant([2])),
             tf.IndexedSlices(tf.constant([0.04]), tf.constant([1]), tf.constant([2]))]
    for _ in range(iterations):
        opt.apply_gradients(list(zip(grads, [var_0, var_1])))
    return var_0.numpy(), var_1.numpy()


# TFA asserts these with atol=2e-4; tfopt meets them to 1e-6 (float32 rounding of the 6-digit values).
TFA_ATOL, OUR_ATOL = 2e-4, 1e-6

GOLDEN = [  # (name, run, iterations, kwargs, TFA's expected)
    ("dense", run_dense_sample, 100, {}, [[0.985769, 1.985269], [2.986119, 3.986068]]),
    ("sparse", run_sparse_sample, 200, {}, [[0.959333, 2.0], [3.0, 3.959632]]),
    ("dense_amsgrad", run_dense_sample, 100, {"amsgrad": True}, [[0.985769, 1.985269], [2.986119, 3.986068]]),
    ("sparse_amsgrad", run_sparse_sample, 200, {"amsgrad": True}, [[0.959333, 2.0], [3.0, 3.959632]]),
    ("dense_weight_decay", run_dense_sample, 100, {"weight_decay": 0.01},
     [[0.984775, 1.983276], [2.983125, 3.982076]]),
    ("dense_warmup", run_dense_sample, 100, {"total_steps": 100, "warmup_proportion": 0.1, "min_lr": 1e-5},
     [[0.994062, 1.993912], [2.994167, 3.994152]]),
    ("sparse_warmup", run_sparse_sample, 200, {"total_steps": 200, "warmup_proportion": 0.1, "min_lr": 1e-5},
     [[0.982629, 2.0], [3.0, 3.982674]]),
]


@pytest.mark.parametrize("name, run, iterations, kwargs, expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_tfa_golden_values(name, run, iterations, kwargs, expected):
    got = run(iterations, RectifiedAdam(learning_rate=1e-3, **kwargs))
    for variable, want in zip(got, expected):
        assert_allclose(variable, want, rtol=0, atol=TFA_ATOL)
        assert_allclose(variable, want, rtol=0, atol=OUR_ATOL)


@pytest.mark.parametrize("run, iterations, expected", [
    (run_dense_sample, 100, [[0.993126, 1.992901], [2.993283, 3.993261]]),
    (run_sparse_sample, 150, [[0.988156, 2.0], [3.0, 3.988291]]),
], ids=["dense", "sparse"])
def test_tfa_golden_values_with_lookahead(run, iterations, expected):
    """TFA's dense/sparse_sample_with_lookahead ("Ranger"), with tfopt.Lookahead."""
    got = run(iterations, tfopt.Lookahead(RectifiedAdam(1e-3, beta_1=0.95), sync_period=6, slow_step_size=0.45))
    for variable, want in zip(got, expected):
        assert_allclose(variable, want, rtol=0, atol=OUR_ATOL)


def test_tfa_golden_sparse_weight_decay_in_touched_rows():
    """TFA's sparse_sample_with_weight_decay ([[0.957368, 2.0], [3.0, 3.951673]]) decays only the touched rows;
    tfopt's weight decay, like its sparse steps, is the dense one, so the untouched entries decay too. The touched
    entries are TFA's within 5e-6 (float32: tfopt decays before the update, TFA within it; TFA's atol 2e-4)."""
    var_0, var_1 = run_sparse_sample(200, RectifiedAdam(learning_rate=1e-3, weight_decay=0.01))
    assert_allclose([var_0[0], var_1[1]], [0.957368, 3.951673], rtol=0, atol=5e-6)
    assert_allclose([var_0[1], var_1[0]], [2.0 * (1 - 1e-5) ** 200, 3.0 * (1 - 1e-5) ** 200], rtol=1e-5)  # (float32)


def test_defaults_are_tfa():
    opt = RectifiedAdam()
    got = {name: float(getattr(opt, name)) for name in (
        "learning_rate", "beta_1", "beta_2", "epsilon", "sma_threshold", "total_steps", "warmup_proportion", "min_lr")}
    assert got == {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "sma_threshold": 5.0,
                   "total_steps": 0.0, "warmup_proportion": 0.1, "min_lr": 0.0}
    assert opt.amsgrad is False and opt.weight_decay is None
    assert opt.slot_names == ("m", "v") and RectifiedAdam(amsgrad=True).slot_names == ("m", "v", "vhat")


# ------------------------------------------------------------------------------------------ float64 reference
VARIANTS = [
    {},
    {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3},   # rectifies from step 4 on
    {"amsgrad": True, "beta_2": 0.9},
    {"total_steps": 20, "warmup_proportion": 0.25, "min_lr": 1e-4, "learning_rate": 0.01, "beta_2": 0.9},
    {"total_steps": 8, "warmup_proportion": 0.0, "min_lr": 0.0, "beta_2": 0.9, "sma_threshold": 4.0},
    {"weight_decay": 0.1, "total_steps": 10, "learning_rate": 0.01, "beta_2": 0.9},
]


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(25)]
    x = tf.Variable(x0)
    opt = RectifiedAdam(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, m, v, vhat = numpy_radam(x0, grads, **kwargs)
    assert np.isfinite(want_x).all()
    assert_allclose(x.numpy(), want_x, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "m").numpy(), m, rtol=1e-12)
    assert_allclose(opt.get_slot(x, "v").numpy(), v, rtol=1e-12)
    if kwargs.get("amsgrad"):
        assert_allclose(opt.get_slot(x, "vhat").numpy(), vhat, rtol=1e-12)


def test_unrectified_steps_are_sgd_with_momentum():
    """With b2 = 0.999, rho_t < 5 for t <= 5 (rho_1 = 1): those steps are lr * m_hat."""
    x = tf.Variable([1.0, -2.0], dtype=tf.float64)
    opt = RectifiedAdam(0.1)
    opt.apply_gradients([(tf.constant([0.5, 3.0], tf.float64), x)])
    assert_allclose(x.numpy(), [1.0 - 0.05, -2.0 - 0.3], rtol=1e-15)


def test_sparse_equals_dense():
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(5, 2))
    a, b = tf.Variable(x0), tf.Variable(x0)
    opt_a, opt_b = RectifiedAdam(0.01), RectifiedAdam(0.01)
    for _ in range(8):
        grad = tf.IndexedSlices(tf.constant(rng.normal(size=(3, 2))), tf.constant([0, 3, 0]), tf.constant([5, 2]))
        opt_a.apply_gradients([(grad, a)])
        opt_b.apply_gradients([(tf.convert_to_tensor(grad), b)])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("factory", [RectifiedAdam, lambda: RectifiedAdam(amsgrad=True, total_steps=10)],
                         ids=["default", "amsgrad-warmup"])
def test_conformance_kit(factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(factory, skip=("mirrored", "xla", "keras"))


@pytest.mark.parametrize("kwargs, name", [
    ({"beta_1": 1.0}, "beta_1"), ({"beta_2": -0.1}, "beta_2"), ({"epsilon": -1e-7}, "epsilon"),
    ({"learning_rate": -1.0}, "learning"), ({"sma_threshold": -1.0}, "sma_threshold"),
    ({"sma_threshold": float("nan")}, "sma_threshold"), ({"total_steps": -1}, "total_steps"),
    ({"warmup_proportion": 1.5}, "warmup_proportion"), ({"min_lr": -1e-5}, "min_lr"), ({"amsgrad": 1}, "amsgrad"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RectifiedAdam(**kwargs)
