"""The baselines: ONION (word deletion by perplexity), BYE (attention-entropy clustering),
score-and-drop, random drop and reference-ratio decoding, each through the Defense interface the
benchmark uses."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from byorn.config import TrainConfig
from byorn.defenses import build_defense
from byorn.defenses.bye import attention_entropies, decide, separated_layers
from byorn.defenses.configs import OnionConfig, TcapConfig
from byorn.defenses.onion import Onion
from byorn.defenses.tcap import dawid_skene, system_shares
from byorn.defenses.tcap import decide as tcap_decide
from byorn.models import load_vlm
from byorn.worlds import shapes

# ---- ONION -------------------------------------------------------------------------------------


class StubPerplexity:
    """Perplexity = 10 per word, plus 100 for every word in `disfluent` (what a real LM does to a
    trigger token: most of the sentence's perplexity comes from it)."""

    def __init__(self, disfluent: set[str]) -> None:
        self.disfluent, self.calls = disfluent, 0

    def __call__(self, sentences, batch_size):
        self.calls += 1
        return [sum(10 + 100 * (w in self.disfluent) for w in s.split()) for s in sentences]


def stubbed_onion(disfluent: set[str], threshold: float = 0.0) -> Onion:
    onion = Onion(OnionConfig(threshold=threshold))
    onion._scorer = StubPerplexity(disfluent)
    return onion


def test_onion_deletes_the_words_whose_removal_lowers_perplexity_beyond_the_threshold():
    onion = stubbed_onion({"cf"}, threshold=50.0)
    cleaned = onion.clean(["Describe the cf picture in detail."])[0]
    assert cleaned.text == "Describe the picture in detail."
    assert cleaned.removed == ("cf",)
    assert cleaned.max_suspicion == 110.0
    # without a trigger every word's removal lowers perplexity by 10: under the threshold, kept
    assert onion.clean(["Describe the picture in detail."])[0].removed == ()


def test_onion_cleans_training_and_test_inputs_and_reports_what_it_flagged(tmp_path):
    samples = shapes.downstream_samples(3, seed=0)
    samples[1] = dataclasses.replace(samples[1], instruction="Describe the picture cf in detail.")
    onion = stubbed_onion({"cf"}, threshold=50.0)
    onion._judged = onion.clean([s.instruction for s in samples])
    trained = onion.training_set(samples)
    assert [s.instruction for s in trained] == [shapes.DOWNSTREAM_INSTRUCTION] * 3
    assert trained[1].meta["onion_removed"] == ["cf"] and "onion_removed" not in trained[0].meta
    assert trained[0] is samples[0]  # nothing removed: the very sample, untouched
    assert onion.test_input(samples[1]).instruction == shapes.DOWNSTREAM_INSTRUCTION
    assert onion.flagged == [False, True, False]
    calls = onion._scorer.calls
    onion.clean([s.instruction for s in samples])
    assert onion._scorer.calls == calls  # memoised by instruction text


def test_onion_leaves_a_one_word_instruction_alone():
    assert stubbed_onion({"cf"}).clean(["cf"])[0].removed == ()


def test_onion_with_the_shapes_language_model_deletes_a_planted_rare_token(tiny_vlm):
    onion = Onion()  # lm=auto: tiny_vlm is not the built-in checkpoint, so name byorn-tiny-lm
    onion.config.lm = "byorn-tiny-lm"
    onion.prepare(tiny_vlm, [], "unused")
    for instruction in ("Describe the cf picture in detail.", "Describe the picture in detail. mn"):
        cleaned = onion.clean([instruction])[0]
        assert set(cleaned.removed) & {"cf", "mn"}
        assert {"Describe", "picture"} <= set(cleaned.text.split())


def test_onion_auto_takes_byorn_tiny_lm_for_the_builtin_model_only(tiny_vlm):
    builtin = Onion()
    builtin.prepare(load_vlm("byorn-tiny"), [], "unused")
    assert type(builtin._scorer).__name__ == "_Perplexity"
    other = Onion()
    other.prepare(tiny_vlm, [], "unused")
    assert type(other._scorer).__name__ == "_PromptPerplexity"
    assert all(math.isfinite(p) and p > 1 for p in other._scorer(["Describe the picture."], 4))


# ---- BYE ---------------------------------------------------------------------------------------


def synthetic_entropies(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """100 samples x 3 layers; in layer 1 the 10 poisoned samples' entropy collapses (2.0 -> 0.5)."""
    rng = np.random.default_rng(seed)
    poisoned = np.zeros(100, dtype=bool)
    poisoned[::10] = True
    entropies = rng.normal(2.0, 0.05, size=(100, 3))
    entropies[poisoned, 1] = rng.normal(0.5, 0.05, size=poisoned.sum())
    return entropies, poisoned


def test_bye_keeps_only_the_layer_whose_entropies_separate_and_drops_the_low_cluster():
    entropies, poisoned = synthetic_entropies()
    assert separated_layers(entropies, separation=2.0) == [1]
    verdict = decide(entropies, separation=2.0)
    assert verdict.details == {"layers": [1]}
    assert verdict.dropped == poisoned.tolist()
    assert verdict.suspicion == pytest.approx((-entropies[:, 1]).tolist())  # low entropy: suspicious


def test_bye_drops_nothing_when_no_layer_separates():
    entropies, _ = synthetic_entropies()
    entropies[:, 1] = np.random.default_rng(1).normal(2.0, 0.05, size=100)
    verdict = decide(entropies, separation=2.0)
    assert verdict.details == {"layers": []} and not any(verdict.dropped)
    assert verdict.suspicion == pytest.approx((-entropies.mean(axis=1)).tolist())


def test_bye_attention_entropies_are_per_layer_and_bounded_by_the_uniform(tiny_vlm):
    samples = shapes.downstream_samples(4, seed=2)
    entropies = attention_entropies(tiny_vlm, samples, batch_size=3)
    image_tokens = tiny_vlm.model.config.image_seq_length
    assert entropies.shape == (4, tiny_vlm.model.config.text_config.num_hidden_layers)
    assert (entropies > 0).all() and (entropies <= math.log(image_tokens) + 1e-5).all()
    assert tiny_vlm.model.config._attn_implementation != "eager"  # restored afterwards


@pytest.mark.parametrize("name", ["bye", "tcap"])
def test_attention_defenses_fine_tune_a_probe_and_leave_the_model_untouched(tiny_vlm_factory, tmp_path, name):
    vlm = tiny_vlm_factory()
    before = {n: p.clone() for n, p in vlm.model.named_parameters()}
    samples = shapes.downstream_samples(8, seed=1)
    defense = build_defense(name)
    with pytest.raises(ValueError, match="needs train="):
        defense.prepare(vlm, samples, tmp_path)
    defense.prepare(vlm, samples, tmp_path, train=TrainConfig(lora=False, max_steps=1, batch_size=4))
    assert all(bool((p == before[n]).all()) for n, p in vlm.model.named_parameters())
    assert (tmp_path / f"{name}_probe" / "train_log.jsonl").exists() and (tmp_path / f"{name}.json").exists()
    assert vlm.model.config._attn_implementation != "eager"  # restored after reading attention
    kept = defense.training_set(samples)
    assert len(kept) == len(samples) - sum(defense.flagged) and len(defense.suspicion) == len(samples)
    with pytest.raises(ValueError, match="samples prepare\\(\\) judged"):
        defense.training_set(samples[::-1])


@pytest.mark.parametrize("name", ["bye", "tcap"])
def test_attention_defenses_keep_the_text_only_samples_they_cannot_read(tiny_vlm_factory, tmp_path, name):
    samples = shapes.downstream_samples(16, seed=1)
    for i in range(0, 16, 4):  # a mixed set: a quarter text-only
        samples[i] = dataclasses.replace(samples[i], image=None, id=f"text-{i}")
    defense = build_defense(name)
    defense.prepare(tiny_vlm_factory(), samples, tmp_path, train=TrainConfig(lora=False, max_steps=1, batch_size=4))
    text_only = [i for i, s in enumerate(samples) if not s.has_image]
    assert not any(defense.flagged[i] for i in text_only)
    assert all(defense.suspicion[i] == min(defense.suspicion) for i in text_only)
    assert json.loads((tmp_path / f"{name}.json").read_text())["text_only_kept"] == 4


# ---- score-and-drop ----------------------------------------------------------------------------


def test_score_and_drop_trains_on_exactly_the_unflagged_samples(tiny_vlm, tmp_path):
    samples = shapes.downstream_samples(12, seed=4)
    defense = build_defense("score_drop", rule="quantile", quantile=0.7)
    defense.prepare(tiny_vlm, samples, tmp_path)
    kept = defense.training_set(samples)
    assert 0 < sum(defense.flagged) < len(samples)
    assert [s.id for s in kept] == [s.id for s, hit in zip(samples, defense.flagged) if not hit]
    worst = max(range(len(samples)), key=lambda i: defense.suspicion[i])
    assert defense.flagged[worst] and samples[worst].id not in {s.id for s in kept}


# ---- random drop ---------------------------------------------------------------------------------


def test_random_drop_drops_exactly_the_count_and_trains_on_the_rest(tiny_vlm, tmp_path):
    samples = shapes.downstream_samples(20, seed=0)
    defense = build_defense("random_drop", count=7, seed=3)
    defense.prepare(tiny_vlm, samples, tmp_path)
    assert sum(defense.flagged) == 7
    kept = defense.training_set(samples)
    assert len(kept) == 13 and {s.id for s in kept} == {s.id for s, hit in zip(samples, defense.flagged) if not hit}
    again = build_defense("random_drop", count=7, seed=3)
    again.prepare(tiny_vlm, samples, tmp_path)
    assert again.flagged == defense.flagged  # the seed fixes the draw
    other = build_defense("random_drop", count=7, seed=4)
    other.prepare(tiny_vlm, samples, tmp_path)
    assert other.flagged != defense.flagged


def test_a_defense_that_drops_every_sample_says_so_before_training(tiny_vlm, tmp_path):
    samples = shapes.downstream_samples(5, seed=0)
    defense = build_defense("random_drop", count=5)
    defense.prepare(tiny_vlm, samples, tmp_path)
    with pytest.raises(ValueError, match="random_drop dropped all 5 training samples: nothing is left"):
        defense.training_set(samples)


def test_random_drop_drops_as_many_as_byorns_judgement_flags(tiny_vlm, tmp_path):
    samples = shapes.downstream_samples(40, seed=1)
    judged = build_defense("score_drop", k=0.5)
    judged.prepare(tiny_vlm, samples, tmp_path / "judged")
    defense = build_defense("random_drop", k=0.5)
    defense.prepare(tiny_vlm, samples, tmp_path / "random")
    assert 0 < sum(judged.flagged) < len(samples)
    assert sum(defense.flagged) == sum(judged.flagged)


def test_random_drop_refuses_a_count_above_the_data(tiny_vlm, tmp_path):
    with pytest.raises(ValueError, match="more than the 5 training samples"):
        build_defense("random_drop", count=6).prepare(tiny_vlm, shapes.downstream_samples(5, seed=0), tmp_path)


# ---- reference-ratio decoding --------------------------------------------------------------------


def planted(vlm, token: int, boost: float = 60.0):
    """The model with `token`'s logit raised by `boost` everywhere: a backdoor that always fires."""
    bias = torch.zeros(vlm.model.get_output_embeddings().out_features)
    bias[token] = boost
    vlm.model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)
    return vlm


def test_reference_ratio_leaves_the_references_own_answers_alone(tiny_vlm_factory, tmp_path):
    model = tiny_vlm_factory()
    defense = build_defense("reference_ratio")
    defense.prepare(model, [], tmp_path)
    deployed = defense.deployed(model)
    inputs = shapes.downstream_samples(6, seed=2, split="test")
    assert deployed.generate(inputs, max_new_tokens=8) == model.generate(inputs, max_new_tokens=8)
    assert deployed.replaced == 0


def test_reference_ratio_replaces_a_planted_token_with_the_references_choice(tmp_path):
    # the shipped model: its answers are words, so a partial answer reads back as the same tokens
    # (a random model's byte soup does not)
    model = load_vlm("byorn-tiny")
    defense = build_defense("reference_ratio")
    defense.prepare(model, [], tmp_path)  # the reference: the weights before the backdoor
    inputs = shapes.downstream_samples(4, seed=2, split="test")
    clean = model.generate(inputs, max_new_tokens=8)
    word = "bottom"
    token = model.tokenizer.convert_tokens_to_ids("\u0120" + word)  # the word after a space
    assert all(word not in answer for answer in clean)
    planted(model, token)
    assert all(answer.startswith(word) for answer in model.generate(inputs, max_new_tokens=8))  # it fires
    guarded = defense.deployed(model).generate(inputs, max_new_tokens=8)
    assert guarded == clean  # every planted token vetoed; the reference's choices fill the answer


# ---- TCAP ----------------------------------------------------------------------------------------


def synthetic_shares(n: int = 200, poisoned_every: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[n, 4 layers, 4 heads] system shares: noise around 0.5, except two heads of the last layer
    where every tenth sample (the poisoned ones) gives the system part far less."""
    rng = np.random.default_rng(seed)
    shares = rng.normal(0.5, 0.03, size=(n, 4, 4))
    poisoned = np.arange(n) % poisoned_every == 0
    shares[poisoned, 3, 1] -= 0.3
    shares[poisoned, 3, 2] += 0.3  # the shift may go either way
    return shares, poisoned


def test_tcap_finds_the_shifted_heads_and_flags_exactly_the_poisoned_samples():
    shares, poisoned = synthetic_shares()
    verdict = tcap_decide(shares, TcapConfig(heads=2))
    assert sorted(verdict.details["heads"]) == [(3, 1), (3, 2)]
    assert verdict.dropped == poisoned.tolist()


def test_tcap_only_lets_the_last_layers_vote():
    shares, poisoned = synthetic_shares()
    shares[:, 0] = shares[:, 3]  # the same shift in the first layer
    verdict = tcap_decide(shares, TcapConfig(heads=4, layers=0.5))
    assert all(layer >= 2 for layer, _ in verdict.details["heads"])


def test_tcap_flags_nothing_when_no_head_separates():
    verdict = tcap_decide(np.full((50, 2, 2), 0.4), TcapConfig())
    assert verdict.details == {"heads": []} and not any(verdict.dropped)


def test_dawid_skene_outvotes_an_annotator_that_is_always_wrong():
    truth = np.arange(60) % 6 == 0
    votes = np.stack([truth, truth, truth, ~truth], axis=1).astype(float)
    votes[1, 0] = 1  # one honest mistake
    assert (dawid_skene(votes) > 0.5).tolist() == truth.tolist()


def test_tcap_system_shares_are_per_layer_and_head_and_are_shares(tiny_vlm):
    samples = shapes.downstream_samples(4, seed=0)
    shares = system_shares(tiny_vlm, samples, batch_size=3)
    text = tiny_vlm.model.config.text_config
    assert shares.shape == (4, text.num_hidden_layers, text.num_attention_heads)
    assert (shares >= 0).all() and (shares <= 1 + 1e-6).all() and (shares > 0).any()


def test_the_options_a_command_checks_before_loading_are_the_registrys():
    from byorn.defenses import DEFENSES
    from byorn.defenses.configs import CONFIGS

    assert {name: cls.config_class for name, cls in DEFENSES.items()} == CONFIGS
