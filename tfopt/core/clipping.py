"""Gradient clipping with Keras's names and meanings.

* ``clipnorm``: each gradient ``g`` is rescaled to ``g * c / max(||g||, c)``.
* ``clipvalue``: each element is clipped to ``[-c, c]``.
* ``global_clipnorm``: all gradients are rescaled together so that the norm of
  their concatenation is at most ``c``.

At most one of them may be set, as in Keras.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core.validation import check_clip


def check_clipping(clipnorm, clipvalue, global_clipnorm) -> None:
    """Raise ``ValueError`` on a bad threshold or on more than one kind of clipping."""
    for name, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
        check_clip(name, value)
    if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
        raise ValueError(
            "Only one of clipnorm, clipvalue and global_clipnorm can be set. Received: "
            f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}."
        )


def _clip_values(grad, fn):
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(fn(grad.values), grad.indices, grad.dense_shape)
    return fn(grad)


def clip_gradients(grads: list, clipnorm=None, clipvalue=None, global_clipnorm=None) -> list:
    """Apply the configured clipping to a list of gradients (dense or ``IndexedSlices``).

    ``IndexedSlices`` must have unique indices so their norm is the dense norm.
    """
    if clipnorm is not None:
        return [_clip_values(g, lambda x: tf.clip_by_norm(x, tf.cast(clipnorm, x.dtype))) for g in grads]
    if clipvalue is not None:
        return [_clip_values(g, lambda x: tf.clip_by_value(x, -clipvalue, clipvalue)) for g in grads]
    if global_clipnorm is not None:
        if len({g.dtype for g in grads}) == 1:
            clipped, _ = tf.clip_by_global_norm(grads, global_clipnorm)
            return clipped
        return _clip_mixed_dtypes_by_global_norm(grads, global_clipnorm)
    return grads


def _clip_mixed_dtypes_by_global_norm(grads: list, clip_norm: float) -> list:
    """``global_clipnorm`` over gradients of several dtypes: the norm and the scale in float64.

    ``g * min(1, c / ||all||)``, the scale rounded once to each gradient's dtype
    (``tf.clip_by_global_norm`` stacks the per-gradient norms, so it needs one dtype).
    """
    values = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float64))) for v in values]))
    scale = tf.minimum(tf.constant(1.0, tf.float64), clip_norm / norm)
    return [_clip_values(g, lambda x: x * tf.cast(scale, x.dtype)) for g in grads]
