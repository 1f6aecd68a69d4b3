"""`tuneforge grader validate|run`: try a grader (OpenAI's JSON shapes, `tuneforge.graders`) before training with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app

grader_app = typer.Typer(no_args_is_help=True, help="Try a grader (OpenAI's JSON shapes) before training with it.")
app.add_typer(grader_app, name="grader")


def grader_judge(model: str, sampling: dict):
    """A score_model's judge: a local run or model directory through eval.harness, else `model` on an
    OpenAI-compatible server ($TUNEFORGE_JUDGE_BASE_URL / $OPENAI_BASE_URL / api.openai.com)."""
    from tuneforge.graders.core import openai_judge

    if Path(model).exists():
        from tuneforge.eval.harness import local_chat

        chat, _ = local_chat(model, temperature=float(sampling.get("temperature") or 0.0),
                             max_new_tokens=int(sampling.get("max_completions_tokens") or 128),
                             seed=int(sampling.get("seed") or 0))
        return chat
    return openai_judge(model, sampling)


@grader_app.command("validate")
def grader_validate(grader: Path = typer.Argument(..., help="Grader JSON file.")):
    """Check a grader file: prints OK or one error naming the field."""
    from tuneforge.graders import load

    spec = load(grader)
    typer.echo(f"{grader}: OK ({spec['type']} grader '{spec['name']}')")


@grader_app.command("run")
def grader_run(grader: Path = typer.Argument(..., help="Grader JSON file."),
               data: Path = typer.Option(..., "--data", help="Rows (JSONL): the `item` of each grade."),
               samples: Path = typer.Option(..., "--samples", help="Answers (JSONL), one per row: a JSON string "
                                            "or {\"output_text\": ...}."),
               judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible server for "
                                                       "score_model graders (default $OPENAI_BASE_URL)."),
               timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per sample for python "
                                                       "graders (default 10)."),
               as_json: bool = typer.Option(False, "--json", help="One JSON object per row, then a summary.")):
    """Score each answer against its row and print the scores, the mean and the errors (0 and counted)."""
    from tuneforge.graders import build, load, summarize
    from tuneforge.graders.files import grade_files

    if judge_url:
        import os

        os.environ["TUNEFORGE_JUDGE_BASE_URL"] = judge_url
    with build(load(grader), judge=grader_judge, python_timeout=timeout) as g:
        results, where = grade_files(g, data, samples)
    for w, r in zip(where, results):
        if as_json:
            typer.echo(json.dumps({"row": w, "score": r.score, "sub_rewards": r.sub_rewards,
                                   "errors": sorted(r.errors), "details": r.details}))
        else:
            extra = "".join(f" {k}={v:.4g}" for k, v in r.sub_rewards.items())
            err = f"  [{', '.join(sorted(r.errors))}: {r.details}]" if r.errors else ""
            typer.echo(f"{w}: {r.score:.4g}{extra}{err}")
    summary = summarize(results)
    if as_json:
        typer.echo(json.dumps({"summary": summary}))
    else:
        errs = ", ".join(f"{k} {v}" for k, v in summary["errors"].items()) or "none"
        typer.echo(f"mean {summary['mean']:.4f} over {summary['n']} answers; errors: {errs}")
