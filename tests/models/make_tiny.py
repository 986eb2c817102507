"""Build tiny random-weight models in Hugging Face layout, for the model node tests.

Run by the tests with the Python of a model node's environment (torch and
transformers are there, never in the test runner):

    python make_tiny.py KIND OUT_DIR

KIND is ``lfm2`` (Lfm2ForCausalLM with a chat template), ``wav2vec2`` (CTC speech
recognition), ``whisper`` (WhisperForConditionalGeneration) or ``vibevoice``. The
weights are random: the tests assert what such a model can show (shapes, rates,
types, streaming, cancellation), never what it says. Seeded, so a rebuild is the same.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

CORPUS = [
    "hello there how are you today",
    "the quick brown fox jumps over the lazy dog",
    "speech recognition and synthesis in real time",
    "a small model for tests only",
] * 20

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bpe_tokenizer(special: list[str], vocab_size: int = 300):  # type: ignore[no-untyped-def]
    """A small byte-level BPE tokenizer trained on :data:`CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def lfm2(out: Path) -> None:
    from transformers import GenerationConfig, Lfm2Config, Lfm2ForCausalLM

    special = ["<|pad|>", "<|startoftext|>", "<|im_end|>", "<|im_start|>"]
    tokenizer = bpe_tokenizer(special)
    tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token = special[:3]
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Lfm2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=65536,
        layer_types=["conv", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Lfm2ForCausalLM(config)
    # A random model would stop at a random end token: never end, so that a test
    # decides the length (max_new_tokens) and can cut generation mid-way. Nor say
    # anything but words (no blanks, symbols or pieces of UTF-8 characters), so that
    # a voice has something to speak.
    blank = [
        i for i in range(len(tokenizer)) if not re.fullmatch(r" ?[a-z]+", tokenizer.decode([i]))
    ]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=sorted({tokenizer.eos_token_id, *blank}),
        do_sample=False,
        max_new_tokens=32,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def wav2vec2(out: Path) -> None:
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    letters = list("abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    vocab.update({letter: 5 + i for i, letter in enumerate(letters)})
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, return_attention_mask=False
    )
    config = Wav2Vec2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
        ctc_loss_reduction="mean",
    )
    Wav2Vec2ForCTC(config).save_pretrained(out)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)


def whisper(out: Path) -> None:
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    special = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
    special += ["<|notimestamps|>", "<|nocaptions|>", "<|translate|>"]
    base = bpe_tokenizer(special, vocab_size=400)
    base.save_pretrained(out / "bpe")
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(out / "bpe" / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        language="en",
        task="transcribe",
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=[],
        suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = ids["<|startoftranscript|>"]
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.lang_to_id = {"<|en|>": ids["<|en|>"]}
    generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    generation.is_multilingual = True
    generation.max_length = 24
    generation.forced_decoder_ids = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)


KINDS = {"lfm2": lfm2, "wav2vec2": wav2vec2, "whisper": whisper}


def main() -> int:
    kind, out = sys.argv[1], Path(sys.argv[2])
    torch.manual_seed(0)
    KINDS[kind](out)
    print(f"{kind}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file())} bytes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
