"""`tuneforge advise | cost`: before training — should you fine-tune, and what will it cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app


@app.command()
def advise(data: Path = typer.Argument(..., help="Examples file (.jsonl/.json/.csv/.parquet)."),
           base: Optional[str] = typer.Option(None, "--base", help="Base model (default smollm2-135m-instruct)."),
           task: Optional[str] = typer.Option(None, "--task", help="Short task description; also the system "
                                              "prompt of the zero-shot measurement."),
           sample: int = typer.Option(20, "--zero-shot-examples", "--sample", help="Examples the base answers "
                                      "zero-shot (0: skip, fast; --sample: old spelling)."),
           seed: int = typer.Option(0, "--seed", help="Which examples are sampled."),
           as_json: bool = typer.Option(False, "--json", help="Print {verdict, method, hyperparameters, reasons}."),
           write_config: Optional[Path] = typer.Option(None, "--write-config", help="Write the recommendation as a "
                                                       "training config (YAML, a reason per value).")):
    """Should you fine-tune on this data? go / no-go / maybe with the evidence (size, format, balance, diversity,
    lengths, a measured zero-shot score of the base, copied or retrievable answers), a method and starting
    hyperparameters, each with a one-line reason."""
    from tuneforge.advise.advisor import advise as run_advise
    from tuneforge.advise.advisor import write_config as write_cfg
    from tuneforge.config import DEFAULT_BASE

    advice = run_advise(data, base=base or DEFAULT_BASE, task=task, sample=sample, seed=seed, progress=not as_json)
    typer.echo(json.dumps(advice.to_dict(), indent=1) if as_json else advice.render())
    if write_config:
        path = write_cfg(advice, write_config)
        typer.echo(f"wrote {path} (train: tuneforge train --config {path} --output runs/NAME)", err=as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cost(ctx: typer.Context,
         data: Optional[str] = typer.Argument(None, help="Training examples (not needed with --serve)."),
         config: Optional[Path] = typer.Option(None, "--config", "-c", help="The training config to cost; flags "
                                               "and --key value overrides as for `train`."),
         base: Optional[str] = typer.Option(None, "--base", help="Base model, or with --serve a run/model."),
         method: Optional[str] = typer.Option(None, "--method", help="lora (default), qlora, full, prompt-tuning "
                                              "or auto."),
         epochs: Optional[float] = typer.Option(None, "--num-train-epochs", "--epochs", help="Epochs over the "
                                                "data (config key num_train_epochs; --epochs: old spelling)."),
         hardware: str = typer.Option("cpu", "--hardware", help="cpu (this machine: measured) or a GPU of the "
                                      "price table (T4, L4, A10, A100, H100: published peak)."),
         spot: bool = typer.Option(False, "--spot", help="Headline the spot price (both are always computed)."),
         as_json: bool = typer.Option(False, "--json", help="All figures as JSON (train_seconds as in run.json)."),
         bench_steps: int = typer.Option(4, "--bench-steps", help="cpu: optimizer steps measured (after 1 "
                                         "warm-up)."),
         prices: Optional[Path] = typer.Option(None, "--prices", help="Your own price table (default: the "
                                               "dated one shipped in tuneforge/advise/prices.yaml)."),
         serve: bool = typer.Option(False, "--serve", help="Inference cost per 1M generated tokens instead, with "
                                    "and without quantization and batching."),
         measured: Optional[Path] = typer.Option(None, "--measured", help="--serve: serving bench figures (JSON) "
                                                 "to use where they match."),
         progress: bool = typer.Option(True, "--progress/--no-progress"),
         nproc: int = typer.Option(1, "--nproc", help="Processes (GPUs) the run would use: with --fsdp, memory "
                                   "per process under sharding, and on a GPU how many of them hold the model.")):
    """Estimate a fine-tune before running it: tokens, steps, FLOPs, peak memory per method, time (measured here,
    or published GPU throughput) and money (on-demand and spot). `tuneforge train` of the same plan records the
    estimate in the run, and `tuneforge runs show` prints it beside the actual figures."""
    from tuneforge.advise.cost import load_prices

    table = load_prices(prices)
    if serve:
        from tuneforge.advise.serving import render_serving, serving_cost
        from tuneforge.config import DEFAULT_BASE

        res = serving_cost(base or DEFAULT_BASE, hardware=hardware, prices=table, measured=measured)
        typer.echo(json.dumps(res, indent=1) if as_json else render_serving(res, spot=spot))
        return
    from tuneforge.advise.cost import estimate, render
    from tuneforge.finish import remember
    from tuneforge.config import parse_overrides
    from tuneforge.errors import ConfigError
    from tuneforge.train.recipe import config_for

    if data is None and config is None:
        raise ConfigError("tuneforge cost: give the training data (DATA or --config), or --serve")

    named = {"data": data, "base": base, "method": method, "num_train_epochs": epochs}
    overrides = {**{k: v for k, v in named.items() if v is not None}, **parse_overrides(ctx.args)}
    cfg = config_for(config, overrides)
    est = estimate(cfg, hardware=hardware, prices=table, bench_steps=bench_steps, progress=progress and not as_json,
                   nproc=nproc)
    remember(est)
    typer.echo(json.dumps(est, indent=1) if as_json else render(est, spot=spot))
