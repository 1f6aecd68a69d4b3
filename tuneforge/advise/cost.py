"""What a fine-tune will cost before it runs: tokens, optimizer steps, FLOPs, peak memory per method, time, money.

Run: `tuneforge cost DATA [--base M] [--method ...] [--epochs E] [--hardware cpu|T4|L4|A10|A100|H100] [--spot]
[--json]`; in code `estimate(cfg, hardware="cpu")`. Time on `cpu` (this machine) comes from a micro-benchmark: a
few real optimizer steps of the real recipe (`train.recipe.prepare`, `micro_batch`, `backward`, `update`)
on the real base, under the loop's own allocator and attention settings; on a listed GPU it comes from the
datasheet peak times an assumed utilisation (prices.yaml, dated and editable, says which). `train_seconds` is the
optimizer-step time, the same quantity as `train_seconds` in a run's run.json.

FLOPs of one optimizer step (P positions computed, S supervised positions, n_i the example lengths, N_body the
decoder's matmul parameters, V·d the output layer, L layers, d hidden size, N_a trainable adapter parameters):
  forward      F = 2·N_body·P + 2·V·d·S + A,   A = 2·L·d·Σn_i² (causal attention, per example: packing keeps
               examples apart)
  full         3F              the usual 6·N·tokens: the backward pass costs twice the forward
  LoRA, QLoRA  2F + A + 6·N_a·P   the backward pass computes activation gradients through the frozen weights (as
               much as the forward) but no weight gradients for them; the adapter's own weights cost 6 per position
  prompt tuning as LoRA with N_a ≈ 0, the output layer at every position (S = P) and padded rows
The output layer counts supervised positions only because tuneforge computes it only there.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge import methods
from tuneforge.config import TrainConfig, plan_key
from tuneforge.errors import ConfigError, TuneforgeError

PRICES = Path(__file__).with_name("prices.yaml")
CPU_BASELINE = 450 * 2**20  # RSS of a process that has imported torch + transformers + peft (measured, CPU)
NF4_BYTES = 0.5 + 4 / 64 / 4  # 4-bit weights + double-quantized absmax scales (~0.127 bit/weight) ≈ 0.52 B


# --- prices ----------------------------------------------------------------------------------------------------
def load_prices(path: str | Path | None = None) -> dict:
    """The price/throughput table (prices.yaml shipped with tuneforge, or the user's copy)."""
    import yaml

    p = Path(path) if path else PRICES
    if not p.is_file():
        raise ConfigError(f"{p}: price table not found")
    try:
        table = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    hw = table.get("hardware")
    if not isinstance(hw, dict) or "cpu" not in hw:
        raise ConfigError(f"{p}: needs a 'hardware' mapping with at least a 'cpu' row")
    for name, row in hw.items():
        for k in ("on_demand_per_hour", "spot_per_hour") + (() if name == "cpu" else
                                                             ("peak_tflops", "memory_bandwidth_gbs", "memory_gb")):
            if not isinstance(row.get(k), (int, float)):
                raise ConfigError(f"{p}: hardware.{name}.{k} must be a number")
    table["path"] = str(p)
    return table


def hardware_row(prices: dict, name: str) -> tuple[str, dict]:
    """Case-insensitive lookup: `h100` finds `H100`."""
    for k, row in prices["hardware"].items():
        if k.lower() == name.lower():
            return k, row
    raise ConfigError(f"--hardware {name}: not in {prices['path']} (have: {', '.join(prices['hardware'])})")


# --- the model's shape, without loading its weights ------------------------------------------------------------
@dataclass
class Shape:
    params: int
    embedding: int  # input embedding parameters: a lookup, no matmul FLOPs
    head: int  # output layer V·d (tied to the embedding or not)
    tied: bool
    layers: int
    hidden: int
    kv: int  # key/value width
    intermediate: int
    vocab: int
    linear: dict = field(default_factory=dict)  # module name -> (in, out), every nn.Linear but the output layer

    @property
    def body(self) -> int:
        """Parameters multiplied at every position: all but the embedding lookup and the output layer."""
        return self.params - self.embedding - (0 if self.tied else self.head)


def model_shape(base: str) -> Shape:
    """Build the model on the meta device from its config (no weights read: any size works, even 70B)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.models.load import resolve

    path = str(resolve(base))
    try:
        cfg = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise TuneforgeError(f"{base}: cannot read the model config: {str(e).splitlines()[0]}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is not None and out.weight is emb.weight
    linear = {n: (m.in_features, m.out_features) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not out}
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = getattr(text, "num_attention_heads", 1)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return Shape(params=sum(p.numel() for p in model.parameters()), embedding=emb.weight.numel(),
                 head=out.weight.numel() if out is not None else 0, tied=tied,
                 layers=text.num_hidden_layers, hidden=text.hidden_size,
                 kv=getattr(text, "num_key_value_heads", heads) * head_dim,
                 intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size), vocab=emb.weight.shape[0],
                 linear=linear)


def trainable_params(shape: Shape, cfg: TrainConfig, method: str) -> int:
    """What the method trains (its `methods.Method.trainable` formula): all (full), r·(in+out) per adapted linear
    layer (LoRA/QLoRA, + DoRA's magnitudes and modules_to_save), or the soft prompt (prompt tuning)."""
    return methods.get(method).trainable(shape, cfg)


# --- FLOPs -----------------------------------------------------------------------------------------------------
def step_flops(shape: Shape, method: str, trainable: int, positions: int, supervised: int, attn: int,
               *, forward_only: bool = False) -> float:
    """FLOPs for a batch of `positions` (of which `supervised` carry loss; Σn² = `attn`); see the module doc."""
    row = methods.get(method)
    head_rows = positions if row.generic_loss else supervised
    a = 2.0 * shape.layers * shape.hidden * attn
    f = 2.0 * shape.body * positions + 2.0 * shape.vocab * shape.hidden * head_rows + a
    if forward_only:
        return f
    if row.weight_gradients:
        return 3 * f
    return 2 * f + a + 6.0 * trainable * positions


# --- the run's batches, counted without building them ----------------------------------------------------------
@dataclass
class Counts:
    positions: int  # computed positions (padding included)
    supervised: int  # positions that carry loss (targets)
    attn: int  # Σ over rows/examples of attended length²
    tokens: int  # real tokens (no padding): what run.json calls train_tokens


def example_counts(enc) -> tuple[int, int]:
    """(length, supervised targets) of an encoded example as collate() shifts it: position j predicts j+1."""
    from tuneforge.data.tokenize import IGNORE

    return len(enc.input_ids), sum(1 for x in enc.labels[1:] if x != IGNORE)


def batch_counts(lens: list[tuple[int, int]], *, packing: bool, virtual: int = 0) -> Counts:
    """Counts of one micro-batch from its examples' (length, supervised); mirrors train.packing.collate."""
    sup = sum(s for _, s in lens)
    real = sum(n for n, _ in lens)
    if packing:
        return Counts(real, sup, sum(n * n for n, _ in lens), real)
    width = max(n for n, _ in lens) + virtual
    return Counts(len(lens) * width, sup, len(lens) * width * width, real)


def tensor_counts(batch: dict, *, virtual: int = 0) -> Counts:
    """The same counts read off a collated micro-batch (what the benchmark actually ran)."""
    from tuneforge.data.tokenize import IGNORE

    sup = int((batch["targets"] != IGNORE).sum())
    if batch["attention_mask"] is None:
        pos = batch["position_ids"][0].tolist()
        starts = [i for i, x in enumerate(pos) if x == 0] + [len(pos)]
        lens = [b - a for a, b in zip(starts, starts[1:])]
        return Counts(len(pos), sup, sum(n * n for n in lens), len(pos))
    rows, width = batch["input_ids"].shape
    w = width + virtual
    return Counts(rows * w, sup, rows * w * w, int(batch["attention_mask"].sum()))


# --- the plan: what the run will compute ----------------------------------------------------------------------
@dataclass
class Plan:
    cfg: TrainConfig  # method resolved (auto → lora/qlora)
    shape: Shape
    trainable: int
    n_train: int
    n_val: int
    steps: int
    steps_per_epoch: int
    n_evals: int
    step_counts: list[Counts]  # one per optimizer step (its micro-batches summed)
    peak_micro: Counts  # the largest micro-batch: what sets activation memory
    val_counts: list[Counts]  # one per validation batch
    why_method: str | None = None

    @property
    def virtual(self) -> int:
        return methods.get(self.cfg.method).virtual_tokens(self.cfg)

    def flops(self) -> float:
        return sum(step_flops(self.shape, self.cfg.method, self.trainable, c.positions, c.supervised, c.attn)
                   for c in self.step_counts)

    def eval_flops(self) -> float:
        per = sum(step_flops(self.shape, self.cfg.method, self.trainable, c.positions, c.supervised, c.attn,
                             forward_only=True) for c in self.val_counts)
        return per * self.n_evals


def plan_from(p, shape: Shape, why_method: str | None = None) -> Plan:
    """Count every optimizer step of the run `p` (a `train.recipe.Prepared`, model optional) would take, in the
    recipe's own order (`train.recipe.schedule`, `batch_indices`: the micro-batches `micro_batch` builds) and
    with its packing (`Prepared.cfg.packing`: prepare turned it off where the method or objective forbids it)."""
    from tuneforge.train.objectives.sft import VAL_BATCH_SIZE
    from tuneforge.train.recipe import batch_indices, schedule

    cfg = p.cfg
    total, per_epoch_steps, every = schedule(p)
    accum, n = cfg.gradient_accumulation_steps, len(p.train)
    lens = [example_counts(e) for e in p.train]
    virtual = methods.get(cfg.method).virtual_tokens(cfg)
    packing = cfg.packing
    steps, peak = [], Counts(0, 0, 0, 0)
    for step in range(total):
        acc = Counts(0, 0, 0, 0)
        for j in range(accum):
            c = batch_counts([lens[i] for i in batch_indices(n, cfg, step * accum + j)], packing=packing,
                             virtual=virtual)
            peak = c if c.positions > peak.positions else peak
            acc = Counts(acc.positions + c.positions, acc.supervised + c.supervised, acc.attn + c.attn,
                         acc.tokens + c.tokens)
        steps.append(acc)
    vlens = [example_counts(e) for e in p.val]
    val = [batch_counts(vlens[i:i + VAL_BATCH_SIZE], packing=packing, virtual=virtual)
           for i in range(0, len(vlens), VAL_BATCH_SIZE)]
    n_evals = len({s for s in range(1, total + 1) if s % every == 0 or s == total}) if val else 0
    method = cfg.method
    return Plan(cfg, shape, trainable_params(shape, cfg, method), n, len(p.val), total, per_epoch_steps, n_evals,
                steps, peak, val, why_method)


# --- memory ----------------------------------------------------------------------------------------------------
def activation_values(shape: Shape) -> int:
    """Values autograd keeps per position per layer: (14d + 4·kv + 5·i). The tensors a Llama block saves (norm
    inputs/outputs, q/k/v before and after rotary, attention output, the MLP's gate/up/act/product: about
    7d + 4kv + 4i) fall ~1.5x short of the peaks bench/methods.py measured on SmolLM2 (≈2 MB per position in
    fp32 for lora, full and prompt tuning alike: dropout and LoRA inputs, temporaries, allocator slack), so the
    coefficients are scaled to those measurements."""
    return 14 * shape.hidden + 4 * shape.kv + 5 * shape.intermediate


def peak_memory(shape: Shape, method: str, trainable: int, micro: Counts, *, gpu: bool, world: int = 1,
                fsdp: str | None = None) -> dict:
    """Peak bytes of one training process by part (formula; CPU: fp32 and the process's own ~450 MB; GPU: bf16,
    what torch allocates). Activations: ACTIVATION_VALUES per position per layer for the largest micro-batch;
    the output layer's logits (and their fp32 copy) for one chunk of supervised positions (every position for
    prompt tuning).

    With `fsdp` over `world` processes (train/shard.py) each process holds 1/world of the weights, gradients and
    optimizer state, as FSDP shards them, plus what it gathers to compute: full_shard/hybrid_shard two decoder
    layers (the one computing and the one prefetched) and the embedding/output/norm unit, kept whole from forward
    to backward; shard_grad_op keeps every layer gathered from forward to backward (all the weights). Without fsdp
    (DDP) every process holds everything, as one process does."""
    b = 2 if gpu else 4
    shards = world if fsdp else 1
    row = methods.get(method)
    if row.quantized_base:
        quantized = sum(i * o for i, o in shape.linear.values())
        weights = quantized * NF4_BYTES + (shape.params - quantized) * b
    else:
        weights = shape.params * b
    if row.weight_gradients:
        states = shape.params * 3 * b  # gradients + AdamW's two moments, in the parameters' dtype
    else:
        states = trainable * 16  # peft keeps adapters in fp32: weight, gradient, two moments
    gathered = 0
    if shards > 1:
        if fsdp == "shard_grad_op":
            gathered = weights * (shards - 1) / shards
        else:
            layer = (shape.params - shape.embedding - (0 if shape.tied else shape.head)) / max(shape.layers, 1)
            gathered = min((2 * layer + shape.embedding + (0 if shape.tied else shape.head)) * b, weights)
        weights, states = weights / shards, states / shards
    per_pos = activation_values(shape) * shape.layers * b
    acts = micro.positions * per_pos
    from tuneforge.train.loss import CHUNK  # supervised positions per output-layer chunk

    rows = micro.positions if row.generic_loss else min(micro.supervised, CHUNK)
    logits = 2 * rows * shape.vocab * 4
    base = 0 if gpu else CPU_BASELINE
    parts = {"weights": int(weights), "gradients_and_optimizer": int(states), "activations": int(acts),
             "output_layer": int(logits), "process": base}
    if shards > 1:
        parts["gathered_weights"] = int(gathered)
    parts["total"] = sum(parts.values())
    return parts


# --- the micro-benchmark ---------------------------------------------------------------------------------------
@dataclass
class Benchmark:
    """Measured on this machine with the real recipe: FLOP rate of forward+backward, and the per-step rest."""

    device: str
    warmup: int
    steps: int
    seconds_per_flop: float  # median over measured steps of forward+backward seconds / FLOPs
    fixed_seconds: float  # median per-step seconds outside forward+backward (batching, clipping, AdamW)
    step_seconds: list[float]
    peak_bytes: int | None  # CPU: RSS high-water mark during the steps; CUDA: torch max allocated

    @property
    def flops_per_second(self) -> float:
        return 1 / self.seconds_per_flop


def _reset_peak(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset this process's VmHWM
        return True
    except OSError:
        return False


def _peak(device: str) -> int | None:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return None


def micro_benchmark(p, plan: Plan, *, steps: int = 4, warmup: int = 1, progress: bool = False) -> Benchmark:
    """Run `warmup` + `steps` real optimizer steps of the run's first micro-batches, timed like the loop times
    them (per step: batching, forward+backward, clipping, AdamW), under the loop's allocator and per-example
    attention settings. Changes the weights of `p.model`: benchmark a model you will throw away."""
    import torch
    from tqdm.auto import tqdm

    from tuneforge.memory import large_buffers_returned
    from tuneforge.models.load import default_device
    from tuneforge.train.distributed import Ranks
    from tuneforge.train.packing import packed_attention
    from tuneforge.train.recipe import backward, make_optimizer, make_scheduler, micro_batch, update

    if steps < 1 or warmup < 0:
        raise ConfigError(f"--bench-steps {steps}: need at least 1 measured step")
    cfg, model = p.cfg, p.model
    device = default_device()
    ranks = Ranks.single()
    module, opt = ranks.wrap(model, make_optimizer(model, cfg), p.objective)
    sched = make_scheduler(opt, cfg, max(plan.steps, warmup + steps))
    accum = cfg.gradient_accumulation_steps
    model.train()
    per_flop, fixed, totals = [], [], []
    bar = tqdm(total=warmup + steps, desc="micro-benchmark", disable=not progress, file=sys.stderr)
    with large_buffers_returned(device == "cpu"), packed_attention(model, cfg.packing):
        peak_ok = False
        for step in range(warmup + steps):
            if step == warmup:
                peak_ok = _reset_peak(device)
            t0 = time.perf_counter()
            batches = [micro_batch(p, step * accum + j) for j in range(accum)]
            t1 = time.perf_counter()
            backward(module, p.objective, batches, ranks)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            update(module, opt, sched, ranks, cfg.max_grad_norm)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t3 = time.perf_counter()
            bar.update(1)
            if step < warmup:
                continue
            counts = [tensor_counts(b, virtual=plan.virtual) for b in batches]
            flops = sum(step_flops(plan.shape, cfg.method, plan.trainable, c.positions, c.supervised, c.attn)
                        for c in counts)
            per_flop.append((t2 - t1) / flops)
            fixed.append((t1 - t0) + (t3 - t2))
            totals.append(t3 - t0)
    bar.close()
    return Benchmark(device, warmup, steps, statistics.median(per_flop), statistics.median(fixed), totals,
                     _peak(device) if peak_ok else None)


# --- the estimate ----------------------------------------------------------------------------------------------
def _money(seconds: float, row: dict) -> dict:
    h = seconds / 3600
    return {"on_demand": round(h * row["on_demand_per_hour"], 4), "spot": round(h * row["spot_per_hour"], 4),
            "on_demand_per_hour": row["on_demand_per_hour"], "spot_per_hour": row["spot_per_hour"]}


def estimate(cfg: TrainConfig, *, hardware: str = "cpu", prices: dict | None = None, bench_steps: int = 4,
             bench_warmup: int = 1, progress: bool = False, nproc: int = 1) -> dict:
    """The estimate as a dict (`tuneforge cost --json`). `cpu` measures here (loads the base, runs the
    micro-benchmark); a GPU row of the price table uses its published peak and needs only the tokenizer/config.
    `nproc` processes with `cfg.fsdp`: memory per process under sharding (`peak_memory`), and on a GPU row the
    fewest processes (GPUs) whose share fits; steps, time and money stay those of one process."""
    prices = prices or load_prices()
    name, row = hardware_row(prices, hardware)
    key = plan_key(cfg)
    cfg = cfg.model_copy()
    local = name == "cpu"
    from tuneforge.train.recipe import prepare

    if not cfg.data:
        raise ConfigError("config: 'data' is required (tuneforge cost DATA)")
    # local: loads the base, encodes the data, builds the method, as training does; else the tokenizer only
    p = prepare(cfg, weights=local)
    why = (f"method auto → {p.cfg.method}" if local else p.auto["method"]) if cfg.method == "auto" else None
    shape = model_shape(p.cfg.base)
    if not local:  # prepare() resolved "auto" settings from the loaded model; here from its shape
        from tuneforge.train import auto

        auto.resolve(p.cfg, n_train=len(p.train), n_params=shape.params)
    plan = plan_from(p, shape, why)
    m = plan.cfg.method
    flops, eval_flops = plan.flops(), plan.eval_flops()
    def memory_for(world: int) -> dict:
        return {k: peak_memory(shape, k, trainable_params(shape, plan.cfg, k), plan.peak_micro, gpu=not local,
                               world=world, fsdp=cfg.fsdp) for k in methods.METHODS}

    memory = memory_for(nproc)
    out: dict = {"data": plan.cfg.data, "base": plan.cfg.base, "method": m, "hardware": name,
                 "description": row.get("description", name), "plan_key": key,
                 "examples": {"train": plan.n_train, "val": plan.n_val},
                 "epochs": plan.cfg.num_train_epochs if plan.cfg.max_steps <= 0 else None,
                 "steps": plan.steps, "steps_per_epoch": plan.steps_per_epoch, "evaluations": plan.n_evals,
                 "tokens": {"train_tokens": sum(c.tokens for c in plan.step_counts),
                            "computed_positions": sum(c.positions for c in plan.step_counts),
                            "supervised": sum(c.supervised for c in plan.step_counts)},
                 "parameters": {"total": shape.params, "trainable": plan.trainable},
                 "flops": {"train": flops, "eval": eval_flops,
                           "formula": "full: 3F; lora/qlora: 2F + A + 6·N_a·P; F = 2·N_body·P + 2·V·d·S + A, "
                                      "A = 2·L·d·Σn²"},
                 "memory_bytes": {k: v["total"] for k, v in memory.items()}, "memory_parts": memory[m],
                 "processes": nproc, "fsdp": cfg.fsdp,
                 "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if local:
        bench = micro_benchmark(p, plan, steps=bench_steps, warmup=bench_warmup, progress=progress)
        train_s = sum(bench.fixed_seconds + step_flops(shape, m, plan.trainable, c.positions, c.supervised, c.attn)
                      * bench.seconds_per_flop for c in plan.step_counts)
        eval_s = eval_flops * bench.seconds_per_flop
        out["time_source"] = (f"measured: {bench.steps} optimizer steps (after {bench.warmup} warm-up) of this run "
                              f"on this machine ({bench.device}): {bench.flops_per_second / 1e9:.1f} GFLOP/s in "
                              f"forward+backward, {bench.fixed_seconds:.3f} s per step besides")
        out["benchmark"] = {**asdict(bench), "flops_per_second": bench.flops_per_second}
        out["measured_peak_bytes"] = bench.peak_bytes
        del p
    else:
        mfu = float(prices.get("assumed_mfu", 0.35))
        rate = row["peak_tflops"] * 1e12 * mfu
        floor = float(prices.get("assumed_launch_seconds_per_layer", 0.001)) * shape.layers  # per micro-batch
        accum = plan.cfg.gradient_accumulation_steps
        opt_s = plan.trainable * 16 * 2 / (row["memory_bandwidth_gbs"] * 1e9)  # AdamW reads+writes its state
        train_s = sum(max(step_flops(shape, m, plan.trainable, c.positions, c.supervised, c.attn) / rate,
                          accum * floor) + opt_s for c in plan.step_counts)
        eval_s = plan.n_evals * sum(max(step_flops(shape, m, plan.trainable, c.positions, c.supervised, c.attn,
                                                   forward_only=True) / rate, floor / 3) for c in plan.val_counts)
        out["time_source"] = (f"published: {name} datasheet peak {row['peak_tflops']} TFLOPS × assumed utilisation "
                              f"{mfu:.0%}, at least {floor * 1000:.0f} ms of kernel launches per micro-batch "
                              f"(prices.yaml, as of {prices.get('as_of')}); not measured")
        fits = memory[m]["total"] <= row["memory_gb"] * 1e9
        out["fits_memory"] = fits
        if cfg.fsdp:  # "how many GPUs of this size": the fewest processes (powers of two) whose share fits
            out["processes_needed"] = next((n for n in (2 ** i for i in range(11))
                                            if memory_for(n)[m]["total"] <= row["memory_gb"] * 1e9), None)
    out["train_seconds"] = round(train_s, 2)
    out["eval_seconds"] = round(eval_s, 2)
    out["money"] = {"currency": prices.get("currency", "USD"), "prices_as_of": prices.get("as_of"),
                    "prices": prices["path"], **_money(train_s + eval_s, row)}
    if why:
        out["method_reason"] = why
    return out


# --- text ------------------------------------------------------------------------------------------------------
def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def human_seconds(s: float) -> str:
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def render(est: dict, spot: bool = False) -> str:
    t, pm = est["tokens"], est["parameters"]
    lines = [f"{est['data']} on {est['base']}, {est['method']}" + (f" ({est['method_reason']})"
                                                                   if est.get("method_reason") else ""),
             f"  examples: {est['examples']['train']} train / {est['examples']['val']} val; "
             f"{est['steps']} optimizer steps ({est['steps_per_epoch']}/epoch), {est['evaluations']} evaluations",
             f"  tokens: {t['train_tokens']:,} trained ({t['supervised']:,} supervised, {t['computed_positions']:,} "
             f"positions computed)",
             f"  parameters: {pm['total']:,} ({pm['trainable']:,} trainable, "
             f"{100 * pm['trainable'] / pm['total']:.2f}%)",
             f"  FLOPs: {est['flops']['train']:.3g} training + {est['flops']['eval']:.3g} validation "
             f"({est['flops']['formula']})",
             f"time on {est['hardware']} ({est['description']}):",
             f"  training loop: {human_seconds(est['train_seconds'])} (train_seconds {est['train_seconds']}); "
             f"validation: {human_seconds(est['eval_seconds'])}",
             f"  source: {est['time_source']}",
             "peak memory by method (formula" + ("; bf16 GPU" if est["hardware"] != "cpu" else "; fp32 CPU process")
             + (f"; per process of {est['processes']}" + (f", fsdp {est['fsdp']}" if est.get("fsdp") else ", DDP")
                if est.get("processes", 1) > 1 else "") + "):"]
    mem = est["memory_bytes"]
    lines.append("  " + " | ".join(f"{k} {human_bytes(v)}" + (" ←" if k == est["method"] else "")
                                   for k, v in mem.items()))
    if est.get("measured_peak_bytes"):
        lines.append(f"  measured in the micro-benchmark ({est['method']}): {human_bytes(est['measured_peak_bytes'])}")
    if est.get("fits_memory") is False:
        lines.append(f"  warning: {est['method']} needs more than the {est['hardware']}'s memory")
    if est.get("fsdp") and "processes_needed" in est:
        n = est["processes_needed"]
        lines.append(f"  fsdp {est['fsdp']}: {n} x {est['hardware']} hold it" if n else
                     f"  fsdp {est['fsdp']}: more than 1024 x {est['hardware']} would be needed")
    mo = est["money"]
    first, second = ("spot", "on_demand") if spot else ("on_demand", "spot")
    lines.append(f"money ({mo['currency']}, prices as of {mo['prices_as_of']}, editable: {mo['prices']}):")
    lines.append(f"  {first.replace('_', '-')} {mo[first]:.4f} at {mo[first + '_per_hour']}/h; "
                 f"{second.replace('_', '-')} {mo[second]:.4f} at {mo[second + '_per_hour']}/h")
    return "\n".join(lines)
