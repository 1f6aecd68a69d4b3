"""What `tuneforge serve TARGET --lora-modules NAME=PATH ...` puts in memory, and under which names.

A run directory with an adapter is served under its directory name as that adapter on its base, and the base
under the name it was trained from (its alias, path or hub id); a run with only merged weights (`model/`) is
served as its own model next to its base. Adapters of the same base share one copy of the base in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ModelError, TuneforgeError
from tuneforge.run import is_run, read_run, run_name

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


# --- model groups: one base in memory and the adapters on it ---------------------------------------------------
@dataclass
class ModelGroup:
    """A base model held once, the served names on it (the base itself and/or adapters) and its running batch.

    Which weights a forward runs depends on the rows' adapters (`path_for`): a batch of one adapter runs a merged
    copy of the weights (the adapter folded in: base speed, as `tuneforge generate` runs a LoRA run) when the
    group holds one for it; a batch of base rows runs the base with the adapters switched off; a mixed batch runs
    peft's per-row path (`adapter_names`), which costs each adapter's LoRA matmuls on its rows. The batch's KV
    cache carries over between paths: the weights are the same function either way (up to float rounding)."""

    model: Any  # a transformers model, or a peft.PeftModel holding every adapter of this base
    tokenizer: Any
    base_path: str  # the directory (or hub id) the base was loaded from: adapters of the same base join it
    max_model_len: int
    eos_ids: set[int]
    names: dict[str, str] = field(default_factory=dict)  # served name -> peft adapter name (BASE_ADAPTER = base)
    defaults: dict[str, dict] = field(default_factory=dict)  # served name -> decoding defaults
    batch: Any = None  # the engine's running Batch of this group, if any
    merged_copies: int | None = None  # adapters that may hold a merged copy; None: as many as fit (merged_budget)
    merged: dict[str, Any] = field(default_factory=dict)  # peft adapter name -> plain model with it merged in
    prefix_cache: Any = None  # a models.decode.PrefixCache, or None (off)
    path_counts: Counter = field(default_factory=Counter)  # forwards run per path (merged/base/mixed/plain)
    _budget: int | None = field(default=None, repr=False)

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def path_for(self, adapters: list[str]) -> str:
        """"plain" (no peft), "base" (all rows on the base), "merged" (one adapter with a merged copy) or "mixed"."""
        if not self.is_peft:
            return "plain"
        kinds = set(adapters)
        if kinds == {BASE_ADAPTER}:
            return "base"
        if len(kinds) == 1 and self.ensure_merged(adapters[0]):
            return "merged"
        return "mixed"

    def forward(self, adapters: list[str], **kw) -> "torch.Tensor":  # noqa: F821 - torch loads with the model
        """Logits of the last position of every row; each row through its own adapter."""
        path = self.path_for(adapters)
        self.path_counts[path] += 1
        if path == "merged":
            model = self.merged[adapters[0]]
            self.merged[adapters[0]] = self.merged.pop(adapters[0])  # most recently used last
            return model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        if path == "base":
            with self.model.disable_adapter():
                return self.model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        if path == "mixed":
            kw["adapter_names"] = adapters
        return self.model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()

    def merged_budget(self) -> int:
        """How many merged copies to hold: `merged_copies` if set, else as many as fit in a quarter of the
        memory available now (at most 4) — a copy costs the base's size (SmolLM2-135M fp32: ~540 MB)."""
        if self.merged_copies is not None:
            return self.merged_copies
        if self._budget is not None:
            return self._budget
        import psutil

        size = sum(p.numel() * p.element_size() for p in self.model.parameters())
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            import torch

            free = torch.cuda.mem_get_info(device)[0]
        else:
            free = psutil.virtual_memory().available
        self._budget = max(0, min(4, int(0.25 * free // max(size, 1))))  # decided once, not at every step
        return self._budget

    def ensure_merged(self, adapter: str) -> bool:
        """A merged copy for `adapter` exists (building it if the budget allows); False: run the peft path."""
        if adapter in self.merged:
            return True
        if adapter == BASE_ADAPTER or adapter not in getattr(self.model, "peft_config", {}):
            return False
        if len(self.merged) >= self.merged_budget():
            return False
        self.merged[adapter] = merged_copy(self.model, adapter)
        return True

    def invalidate(self, adapter: str) -> None:
        """Forget what was computed with `adapter`'s weights (its merged copy, its cached prefixes): call it when
        an adapter is (re)loaded or unloaded under this peft name."""
        self.merged.pop(adapter, None)
        if self.prefix_cache is not None:
            self.prefix_cache.drop(adapter)


def merged_copy(model, adapter: str):
    """A plain transformers model with `adapter` folded into a copy of the base weights (peft's
    merge_and_unload on a deep copy; the served PeftModel is untouched)."""
    import copy

    import torch

    with torch.no_grad():
        return copy.deepcopy(model).merge_and_unload(adapter_names=[adapter]).eval()


@dataclass
class ServePlan:
    """Served name → what to load: a base (path/alias/hub id) and optionally an adapter directory on it."""

    name: str
    base: str
    adapter: str | None = None
    defaults: dict | None = None  # decoding defaults; None: the loaded model's own (generation_config)


def run_defaults(run) -> dict:
    """A run answers as `tuneforge generate RUN` does by default: greedy, within the run's answer budget; a
    classification run (run.json `task: classification`) answers chat requests with one of its `labels`."""
    out: dict = {"temperature": 0.0, "max_tokens": run.max_new_tokens}
    if run.info.get("task") == "classification" and run.info.get("labels"):
        out["labels"] = [str(x) for x in run.info["labels"]]
    return out


def decoding_defaults(generation_config) -> dict:
    """What a model's generation_config.json asks for explicitly (vLLM's `--generation-config auto`): greedy if
    it says do_sample false, its temperature/top_p, its max_new_tokens. Fields it leaves at transformers'
    defaults say nothing, so the request or OpenAI's defaults (temperature 1) decide."""
    d = generation_config.to_diff_dict()
    out: dict = {}
    if d.get("do_sample") is False:
        out["temperature"] = 0.0
    elif d.get("do_sample") and d.get("temperature") is not None:
        out["temperature"] = float(d["temperature"])
    if d.get("do_sample") and d.get("top_p") is not None:
        out["top_p"] = float(d["top_p"])
    if d.get("max_new_tokens"):
        out["max_tokens"] = int(d["max_new_tokens"])
    return out


def parse_lora_module(spec: str) -> tuple[str, str]:
    """`NAME=PATH` (vllm serve's --lora-modules form)."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise TuneforgeError(f"--lora-modules {spec!r}: expected NAME=RUN_OR_ADAPTER_DIR")
    return name, path


def plan_target(target: str, served_name: str | None = None) -> list[ServePlan]:
    """The served names for TARGET: a run (and its base), or one model."""
    if is_run(target):
        run = read_run(target)
        name = served_name or run_name(target)
        base = str(run.info["base"])
        if run.adapter is not None:
            check_lora(run.adapter, f"{target} (method {run.info.get('method')})")
            return [ServePlan(base, base), ServePlan(name, base, str(run.adapter), run_defaults(run))]
        if run.model is not None:
            return [ServePlan(base, base), ServePlan(name, str(run.model), defaults=run_defaults(run))]
        raise TuneforgeError(f"{target}: run has neither model/ nor adapter/ (did training finish?)")
    if Path(target).is_dir() and (Path(target) / "run.json").exists() is False and \
            (Path(target) / "config.yaml").is_file():
        raise TuneforgeError(f"{target}: the run has not finished (no run.json); wait for it or `train --resume`")
    return [ServePlan(served_name or target, target)]


def plan_adapter(name: str, path: str) -> ServePlan:
    """--lora-modules NAME=PATH: a run directory (its adapter/) or a peft adapter directory."""
    if is_run(path):
        run = read_run(path)
        if run.adapter is None:
            raise TuneforgeError(f"--lora-modules {name}={path}: the run has no adapter/ (method "
                                 f"{run.info.get('method')}); serve it as TARGET instead")
        check_lora(run.adapter, f"--lora-modules {name}={path}")
        return ServePlan(name, str(run.info["base"]), str(run.adapter), run_defaults(run))
    cfg = check_lora(Path(path), f"--lora-modules {name}={path}")
    return ServePlan(name, str(cfg.get("base_model_name_or_path") or ""), path)


def check_lora(adapter_dir: Path, where: str) -> dict:
    """The adapter_config.json of a servable (LoRA) adapter; a one-line error naming `where` otherwise."""
    f = Path(adapter_dir) / "adapter_config.json"
    if not f.is_file():
        raise TuneforgeError(f"{where}: not a run directory or a peft adapter (no {f})")
    cfg = json.loads(f.read_text())
    if cfg.get("peft_type") != "LORA":
        raise TuneforgeError(f"{where}: only LoRA adapters can be served (this one is {cfg.get('peft_type')}); "
                             "use `tuneforge generate` for prompt-tuning runs")
    return cfg


def same_base(a: str, b: str) -> bool:
    """Do two base references (alias, dir, hub id) name the same model files?"""
    from tuneforge.models.load import resolve

    if a == b:
        return True
    try:
        return Path(resolve(a)).resolve() == Path(resolve(b)).resolve()
    except TuneforgeError:
        return False


def load_groups(plans: list[ServePlan], *, device: str | None = None, max_model_len: int | None = None,
                dtype=None) -> list[ModelGroup]:
    """Load each distinct base once and attach its adapters; names must be unique."""
    from tuneforge.models.load import load_base

    seen: set[str] = set()
    for p in plans:
        if p.name in seen:
            raise TuneforgeError(f"two served models are named '{p.name}' (use --served-model-name)")
        seen.add(p.name)
    groups: list[tuple[str, ModelGroup]] = []
    for p in plans:
        group = next((g for key, g in groups if same_base(key, p.base)), None)
        if group is None:
            if not p.base:
                raise TuneforgeError(f"{p.name}: the adapter does not name its base (base_model_name_or_path)")
            b = load_base(p.base, device=device, dtype=dtype)
            model = b.model.eval()
            ctx = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
            eos = {b.tokenizer.eos_token_id} | set(_as_list(model.generation_config.eos_token_id))
            group = ModelGroup(model, b.tokenizer, b.path, min(ctx, max_model_len or ctx), eos - {None})
            group.defaults[BASE_ADAPTER] = decoding_defaults(model.generation_config)
            _check_cache_layers(group, p.base)
            groups.append((p.base, group))
        if p.adapter is None:
            group.names[p.name] = BASE_ADAPTER
        else:
            attach_adapter(group, p.name, p.adapter)
        group.defaults[p.name] = p.defaults if p.defaults is not None else group.defaults[BASE_ADAPTER]
    return [g for _, g in groups]


def attach_adapter(group: ModelGroup, name: str, path: str):
    """Load a LoRA adapter into the group's base under an internal peft name; returns (peft name, tokenizer).

    The tokenizer saved with the adapter (tuneforge saves one) carries the chat template the run trained with."""
    from peft import PeftModel

    cfg = check_lora(Path(path), f"adapter {name}")
    adapter = f"a{len([a for a in group.names.values() if a != BASE_ADAPTER])}"
    while adapter in getattr(group.model, "peft_config", {}):
        adapter += "_"
    try:
        if group.is_peft:
            group.model.load_adapter(str(path), adapter_name=adapter)
        else:
            group.model = PeftModel.from_pretrained(group.model, str(path), adapter_name=adapter).eval()
    except Exception as e:  # noqa: BLE001 - a mismatched adapter is the user's input problem
        raise ModelError(f"{path}: cannot load adapter '{name}' onto {group.base_path} "
                         f"(base {cfg.get('base_model_name_or_path')}): {str(e).splitlines()[0]}") from None
    group.invalidate(adapter)  # the peft name may be reused after an unload: nothing computed with old weights
    group.names[name] = adapter
    tokenizer = group.tokenizer
    if (Path(path) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    return adapter, tokenizer


def _check_cache_layers(group: ModelGroup, name: str) -> None:
    """The batch edits the KV cache rows/columns directly; that is valid for full-attention layers only."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=group.model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise ModelError(f"{name}: sliding-window or hybrid attention is not supported by the built-in engine "
                         "(use --engine vllm)")


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
