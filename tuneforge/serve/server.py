"""Run the server: build the engine for `tuneforge serve TARGET ...` and serve it with uvicorn.

`BackgroundServer` runs an app on a free loopback port in a thread (tests and bench/serve.py use it).
"""

from __future__ import annotations

import os
import socket
import threading
import time

from tuneforge.errors import TuneforgeError


def api_keys_from(flags: list[str] | None) -> list[str]:
    """--api-key values, else TUNEFORGE_API_KEYS (comma-separated). Empty: no auth."""
    keys = [k for k in (flags or []) if k]
    if not keys:
        keys = [k.strip() for k in os.environ.get("TUNEFORGE_API_KEYS", "").split(",") if k.strip()]
    return keys


def build_engine(target: str, *, lora_modules: list[str] | None = None, served_model_name: str | None = None,
                 engine: str = "builtin", max_num_seqs: int = 16, max_queue: int = 64,
                 max_model_len: int | None = None, device: str | None = None, prefix_caching: bool = True,
                 merged_copies: int | None = None):
    """The engine serving TARGET and the --lora-modules adapters."""
    from tuneforge.serve.loading import load_groups, parse_lora_module, plan_adapter, plan_target

    if engine == "llama.cpp":
        from tuneforge.serve.llamacpp_engine import LlamaCppEngine, resolve_target

        if lora_modules:
            raise TuneforgeError("--engine llama.cpp serves one model (llama.cpp applies LoRA per context, not per "
                                 "request): serve each run's GGUF export, or use --engine builtin for --lora-modules")
        gguf, name, tok, defaults = resolve_target(target, served_model_name)
        return LlamaCppEngine(gguf, name, tok, defaults=defaults, max_num_seqs=max_num_seqs, max_queue=max_queue,
                              max_model_len=max_model_len)
    plans = plan_target(target, served_model_name)
    for spec in lora_modules or []:
        plans.append(plan_adapter(*parse_lora_module(spec)))
    if engine == "vllm":
        from tuneforge.serve.vllm_engine import VLLMEngine

        return VLLMEngine(plans, max_num_seqs=max_num_seqs, max_queue=max_queue, max_model_len=max_model_len)
    if engine != "builtin":
        raise TuneforgeError(f"--engine {engine}: expected builtin, llama.cpp or vllm")
    from tuneforge.serve.engine import BuiltinEngine

    groups = load_groups(plans, device=device, max_model_len=max_model_len)
    return BuiltinEngine(groups, max_num_seqs=max_num_seqs, max_queue=max_queue, prefix_caching=prefix_caching,
                         merged_copies=merged_copies)


def run(app, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as srv: srv.url` — uvicorn in a thread on 127.0.0.1:<free port>."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.app = app
        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
