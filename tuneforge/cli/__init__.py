"""The `tuneforge` command: one typer group per concern, one module per group; thin — parse, call the library,
print.

Run `tuneforge --help`. Errors in user input (`TuneforgeError`) print one `error:` line and exit 2 (`main`).
Each command module imports the library inside its commands, so `tuneforge --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from tuneforge.errors import TuneforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune, evaluate and export LLMs: data → train → eval → export.")

# --db of `serve`, `jobs worker` and `monitor`: one database, one description
DB_HELP = ("The server's database URL: sqlite:///PATH or postgresql+psycopg://... (default: "
           "sqlite:///$TUNEFORGE_HOME/tuneforge.db); `serve`, `jobs worker` and `monitor` share it.")


def quiet_libraries() -> None:
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
    quiet_libraries()
    try:
        app()
    except TuneforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


# the command groups register themselves on `app` (in the order `tuneforge --help` lists them)
from tuneforge.cli import (  # noqa: E402,F401
    train, evaluate, data, export, optimize, models, runs, serve, jobs, advise, monitor, grader,
)
