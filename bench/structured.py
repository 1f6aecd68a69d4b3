"""The cost of structured outputs and of logprobs on `tuneforge serve`: tokens/s of free text (the baseline, same
script, same server) vs a JSON schema enforced while decoding vs `logprobs: true, top_logprobs: 5`, at 1 and 16
concurrent openai-SDK clients. Goal (issue #24): a schema within 10% of free text.

Every answer is exactly --max-tokens tokens, greedy, so each row does the same work: free rows use
`min_tokens = max_tokens`; schema rows use a schema whose shortest answer is longer than the budget (an array of
at least 200 one-digit integers), so the grammar is live on every token and the answer always ends at "length".

Run: `python bench/structured.py` (SmolLM2-135M-Instruct, 32 requests x 64 tokens per row), `--tiny` for the
plumbing only. Prints one JSON line per row and the ratios against the free-text row of the same client count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LONG = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 200}


def prompts(n: int) -> list[str]:
    rows = [json.loads(line)["prompt"] for line in (ROOT / "examples/sql/test.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(n)]


async def run_row(url: str, model: str, kind: str, clients: int, n: int, max_tokens: int) -> dict:
    import openai

    ac = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    extra: dict = {}
    if kind == "schema":
        extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "digits", "schema": LONG}}}
    elif kind == "logprobs":
        extra = {"logprobs": True, "top_logprobs": 5, "extra_body": {"min_tokens": max_tokens}}
    else:
        extra = {"extra_body": {"min_tokens": max_tokens}}
    queue = list(prompts(n))
    tokens: list[int] = []

    async def client() -> None:
        while queue:
            p = queue.pop()
            r = await ac.chat.completions.create(model=model, messages=[{"role": "user", "content": p}],
                                                 max_tokens=max_tokens, temperature=0, **extra)
            tokens.append(r.usage.completion_tokens)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"row": kind, "clients": clients, "requests": n, "tokens": sum(tokens), "wall_s": round(wall, 2),
            "tok_s": round(sum(tokens) / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    a = ap.parse_args()

    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import BackgroundServer, build_engine

    target = a.model
    if a.tiny:
        import tempfile

        from tuneforge.models.tiny import save_tiny
        target = str(save_tiny(Path(tempfile.mkdtemp()) / "tiny", weight_scale=5.0))
    engine = build_engine(target, device="cpu", max_num_seqs=16, max_queue=256)
    app = create_app(engine, response_cache_size=0)
    with BackgroundServer(app) as srv:
        model = engine.models()[0].name
        asyncio.run(run_row(srv.url, model, "free", 1, 2, 8))  # warm-up
        for clients in a.clients:
            n = a.requests if clients > 1 else max(4, a.requests // 4)
            rows = {k: asyncio.run(run_row(srv.url, model, k, clients, n, a.max_tokens))
                    for k in ("free", "schema", "logprobs")}
            for k, r in rows.items():
                r["vs_free"] = round(r["tok_s"] / rows["free"]["tok_s"], 3)
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
