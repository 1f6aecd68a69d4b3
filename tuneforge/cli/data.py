"""`tuneforge data check | split | augment`: example files before training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app

data_app = typer.Typer(no_args_is_help=True, help="Check, split and augment example files.")
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(file: Path = typer.Argument(..., help="Examples file (.jsonl/.json/.csv/.parquet)."),
               base: Optional[str] = typer.Option(None, help="Tokenizer for length stats (default: the default base)."),
               max_seq_len: int = typer.Option(1024, help="Examples longer than this are truncated in training."),
               as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
               no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token statistics (no model needed).")):
    """Pre-flight report: format, errors with file:line, token lengths, truncation, duplicates, balance."""
    from tuneforge.config import DEFAULT_BASE
    from tuneforge.data.validate import check_file
    from tuneforge.models.load import load_tokenizer

    tok = None if no_tokens else load_tokenizer(base or DEFAULT_BASE)
    report = check_file(file, tokenizer=tok, max_seq_len=max_seq_len)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
    else:
        typer.echo(report.render())
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("split")
def data_split(file: Path = typer.Argument(..., help="Examples file to split."),
               test: float = typer.Option(0.2, help="Fraction of the whole file for test."),
               val: float = typer.Option(0.1, help="Fraction of the whole file for validation."),
               seed: int = typer.Option(42, help="Same seed, same split."),
               output: Optional[Path] = typer.Option(None, "--output", help="Output folder (default: next to "
                                                     "FILE).")):
    """Write train/val/test files: seeded, stratified by label, no example in two splits."""
    from tuneforge.data.split import split_file

    written = split_file(file, output or file.parent, test=test, val=val, seed=seed)
    for name, (path, n) in written.items():
        typer.echo(f"{name}: {n} examples -> {path}" if path else
                   f"{name}: {n} generated example(s) whose source is held out (kept out of every split)")


@data_app.command("augment")
def data_augment(data: Path = typer.Argument(..., help="Examples file to augment."),
                 method: str = typer.Option(..., "--method", help="noise | paraphrase | back-translate | "
                                            "synthesize."),
                 output: Path = typer.Option(..., "--output", help="New file (.jsonl/.json): the source rows, then "
                                             "the new ones tagged metadata.augmented."),
                 n: Optional[int] = typer.Option(None, "--n", help="New rows to make (default: one per example)."),
                 with_: Optional[str] = typer.Option(None, "--with", help="The LLM: an OpenAI-compatible base URL "
                                                     "(http://127.0.0.1:8000/v1), or a run/model/alias run "
                                                     "locally (default: the default base)."),
                 model: Optional[str] = typer.Option(None, "--model", help="Model name at the URL (default: the "
                                                     "first the server lists)."),
                 seed: int = typer.Option(0, "--seed", help="Same seed, same rows (noise: always; LLM: sampling)."),
                 noise_rate: float = typer.Option(0.1, "--noise-rate", help="Noise: share of words changed."),
                 noise_answers: bool = typer.Option(False, "--noise-answers", help="Noise: answers too (default: "
                                                    "prompts only; answers are what the model learns)."),
                 pivot: str = typer.Option("French", "--pivot", help="Back-translation: the language in between."),
                 language: str = typer.Option("English", "--language", help="Back-translation: the data's "
                                              "language."),
                 few_shot: int = typer.Option(3, "--few-shot", help="Synthesize: examples shown per new row."),
                 temperature: float = typer.Option(0.7, "--temperature", help="LLM sampling temperature."),
                 top_p: float = typer.Option(0.95, "--top-p", help="LLM nucleus sampling mass."),
                 max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Upper bound per LLM reply."),
                 progress: bool = typer.Option(True, "--progress/--no-progress")):
    """Make new training rows: noise (typos, casing, spacing; seeded), or paraphrase / back-translate / synthesize
    with an LLM. New rows pass the data checks, are de-duplicated against the source and each other, and never
    enter a held-out split (`data split`)."""
    from tuneforge.data.augment import LLM_METHODS, METHODS, augment_file, openai_chat

    if method not in METHODS:
        raise typer.BadParameter(f"{method!r}: use one of {', '.join(METHODS)}", param_hint="--method")
    chat, by = None, None
    if method in LLM_METHODS:
        if with_ and with_.startswith(("http://", "https://")):
            chat, by = openai_chat(with_, model=model, temperature=temperature, top_p=top_p,
                                   max_tokens=max_new_tokens, seed=seed)
            by = f"{with_} ({by})"
        else:
            from tuneforge.config import DEFAULT_BASE
            from tuneforge.eval.harness import local_chat

            chat, by = local_chat(with_ or DEFAULT_BASE, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed)
    path, res = augment_file(data, method, output, n=n, chat=chat, by=by or "", seed=seed, noise_rate=noise_rate,
                             noise_answers=noise_answers, pivot=pivot, language=language, shots=few_shot,
                             progress=progress)
    typer.echo(res.summary())
    for reason, text in res.samples_rejected[:3]:
        typer.echo(f"  rejected ({reason}): {text[:120]}")
    typer.echo(f"wrote {path}")
