"""Adam's fallback without the native ops (``tfopt.kernels.fallback``) against ``fused=False``, bit for bit.

With the native ops off, ``Adam()`` steps large variables in place with fewer kernels and small
ones concatenated; both must give the plain-ops reference's variables and slots exactly, in float32
and float64, eagerly and in ``tf.function``, when hyperparameters change between steps, and on
special values (signed zeros, huge, tiny, subnormal, infinite and NaN gradients).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from rules import assert_bitwise_equal, make

import tfopt
from tfopt.kernels import fallback

LARGE = [(fallback.SMALL + 1,), (300, 200)]  # stepped in place, one by one
SMALL = [(), (7,), (3, 5), (2, 3, 4), (4_096,), (fallback.SMALL,)]  # stepped together, concatenated
LAYOUTS = {"large": LARGE, "small": SMALL, "mixed": SMALL[:3] + LARGE[:1] + SMALL[3:]}


@pytest.fixture(autouse=True)
def without_native(monkeypatch):
    """The native ops unavailable, as with ``TFOPT_NATIVE=0`` or without a compiler."""
    monkeypatch.setattr(tfopt.kernels.native, "usable", lambda: False)


def run(opt, dtype, shapes, compiled, steps=5, seed=0, grads=None):
    """``steps`` steps (hyperparameters changed before the fourth); return the variables' and slots' values."""
    rng = np.random.default_rng(seed)
    variables = [tf.Variable(rng.normal(size=s).astype(dtype)) for s in shapes]

    def step(grads):
        opt.apply_gradients(zip(grads, variables))

    step = tf.function(step) if compiled else step
    for t in range(steps):
        if t == 3:
            opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon = 0.02, 0.8, 0.99, 1e-4
        values = [rng.normal(size=s) for s in shapes] if grads is None else grads(t)
        step([tf.constant(g.astype(dtype)) for g in values])
    return [v.numpy() for v in variables] + [opt.get_slot(v, s).numpy() for v in variables for s in opt.slot_names]


def ops_of(opt, shapes):
    variables = [tf.Variable(tf.zeros(s)) for s in shapes]
    step = tf.function(lambda: opt.apply_gradients(zip([tf.ones(s) for s in shapes], variables)))
    return [op.type for op in step.get_concrete_function().graph.get_operations()]


def test_the_fallback_runs_only_by_default():
    large, small = ops_of(make("adam"), LARGE[:1]), ops_of(make("adam"), SMALL)
    assert "ResourceApplyGradientDescent" in large and "AssignSubVariableOp" not in large
    assert small.count("ConcatV2") == 3 and small.count("AssignSubVariableOp") == len(SMALL)
    reference = ops_of(make("adam", fused=False), LARGE[:1] + SMALL)
    assert "ResourceApplyGradientDescent" not in reference and "ConcatV2" not in reference
    assert "ResourceApplyAdam" in ops_of(make("adam", fused=True), LARGE[:1])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equals_the_reference_bit_for_bit(dtype, layout, compiled):
    shapes = LAYOUTS[layout]
    assert_bitwise_equal(run(make("adam"), dtype, shapes, compiled), run(make("adam", fused=False), dtype, shapes,
                                                                          compiled))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_small_variables_in_several_chunks(monkeypatch, compiled):
    """Concatenations of at most CHUNK elements (here 40: runs of a few variables, a larger one alone)."""
    monkeypatch.setattr(fallback, "CHUNK", 40)
    shapes = [(7,), (3, 5), (2, 3, 4), (), (50,), (9,), (6, 2)]
    assert [len(c) for c in fallback._chunks(list(range(len(shapes))), [tf.zeros(s) for s in shapes])] == [2, 2, 1, 2]
    assert_bitwise_equal(run(make("adam"), "float32", shapes, compiled),
                         run(make("adam", fused=False), "float32", shapes, compiled))


def test_eager_equals_tf_function():
    shapes = LAYOUTS["mixed"]
    assert_bitwise_equal(run(make("adam"), "float32", shapes, True), run(make("adam"), "float32", shapes, False))


SPECIAL = np.array([0.0, -0.0, 1e30, -1e30, 1e-30, -1e-38, 1e-45, -1e-45, 3.0, -2.0, np.inf, -np.inf, np.nan, 1.0])


def special_grads(shapes):
    """Gradients cycling through special values (a different phase per step), NaN only in the last step."""
    def grads(t):
        values = SPECIAL if t == 4 else SPECIAL[:-2]
        return [np.resize(np.roll(values, t), s) for s in shapes]

    return grads


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["large", "small"])
@pytest.mark.parametrize("hyper", [{}, {"epsilon": 0.0, "beta_1": 0.0}], ids=["default", "eps0_b1_0"])
def test_special_values_bit_for_bit(dtype, layout, hyper):
    shapes, grads = LAYOUTS[layout], special_grads(LAYOUTS[layout])
    got = run(make("adam", **hyper), dtype, shapes, True, grads=grads)
    want = run(make("adam", fused=False, **hyper), dtype, shapes, True, grads=grads)
    assert any(np.isnan(a).any() for a in want) and any(np.isinf(a).any() for a in want)
    assert_bitwise_equal(got, want)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_nans_persist_with_the_reference_payloads(compiled):
    """Non-finite gradients every step, NaNs of both signs and payloads: slots holding NaNs meet NaN gradients."""
    negative_nan = np.frombuffer(np.uint32(0xFFC00001).tobytes(), np.float32)[0]
    values = np.array([np.inf, -np.inf, np.nan, 1e38, -1e38, 0.0, -0.0, 1.0, 1e-45], np.float32)

    def grads(t):
        out = []
        for s in LAYOUTS["mixed"]:
            g = np.resize(np.roll(values, t), int(np.prod(s)))
            g[t::7] = negative_nan
            out.append(g.reshape(s))
        return out

    got = run(make("adam"), "float32", LAYOUTS["mixed"], compiled, steps=6, grads=grads)
    want = run(make("adam", fused=False), "float32", LAYOUTS["mixed"], compiled, steps=6, grads=grads)
    assert_bitwise_equal(got, want)


def test_mixed_dtypes_indexed_slices_and_half_precision():
    """float32 and float64 in one step (a group each), a sparse gradient (densified), float16 (the reference)."""
    def step_all(opt):
        rng = np.random.default_rng(5)
        variables = [tf.Variable(rng.normal(size=s).astype(d))
                     for s, d in [((50_000,), "float32"), ((9,), "float64"), ((40_000,), "float64"),
                                  ((10, 3), "float32"), ((6,), "float16")]]
        for _ in range(4):
            grads = [tf.constant(rng.normal(size=v.shape).astype(v.dtype.as_numpy_dtype)) for v in variables]
            grads[3] = tf.IndexedSlices(tf.constant(rng.normal(size=(2, 3)).astype("float32")), tf.constant([4, 1]),
                                        tf.constant([10, 3]))
            opt.apply_gradients(zip(grads, variables))
        return [v.numpy() for v in variables] + [opt.get_slot(v, s).numpy() for v in variables for s in "mv"]

    assert_bitwise_equal(step_all(make("adam")), step_all(make("adam", fused=False)))
