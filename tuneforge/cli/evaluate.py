"""`tuneforge generate | eval | report | human-eval`: use and score a model or run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import app

human_app = typer.Typer(no_args_is_help=True, help="Blind human A/B evaluation of an eval.json.")
app.add_typer(human_app, name="human-eval")


@app.command()
def generate(target: str = typer.Argument(..., help="Run dir, model dir, alias or hub id."),
             prompt: str = typer.Argument(..., help="The user message."),
             system: Optional[str] = typer.Option(None, help="Optional system message."),
             max_new_tokens: Optional[int] = typer.Option(None, help="Upper bound on answer length (default: "
                                                          "for a run, twice its longest training answer, as "
                                                          "in the merged model's generation_config.json; "
                                                          "else 256)."),
             temperature: float = typer.Option(0.0, help="0 = greedy (deterministic)."),
             top_p: float = typer.Option(1.0, help="Nucleus sampling mass when temperature > 0."),
             free: bool = typer.Option(False, "--free", help="Classification runs: generate free text instead "
                                       "of answering with the most likely label.")):
    """Answer one prompt with the tuned model, using the chat template saved with it.

    A run trained on classification data answers with one of its labels (each label's likelihood is scored;
    the per-label probabilities go to stderr); --free generates text instead."""
    from tuneforge.eval.harness import answer, load_for_inference
    from tuneforge.run import default_answer_length

    loaded = load_for_inference(target)
    if max_new_tokens is None:
        max_new_tokens = default_answer_length(target)
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    outs, _, probs = answer(loaded, [msgs], free=free, batch_size=1, max_new_tokens=max_new_tokens,
                            do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p)
    if probs:
        ranked = sorted(probs[0].items(), key=lambda kv: -kv[1])
        typer.echo("label probabilities: " + ", ".join(f"{k} {v:.3f}" for k, v in ranked), err=True)
    typer.echo(outs[0])


@app.command("eval")
def eval_cmd(target: str = typer.Argument(..., help="Run dir or model to evaluate."),
             data: Path = typer.Option(..., "--data", help="Held-out examples with reference answers."),
             baseline: Optional[str] = typer.Option(None, help="'base' (the run's base model) or another run/model."),
             max_new_tokens: int = typer.Option(128, help="Upper bound on answer length."),
             batch_size: int = typer.Option(16, help="Prompts generated together."),
             limit: Optional[int] = typer.Option(None, help="Only the first N examples."),
             metrics: Optional[str] = typer.Option(None, help="Comma list to report, e.g. exact_match,bleu "
                                                   "(default: all for the task)."),
             temperature: float = typer.Option(0.0, help="0 = greedy (default, reproducible)."),
             top_p: float = typer.Option(1.0, help="Nucleus sampling mass when temperature > 0."),
             seed: int = typer.Option(0, help="Sampling seed when temperature > 0."),
             samples: int = typer.Option(5, "--show-examples", "--samples", help="Answers to print after the table "
                                      "(--samples: old spelling)."),
             free: bool = typer.Option(False, "--free", help="Classification data: generate free text and compare "
                                       "it with the label (default: constrained prediction over the label set)."),
             output: Optional[Path] = typer.Option(None, "--output", help="Where to write eval.json (default: "
                                                   "RUN/eval.json for a run)."),
             progress: bool = typer.Option(True, "--progress/--no-progress"),
             grader: Optional[Path] = typer.Option(None, "--grader", help="RL rows: the grader JSON (default: the "
                                                   "run's own grader).")):
    """Generate on held-out data and score (exact match, BLEU, ROUGE, chrF or classification metrics).

    RL rows (prompts + grader keys): the grader's mean score, tuned vs baseline (default: the run's base), with
    bootstrap CIs and the paired delta; written to RUN/eval_rl.json (or --output).

    Classification data is answered by constrained prediction: each label's likelihood is scored and the most
    likely label is the answer, for the baseline too; eval.json records the per-label probabilities and the
    expected calibration error. --free generates text instead.

    For a run, eval.json goes into the run and report.html is refreshed. Human evaluation of the same
    answers: `tuneforge human-eval export RUN/eval.json --output DIR`.
    """
    from tuneforge.eval.harness import evaluate_file, save_eval
    from tuneforge.eval.reinforcement import evaluate_rl, is_rl_file, render

    if is_rl_file(data):
        from tuneforge.cli.grader import grader_judge
        from tuneforge.run import is_run, write_json

        res = evaluate_rl(target, str(data), grader=str(grader) if grader else None,
                          baseline=baseline or "base", max_new_tokens=max_new_tokens, batch_size=batch_size,
                          limit=limit, temperature=temperature, judge=grader_judge)
        typer.echo(render(res))
        dest = output or (Path(target) / "eval_rl.json" if is_run(target) else None)
        if dest is not None:
            write_json(dest, res)
            typer.echo(f"written: {dest}")
        return
    res = evaluate_file(target, str(data), baseline=baseline, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, limit=limit, progress=progress, temperature=temperature,
                        top_p=top_p, seed=seed, free=free,
                        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None)
    written = save_eval(target, res, output)
    _print_eval(res, samples)
    for path in written:
        typer.echo(f"wrote {path}")


def _print_eval(res: dict, n_samples: int) -> None:
    from rich.console import Console
    from rich.table import Table

    roles = list(res["models"])
    keys = [k for k, v in res["models"][roles[-1]]["metrics"].items() if isinstance(v, (int, float))]
    how = ", constrained to the labels" if res.get("mode") == "constrained" else ""
    t = Table(title=f"{res['data']} ({res['n_examples']} examples, {res['task']}{how})")
    t.add_column("metric")
    for r in roles:
        t.add_column(f"{r}: {res['models'][r]['name']}", justify="right")
    if len(roles) == 2:
        t.add_column("delta (tuned − baseline)", justify="right")
        t.add_column("95% CI", justify="right")
    deltas = res.get("delta", {})
    for k in keys:
        vals = [res["models"][r]["metrics"].get(k) for r in roles]
        row = [k] + [f"{v:.4f}" for v in vals]
        if len(roles) == 2:
            row.append(f"{vals[1] - vals[0]:+.4f}")
            d = deltas.get(k)
            row.append(f"{d['low']:+.4f} .. {d['high']:+.4f}" if d else "")
        t.add_row(*row)
    con = Console(file=sys.stdout, width=140)
    con.print(t)
    pref = res.get("preference")
    if pref:  # DPO's implicit rewards of the tuned model, the baseline as reference
        con.print(f"implicit reward (beta {pref['beta']:g}, baseline as reference): accuracy "
                  f"{pref['reward_accuracy']:.4f}, margin {pref['reward_margin']:+.4f}", highlight=False)
    for ex in res["examples"][:n_samples]:
        con.print(f"\n[bold]Q:[/bold] {ex['prompt']}\n[bold]reference:[/bold] {ex['reference']}", markup=True,
                  highlight=False)
        for r in roles:
            probs = ex.get(f"{r}_probabilities")  # constrained prediction: how sure the model was
            sure = f" (p={probs[ex[f'{r}_prediction']]:.2f})" if probs else ""
            con.print(f"[bold]{r}:[/bold] {ex[f'{r}_prediction']}{sure}", markup=True, highlight=False)


@app.command()
def report(run: Path = typer.Argument(..., help="Run directory.")):
    """Write RUN/report.html: loss curves, learning rate, metrics base vs tuned, worst examples."""
    from tuneforge.eval.report import write_report

    typer.echo(str(write_report(run)))


@human_app.command("export")
def human_export(eval_json: Path = typer.Argument(..., help="eval.json written by `tuneforge eval --baseline`."),
                 output: Path = typer.Option(Path("."), "--output", help="Folder for human_eval.csv/.html and "
                                             "the key."),
                 seed: int = typer.Option(0, help="Seeds the per-row model order.")):
    """Blind A/B sheet (CSV + HTML form), model order randomised per row."""
    from tuneforge.eval.human import export_sheet

    for kind, path in export_sheet(eval_json, output, seed=seed).items():
        typer.echo(f"{kind}: {path}")


@human_app.command("import")
def human_import(csv_path: Path = typer.Argument(..., help="The rated human_eval.csv."),
                 key: Path = typer.Option(..., help="human_eval_key.json written by `human-eval export`.")):
    """Unblind the ratings: win/tie/loss of tuned vs baseline with confidence intervals."""
    from tuneforge.eval.human import format_ratings, import_ratings

    typer.echo(format_ratings(import_ratings(csv_path, key)))
