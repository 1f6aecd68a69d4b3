"""Prune a run's merged model: unstructured magnitude pruning or depth pruning; writes a new run directory.

`tuneforge optimize prune RUN --sparsity 0.5` zeroes the smallest half of the weights of every linear layer
inside the decoder blocks (per matrix; embeddings, norms and the output layer untouched). Dense kernels do not
skip zeros, so this changes neither the file size nor the speed: it shows how much of the model the task
needs, and feeds sparse runtimes. `--drop-layers K` removes the K decoder layers whose output is most like
their input (ShortGPT's block influence: 1 − mean cosine similarity of the hidden state before and after the
layer, on the golden prompts): a real ~K/L cut in compute and size, usually followed by `optimize distill`
(`--student RUN-pruned/model`) to recover quality.
The new run has model/ (plain transformers), the source's config.yaml and data.json, run.json (with
`derived_from` and the report) and optimize.json; every export command accepts it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.optimize.measure import compare, format_report, measure  # noqa: F401 - format_report for cli
from tuneforge.run import read_json, read_run, write_atomic_dir, write_atomic_text, write_json


def decoder_linears(model):
    """(name, nn.Linear) of the decoder blocks: what pruning touches."""
    import torch

    layers = model.get_decoder().layers
    return [(f"layers.{i}.{n}", m) for i, layer in enumerate(layers) for n, m in layer.named_modules()
            if isinstance(m, torch.nn.Linear)]


def magnitude_prune(model, sparsity: float) -> None:
    """Zero the `sparsity` fraction of smallest-magnitude weights in each decoder linear layer, in place."""
    import torch

    with torch.no_grad():
        for _, lin in decoder_linears(model):
            w = lin.weight
            k = int(sparsity * w.numel())
            if k == 0:
                continue
            threshold = w.abs().flatten().kthvalue(k).values
            w.masked_fill_(w.abs() <= threshold, 0.0)


def block_influence(model, tokenizer, samples: list) -> list[float]:
    """Per decoder layer: 1 − mean cosine(hidden in, hidden out) over the golden prompts' tokens.

    The last layer's output reaches the head through the final norm (transformers reports the normed state),
    so it is not comparable and the layer is always kept (influence = inf)."""
    import torch

    from tuneforge.export.verify import prompt_ids

    n = len(model.get_decoder().layers)
    total, count = torch.zeros(n), 0
    with torch.no_grad():
        for s in samples:
            x = torch.tensor([prompt_ids(s, tokenizer)])
            hs = model(input_ids=x, output_hidden_states=True).hidden_states  # n + 1 states
            for i in range(n - 1):
                total[i] += torch.nn.functional.cosine_similarity(hs[i][0], hs[i + 1][0], dim=-1).sum()
            count += x.shape[1]
    scores = (1 - total / max(count, 1)).tolist()
    scores[-1] = float("inf")
    return scores


def remove_layers(model, k: int, scores: list[float]) -> list[int]:
    """Remove the k layers with the lowest block influence, in place; returns their indices."""
    import torch

    layers = model.get_decoder().layers
    if not 0 < k < len(layers):
        raise ConfigError(f"--drop-layers {k}: the model has {len(layers)} layers; drop between 1 and "
                          f"{len(layers) - 1}")
    drop = sorted(sorted(range(len(layers)), key=lambda i: scores[i])[:k])
    keep = [layer for i, layer in enumerate(layers) if i not in drop]
    for new_idx, layer in enumerate(keep):  # the KV cache is indexed by layer_idx
        layer.self_attn.layer_idx = new_idx
    model.get_decoder().layers = torch.nn.ModuleList(keep)
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [t for i, t in enumerate(model.config.layer_types) if i not in drop]
    return drop


def write_derived_run(out: Path, source, model, tokenizer, info: dict) -> Path:
    """A run directory for a model derived from `source` (model/, its config.yaml and data.json, run.json)."""
    import tuneforge
    from tuneforge.run import model_card, record_git_commit

    if out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output directory exists and is not empty (choose another --output)")

    def write_model(d: Path) -> None:
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)

    out.mkdir(parents=True, exist_ok=True)
    write_atomic_dir(out / "model", write_model)
    shutil.copy(source.path / "config.yaml", out / "config.yaml")
    data = read_json(source.path / "data.json")
    data.pop("plan_key", None)  # not the plan `tuneforge cost` estimated: no estimate.json for a derived run
    write_json(out / "data.json", data)
    full = {"schema": 1, "tuneforge_version": tuneforge.__version__, "run_dir": str(out),
            "git_commit": record_git_commit(out), "base": source.info.get("base"),
            "base_path": source.info.get("base_path"), "method": source.info.get("method"), "adapter": False,
            "derived_from": str(source.path), **info}
    write_json(out / "run.json", full)
    write_atomic_text(out / "README.md", model_card(source.config, full, data))
    return out


def prune(run_dir: str | Path, *, sparsity: float | None = None, drop_layers: int | None = None,
          output: str | Path | None = None, data=None) -> tuple[Path, dict]:
    """Prune and write the new run; returns (its path, the teacher-vs-pruned report)."""
    from tuneforge.export.merge import merged_model
    from tuneforge.export.verify import golden_samples
    from tuneforge.finish import finish_run

    if (sparsity is None) == (drop_layers is None):
        raise ConfigError("optimize prune: give exactly one of --sparsity S or --drop-layers K")
    if sparsity is not None and not 0 < sparsity < 1:
        raise ConfigError(f"--sparsity {sparsity}: a fraction between 0 and 1 (e.g. 0.5)")
    run = read_run(run_dir)
    suffix = f"sparsity{sparsity:g}" if sparsity is not None else f"drop{drop_layers}"
    out = Path(output) if output else run.path.parent / f"{run.path.name}-pruned-{suffix}"
    samples, source = golden_samples(run, data)
    samples = samples[:64]
    max_len = int(run.config.get("max_seq_len", 1024))
    model, tok = merged_model(run)
    before = measure(model, tok, samples, max_seq_len=max_len)
    if sparsity is not None:
        magnitude_prune(model, sparsity)
        settings = {"method": "magnitude (unstructured, per matrix)", "sparsity": sparsity}
    else:
        dropped = remove_layers(model, drop_layers, block_influence(model, tok, samples[:16]))
        settings = {"method": "depth (block influence)", "dropped_layers": dropped}
    print(f"tuneforge: pruned ({settings}); measuring ...", file=sys.stderr)
    after = measure(model, tok, samples, max_seq_len=max_len)
    report = {"operation": "prune", "teacher_run": str(run.path), "output": str(out), "settings": settings,
              "heldout_source": source, "teacher": before, "student": after, "ratios": compare(before, after)}
    write_derived_run(out, run, model, tok, {"optimize": {"operation": "prune", **settings},
                                             "results": {"heldout_loss": after["heldout_loss"]}})
    write_json(out / "optimize.json", report)
    finish_run(out)  # report.html and the model card, as for every run
    return out, report
