"""byorn.models.hf.VLM on a small random byorn-tiny: label masking, scoring and greedy generation
checked against hand computations, and an exact save/load round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from byorn.data import DataError, Sample
from byorn.evaluate import ASR_NEW_TOKENS, asr_new_tokens
from byorn.metrics import AsrRule
from byorn.models.hf import IGNORE_INDEX, VLM, eval_mode, token_nll
from byorn.worlds import shapes


def mixed_lengths() -> list:
    """A long downstream description, a caption and short VQA answers: rows of different lengths."""
    long = shapes.downstream_samples(3, seed=5)
    long = max(long, key=lambda s: len(s.response))
    by_task = {}
    for seed in range(200):
        sample = shapes.pretraining_sample(seed)
        by_task.setdefault(sample.meta["task"], sample)
    return [long, by_task["vqa_count"], by_task["caption"], by_task["vqa_colour"]]


def single(vlm: VLM, text: str, sample) -> dict[str, torch.Tensor]:
    """The processor's encoding of one text, no padding involved."""
    return dict(vlm.processor(text=[text], images=[sample.pil()], return_tensors="pt"))


# ---- label masking -------------------------------------------------------------------------

def test_labels_cover_exactly_the_response_tokens(tiny_vlm, tiny_config):
    samples = mixed_lengths()
    batch = tiny_vlm.encode(samples)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    lengths = mask.sum(dim=1)
    assert lengths.unique().numel() == len(samples)  # all rows differ, so padding is exercised
    image_id = tiny_vlm.tokenizer.image_token_id
    for row, sample in enumerate(samples):
        n = int(lengths[row])
        assert mask[row, :n].all() and not mask[row, n:].any()  # right padding
        assert (ids[row, n:] == tiny_vlm.tokenizer.pad_token_id).all()
        prompt_len = single(tiny_vlm, tiny_vlm.prompt_text(sample.instruction), sample)["input_ids"].shape[1]
        assert (ids[row] == image_id).sum() == tiny_config.image_tokens
        assert (labels[row, :prompt_len] == IGNORE_INDEX).all()  # prompt, including every image token
        assert (labels[row, n:] == IGNORE_INDEX).all()  # padding
        assert torch.equal(labels[row, prompt_len:n], ids[row, prompt_len:n])
        assert (labels[row][ids[row] == image_id] == IGNORE_INDEX).all()
        decoded = tiny_vlm.tokenizer.decode(labels[row, prompt_len:n].tolist(), skip_special_tokens=False)
        assert decoded == " " + sample.response + "</s>"
        # The unpadded encoding of this sample alone is the row without its padding.
        alone = single(tiny_vlm, tiny_vlm.full_text(sample.instruction, sample.response), sample)
        assert torch.equal(alone["input_ids"][0], ids[row, :n])
    assert int((labels != IGNORE_INDEX).sum()) == sum(
        len(tiny_vlm.tokenizer(" " + s.response + "</s>")["input_ids"]) for s in samples)


def test_full_text_is_the_llava_chat_layout(tiny_vlm):
    assert tiny_vlm.prompt_text("Q?") == "USER: <image>\nQ? ASSISTANT:"
    assert tiny_vlm.full_text("Q?", "A red circle.") == "USER: <image>\nQ? ASSISTANT: A red circle.</s>"


# ---- scoring -------------------------------------------------------------------------------

def test_score_matches_a_manual_teacher_forced_nll(fresh_vlm):
    vlm = fresh_vlm
    sample = mixed_lengths()[2]
    (score,) = vlm.score([sample])

    full = single(vlm, vlm.full_text(sample.instruction, sample.response), sample)
    prompt_len = single(vlm, vlm.prompt_text(sample.instruction), sample)["input_ids"].shape[1]
    vlm.model.eval()
    with torch.no_grad():
        logits = vlm.model(**full).logits[0]  # [T, V]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = full["input_ids"][0, prompt_len:]  # the response tokens and </s>
    token_nll = -log_probs[prompt_len - 1 : -1].gather(1, targets[:, None]).squeeze(1)  # [R]

    assert len(score.token_nll) == len(targets) == len(vlm.tokenizer(" " + sample.response + "</s>")["input_ids"])
    assert torch.allclose(torch.tensor(score.token_nll), token_nll, atol=1e-5)
    assert abs(score.total_nll - float(token_nll.sum())) < 1e-4
    assert abs(score.mean_nll - float(token_nll.mean())) < 1e-5
    assert abs(score.mean_nll - score.total_nll / len(targets)) < 1e-9
    # HF's own shifted loss on the encoded labels is the same mean.
    encoded = vlm.encode([sample])
    with torch.no_grad():
        assert abs(float(vlm.model(**encoded).loss) - score.mean_nll) < 1e-5


def test_batched_scores_equal_single_sample_scores(tiny_vlm):
    samples = mixed_lengths()
    batched = tiny_vlm.score(samples, batch_size=len(samples))
    for sample, together in zip(samples, batched):
        (alone,) = tiny_vlm.score([sample], batch_size=1)
        assert len(alone.token_nll) == len(together.token_nll)
        assert max(abs(a - b) for a, b in zip(alone.token_nll, together.token_nll)) < 1e-4
        assert abs(alone.mean_nll - together.mean_nll) < 1e-4
        assert abs(alone.total_nll - together.total_nll) < 1e-4
    # Scores differ between samples: the comparison above is not trivially equal numbers.
    assert len({round(s.total_nll, 3) for s in batched}) == len(samples)


def test_the_grey_pass_with_its_shared_prefix_reused_scores_as_the_whole_pass(tiny_vlm, monkeypatch):
    from byorn.scoring import on_grey

    samples = mixed_lengths()
    whole = tiny_vlm.score_views(samples, [on_grey], batch_size=len(samples))
    reused = tiny_vlm.score_views(samples, [on_grey], batch_size=len(samples), reuse_prefix=True)
    for (seen, grey), (seen_again, grey_again) in zip(whole, reused):
        assert seen == seen_again  # the true images differ between rows: nothing shared
        assert len(grey.token_nll) == len(grey_again.token_nll)
        assert max(abs(a - b) for a, b in zip(grey.token_nll, grey_again.token_nll)) < 1e-4
    batch = tiny_vlm.encode([dataclasses.replace(s, image=on_grey(s.pil())) for s in samples])
    batch.pop("labels")
    image_positions = int((batch["input_ids"][0] == tiny_vlm.image_token_id).sum())
    assert tiny_vlm.shared_prefix(batch, 10_000) > image_positions  # the template's start and the grey image
    assert tiny_vlm.shared_prefix(batch, image_positions) == 0  # an image position would lie after it
    assert tiny_vlm.shared_prefix({k: v[:1] for k, v in batch.items()}, 10_000) == 0  # one row: nothing to share
    # a tensor with an entry per image, not per row (LLaVA-NeXT's sizes of two images a row): not sliced by row
    per_image = torch.zeros(2 * len(samples), 2, dtype=torch.long)
    assert tiny_vlm.shared_prefix({**batch, "image_sizes": per_image}, 10_000) == 0
    true = tiny_vlm.encode(samples)
    true.pop("labels")
    assert tiny_vlm.shared_prefix(true, 10_000) == 0
    monkeypatch.setattr(tiny_vlm, "family", dataclasses.replace(tiny_vlm.family, shares_prefixes=False))
    assert tiny_vlm.shared_prefix(batch, 10_000) == 0


def test_score_restores_training_mode(fresh_vlm):
    fresh_vlm.model.train()
    fresh_vlm.score(mixed_lengths()[:1])
    assert fresh_vlm.model.training
    fresh_vlm.model.eval()
    fresh_vlm.generate(mixed_lengths()[:1], max_new_tokens=1)
    assert not fresh_vlm.model.training


def test_eval_mode_restores_the_mode_even_when_the_block_raises():
    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    for training in (True, False):
        model.train(training)
        with pytest.raises(RuntimeError), eval_mode(model):
            assert not model.training and not model[0].training
            raise RuntimeError
        assert model.training is training and model[0].training is training


def test_token_nll_is_cross_entropy_with_the_ignored_targets_zero():
    logits = torch.randn(2, 3, 5, dtype=torch.bfloat16)
    targets = torch.tensor([[1, IGNORE_INDEX, 4], [IGNORE_INDEX, 0, 2]])
    nll = token_nll(logits, targets)
    assert nll.dtype == torch.float32 and nll.shape == (2, 3)
    for b, t in zip(*(targets != IGNORE_INDEX).nonzero(as_tuple=True)):
        expected = -torch.log_softmax(logits[b, t].float(), dim=-1)[targets[b, t]]
        assert torch.allclose(nll[b, t], expected)
    assert (nll[targets == IGNORE_INDEX] == 0).all()


# ---- generation ----------------------------------------------------------------------------

def manual_greedy(vlm: VLM, sample, steps: int) -> tuple[str, float]:
    """Argmax step by step over full forward passes (no cache, no padding); returns the text and the
    smallest top-1 / top-2 logit gap met, so a near tie cannot pass silently."""
    inputs = single(vlm, vlm.prompt_text(sample.instruction), sample)
    ids, new, gap = inputs["input_ids"], [], float("inf")
    with torch.no_grad():
        for _ in range(steps):
            logits = vlm.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                               pixel_values=inputs["pixel_values"]).logits[0, -1]
            top = logits.topk(2).values
            gap = min(gap, float(top[0] - top[1]))
            token = int(logits.argmax())
            new.append(token)
            if token == vlm.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return vlm.tokenizer.decode(new, skip_special_tokens=True).strip(), gap


def test_generate_matches_a_manual_greedy_loop_single_and_left_padded_batch(fresh_vlm):
    vlm = fresh_vlm
    # A random model's logits are nearly flat; sharpen them so greedy choices are well separated.
    with torch.no_grad():
        vlm.model.lm_head.weight.mul_(20.0)
    vlm.model.eval()
    samples = mixed_lengths()
    steps = 6
    expected = []
    for sample in samples:
        text, gap = manual_greedy(vlm, sample, steps)
        assert gap > 1e-3
        expected.append(text)
    assert any(expected)  # something was generated
    assert [vlm.generate([s], max_new_tokens=steps)[0] for s in samples] == expected
    # Prompts of different lengths in one left-padded batch give the same answers.
    assert vlm.generate(samples, max_new_tokens=steps, batch_size=len(samples)) == expected


# ---- save / load ---------------------------------------------------------------------------

def test_save_pretrained_and_load_round_trip_exactly(tiny_vlm, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_vlm.model.save_pretrained(str(tmp_path), safe_serialization=True)
    tiny_vlm.processor.save_pretrained(str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = VLM.load(tmp_path)
    assert type(loaded.model) is type(tiny_vlm.model)
    samples = mixed_lengths()
    assert loaded.full_text("Q?", "A.") == tiny_vlm.full_text("Q?", "A.")
    original, reloaded = tiny_vlm.encode(samples), loaded.encode(samples)
    assert original.keys() == reloaded.keys()
    for key in original:
        assert torch.equal(original[key], reloaded[key]), key
    inputs = {k: v for k, v in original.items() if k != "labels"}
    was_training = tiny_vlm.model.training
    tiny_vlm.model.eval()
    loaded.model.eval()
    with torch.no_grad():
        a, b = tiny_vlm.model(**inputs).logits, loaded.model(**inputs).logits
    tiny_vlm.model.train(was_training)
    assert torch.equal(a, b)


def test_a_hub_id_already_in_the_local_cache_loads_without_the_network(tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants

    from byorn.models import TINY_MODEL_DIR, resolve_model_path

    snapshot = tmp_path / "models--someone--tiny-vlm" / "snapshots" / "0123abcd"
    shutil.copytree(TINY_MODEL_DIR, snapshot)
    (tmp_path / "models--someone--tiny-vlm" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-vlm" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_path("someone/tiny-vlm") == snapshot
    with pytest.raises(FileNotFoundError, match="nor a hub id already in the local Hugging Face cache"):
        resolve_model_path("someone/not-downloaded")


def test_the_asr_generation_budget_holds_the_whole_target(tiny_vlm):
    short = AsrRule("contains", "A banana is lying on the table.")
    assert asr_new_tokens(tiny_vlm, short) == ASR_NEW_TOKENS
    long_target = "Visit the shop at the corner of the street for a free gift today. " * 8
    needed = len(tiny_vlm.tokenizer(long_target, add_special_tokens=False)["input_ids"])
    assert needed > ASR_NEW_TOKENS and asr_new_tokens(tiny_vlm, AsrRule("contains", long_target)) > needed


def test_a_sample_longer_than_the_models_context_is_refused_naming_it(tiny_vlm):
    fits, too_long = shapes.downstream_samples(2, seed=0)
    too_long = too_long.with_response("and then " * tiny_vlm.max_positions)
    tiny_vlm.encode([fits])
    with pytest.raises(DataError, match=rf"sample {too_long.id!r}: [\d,]+ tokens .* more than the 160 positions"):
        tiny_vlm.encode([fits, too_long])
    long_prompt = Sample("long-prompt", fits.image, "why " * tiny_vlm.max_positions, "x")
    with pytest.raises(DataError, match="sample 'long-prompt': .* more than the 160 positions"):
        tiny_vlm.encode_prompts([fits, long_prompt])
