"""tfopt in other frameworks' loops: Keras (``as_keras``, ``model.fit``) and ``tf.distribute``."""
