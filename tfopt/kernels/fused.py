"""Fast paths: one TensorFlow training kernel per variable instead of a chain of plain ops.

An optimizer step is memory-bound. The plain-ops reference (each optimizer's
pure ``*_update`` function) runs a dozen elementwise kernels per variable, each
a full pass over memory into a fresh temporary; TensorFlow's fused training
kernels read and write each array once, in place. ``Optimizer(fused=...)``
chooses:

* ``fused=None`` (default): tfopt's native multi-tensor op (``tfopt.kernels.native``: one op
  for all variables, bit-identical for every rule); where it cannot run (no
  compiler, XLA, ``tf.distribute``), the kernel below where it gives the
  reference's numbers bit for bit (GradientDescent, Momentum), else the reference (Adam).
* ``fused=True``: the same, except that Adam runs ``ResourceApplyAdam``, which rounds differently.
* ``fused=False``: always the plain-ops reference.

Kernels, and how they relate to the reference (``fl`` is one rounding):

* GradientDescent, ``ResourceApplyGradientDescent``: ``x <- x - lr * g``,
  the same two roundings. Bit-identical.
* Momentum, ``ResourceApplyMomentum`` with its learning rate set to 1 and the
  gradient pre-scaled: ``d <- momentum * d + (lr * g); x <- x - 1 * d``
  (Nesterov: ``x <- x - ((lr * g) * 1 + d * momentum * 1)``), the reference's
  roundings in the same order. Bit-identical. ``ResourceApplyKerasMomentum``
  would save the ``lr * g`` pass but stores ``-d`` in its accumulator, so the
  ``velocity`` slot would change meaning (and checkpoints with it); it is not used.
* Adam, ``ResourceApplyAdam`` with its bias corrections folded into the step
  size and epsilon (``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)``,
  ``eps_hat = eps * sqrt(1 - b2^t)``, both from float64):
  ``m <- m + (g - m) * (1 - b1); v <- v + (g^2 - v) * (1 - b2);
  x <- x - m * alpha / (sqrt(v) + eps_hat)``. The same update, but the kernel
  forms ``1 - b`` in the variable's dtype: in float32 that is ``1 - fl(b)``, off by
  up to 6e-8 / (1 - b) relative (1.3e-5 for b2 = 0.999), so m and v agree with
  the reference to about 2e-5 of their scale and x to about 2e-5 of the distance
  the steps moved it, not bit for bit (float64: about 1e-13).

A kernel applies to a dense gradient (``IndexedSlices`` are densified first,
except GradientDescent's, which keeps its scatter), a float32 or float64
variable, and scalar hyperparameters. Anything else (float16/bfloat16
variables, computed in float32 by the reference; a learning rate per row) takes
the reference path. Eager, ``tf.function`` and XLA run the same kernel, so
eager and ``tf.function`` stay bit-identical on either path.
"""

from __future__ import annotations

import contextlib
import weakref

import tensorflow as tf

DTYPES = (tf.float32, tf.float64)


def applies(variable: tf.Variable, scalars: dict[str, tf.Tensor]) -> bool:
    """Whether a fused kernel can update ``variable`` with these (cast) per-step scalars.

    Not a distributed variable stepped outside its strategy's scope: its ``handle`` is one
    replica's, while its own assign ops (the reference path) update every replica.
    """
    return (variable.dtype in DTYPES and not isinstance(variable, tf.distribute.DistributedValues)
            and all(s.shape.rank == 0 for s in scalars.values()))


def gradient_descent(variable: tf.Variable, grad: tf.Tensor, learning_rate: tf.Tensor) -> None:
    """``x <- x - lr * g`` in place."""
    tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=learning_rate, delta=grad)


def momentum(variable: tf.Variable, velocity: tf.Variable, grad: tf.Tensor, learning_rate: tf.Tensor,
             momentum: tf.Tensor, nesterov: bool) -> None:
    """``d <- lr * g + momentum * d; x <- x - d`` (Nesterov: ``x <- x - (lr * g + momentum * d)``) in place.

    ``lr * g`` is one temporary the size of the variable (none when the gradient is not
    used elsewhere: the multiply then writes into the gradient's buffer); the rest is one kernel.
    In a graph, each multiply waits for the previous variable's update, so that at most one
    temporary is alive at a time.
    """
    with _after_previous_update():
        scaled = tf.raw_ops.Mul(x=learning_rate, y=grad)  # the reference's ``learning_rate * grad``, minus dispatch
    update = tf.raw_ops.ResourceApplyMomentum(var=variable.handle, accum=velocity.handle, grad=scaled,
                                              lr=tf.constant(1, grad.dtype), momentum=momentum, use_nesterov=nesterov)
    if not tf.executing_eagerly():
        _LAST_UPDATE[tf.compat.v1.get_default_graph()] = update.name


_LAST_UPDATE = weakref.WeakKeyDictionary()  # graph -> name of its latest update that made a temporary


def _after_previous_update():
    """In a graph, a control dependency on the latest such update (eager ops run one at a time anyway)."""
    if tf.executing_eagerly():
        return contextlib.nullcontext()
    graph = tf.compat.v1.get_default_graph()
    previous = _LAST_UPDATE.get(graph)
    return tf.control_dependencies([graph.get_operation_by_name(previous)] if previous else [])


def adam(variable: tf.Variable, m: tf.Variable, v: tf.Variable, grad: tf.Tensor, *, alpha: tf.Tensor,
         beta_1: tf.Tensor, beta_2: tf.Tensor, epsilon_hat: tf.Tensor) -> None:
    """``m <- m + (g - m)(1 - b1); v <- v + (g^2 - v)(1 - b2); x <- x - alpha * m / (sqrt(v) + eps_hat)`` in place.

    ``alpha`` and ``eps_hat`` carry the bias corrections (the kernel's own
    ``beta_power`` inputs are set to 0, so it uses ``alpha`` as it is).
    """
    zero = tf.constant(0, grad.dtype)
    tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=m.handle, v=v.handle, beta1_power=zero, beta2_power=zero,
                                 lr=alpha, beta1=beta_1, beta2=beta_2, epsilon=epsilon_hat, grad=grad)
