"""Build tiny random LFM2-Audio model folders, for the LFM2AudioNode tests.

Run by the tests with the Python of the node's environment (liquid-audio, Python 3.12;
never the test runner's):

    python make_tiny_lfm2_audio.py KIND OUT_DIR

KIND is ``mimi`` (the LFM2-Audio-1.5B layout: audio decoded by Mimi, whose weights lie
in the folder as ``tokenizer-e351c8d8-checkpoint125.safetensors``) or ``detokenizer``
(the LFM2.5-Audio layout: an ``audio_detokenizer/`` folder instead of Mimi). Either
folder is self-contained: ``LFM2AudioProcessor.from_pretrained(Path(folder))`` and
``LFM2AudioModel.from_pretrained(Path(folder))`` read nothing else.

The model is built from liquid-audio's own config dataclasses (``LFM2AudioConfig``,
``ConformerEncoderConfig``, ``DepthformerConfig``, transformers' ``Lfm2Config``),
small (a 64-wide LFM2 of two layers, a one-layer conformer, a one-layer
depthformer), with a byte-level BPE tokenizer whose special tokens sit at the ids
liquid-audio hard-codes: 7 ``<|im_end|>``, 128 ``<|audio_start|>``, 130 ``<|text_end|>``.
Mimi's architecture is hard-coded in liquid-audio (79 M parameters): its weights are
random, about 320 MB, so the tests build this folder once and keep it.

Random weights would say random things, and a sequential generation (ASR, TTS) only
switches to audio when the model emits ``<|audio_start|>``: left to chance, a random
model never speaks. So a few weights are set by hand, a small "program" in otherwise
random weights, for the model to act its tasks the way the real one does:

1. Text after audio, audio after text: ``<|audio_start|>`` wins when the
   conversation holds no audio input, and never when it does. Every embedding carries
   a constant in dimension 1 (text, audio out, and audio in through the adapter's
   bias) and audio input a large value in dimension 2. The attention layer attends
   uniformly (its query and key weights are zero) and writes ``n1 - 10 * n2`` (its
   normalised input's dimensions) into dimension 0, which only ``<|audio_start|>``
   reads. Without audio input it is positive; one second of audio input outweighs
   about a hundred text tokens.
2. Replies end only at ``max_new_tokens``, and their text is whole words: the
   embeddings of the special tokens (``<|im_end|>``, ``<|text_end|>``, ...) and of the
   tokens that are not whole ASCII text (single bytes of UTF-8 characters) are only
   the constant every token shares, so some other token always scores higher; and the
   end-of-audio code (2048) scores 0 against 2048 random codes in every codebook (even
   sampled from the top 64, it is never drawn).
   The tests decide the lengths, and can cut a generation mid-way.

The conformer's ``xscaling`` is False, as in the released models: liquid-audio 1.3.0's
``conformer/encoder.py`` uses ``math`` without importing it, so ``xscaling=True`` fails
there (LFM2AudioNode adds the missing import before loading). Seeded: a rebuild is the
same.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

IM_END, AUDIO_START, TEXT_END = 7, 128, 130
NAMED_SPECIAL = {
    0: "<|pad|>",
    1: "<|startoftext|>",
    2: "<|endoftext|>",
    6: "<|im_start|>",
    IM_END: "<|im_end|>",
    AUDIO_START: "<|audio_start|>",
    129: "<|audio_end|>",
    TEXT_END: "<|text_end|>",
}
NAMED_SPECIAL_RANGE = range(TEXT_END + 2)  # the special tokens: ids 0 to 131
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"  # the name liquid-audio looks for

CORPUS = [
    "Perform ASR.",
    "Perform TTS. Use the UK male voice.",
    "Respond with interleaved text and audio.",
    "hello there how are you today",
    "the quick brown fox jumps over the lazy dog",
    "speech recognition and synthesis in real time",
    "a small model for tests only, with random weights",
    "Sure! How about a short answer? Let me know if you would like more.",
] * 20

HIDDEN = 64
CONSTANT, AUDIO_MARK, AUDIO_WEIGHT = 1.0, 10.0, 10.0  # the program's dimensions 1 and 2


def tokenizer(out: Path) -> Any:
    """A byte-level BPE tokenizer with the special tokens where liquid-audio wants them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [NAMED_SPECIAL.get(i, f"<|reserved_{i}|>") for i in NAMED_SPECIAL_RANGE]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|pad|>",
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
    )
    for index, name in NAMED_SPECIAL.items():
        assert fast.convert_tokens_to_ids(name) == index, (name, index)
    fast.save_pretrained(out)
    return fast


def quiet_tokens(text: Any) -> list[int]:
    """The tokens the model never says: special ones but ``<|audio_start|>``, and parts
    of characters (whole ASCII text only, so that every text token is a piece of text)."""
    quiet = []
    for index in range(len(text)):
        piece = text.decode([index])
        special = index in NAMED_SPECIAL_RANGE and index != AUDIO_START
        if special or not piece.strip() or not piece.isascii():
            quiet.append(index)
    return quiet


def config(vocab_size: int) -> dict[str, Any]:
    """``config.json``: what ``LFM2AudioModel.from_pretrained`` and the processor read."""
    from liquid_audio.model.conformer.encoder import ConformerEncoderConfig
    from liquid_audio.model.lfm2_audio import DepthformerConfig
    from liquid_audio.processor import PreprocessorConfig

    preprocessor = PreprocessorConfig(
        sample_rate=16_000,
        normalize="per_feature",
        window_size=0.025,
        window_stride=0.01,
        window="hann",
        features=128,  # ChatState wants 128 mel bins
        n_fft=512,
        log=True,
        frame_splicing=1,
        dither=0.0,  # no noise: the same audio gives the same features
        pad_to=0,
        pad_value=0.0,
    )
    encoder = ConformerEncoderConfig(
        feat_in=128,
        feat_out=-1,
        n_layers=1,
        d_model=32,
        subsampling="dw_striding",
        subsampling_factor=8,  # mel2emb_len: one embedding per 8 mel frames
        subsampling_conv_channels=16,
        causal_downsampling=False,
        reduction=None,
        reduction_position=None,
        reduction_factor=1,
        ff_expansion_factor=2,
        self_attention_model="rel_pos",
        n_heads=2,
        att_context_size=[[-1, -1]],
        xscaling=False,  # True fails in liquid-audio 1.3.0 (no `import math`)
        untie_biases=True,
        pos_emb_max_len=5000,
        conv_kernel_size=9,
        conv_norm_type="batch_norm",
        conv_context_size=None,
        dropout=0.0,
        dropout_pre_encoder=0.0,
        dropout_emb=0.0,
        dropout_att=0.0,
    )
    lfm = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32_768,
        "layer_types": ["conv", "full_attention"],
        "conv_L_cache": 3,
        "norm_eps": 1e-5,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": IM_END,
        "tie_word_embeddings": True,
    }
    return {
        "architectures": ["LFM2AudioModel"],
        "codebooks": 8,
        "tie_audio_embeddings": False,
        "semantic_codebook_factor": 100.0,
        "codebook_weight": "log",
        "interleaved_n_text": 6,
        "interleaved_n_audio": 12,
        "preprocessor": asdict(preprocessor),
        "encoder": asdict(encoder),
        "lfm": lfm,
        "depthformer": asdict(DepthformerConfig(layers=1, dim=64, tie=True)),
    }


def build_model(settings: dict[str, Any], quiet: list[int]) -> Any:
    """The model of ``settings``, random, with the program of the module docstring."""
    from liquid_audio.model.conformer.encoder import ConformerEncoderConfig
    from liquid_audio.model.lfm2_audio import DepthformerConfig, LFM2AudioConfig, LFM2AudioModel
    from liquid_audio.processor import PreprocessorConfig
    from transformers import Lfm2Config

    values = dict(settings)
    conf = LFM2AudioConfig(
        preprocessor=PreprocessorConfig(**values.pop("preprocessor")),
        encoder=ConformerEncoderConfig(**values.pop("encoder")),
        lfm=Lfm2Config(**values.pop("lfm")),
        depthformer=DepthformerConfig(**values.pop("depthformer")),
        **values,
    )
    model = LFM2AudioModel(conf).eval()
    with torch.no_grad():
        program(model, quiet)
    return model


def program(model: Any, quiet: list[int]) -> None:
    """Set the hand-made weights (see the module docstring); ``quiet``: never said."""
    lfm = model.lfm
    embed = lfm.embed_tokens.weight
    embed[:, :3] = 0.0
    embed[:, 1] = CONSTANT
    embed[AUDIO_START, 0] = 1.0  # the only reader of dimension 0
    embed[quiet, 3:] = 0.0  # only the shared constant: never the likeliest
    # Audio out: eight codebook embeddings summed, so an eighth of the constant each.
    audio = model.audio_embedding.embedding.weight
    audio[:, :3] = 0.0
    audio[:, 1] = CONSTANT / model.codebooks
    # Audio in: the adapter's last layer writes the constant and the audio mark.
    last = model.audio_adapter.model[-1]
    last.weight[:3] = 0.0
    last.bias[:3] = torch.tensor([0.0, CONSTANT, AUDIO_MARK])
    for layer in lfm.layers:
        if layer.is_attention_layer:
            attention = layer.self_attn
            attention.q_proj.weight.zero_()  # uniform attention over the past
            attention.k_proj.weight.zero_()
            attention.v_proj.weight[0] = 0.0
            attention.v_proj.weight[0, 1] = 1.0
            attention.v_proj.weight[0, 2] = -AUDIO_WEIGHT
            attention.out_proj.weight[:3] = 0.0
            attention.out_proj.weight[0, 0] = 1.0
        else:
            layer.conv.out_proj.weight[:3] = 0.0
        layer.feed_forward.w2.weight[:3] = 0.0
    # The end-of-audio code scores 0 in every codebook (its tied rows are zero).
    for codebook in model.depth_embeddings:
        codebook.embedding.weight[2048] = 0.0


def save_weights(module: Any, path: Path) -> None:
    """Every tensor under its own name (tied ones copied), as accelerate loads them."""
    state = {
        name: tensor.detach().clone().contiguous() for name, tensor in module.state_dict().items()
    }
    save_file(state, str(path), metadata={"format": "pt"})


def mimi(out: Path) -> None:
    """Mimi's hard-coded architecture with random weights, where the processor looks."""
    from liquid_audio.moshi.models.loaders import get_mimi

    save_weights(get_mimi(None, device="cpu"), out / MIMI_FILE)


def detokenizer(out: Path) -> None:
    """A small LFM2.5 audio detokenizer (its 512 width is hard-coded in liquid-audio)."""
    from liquid_audio.detokenizer import LFM2AudioDetokenizer
    from transformers import Lfm2Config

    folder = out / "audio_detokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "vocab_size": 256,
        "hidden_size": 512,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096,
        # llama.cpp's name, as the released config has it (liquid-audio renames it)
        "layer_types": ["conv", "sliding_attention"],
        "sliding_window": 30,
        "norm_eps": 1e-5,
    }
    (folder / "config.json").write_text(json.dumps(settings, indent=2))
    renamed = {**settings, "layer_types": ["conv", "full_attention"]}
    save_weights(LFM2AudioDetokenizer(Lfm2Config(**renamed)).eval(), folder / "model.safetensors")


def build(kind: str, out: Path) -> None:
    """Write a complete tiny model folder of ``kind`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    text = tokenizer(out)
    settings = config(len(text))
    (out / "config.json").write_text(json.dumps(settings, indent=2))
    save_weights(build_model(settings, quiet_tokens(text)), out / "model.safetensors")
    if kind == "mimi":
        mimi(out)
    elif kind == "detokenizer":
        detokenizer(out)
    else:
        raise SystemExit(f"KIND must be mimi or detokenizer, got {kind!r}")


def main() -> int:
    kind, out = sys.argv[1], Path(sys.argv[2])
    torch.manual_seed(0)
    build(kind, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{kind}: {size} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
