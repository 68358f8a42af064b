"""Argument checks: clear messages naming the culprit."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf

from tfopt.core.validation import check_non_negative, check_pairs, check_unit_interval, gradient_variable_pairs


@pytest.mark.parametrize("value", [0.0, 1e-3, 5])
def test_non_negative_accepts(value):
    check_non_negative("learning_rate", value)


@pytest.mark.parametrize("value", [-1e-9, float("nan"), [0.1, -0.1]])
def test_non_negative_rejects(value):
    with pytest.raises(ValueError, match="Invalid learning_rate"):
        check_non_negative("learning_rate", value)


@pytest.mark.parametrize("value", [0.0, 0.5, 0.999])
def test_unit_interval_accepts(value):
    check_unit_interval("beta_1", value)


@pytest.mark.parametrize("value", [1.0, -0.01, float("nan"), float("inf")])
def test_unit_interval_rejects(value):
    with pytest.raises(ValueError, match=r"Invalid beta_1.*\[0, 1\)"):
        check_unit_interval("beta_1", value)


def test_two_sequence_form_checks_lengths():
    with pytest.raises(ValueError, match="Got 1 gradients for 2 variables"):
        gradient_variable_pairs([1.0], [tf.Variable(1.0), tf.Variable(2.0)])


def test_gradient_shape_mismatch_names_variable_and_shapes():
    v = tf.Variable([[1.0, 2.0]], name="kernel")
    with pytest.raises(ValueError, match=r"'kernel:0' has shape \(2, 1\).*\(1, 2\)"):
        check_pairs([(tf.ones((2, 1)), v)])


def test_indexed_slices_with_wrong_row_shape_is_rejected():
    v = tf.Variable(tf.zeros((4, 3)), name="table")
    bad = tf.IndexedSlices(tf.ones((2, 5)), tf.constant([0, 1]), tf.constant([4, 5]))
    with pytest.raises(ValueError, match="table"):
        check_pairs([(bad, v)])


def test_numpy_gradient_is_converted():
    v = tf.Variable([1.0, 2.0])
    ((grad, variable),) = check_pairs([([0.5, 0.5], v)])
    assert tf.is_tensor(grad) and variable is v


def test_a_variable_that_is_not_floating_point_is_rejected_before_any_change():
    import tfopt

    a, counts = tf.Variable([1.0, 2.0]), tf.Variable([1, 2])
    opt = tfopt.Adam(0.1)
    with pytest.raises(TypeError, match="Variable .* has dtype int32; optimizers update floating-point variables only"):
        opt.apply_gradients([(tf.constant([1.0, 1.0]), a), (tf.constant([1, 1]), counts)])
    assert a.numpy().tolist() == [1.0, 2.0] and int(opt.iterations) == 0
