"""Treat Keras 3 variables and ``tf.Variable``s alike.

Keras 3 variables (``model.trainable_variables``) are not ``tf.Variable``
instances and have no ``.ref()``; each one wraps a ``tf.Variable`` in its
``.value``. The optimizers work on that inner ``tf.Variable``, so an update
made through either object is seen through both.
"""

from __future__ import annotations

import tensorflow as tf


def as_tf_variable(variable, position: int) -> tf.Variable:
    """Return the ``tf.Variable`` behind ``variable`` or raise ``TypeError``.

    ``position`` is the variable's index in the caller's list; it names the
    culprit in the error message.
    """
    if isinstance(variable, tf.Variable):
        return variable
    inner = getattr(variable, "value", None)  # Keras 3 variable
    if isinstance(inner, tf.Variable):
        return inner
    raise TypeError(
        f"Target {position} is a {type(variable).__name__}, not a variable: "
        "optimizers update tf.Variable or Keras variables only."
    )


def variable_key(variable: tf.Variable) -> int:
    """A hashable identity of a ``tf.Variable`` (``tf.Variable.ref`` without the object)."""
    container = getattr(variable, "_distributed_container", None)
    if container is not None:  # a component of a tf.distribute variable
        variable = container()
    return id(variable)


def display_name(variable) -> str:
    """The name a user knows a variable by: its Keras path, else its TF name."""
    return getattr(variable, "path", None) or variable.name
