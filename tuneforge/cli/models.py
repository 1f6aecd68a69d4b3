"""`tuneforge models prepare`: base models."""

from __future__ import annotations


import typer

from tuneforge.cli import app

models_app = typer.Typer(no_args_is_help=True, help="Base models.")
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare(base: str = typer.Argument("smollm2-135m-instruct", help="Alias, .gguf or model dir.")):
    """Fetch and convert a base model into the cache now, so training starts fast."""
    from tuneforge.models.load import resolve

    typer.echo(str(resolve(base)))
