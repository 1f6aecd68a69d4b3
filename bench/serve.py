"""Serving throughput and latency: the guide's `pipeline("text-generation")` called sequentially vs `tuneforge serve`
with 1, 4 and 16 concurrent openai-SDK clients, on the same model, prompts and answer lengths.

Run: `python bench/serve.py` (SmolLM2-135M-Instruct, 64 prompts x 64 tokens), `--quick` for a short check,
`--tiny` to test the plumbing only, `--run RUN` for a run (pipeline on RUN/model, the server on RUN's adapter),
`--engines` to add in-process rows for transformers' own continuous batching (`generate_batch`).
Every answer is exactly --max-tokens tokens (min = max), greedy, so each row does the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prompts(n: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in (ROOT / "examples/sql/test.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(n)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def summary(name: str, lat: list[float], ttft: list[float], tokens: list[int], wall: float, others: float) -> dict:
    tpot = [(lt - ft) / (n - 1) for lt, ft, n in zip(lat, ttft, tokens) if n > 1]
    return {"row": name, "requests": len(lat), "tokens": sum(tokens), "wall_s": wall,
            "tok_s": sum(tokens) / wall, "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95),
            "ttft_p50_s": pct(ttft, 0.5), "tpot_p50_ms": 1000 * pct(tpot, 0.5), "others_cores": others}


# --- machine load: cores used by processes other than ours while a row ran -----------------------------------
def _busy_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def _ours_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            c = psutil.Process(pid).cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.NoSuchProcess:
            pass
    return total


class Load:
    def __init__(self, pids: list[int]):
        self.pids = pids

    def __enter__(self):
        self.b0, self.o0, self.t0 = _busy_s(), _ours_s(self.pids), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        self.others = max(0.0, (_busy_s() - self.b0) - (_ours_s(self.pids) - self.o0)) / wall


# --- (a) the guide's pipeline, one prompt at a time ------------------------------------------------------------
def run_pipeline(model_dir: str, ps: list[str], max_tokens: int) -> dict:
    import torch
    from transformers import pipeline
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        """Records when the first generated token arrives (the first put() is the prompt)."""

        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2:
                self.first = time.perf_counter()

        def end(self):
            pass

    pipe = pipeline("text-generation", model=model_dir, dtype=torch.float32)
    kw = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
    pipe([{"role": "user", "content": ps[0]}], **kw)  # warm-up, as the server gets one
    lat, ttft, toks = [], [], []
    with Load([os.getpid()]) as load:
        t_all = time.perf_counter()
        for p in ps:
            st = FirstToken()
            t0 = time.perf_counter()
            out = pipe([{"role": "user", "content": p}], streamer=st, **kw)
            lat.append(time.perf_counter() - t0)
            ttft.append((st.first or time.perf_counter()) - t0)
            answer = out[0]["generated_text"][-1]["content"]
            toks.append(max_tokens if answer is not None else 0)
        wall = time.perf_counter() - t_all
    del pipe
    gc.collect()
    return summary("(a) pipeline, sequential", lat, ttft, toks, wall, load.others)


# --- (b) tuneforge serve + openai SDK clients ------------------------------------------------------------------
def start_server(target: str, port: int, max_num_seqs: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "serve", target, "--port", str(port),
                             "--response-cache-size", "0", "--max-num-seqs", str(max_num_seqs),
                             "--max-queue", "1024"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tuneforge serve {target} exited ({proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit("server did not start in 300 s")


async def _client_row(url: str, model: str, ps: list[str], clients: int, max_tokens: int):
    import openai

    queue: asyncio.Queue = asyncio.Queue()
    for p in ps:
        queue.put_nowait(p)
    lat, ttft, toks = [], [], []

    async def worker():
        c = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
        while not queue.empty():
            p = queue.get_nowait()
            t0 = time.perf_counter()
            first, n = None, 0
            stream = await c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": p}], max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True}, extra_body={"min_tokens": max_tokens})
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content and first is None:
                    first = time.perf_counter()
                if ch.usage:
                    n = ch.usage.completion_tokens
            lat.append(time.perf_counter() - t0)
            ttft.append((first or time.perf_counter()) - t0)
            toks.append(n)
        await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return lat, ttft, toks, time.perf_counter() - t0


def run_server_rows(target: str, model: str, ps: list[str], max_tokens: int, clients: list[int]) -> list[dict]:
    from tuneforge.serve.server import free_port

    port = free_port()
    proc = start_server(target, port, max(clients))
    url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        asyncio.run(_client_row(url, model, ps[:2], 2, max_tokens))  # warm-up
        for c in clients:
            with Load([os.getpid(), proc.pid]) as load:
                lat, ttft, toks, wall = asyncio.run(_client_row(url, model, ps, c, max_tokens))
            rows.append(summary(f"(b) tuneforge serve, {c} client{'s' if c > 1 else ''}", lat, ttft, toks, wall,
                                load.others))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


# --- (engines) transformers' continuous batching vs ours, in process, no HTTP -----------------------------------
def run_engines(model_dir: str, ps: list[str], max_tokens: int) -> list[dict]:
    """Wall time of one batch of all prompts through transformers' `generate_batch` (attn sdpa) and through our
    BuiltinEngine, same process, same prompts; no HTTP (what the issue asked to measure first)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tuneforge.serve.engine_api import SamplingParams
    from tuneforge.serve.server import build_engine

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"] for p in ps]
    rows = []
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    gc_ = GenerationConfig(max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.generate_batch(inputs=ids[:2], generation_config=gc_, progress_bar=False)  # warm-up
    with Load([os.getpid()]) as load:
        t0 = time.perf_counter()
        out = model.generate_batch(inputs=ids, generation_config=gc_, progress_bar=False)
        wall = time.perf_counter() - t0
    n = sum(len(o.generated_tokens) for o in out.values())
    rows.append({"row": "transformers generate_batch (in process)", "requests": len(ids), "tokens": n,
                 "wall_s": wall, "tok_s": n / wall, "others_cores": load.others})
    del model, out
    gc.collect()
    eng = build_engine(model_dir, device="cpu", max_num_seqs=len(ids))
    eng.start()
    name = eng.models()[0].name
    sp = SamplingParams(max_tokens=max_tokens, temperature=0, min_tokens=max_tokens)
    for h in [eng.submit(name, i, sp) for i in ids[:2]]:
        h.wait()
    with Load([os.getpid()]) as load:
        t0 = time.perf_counter()
        hs = [eng.submit(name, i, sp) for i in ids]
        n = sum(len(h.wait()) for h in hs)
        wall = time.perf_counter() - t0
    eng.shutdown()
    rows.append({"row": "tuneforge BuiltinEngine (in process)", "requests": len(ids), "tokens": n, "wall_s": wall,
                 "tok_s": n / wall, "others_cores": load.others})
    return rows


def print_table(rows: list[dict], base: dict | None) -> None:
    print(f"\n{'row':<34}{'req':>5}{'tokens':>8}{'tok/s':>9}{'x (a)':>7}{'p50 s':>8}{'p95 s':>8}"
          f"{'TTFT p50':>9}{'ms/tok':>8}{'x (a)':>7}{'others':>7}")
    for r in rows:
        ratio = f"{r['tok_s'] / base['tok_s']:.2f}" if base and "p50_s" in r else ""
        lat_ratio = f"{r['tpot_p50_ms'] / base['tpot_p50_ms']:.2f}" if base and "tpot_p50_ms" in r else ""
        if "p50_s" in r:
            print(f"{r['row']:<34}{r['requests']:>5}{r['tokens']:>8}{r['tok_s']:>9.1f}{ratio:>7}{r['p50_s']:>8.2f}"
                  f"{r['p95_s']:>8.2f}{r['ttft_p50_s']:>9.2f}{r['tpot_p50_ms']:>8.1f}{lat_ratio:>7}"
                  f"{r['others_cores']:>7.2f}")
        else:
            print(f"{r['row']:<34}{r['requests']:>5}{r['tokens']:>8}{r['tok_s']:>9.1f}{'':>7}{'':>8}{'':>8}{'':>9}"
                  f"{'':>8}{'':>7}{r['others_cores']:>7.2f}")
    print("\ntok/s: output tokens per second of wall time for the whole row; x (a): ratio to the pipeline row; "
          "p50/p95: request latency; TTFT: time to first token; ms/tok: median time per output token after the "
          "first (x (a): ratio, lower is better); others: cores used by other processes meanwhile (above 0.25 "
          "the figures are unreliable: rerun on a quiet machine).")
    if any(r["others_cores"] > 0.25 for r in rows):
        print("WARNING: other processes used the CPU during this run; the figures are not comparable.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="Alias or model dir (pipeline and server).")
    ap.add_argument("--run", help="A run dir: pipeline on RUN/model (run `tuneforge export merge RUN` first), "
                                  "server on the run (its adapter on its base).")
    ap.add_argument("--prompts", type=int, default=64, help="Requests per row.")
    ap.add_argument("--max-tokens", type=int, default=64, help="Exact answer length (min = max tokens).")
    ap.add_argument("--clients", default="1,4,16", help="Concurrent SDK clients per (b) row.")
    ap.add_argument("--quick", action="store_true", help="16 prompts x 16 tokens, clients 1,16.")
    ap.add_argument("--tiny", action="store_true", help="A tiny random model: tests the plumbing, not speed.")
    ap.add_argument("--engines", action="store_true", help="Add transformers' generate_batch vs our engine.")
    ap.add_argument("--threads", type=int, help="torch threads for the pipeline and the server (OMP_NUM_THREADS); "
                                                 "default: torch's own (one per core).")
    ap.add_argument("--json", help="Save every figure to this file.")
    a = ap.parse_args()
    if a.quick:
        a.prompts, a.max_tokens, a.clients = 16, 16, "1,16"
    if a.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the server subprocess inherits it
        torch.set_num_threads(a.threads)
    from tuneforge.models.load import resolve

    if a.tiny:
        import tempfile

        from tuneforge.models.tiny import save_tiny

        a.model = str(save_tiny(Path(tempfile.mkdtemp()) / "tiny"))
    if a.run:
        from tuneforge.run import read_run

        run = read_run(a.run)
        if run.model is None:
            raise SystemExit(f"{a.run}: no model/ (run `tuneforge export merge {a.run}` first)")
        pipe_dir, target, served = str(run.model), a.run, Path(a.run).resolve().name
    else:
        pipe_dir, target, served = str(resolve(a.model)), a.model, a.model
    ps = prompts(a.prompts)
    clients = [int(c) for c in a.clients.split(",")]
    print(f"model {pipe_dir}; {len(ps)} prompts x {a.max_tokens} tokens, greedy; clients {clients}; "
          f"torch threads: {a.threads or 'default'}", flush=True)
    rows = [run_pipeline(pipe_dir, ps, a.max_tokens)]
    print_table(rows, rows[0])
    rows += run_server_rows(target, served, ps, a.max_tokens, clients)
    if a.engines:
        rows += run_engines(pipe_dir, ps[:16], a.max_tokens)
    print_table(rows, rows[0])
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
