"""Issue 23: validation decides how long a run trains. The stop keeps the best step's exact weights, says why in
run.json and the model card, and a run killed after an evaluation resumes with the same patience counter and
learning-rate scale (so it stops where the uninterrupted run stopped)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.config import TrainConfig
from tuneforge.train.early_stop import LoopState
from tuneforge.train.recipe import train

# lr 0.1 on the tiny model: val loss improves, stalls once (rate halved), improves again, then stalls for good
PLATEAU = dict(lr_scheduler_type="plateau", per_device_train_batch_size=4, eval_steps=2, learning_rate=0.1,
               early_stopping_patience=2,
               seed=3, val_split=0.25, max_seq_len=64, save_total_limit=50)


def _cfg(tiny_dir, tmp_path, out: str) -> TrainConfig:
    data = tmp_path / "d.jsonl"
    if not data.exists():
        write_jsonl(data, arithmetic_rows(64))
    return TrainConfig(base=str(tiny_dir), data=str(data), output=str(tmp_path / out), **PLATEAU)


def _rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def plateau_run(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plateau")
    return train(_cfg(tiny_dir, tmp, "ref"), progress=False), tmp


def test_a_plateau_stops_the_run_keeps_the_best_steps_exact_weights_and_says_why(plateau_run):
    run, _ = plateau_run
    info = json.loads((run / "run.json").read_text())
    evals = [r for r in _rows(run) if "val_loss" in r]
    assert info["stopped_early"] and info["steps"] < 72  # 6 epochs of 12 steps planned (epochs auto: a cap)
    best = info["best_step"]
    assert best < info["steps"] and [r["step"] for r in evals][-1] == info["steps"]
    assert min(evals, key=lambda r: (-r["val_exact_match"], r["val_loss"]))["step"] == best
    reason = info["stop_reason"]
    assert reason == (f"validation loss and exact match flat for 2 evaluations; best at step {best} of 72 planned "
                      "(6 epochs)")
    assert f"training stopped: {reason}" in (run / "README.md").read_text()
    # the adapter is byte-identical to the best step's checkpoint
    ckpt = load_file(run / "checkpoints" / f"step-{best}" / "trainable.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == len(ckpt)
    for name, t in ckpt.items():
        assert torch.equal(adapter[name.replace(".default", "")], t), name
    last = load_file(run / "checkpoints" / f"step-{info['steps'] - 2}" / "trainable.safetensors")
    assert any(not torch.equal(last[k], ckpt[k]) for k in ckpt)  # later weights differ: the choice mattered


def test_the_plateau_schedule_halves_the_rate_at_each_evaluation_without_progress(plateau_run):
    run, _ = plateau_run
    rows = _rows(run)
    lr = {r["step"]: r["lr"] for r in rows if "lr" in r}
    evals = [r for r in rows if "val_loss" in r]
    stalls = [r["step"] for prev, r in zip(evals, evals[1:]) if r["best_val_loss"] == prev["best_val_loss"]]
    assert stalls  # the scenario has at least one stall before the stop
    for s in stalls:
        if s + 1 in lr and s >= 6:  # past the 4-step warm-up
            assert lr[s + 1] == pytest.approx(lr[s] / 2)  # halved from the very next step


def test_a_run_killed_after_an_evaluation_resumes_with_the_same_patience_and_rate(plateau_run, tiny_dir):
    ref, tmp = plateau_run
    ref_info = json.loads((ref / "run.json").read_text())
    evals = [r for r in _rows(ref) if "val_loss" in r]
    # the first evaluation without progress that the run survived: patience 1 of 2 used there
    stall = next(r["step"] for prev, r in zip(evals, evals[1:]) if r["best_val_loss"] == prev["best_val_loss"])

    def crash(report):
        if report.step == stall + 1:
            raise KeyboardInterrupt  # dies mid-run: the last checkpoint is the one written at the evaluation
        return True

    cfg = _cfg(tiny_dir, tmp, "killed")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=crash)
    state = LoopState.from_json(json.loads((tmp / "killed" / "checkpoints" / f"step-{stall}" / "state.json")
                                           .read_text()))
    assert state.bad_evals == 1 and state.lr_scale == 0.5
    run = train(cfg, resume=True, progress=False)
    info = json.loads((run / "run.json").read_text())
    for k in ("steps", "best_step", "stop_reason", "stopped_early"):
        assert info[k] == ref_info[k], k
    assert [r["val_loss"] for r in _rows(run) if "val_loss" in r] == pytest.approx([r["val_loss"] for r in evals])


# --- the rules at their boundaries (pure) -------------------------------------------------------------------------

def test_progress_is_loss_or_metric_and_the_best_weights_are_by_metric_then_loss():
    from tuneforge.train.early_stop import IMPROVEMENT, after_evaluation

    s, hist = LoopState(), []

    def ev(loss, em, step):
        s.step = step
        return after_evaluation(s, loss, metric=em, patience=3, history=hist, decay=0.5)

    assert ev(2.0, 0.1, 5).improved and s.best_step == 5
    e = ev(2.2, 0.3, 10)  # loss worse, exact match better: progress, and these are the best weights
    assert e.improved and e.progress and s.best_step == 10 and s.best_val == 2.0 and s.lr_scale == 1.0
    e = ev(1.9, 0.2, 15)  # loss better, exact match worse: progress (patience resets), weights not the best
    assert e.progress and not e.improved and s.best_step == 10 and s.bad_evals == 0
    e = ev(2.1, 0.3, 20)  # same exact match, loss above the best step's 2.2 - noise? 2.1 < 2.2: better weights
    assert e.improved and s.best_step == 20 and not e.progress and s.bad_evals == 1 and s.lr_scale == 0.5
    e = ev(2.1 - IMPROVEMENT / 2, 0.3, 25)  # a tie within noise: neither progress nor better weights
    assert not e.improved and not e.progress and s.bad_evals == 2 and s.lr_scale == 0.25 and e.lr_changed
    e = ev(2.5, 0.25, 30)
    assert e.stop and s.stopped_early and s.best_step == 20


def test_without_a_metric_or_decay_the_rule_is_the_loss_alone():
    from tuneforge.train.early_stop import after_evaluation

    s = LoopState()
    for step, loss in enumerate([2.0, 1.5, 1.6], 1):
        s.step = step
        e = after_evaluation(s, loss, patience=2, history=[])
    assert s.best_step == 2 and s.bad_evals == 1 and s.lr_scale == 1.0 and not e.lr_changed and not e.stop


def test_stop_reason_names_what_stopped_the_run():
    from tuneforge.train.early_stop import stop_reason

    s = LoopState(step=180, best_step=140, stopped_early=True)
    assert stop_reason(s, total=300, patience=3, metric_name="exact match", planned="6 epochs") == \
        "validation loss and exact match flat for 3 evaluations; best at step 140 of 300 planned (6 epochs)"
    s = LoopState(step=300, best_step=290)
    assert stop_reason(s, total=300, patience=3, planned="max_steps 300") == \
        "reached the planned 300 steps (max_steps 300); best at step 290"
    assert stop_reason(LoopState(step=30), total=30, patience=0) == "reached the planned 30 steps"


def test_plateau_schedule_warms_up_then_follows_the_scale_and_linear_reaches_zero_at_the_total():
    from tuneforge.train.schedule import WARMUP_HORIZON_EPOCHS, lr_factor, make_scheduler, refresh, warmup_steps

    assert [lr_factor("plateau", k, 3, 100) for k in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor("plateau", 50, 3, 100, scale=0.25) == 0.25 and lr_factor("plateau", 99, 3, 100) == 1.0
    assert lr_factor("linear", 100, 0, 100) == 0.0 and lr_factor("linear", 0, 0, 100) == 1.0
    cfg = TrainConfig(lr_scheduler_type="plateau", warmup_ratio=0.1)
    # the warm-up counts against the first WARMUP_HORIZON_EPOCHS passes, not the whole cap
    assert warmup_steps(cfg, total=600, steps_per_epoch=20) == 6 == round(0.1 * WARMUP_HORIZON_EPOCHS * 20)
    assert warmup_steps(cfg, total=40, steps_per_epoch=20) == 4  # shorter than the horizon: of the total
    assert warmup_steps(TrainConfig(lr_scheduler_type="linear"), total=600, steps_per_epoch=20) == 60
    assert warmup_steps(TrainConfig(lr_scheduler_type="plateau", warmup_steps=7), 600, 20) == 7
    scale = [1.0]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, TrainConfig(lr_scheduler_type="plateau", warmup_steps=1), 50, 10,
                           scale=lambda: scale[0])
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == 1.0
    scale[0] = 0.5
    refresh(sched)  # applies from the very next step
    assert opt.param_groups[0]["lr"] == 0.5 and sched.get_last_lr() == [0.5]


def test_auto_picks_a_cap_and_cosine_only_when_validation_can_stop_the_run():
    from tuneforge.train import auto

    cfg = TrainConfig(method="lora")
    why = auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
    assert cfg.num_train_epochs == auto.CAP_EPOCHS and cfg.lr_scheduler_type == "cosine"
    assert "validation decides" in why["num_train_epochs"]
    cfg = TrainConfig(method="lora")  # no validation set: a fixed length, so a decay to it
    auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=0)
    assert cfg.num_train_epochs == auto.NO_VAL_EPOCHS and cfg.lr_scheduler_type == "linear"
    cfg = TrainConfig(method="lora", early_stopping_patience=0)
    auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
    assert cfg.num_train_epochs == auto.NO_VAL_EPOCHS and cfg.lr_scheduler_type == "linear"
    for explicit in ({"num_train_epochs": 3}, {"max_steps": 40}):  # the user fixed the length
        cfg = TrainConfig(method="lora", **explicit)
        auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
        assert cfg.lr_scheduler_type == "linear"
    for objective in ("dpo", "grpo"):  # they keep the schedule their no-flag results were measured on
        cfg = TrainConfig(method="lora", objective=objective)
        why = auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
        assert cfg.lr_scheduler_type == "plateau" and f"objective {objective}" in why["lr_scheduler_type"]
    cfg = TrainConfig(method="lora", lr_scheduler_type="plateau")
    assert "lr_scheduler_type" not in auto.resolve(cfg, n_train=180, n_params=135_000_000, n_val=20)
    assert cfg.lr_scheduler_type == "plateau"


@pytest.mark.parametrize("spe, every", [(1, 1), (4, 4), (5, 5), (20, 5), (21, 6), (100, 25)])
def test_eval_interval_is_a_quarter_epoch_but_not_under_five_steps_nor_over_an_epoch(spe, every):
    from tuneforge.train import auto

    assert auto.eval_interval(spe) == every


def test_an_exact_tie_keeps_the_later_weights_but_is_not_progress():
    from tuneforge.train.early_stop import after_evaluation

    s = LoopState()
    for step, loss in [(15, -0.167), (30, -0.167), (45, -0.167)]:  # GRPO: val_loss = -mean grader score
        s.step = step
        e = after_evaluation(s, loss, patience=3, history=[], decay=0.5)
    assert s.best_step == 45 and e.improved and not e.progress and s.bad_evals == 2
    s.step = 60
    e = after_evaluation(s, -0.167 + 1e-6, patience=3, history=[], decay=0.5)  # worse, however slightly: not kept
    assert not e.improved and s.best_step == 45 and e.stop
