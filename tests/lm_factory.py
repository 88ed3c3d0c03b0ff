"""Tiny random causal LMs with a real (trained-in-the-test) BPE tokenizer, saved to disk."""

from __future__ import annotations

from pathlib import Path

import torch

TRAIN_TEXT_TOPICS = 40


def build_tokenizer(vocab_size: int = 320):  # noqa: ANN201 - transformers type
    """A byte-level BPE tokenizer with BOS/EOS, trained on a slice of python-docs."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [topics[k] for k in sorted(topics)[:TRAIN_TEXT_TOPICS]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


def build_model(
    kind: str, vocab_size: int, n_layers: int = 4, d: int = 32, max_pos: int = 256
) -> torch.nn.Module:
    """A randomly initialised model of the given family (seeded)."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=max_pos,
        )
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=d, n_layer=n_layers, n_head=4, n_positions=max_pos)
    elif kind == "neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=d,
            intermediate_size=2 * d,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            max_position_embeddings=max_pos,
        )
    else:
        raise ValueError(kind)
    return AutoModelForCausalLM.from_config(cfg)


def save_tiny_lm(folder: Path, kind: str) -> Path:
    """Save a tiny model + tokenizer with ``save_pretrained`` and return the folder."""
    tokenizer = build_tokenizer()
    model = build_model(kind, len(tokenizer))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
