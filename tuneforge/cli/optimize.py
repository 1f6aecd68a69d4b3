"""`tuneforge optimize prune | distill`: smaller, faster models from a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app

optimize_app = typer.Typer(no_args_is_help=True, help="Smaller, faster models from a run: pruning, "
                            "distillation.")
app.add_typer(optimize_app, name="optimize")


@optimize_app.command("prune")
def optimize_prune(run: Path = typer.Argument(..., help="Run directory."),
                   sparsity: Optional[float] = typer.Option(None, "--sparsity", help="Unstructured: zero this "
                                                            "fraction of each linear layer's smallest weights."),
                   drop_layers: Optional[int] = typer.Option(None, "--drop-layers", help="Depth: remove the K "
                                                             "decoder layers that change the hidden state least."),
                   output: Optional[Path] = typer.Option(None, "--output", help="New run directory (default: "
                                                         "RUN-pruned-...)."),
                   data: Optional[Path] = typer.Option(None, "--data", help="Held-out examples for the report "
                                                       "(default: the run's validation data).")):
    """Prune a run's merged model into a new run directory; reports size, speed and held-out loss vs the run."""
    from tuneforge.optimize.prune import format_report, prune

    out, report = prune(run, sparsity=sparsity, drop_layers=drop_layers, output=output, data=data)
    typer.echo(format_report(report))
    typer.echo(str(out))


@optimize_app.command("distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def optimize_distill(ctx: typer.Context,
                     teacher: Path = typer.Option(..., "--teacher", help="The trained run to learn from."),
                     student: str = typer.Option(..., "--student", help="A base (alias, model dir, hub id, "
                                                 "run dir) or `drop-layers:K` (the teacher with K layers "
                                                 "removed)."),
                     data: Path = typer.Option(..., "--data", help="Task examples; the teacher answers their "
                                               "prompts."),
                     output: Path = typer.Option(..., "--output", help="Run directory to create."),
                     progress: bool = typer.Option(True, "--progress/--no-progress")):
    """Train a smaller student on the teacher's answers (sequence-level distillation); an ordinary run
    directory. Extra `--key value` flags are training config (see `tuneforge train --help-config`)."""
    from tuneforge.config import parse_overrides
    from tuneforge.optimize.distill import distill
    from tuneforge.optimize.prune import format_report

    out, report = distill(teacher, student, data, output, overrides=parse_overrides(ctx.args), progress=progress)
    typer.echo(format_report(report))
    typer.echo(str(out))
