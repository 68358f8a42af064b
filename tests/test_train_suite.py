"""The training suite: workloads, trials, scoring, worker processes and the report of ``tfopt bench --suite train``."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

import tfopt
from tfopt.lab import bench, parallel, train
from tfopt.lab import workloads as workloads_lib

PNG = b"\x89PNG\r\n\x1a\n"


def trials_of(names, workloads, rates=(0.01,), seeds=1, steps=None):
    return train.make_trials(bench.make_optimizers(names), rates, workloads, seeds=seeds, steps=steps)


# ------------------------------------------------------------------ seeds
def test_a_trials_seed_comes_from_its_workload_and_seed_index_only():
    seed = train.trial_seed("mlp_digits", 2)
    assert seed == train.trial_seed("mlp_digits", 2) and 0 <= seed < 2**31  # the same trial: the same seed, any time
    others = {train.trial_seed(*key) for key in [("cnn_digits", 2), ("mlp_digits", 0), ("mlp_digits", 1)]}
    assert seed not in others and len(others) == 3
    trials = trials_of(["Adam", "Momentum"], ["linreg_diabetes"], rates=(0.1, 0.01), seeds=3)
    assert len(trials) == 12 and len({t.seed for t in trials}) == 3  # shared by optimizers and learning rates
    assert all(t.seed == train.trial_seed("linreg_diabetes", t.seed_index) for t in trials)


# -------------------------------------------------------------- optimum
def test_the_convex_optima_are_the_float64_minima():
    """scikit-learn's logistic optimum has a zero gradient of our objective (NumPy, float64); the linear one
    solves the normal equations."""
    d = workloads_lib.load_cancer()
    x, y = d.x_train.astype(np.float64), d.y_train[:, 0].astype(np.float64)
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=workloads_lib.LOGREG_C, tol=1e-12, max_iter=10_000).fit(x, y)
    w, b = fit.coef_[0], fit.intercept_[0]
    p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    grad_w = x.T @ (p - y) / len(x) + workloads_lib.LOGREG_L2 * w
    assert np.max(np.abs(grad_w)) < 1e-6 and abs(np.mean(p - y)) < 1e-6
    assert workloads_lib.convex_optimum("logreg_cancer") == pytest.approx(
        workloads_lib.logistic_objective(w, b, x, y), abs=1e-12)

    d = workloads_lib.load_diabetes()
    a = np.hstack([d.x_train.astype(np.float64), np.ones((len(d.x_train), 1))])
    y = d.y_train[:, 0].astype(np.float64)
    w = np.linalg.solve(a.T @ a, a.T @ y)
    assert workloads_lib.convex_optimum("linreg_diabetes") == pytest.approx(0.5 * np.mean((a @ w - y) ** 2),
                                                                            rel=1e-12)
    with pytest.raises(ValueError, match="'mlp_digits' has no known optimum"):
        workloads_lib.convex_optimum("mlp_digits")


def test_convex_trials_close_the_gap():
    """Adam at 0.1, full batch: the gap to the optimum shrinks to ~1e-5 and never goes below 0 (float32 weights
    evaluated in float64 cannot beat the float64 optimum by more than rounding)."""
    results = parallel.run_trials(trials_of(["Adam"], ["logreg_cancer", "linreg_diabetes"], rates=(0.1,)), workers=1)
    for r in results:
        assert r.status == "ok" and r.reached
        assert -1e-9 <= r.gap_to_optimum < 1e-3, (r.workload, r.gap_to_optimum)
        start, end = r.curve[0][1], r.curve[-1][1]
        assert end < 0.5 * start
    logreg = results[0]
    assert 0.9 < logreg.final_val_accuracy <= 1.0 and logreg.final_train_loss > workloads_lib.convex_optimum(
        "logreg_cancer")


# ------------------------------------------------------------ workloads
def test_the_embedding_task_has_sparse_gradients_and_lazy_adam_trains_it():
    import tensorflow as tf

    w = workloads_lib.get("embedding_sparse")
    d = w.load()
    model = w.build_model(d)
    with tf.GradientTape() as tape:
        loss = w.loss(model, tf.constant(d.x_train[:64]), tf.constant(d.y_train[:64]))
    grads = tape.gradient(loss, model.trainable_variables)
    assert isinstance(grads[0], tf.IndexedSlices)
    assert len(np.unique(grads[0].indices.numpy())) < workloads_lib.VOCAB // 4  # few rows of the table
    [r] = parallel.run_trials(trials_of(["LazyAdam"], ["embedding_sparse"], steps=40), workers=1)
    assert r.status == "ok" and r.steps == 40 and r.final_val_accuracy > 0.6
    assert r.curve[-1][1] < r.curve[0][1]


def test_model_fit_through_as_keras_matches_the_custom_loop():
    """The autoencoder's model.fit (opt.as_keras(), steps_per_execution) against the custom loop on the same
    batches from the same start: the same training up to float32 rounding (different compiled graphs)."""
    import keras

    w = workloads_lib.get("autoencoder_fit")
    d = w.load()
    batches = train._batches(w, d, 60, np.random.default_rng(0))
    curves = []
    for trainer in (train._train_with_fit, train._train_in_loop):
        keras.utils.set_random_seed(7)
        model = w.build_model(d)
        from tfopt.lab.harness import _without_graph_rewrites

        with _without_graph_rewrites():
            record = trainer(w, model, tfopt.Adam(0.01), d, batches)
        curves.append(np.asarray([c[:2] for c in record.curve]))
    fit, loop = curves
    np.testing.assert_array_equal(fit[:, 0], [0, 20, 40, 60])
    np.testing.assert_allclose(fit, loop, rtol=2e-4)
    assert fit[-1, 1] < 0.8 * fit[0, 1]  # it trained


def test_workload_lookup_and_targets():
    assert workloads_lib.names() == ["logreg_cancer", "linreg_diabetes", "mlp_digits", "cnn_digits",
                                     "autoencoder_fit", "embedding_sparse", "noisy_quadratic"]
    with pytest.raises(ValueError, match="unknown workload 'mnist'; choose from logreg_cancer"):
        workloads_lib.get("mnist")
    mlp = workloads_lib.get("mlp_digits")
    assert mlp.reached(1.0, 0.96) and not mlp.reached(0.0, 0.95) and not mlp.reached(0.0, math.nan)
    quad = workloads_lib.get("noisy_quadratic")
    assert quad.reached(0.05, None) and not quad.reached(math.nan, None)


def test_a_rule_that_raises_is_recorded_and_the_sweep_goes_on():
    """user_rules.NumpyMomentum calls .numpy() in its update: it cannot run in the compiled loop."""
    trials = trials_of(["user_rules:NumpyMomentum", "Adam"], ["linreg_diabetes"], rates=(0.01, 0.1), steps=20)
    results = parallel.run_trials(trials, workers=1)
    failed, ok = results[:2], results[2:]
    for r in failed:
        assert (r.status, r.reached, r.steps) == ("error", False, 0) and math.isnan(r.final_val_loss)
        assert r.error.startswith(("NotImplementedError", "AttributeError", "TypeError")) and "numpy" in r.error
        assert r.row()["final_val_loss"] is None and r.row()["error"] == r.error
    assert all(r.status == "ok" and r.error is None for r in ok)
    numpy_momentum, adam = train.summarize(results)
    assert numpy_momentum.reached == 0 and numpy_momentum.steps_to_target == math.inf
    assert [e.split(":")[0] for e in numpy_momentum.errors] == ["lr=0.01", "lr=0.1"] and adam.errors == []


def test_a_wrapper_trains_at_each_learning_rate_of_the_sweep():
    """A wrapper takes no learning_rate: the trial sets its inner rule's."""
    built = bench.make_optimizers([tfopt.Lookahead(tfopt.Adam(0.5))])
    trials = train.make_trials(built, (0.01, 0.1), ["linreg_diabetes"], seeds=1, steps=30)
    slow, fast = parallel.run_trials(trials, workers=1)
    assert slow.status == fast.status == "ok" and fast.final_val_loss < slow.final_val_loss
    assert train.build_optimizer(trials[1]).inner_optimizer.get_config()["learning_rate"] == 0.1


# -------------------------------------------------------------- scoring
def fake(workload, optimizer, lr, seed_index, steps_to_target, val_loss=0.5, status="ok"):
    return train.TrialResult(
        workload=workload, optimizer=optimizer, learning_rate=lr, seed_index=seed_index, seed=0, status=status,
        reached=steps_to_target is not None, steps_to_target=steps_to_target,
        seconds_to_target=None if steps_to_target is None else steps_to_target / 100, steps=100,
        final_train_loss=val_loss, final_val_loss=val_loss, final_train_accuracy=None, final_val_accuracy=None,
        gap_to_optimum=None, step_time=0.01, trace_time=0.1, worker="here")


def test_summaries_pick_the_best_learning_rate_by_median_steps():
    results = [fake("w", "A", 0.1, k, s) for k, s in enumerate([10, 20, None])]  # median 20
    results += [fake("w", "A", 0.01, k, s) for k, s in enumerate([30, 30, 30])]  # median 30
    results += [fake("w", "A", 1.0, k, None, math.nan, "diverged") for k in range(3)]
    results += [fake("w", "B", 0.1, k, None, v) for k, v in enumerate([0.3, 0.2, 0.4])]  # never: lowest val loss
    results += [fake("w", "B", 0.01, k, None, 0.6) for k in range(3)]
    a, b = train.summarize(results)
    assert (a.optimizer, a.best_lr, a.reached, a.seeds, a.steps_to_target) == ("A", 0.1, 2, 3, 20.0)
    assert a.diverged_lrs == [1.0] and a.seconds_to_target == pytest.approx(0.2)
    assert (b.optimizer, b.best_lr, b.reached, b.steps_to_target, b.final_val_loss) == ("B", 0.1, 0, math.inf, 0.3)


def test_performance_profile_and_score_by_hand():
    """Three workloads; A is fastest on two, B on one; C never reaches w3; nobody reaches w4."""
    steps = {("w1", "A"): 10, ("w1", "B"): 20, ("w1", "C"): 50, ("w2", "A"): 30, ("w2", "B"): 15, ("w2", "C"): 15,
             ("w3", "A"): 40, ("w3", "B"): 100, ("w3", "C"): None, ("w4", "A"): None, ("w4", "B"): None,
             ("w4", "C"): None}
    summaries = train.summarize([fake(w, o, 0.1, 0, s) for (w, o), s in steps.items()])
    ratio = train.ratios(summaries)
    assert ratio["A"] == {"w1": 1.0, "w2": 2.0, "w3": 1.0, "w4": math.inf}
    assert ratio["B"] == {"w1": 2.0, "w2": 1.0, "w3": 2.5, "w4": math.inf}
    assert ratio["C"] == {"w1": 5.0, "w2": 1.0, "w3": math.inf, "w4": math.inf}
    rho = train.performance_profile(ratio, [1.0, 2.0, 3.0, 10.0])
    np.testing.assert_array_equal(rho["A"], [0.5, 0.75, 0.75, 0.75])
    np.testing.assert_array_equal(rho["B"], [0.25, 0.5, 0.75, 0.75])
    np.testing.assert_array_equal(rho["C"], [0.25, 0.25, 0.25, 0.5])
    # Area under the step function on [1, 4] over 3: A = (3 + 2 + 3 + 0) / 4 / 3.
    assert train.profile_score(ratio["A"]) == pytest.approx((3 + 2 + 3 + 0) / 12)
    taus = np.linspace(1, 4, 300001)
    area = np.trapezoid(train.performance_profile(ratio, taus)["B"], taus) / 3
    assert train.profile_score(ratio["B"]) == pytest.approx(area, abs=1e-4)


# ---------------------------------------------------- workers and process
def test_worker_processes_give_the_numbers_of_the_in_process_run():
    """Two worker processes against this process, the order of the trials reversed: identical numbers (timings
    aside), and the trials really ran elsewhere. A conv net is among them (its sums split by thread count), and a
    user's rule by import path (tests/user_rules.py). ~25 s, most of it two fresh processes importing TensorFlow."""
    trials = trials_of(["Adam", "user_rules:RMSprop"], ["cnn_digits", "embedding_sparse"], steps=40)
    here = parallel.run_trials(trials, workers=1)
    there = parallel.run_trials(trials[::-1], workers=2)[::-1]
    for a, b in zip(here, there):
        assert a.numbers() == b.numbers(), (a.workload, a.optimizer)
        assert np.isfinite(a.final_val_loss) and a.curve[-1][1] != a.curve[0][1]
    pids = {r.worker for r in there}
    assert len(pids) == 2 and all(r.worker not in pids for r in here)


# ----------------------------------------------------------------- report
@pytest.fixture(scope="module")
def train_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-report")
    printed = []
    report = bench.run_benchmark(out, quick=True, progress=False, echo=printed.append, suite="train", workers=1,
                                 optimizers=["Adam", "GradientDescent"], workloads=["linreg_diabetes",
                                                                                    "noisy_quadratic"])
    return report, out, "\n".join(printed)


def test_train_report_files_and_tables(train_report):
    report, out, printed = train_report
    for name in ("report.md", "train_results.csv", "train_results.json", "performance_profile.png",
                 "train_curves.png"):
        assert (out / name) in report.files, name
    for name in ("performance_profile.png", "train_curves.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert not (out / "results.csv").exists()  # no analytic suite
    with open(out / "train_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == train.TRIAL_COLUMNS
    keys = {(r["workload"], r["optimizer"], float(r["learning_rate"])) for r in rows}
    assert keys == {(w, o, lr) for w in ("linreg_diabetes", "noisy_quadratic") for o in ("Adam", "GradientDescent")
                    for lr in train.QUICK_LEARNING_RATES}
    assert len(rows) == 2 * 2 * len(train.QUICK_LEARNING_RATES) == len(report.trials)
    data = json.loads((out / "train_results.json").read_text(), parse_constant=lambda t: pytest.fail(t))
    assert data["settings"]["train"]["seeds"] == train.QUICK_SEEDS and len(data["summaries"]) == 4
    assert data["trials"][0]["curve"][0][0] == 0
    assert "Training suite at a glance" in printed and "score (steps)" in printed
    printed.encode("ascii")


def test_train_report_puts_the_figures_first_with_a_sentence_each(train_report):
    _, out, _ = train_report
    text = (out / "report.md").read_text()
    profile, curves = text.index("![Performance profile](performance_profile.png)"), text.index("](train_curves.png)")
    table = text.index("| workload | target | Adam | GradientDescent |")
    assert profile < curves < table
    after = text[profile:].split("\n\n")
    assert after[1].startswith("Read it left to right")  # the sentence right under the figure
    assert "| linreg_diabetes | val. loss <= 0.245 |" in text
    assert "| optimizer | score (steps) | score (seconds) | targets reached |" in text
    assert "How to read it" in text


def test_suite_all_writes_one_report_with_both_and_an_extra_section(tmp_path):
    extra = bench.Section("My own section", [("Mine", tmp_path / "mine.png", "Read me.")])
    report = bench.run_benchmark(tmp_path, quick=True, progress=False, echo=None, suite="all", workers=1,
                                 optimizers=["Adam"], workloads=["linreg_diabetes"], learning_rates=[0.1],
                                 extra_sections=[extra])
    text = (tmp_path / "report.md").read_text()
    order = [text.index(s) for s in ("](performance_profile.png)", "| optimizer | himmelblau | rosenbrock |",
                                     "## Learning-rate sensitivity", "](loss_curves.png)", "## My own section",
                                     "![Mine](mine.png)", "## Analytic suite: all runs")]
    assert order == sorted(order)
    assert text.count("\n# ") == 0 and text.startswith("# tfopt benchmark")
    assert report.runs and report.trials and {r.learning_rate for r in report.trials} == {0.1}
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "train_results.csv").is_file()
    assert dataclasses.asdict(report.summaries[0])["best_lr"] == 0.1


def test_diagnostics_section_records_each_optimizer_at_its_best_rate(tmp_path):
    summaries = [train.summarize([fake("mlp_digits", label, lr, 0, 50)])[0]
                 for label, lr in (("Adam", 0.01), ("NumpyMomentum", 0.1))]
    built = bench.make_optimizers(["Adam", "user_rules:NumpyMomentum", "GradientDescent"])
    section, files = train.diagnostics_section(built, summaries, tmp_path)
    assert files == [tmp_path / "diagnostics.png"] and files[0].read_bytes()[:8] == PNG
    (title, path, note), = section.figures
    assert path == files[0] and "1e-3" in note and str(tmp_path / "tensorboard") in note
    assert list((tmp_path / "tensorboard" / "Adam").glob("events.out.tfevents.*"))
    # GradientDescent has no summary on the workload: not run; the rule that cannot run compiled is named.
    assert not (tmp_path / "tensorboard" / "GradientDescent").exists()
    assert "* NumpyMomentum:" in section.text and "numpy" in section.text
    assert train.diagnostics_section(built, [], tmp_path) == (None, [])


def test_bad_suite_and_workload_names():
    with pytest.raises(ValueError, match="unknown suite 'fast'; choose from analytic, train, all"):
        bench.run_benchmark("unused", suite="fast")
    with pytest.raises(ValueError, match="unknown workload 'mnist'"):
        bench.run_benchmark("unused", suite="train", workloads=["mnist"])
    with pytest.raises(ValueError, match="workers must be >= 1"):
        parallel.run_trials([], workers=0)
