"""Size, speed and held-out quality of a model next to its teacher: the report every optimize command prints.

Quality is the held-out loss (mean cross-entropy per supervised token of the reference answers) on the
teacher run's validation examples (or --data), computed by the same function `export verify` uses.
"""

from __future__ import annotations

import io
import time

N_SPEED_PROMPTS = 4
SPEED_TOKENS = 32


def measure(model, tokenizer, samples: list, *, max_seq_len: int = 1024) -> dict:
    """Parameters (and non-zero ones), fp32 weight bytes, greedy tokens/s (batch 1), held-out loss."""
    import torch

    from tuneforge.data.tokenize import encode
    from tuneforge.export.verify import TorchRunner, heldout_loss, prompt_ids

    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    nbytes = sum(p.numel() * p.element_size() for p in params)
    model.eval()
    eos = tokenizer.eos_token_id
    runner = TorchRunner(model, eos, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    tokens, seconds = 0, 0.0
    for s in samples[:N_SPEED_PROMPTS]:
        x = torch.tensor([prompt_ids(s, tokenizer)])
        t0 = time.perf_counter()
        with torch.no_grad():  # a fixed length, so speed does not depend on when EOS comes
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=SPEED_TOKENS,
                                 min_new_tokens=SPEED_TOKENS, do_sample=False, pad_token_id=runner.pad)
        seconds += time.perf_counter() - t0
        tokens += out.shape[1] - x.shape[1]
    encoded = [e for e in (encode(s, tokenizer, max_seq_len=max_seq_len) for s in samples) if e.n_supervised]
    return {"parameters": n, "nonzero_parameters": nonzero, "weight_bytes": nbytes,
            "tokens_per_s": tokens / max(seconds, 1e-9), "heldout_loss": heldout_loss(runner, encoded),
            "examples": len(encoded), "layers": getattr(model.config, "num_hidden_layers", None)}


def compare(teacher: dict, student: dict) -> dict:
    """The student's figures as ratios of the teacher's (loss as a relative change)."""
    return {"size_ratio": student["weight_bytes"] / teacher["weight_bytes"],
            "nonzero_ratio": student["nonzero_parameters"] / teacher["nonzero_parameters"],
            "speed_ratio": student["tokens_per_s"] / max(teacher["tokens_per_s"], 1e-9),
            "loss_change": (student["heldout_loss"] - teacher["heldout_loss"]) / max(teacher["heldout_loss"], 1e-9)}


def format_report(report: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    t, s, r = report["teacher"], report["student"], report["ratios"]
    table = Table(title=f"{report['operation']}: {report['output']} vs {report['teacher_run']} "
                        f"(held-out: {report['heldout_source']})")
    for col in ("", "teacher", report["operation"], "ratio / change"):
        table.add_column(col, justify="right")
    table.add_row("layers", str(t["layers"]), str(s["layers"]), "")
    table.add_row("parameters", f"{t['parameters']:,}", f"{s['parameters']:,}", "")
    table.add_row("non-zero parameters", f"{t['nonzero_parameters']:,}", f"{s['nonzero_parameters']:,}",
                  f"{r['nonzero_ratio']:.2f}x")
    table.add_row("weights (fp32 MB)", f"{t['weight_bytes'] / 1e6:.1f}", f"{s['weight_bytes'] / 1e6:.1f}",
                  f"{r['size_ratio']:.2f}x")
    table.add_row("greedy tokens/s", f"{t['tokens_per_s']:.1f}", f"{s['tokens_per_s']:.1f}", f"{r['speed_ratio']:.2f}x")
    table.add_row("held-out loss", f"{t['heldout_loss']:.4f}", f"{s['heldout_loss']:.4f}",
                  f"{100 * r['loss_change']:+.1f}%")
    con = Console(width=140, record=True, file=io.StringIO())
    con.print(table)
    return con.export_text()
