"""Hyperparameters: stored in variables, changeable, per-row, schedulable."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import tfopt


def test_number_is_stored_exactly_in_float64_and_assigned_in_place():
    opt = tfopt.Momentum(learning_rate=0.1, momentum=0.9)
    variable = opt.learning_rate
    assert variable.dtype == tf.float64 and float(variable) == 0.1
    opt.learning_rate = 0.3
    assert opt.learning_rate is variable and float(variable) == 0.3


def test_user_variable_is_used_as_is():
    lr = tf.Variable(0.5, dtype=tf.float32)
    opt = tfopt.GradientDescent(learning_rate=lr)
    assert opt.learning_rate is lr
    x = tf.Variable([1.0])
    lr.assign(0.25)
    opt.apply_gradients([(tf.constant([2.0]), x)])
    np.testing.assert_array_equal(x.numpy(), [0.5])


def test_per_row_learning_rate_variable_broadcasts():
    rates = tf.Variable([[0.1], [0.01]], dtype=tf.float64)
    x = tf.Variable([[1.0, 2.0], [1.0, 2.0]], dtype=tf.float64)
    tfopt.GradientDescent(learning_rate=rates).apply_gradients([(tf.ones_like(x), x)])
    np.testing.assert_allclose(x.numpy(), [[0.9, 1.9], [0.99, 1.99]], rtol=1e-15)


def test_negative_value_in_a_user_variable_is_rejected():
    with pytest.raises(ValueError, match="learning_rate"):
        tfopt.Adam(learning_rate=tf.Variable([0.1, -0.1]))


def test_only_the_learning_rate_may_be_a_schedule():
    with pytest.raises(TypeError, match="momentum"):
        tfopt.Momentum(momentum=lambda step: 0.9)


def test_schedule_is_called_with_the_zero_based_step_like_keras():
    seen = []

    def schedule(step):
        seen.append(step)
        return 0.1

    opt = tfopt.GradientDescent(learning_rate=schedule)
    x = tf.Variable([1.0])
    opt.apply_gradients([(tf.constant([1.0]), x)])
    assert int(seen[0]) == 0
    assert opt.learning_rate is schedule


@pytest.mark.parametrize("first, then", [(0.1, "variable"), (0.1, "schedule"), ("variable", 0.0)])
def test_after_the_first_step_a_hyperparameter_changes_in_place_or_raises(first, then):
    """A traced step captured the old variable: replacing it would be silently ignored, so it raises."""
    variable = tf.Variable(0.1, dtype=tf.float64)
    opt = tfopt.GradientDescent(variable if first == "variable" else first)
    x = tf.Variable([1.0])
    step = tf.function(lambda: opt.apply_gradients([(tf.constant([1.0]), x)]))
    step()
    new = {"variable": tf.Variable(0.0, dtype=tf.float64), "schedule": lambda s: 0.0}.get(then, then)
    with pytest.raises(ValueError, match="learning_rate .*after the first step"):
        opt.learning_rate = new
    step()
    np.testing.assert_allclose(x.numpy(), [0.8], rtol=1e-6)  # the old value, still in force, as it says
    opt.learning_rate = variable if first == "variable" else 0.0  # the same variable, or a number: fine
