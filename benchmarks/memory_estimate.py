"""Estimated GPU memory for LoRA fine-tuning with BYORn on two real VLMs: an estimate from the
architectures' parameter counts (models built on the meta device from their published configs, no
download), not a measurement.

    python benchmarks/memory_estimate.py   # prints the Markdown table quoted in docs/real-models.md

Counted: weights in bf16 (2 bytes a parameter); LoRA (r=8, the language model's q/k/v/o) in fp32
with its gradient and AdamW's two moments (16 bytes a trainable parameter); and per sample, with
gradient checkpointing, one bf16 hidden state per decoder layer plus the fp32 logits of the
sequence. Not counted: the framework's workspace and fragmentation (typically 1-2 GB), the vision
tower's activations (frozen; no gradient flows into it), and KV caches of BYORn's generation,
which run between steps and are freed.
"""

from __future__ import annotations

import torch
import transformers as hf

LORA_RANK = 8
GIB = 1024 ** 3

MODELS = {
    # llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14 at 336 px + Llama-2-7B (Vicuna); 576 image tokens
    "LLaVA-1.5-7B": (hf.LlavaForConditionalGeneration, hf.LlavaConfig(
        vision_config=hf.CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                          num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=hf.LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=32),
        image_token_index=32000, vision_feature_layer=-2), 576 + 100),
    # Qwen/Qwen2-VL-2B-Instruct; a 448 x 448 image gives (448 / 14)^2 / 4 = 256 image tokens
    "Qwen2-VL-2B": (hf.Qwen2VLForConditionalGeneration, hf.Qwen2VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        tie_word_embeddings=True), 256 + 100),
}


def estimate(model_cls: type, config, tokens: int) -> dict[str, float]:
    with torch.device("meta"):
        model = model_cls(config)
    params = sum(p.numel() for p in model.parameters())
    lora = sum(LORA_RANK * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".language_model." in f".{name}."
               and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj"))
    text = config.text_config
    per_sample = tokens * (text.num_hidden_layers * text.hidden_size * 2 + text.vocab_size * 4)
    return {"params": params, "lora": lora, "weights": params * 2 / GIB, "lora_state": lora * 16 / GIB,
            "per_sample": per_sample / GIB}


def main() -> None:
    print("| model | parameters | bf16 weights | LoRA r=8 params (+grad, AdamW) | activations a sample "
          "(tokens, checkpointing) | batch 8, estimated |")
    print("|---|---|---|---|---|---|")
    for name, (model_cls, config, tokens) in MODELS.items():
        e = estimate(model_cls, config, tokens)
        total = e["weights"] + e["lora_state"] + 8 * e["per_sample"]
        print(f"| {name} | {e['params'] / 1e9:.2f} B | {e['weights']:.1f} GiB | {e['lora'] / 1e6:.1f} M "
              f"({e['lora_state'] * 1024:.0f} MiB) | {e['per_sample'] * 1024:.0f} MiB ({tokens}) | {total:.1f} GiB |")


if __name__ == "__main__":
    main()
