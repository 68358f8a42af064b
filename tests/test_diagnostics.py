"""tfopt.lab.diagnostics: per-step numbers against hand computations, in custom loops and in model.fit."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure

import tfopt
from tfopt.lab.diagnostics import Diagnostics, DiagnosticsCallback, plot_diagnostics, train_with_diagnostics

G1 = np.array([[0.5, -1.0], [2.0, 0.25]])
G2 = np.array([0.1, -0.3])
G3 = np.array([[1.5], [-0.5]])


def hand_variables():
    """Two layers: a (kernel + a zero bias) and b (kernel), in float64 so the updates are exact."""
    return [tf.Variable([[1.0, 2.0], [-1.0, 0.5]], dtype=tf.float64, name="a/kernel"),
            tf.Variable([0.0, 0.0], dtype=tf.float64, name="a/bias"),
            tf.Variable([[3.0], [4.0]], dtype=tf.float64, name="b/kernel")]


def norm(*arrays):
    return np.sqrt(sum(np.sum(np.square(a)) for a in arrays))


def read_events(logdir) -> dict:
    """{tag: {step: value}} from every event file under logdir (TensorFlow's own reader)."""
    found = {}
    for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def test_gradient_descent_rows_equal_lr_times_gradient_and_reach_tensorboard(tmp_path):
    variables = hand_variables()
    w1, w3 = variables[0].numpy(), variables[2].numpy()
    def schedule(step):  # 0.1, 0.05, ... in float64 (a Keras schedule would round it to float32)
        return 0.1 * tf.pow(tf.constant(0.5, tf.float64), tf.cast(step, tf.float64))

    opt = tfopt.GradientDescent(schedule)
    diag = Diagnostics(variables, opt, tmp_path)
    for _ in range(2):
        with diag.step():
            opt.apply_gradients(zip([G1, G2, G3], variables))
    diag.close()
    first, second = diag.rows
    assert first["step"] == 1 and second["step"] == 2
    assert first["learning_rate"] == pytest.approx(0.1, rel=1e-15)
    assert second["learning_rate"] == pytest.approx(0.05, rel=1e-15)
    assert first["update_norm"] == pytest.approx(0.1 * norm(G1, G2, G3), rel=1e-12)
    assert second["update_norm"] == pytest.approx(0.05 * norm(G1, G2, G3), rel=1e-12)
    # ||delta_layer|| / ||w_layer|| with the weights before the step (a's zero bias adds nothing to ||w_a||)
    assert first["update_to_weight/a"] == pytest.approx(0.1 * norm(G1, G2) / norm(w1), rel=1e-12)
    assert first["update_to_weight/b"] == pytest.approx(0.1 * norm(G3) / norm(w3), rel=1e-12)
    assert second["update_to_weight/b"] == pytest.approx(0.05 * norm(G3) / norm(w3 - 0.1 * G3), rel=1e-12)
    assert not any(k.startswith("slot_rms/") for k in first)  # plain SGD has no slots
    events = read_events(tmp_path)
    assert set(events) == {"learning_rate", "update_norm", "update_to_weight/a", "update_to_weight/b"}
    for row in diag.rows:
        for tag, by_step in events.items():
            assert by_step[row["step"]] == pytest.approx(row[tag], rel=1e-6)  # float32 in the event file
    np.testing.assert_allclose(diag.columns()["update_norm"], [first["update_norm"], second["update_norm"]])


def test_adam_slot_rms_and_every(tmp_path):
    variables = hand_variables()
    opt = tfopt.Adam(0.1)
    diag = Diagnostics(variables, opt, every=2)
    for _ in range(3):
        with diag.step():
            opt.apply_gradients(zip([G1, G2, G3], variables))
    assert [r["step"] for r in diag.rows] == [1, 3]
    g = np.concatenate([G1.ravel(), G2, G3.ravel()])
    # after step 1: m = (1 - beta_1) g, v = (1 - beta_2) g^2
    assert diag.rows[0]["slot_rms/m"] == pytest.approx(0.1 * np.sqrt(np.mean(g ** 2)), rel=1e-12)
    assert diag.rows[0]["slot_rms/v"] == pytest.approx(0.001 * np.sqrt(np.mean(g ** 4)), rel=1e-12)
    # step 1 of Adam moves every coordinate by lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g) (to eps)
    assert diag.rows[0]["update_norm"] == pytest.approx(0.1 * np.sqrt(g.size), rel=1e-6)


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="hidden"),
                             keras.layers.Dense(1, name="out")])


def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(16, 3)).astype(np.float32), rng.normal(size=(16, 1)).astype(np.float32)


def first_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x) - y))
    return [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]


def expected_first_row(model, grads, lr):
    """The first step's row when it is ``w <- w - lr * g``."""
    variables = model.trainable_variables
    weights = [v.numpy().astype(np.float64) for v in variables]
    assert [v.path for v in variables] == [f"{model.name}/{layer}/{kind}" for layer in ("hidden", "out")
                                           for kind in ("kernel", "bias")]  # named without the model's name
    return {"update_norm": lr * norm(*grads),
            "update_to_weight/hidden": lr * norm(*grads[:2]) / norm(*weights[:2]),
            "update_to_weight/out": lr * norm(*grads[2:]) / norm(*weights[2:])}


@pytest.mark.parametrize("make", [lambda: tfopt.GradientDescent(0.1).as_keras(), lambda: keras.optimizers.SGD(0.1)],
                         ids=["as_keras", "keras"])
def test_fit_callback_matches_the_first_gradient(make, tmp_path):
    x, y = data()
    model = tiny_model()
    expected = expected_first_row(model, first_gradients(model, x, y), 0.1)
    model.compile(make(), "mse")
    callback = DiagnosticsCallback(tmp_path)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[callback])
    rows = callback.diagnostics.rows
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["learning_rate"] == pytest.approx(0.1, rel=1e-6)
    for name, value in expected.items():
        assert rows[0][name] == pytest.approx(value, rel=1e-4), name
    events = read_events(tmp_path)
    assert sorted(events["update_norm"]) == [1, 2, 3]
    assert events["update_norm"][3] == pytest.approx(rows[2]["update_norm"], rel=1e-6)


@pytest.mark.parametrize("make, kinds", [(lambda: tfopt.Adam(0.01).as_keras(), ("m", "v")),
                                         (lambda: keras.optimizers.Adam(0.01), ("momentum", "velocity"))],
                         ids=["as_keras", "keras"])
def test_fit_slot_rms_of_adam(make, kinds):
    x, y = data()
    model = tiny_model()
    g = np.concatenate([a.ravel() for a in first_gradients(model, x, y)])
    model.compile(make(), "mse")
    callback = DiagnosticsCallback()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    (row,) = callback.diagnostics.rows
    assert sorted(k for k in row if k.startswith("slot_rms/")) == [f"slot_rms/{k}" for k in kinds]
    assert row[f"slot_rms/{kinds[0]}"] == pytest.approx(0.1 * np.sqrt(np.mean(g ** 2)), rel=1e-4)
    assert row[f"slot_rms/{kinds[1]}"] == pytest.approx(0.001 * np.sqrt(np.mean(g ** 4)), rel=1e-4)


def test_custom_loop_with_a_keras_model_and_a_compiled_step(tmp_path):
    x, y = data()
    model = tiny_model()
    opt = tfopt.GradientDescent(0.1)
    expected = expected_first_row(model, first_gradients(model, x, y), 0.1)

    @tf.function(autograph=False)
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    diag = Diagnostics(model, opt, tmp_path)
    for _ in range(2):
        with diag.step():
            train_step()
    assert [r["step"] for r in diag.rows] == [1, 2]
    for name, value in expected.items():
        assert diag.rows[0][name] == pytest.approx(value, rel=1e-4), name
    fig = plot_diagnostics(diag, title="tiny", save=tmp_path / "d.png")
    assert isinstance(fig, Figure) and (tmp_path / "d.png").stat().st_size > 0
    lr, norm_ax, ratios, slots = fig.axes
    assert len(ratios.lines) == 3  # two layers and the 1e-3 line
    assert ratios.get_yscale() == "log" and norm_ax.get_yscale() == "log"
    assert [t.get_text() for t in ratios.get_legend().get_texts()] == [k.split("/", 1)[1] for k in expected
                                                                      if "/" in k] + ["1e-3 (rule of thumb)"]
    assert slots.texts[0].get_text() == "no slots"


def test_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        Diagnostics(hand_variables(), tfopt.Adam(), every=0)
    with pytest.raises(TypeError, match="Target 1 is a ndarray"):
        Diagnostics([tf.Variable(1.0), np.zeros(2)], tfopt.Adam())
    with pytest.raises(TypeError, match="optimizer"):
        Diagnostics(hand_variables(), "adam")
    with pytest.raises(ValueError, match="no recorded steps"):
        plot_diagnostics([])


def test_a_wrapper_reports_its_rules_learning_rate_and_every_slot():
    variables = hand_variables()
    opt = tfopt.Lookahead(tfopt.Adam(0.1))
    diag = Diagnostics(variables, opt)
    with diag.step():
        opt.apply_gradients(zip([G1, G2, G3], variables))
    (row,) = diag.rows
    assert row["learning_rate"] == pytest.approx(0.1, rel=1e-15)
    assert sorted(k for k in row if k.startswith("slot_rms/")) == ["slot_rms/m", "slot_rms/slow", "slot_rms/v"]


def mse(model, x, y):
    return tf.reduce_mean(tf.square(model(x) - y))


def test_train_with_diagnostics_records_every_step_and_stops_at_a_non_finite_loss(tmp_path):
    x, y = data()
    model = tiny_model()
    expected = expected_first_row(model, first_gradients(model, x, y), 0.1)
    first_loss = float(mse(model, x, y))
    diag = train_with_diagnostics(model, tfopt.GradientDescent(0.1), [(x, y)] * 4, mse, tmp_path)
    assert [r["step"] for r in diag.rows] == [1, 2, 3, 4]
    assert diag.rows[0]["loss"] == pytest.approx(first_loss, rel=1e-5)  # the loss before the step's update
    assert np.all(np.diff(diag.columns()["loss"]) < 0)
    for name, value in expected.items():
        assert diag.rows[0][name] == pytest.approx(value, rel=1e-4), name
    assert sorted(read_events(tmp_path)["loss"]) == [1, 2, 3, 4]
    blown = train_with_diagnostics(tiny_model(), tfopt.GradientDescent(1e19), [(x, y)] * 10, mse)
    assert 1 < len(blown.rows) < 10 and not np.isfinite(blown.rows[-1]["loss"])


def test_plot_compares_runs_by_colour_and_layers_by_position():
    runs = {}
    for label, opt in (("SGD", tfopt.GradientDescent(0.1)), ("Adam", tfopt.Adam(0.01))):
        variables = hand_variables()
        diag = Diagnostics(variables, opt)
        for _ in range(3):
            with diag.step():
                opt.apply_gradients(zip([G1, G2, G3], variables))
        runs[label] = diag
    fig = plot_diagnostics(runs)
    lr, norm_ax, ratios, slots = fig.axes
    assert [t.get_text() for t in lr.get_legend().get_texts()] == ["SGD", "Adam"] and lr.get_yscale() == "log"
    assert len(norm_ax.lines) == 2 and norm_ax.lines[0].get_color() != norm_ax.lines[1].get_color()
    assert [t.get_text() for t in ratios.get_legend().get_texts()] == ["layer 1: a", "layer 2: b",
                                                                      "1e-3 (rule of thumb)"]
    assert [line.get_linestyle() for line in ratios.lines[:4]] == ["-", "--", "-", "--"]
    assert [t.get_text() for t in slots.get_legend().get_texts()] == ["m", "v"] and len(slots.lines) == 2
    with pytest.raises(ValueError, match="no recorded steps to plot in 'empty'"):
        plot_diagnostics({"empty": []})
