"""Write a run's merged Llama-architecture model as a GGUF file (f16 or q8_0) with its tokenizer and chat template.

`tuneforge export gguf RUN --type f16|q8_0` → RUN/exports/gguf-f16|gguf-q8_0/model-<type>.gguf, loadable by
llama.cpp (and llama-cpp-python, ollama, LM Studio) and by transformers' `from_pretrained(dir, gguf_file=...)`.
The layout follows llama.cpp's own convert_hf_to_gguf.py for `LlamaForCausalLM`: tensor names from the `gguf`
package's name map, q_proj/k_proj rows permuted to llama.cpp's rotary layout, 1-D tensors (norms) in f32,
the output layer left out when tied to the embedding, BPE vocab + merges + special-token ids + chat template
in the metadata (`gguf.SpecialVocab` reads them from the tokenizer files saved with the model).
(`models/gguf.py` goes the other way: a GGUF base → transformers.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tuneforge.errors import TuneforgeError

TYPES = ("f16", "q8_0")
# llama.cpp names the pre-tokenizer (its regex split) rather than storing it. Byte-level with GPT-2's regex
# is "gpt-2" (what the default base's tokenizer, converted from its GGUF by transformers, uses); SmolLM2's hub
# tokenizer (digits split first) is "smollm". Anything else gets "gpt-2" and a warning.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
KNOWN_PRE = {"gpt-2": _BYTE_LEVEL,
             "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                               _BYTE_LEVEL]}}


def _normal(spec):
    """Drop keys that do not change how text is split (offset trimming)."""
    if isinstance(spec, dict):
        return {k: _normal(v) for k, v in spec.items() if k != "trim_offsets"}
    if isinstance(spec, list):
        return [_normal(x) for x in spec]
    return spec


def gguf_name(qtype: str) -> str:
    return f"model-{qtype}.gguf"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (halves) → llama.cpp's (interleaved pairs); transformers' GGUF loader undoes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _pre_tokenizer(tok_dir: Path) -> tuple[str, bool]:
    """(llama.cpp pre-tokenizer name, known?) from tokenizer.json's pre_tokenizer."""
    tj = tok_dir / "tokenizer.json"
    pre = json.loads(tj.read_text()).get("pre_tokenizer") if tj.is_file() else None
    for name, spec in KNOWN_PRE.items():
        if _normal(pre) == spec:
            return name, True
    return "gpt-2", False


def _vocab(tokenizer) -> tuple[list[str], list[int]]:
    """Tokens in id order and their llama.cpp types (normal, control for special tokens, user-defined)."""
    import gguf

    vocab = tokenizer.get_vocab()
    n = max(len(tokenizer), max(vocab.values()) + 1)
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def write_gguf(model, tokenizer, out_file: Path, qtype: str, *, name: str = "tuneforge export") -> list[str]:
    """Write `model` (transformers Llama, fp32) to `out_file`; returns warnings worth showing the user."""
    import logging
    import tempfile

    import gguf

    if qtype not in TYPES:
        raise TuneforgeError(f"--type {qtype}: GGUF export supports {', '.join(TYPES)}")
    cfg = model.config
    if cfg.model_type != "llama":
        raise TuneforgeError(f"GGUF export supports Llama-architecture models (SmolLM2, Llama, ...); this model "
                             f"is '{cfg.model_type}'")
    warnings = []
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") not in ("default", None):
        raise TuneforgeError(f"GGUF export: rope scaling '{rope.get('rope_type')}' is not supported yet")

    w = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(rope_theta))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if qtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # tokenizer: vocab + types here; merges, special ids, add_bos/eos and chat template via SpecialVocab
    with tempfile.TemporaryDirectory() as td:
        tokenizer.save_pretrained(td)
        pre, known = _pre_tokenizer(Path(td))
        if not known:
            warnings.append("tokenizer pre-tokenizer not recognised; wrote 'gpt-2' (llama.cpp may split text "
                            "differently from transformers; transformers' GGUF loader is unaffected)")
        tokens, types = _vocab(tokenizer)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        logging.getLogger("gguf.vocab").setLevel(logging.ERROR)  # "no merges found": handled just below
        special = gguf.SpecialVocab(td, load_merges=True, n_vocab=len(tokens))
        special.add_to_gguf(w)
        if not special.merges:  # a byte-level vocab without merges (tiny test models): transformers rebuilds
            w.add_token_scores([-float(i) for i in range(len(tokens))])  # merges from scores (none here);
            warnings.append("the tokenizer has no BPE merges: llama.cpp refuses such a file (GGUF arrays cannot "
                            "be empty); transformers' GGUF loader reads it")
    if not tokenizer.chat_template:
        warnings.append("the tokenizer has no chat template; the GGUF has none either")

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    tied = getattr(cfg, "tie_word_embeddings", False)
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TuneforgeError(f"GGUF export: no llama.cpp name for tensor '{hf_name}'")
        data = t.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_kv)
        if data.ndim == 1:
            w.add_tensor(name, data.astype(np.float32))
        elif qtype == "f16":
            w.add_tensor(name, data.astype(np.float16))
        elif data.shape[-1] % 32:  # q8_0 blocks are 32 wide; llama.cpp keeps such tensors in f16 as well
            w.add_tensor(name, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return warnings


def find_gguf(path: str | Path) -> Path:
    """The .gguf file of an export directory (or the file itself)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return p
    found = sorted(p.glob("*.gguf")) if p.is_dir() else []
    if len(found) != 1:
        raise TuneforgeError(f"{p}: expected one .gguf file, found {len(found)}")
    return found[0]
