"""`tuneforge runs list | show | diff`: the runs registry."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneforge.cli import app

runs_app = typer.Typer(no_args_is_help=True, help="Runs registry: list, show, diff.")
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(root: Path = typer.Argument(Path("runs"), help="Folder holding run directories.")):
    """Every run: id, base, method, data hashes, git commit, best val loss, eval metrics."""
    from tuneforge.registry import format_table, list_runs

    typer.echo(format_table(list_runs(root)))


@runs_app.command("show")
def runs_show(run: Path = typer.Argument(..., help="Run directory.")):
    """One run in full: config, data hashes, metrics summary, artifacts."""
    from tuneforge.registry import show_run

    typer.echo(json.dumps(show_run(run), indent=1, default=str))


@runs_app.command("diff")
def runs_diff(a: Path = typer.Argument(...), b: Path = typer.Argument(...)):
    """Hyperparameters and metrics that differ between two runs."""
    from tuneforge.registry import diff_runs, format_diff

    typer.echo(format_diff(diff_runs(a, b)))
