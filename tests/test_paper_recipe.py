"""The paper's own recipe (defense byorn_paper): its options, and the EMA copy that writes its answers."""

from types import SimpleNamespace

import pytest
import torch

from byorn.config import ConfigError
from byorn.data import Sample
from byorn.defenses import build_defense
from byorn.defenses.byorn import PaperRecipe
from byorn.defenses.byorn_config import ByornConfig, PaperConfig
from byorn.defenses.ema import EmaWeights
from byorn.defenses.live_answers import LiveAnswers


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trained = torch.nn.Parameter(torch.tensor([0.0]))
        self.frozen = torch.nn.Parameter(torch.tensor([5.0]), requires_grad=False)


def test_the_paper_recipe_flags_the_top_40_percent_by_mean_nll_and_answers_with_an_ema_copy():
    config = build_defense("byorn_paper").config
    assert isinstance(config, PaperConfig) and isinstance(PaperRecipe(), PaperRecipe)
    assert (config.variant, config.rule, config.quantile, config.rejudge) == ("mean_nll", "quantile", 0.6, False)
    assert (config.generator, config.lesson_share, config.flag_copies, config.warm_start) == ("ema", 1.0, False, False)
    assert config.writes_in_training and not ByornConfig().writes_in_training
    assert build_defense("byorn_paper", quantile=0.9, generator="reference").config.quantile == 0.9  # still options
    assert build_defense("byorn").config.generator == "warmed"  # our default untouched
    with pytest.raises(ConfigError, match="generator must be one of"):
        build_defense("byorn_paper", generator="average")


def test_the_average_starts_at_the_first_weights_and_folds_in_one_step_once():
    model, ema = Toy(), EmaWeights(0.9)
    ema.follow(model, 0)
    model.trained.data.fill_(10.0)
    ema.follow(model, 1)
    ema.follow(model, 1)  # the same step again (a second micro-batch): nothing more
    with ema.swapped_in(model):
        assert model.trained.item() == pytest.approx(1.0)  # 0.9 * 0 + 0.1 * 10
        assert model.frozen.item() == 5.0
    assert model.trained.item() == 10.0  # the live weights back
    ema.follow(model, 3)  # two steps at once: as if both ended on these weights
    with ema.swapped_in(model):
        assert model.trained.item() == pytest.approx(10.0 - 9.0 * 0.81)


def test_the_average_moves_in_float32_when_the_weights_are_bfloat16():
    model, ema = Toy().to(torch.bfloat16), EmaWeights(0.99)
    ema.follow(model, 0)
    model.trained.data.fill_(1.5)
    for step in range(1, 11):  # each step adds 1 % of 1.5: below bfloat16's resolution, summed in float32
        ema.follow(model, step)
    with ema.swapped_in(model):
        assert model.trained.dtype == torch.bfloat16
        assert model.trained.item() == pytest.approx(1.5 * (1 - 0.99**10), abs=0.004)
    assert model.trained.item() == 1.5


def test_a_step_count_that_goes_back_starts_the_average_again():
    model, ema = Toy(), EmaWeights(0.9)
    ema.follow(model, 0)
    model.trained.data.fill_(10.0)
    ema.follow(model, 5)
    model.trained.data.fill_(3.0)
    ema.follow(model, 0)  # another fine-tuning with the same hook
    with ema.swapped_in(model):
        assert model.trained.item() == 3.0


def test_exactly_the_tensors_taken_out_are_put_back():
    model, ema = Toy(), EmaWeights(0.5)
    ema.follow(model, 0)
    model.trained.data.fill_(4.0)
    with ema.swapped_in(model):
        model.trained.requires_grad_(False)  # what generation does to the flags does not decide what returns
    assert model.trained.item() == 4.0


def test_the_live_weights_come_back_when_answering_fails():
    model, ema = Toy(), EmaWeights(0.5)
    ema.follow(model, 0)
    model.trained.data.fill_(4.0)
    with pytest.raises(RuntimeError), ema.swapped_in(model):
        raise RuntimeError("generation failed")
    assert model.trained.item() == 4.0


def test_generator_ema_answers_with_the_averaged_weights_and_labels_them_so():
    model = Toy()
    seen = []

    def generate(samples, *args, **kwargs):
        seen.append(model.trained.item())
        return [f"answer at {model.trained.item():g}"] * len(samples)

    trainer = SimpleNamespace(vlm=SimpleNamespace(model=model, generate=generate),
                              state=SimpleNamespace(global_step=0, epoch=0.0))
    live = LiveAnswers(ByornConfig(generator="ema", ema_decay=0.5))
    flagged = [Sample("a", None, "Say it.", "poison")]
    live.follow(trainer)
    model.trained.data.fill_(8.0)
    trainer.state.global_step = 1
    live.follow(trainer)
    answers = live.answers(flagged, trainer, {"a": "written before"}, "reference")
    assert answers == {"a": ("answer at 4", "ema")} and seen == [4.0]
    assert model.trained.item() == 8.0
    current = LiveAnswers(ByornConfig(generator="current"))
    assert current.answers(flagged, trainer, {"a": "written before"}, "reference") == {"a": ("answer at 8", "current")}


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_a_decay_outside_0_to_1_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        EmaWeights(decay)


def test_a_lora_fine_tuning_with_accumulated_steps_trains_on_answers_of_the_average(tiny_vlm_factory, tmp_path):
    """Through the Trainer: the flagged samples train on the EMA copy's answers, each batch of a
    step sees the same average, and the weights the fine-tuning ends with are its own."""
    import json

    from byorn.config import TrainConfig
    from byorn.train import finetune
    from byorn.worlds import shapes

    vlm = tiny_vlm_factory()
    samples = shapes.downstream_samples(24, seed=5)
    defense = PaperRecipe(PaperConfig(canaries=0, max_new_tokens=6))
    config = TrainConfig(max_steps=3, batch_size=8, gradient_accumulation_steps=2, logging_steps=1)
    defense.prepare(vlm, samples, tmp_path)
    seen = []
    follow = defense.live.ema.follow
    defense.live.ema.follow = lambda model, step: (seen.append(step), follow(model, step))[1]
    finetune(vlm, samples, config, tmp_path, hook=defense)
    replaced = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "replaced"]
    assert replaced and {r["source"] for r in replaced} <= {"ema", "reference_fallback"}
    assert seen == [0, 0, 1, 1, 2, 2]  # two micro-batches a step, the weights folded in once
    average = defense.live.ema._average
    trained = dict(vlm.model.named_parameters())
    assert average and all(trained[name].requires_grad for name in average)
    assert any(not torch.equal(trained[name].detach().float(), tensor) for name, tensor in average.items())


def test_a_checkpoint_holds_the_average_and_a_resumed_run_goes_on_from_it(tmp_path):
    from byorn.train import HookState

    model, live = Toy(), LiveAnswers(ByornConfig(generator="ema", ema_decay=0.5))
    trainer = SimpleNamespace(vlm=SimpleNamespace(model=model), state=SimpleNamespace(global_step=0))
    live.follow(trainer)
    model.trained.data.fill_(8.0)
    trainer.state.global_step = 1
    live.follow(trainer)  # the average: 4
    defense = PaperRecipe(PaperConfig(ema_decay=0.5))
    defense.live = live
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    HookState(defense).on_save(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(
        is_world_process_zero=True, global_step=2), None)
    resumed = PaperRecipe(PaperConfig(ema_decay=0.5))
    resumed.load_state(checkpoint)
    trainer.state.global_step = 2  # the checkpoint's step: its weights are folded in next, as without the stop
    resumed.live.follow(trainer)
    live.follow(trainer)
    assert resumed.live.ema._average["trained"].item() == live.ema._average["trained"].item() == 6.0
    fresh = PaperRecipe(PaperConfig())
    fresh.load_state(tmp_path)  # no average there: the warning, and the average starts at the next weights
    assert fresh.live.ema._step is None
