"""Clipping follows Keras's names and meanings (compared with Keras's own SGD)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt
from tfopt.core.clipping import check_clipping, clip_gradients


@pytest.mark.parametrize("clip", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_matches_keras_sgd_with_the_same_clipping(clip):
    grads = [np.array([3.0, -4.0], np.float32), np.array([[0.5, 2.0]], np.float32)]
    ours = [tf.Variable([1.0, 1.0]), tf.Variable([[1.0, 1.0]])]
    theirs = [keras.Variable(np.array([1.0, 1.0], np.float32)), keras.Variable(np.array([[1.0, 1.0]], np.float32))]
    tfopt.GradientDescent(0.1, **{clip: 1.5}).apply_gradients(zip(grads, ours))
    keras.optimizers.SGD(0.1, **{clip: 1.5}).apply_gradients(zip([tf.constant(g) for g in grads], theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_indexed_slices_are_clipped_like_their_dense_form():
    sparse = tf.IndexedSlices(tf.constant([[3.0, 4.0]]), tf.constant([1]), tf.constant([3, 2]))
    dense = tf.convert_to_tensor(sparse)
    for kw in ({"clipnorm": 1.0}, {"clipvalue": 1.0}, {"global_clipnorm": 1.0}):
        (clipped_sparse,) = clip_gradients([sparse], **kw)
        (clipped_dense,) = clip_gradients([dense], **kw)
        np.testing.assert_allclose(tf.convert_to_tensor(clipped_sparse).numpy(), clipped_dense.numpy(), rtol=1e-7)


def test_no_clipping_returns_gradients_unchanged():
    grads = [tf.constant([100.0])]
    assert clip_gradients(grads) is grads


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"clipnorm": 1.0, "clipvalue": 1.0}, "Only one"),
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "Only one"),
        ({"clipnorm": 0.0}, "clipnorm"),
        ({"clipvalue": -1.0}, "clipvalue"),
        ({"global_clipnorm": float("nan")}, "global_clipnorm"),
        ({"clipnorm": "1"}, "clipnorm"),
    ],
)
def test_bad_clipping_arguments_raise(kw, match):
    full = {"clipnorm": None, "clipvalue": None, "global_clipnorm": None, **kw}
    with pytest.raises(ValueError, match=match):
        check_clipping(**full)
    with pytest.raises(ValueError, match=match):
        tfopt.Adam(**kw)


def test_global_clipnorm_over_gradients_of_two_dtypes():
    """The norm covers both (in float64); each gradient is scaled by min(1, c / norm)."""
    import tfopt

    a, b = tf.Variable([0.0, 0.0], dtype=tf.float32), tf.Variable([0.0], dtype=tf.float64)
    tfopt.GradientDescent(1.0, global_clipnorm=1.0).apply_gradients([(tf.constant([3.0, 0.0]), a),
                                                                      (tf.constant([4.0], tf.float64), b)])
    np.testing.assert_allclose(a.numpy(), [-0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [-0.8], rtol=1e-12)
