"""The test-split table: a column for every metric some model has, language-model ones included."""

from distil.report import table_rows


def test_language_model_rows_show_perplexity_and_token_accuracy():
    header, rows = table_rows({"teacher": {"perplexity": 5.123, "token_accuracy": 0.4, "nll": 1.63},
                               "distilled": {"perplexity": 6.0, "token_accuracy": 0.351, "agreement": 0.62}})
    assert header == ["model", "perplexity", "token accuracy", "agreement"]
    assert rows == [["teacher", "5.12", "40.00%", "-"], ["distilled", "6.00", "35.10%", "62.00%"]]


def test_classification_rows_have_no_language_model_columns():
    header, _ = table_rows({"student": {"accuracy": 0.9, "params": 1000}})
    assert header == ["model", "accuracy", "params"]


def test_latency_cells_show_their_spread_and_say_when_it_is_noisy():
    header, rows = table_rows({"quiet": {"latency_ms": 0.5, "latency_ms_spread": 0.08},
                               "busy": {"latency_ms": 0.9, "latency_ms_spread": 0.4}})
    assert rows == [["quiet", "0.500 ±8%"], ["busy", "0.900 ±40% noisy"]]


def test_latency_spread_is_the_interquartile_range_over_the_median(monkeypatch):
    import distil.evaluate as evaluate
    import torch

    clock = iter([0.0, 1.0, 1.0, 3.0, 3.0, 6.0, 6.0, 10.0, 10.0, 15.0])  # forward times 1, 2, 3, 4, 5 s
    monkeypatch.setattr(evaluate.time, "perf_counter", lambda: next(clock))
    stats = evaluate.latency(torch.nn.Identity(), torch.zeros(1, 2), warmup=0, repeats=5, budget_s=100)
    assert stats["repeats"] == 5 and stats["median_ms"] == 3000
    assert stats["spread"] == (4 - 2) / 3  # quartiles 2 and 4 of 1..5


def test_the_report_says_what_was_run_and_shows_each_epoch_and_each_loss_part(tmp_path):
    from distil.config import recipe_from_dict
    from distil.pipeline import run_recipe
    from distil.report import write_report

    recipe = recipe_from_dict({
        "data": {"name": "digits", "batch_size": 64}, "epochs": 3, "seed": 4, "output_dir": str(tmp_path / "my_run"),
        "teacher": {"model": "mlp", "params": {"hidden": [16]}, "epochs": 1},
        "student": {"model": "mlp", "params": {"hidden": [8]}},
        "losses": [{"name": "hinton_kd"}, {"name": "cross_entropy", "weight": 0.5}]})
    run_recipe(recipe, progress=False)
    md, page = write_report(tmp_path / "my_run")
    text = md.read_text()
    assert "## Run" in text and "| run | my_run |" in text and "| seed | 4 |" in text
    assert '| student | mlp {"hidden": [8]} |' in text and "| losses | hinton_kd x 1.0; cross_entropy x 0.5 |" in text
    assert "## Distillation per epoch (validation split)" in text
    epoch_rows = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert len(epoch_rows) == 3
    assert 'alt="Loss parts"' in page.read_text()  # two terms: a curve each


def test_sizes_within_a_decade_get_a_linear_axis():
    from distil.report import size_scale

    assert size_scale([9.7, 40.0]) == "linear"
    assert size_scale([9.7, 1100.0]) == "log"
