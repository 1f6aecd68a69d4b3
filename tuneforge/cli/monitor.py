"""`tuneforge monitor drift | report | export-feedback`: production monitoring from the request log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tuneforge.cli import DB_HELP, app

monitor_app = typer.Typer(no_args_is_help=True, help="Production monitoring from the server's request log: "
                          "drift, HTML report, feedback export.")
app.add_typer(monitor_app, name="monitor")
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
    from tuneforge.monitor.dashboard import write_dashboard
    from tuneforge.monitor.query import parse_since

    typer.echo(str(write_dashboard(connect(db), output, since=parse_since(since))))


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
    `tuneforge data check` and `tuneforge train --from-run RUN --data FILE`; with --pairs, preference rows for
    `tuneforge train --objective dpo --from-run RUN --data FILE`."""
    from tuneforge.db import connect
    from tuneforge.monitor.export import export_feedback, export_pairs
    from tuneforge.monitor.query import parse_since

    fn = export_pairs if pairs else export_feedback
    res = fn(connect(db), output, since=parse_since(since), model=model, min_score=min_score)
    typer.echo(res.summary())
