"""RL signal bench: how much learning signal GRPO's sampling gives a base model, by sampling temperature.

GRPO learns only from groups whose answers score differently (group-normalised advantages: an all-equal group has
advantage 0). A small base sampled hot is mostly off-topic, so most groups score 0 together and a step learns
almost nothing; sampled cold, the groups repeat the greedy answer and also score alike. This bench measures, on the
real sampling path of `tuneforge train --objective grpo` (`GRPO.batch`: the LoRA-wrapped base, seeded per-answer
generators, the grader), per temperature: the mean reward, the share of groups with signal (non-zero std), the
mean answer length and the seconds per group, with the greedy score (temperature 0) as the baseline.

Run:   python bench/rl_signal.py                           # pick task, 16 prompts x 8 answers, T 0.5 0.7 1.0
       python bench/rl_signal.py --data D --grader G --temperatures 0.7,1.0 --prompts 32
Figures: bench/RESULTS.md ("RL signal").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(data: str, grader: str, temperature: float, prompts: int, base: str, seed: int) -> dict:
    """Sample `num_generations` answers for each of the first `prompts` training prompts at `temperature` (0 =
    greedy, one answer each) and grade them, as one GRPO step would."""
    from tuneforge.config import load_config
    from tuneforge.train.recipe import prepare

    cfg = load_config(None, {"objective": "grpo", "grader": grader, "data": data, "output": "unused", "base": base,
                             "val_split": 0, "seed": seed, "temperature": max(temperature, 1e-6)})
    p = prepare(cfg)
    obj = p.objective
    obj.setup(p, None, SimpleRanks(), resume=False)
    rewards, signal, lengths, t0 = [], [], [], time.perf_counter()
    for it in p.train[:prompts]:
        if temperature == 0:
            from tuneforge.train.objectives.grpo import completion_text, generate

            s = generate(p.model, p.base.tokenizer, [it.prompt_ids], max_tokens=cfg.max_completion_length,
                         temperature=0)[0]
            rewards.append(obj._grade([completion_text(p.base.tokenizer, s)], [s], [it.item])[0].score)
            lengths.append(len(s.tokens_out))
            continue
        b = obj.batch(p, [it], p.model)
        G = obj.cfg.num_generations
        rewards.append(b["stats"]["reward"] / G)
        signal.append(b["stats"]["zero_std_groups"] == 0)
        lengths.append(b["stats"]["completion_length"] / G)
    secs = (time.perf_counter() - t0) / len(rewards)
    del p
    return {"temperature": temperature, "reward": statistics.mean(rewards),
            "signal": statistics.mean(signal) if signal else None, "length": statistics.mean(lengths),
            "s_per_group": secs, "prompts": len(rewards)}


class SimpleRanks:
    """One process: what `GRPO.setup` reads of `distributed.Ranks`."""

    rank = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "examples/reinforcement/pick.train.jsonl"))
    ap.add_argument("--grader", default=str(ROOT / "examples/reinforcement/pick_grader.json"))
    ap.add_argument("--temperatures", default="0.5,0.7,1.0")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    from tuneforge.cli import quiet_libraries

    quiet_libraries()
    rows = [measure(args.data, args.grader, t, args.prompts, args.base, args.seed)
            for t in [0.0] + [float(x) for x in args.temperatures.split(",")]]
    greedy = rows[0]["reward"]
    print(f"\n{args.data} ({args.prompts} prompts), grader {Path(args.grader).name}, base {args.base}\n")
    print("| temperature | mean reward | vs greedy | groups with signal | answer tokens | s per group |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sig = f"{r['signal']:.0%}" if r["signal"] is not None else "–"
        name = "greedy (baseline)" if r["temperature"] == 0 else f"{r['temperature']:g}"
        ratio = f"{r['reward'] / greedy:.2f}x" if greedy else "–"
        print(f"| {name} | {r['reward']:.3f} | {ratio} | {sig} | {r['length']:.0f} | {r['s_per_group']:.1f} |")


if __name__ == "__main__":
    main()
