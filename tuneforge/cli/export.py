"""`tuneforge export merge | quantize | onnx | gguf | verify`: formats others load, each verified."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app

export_app = typer.Typer(no_args_is_help=True, help="Export a run (merged, int8/int4, ONNX, GGUF), each verified "
                         "against the model as trained.")
app.add_typer(export_app, name="export")


_VERIFY_HELP = "Check the export against the model as trained (golden prompts; see `export verify --help`)."
_DATA_HELP = "Golden examples for verify (default: the run's validation data)."


@export_app.command("merge")
def export_merge(run: Path = typer.Argument(..., help="Run directory."),
                 output: Optional[Path] = typer.Option(None, "--output", help="Default: RUN/model."),
                 check: Optional[bool] = typer.Option(None, "--check/--no-check",
                                                      help="Compare val loss as trained vs merged (default: on "
                                                           "for QLoRA, whose base was 4-bit)."),
                 verify: bool = typer.Option(True, "--verify/--no-verify", help=_VERIFY_HELP)):
    """Merge the LoRA adapter into the base: a plain transformers model (loads with pipeline())."""
    from tuneforge.export.merge import merge

    out = merge(run, output, check=check)
    if verify and (out / "manifest.json").is_file():
        _verify_and_report(run, out)
    typer.echo(str(out))


def _verify_and_report(run: Path, export: Path, data: Optional[Path] = None, result: Optional[dict] = None):
    """Print the verify table; exit 1 when a check failed."""
    from tuneforge.export.verify import format_table, verify

    result = result or verify(run, export, data=data)
    typer.echo(format_table(result))
    if not result["passed"]:
        raise typer.Exit(1)


def _export(run: Path, fmt: str, output: Optional[Path], verify: bool, data: Optional[Path]) -> None:
    from tuneforge.export.pipeline import export_run

    done = export_run(run, fmt, output, verify=verify, data=data)
    if done.verify is not None:
        _verify_and_report(run, done.path, result=done.verify)
    typer.echo(str(done.path))


@export_app.command("quantize")
def export_quantize(run: Path = typer.Argument(..., help="Run directory."),
                    bits: int = typer.Option(8, "--bits", help="8: int8 per channel (size ~0.4x of fp32 for "
                                             "SmolLM2; quality ~unchanged). 4: int4 in groups of 32 (stored "
                                             "one value per byte on CPU; larger quality loss)."),
                    output: Optional[Path] = typer.Option(None, "--output", help="Default: RUN/exports/int8|int4."),
                    verify: bool = typer.Option(True, "--verify/--no-verify", help=_VERIFY_HELP),
                    data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP)):
    """Weight-only int8/int4 (torchao): a transformers directory that from_pretrained, generate, eval and
    serve load as it is."""
    if bits not in (4, 8):
        from tuneforge.errors import ConfigError

        raise ConfigError(f"--bits {bits}: choose 8 or 4")
    _export(run, f"int{bits}", output, verify, data)


@export_app.command("onnx")
def export_onnx(run: Path = typer.Argument(..., help="Run directory."),
                output: Optional[Path] = typer.Option(None, "--output", help="Default: RUN/exports/onnx."),
                verify: bool = typer.Option(True, "--verify/--no-verify", help=_VERIFY_HELP),
                data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP)):
    """ONNX decoder with a KV cache (past_key_values in, present out) plus tokenizer: runs in onnxruntime;
    `tuneforge generate/eval RUN/exports/onnx` use it."""
    _export(run, "onnx", output, verify, data)


@export_app.command("gguf")
def export_gguf(run: Path = typer.Argument(..., help="Run directory."),
                type_: str = typer.Option("f16", "--type", help="f16 (half the fp32 size, same answers) or "
                                          "q8_0 (about a quarter, 8-bit blocks of 32)."),
                output: Optional[Path] = typer.Option(None, "--output", help="Default: RUN/exports/gguf-TYPE."),
                verify: bool = typer.Option(True, "--verify/--no-verify", help=_VERIFY_HELP),
                data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP)):
    """GGUF file (Llama architecture) with tokenizer and chat template for llama.cpp, ollama, LM Studio."""
    from tuneforge.export.gguf import TYPES

    if type_ not in TYPES:
        from tuneforge.errors import ConfigError

        raise ConfigError(f"--type {type_}: choose {' or '.join(TYPES)}")
    _export(run, f"gguf-{type_}", output, verify, data)


@export_app.command("verify")
def export_verify(run: Path = typer.Argument(..., help="Run directory (the model as trained)."),
                  export: Path = typer.Argument(..., help="Export directory (RUN/model, RUN/exports/FORMAT) or "
                                                "a .gguf file."),
                  data: Optional[Path] = typer.Option(None, "--data", help=_DATA_HELP),
                  max_new_tokens: int = typer.Option(32, help="Greedy answer length per golden prompt.")):
    """Golden prompts through the run as trained and through the export: tokenizer, greedy answers, logits and
    held-out loss, each against a stated bound. Prints a table; exit 1 on a failed check. The bounds and
    why: `python -c "import tuneforge.export.verify as v; help(v)"` or README "Export"."""
    from tuneforge.export.verify import verify

    _verify_and_report(run, export, result=verify(run, export, data=data, max_new_tokens=max_new_tokens))
