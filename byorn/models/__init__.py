"""Model loading: the built-in byorn-tiny or any local Hugging Face VLM directory."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from byorn.distributed import process_device
from byorn.models.hf import VLM
from byorn.models.tiny import TINY_MODEL_DIR

TINY_LM_DIR = TINY_MODEL_DIR.parent / "byorn-tiny-lm"  # byorn.models.tiny_lm says what it is
BUILTIN_MODELS = {"byorn-tiny": TINY_MODEL_DIR, "byorn-tiny-lm": TINY_LM_DIR}
# A VLM whose language model never learned to read instructions (byorn-tiny's was trained on
# responses only) -> the text model that reads them in its place (ONION's perplexities).
INSTRUCTION_READERS = {TINY_MODEL_DIR: "byorn-tiny-lm"}


def instruction_reader(vlm: VLM) -> str | None:
    """The text model that reads `vlm`'s instructions in its place, if it has one."""
    model = vlm.model.get_base_model() if hasattr(vlm.model, "get_base_model") else vlm.model
    source = Path(model.config.name_or_path or "").resolve()
    return next((lm for path, lm in INSTRUCTION_READERS.items() if path.resolve() == source), None)


# Made on this machine, never shipped (the Flickr8k terms forbid redistributing what it holds):
# cached outside the repository, in $BYORN_CACHE or ~/.cache/byorn.
CACHE_DIR = Path(os.environ.get("BYORN_CACHE") or Path.home() / ".cache" / "byorn")
CACHED_MODELS = {"byorn-tiny-flickr": "byorn pretrain --world flickr8k --data FLICKR8K_FOLDER --out {path}"}


def cached_model_ready(name: str) -> bool:
    """Whether the cached model `name` has been made on this machine."""
    return (CACHE_DIR / name / "config.json").is_file()


def resolve_model_path(name_or_path: str | Path) -> Path:
    if str(name_or_path) in CACHED_MODELS:
        path = CACHE_DIR / str(name_or_path)
        if not cached_model_ready(str(name_or_path)):
            raise FileNotFoundError(f"{name_or_path} is not pretrained on this machine yet ({path}); make it with "
                                    f"`{CACHED_MODELS[str(name_or_path)].format(path=path)}` (benchmarks/flickr8k.yaml "
                                    "does it once by itself)")
        return path
    path = BUILTIN_MODELS.get(str(name_or_path), Path(name_or_path).expanduser())
    if (path / "config.json").is_file():
        return path
    if (cached := _hub_cache_snapshot(str(name_or_path))) is not None:
        return cached
    raise FileNotFoundError(f"{path}: not a model directory (no config.json), nor a hub id already in the local "
                            f"Hugging Face cache. Pass a model directory, a hub id downloaded before (`hf download "
                            f"ID`), or one of: {', '.join(BUILTIN_MODELS)}")


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of a hub id that was downloaded before, found without the network."""
    if repo_id.count("/") != 1 or Path(repo_id).expanduser().exists():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    return path if (path / "config.json").is_file() else None


def load_vlm(name_or_path: str | Path, *, adapter: str | Path | None = None, trust_remote_code: bool = False,
             dtype: torch.dtype | None = None) -> VLM:
    """Load a base model, optionally with a LoRA adapter on top (weights from safetensors only),
    onto this process's device (its GPU under a multi-GPU launcher, else the CPU), so scoring and
    generation before training run there too. dtype: of the weights (default float32)."""
    vlm = VLM.load(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code, dtype=dtype)
    vlm.model.to(process_device())
    if adapter is not None:
        from peft import PeftModel

        if Path(adapter).is_dir() and not (Path(adapter) / "adapter_config.json").is_file():
            model = Path(adapter) / "model"
            hint = f"; a run of lora=false saved a whole model: load it as the model ({model})" if \
                (model / "config.json").is_file() else "; a LoRA run saves its adapter in RUN/adapter"
            raise FileNotFoundError(f"{adapter}: not a LoRA adapter (no adapter_config.json){hint}")
        vlm.model = PeftModel.from_pretrained(vlm.model, str(adapter), use_safetensors=True)
    return vlm


__all__ = ["CACHED_MODELS", "CACHE_DIR", "cached_model_ready", "instruction_reader", "TINY_LM_DIR", "TINY_MODEL_DIR",
           "VLM",
           "load_vlm", "resolve_model_path"]
