"""byorn.train: two real optimizer steps through `finetune` (LoRA and full), what they change and
write, where LoRA attaches, and that a batch hook's output is what gets encoded and trained on."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from byorn.config import TrainConfig, load_config
from byorn.models.hf import VLM
from byorn.train import ByornTrainer, attach_lora, finetune
from byorn.worlds import shapes

STEPS, BATCH = 2, 4


@pytest.fixture(scope="module")
def train_samples():
    return shapes.downstream_samples(STEPS * BATCH, seed=11)  # exactly one epoch in two steps


def config(**changes) -> TrainConfig:
    return TrainConfig(max_steps=STEPS, batch_size=BATCH, logging_steps=1, **changes)


def base_name(peft_name: str) -> str:
    """A PEFT parameter name as the unwrapped model calls it."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lora_finetune_changes_only_the_adapter_and_writes_the_run_dir(tiny_vlm_factory, train_samples, tmp_path):
    vlm = tiny_vlm_factory()
    before = snapshot(vlm.model)
    trainer = finetune(vlm, train_samples, config(), tmp_path / "run")
    assert isinstance(trainer, ByornTrainer) and trainer.state.global_step == STEPS

    lora = {n: p.detach() for n, p in vlm.model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for n, p in vlm.model.named_parameters() if "lora_" in n)
    lora_b = {n: p for n, p in lora.items() if "lora_B" in n}
    assert len(lora_b) == len(lora) // 2
    # PEFT starts every B at zero; after training each one has moved.
    assert all(p.abs().max() > 0 for p in lora_b.values()), [n for n, p in lora_b.items() if not p.abs().max()]

    after = {base_name(n): p for n, p in vlm.model.state_dict().items() if "lora_" not in n}
    assert after.keys() == before.keys()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed == []
    assert not any(p.requires_grad for n, p in vlm.model.named_parameters() if "lora_" not in n)

    run = tmp_path / "run"
    assert load_config(TrainConfig, run / "config.yaml") == config()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log if "loss" in e)
    assert not list((run / "adapter").glob("*.bin"))  # safetensors only, no pickled Trainer arguments
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    assert len(saved) == len(lora)
    for name, value in lora.items():
        assert torch.equal(saved[name.replace(".default", "")], value), name
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["target_modules"] == vlm.family.lora_target


def test_lora_targets_only_language_model_attention_projections(tiny_vlm_factory):
    vlm = tiny_vlm_factory(text_layers=2, vision_layers=2)
    attach_lora(vlm, TrainConfig())
    adapted = {n.removeprefix("base_model.model.") for n, m in vlm.model.named_modules() if hasattr(m, "lora_A")}
    expected = {f"model.language_model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"}
    assert adapted == expected
    assert not any("vision_tower" in n or "multi_modal_projector" in n
                   for n, _ in vlm.model.named_parameters() if "lora_" in n)
    # The vision tower has q/k/v projections too, which a bare ["q_proj", "v_proj"] would hit.
    assert any(re.search(r"vision_tower.*q_proj$", n) for n, _ in vlm.model.named_modules())


def test_lora_target_option_overrides_the_default(tiny_vlm_factory):
    vlm = tiny_vlm_factory()
    attach_lora(vlm, TrainConfig(lora_target=r".*language_model.*\.mlp\.down_proj", lora_r=2))
    adapted = {n.removeprefix("base_model.model.") for n, m in vlm.model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"model.language_model.layers.0.mlp.down_proj"}
    assert vlm.model.peft_config["default"].r == 2


class ReplacingHook:
    """Records what it is given and swaps every response for a marked one."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str], object]] = []
        self.returned: list[list[str]] = []

    def resolved(self) -> dict:
        return {"defense": "replacing"}

    def on_batch(self, samples, trainer):
        self.calls.append(([s.id for s in samples], [s.response for s in samples], trainer))
        out = [s.with_response(f"There is a red circle number {len(self.returned)}-{i}.", replaced=True)
               for i, s in enumerate(samples)]
        self.returned.append([s.response for s in out])
        return out


def test_hook_sees_the_batch_and_its_output_is_what_gets_encoded(tiny_vlm_factory, train_samples, tmp_path):
    vlm = tiny_vlm_factory()
    encoded: list[list[str]] = []
    original_encode = vlm.encode

    def spy(samples):
        encoded.append([s.response for s in samples])
        return original_encode(samples)

    vlm.encode = spy  # the trainer calls vlm.encode on whatever the hook returned
    hook = ReplacingHook()
    trainer = finetune(vlm, train_samples, config(), tmp_path / "run", hook=hook)

    assert (tmp_path / "run" / "defense.yaml").read_text() == "defense: replacing\n"  # hook.resolved()
    assert len(hook.calls) == STEPS
    by_id = {s.id: s.response for s in train_samples}
    for ids, responses, given_trainer in hook.calls:
        assert len(ids) == BATCH
        assert given_trainer is trainer
        assert responses == [by_id[i] for i in ids]  # the real samples, untouched
    assert sorted(i for ids, _, _ in hook.calls for i in ids) == sorted(by_id)  # one epoch, each sample once
    assert encoded == hook.returned
    assert all(r.startswith("There is a red circle number") for batch in encoded for r in batch)
    assert all(s.response.startswith("There is ") and "number" not in s.response for s in train_samples)


def test_full_finetune_changes_base_weights_and_saves_a_loadable_model(tiny_vlm_factory, train_samples, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vlm = tiny_vlm_factory()
    before = snapshot(vlm.model)
    finetune(vlm, train_samples, config(lora=False), tmp_path / "run")
    assert not any("lora_" in n for n, _ in vlm.model.named_parameters())
    after = vlm.model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("language_model" in n for n in changed)
    assert any("vision_tower" in n for n in changed)
    assert "lm_head.weight" in changed
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "model.safetensors").is_file() and not (tmp_path / "run" / "adapter").exists()
    loaded = VLM.load(model_dir)
    batch = vlm.encode(train_samples[:2])
    vlm.model.eval()
    loaded.model.eval()
    with torch.no_grad():
        assert torch.equal(vlm.model(**batch).logits, loaded.model(**batch).logits)


@pytest.mark.parametrize("lora", [True, False])
def test_gradient_checkpointing_trains_the_same_steps(tiny_vlm_factory, train_samples, tmp_path, lora):
    # Recomputing activations in the backward pass is exact: the same losses and weights.
    runs = []
    for checkpointing in (False, True):
        vlm = tiny_vlm_factory()
        trainer = finetune(vlm, train_samples, config(lora=lora, gradient_checkpointing=checkpointing),
                           tmp_path / str(checkpointing))
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        runs.append((losses, snapshot(vlm.model)))
    (plain_losses, plain), (checkpointed_losses, checkpointed) = runs
    assert checkpointed_losses == pytest.approx(plain_losses, rel=1e-5)
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)


def test_bf16_mixed_precision_trains(tiny_vlm_factory, train_samples, tmp_path):
    vlm = tiny_vlm_factory()
    # The logits of every training forward pass: bfloat16 under autocast, float32 without it.
    logit_dtypes = []
    vlm.model.get_output_embeddings().register_forward_hook(lambda _m, _i, out: logit_dtypes.append(out.dtype))
    trainer = finetune(vlm, train_samples, config(bf16=True), tmp_path / "run")
    assert logit_dtypes and set(logit_dtypes) == {torch.bfloat16}
    # mixed precision, not a bfloat16 model: the weights the optimizer updates stay float32
    assert {p.dtype for p in vlm.model.parameters() if p.requires_grad} == {torch.float32}
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
    assert trainer.args.bf16 and load_config(TrainConfig, tmp_path / "run" / "config.yaml").bf16


def test_batch_size_is_per_optimizer_step_over_all_processes(monkeypatch, tmp_path):
    from byorn.train import training_arguments

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="batch_size 5 does not split evenly over 2 processes x 1 accumulation"):
        training_arguments(TrainConfig(batch_size=5), tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "1")  # building arguments under WORLD_SIZE=2 would open a process group
    assert training_arguments(TrainConfig(batch_size=8), tmp_path).per_device_train_batch_size == 8


# The options byorn uses itself, not the Trainer: which model to load and whether its own code may
# run (load_vlm), and LoRA's, which go to PEFT's LoraConfig (attach_lora; the LoRA tests above).
NOT_THE_TRAINERS = {"model", "trust_remote_code", "lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target"}
# Every other option: a value other than its default, where TrainingArguments has it, and what it is there
# (batch_size is the global batch: 8 over 2 accumulation steps is 4 a step).
TRAINERS = {
    "epochs": (2.5, lambda a: a.num_train_epochs, 2.5),
    "max_steps": (7, lambda a: a.max_steps, 7),
    "batch_size": (8, lambda a: a.per_device_train_batch_size, 4),
    "gradient_accumulation_steps": (2, lambda a: a.gradient_accumulation_steps, 2),
    "learning_rate": (3e-4, lambda a: a.learning_rate, 3e-4),
    "warmup": (2, lambda a: a.warmup_steps, 2),
    "weight_decay": (0.1, lambda a: a.weight_decay, 0.1),
    "seed": (5, lambda a: (a.seed, a.data_seed), (5, 5)),
    "logging_steps": (3, lambda a: a.logging_steps, 3),
    "save_steps": (6, lambda a: a.save_steps, 6),
    "bf16": (True, lambda a: a.bf16, True),
    "gradient_checkpointing": (True, lambda a: a.gradient_checkpointing, True),
    "report_to": ("tensorboard", lambda a: a.report_to, ["tensorboard"]),
}


def test_every_training_option_reaches_the_trainers_arguments(tmp_path):
    from byorn.train import training_arguments

    # an option added to TrainConfig fails here until it is in one of the two
    assert TRAINERS.keys() | NOT_THE_TRAINERS == {f.name for f in dataclasses.fields(TrainConfig)}
    args = training_arguments(TrainConfig(**{name: value for name, (value, _, _) in TRAINERS.items()}), tmp_path)
    assert {name: read(args) for name, (_, read, _) in TRAINERS.items()} == \
        {name: expected for name, (_, _, expected) in TRAINERS.items()}
    # each value shows in the arguments only because it was given: the defaults' arguments differ in every one
    defaults = training_arguments(TrainConfig(), tmp_path)
    assert [name for name, (_, read, expected) in TRAINERS.items() if read(defaults) == expected] == []
