"""`tuneforge serve`: the OpenAI-compatible server (engine + jobs API + monitoring)."""

from __future__ import annotations

from typing import Optional

import typer

from tuneforge.cli import app
from tuneforge.run import DEFAULT_MAX_NEW_TOKENS


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
          default_max_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS, "--default-max-tokens", help="Chat answer length cap "
                                                 "when a request sets no max_tokens and the model saved no "
                                                 "answer budget."),
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
    from tuneforge.monitor.attach import MonitorSettings
    from tuneforge.monitor.query import parse_duration
    from tuneforge.service import ServerOptions, build_server, run_server

    opts = ServerOptions(
        target, lora_modules=lora_modules, served_model_name=served_model_name, api_keys=api_key, engine=engine,
        max_num_seqs=max_num_seqs, max_queue=max_queue, max_model_len=max_model_len, max_body_bytes=max_body_bytes,
        response_cache_size=response_cache_size, default_max_tokens=default_max_tokens, device=device, db=db,
        jobs_worker=jobs_worker, max_file_bytes=max_file_bytes,
        monitor=MonitorSettings(content=log_content, redact=redact, max_rows=log_max_rows,
                                max_age_days=log_max_days, drift_run=drift_run, drift_interval_s=drift_interval,
                                drift_window_s=parse_duration(drift_window, flag="--drift-window")))
    server = build_server(opts)
    typer.echo(server.describe(host, port), err=True)
    run_server(server, host=host, port=port)
