"""The python grader's process (run as a script by `sandbox.PythonSandbox`; imports nothing from tuneforge).

Protocol, one JSON object per line: the first line in is {"source", "memory_mb"}; the answer is {"ok": true} or
{"error": ...}. Then each {"sample", "item"} in gets {"score": float} or {"error": ..., "kind": ...} out. The user's
code sees a stdout that goes to stderr, so a print cannot corrupt the protocol.
"""

import inspect
import json
import math
import os
import sys
import traceback


def _limit_memory(mb: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mb * 1024 * 1024, mb * 1024 * 1024))
    except (ImportError, ValueError, OSError):
        pass


def _short(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    user = [f for f in tb if f.filename == "<grader>"]
    at = f" (line {user[-1].lineno})" if user else ""
    return f"{type(e).__name__}: {e}{at}"[:500]


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr
    setup = json.loads(sys.stdin.readline())
    _limit_memory(int(setup.get("memory_mb") or 0) or 4096)
    env: dict = {"__name__": "grader"}
    try:
        exec(compile(setup["source"], "<grader>", "exec"), env)
        fn = env.get("grade")
        if not callable(fn):
            raise TypeError("the source defines no function grade(sample, item)")
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(params) != 2:
            raise TypeError(f"grade must take exactly two arguments (sample, item), takes {len(params)}")
    except BaseException as e:  # noqa: BLE001 - reported to the parent, never raised
        out.write(json.dumps({"error": _short(e)}) + "\n")
        return
    out.write(json.dumps({"ok": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        try:
            value = fn(req["sample"], req["item"])
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"grade returned {type(value).__name__}, not a float")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"grade returned {value}")
            out.write(json.dumps({"score": value}) + "\n")
        except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt in user code score 0 too
            out.write(json.dumps({"error": _short(e)}) + "\n")


if __name__ == "__main__":
    main()
