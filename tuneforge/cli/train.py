"""`tuneforge train`: parse the flags into a config, run the recipe, finish the run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context,
          data: Optional[str] = typer.Option(None, "--data", help="Training examples (.jsonl/.json/.csv/.parquet)."),
          output: Optional[str] = typer.Option(None, "--output", help="Run directory to create (or to resume)."),
          base: Optional[str] = typer.Option(None, "--base", help="Base model: alias (default "
                                             "smollm2-135m-instruct), local transformers dir, hub id or .gguf."),
          method: Optional[str] = typer.Option(None, "--method", help="lora (default), qlora, full, "
                                               "prompt-tuning or auto."),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; flags override it."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last "
                                      "checkpoint (a finished run is left as it is)."),
          progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
          help_config: bool = typer.Option(False, "--help-config", help="List every config key and exit."),
          cv: int = typer.Option(0, "--cv", help="K-fold cross-validation: K runs, mean ± std of val loss."),
          nproc: int = typer.Option(1, "--nproc", help="Train with N local processes (torchrun; gloo on CPU, "
                                    "nccl on GPU). Same run, same run directory; see README for multi-node."),
          from_run: Optional[str] = typer.Option(None, "--from-run", "--from", help="Continue from this finished "
                                                 "run's adapter (or full weights); base, method and adapter shape "
                                                 "come from it. `runs show` names it as the parent (config key "
                                                 "from_run; --from: old spelling).")):
    """Fine-tune a base model; writes a run directory. Any config key is also a flag, spelled as in
    TrainingArguments (--learning_rate 2e-4 --lora_r 16) or with dashes (--learning-rate, --from-run): both
    spellings name the same key. `tuneforge train --help-config` lists them all."""
    import os

    from tuneforge.config import config_help, parse_overrides
    from tuneforge.train.recipe import config_for
    from tuneforge.train.recipe import train as run_train

    if help_config:
        typer.echo(config_help())
        return
    if nproc > 1:
        from tuneforge.train.distributed import relaunch

        raise typer.Exit(relaunch(nproc, sys.argv[1:]))
    named = {"data": data, "output": output, "base": base, "method": method, "from_run": from_run}
    overrides = {**{k: v for k, v in named.items() if v is not None}, **parse_overrides(ctx.args)}
    cfg = config_for(config, overrides, resume=resume)
    if cv:
        from tuneforge.train.cv import cross_validate

        from tuneforge.finish import finish_run

        res = cross_validate(cfg, cv, progress=progress, finish=finish_run)
        folds = ", ".join(f"{r['best_val_loss']:.4f}" for r in res["folds"])
        typer.echo(f"{cv}-fold cross-validation: val loss {res['val_loss_mean']:.4f} ± {res['val_loss_std']:.4f} "
                   f"(folds: {folds})")
        return
    from tuneforge.finish import finish_run
    from tuneforge.run import run_status

    already = resume and run_status(cfg.output) == "finished"
    out = run_train(cfg, resume=resume, progress=progress)
    if already or int(os.environ.get("RANK", "0")) != 0:  # one process finishes the run: rank 0
        return
    finish_run(out)  # report.html, model card, estimate.json (when `tuneforge cost` estimated this plan)
    typer.echo(f"run: {out}\nnext: tuneforge eval {out} --data TEST.jsonl --baseline base   |   "
               f"tuneforge export merge {out}   |   tuneforge report {out}")
