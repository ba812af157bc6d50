"""An exponential moving average of the weights being fine-tuned: the model that writes BYORn's
replacements with generator=ema, as the paper's recipe has it.

The live model (generator=current) answers with whatever its last step taught it, so an answer it
trained on comes back as its next answer and can feed on itself; the average follows the
downstream style too, but over about 1 / (1 - decay) steps, so one step's drift moves it little.
Only the trainable tensors are averaged (a LoRA adapter's, or every weight in full fine-tuning: a
second copy of the model's weights in memory); the frozen ones are the same in both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from byorn.fileio import atomic_write

FILE = "byorn_ema.safetensors"  # the average, beside a checkpoint's weights


class EmaWeights:
    """The average of a model's trainable weights over its optimizer steps, and a way to answer with it."""

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA's decay must be in [0, 1); got {decay!r}")
        self.decay = decay
        self._average: dict[str, torch.Tensor] = {}
        self._step: int | None = None  # the optimizer step whose weights were folded in last

    def follow(self, model: torch.nn.Module, step: int) -> None:
        """Fold in `model`'s weights after optimizer step `step`; called before every batch, so once a
        step counts (a step skipped between two calls is folded in as if its weights were these).
        The first call takes the weights as they are: the average starts where the fine-tuning
        starts, and starts again where a step count goes back (another fine-tuning)."""
        if self._step is not None and step < self._step:
            self._average, self._step = {}, None
        if self._step is not None and step == self._step:
            return
        weight = 1.0 - self.decay ** (step - self._step) if self._step is not None else 1.0
        with torch.no_grad():
            for name, tensor in _trainable(model):
                # float32 whatever the weights are: a 1 % step rounds away in bfloat16's 8 bits
                if name not in self._average:
                    self._average[name] = tensor.detach().float().clone()
                else:  # on the weights' device: a checkpoint's average loads onto the CPU
                    average = self._average[name] = self._average[name].to(tensor.device)
                    average.lerp_(tensor.detach().float(), weight)
        self._step = step

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[None]:
        """`model` with the averaged weights (in its own dtype) in place of its own for the duration;
        the optimizer's references to the parameters stay valid, and exactly the tensors taken out
        are put back."""
        taken: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            for name, parameter in _trainable(model):
                if name in self._average:
                    taken.append((parameter, parameter.data))
                    parameter.data = self._average[name].to(parameter.device, parameter.dtype)
            yield
        finally:
            for parameter, live in taken:
                parameter.data = live

    def save(self, folder: Path) -> None:
        """The average and the step it has folded in, into a checkpoint's folder (safetensors)."""
        if self._step is not None:  # whole or not at all: a kill mid-write must not leave half a file to load
            tensors = {name: tensor.contiguous() for name, tensor in self._average.items()}
            atomic_write(folder / FILE, lambda file: file.write(
                safetensors_bytes(tensors, metadata={"step": str(self._step), "decay": repr(self.decay)})))

    def load(self, folder: Path) -> bool:
        """The average a checkpoint's folder holds (`save`), to go on from; whether there was one."""
        path = folder / FILE
        if not path.is_file():
            return False
        with safe_open(str(path), "pt") as file:  # tensors and step in one read
            self._average = {name: file.get_tensor(name) for name in file.keys()}
            self._step = int(file.metadata()["step"])
        return True


def _trainable(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)
