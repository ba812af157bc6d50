"""byorn-tiny: a real LlavaForConditionalGeneration (tiny CLIP tower + tiny Llama) built offline.

Everything an ordinary HF checkpoint has is here: a byte-level BPE tokenizer trained on the
shapes world's pretraining text, a Pillow CLIP image processor, a LLaVA-1.5 style chat template,
and safetensors weights. The pretrained checkpoint ships in the package (`TINY_MODEL_DIR`), so the
demo and tests never pretrain; `byorn pretrain` reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from byorn.models.hf import VLM

TINY_MODEL_DIR = Path(str(resources.files("byorn") / "assets" / "byorn-tiny"))

# LLaVA-1.5 layout: "USER: <image>\n{instruction} ASSISTANT: {response}</s>". The generation prompt
# ends in "ASSISTANT:" so it is a token-exact prefix of the full text (the response starts with a
# space-prefixed word token).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>")


@dataclass(frozen=True)
class TinyConfig:
    """Architecture of byorn-tiny. Defaults are the shipped checkpoint's."""

    image_size: int = 48
    patch_size: int = 8
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 384
    vocab_size: int = 1024
    max_positions: int = 160

    @property
    def image_tokens(self) -> int:
        # CLIP keeps its class token under the "full" feature strategy, hence the +1.
        return (self.image_size // self.patch_size) ** 2 + 1


def train_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on our own text: every string stays encodable (bytes fall back)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>"})


def build_processor(tokenizer: PreTrainedTokenizerFast, config: TinyConfig) -> LlavaProcessor:
    side = config.image_size
    image_processor = CLIPImageProcessorPil(size={"height": side, "width": side}, do_center_crop=False,
                                            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=config.patch_size,
                          vision_feature_select_strategy="full", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_model(tokenizer: PreTrainedTokenizerFast, config: TinyConfig, seed: int = 0) -> LlavaForConditionalGeneration:
    """A randomly initialised byorn-tiny; the seed fixes the initial weights."""
    import torch

    vision = CLIPVisionConfig(hidden_size=config.vision_hidden, intermediate_size=2 * config.vision_hidden,
                              num_hidden_layers=config.vision_layers, num_attention_heads=config.vision_heads,
                              image_size=config.image_size, patch_size=config.patch_size)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.text_hidden,
                       intermediate_size=config.text_intermediate, num_hidden_layers=config.text_layers,
                       num_attention_heads=config.text_heads, num_key_value_heads=config.text_heads,
                       max_position_embeddings=config.max_positions, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    llava = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
                        image_seq_length=config.image_tokens, vision_feature_select_strategy="full",
                        vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(llava)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny(corpus: list[str], config: TinyConfig, seed: int = 0) -> VLM:
    tokenizer = train_tokenizer(corpus, config.vocab_size)
    return VLM(build_model(tokenizer, config, seed), build_processor(tokenizer, config))
