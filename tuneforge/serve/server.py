"""Run the server: build the engine for `tuneforge serve TARGET ...` and serve it with uvicorn.

`BackgroundServer` runs an app on a free loopback port in a thread (tests and bench/serve.py use it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from tuneforge.errors import TuneforgeError


def api_keys_from(flags: list[str] | None) -> list[str]:
    """--api-key values, else TUNEFORGE_API_KEYS (comma-separated). Empty: no auth."""
    keys = [k for k in (flags or []) if k]
    if not keys:
        keys = [k.strip() for k in os.environ.get("TUNEFORGE_API_KEYS", "").split(",") if k.strip()]
    return keys


LLAMACPP_GAIN = ("6-7x the builtin engine's tokens/s at one client, 3x at 16 on this project's bench "
                 "(bench/RESULTS.md, issue 27)")


def choose_engine(target: str, *, lora_modules: list[str] | None = None, device: str | None = None,
                  llamacpp: bool | None = None) -> tuple[str, str]:
    """(engine, reason) for `--engine auto`, the default: llama.cpp for a run served on the CPU that has a GGUF
    export at least as new as its weights that passed verify, when llama-cpp-python is installed; else builtin,
    with what would change it. The builtin engine is kept wherever llama.cpp would lose something: a GPU, several
    adapters (--lora-modules), a classification run (its labels are scored, not generated). `llamacpp`: whether
    llama-cpp-python is importable (None: look)."""
    from tuneforge.run import is_run, read_json, read_run
    from tuneforge.serve.llamacpp_engine import INSTALL, available, run_export
    from tuneforge.serve.loading import run_defaults

    def builtin(why: str) -> tuple[str, str]:
        return "builtin", why + "; --engine to choose"

    if device == "cuda" or device is None and _cuda():
        return builtin("a GPU: the builtin engine (continuous batching on CUDA)")
    if lora_modules:
        return builtin("several adapters on one base (--lora-modules): llama.cpp applies LoRA per context, the "
                       "builtin engine per request")
    if not is_run(target):
        return builtin("not a run directory (llama.cpp serves a run's GGUF export, or --engine llama.cpp on a .gguf)")
    run = read_run(target)
    if run_defaults(run).get("labels"):
        return builtin("a classification run: its answers are its labels, scored by the builtin engine")
    export = run_export(target)
    if export is None:
        return builtin(f"no GGUF export; `tuneforge export gguf {target} --type q8_0` (and {INSTALL.split(' (')[0]}) "
                       f"would serve it through llama.cpp: {LLAMACPP_GAIN}")
    trained = run.adapter if run.adapter is not None else run.model  # not a later `export merge` copy
    weights = list(Path(trained).glob("*.safetensors")) if trained is not None else []
    newest = max((f.stat().st_mtime for f in weights), default=0.0)
    if min(f.stat().st_mtime for f in export.glob("*.gguf")) < newest:
        return builtin(f"the GGUF export in {export} is older than the run's weights; export it again "
                       f"(`tuneforge export gguf {target} --type q8_0`) to serve it through llama.cpp")
    verify = (read_json(export / "manifest.json") if (export / "manifest.json").is_file() else {}).get("verify")
    if not (verify or {}).get("passed"):
        return builtin(f"the GGUF export in {export} has not passed verify (answers and loss against the run); "
                       f"export it again (`tuneforge export gguf {target} --type q8_0`) to serve it through llama.cpp")
    if not (available() if llamacpp is None else llamacpp):
        return builtin(f"llama-cpp-python is not installed; {INSTALL} would serve the run's GGUF export through "
                       f"llama.cpp: {LLAMACPP_GAIN}")
    return "llama.cpp", (f"CPU and a GGUF export ({export.name}): llama.cpp, {LLAMACPP_GAIN}; --engine builtin "
                         "for runtime adapters (/v1/load_lora_adapter, fine-tuning jobs served here) or prompt "
                         "logprobs")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def build_engine(target: str, *, lora_modules: list[str] | None = None, served_model_name: str | None = None,
                 engine: str = "builtin", max_num_seqs: int = 16, max_queue: int = 64,
                 max_model_len: int | None = None, device: str | None = None, prefix_caching: bool = True,
                 merged_copies: int | None = None):
    """The engine serving TARGET and the --lora-modules adapters (`engine` "auto": `choose_engine`'s)."""
    from tuneforge.serve.loading import load_groups, parse_lora_module, plan_adapter, plan_target

    if engine == "auto":
        engine, _ = choose_engine(target, lora_modules=lora_modules, device=device)

    if engine == "llama.cpp":
        from tuneforge.serve.llamacpp_engine import LlamaCppEngine, resolve_target

        if lora_modules:
            raise TuneforgeError("--engine llama.cpp serves one model (llama.cpp applies LoRA per context, not per "
                                 "request): serve each run's GGUF export, or use --engine builtin for --lora-modules")
        gguf, name, tok, defaults = resolve_target(target, served_model_name)
        return LlamaCppEngine(gguf, name, tok, defaults=defaults, max_num_seqs=max_num_seqs, max_queue=max_queue,
                              max_model_len=max_model_len, prefix_caching=prefix_caching)
    plans = plan_target(target, served_model_name)
    for spec in lora_modules or []:
        plans.append(plan_adapter(*parse_lora_module(spec)))
    if engine == "vllm":
        from tuneforge.serve.vllm_engine import VLLMEngine

        return VLLMEngine(plans, max_num_seqs=max_num_seqs, max_queue=max_queue, max_model_len=max_model_len)
    if engine != "builtin":
        raise TuneforgeError(f"--engine {engine}: expected auto, builtin, llama.cpp or vllm")
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
