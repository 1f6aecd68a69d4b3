"""load_base(): turn `--base` (alias | local dir | hub id | .gguf) into a model + tokenizer.

CPU runs in fp32 (this class of CPU has no fast bf16); CUDA uses bf16 where supported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.errors import ModelError
from tuneforge.models import gguf
from tuneforge.run import DEFAULT_MAX_NEW_TOKENS

ALIASES = {gguf.ALIAS: gguf.default_model_dir, "smollm2": gguf.default_model_dir}


@dataclass
class Base:
    model: object
    tokenizer: object
    name: str  # what the user asked for
    path: str  # the directory actually loaded


def resolve(name: str) -> Path:
    """The local directory a base name loads from, or the hub id unchanged (as a Path)."""
    if name.lower() in ALIASES:
        return ALIASES[name.lower()]()
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"{name}: GGUF file not found")
        return gguf.gguf_model_dir(p)
    if p.is_dir() and not (p / "config.json").is_file() and len(list(p.glob("*.gguf"))) == 1:
        return gguf.gguf_model_dir(next(p.glob("*.gguf")))  # a GGUF export directory (`export gguf`)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{name}: not a transformers model directory (no config.json)")
        return p
    if name.startswith((".", "/", "~")) or p.exists() or name.count("/") > 1:
        raise ModelError(f"{name}: model directory not found")
    _offline_unless_hub_reachable()
    return Path(name)  # a hub id


@functools.cache
def _offline_unless_hub_reachable(timeout: float = 3.0) -> None:
    """Without a network the Hub client retries for ~50 s before failing; one quick connect decides instead.

    Unreachable → offline mode for this process: a model already in the Hugging Face cache still loads.
    Behind a proxy a direct connect proves nothing, so the Hub client is left to decide."""
    import os
    import socket
    from urllib.parse import urlparse
    from urllib.request import getproxies

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or getproxies().get("https"):
        return
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        constants.HF_HUB_OFFLINE = True  # read per call by huggingface_hub and transformers
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by peft when it saves an adapter


def default_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve(name)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one clear line
        raise _load_error(name, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(name: str, *, device: str | None = None, dtype: torch.dtype | None = None,
              quantization_config=None) -> Base:
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    path = resolve(name)
    tok = load_tokenizer(name)
    try:
        # quantization_config only when given: an explicit None would override the one a quantized export
        # (torchao int8/int4) saved in its config.json, and its weights would load as random
        quant = {"quantization_config": quantization_config, "device_map": device} if quantization_config else {}
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype or default_dtype(device), attn_implementation="sdpa", **quant)
    except Exception as e:  # noqa: BLE001
        raise _load_error(name, e) from None
    if quantization_config is None:
        model.to(device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return Base(model, tok, name, str(path))


def set_default_decoding(model, tokenizer, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
    """Make a saved model decode the way `tuneforge generate` and `eval` do: greedy, stop at the end-of-turn
    token, at most `max_new_tokens`. Written into generation_config.json, so `pipeline("text-generation")`,
    LangChain and any other loader give the answer eval scored, with no decoding arguments."""
    gc = model.generation_config
    gc.do_sample = False
    gc.temperature = gc.top_p = gc.top_k = None  # sampling knobs would only draw warnings under greedy
    gc.max_new_tokens = max_new_tokens
    gc.max_length = None
    gc.eos_token_id = tokenizer.eos_token_id
    gc.pad_token_id = tokenizer.pad_token_id


def _load_error(name: str, e: Exception) -> ModelError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if not Path(name).exists() and name.lower() not in ALIASES:
        return ModelError(f"{name}: cannot load from the Hugging Face Hub (offline, or no such model?): {first}")
    return ModelError(f"{name}: cannot load model: {first}")
