"""Inference cost per 1M generated tokens for a served model, with and without quantization and batching.

Run: `tuneforge cost --serve [--base RUN_OR_MODEL] [--hardware cpu|T4|L4|A10|A100|H100] [--measured FILE] [--json]`.
Decoding reads every weight once per step, so tokens/s ≈ batch × bandwidth / weight bytes until compute caps it
at rate / (2·N FLOPs per token). On `cpu` the unquantized rows are measured here (greedy generation at batch 1
and 8) and the same two ceilings, calibrated on them, estimate int8/int4; on a GPU both ceilings come from the
datasheet (prices.yaml) times assumed efficiencies. A serving bench's figures (`--measured FILE`: the output of
`bench/serve.py --json`, or rows {hardware, quantization, batch, tokens_per_s}) replace the estimates they
match, and add their batch sizes; each row says where its figure comes from.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tuneforge.advise.cost import hardware_row, human_bytes, model_shape
from tuneforge.errors import TuneforgeError

QUANT_BYTES = {"int8": 1.0, "int4": 0.5}  # bytes per weight after quantization (scales ignored)
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


def _base_of(target: str) -> tuple[str, str]:
    """(what to load for a measurement, what to read the shape from): a run serves its merged model or its base."""
    from tuneforge.run import is_run, read_run

    if is_run(target):
        run = read_run(target)
        return target, str(run.model) if run.model is not None else run.info["base"]
    return target, target


def measure_generation(target: str, batch: int, new_tokens: int = 32) -> float:
    """Generated tokens per second at this batch size, greedy, exactly `new_tokens` per sequence."""
    import torch

    from tuneforge.data.tokenize import render_prompt
    from tuneforge.eval.harness import load_for_inference

    loaded = load_for_inference(target)
    tok, model = loaded.tokenizer, loaded.model
    enc = tok([render_prompt(PROMPT, tok)] * batch, return_tensors="pt", padding=True,
              add_special_tokens=False).to(next(model.parameters()).device)
    kw = dict(do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=4, min_new_tokens=4, **kw)  # warm-up
        t0 = time.perf_counter()
        model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        dt = time.perf_counter() - t0
    return batch * new_tokens / dt


_SERVE_BENCH_ROW = re.compile(r"tuneforge serve, (\d+) clients?")


def _read_measured(path: Path | None) -> list[dict]:
    """Rows {hardware, quantization, batch, tokens_per_s}; `bench/serve.py --json` output is read as it is
    (its "(b) tuneforge serve, N clients" rows: this machine's CPU, unquantized, batch N)."""
    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TuneforgeError(f"{path}: cannot read serving figures ({e})") from None
    rows = data.get("rows", []) if isinstance(data, dict) else data
    ok = []
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict):
            continue
        m = _SERVE_BENCH_ROW.search(str(r.get("row", "")))
        if m and isinstance(r.get("tok_s"), (int, float)):
            ok.append({"hardware": "cpu", "quantization": "none", "batch": int(m.group(1)),
                       "tokens_per_s": float(r["tok_s"]), "label": r["row"]})
        elif {"hardware", "quantization", "batch", "tokens_per_s"} <= set(r):
            ok.append(r)
    if rows and not ok:
        raise TuneforgeError(f"{path}: expected bench/serve.py --json rows, or rows with hardware, quantization, "
                             "batch, tokens_per_s")
    return ok


def serving_cost(target: str, *, hardware: str = "cpu", prices: dict, measured: Path | None = None,
                 batch: int = 8, new_tokens: int = 32) -> dict:
    """Tokens/s and price per 1M generated tokens for quantization none/int8/int4 × batch 1/`batch`."""
    name, row = hardware_row(prices, hardware)
    load_target, shape_of = _base_of(target)
    shape = model_shape(shape_of)
    n = shape.params
    bench = _read_measured(measured)
    local = name == "cpu"
    dtype_bytes = 4 if local else 2
    sizes = {"none": n * dtype_bytes, **{q: n * b for q, b in QUANT_BYTES.items()}}
    flops_per_token = 2 * shape.body + 2 * shape.hidden * shape.vocab
    measured_here: dict[int, float] = {}
    if local:
        for b in (1, batch):
            measured_here[b] = measure_generation(load_target, b, new_tokens)
        bandwidth = measured_here[1] * sizes["none"]  # effective bytes/s of batch-1 decoding
        compute = max(measured_here.values()) * flops_per_token  # at least what batching reached
        how = ("roofline calibrated on this machine's fp32 measurement (batch 1 → bandwidth, batch "
               f"{batch} → compute); not measured")
    else:
        bandwidth = row["memory_bandwidth_gbs"] * 1e9 * float(prices.get("assumed_bandwidth_efficiency", 0.6))
        compute = row["peak_tflops"] * 1e12 * float(prices.get("assumed_mfu", 0.35))
        how = (f"roofline from the {name} datasheet ({row['memory_bandwidth_gbs']} GB/s, {row['peak_tflops']} TFLOPS) "
               "× assumed efficiencies (prices.yaml); not measured")
    rows = []
    batches = sorted({1, batch} | {int(r["batch"]) for r in bench if str(r["hardware"]).lower() == name.lower()})
    for q, size in sizes.items():
        for b in batches:
            match = next((r for r in bench if str(r["hardware"]).lower() == name.lower()
                          and str(r["quantization"]).lower() == q and int(r["batch"]) == b), None)
            if match:
                tps, src = float(match["tokens_per_s"]), f"serving bench ({measured})"
            elif local and q == "none" and b in measured_here:
                tps, src = measured_here[b], "measured here (fp32, greedy)"
            else:
                tps, src = min(b * bandwidth / size, compute / flops_per_token), how
            per_m = 1e6 / tps / 3600
            rows.append({"quantization": q, "batch": b, "weight_bytes": int(size), "tokens_per_s": round(tps, 2),
                         "usd_per_1m_on_demand": round(per_m * row["on_demand_per_hour"], 4),
                         "usd_per_1m_spot": round(per_m * row["spot_per_hour"], 4), "source": src})
    return {"model": target, "hardware": name, "description": row.get("description", name),
            "parameters": n, "currency": prices.get("currency", "USD"), "prices_as_of": prices.get("as_of"),
            "prices": prices["path"], "rows": rows}


def render_serving(res: dict, spot: bool = False) -> str:
    first, second = ("spot", "on_demand") if spot else ("on_demand", "spot")
    out = [f"serving {res['model']} ({res['parameters']:,} parameters) on {res['hardware']} ({res['description']}); "
           f"{res['currency']} per 1M generated tokens, prices as of {res['prices_as_of']} ({res['prices']})",
           f"  {'quantization':<13}{'batch':>6}{'weights':>10}{'tok/s':>10}{first.replace('_', '-'):>11}"
           f"{second.replace('_', '-'):>11}  source"]
    for r in res["rows"]:
        out.append(f"  {r['quantization']:<13}{r['batch']:>6}{human_bytes(r['weight_bytes']):>10}"
                   f"{r['tokens_per_s']:>10.1f}{r['usd_per_1m_' + first]:>11.4f}{r['usd_per_1m_' + second]:>11.4f}"
                   f"  {r['source']}")
    return "\n".join(out)
