"""tfopt.ScheduleFreeAdamW against the paper's formulas (float64 NumPy) and Keras 3's ScheduleFreeAdamW.

Rule (tfopt/optimizers/schedule_free_adamw.py): y is the variable, z (slot momentum) starts at y, v at 0, t from 1,
lr_t = lr * min(t / warmup_steps, 1), c = 1/t:
    v <- v + (g^2 - v)(1 - b2);  z' = z - lr_t g / (sqrt(v / (1 - b2^t)) + eps)
    x = (y - (1 - b1) z) / b1;   x' = (1 - c) x + c z';   y <- (1 - b1) z' + b1 x';  z <- z'
Keras 3.15 on TensorFlow recovers x from the updated z' instead (it reads the live momentum variable); the test
checks that this one substitution maps tfopt's rule onto Keras's numbers, bit for bit.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_rules import keras_defaults, lockstep, max_relative_difference, numpy_of, tfopt_defaults
from numpy.testing import assert_allclose

import tfopt
from tfopt.optimizers.schedule_free_adamw import ScheduleFreeAdamW

VARIANTS = [
    {},
    {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6, "warmup_steps": 10},
]


class KerasTensorFlowScheduleFree(ScheduleFreeAdamW):
    """tfopt's rule with Keras-on-TensorFlow's x: (y - (1 - b1) z') / b1, from the new z'."""

    @staticmethod
    def _recover_x(y, z, new_z, beta_1):
        return (y - (1 - beta_1) * new_z) / beta_1


def test_defaults_are_keras():
    assert tfopt_defaults(ScheduleFreeAdamW) == keras_defaults(keras.optimizers.ScheduleFreeAdamW) == {
        "learning_rate": 0.0025, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8, "warmup_steps": 0}


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_the_mapping_onto_keras_is_bit_for_bit_over_100_steps(kwargs):
    """With Keras-on-TensorFlow's x (from z'), tfopt's arithmetic is Keras's, op for op: variables and both slots
    bit for bit (the base's x - (x - y_new) gives y_new exactly here; it need not in general)."""
    ours_opt, keras_opt = KerasTensorFlowScheduleFree(**kwargs), keras.optimizers.ScheduleFreeAdamW(**kwargs)
    ours, theirs = lockstep(ours_opt, keras_opt)
    for i, (x, y) in enumerate(zip(ours, theirs)):
        assert max_relative_difference(x.numpy(), numpy_of(y)) <= 1e-5
        np.testing.assert_array_equal(x.numpy(), numpy_of(y), err_msg=f"variable {i}")
        np.testing.assert_array_equal(ours_opt.get_slot(x, "momentum").numpy(), numpy_of(keras_opt._momentums[i]))
        np.testing.assert_array_equal(ours_opt.get_slot(x, "velocity").numpy(), numpy_of(keras_opt._velocities[i]))


def numpy_schedule_free(y, grads, *, learning_rate=0.0025, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                        warmup_steps=0, keras_tensorflow=False):
    y = np.array(y, np.float64)
    z, v = y.copy(), np.zeros_like(y)
    for t, g in enumerate(grads, 1):
        lr = learning_rate * min(t / warmup_steps, 1.0) if warmup_steps else learning_rate
        v = beta_2 * v + (1 - beta_2) * g**2
        new_z = z - lr * g / (np.sqrt(v / (1 - beta_2**t)) + epsilon)
        x = (y - (1 - beta_1) * (new_z if keras_tensorflow else z)) / beta_1
        new_x = (1 - 1 / t) * x + new_z / t
        y = (1 - beta_1) * new_z + beta_1 * new_x
        z = new_z
    return y, z, v, new_x


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_float64_matches_the_papers_formulas(kwargs):
    rng = np.random.default_rng(1)
    y0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(6)]
    variable = tf.Variable(y0)
    opt = ScheduleFreeAdamW(**kwargs)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), variable)])
    y, z, v, x = numpy_schedule_free(y0, grads, **kwargs)
    assert_allclose(variable.numpy(), y, rtol=1e-12, atol=1e-15)
    assert_allclose(opt.get_slot(variable, "momentum").numpy(), z, rtol=1e-12)
    assert_allclose(opt.get_slot(variable, "velocity").numpy(), v, rtol=1e-12)
    assert_allclose(opt.evaluation_weights([variable])[0].numpy(), x, rtol=1e-11, atol=1e-14)
    keras_y = numpy_schedule_free(y0, grads, keras_tensorflow=True, **kwargs)[0]
    assert np.max(np.abs(keras_y - y)) > 1e-3 * np.max(np.abs(y - y0))  # (the two rules do differ)


def test_evaluation_point_swaps_x_in_and_y_back_exactly():
    rng = np.random.default_rng(2)
    variables = [tf.Variable(rng.normal(size=s).astype("float32")) for s in [(3,), (2, 2)]]
    opt = ScheduleFreeAdamW(0.05)
    assert [w.numpy().tolist() for w in opt.evaluation_weights(variables)] == [v.numpy().tolist() for v in variables]
    for _ in range(5):
        opt.apply_gradients(zip([tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables],
                                variables))
    training = [v.numpy() for v in variables]
    evaluation = [w.numpy() for w in opt.evaluation_weights(variables)]
    assert not np.allclose(training[0], evaluation[0])
    with opt.evaluation_point(variables):
        for v, x in zip(variables, evaluation):
            np.testing.assert_array_equal(v.numpy(), x)
    for v, y in zip(variables, training):
        np.testing.assert_array_equal(v.numpy(), y)  # exactly back
    opt.assign_evaluation_weights(variables)
    for v, x in zip(variables, evaluation):
        np.testing.assert_array_equal(v.numpy(), x)


def test_conformance_kit_whole():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tfopt.testing.ConformanceWarning)
        report = tfopt.testing.check_optimizer(ScheduleFreeAdamW)
    assert {"keras", "xla", "mirrored", "tf_function"} <= set(report.checked), report


@pytest.mark.parametrize("kwargs, name", [
    ({"beta_1": 0.0}, "beta_1"), ({"beta_1": 1.0}, "beta_1"), ({"beta_2": 1.0}, "beta_2"),
    ({"epsilon": -1e-8}, "epsilon"), ({"warmup_steps": -1}, "warmup_steps"), ({"warmup_steps": 2.5}, "warmup_steps"),
    ({"learning_rate": -1.0}, "learning"),
])
def test_bad_hyperparameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ScheduleFreeAdamW(**kwargs)
