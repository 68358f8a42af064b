"""tfopt.Ftrl against Keras 3's Ftrl and a float64 NumPy reference.

Rule (tfopt/optimizers/ftrl.py; Keras's arithmetic): Keras's accumulator n starts at n0 = initial_accumulator_value;
tfopt's slot is S = n - n0 (slots start at 0), and ``linear`` is z:
    g' = g + 2*l2s*x;  n = S + n0;  S <- S + g^2;  n' = S + n0
    z <- z + g' - (n'^p - n^p)/lr * x;   x <- (clip(z, -l1, l1) - z) / (n'^p/lr + 2*(l2 + beta/(2*lr)))
with p = -learning_rate_power.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import keras_defaults, lockstep, max_relative_difference, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.ftrl import Ftrl

VARIANTS = [
    {},
    {"learning_rate": 0.1, "learning_rate_power": -0.7, "initial_accumulator_value": 0.5,
     "l1_regularization_strength": 0.01, "l2_regularization_strength": 0.01,
     "l2_shrinkage_regularization_strength": 0.01, "beta": 0.5},
    {"learning_rate": 0.05, "initial_accumulator_value": 0.0, "l1_regularization_strength": 0.1},
]


def test_defaults_are_keras():
    assert tfopt_defaults(Ftrl) == keras_defaults(keras.optimizers.Ftrl) == {
        "learning_rate": 0.001, "learning_rate_power": -0.5, "initial_accumulator_value": 0.1,
        "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
        "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0}


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_matches_keras_over_100_steps(kwargs):
    """Within 1e-5 relative (seen: 6.1e-7 with the defaults, 5.4e-7 with every term on), bit for bit with n0 = 0
    (the third variant). Two roundings differ from Keras's: tfopt keeps S = n - n0 and forms ``S + n0`` each step
    where Keras keeps the rounded running n, and the base applies ``x - delta`` with ``delta = x - x_new``, which
    need not give ``x_new`` to the last bit (FTRL sets x rather than stepping it). Slots: n = S + n0, and z."""
    ours_opt, keras_opt = Ftrl(**kwargs), keras.optimizers.Ftrl(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt)
    initial = np.float32(keras_opt.initial_accumulator_value)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert max_relative_difference(x.numpy(), numpy_of(y)) <= 1e-5, f"variable {i}"
        accumulator = ours_opt.get_slot(x, "sum_of_squares").numpy() + initial
        assert max_relative_difference(accumulator, numpy_of(keras_opt._accumulators[i])) <= 1e-5, f"slot {i}"
        linear = ours_opt.get_slot(x, "linear").numpy()
        assert np.max(np.abs(linear - numpy_of(keras_opt._linears[i]))) <= 1e-5 * np.max(np.abs(linear)), f"z {i}"
        if initial == 0:
            np.testing.assert_array_equal(x.numpy(), numpy_of(y), err_msg=f"variable {i}")


def numpy_ftrl(x, grads, *, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
               l1_regularization_strength=0.0, l2_regularization_strength=0.0,
               l2_shrinkage_regularization_strength=0.0, beta=0.0):
    x = np.array(x, np.float64)
    lr, p, l1 = learning_rate, -learning_rate_power, l1_regularization_strength
    n, z = np.full_like(x, initial_accumulator_value), np.zeros_like(x)
    l2 = l2_regularization_strength + beta / (2 * lr)
    for g in grads:
        new_n = n + g**2
        z = z + g + 2 * l2_shrinkage_regularization_strength * x - (new_n**p - n**p) / lr * x
        x = (np.clip(z, -l1, l1) - z) / (new_n**p / lr + 2 * l2)
        n = new_n
    return x, n, z


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    x = tf.Variable(x0)
    opt = Ftrl(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    want_x, n, z = numpy_ftrl(x0, grads, **kwargs)
    assert_allclose(x.numpy(), want_x, rtol=1e-12, atol=1e-300)
    assert_allclose(opt.get_slot(x, "sum_of_squares").numpy() + kwargs.get("initial_accumulator_value", 0.1), n,
                    rtol=1e-12)
    assert_allclose(opt.get_slot(x, "linear").numpy(), z, rtol=1e-12)


def test_l1_makes_zeros():
    """Coordinates with |z| <= l1 are exactly 0 (FTRL's sparsity)."""
    x = tf.Variable(np.full(6, 0.3))
    opt = Ftrl(0.1, l1_regularization_strength=0.5)
    opt.apply_gradients([(tf.constant([0.1, -0.2, 0.3, 2.0, -3.0, 0.0]), x)])
    got = x.numpy()
    assert (got[[0, 1, 2, 5]] == 0).all() and (got[3:5] != 0).all()


def test_conformance_kit_whole():
    """Every property, as_keras (slots start at 0: S, not n), XLA and ``mirrored`` included. Under
    ``MirroredStrategy`` z = sum(g') - sum((n'^p - n^p)/lr * x) cancels large terms (1/lr = 1000), so the
    all-reduce's last-bit differences in g reach 3e-5 absolute in ``linear`` at step 4: an order-of-summation effect
    (bit for bit equal to one device fed the same all-reduced gradients), which the kit's tolerance now scales by
    the rule's measured sensitivity (``tfopt.testing.MIRRORED_TOLERANCE``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        report = tfopt.testing.check_optimizer(Ftrl)
    assert {"keras", "xla", "mirrored"} <= set(report.checked), report


def test_conformance_kit_all_terms():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        tfopt.testing.check_optimizer(lambda: Ftrl(**VARIANTS[1]), skip=("mirrored", "xla", "keras"))


@pytest.mark.parametrize("kwargs, name", [
    ({"learning_rate_power": 0.5}, "learning_rate_power"),
    ({"learning_rate_power": float("nan")}, "learning_rate_power"),
    ({"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    ({"l1_regularization_strength": -1.0}, "l1_regularization_strength"),
    ({"l2_regularization_strength": -1.0}, "l2_regularization_strength"),
    ({"l2_shrinkage_regularization_strength": -1.0}, "l2_shrinkage_regularization_strength"),
    ({"beta": -0.1}, "beta"), ({"learning_rate": -0.1}, "learning"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Ftrl(**kwargs)
