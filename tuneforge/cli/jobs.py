"""`tuneforge jobs worker`: train queued fine-tuning jobs."""

from __future__ import annotations

from typing import Optional

import typer

from tuneforge.cli import DB_HELP, app

jobs_app = typer.Typer(no_args_is_help=True, help="Fine-tuning jobs (OpenAI's jobs API on `tuneforge serve`).")
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("worker")
def jobs_worker_cmd(db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
                    lease_seconds: float = typer.Option(60.0, "--lease-seconds", help="A worker silent this long "
                                                        "is presumed dead and its job resumed by another."),
                    poll_interval: float = typer.Option(1.0, "--poll-interval", help="Seconds between looks for "
                                                        "queued jobs.")):
    """Train queued fine-tuning jobs one at a time (run several for parallel jobs; each job is taken by exactly
    one worker). Ctrl-C or SIGTERM: the current job stops at its next step with a checkpoint and is re-queued."""
    from tuneforge.jobs.worker import run_worker

    run_worker(db, lease_seconds=lease_seconds, poll_interval=poll_interval)
