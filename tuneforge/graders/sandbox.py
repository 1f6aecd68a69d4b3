"""Python graders in a separate process with a wall-clock limit per sample.

`PythonSandbox(source)` starts `_worker.py` with `python -I` (no PYTHON* variables, no user site, a temporary
working directory) and keeps it for many samples, so the source is compiled once. A grade that raises, returns a
non-number, or runs past `timeout` scores 0 and is reported back, never raised: on a timeout the process is killed
and a fresh one is started for the next sample. The process's address space is capped (`memory_mb`, OpenAI
allows 2 GB; we default to 4 GB because numpy/scipy imports reserve much virtual memory). It is not a security
sandbox against hostile code: it protects the caller (training, the server) from crashes, hangs and memory
blow-ups of the user's own grader.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

WORKER = Path(__file__).with_name("_worker.py")
DEFAULT_TIMEOUT = 10.0  # seconds per sample (OpenAI: 2 minutes for a whole grading call); env overrides it
TIMEOUT_ENV = "TUNEFORGE_GRADER_TIMEOUT"
START_TIMEOUT = 60.0  # compiling the source and its imports


@dataclass
class Outcome:
    score: float
    error: str | None = None  # "runtime" (raised / bad value), "timeout", "server" (the process died)
    details: str | None = None


class SandboxError(ValueError):
    """The source does not compile or defines no usable grade(sample, item) (a validation error)."""


class PythonSandbox:
    def __init__(self, source: str, *, timeout: float | None = None, memory_mb: int = 4096):
        """`timeout`: seconds per sample; default $TUNEFORGE_GRADER_TIMEOUT, else DEFAULT_TIMEOUT."""
        if timeout is None:
            timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
        self.source, self.timeout, self.memory_mb = source, timeout, memory_mb
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()
        self.counts = {"runtime": 0, "timeout": 0, "server": 0}
        self._cwd = tempfile.TemporaryDirectory(prefix="tuneforge-grader-")
        self._lock = threading.Lock()
        try:
            self._start()
        except SandboxError:
            self._cwd.cleanup()
            raise

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=self._cwd.name, bufsize=1)
        self.lines = queue.Queue()
        self._pumping = threading.Thread(target=self._pump, args=(self.proc, self.lines), daemon=True)
        self._pumping.start()
        self.proc.stdin.write(json.dumps({"source": self.source, "memory_mb": self.memory_mb}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(START_TIMEOUT)
        if reply is None or "error" in reply:
            self._kill()
            why = "did not start in time" if reply is None else reply["error"]
            raise SandboxError(f"python grader: {why}")

    @staticmethod
    def _pump(proc: subprocess.Popen, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # EOF: the process ended

    def _read(self, timeout: float) -> dict | None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        return json.loads(line) if line is not None else {"error": "the grader process exited", "dead": True}

    def _restart(self) -> None:
        self._kill()
        try:
            self._start()
        except SandboxError:  # e.g. a slow machine: the next grade() tries again
            self.proc = None

    def grade(self, sample: dict, item: dict) -> Outcome:
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            try:
                self.proc.stdin.write(json.dumps({"sample": sample, "item": item}, default=str) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.counts["server"] += 1
                self._restart()
                return Outcome(0.0, "server", "the grader process had exited")
            reply = self._read(self.timeout)
            if reply is None:
                self.counts["timeout"] += 1
                self._restart()
                return Outcome(0.0, "timeout", f"grade did not return within {self.timeout:g} s")
            if reply.get("dead"):
                self.counts["server"] += 1
                self._restart()
                return Outcome(0.0, "server", "the grader process died (out of memory, os._exit...)")
            if "error" in reply:
                self.counts["runtime"] += 1
                return Outcome(0.0, "runtime", reply["error"])
            return Outcome(float(reply["score"]))

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self._pumping.join(timeout=5)  # it reads stdout until EOF: closing it under the reader would race
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            self.proc = None

    def close(self) -> None:
        self._kill()
        self._cwd.cleanup()

    def __del__(self):  # a grader dropped without close() must not leave a process behind
        try:
            if sys.is_finalizing():
                # Interpreter shutdown: the daemon pump thread is frozen, possibly inside a read holding the
                # pipe's lock, and touching the pipe then aborts the interpreter ("Fatal Python error:
                # _enter_buffered_busy"). Stop the process only; the OS closes the pipes.
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                return
            self._kill()
        except Exception:  # noqa: BLE001
            pass
