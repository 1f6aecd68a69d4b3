"""The jobs worker: claims fine-tuning jobs one at a time and trains each with tuneforge's own recipe.

Run `tuneforge jobs worker --db URL` (any number of them on one database: a claim is an atomic UPDATE, so no two
take the same job), or let `tuneforge serve` run one in a thread (its default). A job trains through
`tuneforge.train.recipe.train` into an ordinary run directory, `runs/<job id>/` beside the database, so
`tuneforge runs list`, `eval` and `export` work on it.

While a job trains the worker
- renews its lease from a heartbeat thread every lease/3 seconds; if the worker is killed, the lease runs out and
  the next claim (this worker restarted, or another) takes the job over and resumes it from its last checkpoint;
- after every optimizer step (train's `on_step`) writes metrics events and checkpoint objects, updates
  `estimated_finish`, and reads the job's row: cancelled or paused (or this worker shutting down) stops training
  between steps with a checkpoint saved; a job that another worker has taken over stops at once, writing nothing.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tuneforge.errors import ConfigError, DataError, ModelError, TuneforgeError
from tuneforge.jobs import recipe
from tuneforge.jobs.files import FileStore
from tuneforge.jobs.store import PAUSED, RUNNING, JobRow, Store

if TYPE_CHECKING:
    from tuneforge.train.recipe import StepReport

log = logging.getLogger("tuneforge.jobs")

DEFAULT_LEASE_SECONDS = 60.0  # a worker silent this long is presumed dead; its job is taken over
PROGRESS_EVERY_S = 2.0  # estimated_finish is written at most this often


class LeaseLost(Exception):
    """Another worker holds the job now (this one stalled past its lease): stop without writing to the run."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _Lease:
    """Renews the job's lease in the background; `lost` is set when the job turns out to be someone else's."""

    def __init__(self, store: Store, job_id: str, worker: str, lease_seconds: float):
        self.store, self.job_id, self.worker, self.lease_seconds = store, job_id, worker, lease_seconds
        self.lost, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.lease_seconds / 3):
            try:
                if not self.store.heartbeat(self.job_id, self.worker, self.lease_seconds):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again at the next beat
                log.exception("heartbeat failed")

    def __enter__(self) -> "_Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)


RL_METRICS = ("reward", "reward_std", "kl", "completion_length", "zero_std_groups", "grader_errors")
DPO_METRICS = ("reward_margin", "accuracy", "chosen_reward", "rejected_reward", "logp_chosen", "logp_rejected")


class _Reporter:
    """train's on_step for one job: events, checkpoint objects, estimated_finish, and the stop decision."""

    def __init__(self, worker: "Worker", job: JobRow, lease: _Lease, model_name: str):
        self.w, self.job, self.lease, self.model_name = worker, job, lease, model_name
        self.latest: dict = {}  # step, train_loss, valid_loss as last logged
        self.recorded = worker.store.checkpoint_steps(job.id)
        self.first: tuple[int, float] | None = None  # (step, wall time) of this process's first report
        self.last_progress = 0.0

    def on_step(self, r: "StepReport") -> bool:
        store, job = self.w.store, self.job
        if self.lease.lost.is_set():  # the heartbeat found the job in another worker's hands
            raise LeaseLost(job.id)
        if r.logged:
            self._metrics_event(r)
        if r.checkpoint is not None:
            self.checkpoint(r.step)
        self._progress(r)
        status, holder = store.control(job.id)
        if holder != self.w.id:
            raise LeaseLost(job.id)
        return status == RUNNING and not self.w.stopping.is_set()

    def _metrics_event(self, r: "StepReport") -> None:
        data = {"step": r.step, "total_steps": r.total, "trained_tokens": r.tokens}
        for row in r.logged:
            if "loss" in row:
                data.update(train_loss=row["loss"], learning_rate=row.get("lr"), epoch=row.get("epoch"),
                            tokens_per_s=row.get("tokens_per_s"))
                data.update({k: row[k] for k in DPO_METRICS if k in row})  # a dpo job's preference metrics
                data.update({k: row[k] for k in RL_METRICS if k in row})  # a reinforcement job's (grpo)
            if "val_loss" in row:
                data.update(valid_loss=row["val_loss"], full_valid_loss=row["val_loss"])
                data.update({k: row[k] for k in ("val_accuracy", "val_reward_margin", "val_reward") if k in row})
        self.latest.update({k: data[k] for k in ("train_loss", "valid_loss", "full_valid_loss") if k in data})
        parts = [f"{name}={data[key]:.4f}" for key, name in (("train_loss", "training loss"),
                                                             ("valid_loss", "validation loss"),
                                                             ("reward_margin", "reward margin"),
                                                             ("accuracy", "preference accuracy"),
                                                             ("val_accuracy", "validation preference accuracy"),
                                                             ("reward", "mean reward"),
                                                             ("val_reward", "validation reward"))
                 if key in data]
        self.w.store.add_event(self.job.id, f"Step {r.step}/{r.total}: " + ", ".join(parts), type="metrics",
                               data=data)

    def checkpoint(self, step: int) -> None:
        """One checkpoint object per saved step (a resumed run re-saving a step does not add a second)."""
        if step in self.recorded:
            return
        self.recorded.add(step)
        metrics = {"step": float(step), **self.latest}
        self.w.store.add_checkpoint(self.job.id, step, metrics, recipe.checkpoint_model_name(self.model_name, step))
        self.w.store.add_event(self.job.id, f"Checkpoint created at step {step}")

    def _progress(self, r: "StepReport") -> None:
        """estimated_finish from this process's own step rate (the first step: the run's average so far)."""
        now = time.time()
        if self.first is None:
            self.first = (r.step, now)
        if now - self.last_progress < PROGRESS_EVERY_S and r.step < r.total:
            return
        self.last_progress = now
        step0, t0 = self.first
        per_step = (now - t0) / (r.step - step0) if r.step > step0 else r.elapsed / max(r.step, 1)
        self.w.store.update_running(self.job.id, self.w.id,
                                    estimated_finish=int(now + per_step * (r.total - r.step)))


class Worker:
    """Claims and trains jobs from `store` until `stopping` is set. before_success(job, fine_tuned_model,
    adapter_dir) runs when training has finished, just before the job is marked succeeded (the server's
    in-process worker serves the new model there, so a client never sees `succeeded` before it can use it)."""

    def __init__(self, store: Store, *, lease_seconds: float = DEFAULT_LEASE_SECONDS, poll_interval: float = 1.0,
                 before_success: Callable[[JobRow, str, Path], None] | None = None, name: str | None = None):
        self.store, self.lease_seconds, self.poll_interval = store, lease_seconds, poll_interval
        self.before_success = before_success
        self.id = name or worker_id()
        self.files = FileStore(store.root)
        self.runs = store.root / "runs"
        self.stopping = threading.Event()  # set: finish the current step, checkpoint, re-queue the job, exit
        self.wake = threading.Event()  # set: look for a job now (a job was just queued)

    def run(self) -> None:
        log.info("worker %s on %s", self.id, self.store.url)
        while not self.stopping.is_set():
            try:
                found = self.run_once()
            except Exception:  # noqa: BLE001 - the database is unreachable: keep trying, do not die
                log.exception("worker %s: claiming a job failed", self.id)
                found = False
            if not found:
                self.wake.wait(self.poll_interval)
                self.wake.clear()

    def run_once(self) -> bool:
        """Claim one job and train it; False when there was nothing to claim."""
        job = self.store.claim_next(self.id, self.lease_seconds)
        if job is None:
            return False
        with _Lease(self.store, job.id, self.id, self.lease_seconds) as lease:
            try:
                self._train(job, lease)
            except Exception as e:  # noqa: BLE001 - a bug here must fail the job, not re-run it forever
                log.exception("job %s", job.id)
                self.store.fail(job.id, "server_error", f"{type(e).__name__}: {e}", worker_id=self.id)
            finally:
                gc.collect()
                from tuneforge.memory import release_freed

                release_freed()
        return True

    # --- one job ---
    def _paths(self, job: JobRow) -> tuple[Path, Path | None, Path]:
        data = self.files.path(job.training_file)
        val = self.files.path(job.validation_file) if job.validation_file else None
        for path, param in ((data, "training_file"), (val, "validation_file")):
            if path is not None and not path.is_file():
                raise DataError(f"{getattr(job, param)} is no longer stored (deleted?)", path=str(path),
                                code="file_not_found")
        return data, val, self.runs / job.id

    def _config(self, job: JobRow):
        """(config, resume?, resolved hyperparameters): a run directory with config.yaml is resumed as saved."""
        from tuneforge.train.recipe import resume_config

        data, val, out = self._paths(job)
        if (out / "config.yaml").is_file():
            return resume_config(out), True, job.hyperparameters
        if out.exists():
            shutil.rmtree(out)  # created but nothing saved yet: start over
        hp = recipe.resolve_hyperparameters(job.hyperparameters, job.n_examples or 0)
        cfg = recipe.train_config(base=job.base, data=data, val_data=val, output=out, seed=job.seed,
                                  hyperparameters=hp, options=job.options)
        return cfg, False, hp

    def _train(self, job: JobRow, lease: _Lease) -> None:
        from tuneforge.finish import finish_run
        from tuneforge.run import read_json
        from tuneforge.train.recipe import Stopped, train

        store = self.store
        model_name = recipe.fine_tuned_model_name(job.model, job.suffix, job.id)
        rep = _Reporter(self, job, lease, model_name)
        try:
            cfg, resume, hp = self._config(job)
            store.update_running(job.id, self.id, hyperparameters=hp, run_dir=str(cfg.output))
            if resume:
                store.add_event(job.id, f"Fine-tuning job resumed by {self.id} from its last checkpoint")
            else:
                store.add_event(job.id, f"Fine-tuning job started by {self.id}: {cfg.method} on {job.model}, "
                                f"{hp['n_epochs']} epoch(s), batch size {hp['batch_size']}, "
                                f"learning rate auto x{cfg.learning_rate_multiplier:g}", data={"run_dir": str(cfg.output)})
            out = train(cfg, resume=resume, progress=False, on_step=rep.on_step)
        except Stopped as stop:
            rep.checkpoint(stop.step)
            status, _ = store.control(job.id)
            requeue = status == RUNNING  # this worker is shutting down: another (or a restart) continues it
            store.release(job.id, self.id, requeue=requeue)
            what = "re-queued (worker shutting down)" if requeue else "paused" if status == PAUSED else status
            store.add_event(job.id, f"Training stopped at step {stop.step}, checkpoint saved; job {what}")
            return
        except LeaseLost:
            log.warning("worker %s: job %s was taken over by another worker; stopping", self.id, job.id)
            store.add_event(job.id, f"{self.id} lost the job to another worker and stopped", level="warn")
            return
        except TuneforgeError as e:
            store.fail(job.id, *self._error(job, e), worker_id=self.id)
            return
        except Exception as e:  # noqa: BLE001 - a bug or out of memory: the job fails with the reason
            log.exception("job %s failed", job.id)
            store.fail(job.id, "training_error", f"{type(e).__name__}: {e}", worker_id=self.id)
            return
        info = read_json(out / "run.json")
        try:
            finish_run(out)  # report.html, model card, estimate: as a run trained by the CLI
        except Exception:  # noqa: BLE001 - the weights are trained and saved; a report failure must not fail the job
            log.exception("finishing run %s (report) failed", out)
        rep.checkpoint(int(info["steps"]))
        if self.before_success is not None:
            try:
                self.before_success(job, model_name, out / "adapter")
            except Exception:  # noqa: BLE001 - serving it is the server's business; the training did succeed
                log.exception("serving %s failed", model_name)
        if store.succeed(job.id, self.id, fine_tuned_model=model_name, trained_tokens=int(info["train_tokens"])):
            store.add_event(job.id, f"New fine-tuned model created: {model_name}")
            store.add_event(job.id, "The job has successfully completed")
        else:
            store.release(job.id, self.id)
            store.add_event(job.id, f"Training finished, but the job was {store.control(job.id)[0]} meanwhile")

    def _error(self, job: JobRow, e: TuneforgeError) -> tuple[str, str, str | None]:
        """(code, message, param) of a failed job, with stored paths shown as the client's file ids."""
        msg = str(e)
        for fid in filter(None, (job.training_file, job.validation_file)):
            msg = msg.replace(str(self.files.path(fid)), fid)
        if isinstance(e, DataError):
            val = job.validation_file and e.path == str(self.files.path(job.validation_file))
            return e.code, msg, "validation_file" if val else "training_file"
        if isinstance(e, ModelError):
            return "model_error", msg, "model"
        if isinstance(e, ConfigError):
            return "invalid_hyperparameters", msg, "tuneforge"
        return "training_error", msg, None


def run_worker(db_url: str | None = None, *, lease_seconds: float = DEFAULT_LEASE_SECONDS, poll_interval: float = 1.0) -> None:
    """`tuneforge jobs worker`: run until SIGINT/SIGTERM. The first signal stops the current job at its next step
    (checkpointed, re-queued for any worker); a second one quits at once (the lease then runs out)."""
    import signal
    import sys

    from sqlalchemy.engine import make_url

    from tuneforge.db import default_db_url

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="tuneforge: %(message)s", stream=sys.stderr)
    store = Store(db_url or default_db_url())
    w = Worker(store, lease_seconds=lease_seconds, poll_interval=poll_interval)

    def on_signal(signum, frame):
        if w.stopping.is_set():
            raise KeyboardInterrupt
        print("tuneforge: stopping after the current step (signal again to quit now)", file=sys.stderr)
        w.stopping.set()
        w.wake.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"tuneforge: worker {w.id} on {make_url(store.url).render_as_string(hide_password=True)}, "
          f"runs in {w.runs}", file=sys.stderr)
    w.run()
