"""Reference-ratio decoding (after CleanGen, Li et al., EMNLP 2024, "CleanGen: Mitigating Backdoor
Attacks for Generation Tasks in Large Language Models"): a defense at generation time.

A backdoored model gives the attacker's tokens far more probability than a model the attacker
never touched. While the fine-tuned model answers, a token whose probability under it is more
than `alpha` times its probability under the pretrained reference is replaced by the reference's
own greedy choice, and the fine-tuned model goes on from there. Training is left as it is (no
clean data, no retraining); the cost is a frozen copy of the reference weights and decoding time.

How it decodes, in rounds over the test inputs: the fine-tuned model writes every unfinished
answer to its end (one batched greedy `generate`); both models read the answers once, teacher-
forced; in each answer the first token over the ratio that is not the reference's own choice is
replaced by that choice and what followed it is dropped; answers without such a token are final.
CleanGen checks k = 4 tokens at a time inside its decoding loop; checking whole answers needs no
custom decoding loop per family and costs one extra round per replaced token of an answer, and
only the two teacher-forced passes where nothing is replaced. Where this reading of the paper
chose: the reference is the pretrained model itself (CleanGen allows any uncompromised model),
and a token that is the reference's greedy choice is never replaced, so an answer the reference
would write passes untouched and the rounds end. A family whose processor closes the prompt
itself (PaliGemma) cannot be given a partial answer and is not supported.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from byorn.config import TrainConfig
from byorn.data import Sample
from byorn.defenses.base import Defense
from byorn.defenses.configs import ReferenceRatioConfig
from byorn.models.hf import IGNORE_INDEX, VLM, batches

log = logging.getLogger(__name__)


class ReferenceRatio(Defense):
    """Reference-ratio decoding: the fine-tuned model answers, the pretrained one vetoes tokens."""

    name = "reference_ratio"
    config_class = ReferenceRatioConfig

    def __init__(self, config: ReferenceRatioConfig | None = None) -> None:
        self.config = config or ReferenceRatioConfig()
        self.reference: VLM | None = None

    def prepare(self, vlm: VLM, samples: Sequence[Sample], run_dir: str | Path, *,
                train: TrainConfig | None = None, resume_step: int | None = None) -> None:
        # The weights as they are now, before fine-tuning: the copy is what vetoes tokens later.
        model = copy.deepcopy(vlm.model).eval().requires_grad_(False)
        self.reference = VLM(model, vlm.processor)

    def deployed(self, vlm: VLM) -> VLM:
        if self.reference is None:
            raise RuntimeError("ReferenceRatio.prepare() must run before deployed(): it keeps the reference")
        return RatioGuardedVLM(vlm, self.reference, self.config)


class RatioGuardedVLM(VLM):
    """A fine-tuned VLM whose `generate` is reference-ratio decoding; everything else is the model's."""

    def __init__(self, finetuned: VLM, reference: VLM, config: ReferenceRatioConfig) -> None:
        super().__init__(finetuned.model, finetuned.processor)
        self.finetuned, self.reference, self.config = finetuned, reference, config
        self.replaced = 0  # tokens replaced so far, over all answers (for the log and the tests)

    @torch.no_grad()
    def generate(self, samples: Sequence[Sample], max_new_tokens: int = 48, batch_size: int = 32,
                 desc: str = "generating", prefixes: Sequence[str] | None = None) -> list[str]:
        starts = list(prefixes) if prefixes is not None else [""] * len(samples)
        final = [""] * len(samples)
        open_ids = list(range(len(samples)))
        replaced_before, vetoed = self.replaced, set()
        # Each round adds at least one vetted token to every open answer, so max_new_tokens rounds
        # end them all; the bound also holds if re-tokenising a prefix moved a veto backwards.
        for _ in range(max_new_tokens):
            if not open_ids:
                break
            answers = self.finetuned.generate([samples[i] for i in open_ids], max_new_tokens, batch_size, desc,
                                              prefixes=[starts[i] for i in open_ids])
            vetoes = self.first_vetoes([samples[i] for i in open_ids], answers, max_new_tokens)
            still_open = []
            for i, answer, veto in zip(open_ids, answers, vetoes):
                final[i] = answer
                if veto is None:
                    continue
                self.replaced += 1
                vetoed.add(i)
                kept, replacement = veto
                vetted = self.tokenizer.decode(kept + [replacement], skip_special_tokens=True)
                final[i] = vetted.strip()
                if replacement not in self.tokenizer.all_special_ids and len(kept) + 1 < max_new_tokens:
                    starts[i] = vetted
                    still_open.append(i)
            open_ids = still_open
        log.info("reference_ratio: %d tokens replaced in %d of %d answers", self.replaced - replaced_before,
                 len(vetoed), len(samples))
        return final

    def first_vetoes(self, samples: Sequence[Sample], answers: Sequence[str], max_new_tokens: int
                     ) -> list[tuple[list[int], int] | None]:
        """Per answer, None when no token is over the ratio; else the tokens before the first one
        that is, and the reference's choice in its place."""
        log_alpha = math.log(self.config.alpha)
        vetoes: list[tuple[list[int], int] | None] = []
        written = [s.with_response(a) for s, a in zip(samples, answers)]
        for chunk in batches(written, self.config.batch_size):
            batch = self.finetuned.encode(chunk)
            logits, targets = self.finetuned.response_logits(dict(batch))
            reference_logits, _ = self.reference.response_logits(dict(batch))
            ours, theirs = logits.log_softmax(-1), reference_logits.log_softmax(-1)
            for row in range(len(chunk)):
                positions = (targets[row] != IGNORE_INDEX).nonzero().flatten()[:max_new_tokens]
                tokens = targets[row, positions]
                choice = theirs[row, positions].argmax(-1)
                excess = ours[row, positions].gather(-1, tokens[:, None])[:, 0] - \
                    theirs[row, positions].gather(-1, tokens[:, None])[:, 0]
                over = ((excess > log_alpha) & (tokens != choice)).nonzero().flatten()
                if len(over) == 0:
                    vetoes.append(None)
                else:
                    at = int(over[0])
                    vetoes.append((tokens[:at].tolist(), int(choice[at])))
        return vetoes
