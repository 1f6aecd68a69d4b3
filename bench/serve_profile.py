"""Where `tuneforge serve RUN`'s time goes at many concurrent short answers: the llama.cpp engine in process (no
HTTP) against the same engine behind the server with the bench's openai-SDK clients.

- `--in-process`: `LlamaCppEngine` on the run's GGUF export, requests submitted from N threads (a new one as soon
  as one finishes, like N clients), greedy; prints tok/s, the `llama_decode` calls and the share of wall time
  spent inside them (what is left is the engine's Python: batch filling, sampling, bookkeeping).
- default: `tuneforge serve RUN --engine llama.cpp` in a subprocess, N AsyncOpenAI clients streaming (bench/serve.py's
  client), --repeats rows; prints tok/s and the CPU seconds of the server and of the clients; `--py-spy FILE`
  records the server's Python stacks (raw format) while the rows run (`pip install py-spy`).

Run: `python bench/serve_profile.py --run RUN [--in-process] [--clients 16] [--prompts 32] [--max-tokens 32]`
(RUN: a LoRA run with `export merge` and `export gguf --type q8_0` done, as for bench/serve.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve import _client_row, prompts, start_server, tuneforge_cmd  # noqa: E402


def in_process(run: Path, ps: list[str], clients: int, max_tokens: int) -> None:
    import llama_cpp

    from tuneforge.serve.engine_api import SamplingParams
    from tuneforge.serve.llamacpp_engine import LlamaCppEngine, resolve_target

    gguf, name, tok, defaults = resolve_target(str(run))
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
           for p in ps]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ids]
    engine = LlamaCppEngine(gguf, name, tok, defaults=defaults, max_num_seqs=clients)
    engine.start()
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    engine.submit(name, ids[0], params).wait()  # warm-up
    spent = {"s": 0.0, "calls": 0}
    decode = llama_cpp.llama_decode

    def timed(ctx, batch):
        t0 = time.perf_counter()
        rc = decode(ctx, batch)
        spent["s"] += time.perf_counter() - t0
        spent["calls"] += 1
        return rc

    llama_cpp.llama_decode = timed
    todo, lock, total = list(ids), threading.Lock(), [0]

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                x = todo.pop(0)
            n = len(engine.submit(name, x, params).wait())
            with lock:
                total[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    llama_cpp.llama_decode = decode
    engine.shutdown()
    print(f"in process, {clients} clients: {total[0]} tokens in {wall:.2f} s = {total[0] / wall:.1f} tok/s; "
          f"llama_decode {spent['calls']} calls, {spent['s']:.2f} s = {100 * spent['s'] / wall:.0f}% of the wall time")


def over_http(run: Path, ps: list[str], clients: list[int], max_tokens: int, repeats: int, spy: str | None) -> None:
    import psutil

    from tuneforge.serve.server import free_port

    port = free_port()
    served = run.resolve().name
    proc = start_server(tuneforge_cmd(str(run), port, max(clients), "--engine", "llama.cpp", "--served-model-name",
                                      served), port)
    url = f"http://127.0.0.1:{port}/v1"
    recorder = None
    try:
        asyncio.run(_client_row(url, served, ps[:2], 2, max_tokens, {}))  # warm-up
        server, me = psutil.Process(proc.pid), psutil.Process()
        s0, m0 = server.cpu_times(), me.cpu_times()
        if spy:
            recorder = subprocess.Popen(["py-spy", "record", "-o", spy, "-f", "raw", "--threads", "--pid",
                                         str(proc.pid), "-r", "200"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
            time.sleep(1)
        for _ in range(repeats):
            for n in clients:  # one server for every row, as in bench/serve.py
                lat, ttft, toks, wall = asyncio.run(_client_row(url, served, ps, n, max_tokens, {}))
                print(f"over HTTP, {n} clients: {sum(toks)} tokens in {wall:.2f} s = {sum(toks) / wall:.1f} tok/s",
                      flush=True)
        s1, m1 = server.cpu_times(), me.cpu_times()
        print(f"CPU seconds: server {s1.user - s0.user + s1.system - s0.system:.2f}, clients "
              f"{m1.user - m0.user + m1.system - m0.system:.2f}")
    finally:
        if recorder is not None:
            recorder.send_signal(2)
            recorder.wait(timeout=60)
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="A run with a verified q8_0 (or f16) GGUF export.")
    ap.add_argument("--in-process", action="store_true", help="The engine alone, no HTTP.")
    ap.add_argument("--clients", default="16", help="Concurrent clients (HTTP: a comma list, rows in this order).")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32, help="Answers end where the model stops, at most this.")
    ap.add_argument("--repeats", type=int, default=3, help="Rows over HTTP.")
    ap.add_argument("--py-spy", help="Record the server's stacks to this file (raw format) during the HTTP rows.")
    a = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ps = prompts(a.prompts)
    clients = [int(c) for c in a.clients.split(",")]
    from tuneforge.errors import TuneforgeError
    from tuneforge.serve.llamacpp_engine import resolve_target

    try:  # say what is wrong with RUN here, not as a server that exited
        resolve_target(str(a.run))
    except TuneforgeError as e:
        raise SystemExit(f"error: {e}")
    if a.in_process:
        in_process(a.run, ps, clients[0], a.max_tokens)
    else:
        over_http(a.run, ps, clients, a.max_tokens, a.repeats, a.py_spy)


if __name__ == "__main__":
    main()
