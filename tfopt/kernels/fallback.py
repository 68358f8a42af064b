"""Adam when the native ops are off: the plain-ops reference's roundings, in fewer kernels.

Without ``tfopt.kernels.native`` (``TFOPT_NATIVE=0``, no compiler), ``fused=None`` runs TensorFlow's
exact fused kernels for GradientDescent and Momentum (``tfopt.kernels.fused``), but Adam has none: its
plain ops (``tfopt.optimizers.adam.adam_update``) run 13 elementwise kernels per variable, then an assign
per slot and an ``assign_sub``. ``adam`` below runs the same roundings in the same order with
fewer kernels and memory passes, so it gives the reference's numbers bit for bit, slots
included (``tests/test_fallback.py``):

* a variable of more than ``SMALL`` elements is updated in place, in 11 kernels and 26 passes
  over its size (the reference: 16 and about 32), TensorFlow's ``ResourceApplyGradientDescent``
  (``var <- var - alpha * delta``, exact for GradientDescent) serving as an in-place ``a + s * b``::

      m <- b1 * m;   m <- m - (-(1 - b1)) * g          # = b1 * m + (1 - b1) * g
      v <- b2 * v;   v <- v - (-(1 - b2)) * g^2        # = b2 * v + (1 - b2) * g^2
      x <- x - lr * ((m / c1) / (sqrt(v / c2) + eps))

  Negating a factor is exact and IEEE defines ``a - b`` as ``a + (-b)``, so each rounding is the
  reference's, signed zeros, infinities and NaNs included; assigning ``b1 * m`` hands the
  product's buffer to the slot (no copy).
* variables of ``SMALL`` elements or fewer are flattened and concatenated, at most ``CHUNK``
  elements at a time, stepped by ``adam_update`` itself, and split back: 5 kernels per variable
  (two reads, two assigns, one ``assign_sub``) instead of about 20, where dispatch is the cost.

Elementwise kernels round each element alike whatever the tensor's layout, so both give the
reference's bits, eagerly and in ``tf.function``. What they cannot remove: the reference divides
by both bias corrections, three divisions and a square root per element where Keras's Adam (its
bias corrections folded into one scalar) has one division, so on cache-sized variables, where
arithmetic rather than memory is the cost, this is about as fast as Keras, not faster (see the
"(fallback)" rows of ``benchmarks/step_speed.py``). Under XLA (``jit_compile=True``) the
optimizers keep the reference, which XLA fuses anyway.
"""

from __future__ import annotations

import tensorflow as tf

SMALL = 1 << 14
"""Variables of at most this many elements are stepped concatenated (measured on layouts B, C)."""

CHUNK = 1 << 18
"""At most this many elements per concatenation, so that its temporaries stay in cache."""


def adam(variables, ms, vs, grads, *, learning_rate, beta_1, one_minus_beta_1, correction_1, beta_2,
         one_minus_beta_2, correction_2, epsilon, **_) -> None:
    """Adam's reference step (``tfopt.optimizers.adam.adam_update``) for float32/float64 variables of one dtype,
    same bits."""
    from tfopt.optimizers.adam import adam_update

    scalars = dict(learning_rate=learning_rate, beta_1=beta_1, one_minus_beta_1=one_minus_beta_1,
                   correction_1=correction_1, beta_2=beta_2, one_minus_beta_2=one_minus_beta_2,
                   correction_2=correction_2, epsilon=epsilon)
    large = [i for i, x in enumerate(variables) if x.shape.num_elements() > SMALL]
    if large:
        minus_1, minus_2 = -one_minus_beta_1, -one_minus_beta_2
    for i in large:
        x, m, v, g = variables[i], ms[i], vs[i], grads[i]
        m.assign(beta_1 * m)
        _subtract_scaled(m, minus_1, g)
        v.assign(beta_2 * v)
        _subtract_scaled(v, minus_2, tf.square(g))
        _subtract_scaled(x, learning_rate, (m / correction_1) / (tf.sqrt(v / correction_2) + epsilon))
    for chunk in _chunks([i for i in range(len(variables)) if i not in large], variables):
        sizes = [variables[i].shape.num_elements() for i in chunk]
        shapes = [variables[i].shape for i in chunk]
        flat = lambda tensors, chunk=chunk, sizes=sizes: tf.concat(  # noqa: E731
            [_reshaped(tensors[i], [sizes[k]]) for k, i in enumerate(chunk)], 0)
        delta, m, v = adam_update(flat(grads), flat(ms), flat(vs), **scalars)
        for i, shape, d, m_i, v_i in zip(chunk, shapes, tf.split(delta, sizes), tf.split(m, sizes), tf.split(v, sizes)):
            ms[i].assign(_reshaped(m_i, shape))
            vs[i].assign(_reshaped(v_i, shape))
            variables[i].assign_sub(_reshaped(d, shape))


def _reshaped(tensor, shape: tf.TensorShape):
    """``tf.reshape``, without an op when ``tensor`` (a tensor or a variable) has that shape already."""
    return tensor if tensor.shape == shape else tf.reshape(tensor, shape)


def _chunks(positions: list[int], variables) -> list[list[int]]:
    """``positions`` in runs of at most ``CHUNK`` elements (a larger variable alone)."""
    chunks, total = [], 0
    for i in positions:
        size = variables[i].shape.num_elements()
        if not chunks or total + size > CHUNK:
            chunks.append([])
            total = 0
        chunks[-1].append(i)
        total += size
    return chunks


def _subtract_scaled(variable: tf.Variable, factor: tf.Tensor, tensor: tf.Tensor):
    """``variable <- variable - factor * tensor`` in place: TensorFlow's ``ResourceApplyGradientDescent``."""
    return tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=factor, delta=tensor)
