"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests that call one through the openai SDK.

`tuneforge serve MODEL --host 127.0.0.1 --port N` in a subprocess when this checkout has tuneforge.serve; until
then a minimal FastAPI app over `tuneforge.eval.harness` (/v1/models, /v1/chat/completions) run by uvicorn in a
thread. Either way the client side is the real openai SDK over real HTTP.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from fastapi import Request  # module level: FastAPI resolves the handler's (postponed) annotation from here

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_tuneforge_serve() -> bool:
    """In the checkout under test (an editable install elsewhere can make find_spec see another tree's)."""
    import tuneforge

    return (Path(tuneforge.__file__).parent / "serve" / "__init__.py").is_file()


def _wait_ready(url: str, alive, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server exited before it answered")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _fallback_app(model: Path):
    from fastapi import FastAPI

    from tuneforge.eval.harness import generate, load_for_inference

    loaded = load_for_inference(str(model))
    lock = threading.Lock()
    name = model.name
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tuneforge"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        import torch

        body = await request.json()
        temp = float(body.get("temperature") or 0.0)
        with lock:
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            outs, _ = generate(loaded, [body["messages"]], max_new_tokens=int(body.get("max_tokens") or 64),
                               batch_size=1, do_sample=temp > 0, temperature=temp or 1.0,
                               top_p=float(body.get("top_p") or 1.0))
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": outs[0]},
                             "finish_reason": "stop"}]}

    return app


@contextlib.contextmanager
def openai_server(model: Path) -> Iterator[str]:
    """Serve `model` on a free loopback port; yields the base URL (http://127.0.0.1:PORT/v1)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    if has_tuneforge_serve():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "serve", str(model), "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_ready(url, lambda: proc.poll() is None)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        return
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(_fallback_app(model), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_ready(url, thread.is_alive)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=20)
