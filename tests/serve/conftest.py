"""Fixtures for the server tests: a tiny base whose greedy answers vary (its weights scaled up, so the logits
are not near-uniform), two LoRA adapters on it made with different seeds, and a server on a free loopback port."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tuneforge.models.tiny import save_tiny


def lively_tiny(path: Path, seed: int = 0) -> Path:
    """A tiny model whose random answers vary (weights x5: at the default init it answers only newlines)."""
    return save_tiny(path, seed=seed, weight_scale=5.0)


def random_lora(base: Path, out: Path, seed: int) -> Path:
    """A peft LoRA adapter with random (non-zero) A and B: it changes the base's answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.models.tiny import tiny_tokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lively_base(tmp_path_factory) -> Path:
    return lively_tiny(tmp_path_factory.mktemp("serve") / "base")


@pytest.fixture(scope="session")
def adapters(lively_base, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("adapters")
    return {"alpha": random_lora(lively_base, d / "alpha", seed=1),
            "beta": random_lora(lively_base, d / "beta", seed=2)}


@contextmanager
def serving(target: str, *, lora_modules=(), api_keys=(), engine_kw=None, **app_kw):
    """A real server (uvicorn, 127.0.0.1, free port) around a real engine; yields the server (`.url`, `.app`)."""
    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import BackgroundServer, build_engine

    engine = build_engine(str(target), lora_modules=list(lora_modules), device="cpu", **(engine_kw or {}))
    app = create_app(engine, api_keys=api_keys, **app_kw)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(lively_base, adapters):
    """The base with both adapters; no response cache, so every request really generates."""
    with serving(lively_base, lora_modules=[f"{k}={v}" for k, v in adapters.items()],
                 response_cache_size=0) as srv:
        yield srv


def chat(srv, model: str, content: str, **kw):
    """One chat completion through the real openai SDK."""
    import openai

    c = openai.OpenAI(base_url=srv.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kw)
