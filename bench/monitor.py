"""What the request log costs the server: monitoring on vs off, and the queued writer vs a synchronous insert.

1. server: the same tiny model served with and without `attach_monitoring` (request log with PII redaction, full
   content); N chat requests from C concurrent clients; requests/s and client-side p50/p99 latency, medians over
   repeats in alternating order. Baseline: monitoring off.
2. hook: what the event loop pays per answered request. `RequestLog.hook` (queue put) vs the naive hook that
   inserts the row itself (one transaction per request, on the caller's thread), on a SQLite file; and how fast
   the writer thread drains: rows/s from first hook to `close()`.

    python bench/monitor.py                               # 400 requests, 8 clients, 3 repeats; 20000 records
    python bench/monitor.py --requests 40 --repeats 1 --records 2000    # quick check (~1 min)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lively_tiny(path: Path) -> Path:
    """A tiny model whose random answers vary (weights x5)."""
    from tuneforge.models.tiny import save_tiny

    return save_tiny(path, weight_scale=5.0)


def serve_once(base: Path, db_dir: Path, monitored: bool, n: int, clients: int, max_tokens: int) -> dict:
    import httpx

    from tuneforge.serve.app import create_app
    from tuneforge.serve.server import BackgroundServer, build_engine

    engine = build_engine(str(base), device="cpu")
    app = create_app(engine, response_cache_size=0)
    if monitored:
        from tuneforge.monitor.attach import MonitorSettings, attach_monitoring

        attach_monitoring(app, MonitorSettings(db=f"sqlite:///{db_dir / f'bench-{time.time_ns()}.db'}"))
    lat: list[float] = []
    lock = threading.Lock()
    with BackgroundServer(app) as srv:
        client = httpx.Client(base_url=srv.url, timeout=120, limits=httpx.Limits(max_connections=clients))

        def one(i: int) -> None:
            t0 = time.perf_counter()
            r = client.post("/v1/chat/completions", json={
                "model": str(base), "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": f"request {i}: write to me at user{i}@example.com"}]})
            r.raise_for_status()
            with lock:
                lat.append(time.perf_counter() - t0)

        one(-1)  # warm-up
        lat.clear()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    lat.sort()
    return {"rps": n / wall, "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


def hook_costs(records: int, db_dir: Path) -> dict:
    from sqlalchemy import insert

    from tuneforge.db import TableBase, connect
    from tuneforge.monitor import feedback  # noqa: F401 - all monitoring tables
    from tuneforge.monitor.requests import RequestLog, RequestRow, record_to_row
    from tuneforge.serve.completions import RequestRecord

    def rec(i: int) -> RequestRecord:
        return RequestRecord(f"chatcmpl-{i:09d}", "chat.completions", "m", time.time(), 200,
                             prompt=[{"role": "user", "content": f"question {i} from a@b.com"}],
                             completions=[f"answer {i}"], finish_reasons=["stop"], prompt_tokens=12,
                             completion_tokens=4, latency_s=0.05)

    queued = connect(f"sqlite:///{db_dir / 'queued.db'}")
    TableBase.metadata.create_all(queued)
    log = RequestLog(queued)
    t0 = time.perf_counter()
    hook_s = 0.0
    for i in range(records):
        h0 = time.perf_counter()
        log.hook(rec(i))
        hook_s += time.perf_counter() - h0
    log.close()
    drained = time.perf_counter() - t0

    naive = connect(f"sqlite:///{db_dir / 'naive.db'}")
    TableBase.metadata.create_all(naive)
    n_naive = max(1, records // 10)  # one commit per row is slow: a tenth of the records says enough
    t0 = time.perf_counter()
    for i in range(n_naive):
        with naive.begin() as conn:
            conn.execute(insert(RequestRow), [record_to_row(rec(i))])
    naive_s = time.perf_counter() - t0
    return {"hook_us": 1e6 * hook_s / records, "drain_rows_s": records / drained,
            "naive_hook_us": 1e6 * naive_s / n_naive, "naive_rows_s": n_naive / naive_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--records", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = lively_tiny(tmp / "tiny")
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.repeats):
            for mode in ((False, True) if r % 2 == 0 else (True, False)):
                runs[mode].append(serve_once(base, tmp, mode, args.requests, args.clients, args.max_tokens))
        med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in ("rps", "p50", "p99")} for m in runs}
        print(f"server: tiny model, {args.requests} chat requests x {args.max_tokens} tokens, {args.clients} clients, "
              f"{args.repeats} repeats (medians)")
        print("| monitoring | req/s | p50 ms | p99 ms |\n|---|---|---|---|")
        for m, name in ((False, "off (baseline)"), (True, "on (request log, full content, PII redaction)")):
            print(f"| {name} | {med[m]['rps']:.1f} | {1e3 * med[m]['p50']:.1f} | {1e3 * med[m]['p99']:.1f} |")
        print(f"ratio on/off: req/s {med[True]['rps'] / med[False]['rps']:.3f}x, "
              f"p50 {med[True]['p50'] / med[False]['p50']:.3f}x\n")
        h = hook_costs(args.records, tmp)
        print(f"hook: {args.records} records into SQLite")
        print("| hook | µs per request on the event loop | rows/s written |\n|---|---|---|")
        print(f"| insert per request (baseline) | {h['naive_hook_us']:.0f} | {h['naive_rows_s']:.0f} |")
        print(f"| RequestLog (queue + writer thread) | {h['hook_us']:.1f} | {h['drain_rows_s']:.0f} |")
        print(f"ratio: the event loop pays {h['naive_hook_us'] / h['hook_us']:.0f}x less per request; "
              f"rows/s {h['drain_rows_s'] / h['naive_rows_s']:.1f}x")


if __name__ == "__main__":
    main()
