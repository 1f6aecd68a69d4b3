"""The `tuneforge` command: one group per concern; thin — parse, call the library, print.

Run `tuneforge --help`. Errors in user input print one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tuneforge.errors import TuneforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune, evaluate and export LLMs: data → train → eval → export.")
data_app = typer.Typer(no_args_is_help=True, help="Check and split example files.")
export_app = typer.Typer(no_args_is_help=True, help="Export a run (merged, int8/int4, ONNX, GGUF), each verified "
                         "against the model as trained.")
models_app = typer.Typer(no_args_is_help=True, help="Base models.")
app.add_typer(data_app, name="data")
app.add_typer(export_app, name="export")
runs_app = typer.Typer(no_args_is_help=True, help="Runs registry: list, show, diff.")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")
optimize_app = typer.Typer(no_args_is_help=True, help="Smaller, faster models from a run: pruning, "
                            "distillation.")
app.add_typer(optimize_app, name="optimize")
human_app = typer.Typer(no_args_is_help=True, help="Blind human A/B evaluation of an eval.json.")
app.add_typer(human_app, name="human-eval")


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
          from_run: Optional[str] = typer.Option(None, "--from", help="Continue from this finished run's adapter "
                                                 "(or full weights); base, method and adapter shape come from it. "
                                                 "`runs show` names it as the parent.")):
    """Fine-tune a base model; writes a run directory. Any config key is also a flag
    (--learning_rate 2e-4 --lora_r 16 ...): `tuneforge train --help-config` lists them all."""
    import os

    from tuneforge.config import config_help, parse_overrides
    from tuneforge.train.recipe import config_for
    from tuneforge.train.recipe import train as run_train

    if help_config:
        typer.echo(config_help())
        return
    if nproc > 1:
        import subprocess

        from tuneforge.train.distributed import launch_command, launched_world_size

        if launched_world_size() > 1:
            raise TuneforgeError("--nproc: already launched with several processes (torchrun / accelerate launch)")
        argv = sys.argv[1:]
        i = next(k for k, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
        del argv[i:i + (1 if "=" in argv[i] else 2)]
        raise typer.Exit(subprocess.run(launch_command(nproc, argv), env=os.environ).returncode)
    named = {"data": data, "output": output, "base": base, "method": method, "from_run": from_run}
    overrides = {**{k: v for k, v in named.items() if v is not None}, **parse_overrides(ctx.args)}
    cfg = config_for(config, overrides, resume=resume)
    if cv:
        from tuneforge.train.cv import cross_validate

        res = cross_validate(cfg, cv, progress=progress)
        folds = ", ".join(f"{r['best_val_loss']:.4f}" for r in res["folds"])
        typer.echo(f"{cv}-fold cross-validation: val loss {res['val_loss_mean']:.4f} ± {res['val_loss_std']:.4f} "
                   f"(folds: {folds})")
        return
    from tuneforge.advise.cost import attach, plan_key
    from tuneforge.run import run_status

    already = resume and run_status(cfg.output) == "finished"
    key = None if resume else plan_key(cfg)  # before training: the recipe resolves method auto in cfg
    out = run_train(cfg, resume=resume, progress=progress)
    if already or int(os.environ.get("RANK", "0")) != 0:  # one process writes the report: rank 0
        return
    if key:
        attach(key, out)  # the estimate `tuneforge cost` made for this exact plan, if any → RUN/estimate.json
    from tuneforge.eval.report import write_report

    write_report(out)
    typer.echo(f"run: {out}\nnext: tuneforge eval {out} --data TEST.jsonl --baseline base   |   "
               f"tuneforge export merge {out}   |   tuneforge report {out}")


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

    from tuneforge.models.load import DEFAULT_MAX_NEW_TOKENS
    from tuneforge.run import is_run, read_run

    loaded = load_for_inference(target)
    if max_new_tokens is None:
        max_new_tokens = read_run(target).max_new_tokens if is_run(target) else DEFAULT_MAX_NEW_TOKENS
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
             samples: int = typer.Option(5, help="Sample answers to print."),
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


@models_app.command("prepare")
def models_prepare(base: str = typer.Argument("smollm2-135m-instruct", help="Alias, .gguf or model dir.")):
    """Fetch and convert a base model into the cache now, so training starts fast."""
    from tuneforge.models.load import resolve

    typer.echo(str(resolve(base)))


# --- serve ------------------------------------------------------------------------------------------------
@app.command()
def serve(target: str = typer.Argument(..., help="Run dir (served under its directory name, its base under the "
                                       "base's name), merged model dir, alias or hub id."),
          lora_modules: list[str] = typer.Option([], "--lora-modules", help="NAME=RUN_OR_ADAPTER_DIR: one more "
                                                 "LoRA adapter on the same base (repeat the flag for several)."),
          served_model_name: Optional[str] = typer.Option(None, "--served-model-name",
                                                          help="Name of TARGET in the API (default: the run's "
                                                               "directory name, or TARGET as given)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
          port: int = typer.Option(8000, "--port"),
          api_key: list[str] = typer.Option([], "--api-key", help="Require 'Authorization: Bearer KEY' on every "
                                            "route but /health (repeatable; or TUNEFORGE_API_KEYS=k1,k2)."),
          engine: str = typer.Option("builtin", "--engine", help="builtin (CPU/one GPU, continuous batching) or "
                                     "vllm (CUDA, needs `pip install vllm`)."),
          max_num_seqs: int = typer.Option(16, "--max-num-seqs", help="Sequences decoded together per step."),
          max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting for a batch slot; beyond "
                                        "this the server answers 429 with Retry-After."),
          max_model_len: Optional[int] = typer.Option(None, "--max-model-len", help="Context limit (prompt + "
                                                      "max_tokens); default: the model's."),
          max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Larger request bodies get 413."),
          response_cache_size: int = typer.Option(1024, "--response-cache-size", help="Answers kept for "
                                                  "repeated temperature-0 requests (0 = off)."),
          default_max_tokens: int = typer.Option(1024, "--default-max-tokens", help="Chat answer length cap "
                                                 "when a request sets no max_tokens."),
          device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if present)."),
          db: Optional[str] = typer.Option(None, "--db", help="Database URL for fine-tuning jobs (and the request "
                                           "log): sqlite:///PATH or postgresql+psycopg://... (default: "
                                           "sqlite:///$TUNEFORGE_HOME/tuneforge.db)."),
          jobs_worker: bool = typer.Option(True, "--jobs-worker/--no-jobs-worker", help="Train fine-tuning jobs "
                                           "in this process (one at a time); --no-jobs-worker leaves them to "
                                           "`tuneforge jobs worker` processes on the same --db."),
          max_file_bytes: int = typer.Option(512 << 20, "--max-file-bytes", help="Largest upload to /v1/files "
                                             "(413 beyond it)."),
          log_content: str = typer.Option("full", "--log-content", help="Request log: full (prompt and "
                                          "completion text, redacted) or hash (sha256 and lengths only)."),
          redact: str = typer.Option("pii", "--redact", help="Request log redaction: pii (e-mails, phone "
                                     "numbers), none, or module:function (your str -> str function)."),
          log_max_rows: Optional[int] = typer.Option(None, "--log-max-rows", help="Keep at most this many "
                                                     "logged requests (oldest deleted with their feedback)."),
          log_max_days: Optional[float] = typer.Option(None, "--log-max-days", help="Delete logged requests "
                                                       "(and their feedback) older than this."),
          drift_interval: float = typer.Option(0, "--drift-interval", help="Seconds between drift checks "
                                               "(Prometheus gauges, /dashboard); 0 = off."),
          drift_run: Optional[str] = typer.Option(None, "--drift-run", help="Run whose training data drift "
                                                  "compares with (default: TARGET when it is a run)."),
          drift_window: str = typer.Option("24h", "--drift-window", help="Traffic each scheduled drift check "
                                           "looks at (30m, 24h, 7d).")):
    """Serve models over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models,
    /v1/files, /v1/fine_tuning/jobs, /metrics, /health): point the openai SDK or LangChain's ChatOpenAI at
    http://HOST:PORT/v1.

    Every answered request goes into the request log (--db); POST /v1/feedback rates answers; /dashboard
    charts it all."""
    from tuneforge.jobs.api import JobsAPI, served_bases
    from tuneforge.monitor.attach import MonitorSettings, attach
    from tuneforge.monitor.dashboard import OPEN_PATHS as DASHBOARD_PATHS
    from tuneforge.monitor.query import parse_duration
    from tuneforge.run import is_run
    from tuneforge.serve.app import OPEN_PATHS, create_app
    from tuneforge.serve.completions import Settings
    from tuneforge.serve.server import api_keys_from, build_engine, run

    monitor_settings = MonitorSettings(
        db=db, content=log_content, redact=redact, max_rows=log_max_rows, max_age_days=log_max_days,
        drift_run=drift_run or (target if drift_interval and is_run(target) else None),
        drift_model=served_model_name if not drift_run else None, drift_interval_s=drift_interval,
        drift_window_s=parse_duration(drift_window, flag="--drift-window"))
    monitor_settings.check()  # before the model loads: a bad flag fails in a second
    eng = build_engine(target, lora_modules=lora_modules, served_model_name=served_model_name, engine=engine,
                       max_num_seqs=max_num_seqs, max_queue=max_queue, max_model_len=max_model_len, device=device)
    keys = api_keys_from(api_key)
    jobs = JobsAPI(eng, db, worker=jobs_worker, max_file_bytes=max_file_bytes,
                   bases=served_bases(target, served_model_name))
    application = create_app(eng, api_keys=keys, max_body_bytes=max_body_bytes,
                             response_cache_size=response_cache_size,
                             settings=Settings(default_max_tokens=default_max_tokens),
                             routers=[jobs.router], body_limits=jobs.body_limits,
                             open_paths=OPEN_PATHS | DASHBOARD_PATHS)
    attach(application, monitor_settings)
    names = ", ".join(f"{m.name}" + (f" (adapter on {m.parent})" if m.parent else "") for m in eng.models())
    typer.echo(f"serving {names} on http://{host}:{port}/v1" + (" (API key required)" if keys else ""), err=True)
    run(application, host=host, port=port)


# --- jobs -------------------------------------------------------------------------------------------------
jobs_app = typer.Typer(no_args_is_help=True, help="Fine-tuning jobs (OpenAI's jobs API on `tuneforge serve`).")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("worker")
def jobs_worker_cmd(db: Optional[str] = typer.Option(None, "--db", help="The server's database URL (default: "
                                                     "sqlite:///$TUNEFORGE_HOME/tuneforge.db)."),
                    lease_seconds: float = typer.Option(60.0, "--lease-seconds", help="A worker silent this long "
                                                        "is presumed dead and its job resumed by another."),
                    poll_interval: float = typer.Option(1.0, "--poll-interval", help="Seconds between looks for "
                                                        "queued jobs.")):
    """Train queued fine-tuning jobs one at a time (run several for parallel jobs; each job is taken by exactly
    one worker). Ctrl-C or SIGTERM: the current job stops at its next step with a checkpoint and is re-queued."""
    from tuneforge.jobs.worker import run_worker

    run_worker(db, lease_s=lease_seconds, poll_s=poll_interval)


# --- before training: advise, augment, cost (issue 14) ---------------------------------------------------------
@app.command()
def advise(data: Path = typer.Argument(..., help="Examples file (.jsonl/.json/.csv/.parquet)."),
           base: Optional[str] = typer.Option(None, "--base", help="Base model (default smollm2-135m-instruct)."),
           task: Optional[str] = typer.Option(None, "--task", help="Short task description; also the system "
                                              "prompt of the zero-shot measurement."),
           sample: int = typer.Option(20, "--sample", help="Examples the base answers zero-shot (0: skip, fast)."),
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cost(ctx: typer.Context,
         data: Optional[str] = typer.Argument(None, help="Training examples (not needed with --serve)."),
         config: Optional[Path] = typer.Option(None, "--config", "-c", help="The training config to cost; flags "
                                               "and --key value overrides as for `train`."),
         base: Optional[str] = typer.Option(None, "--base", help="Base model, or with --serve a run/model."),
         method: Optional[str] = typer.Option(None, "--method", help="lora (default), qlora, full, prompt-tuning "
                                              "or auto."),
         epochs: Optional[float] = typer.Option(None, "--epochs", help="Same as --num_train_epochs."),
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
         progress: bool = typer.Option(True, "--progress/--no-progress")):
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
    from tuneforge.advise.cost import estimate, remember, render
    from tuneforge.config import parse_overrides
    from tuneforge.errors import ConfigError
    from tuneforge.train.recipe import config_for

    if data is None and config is None:
        raise ConfigError("tuneforge cost: give the training data (DATA or --config), or --serve")

    named = {"data": data, "base": base, "method": method, "num_train_epochs": epochs}
    overrides = {**{k: v for k, v in named.items() if v is not None}, **parse_overrides(ctx.args)}
    cfg = config_for(config, overrides)
    est = estimate(cfg, hardware=hardware, prices=table, bench_steps=bench_steps, progress=progress and not as_json)
    remember(est)
    typer.echo(json.dumps(est, indent=1) if as_json else render(est, spot=spot))
# --- end of before training ------------------------------------------------------------------------------------


# --- monitor ----------------------------------------------------------------------------------------------
monitor_app = typer.Typer(no_args_is_help=True, help="Production monitoring from the server's request log: "
                          "drift, HTML report, feedback export.")
app.add_typer(monitor_app, name="monitor")
DB_HELP = "The server's database URL (as `tuneforge serve --db`; default sqlite:///$TUNEFORGE_HOME/tuneforge.db)."
SINCE_HELP = "Only requests from this time on: 30m, 24h, 7d, an ISO date/time (UTC) or unix seconds."


@monitor_app.command("drift")
def monitor_drift(run: str = typer.Option(..., "--run", help="The served run: production is compared with its "
                                          "training data and answered by its model."),
                  db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                  since: Optional[str] = typer.Option(None, "--since", help=SINCE_HELP + " Default: all."),
                  model: Optional[str] = typer.Option(None, "--model", help="Served model name to check (default: "
                                                      "the run's directory name, as `serve RUN` names it)."),
                  embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Compute the "
                                                  "hidden-state signal (loads the run's model)."),
                  as_json: bool = typer.Option(False, "--json", help="Machine-readable report.")):
    """Has production drifted from the training data? Prints each signal's statistic, threshold and verdict;
    exit code 1 when any signal finds drift, 0 when none does. The check is stored for the dashboard."""
    from tuneforge.db import connect
    from tuneforge.monitor import drift
    from tuneforge.monitor.query import parse_since

    start = parse_since(since)
    engine = connect(db)
    report = drift.compute_drift(run, engine, since=start, model=model, embeddings=embeddings)
    drift.record(engine, report)
    typer.echo(json.dumps(report.to_dict(), indent=1, default=float) if as_json else report.render())
    raise typer.Exit(1 if report.drift else 0)


@monitor_app.command("report")
def monitor_report(output: Path = typer.Option(..., "--output", help="HTML file to write (self-contained)."),
                   db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                   since: Optional[str] = typer.Option(None, "--since", help=SINCE_HELP + " Default: all.")):
    """Write the dashboard (latency, errors, requests and tokens per model, feedback, drift) as one HTML file."""
    from tuneforge.db import connect
    from tuneforge.monitor.dashboard import write_report
    from tuneforge.monitor.query import parse_since

    typer.echo(str(write_report(connect(db), output, since=parse_since(since))))


@monitor_app.command("export-feedback")
def monitor_export_feedback(output: Path = typer.Option(..., "--output", help="JSONL training file to write."),
                            db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                            since: Optional[str] = typer.Option(None, "--since", help="Only feedback from this "
                                                                "time on (30m, 24h, 7d, ISO, unix seconds)."),
                            model: Optional[str] = typer.Option(None, "--model", help="Only this served model."),
                            min_score: float = typer.Option(0.8, "--min-score", help="Answers rated at least "
                                                            "this (0-1; thumbs up = 1) are kept as they are; "
                                                            "corrected answers are kept whatever the score."),
                            pairs: bool = typer.Option(False, "--pairs", help="Write preference pairs for "
                                                       "`train --objective dpo` instead: a correction over the "
                                                       "answer it corrected; an answer rated >= --min-score over "
                                                       "one rated <= 1 - --min-score to the same prompt.")):
    """Well-rated and corrected answers → chat-format training rows with provenance (`metadata`), ready for
    `tuneforge data check` and `tuneforge train --from RUN --data FILE`; with --pairs, preference rows for
    `tuneforge train --objective dpo --from RUN --data FILE`."""
    from tuneforge.db import connect
    from tuneforge.monitor.export import export_feedback, export_pairs
    from tuneforge.monitor.query import parse_since

    fn = export_pairs if pairs else export_feedback
    res = fn(connect(db), output, since=parse_since(since), model=model, min_score=min_score)
    typer.echo(res.summary())


# ---- graders (OpenAI's shapes; tuneforge.graders) ------------------------------------------------------------
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


def _quiet_libraries() -> None:
    """Library chatter (bitsandbytes kernels hint, deprecation notices, weight-loading bars) hides our output."""
    import os
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*gemm_4bit.*")
    warnings.filterwarnings("ignore", message=".*Consider using tensor.detach.*")
    import logging

    # bitsandbytes asks for the `kernels` package, which would fetch kernels from a hub: not wanted offline
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # peft imports torchao when installed: it logs each optional CUDA kernel it lacks, and torch a deprecation
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main() -> None:
    _quiet_libraries()
    try:
        app()
    except TuneforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
