"""Tiny, randomly initialised models of every supported family, built offline in process.

Each is the family's own model and processor classes with a few-thousand-parameter config (as
TRL's tests do), so poisoning, scoring, the defense, training and generation run through the code
path a real checkpoint takes. Tokenizers are byorn-tiny's byte-level BPE with each family's special
tokens added; chat templates follow each family's layout.
"""

from __future__ import annotations

from unittest import mock

import torch
import transformers as hf
from transformers import PreTrainedTokenizerFast

from byorn.models.hf import VLM
from byorn.models.tiny import CHAT_TEMPLATE, TINY_MODEL_DIR

SIDE = 48  # the shapes world's image side; every tower below takes it whole
HIDDEN = 32
MEAN_STD = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)

CHATML_TEMPLATE = (  # Qwen2-VL's layout
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TEMPLATE = (  # "User:<image>...<end_of_utterance>\nAssistant: ...<end_of_utterance>\n"
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif message['role'] == 'assistant' %} {{ part['text'] }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _tokenizer(*special: str, image_token: str) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(TINY_MODEL_DIR))
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in special if t not in tokenizer.get_vocab()]})
    tokenizer.image_token = image_token
    return tokenizer


def _text(tokenizer: PreTrainedTokenizerFast, **extra) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **extra)


def _vision(**extra) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                image_size=SIDE, patch_size=8, **extra)


def _vlm(model_cls: type, config, processor) -> VLM:
    torch.manual_seed(0)
    model = model_cls(config)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return VLM(model, processor)


def llava() -> VLM:
    tokenizer = _tokenizer("<image>", image_token="<image>")
    image_processor = hf.CLIPImageProcessorPil(size={"height": SIDE, "width": SIDE}, do_center_crop=False, **MEAN_STD)
    processor = hf.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=CHAT_TEMPLATE)
    config = hf.LlavaConfig(vision_config=hf.CLIPVisionConfig(**_vision()),
                            text_config=hf.LlamaConfig(**_text(tokenizer)),
                            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                            vision_feature_select_strategy="default")
    return _vlm(hf.LlavaForConditionalGeneration, config, processor)


def llava_next() -> VLM:
    tokenizer = _tokenizer("<image>", image_token="<image>")
    pinpoints = [[SIDE, SIDE], [SIDE, 2 * SIDE], [2 * SIDE, SIDE]]  # any-resolution tiling: base view + tiles
    image_processor = hf.LlavaNextImageProcessorPil(size={"height": SIDE, "width": SIDE}, do_center_crop=False,
                                                    crop_size={"height": SIDE, "width": SIDE},
                                                    image_grid_pinpoints=pinpoints, **MEAN_STD)
    processor = hf.LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                      vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                      chat_template=CHAT_TEMPLATE)
    config = hf.LlavaNextConfig(vision_config=hf.CLIPVisionConfig(**_vision()),
                                text_config=hf.LlamaConfig(**_text(tokenizer)), image_grid_pinpoints=pinpoints,
                                image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                                vision_feature_select_strategy="default")
    return _vlm(hf.LlavaNextForConditionalGeneration, config, processor)


def _qwen(prefix: str) -> VLM:
    tokens = dict(image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
                  vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>")
    tokenizer = _tokenizer("<|im_start|>", "<|im_end|>", *tokens.values(), image_token="<|image_pad|>")
    tokenizer.video_token = "<|video_pad|>"
    image_processor = hf.Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                                  min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE, **MEAN_STD)
    # Qwen2-VL's processor insists on a video processor, which needs torchvision, which has no CPU
    # wheel here: build it images-only (its __call__ only touches the video processor for videos).
    with mock.patch.object(hf.ProcessorMixin, "check_argument_for_proper_class", lambda *args: None):
        processor = getattr(hf, f"{prefix}Processor")(image_processor=image_processor, tokenizer=tokenizer,
                                                      video_processor=None, chat_template=CHATML_TEMPLATE)
    head_dim = HIDDEN // 2
    text = _text(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "mrope_section": [2, 3, 3]})  # sums to head_dim / 2
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
    vision = dict(depth=1, embed_dim=HIDDEN, hidden_size=HIDDEN, out_hidden_size=HIDDEN, num_heads=2, patch_size=8,
                  spatial_merge_size=2, temporal_patch_size=2, intermediate_size=2 * HIDDEN, mlp_ratio=2)
    config = getattr(hf, f"{prefix}Config")(text_config=text, vision_config=vision,
                                            **{k: tokenizer.convert_tokens_to_ids(v) for k, v in tokens.items()})
    return _vlm(getattr(hf, f"{prefix}ForConditionalGeneration"), config, processor)


def qwen2_vl() -> VLM:
    return _qwen("Qwen2VL")


def qwen2_5_vl() -> VLM:
    return _qwen("Qwen2_5_VL")


def idefics3() -> VLM:
    tokenizer = _tokenizer("<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<|im_start|>",
                           image_token="<image>")
    image_processor = hf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": SIDE},
                                                   max_image_size={"longest_edge": SIDE}, **MEAN_STD)
    scale = 2  # pixel shuffle: (48 / 8)^2 patches / 2^2 = 9 image tokens
    processor = hf.Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                     image_seq_len=(SIDE // 8) ** 2 // scale ** 2, chat_template=IDEFICS3_TEMPLATE)
    config = hf.Idefics3Config(vision_config=hf.Idefics3VisionConfig(**_vision()),
                               text_config=hf.LlamaConfig(**_text(tokenizer)), scale_factor=scale,
                               image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    return _vlm(hf.Idefics3ForConditionalGeneration, config, processor)


def paligemma() -> VLM:
    tokenizer = _tokenizer("<image>", image_token="<image>")
    image_processor = hf.SiglipImageProcessorPil(size={"height": SIDE, "width": SIDE}, **MEAN_STD)
    image_processor.image_seq_length = (SIDE // 8) ** 2  # the processor reads the image token count here
    processor = hf.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = hf.PaliGemmaConfig(vision_config=hf.SiglipVisionConfig(**_vision(projection_dim=HIDDEN)),
                                text_config=hf.GemmaConfig(**_text(tokenizer, head_dim=HIDDEN // 2)),
                                image_token_id=tokenizer.convert_tokens_to_ids("<image>"), projection_dim=HIDDEN)
    return _vlm(hf.PaliGemmaForConditionalGeneration, config, processor)


BUILDERS = {"llava": llava, "llava_next": llava_next, "qwen2_vl": qwen2_vl, "qwen2_5_vl": qwen2_5_vl,
            "idefics3": idefics3, "paligemma": paligemma}
