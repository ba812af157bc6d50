"""Fine-tuning: a `transformers.Trainer` subclass with a per-batch defense hook, LoRA through PEFT.

The data loader yields `Sample`s, not tensors: a defense must see the responses as text (to
judge and replace them) before they become labels, so encoding happens inside `compute_loss`,
right after the hook.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import get_reporting_integration_callbacks
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from byorn.config import ConfigError, TrainConfig
from byorn.data import Sample
from byorn.distributed import sum_over_processes, world_size
from byorn.fileio import remove_if_empty, write_jsonl
from byorn.models.hf import IGNORE_INDEX, VLM
from byorn.run import CHECKPOINTS, Run

log = logging.getLogger(__name__)


class BatchHook(Protocol):
    """What a training-time defense implements (`byorn.defenses.Defense` does); the default (None)
    trains on the batch as is. A hook that keeps state of its own across the steps may also have
    `save_state(folder)` and `load_state(folder)`: called with each checkpoint's folder when it is
    written, and with the one a resumed run goes on from."""

    def on_batch(self, samples: list[Sample], trainer: ByornTrainer) -> list[Sample]: ...

    def resolved(self) -> dict:
        """Its name and options, written next to the run's results (defense.yaml)."""
        ...


class SampleDataset(torch.utils.data.Dataset):
    """Samples by index, either from a list or made on demand (pretraining's endless fresh scenes)."""

    def __init__(self, source: Sequence[Sample] | Callable[[int], Sample], length: int | None = None) -> None:
        self.source = source
        self.length = len(source) if length is None else length  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        return self.source(index) if callable(self.source) else self.source[index]


def collate_samples(samples: list[Sample]) -> dict[str, list[Sample]]:
    return {"samples": list(samples)}


class HookState(TrainerCallback):
    """A hook's own state into every checkpoint folder the Trainer writes (its main process)."""

    def __init__(self, hook: BatchHook) -> None:
        self.hook = hook

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.hook.save_state(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")


class ByornTrainer(Trainer):
    """A standard Trainer whose batches are encoded after an optional defense hook rewrote them."""

    def __init__(self, *args, vlm: VLM, hook: BatchHook | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vlm = vlm
        self.hook = hook

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        samples = inputs["samples"]
        if self.hook is not None:
            samples = self.hook.on_batch(samples, self)
        batch = {k: v.to(self.args.device) for k, v in self.vlm.encode(samples).items()}
        outputs = model(**batch)
        loss = outputs.loss
        if world_size() > 1:
            # DDP averages the processes' gradients, each from its own token mean; weighted by
            # token counts instead, the step is the single-process one: the mean over all of the
            # batch's response tokens, however unevenly they fall between processes.
            tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
            loss = loss * tokens * world_size() / sum_over_processes(tokens)
        return (loss, outputs) if return_outputs else loss

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume full fine-tuning with the checkpoint's weights really loaded.

        transformers 5's Trainer reads a checkpoint's model.safetensors and calls
        load_state_dict(strict=False); but save_pretrained writes the checkpoint format of the
        architecture (LLaVA: "language_model.model.layers..."), not the module names
        ("model.language_model.layers..."), so not one tensor matches and training silently goes
        on from the weights it started with. from_pretrained converts the names; every tensor must
        then match. Adapters (PEFT) load by their own names and take the Trainer's path.
        """
        model = model or self.model
        if isinstance(model, PeftModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)


def training_arguments(config: TrainConfig, output_dir: Path) -> TrainingArguments:
    """The one place a TrainConfig becomes transformers' TrainingArguments. config.batch_size is
    the global batch: samples per optimizer step over all processes (each takes its share)."""
    shares = world_size() * config.gradient_accumulation_steps
    if config.batch_size % shares:
        raise ConfigError(f"batch_size {config.batch_size} does not split evenly over {world_size()} processes x "
                         f"{config.gradient_accumulation_steps} accumulation steps")
    # Checkpoints hold weights (safetensors), optimizer, scheduler and RNG states; the two newest
    # are kept so a kill during a save still leaves a complete one.
    saving = {"save_strategy": "steps", "save_steps": config.save_steps, "save_total_limit": 2} \
        if config.save_steps else {"save_strategy": "no"}
    try:
        arguments = TrainingArguments(
            output_dir=str(output_dir), per_device_train_batch_size=config.batch_size // shares,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            num_train_epochs=config.epochs, bf16=config.bf16,
            # Said outright on a machine without an accelerator: CPU bf16 autocast needs it, and
            # several processes then talk over gloo without further flags.
            use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
            **_checkpointing(config.gradient_checkpointing),
            max_steps=config.max_steps, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
            warmup_steps=config.warmup, weight_decay=config.weight_decay, seed=config.seed, data_seed=config.seed,
            logging_steps=config.logging_steps, report_to=config.report_to,
            remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False, disable_tqdm=None,
            **saving,
        )
    except ValueError as exc:
        raise ConfigError(f"the Trainer refused these settings: {exc}") from None
    return arguments


def check_reporting(arguments: TrainingArguments) -> None:
    """Fail on a report_to tracker that is unknown or not installed with the setting's name, before
    the Trainer is built (which fails on it with a traceback from deep inside transformers)."""
    try:
        for callback in get_reporting_integration_callbacks(arguments.report_to):
            callback()  # checks that its package is there; a run is only set up when training begins
    except (ValueError, ImportError, RuntimeError) as exc:
        raise ConfigError(f"report_to {arguments.report_to}: {exc}") from None


def _checkpointing(enabled: bool) -> dict:
    """TrainingArguments' activation checkpointing, under the name this transformers uses (newer
    releases renamed gradient_checkpointing and warn on the old name). Non-reentrant checkpointing
    needs no gradient on the inputs, so it works with frozen embeddings under LoRA."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def check_lora_target(vlm: VLM, config: TrainConfig) -> None:
    """A lora_target that is a regular expression matching at least one module's whole name (as
    PEFT matches it), checked before any other work; the family's default needs no check."""
    if not (config.lora and config.lora_target):
        return
    try:
        pattern = re.compile(config.lora_target)
    except re.error as exc:
        raise ConfigError(f"lora_target {config.lora_target!r}: not a regular expression ({exc})") from None
    if not any(pattern.fullmatch(name) for name, _ in vlm.model.named_modules()):
        raise ConfigError(f"lora_target {config.lora_target!r}: matches no module of {config.model} (the regex must "
                          "match a module's whole name, e.g. '.*\\.(q_proj|v_proj)')")


def attach_lora(vlm: VLM, config: TrainConfig) -> None:
    """Wrap the model in a PEFT LoRA model in place; the base weights are frozen."""
    check_lora_target(vlm, config)
    target = config.lora_target or vlm.family.lora_target
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target, bias="none")
    try:
        vlm.model = get_peft_model(vlm.model, lora)
    except ValueError as exc:  # it matched modules LoRA cannot adapt; the message may hold a whole module's repr
        raise ConfigError(f"lora_target {target!r}: {str(exc).splitlines()[0]}; the regex must match the whole "
                          "names of Linear layers, e.g. '.*\\.(q_proj|v_proj)'") from None


def write_log(trainer: Trainer, path: Path) -> None:
    write_jsonl(path, trainer.state.log_history)


def finetune(vlm: VLM, samples: Sequence[Sample], config: TrainConfig, run_dir: str | Path,
             hook: BatchHook | None = None, resume_from: Path | None = None) -> ByornTrainer:
    """Fine-tune `vlm` in place on `samples`; writes config.yaml, defense.yaml (the hook's
    `resolved()`, or none), data.yaml, train_log.jsonl and the adapter/model to run_dir (`byorn.run.Run`).

    resume_from: a checkpoint of this run (`byorn.run.latest_checkpoint`) to continue from; refused
    (RunError) unless config, hook and samples are those the run started with. A defense hook
    must have been prepared with the same checkpoint's step (`Defense.prepare(resume_step=...)`).
    """
    run = Run(run_dir, config, hook, resume_from=resume_from)
    run.admit(samples)
    return finetune_in(run, vlm, samples)


def finetune_in(run: Run, vlm: VLM, samples: Sequence[Sample]) -> ByornTrainer:
    """`finetune` in a run whose samples are admitted already (with its defense as the hook): those
    a defense judged, when `samples` is what it left of them (`Defense.training_set`)."""
    run.record_settings()
    config = run.config
    trainer = train_steps(vlm, samples, config, run.dir / CHECKPOINTS, run.defense, run.checkpoint)
    out = saved_model_dir(run.dir, config)
    trainer.save_model(str(out))  # every process takes part (FSDP gathers shards); the main one writes
    if trainer.is_world_process_zero():
        # The Trainer pickles its arguments beside the weights; config.yaml has them as text, and a
        # model directory others may load should hold nothing that needs unpickling.
        (out / "training_args.bin").unlink(missing_ok=True)
        if not config.lora:
            vlm.processor.save_pretrained(str(out))
        write_log(trainer, run.dir / "train_log.jsonl")
        remove_if_empty(run.dir / CHECKPOINTS)  # without checkpoints, the Trainer's empty scratch folder
    return trainer


def saved_model_dir(run_dir: str | Path, config: TrainConfig) -> Path:
    """Where `finetune` saves what it trained: the adapter under LoRA, else the whole model."""
    return Path(run_dir) / ("adapter" if config.lora else "model")


def train_steps(vlm: VLM, samples: Sequence[Sample], config: TrainConfig, checkpoint_dir: Path,
                hook: BatchHook | None = None, resume_from: Path | None = None) -> ByornTrainer:
    """The training loop alone (LoRA attached first where asked): `finetune` without its files."""
    arguments = training_arguments(config, checkpoint_dir)
    check_reporting(arguments)
    torch.manual_seed(config.seed)  # LoRA's initial A matrices
    if config.lora and not isinstance(vlm.model, PeftModel):
        attach_lora(vlm, config)
    keeps_state = hasattr(hook, "save_state")
    trainer = ByornTrainer(model=vlm.model, args=arguments, train_dataset=SampleDataset(samples),
                           data_collator=collate_samples, vlm=vlm, hook=hook,
                           callbacks=[HookState(hook)] if keeps_state else None)
    if resume_from and keeps_state:
        hook.load_state(Path(resume_from))
    # A hook may have run the first steps of this fine-tuning itself (Defense.steps_trained: BYORn's
    # warm_start); the loop runs that many fewer. A hook that runs none need not say so.
    if steps_trained := getattr(hook, "steps_trained", 0):
        planned = planned_steps(trainer, config)
        if planned <= steps_trained:
            log.warning("the defense already ran %d of the %d planned steps; training runs one more", steps_trained,
                        planned)
        trainer.args.max_steps = max(planned - steps_trained, 1)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer


def planned_steps(trainer: Trainer, config: TrainConfig) -> int:
    """The optimizer steps `config` asks of `trainer`: max_steps, or its epochs over the data, counted
    as the Trainer counts them."""
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = max(math.ceil(len(trainer.get_train_dataloader()) / config.gradient_accumulation_steps), 1)
    return math.ceil(config.epochs * per_epoch)
