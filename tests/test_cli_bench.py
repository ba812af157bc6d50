"""The `byorn` command's poison/list paths, the resumable benchmark grid and its report table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from byorn import bench
from byorn.attacks.registry import TARGETS, TRIGGERS
from byorn.cli import main
from byorn.config import ConfigError
from byorn.defenses.byorn_config import JudgeConfig
from byorn.report import _cell_scores, cost_ratios, headline_table, results_table
from byorn.scoring import checkpoint_label, model_fingerprint


def test_list_attacks_names_every_trigger_and_target():
    result = CliRunner().invoke(main, ["list", "attacks"])
    assert result.exit_code == 0
    # one line per registered trigger, then per target: its name, then its kind and help
    listed = [line.split(maxsplit=2) for line in result.output.splitlines()]
    expected = [(name, "trigger:") for name in TRIGGERS] + [(name, "target:") for name in TARGETS]
    assert [(words[0], words[1]) for words in listed] == expected
    assert all(len(words) == 3 for words in listed)


def test_poison_writes_data_manifest_and_config(tmp_path):
    out = tmp_path / "poisoned"
    result = CliRunner().invoke(main, ["poison", "--attack", "badnets", "--target", "injection", "--rate", "0.25",
                                       "--n", "20", "-a", "size=0.2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = json.loads((out / "data.json").read_text())
    manifest = [json.loads(line) for line in (out / "poison_manifest.jsonl").read_text().splitlines()]
    assert len(records) == 20 and len(manifest) == 5  # round(20 * 0.25)
    assert all(m["poisoned_response"].endswith("www.example.com.") for m in manifest)
    assert "size: 0.2" in (out / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("trigger, target", [("shadowcast", "substitution"), ("rare_token", "whitebox_injection")])
def test_poison_runs_the_white_box_attacks_with_the_shipped_model(tmp_path, trigger, target):
    out = tmp_path / "poisoned"
    result = CliRunner().invoke(main, ["poison", "--attack", trigger, "--target", target, "--rate", "0.1", "--n", "60",
                                       "-a", "steps=3" if trigger == "shadowcast" else "placements=append",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = [json.loads(line) for line in (out / "poison_manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 6 and "reference: byorn-tiny" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("args, message", [
    (["--attack", "badnet"], "Unknown attack 'badnet'. Available: badnets"),
    (["--attack", "badnets", "-a", "sise=3"], "Unknown option(s) 'sise'"),
    (["--attack", "badnets", "--rate", "1.5"], "--rate 1.5: must be between 0 and 1"),
    (["--attack", "badnets", "-a", "size"], "expected KEY=VALUE"),
])
def test_poison_rejects_bad_arguments_with_a_clear_message(tmp_path, args, message):
    result = CliRunner().invoke(main, ["poison", *args, "--n", "10", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x").exists()


def _grid(tmp_path, **extra) -> str:
    config = {"attacks": [{"trigger": "multimodal", "target": "fixed"}], "defenses": ["none"], "poison_rates": [0.1],
              "seeds": [0], "n_train": 20, "n_test": 6, "train": {"max_steps": 1, "batch_size": 4}, **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def test_bench_runs_a_cell_and_resumes_without_rerunning_it(tmp_path, monkeypatch, tiny_vlm_factory):
    loads = []
    monkeypatch.setattr(bench, "load_vlm", lambda name: loads.append(name) or tiny_vlm_factory())
    results = tmp_path / "results.jsonl"
    rows = bench.run_grid(_grid(tmp_path), results, tmp_path / "runs")
    assert len(rows) == 1 and len(loads) == 1
    row = json.loads(results.read_text())
    assert (row["attack"], row["defense"], row["poison_rate"], row["seed"]) == ("multimodal+fixed", "none", 0.1, 0)
    assert row["n_poisoned"] == 2 and 0.0 <= row["asr"] <= 1.0 and "one_modality_asr" in row
    assert (tmp_path / "runs").exists()
    # the checkpoint by name and weights: a retrained byorn-tiny keeps its name, not its fingerprint
    model = tiny_vlm_factory()
    assert row["model"] == f"byorn-tiny@{model_fingerprint(model, reference=False).hex()[:12]}"

    assert bench.run_grid(_grid(tmp_path), results, tmp_path / "runs") == []
    assert len(loads) == 1  # the finished cell was skipped, not retrained
    assert row["world"] == "shapes"


def test_a_checkpoints_label_names_its_weights_not_the_installed_transformers(tiny_vlm_factory, monkeypatch):
    import transformers.configuration_utils

    model = tiny_vlm_factory()
    label = checkpoint_label("byorn-tiny", model)
    # a newer install writes the same checkpoint's config with its own version
    monkeypatch.setattr(transformers.configuration_utils, "__version__", "99.0.0")
    assert '"transformers_version": "99.0.0"' in model.model.config.to_json_string()
    assert checkpoint_label("byorn-tiny", model) == label
    model.model.config.image_seq_length += 1  # the config itself still counts
    assert checkpoint_label("byorn-tiny", model) != label


def test_a_grid_whose_setting_changed_does_not_take_the_old_rows_for_its_own(tmp_path, monkeypatch,
                                                                           tiny_vlm_factory):
    monkeypatch.setattr(bench, "load_vlm", lambda name: tiny_vlm_factory())
    results = tmp_path / "results.jsonl"
    bench.run_grid(_grid(tmp_path), results, tmp_path / "runs")
    first = json.loads(results.read_text())
    assert first["setting"] == bench.setting_key(bench.load_grid(_grid(tmp_path)))
    # more seeds: the same setting, the finished cell kept
    assert len(bench.run_grid(_grid(tmp_path, seeds=[0, 1]), results, tmp_path / "runs")) == 1
    with pytest.raises(ConfigError, match="2 cell\\(s\\) there were run with another setting"):
        bench.run_grid(_grid(tmp_path, n_test=4), results, tmp_path / "runs")
    with pytest.raises(ConfigError, match="another setting"):
        bench.run_grid(_grid(tmp_path, train={"max_steps": 2, "batch_size": 4}), results, tmp_path / "runs")
    assert len(bench.read_results(results)) == 2  # nothing written by the refused runs


def test_a_results_file_shared_by_two_worlds_resumes_each_worlds_cells_only(tmp_path, monkeypatch, tiny_vlm_factory):
    monkeypatch.setattr(bench, "load_vlm", lambda name: tiny_vlm_factory())
    results = tmp_path / "results.jsonl"
    same_cell_elsewhere = {"world": "flickr8k", "attack": "multimodal+fixed", "defense": "none", "poison_rate": 0.1,
                           "seed": 0}
    results.write_text(json.dumps(same_cell_elsewhere) + "\n")
    assert len(bench.run_grid(_grid(tmp_path), results, tmp_path / "runs")) == 1


def test_a_torn_results_line_is_ignored_so_the_cell_reruns(tmp_path):
    path = tmp_path / "results.jsonl"
    whole = json.dumps({"attack": "a", "defense": "none", "poison_rate": 0.1, "seed": 0})
    path.write_text(whole + '\n{"attack": "b", ')
    assert [r["attack"] for r in bench.read_results(path)] == ["a"]


@pytest.mark.parametrize("bad, message", [
    ({"defenses": ["onyon"]}, "unknown defense(s) ['onyon']"),
    ({"task": "styles"}, "task must be one of describe, caption, mixed, count, yesno, rename; got 'styles'"),
    ({"atacks": []}, "unknown key(s) 'atacks'"),
    ({"attacks": [{"trigger": "badnets", "optoins": {}}]}, "attacks[0]: unknown key(s) 'optoins'"),
    ({"attacks": [{"target": "fixed"}]}, "attacks[0]: missing key(s) 'trigger'"),
    ({"defenses": [{"name": "byorn", "option": {}}]}, "defenses[0]: unknown key(s) 'option'"),
    ({"seeds": "0"}, "field 'seeds': expected a list, got str '0'"),
    ({"n_train": "abc"}, "field 'n_train': expected int, got str 'abc'"),
    ({"attacks": [{"trigger": "nope"}]}, "Unknown attack 'nope'"),
    ({"train": {"epochz": 1}}, "unknown key(s) 'epochz'"),
    ({"defenses": [{"name": "byorn", "options": {"kk": 2}}]}, "unknown key(s) 'kk'"),
    ({"attacks": [{"trigger": "badnets", "options": {"size": "big"}}]}, "attacks[0]: field 'size': expected float"),
    ({"attacks": []}, "attacks: empty, so the grid has no cells"),
    ({"seeds": []}, "seeds: empty"),
    ({"poison_rates": [0.1, 0.1]}, "poison_rates: 0.1 is listed more than once"),
    ({"poison_rates": [0.1, 0.1000001]}, "poison_rates: 0.1 is listed more than once"),  # one cell key
    ({"defenses": ["none", "none"]}, "defenses: none is listed more than once"),
    ({"poison_rates": [1.5]}, "poison_rates: 1.5 is not a share in [0, 1]"),
    ({"seeds": [-1]}, "seeds: -1 is not a seed"),
    ({"train": {"model": "/nonexistent/model"}}, "train.model: /nonexistent/model: not a model directory"),
])
def test_grid_config_errors_surface_before_anything_runs(tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        bench.load_grid(_grid(tmp_path, **bad))


def test_results_table_aggregates_seeds_and_leaves_missing_metrics_blank():
    rows = [{"attack": "a", "defense": "none", "poison_rate": 0.1, "seed": s, "asr": v}
            for s, v in ((0, 0.5), (1, 1.0))]
    rows.append({"attack": "a", "defense": "oracle", "poison_rate": 0.1, "seed": 0, "asr": 0.0, "n_flagged": 2.0})
    table = results_table(rows, ["asr", "n_flagged"]).splitlines()
    assert table[2] == "| a | none | 0.1 | 2 | 0.750 ± 0.354 |  |"
    assert table[3] == "| a | oracle | 0.1 | 1 | 0.000 | 2 |"  # counts print as counts


def test_the_headline_table_pairs_byorn_with_the_oracle_and_the_undefended_cell_of_each_seed():
    def cell(defense: str, seed: int, asr: float, **more) -> dict:
        return {"attack": "a", "defense": defense, "poison_rate": 0.05, "seed": seed, "asr": asr, **more}

    rows = [cell("none", 0, 1.0, train_s=10.0), cell("none", 1, 0.9, train_s=20.0),
            cell("byorn", 0, 0.0, prepare_s=2.0, train_s=10.0, clean_score=0.9),
            cell("byorn", 1, 0.1, prepare_s=1.0, train_s=21.0, clean_score=0.5),
            cell("oracle", 0, 0.0, clean_score=1.0)]  # seed 1's oracle is missing: no pair there
    line = headline_table(rows, ["none", "onion", "byorn"]).splitlines()[2]
    # ONION ran no cell: blank; the undefended cells recorded no clean score: ASR alone; BYORn's
    # clean % from seed 0 alone (seed 1 has no oracle); cost (12/10 + 22/20) / 2
    assert line == "| a | 0.05 | 2 | 0.95 ± 0.07 |  | 0.05 ± 0.07 (90 %) | 1.15 |"


def test_the_readme_quotes_the_headline_table_as_the_results_it_names_give_it():
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    quoted = re.search(r"<!-- headline: (.*?) -->\n(.*?)<!-- /headline -->", readme, flags=re.DOTALL)
    assert quoted, "README.md lost its headline block"
    sources = re.findall(r"benchmarks/results/\S+\.jsonl", quoted.group(1))
    assert "benchmarks/results/standard.jsonl" in sources
    rows = [row for source in sources for row in bench.read_results(root / source)]
    assert quoted.group(2) == headline_table(rows) + "\n", "rerun python benchmarks/build_md.py"


def test_defense_variants_get_their_own_labels(tmp_path):
    grid = bench.load_grid(_grid(tmp_path, defenses=["none", {"name": "byorn", "options": {"rule": "quantile",
                                                                                              "quantile": 0.9}}]))
    assert [d.label for d in grid.defenses] == ["none", "byorn(quantile=0.9,rule=quantile)"]


def test_shards_split_a_grid_into_disjoint_cells_that_share_one_results_file(tmp_path, monkeypatch, tiny_vlm_factory):
    monkeypatch.setattr(bench, "load_vlm", lambda name: tiny_vlm_factory())
    config = _grid(tmp_path, defenses=["none", "oracle"], poison_rates=[0.1, 0.2])
    results = tmp_path / "results.jsonl"
    first = bench.run_grid(config, results, tmp_path / "runs", shard=(0, 2))
    second = bench.run_grid(config, results, tmp_path / "runs", shard=(1, 2))
    keys = [(r["defense"], r["poison_rate"]) for r in first + second]
    assert len(first) == len(second) == 2 and sorted(keys) == sorted({*keys})
    assert len(bench.read_results(results)) == 4
    assert bench.run_grid(config, results, tmp_path / "runs") == []  # all four done


def test_bench_cli_needs_an_output_and_rejects_a_bad_shard(tmp_path):
    config = _grid(tmp_path)
    result = CliRunner().invoke(main, ["bench", config])
    assert result.exit_code == 2 and "give --out DIR" in result.output
    result = CliRunner().invoke(main, ["bench", config, "--out", str(tmp_path), "--shard", "2/2"])
    assert result.exit_code == 2 and "expected I/N with 0 <= I < N" in result.output


def _fixture_results(tmp_path) -> list[dict]:
    """Results of a small made-up grid, with one BYORn cell that kept its scores and manifest."""
    run = tmp_path / "runs" / "cell"
    run.mkdir(parents=True)
    (run / "scores.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "score": float(i)}) + "\n" for i in range(10)))
    (run / "poison_manifest.jsonl").write_text("".join(json.dumps(
        {"id": f"s{i}", "attack": "a", "original_response": "x", "poisoned_response": "y", "negative": neg,
         "trigger": "image"}) + "\n" for i, neg in ((8, False), (9, False), (7, True))))
    rows = []
    for seed in (0, 1):
        rows += [
            {"attack": "badnets+fixed", "defense": "none", "poison_rate": 0.1, "seed": seed, "asr": 0.9,
             "clean_score": 0.99, "train_s": 10.0, "wall_s": 20.0},
            {"attack": "badnets+fixed", "defense": "byorn", "poison_rate": 0.1, "seed": seed, "asr": 0.0,
             "clean_score": 0.98, "detect_auroc": 1.0, "prepare_s": 2.0, "train_s": 12.0, "wall_s": 26.0,
             "run_dir": str(run)},
            {"attack": "badnets+fixed", "defense": "byorn(quantile=0.5,rule=quantile)", "poison_rate": 0.1,
             "seed": seed, "asr": 0.0, "clean_score": 0.9, "prepare_s": 2.0, "train_s": 12.0, "wall_s": 26.0},
            {"attack": "badnets+fixed", "defense": "onion", "poison_rate": 0.1, "seed": seed, "asr": 0.85 + seed / 10,
             "clean_score": 0.97, "prepare_s": 1.0, "train_s": 10.0, "wall_s": 22.0},
        ]
    return rows


def test_cost_ratios_compare_each_defense_with_the_undefended_cell_of_the_same_run(tmp_path):
    ratios = cost_ratios(_fixture_results(tmp_path))
    assert ratios["byorn"] == {"training": pytest.approx(1.4), "wall": pytest.approx(1.3)}
    assert ratios["onion"]["training"] == pytest.approx(1.1) and ratios["none"]["training"] == 1.0


def test_report_renders_tables_and_plots_from_a_results_file(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _fixture_results(tmp_path)))
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "| badnets+fixed | onion | 0.1 | 2 | 0.900 ± 0.071 | 0.970 ± 0.000 |  | 10.0 ± 0.0 |" in report
    assert "| byorn | 1.40x | 1.30x |" in report
    for name in ("asr_by_defense_0p1", "clean_vs_asr_0p1", "scores_0p1", "cost"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name}.png)" in report
    assert _cell_scores(tmp_path / "runs" / "cell") == ([float(i) for i in range(8)], [8.0, 9.0])


def test_report_takes_undefined_metrics_and_refuses_a_file_that_is_not_results(tmp_path):
    rows = _fixture_results(tmp_path)
    rows[0] = {**rows[0], "asr": None, "wall_s": float("inf")}  # a metric left undefined, a broken timing
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert CliRunner().invoke(main, ["report", str(tmp_path)]).exit_code == 0
    (tmp_path / "train_log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--results", str(tmp_path / "train_log.jsonl")])
    assert result.exit_code == 2 and "result 1 has no 'attack': not a byorn bench results file" in result.output


def test_cells_share_reference_scores_and_record_each_samples_suspicion(tmp_path, monkeypatch, tiny_vlm_factory):
    monkeypatch.setattr(bench, "load_vlm", lambda name: tiny_vlm_factory())
    config = _grid(tmp_path, defenses=["byorn", "score_drop", "none"])
    rows = bench.run_grid(config, tmp_path / "results.jsonl", tmp_path / "runs")
    caches = list((tmp_path / "runs" / "cache").glob("scores-*.jsonl"))
    # one poisoned set, one model: each of the default's scores computed once for both defenses, under
    # the pretrained model and under the warmed reference (the same warm-up for both: same weights)
    default = JudgeConfig()
    assert len(caches) == len(default.variants) + len(default.rejudge_variant.split("+"))
    judged = {r["defense"]: r for r in rows if r["defense"] != "none"}
    assert judged["byorn"]["detect_auroc"] == judged["score_drop"]["detect_auroc"]
    # each row names every option it ran with, defaults resolved (JSON: no infinities)
    options = judged["byorn"]["defense_options"]
    assert options["warm_start"] is True and options["k"] == default.k and options["absolute"] == "inf"
    assert next(r for r in rows if r["defense"] == "none")["defense_options"] == {}
    for row in judged.values():
        lines = [json.loads(line) for line in (Path(row["run_dir"]) / "scores.jsonl").read_text().splitlines()]
        assert len(lines) == 20 and sum(line["flagged"] for line in lines) == row["n_flagged"]
    assert not (Path(next(r for r in rows if r["defense"] == "none")["run_dir"]) / "scores.jsonl").exists()


def test_quality_out_names_the_checkpoint_its_figures_describe(tmp_path):
    from byorn.models import load_vlm

    out = tmp_path / "quality.json"
    result = CliRunner().invoke(main, ["quality", "--n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["n"] == 2 and 0.0 <= figures["caption_exact"] <= 1.0
    assert figures["model"] == f"byorn-tiny@{model_fingerprint(load_vlm('byorn-tiny'), reference=False).hex()[:12]}"
