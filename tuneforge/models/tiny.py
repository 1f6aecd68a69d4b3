"""Tiny, randomly initialised Llama models with a real byte-level tokenizer and ChatML template.

They exercise the whole machinery (tokenize, pack, train, save, merge, serve) in seconds in tests
and benchmarks of the machinery; they learn nothing useful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# SmolLM2's template, minus its default system prompt (keeps tiny sequences short).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per byte, no merges) with ChatML special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(tokenizer: PreTrainedTokenizerFast | None = None, *, seed: int = 0,
               hidden_size: int = 64, layers: int = 2, weight_scale: float = 1.0) -> LlamaForCausalLM:
    """A deterministic random Llama with the same module names as SmolLM2 (q_proj, v_proj, ...).
    `weight_scale` multiplies every matrix: at the default init a random model answers every prompt with
    newlines; x5 gives varied text (servers and monitoring need answers that differ)."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float()
    if weight_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(weight_scale)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(path: str | Path, *, seed: int = 0, **kw) -> Path:
    """Write a tiny model + tokenizer as an ordinary transformers directory (a valid `--base`)."""
    path = Path(path)
    tok = tiny_tokenizer()
    tiny_model(tok, seed=seed, **kw).save_pretrained(path)
    tok.save_pretrained(path)
    return path
