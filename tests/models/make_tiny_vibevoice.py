"""Build a tiny random VibeVoice checkpoint in transformers' layout, for the VibeVoiceNode tests.

Run by the tests with the Python of the node's environment (torch, transformers and
diffusers are there, never in the test runner)::

    python make_tiny_vibevoice.py OUT_DIR

The same files as the converted ``vibevoice/VibeVoice-1.5B-hf`` (config, generation
config with its noise scheduler, processor with its chat template, tokenizer with the
audio tokens), at about 70 thousand parameters: a Qwen2 of width 32, acoustic and
semantic tokenizers of a few channels that keep the real hop (3,200 samples, 7.5
speech tokens a second at 24 kHz), a one-layer diffusion head. The weights are random:
such a model never chooses to speak by itself, so the tests force its speech tokens
(see ``vibevoice_scripted.py``). Seeded, so a rebuild is the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from make_tiny import bpe_tokenizer  # this script's folder is on sys.path

AUDIO_BOS, AUDIO_EOS, AUDIO = "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"
END = "<|endoftext|>"
RATIOS = [8, 20, 20]  # 3,200 samples a speech token, as the real model's [2, 2, 4, 5, 5, 8]

# The chat template of the converted checkpoint (transformers'
# convert_vibevoice_to_hf.py): a voice sample per speaker, then the script.
CHAT_TEMPLATE = """{%- set system_prompt = system_prompt | default(" Transform the text provided by various speakers into speech output, utilizing the distinct voice of each respective speaker.\\n") -%}
{{ system_prompt -}}
{%- set audio_bos_token = audio_bos_token | default("<|vision_start|>") %}
{%- set audio_eos_token = audio_eos_token | default("<|vision_end|>") %}
{%- set audio_token = audio_token | default("<|vision_pad|>") %}
{%- set ns = namespace(speakers_with_audio="") %}
{%- for message in messages %}
    {%- set role = message['role'] %}
    {%- set content = message['content'] %}
    {%- set has_audio = content | selectattr('type', 'equalto', 'audio') | list | length > 0 %}
    {%- if has_audio and role not in ns.speakers_with_audio %}
        {%- set ns.speakers_with_audio = ns.speakers_with_audio + role + "," %}
    {%- endif %}
{%- endfor %}

{%- if ns.speakers_with_audio %}
{{ " Voice input:\\n" }}
{%- for speaker in ns.speakers_with_audio.rstrip(',').split(',') %}
{%- if speaker %}
 Speaker {{ speaker }}:{{ audio_bos_token }}{{ audio_token }}{{ audio_eos_token }}{{ "\\n" }}
{%- endif %}
{%- endfor %}
{%- endif %}
 Text input:{{ "\\n" }}

{%- for message in messages %}
    {%- set role = message['role'] %}
    {%- set text_items = message['content'] | selectattr('type', 'equalto', 'text') | list %}
    {%- for item in text_items %}
 Speaker {{ role }}: {{ item['text'] }}{{ "\\n" }}
    {%- endfor %}
{%- endfor %}
 Speech output:{{ "\\n" }}{{ audio_bos_token }}"""  # noqa: E501


def vibevoice(out: Path) -> None:
    from transformers import (
        VibeVoiceAcousticTokenizerConfig,
        VibeVoiceAcousticTokenizerEncoderConfig,
        VibeVoiceAcousticTokenizerFeatureExtractor,
        VibeVoiceConfig,
        VibeVoiceForConditionalGeneration,
        VibeVoiceProcessor,
    )

    tokenizer = bpe_tokenizer([END, AUDIO_BOS, AUDIO_EOS, AUDIO])
    tokenizer.pad_token = tokenizer.eos_token = END
    ids = {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in (END, AUDIO_BOS, AUDIO_EOS, AUDIO)
    }
    codec = {
        "hidden_size": 8,
        "kernel_size": 3,
        "num_filters": 2,
        "downsampling_ratios": RATIOS,
        "depths": [1] * (len(RATIOS) + 1),
        "ffn_expansion": 1,
    }
    config = VibeVoiceConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 16_384,
            "tie_word_embeddings": True,  # as the 1.5B
        },
        audio_config=VibeVoiceAcousticTokenizerConfig(**codec),
        semantic_model_config=VibeVoiceAcousticTokenizerEncoderConfig(**codec),
        diffusion_head_config={
            "num_hidden_layers": 1,
            "intermediate_size": 64,
            "frequency_embedding_size": 32,
        },
        pad_token_id=ids[END],
        eos_token_id=ids[END],
        audio_bos_token_id=ids[AUDIO_BOS],
        audio_eos_token_id=ids[AUDIO_EOS],
        audio_token_id=ids[AUDIO],
    )
    model = VibeVoiceForConditionalGeneration(config)
    # What the conversion script sets on the real checkpoint.
    generation = model.generation_config
    generation.do_sample = False
    generation.guidance_scale = 1.3
    generation.max_new_tokens = 256
    generation.noise_scheduler_class = "DPMSolverMultistepScheduler"
    generation.noise_scheduler_config = {
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
    }
    generation._from_model_config = False
    model.save_pretrained(out)
    extractor = VibeVoiceAcousticTokenizerFeatureExtractor(
        sampling_rate=24_000,
        normalize_audio=True,
        target_dB_FS=-25,
        eps=1e-6,
        pad_to_multiple_of=3_200,
    )
    processor = VibeVoiceProcessor(
        feature_extractor=extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(out)


def main() -> int:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    vibevoice(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"vibevoice: {size} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
