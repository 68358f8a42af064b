"""Keras 3 variables and tf.Variables are handled alike."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest
import tensorflow as tf

from tfopt.core.variables import as_tf_variable, display_name, variable_key


def test_keras_variable_unwraps_to_its_tf_variable():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    kernel = layer.kernel
    assert not isinstance(kernel, tf.Variable)
    inner = as_tf_variable(kernel, 0)
    assert isinstance(inner, tf.Variable) and inner is kernel.value
    assert variable_key(inner) == variable_key(as_tf_variable(kernel, 0))
    assert display_name(kernel) == kernel.path


def test_tf_variable_is_itself():
    v = tf.Variable(1.0, name="w")
    assert as_tf_variable(v, 0) is v
    assert display_name(v) == "w:0"


@pytest.mark.parametrize("target", [tf.constant(1.0), 1.0, [1.0]])
def test_non_variables_are_rejected_with_their_position(target):
    with pytest.raises(TypeError, match="Target 3 .* not a variable"):
        as_tf_variable(target, 3)
