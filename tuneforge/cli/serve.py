"""`tuneforge serve`: the OpenAI-compatible server (engine + jobs API + monitoring + studio); `tuneforge studio`:
the same, with the page opened."""

from __future__ import annotations

from typing import Optional

import typer

from tuneforge.cli import DB_HELP, app
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
          engine: str = typer.Option("auto", "--engine", help="auto (default: llama.cpp for a run on the CPU with "
                                     "a GGUF export when llama-cpp-python is installed, else builtin; the choice and "
                                     "why are printed), builtin (CPU/one GPU, continuous batching, "
                                     "merged-adapter and prefix-cache fast paths), llama.cpp (a run's GGUF export or "
                                     "a .gguf on CPU; pip install 'tuneforge[llamacpp]') or vllm (CUDA, needs "
                                     "`pip install vllm`)."),
          max_num_seqs: int = typer.Option(16, "--max-num-seqs", help="Sequences decoded together per step."),
          enable_prefix_caching: bool = typer.Option(True, "--enable-prefix-caching/--no-enable-prefix-caching",
                                                     help="Compute a prompt prefix shared by requests "
                                                          "(system prompt, template header) once per adapter."),
          merged_copies: Optional[int] = typer.Option(None, "--merged-copies", help="builtin: adapters that may "
                                                      "hold a merged copy of the base for batches of that adapter "
                                                      "alone (base speed; each costs the base's size); default: as "
                                                      "many as fit in a quarter of free memory; 0: never."),
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
          db: Optional[str] = typer.Option(None, "--db", help=DB_HELP + " Holds the "
                                           "fine-tuning jobs and the request log."),
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
                                           "looks at (30m, 24h, 7d)."),
          runs_dir: list[str] = typer.Option([], "--runs-dir", help="Folders of run directories (`tuneforge "
                                             "train` outputs) that /studio and /v1/tuneforge/runs list beside "
                                             "the jobs' runs (repeatable).")):
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
        max_num_seqs=max_num_seqs, enable_prefix_caching=enable_prefix_caching, merged_copies=merged_copies,
        max_queue=max_queue, max_model_len=max_model_len, max_body_bytes=max_body_bytes,
        response_cache_size=response_cache_size, default_max_tokens=default_max_tokens, device=device, db=db,
        jobs_worker=jobs_worker, max_file_bytes=max_file_bytes, runs_dirs=runs_dir,
        monitor=MonitorSettings(content=log_content, redact=redact, max_rows=log_max_rows,
                                max_age_days=log_max_days, drift_run=drift_run, drift_interval_s=drift_interval,
                                drift_window_s=parse_duration(drift_window, flag="--drift-window")))
    server = build_server(opts)
    if server.engine_choice:
        typer.echo(f"tuneforge: {server.engine_choice}", err=True)
    typer.echo(server.describe(host, port), err=True)
    run_server(server, host=host, port=port)


@app.command()
def studio(target: str = typer.Argument("smollm2-135m-instruct", help="What to serve (as `serve TARGET`): the "
                                        "base the page trains and chats with."),
           host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
           port: int = typer.Option(8000, "--port"),
           api_key: list[str] = typer.Option([], "--api-key", help="Require this key for the page's data "
                                             "(repeatable; or TUNEFORGE_API_KEYS)."),
           db: Optional[str] = typer.Option(None, "--db", help="Database URL (as `serve --db`)."),
           runs_dir: list[str] = typer.Option([], "--runs-dir", help="Folders of `tuneforge train` runs to list "
                                               "beside the jobs' runs (repeatable)."),
           open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the page in a browser.")):
    """The studio: `tuneforge serve TARGET` with jobs, monitoring and the /studio page, then open the page."""
    import threading
    import time
    import urllib.request
    import webbrowser

    from typer.main import get_command

    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/studio"

    def announce() -> None:  # once the server answers /health: print the URL, open it
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url.replace("/studio", "/health"), timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            return
        typer.echo(f"studio: {url}" + ("  (type the API key on the page)" if api_key else ""), err=True)
        if open_browser:
            webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    args = ["serve", target, "--host", host, "--port", str(port)]
    for k in api_key:
        args += ["--api-key", k]
    if db:
        args += ["--db", db]
    for d in runs_dir:
        args += ["--runs-dir", str(d)]
    get_command(app).main(args=args, prog_name="tuneforge", standalone_mode=False)
