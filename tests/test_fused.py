"""TensorFlow's fused kernels (``tfopt.kernels.fused``, used where the native ops are not) against ``fused=False``.

GradientDescent and Momentum must match the reference bit for bit, slots included; Adam's
``ResourceApplyAdam`` must match it within the tolerance its docstring states. Whatever a kernel
cannot do (float16/bfloat16, hyperparameters with a value per row) falls back to the reference.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from rules import assert_bitwise_equal, make

import tfopt
from tfopt.kernels import fused

KERNELS = {
    "gradient_descent": "ResourceApplyGradientDescent",
    "momentum": "ResourceApplyMomentum",
    "nesterov": "ResourceApplyMomentum",
    "adam": "ResourceApplyAdam",
}
EXACT = ["gradient_descent", "momentum", "nesterov"]


@pytest.fixture(autouse=True)
def tensorflow_kernels(monkeypatch):
    """These tests are about TensorFlow's kernels: keep the native multi-tensor ops (tests/test_native.py) out."""
    monkeypatch.setattr(tfopt.kernels.native, "usable", lambda: False)
SHAPES = [(), (7,), (3, 5), (2, 3, 4)]


def run(opt, dtype, steps=6, shapes=SHAPES, seed=0, change_hyperparameters=True):
    """Apply ``steps`` random steps to fresh variables; return the variables' and slots' values."""
    rng = np.random.default_rng(seed)
    variables = [tf.Variable(rng.normal(size=s).astype(dtype)) for s in shapes]
    for step in range(steps):
        if change_hyperparameters and step == 3:
            opt.learning_rate = 0.02
            for key, value in {"momentum": 0.5, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-4}.items():
                if hasattr(opt, key):
                    setattr(opt, key, value)
        grads = [tf.constant(rng.normal(size=s).astype(dtype)) for s in shapes]
        opt.apply_gradients(zip(grads, variables))
    return [v.numpy() for v in variables] + [opt.get_slot(v, s).numpy() for v in variables for s in opt.slot_names]


def ops_of(opt, variables, grads):
    """The op types of one traced step."""
    step = tf.function(lambda: opt.apply_gradients(zip(grads, variables)))
    return {op.type for op in step.get_concrete_function().graph.get_operations()}


# ------------------------------------------------------------- which path runs
@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("flag", [None, True, False])
def test_flag_chooses_the_kernel(name, flag):
    opt = make(name, fused=flag)
    x = tf.Variable([1.0, 2.0])
    uses_kernel = KERNELS[name] in ops_of(opt, [x], [tf.constant([0.5, -0.5])])
    assert uses_kernel == (flag is True or (flag is None and name in EXACT))


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_falls_back_to_the_reference(name, dtype):
    variables = [tf.Variable(tf.constant([1.0, -2.0, 3.0], dtype))]
    grads = [tf.constant([0.5, 0.25, -1.0], dtype)]
    assert KERNELS[name] not in ops_of(make(name, fused=True), variables, grads)
    fast, reference = make(name, fused=True), make(name, fused=False)
    a, b = tf.Variable(variables[0]), tf.Variable(variables[0])
    for _ in range(3):
        fast.apply_gradients(zip(grads, [a]))
        reference.apply_gradients(zip(grads, [b]))
    assert_bitwise_equal([a.numpy()], [b.numpy()])


@pytest.mark.parametrize("name", list(KERNELS))
def test_hyperparameter_with_a_value_per_row_falls_back_to_the_reference(name):
    key = {"momentum": "momentum", "nesterov": "momentum", "adam": "beta_1"}.get(name, "learning_rate")
    per_row = lambda: tf.Variable([[0.1], [0.5]], dtype=tf.float64)  # noqa: E731
    fast, reference = make(name, fused=True, **{key: per_row()}), make(name, fused=False, **{key: per_row()})
    x = tf.Variable(np.ones((2, 3), np.float32))
    assert KERNELS[name] not in ops_of(fast, [x], [tf.ones((2, 3))])
    assert_bitwise_equal(run(fast, "float32", shapes=[(2, 3)], change_hyperparameters=False),
                         run(reference, "float32", shapes=[(2, 3)], change_hyperparameters=False))


def test_applies_only_to_float32_and_float64_with_scalar_hyperparameters():
    scalar, row = {"learning_rate": tf.constant(0.1)}, {"learning_rate": tf.constant([[0.1], [0.2]])}
    assert fused.applies(tf.Variable([1.0]), scalar)
    assert fused.applies(tf.Variable([1.0], dtype=tf.float64), scalar)
    assert not fused.applies(tf.Variable([1.0], dtype=tf.float16), scalar)
    assert not fused.applies(tf.Variable([1.0]), row)


# ------------------------------------------------------ exact: GD and Momentum
@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_kernels_equal_the_reference_bit_for_bit(name, dtype):
    assert_bitwise_equal(run(make(name, fused=True), dtype), run(make(name, fused=False), dtype))


@pytest.mark.parametrize("name", EXACT)
def test_exact_kernels_equal_the_reference_with_special_values(name):
    """Zeros (both signs), huge, tiny and non-finite gradients: still bit for bit."""
    g = tf.constant([0.0, -0.0, 1e30, -1e-30, 3.0, np.inf, np.nan, 1e-45])
    results = []
    for flag in (True, False):
        opt, x = make(name, fused=flag), tf.Variable([1.0, -1.0, 0.0, -0.0, 2.0, 5.0, 1.0, 0.0])
        for _ in range(3):
            opt.apply_gradients([(g, x)])
        results.append([x.numpy()] + [opt.get_slot(x, s).numpy() for s in opt.slot_names])
    assert_bitwise_equal(*results)


def test_momentum_slot_keeps_its_meaning():
    """velocity is d = lr * g + momentum * d (positive), not Keras's -d."""
    opt, x = tfopt.Momentum(learning_rate=0.5, momentum=0.5), tf.Variable([0.0])
    opt.apply_gradients([(tf.constant([2.0]), x)])
    opt.apply_gradients([(tf.constant([2.0]), x)])
    np.testing.assert_array_equal(opt.get_slot(x, "velocity").numpy(), [1.5])  # 1, then 1 + 0.5 * 1
    np.testing.assert_array_equal(x.numpy(), [-2.5])


def test_momentum_temporaries_are_made_one_at_a_time_in_a_graph():
    """Each ``lr * g`` waits for the previous variable's update: one temporary alive at a time."""
    opt, variables = tfopt.Momentum(0.1), [tf.Variable(tf.ones(4)) for _ in range(3)]
    step = tf.function(lambda: opt.apply_gradients(zip([tf.ones(4)] * 3, variables)))
    graph = step.get_concrete_function().graph
    updates = [op for op in graph.get_operations() if op.type == "ResourceApplyMomentum"]
    multiplies = [op.inputs[3].op for op in updates]  # grad = lr * g
    assert len(updates) == 3 and all(m.type == "Mul" for m in multiplies)
    assert not multiplies[0].control_inputs
    assert [m.control_inputs for m in multiplies[1:]] == [[updates[0]], [updates[1]]]


# ---------------------------------------------------------------- Adam: close
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-5), ("float64", 1e-13)])
def test_adam_kernel_is_close_to_the_reference(dtype, rtol):
    """m and v within ``rtol`` of their scale, x within ``rtol`` of the distance the steps can move it.

    (The kernel forms 1 - b in the variable's dtype: 1 - fl(0.999) is 1.3e-5 off in float32.)
    """
    fast, reference = run(make("adam", fused=True), dtype), run(make("adam", fused=False), dtype)
    distance = 3 * 0.05 + 3 * 0.02  # each step moves x by about lr at most
    for i, (a, b) in enumerate(zip(fast, reference)):
        scale = distance if i < len(SHAPES) else np.max(np.abs(b))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def test_adam_kernel_is_the_stated_formula():
    """m + (g - m)(1 - b1), v + (g^2 - v)(1 - b2), x - alpha m / (sqrt(v) + eps_hat), in float32."""
    rng = np.random.default_rng(3)
    x0, grads = rng.normal(size=50).astype("float32"), rng.normal(size=(4, 50)).astype("float32")
    opt, x = tfopt.Adam(learning_rate=0.1, beta_1=0.8, beta_2=0.99, epsilon=1e-3, fused=True), tf.Variable(x0)
    f32, want, m, v = np.float32, x0.copy(), np.zeros(50, "float32"), np.zeros(50, "float32")
    for t, g in enumerate(grads, start=1):
        opt.apply_gradients([(tf.constant(g), x)])
        c1, c2 = 1 - 0.8**t, 1 - 0.99**t
        alpha, eps_hat = f32(0.1 * np.sqrt(c2) / c1), f32(1e-3 * np.sqrt(c2))
        m = m + (g - m) * (f32(1) - f32(0.8))
        v = v + (g * g - v) * (f32(1) - f32(0.99))
        want = want - m * alpha / (np.sqrt(v) + eps_hat)
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(opt.get_slot(x, "v").numpy(), v, rtol=1e-6)


# ------------------------------------------------- every path: eager == graph
@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("flag", [None, True])
def test_eager_and_tf_function_agree_bit_for_bit(name, flag):
    rng = np.random.default_rng(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    data, targets = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    initial = [v.numpy() for v in model.trainable_variables]
    results = []
    for compiled in (False, True):
        for v, value in zip(model.trainable_variables, initial):
            v.assign(value)
        opt = make(name, fused=flag)

        def step(opt=opt):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(data) - targets) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        step = tf.function(step) if compiled else step
        for _ in range(4):
            step()
        results.append([v.numpy() for v in model.trainable_variables])
    assert_bitwise_equal(*results)


# ----------------------------------------------------------- sparse, clipping
@pytest.mark.parametrize("name", list(KERNELS))
def test_indexed_slices(name):
    """GradientDescent scatters into the touched rows (no dense gradient); the others densify then fuse."""
    table = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    ids = tf.constant([4, 1, 4])
    sparse_var, dense_var = tf.Variable(table), tf.Variable(table)
    sparse_opt, dense_opt = make(name, fused=True), make(name, fused=True)

    def grad_of(variable):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(variable, ids) ** 2)
        return tape.gradient(loss, variable)

    ops = ops_of(make(name, fused=True), [tf.Variable(table)], [grad_of(tf.Variable(table))])
    if name == "gradient_descent":
        assert "ResourceScatterSub" in ops and KERNELS[name] not in ops
    else:
        assert KERNELS[name] in ops
    for _ in range(3):
        sparse_opt.apply_gradients([(grad_of(sparse_var), sparse_var)])
        dense_opt.apply_gradients([(tf.convert_to_tensor(grad_of(dense_var)), dense_var)])
    np.testing.assert_array_equal(sparse_var.numpy(), dense_var.numpy())


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("clip", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_clipping_on_the_fast_path_equals_the_reference(name, clip):
    assert_bitwise_equal(run(make(name, fused=True, **{clip: 0.5}), "float32"),
                         run(make(name, fused=False, **{clip: 0.5}), "float32"))


# ------------------------------------------------------------------ the flag
@pytest.mark.parametrize("name", list(KERNELS))
def test_flag_is_in_the_config(name):
    opt = make(name, fused=False)
    assert opt.get_config()["fused"] is False
    assert type(opt).from_config(opt.get_config()).fused is False
    assert make(name).fused is None and "fused" not in make(name).get_config()


@pytest.mark.parametrize("value", ["yes", 1.0, "auto"])
def test_bad_flag_raises(value):
    with pytest.raises(ValueError, match="fused"):
        tfopt.Adam(fused=value)


def test_checkpoint_written_on_one_path_resumes_on_the_other(tmp_path):
    """Slots mean the same on both paths: a reference run resumes a fused one bit for bit."""
    rng = np.random.default_rng(2)
    grads = [tf.constant(rng.normal(size=5).astype("float32")) for _ in range(6)]
    x, opt = tf.Variable(np.ones(5, np.float32)), tfopt.Momentum(0.1, nesterov=True)
    for g in grads[:3]:
        opt.apply_gradients([(g, x)])
    path = tf.train.Checkpoint(x=x, opt=opt).write(str(tmp_path / "ckpt"))
    for g in grads[3:]:
        opt.apply_gradients([(g, x)])
    fresh_x, reference = tf.Variable(np.zeros(5, np.float32)), tfopt.Momentum(0.1, nesterov=True, fused=False)
    tf.train.Checkpoint(x=fresh_x, opt=reference).read(path)
    for g in grads[3:]:
        reference.apply_gradients([(g, fresh_x)])
    assert_bitwise_equal([x.numpy(), opt.get_slot(x, "velocity").numpy()],
                         [fresh_x.numpy(), reference.get_slot(fresh_x, "velocity").numpy()])
