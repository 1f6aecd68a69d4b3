"""Acceptance: a tiny trained run served on loopback, normal traffic drawn like its training data, then shifted
traffic (another topic, ten times longer), feedback on both. Then, as a user would, through the CLI:
- the request log holds every request with its status and a plausible latency;
- `monitor drift` finds no drift in the normal traffic (exit 0) and finds it in the shifted traffic (exit 1),
  on the input signals and on feedback;
- `monitor export-feedback` writes a file `data check` accepts, and `train --from` continues the adapter on it;
- the dashboard (live, on the server) and `monitor report` render the traffic in headless Chromium
  (DOM/SVG content and pixels), with screenshots kept as test artifacts.

The run: a tiny random model first fully fine-tuned to answer in the task's format (one letter, then stop),
then a LoRA run on top of it, which is what gets served, like a real tuned adapter.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import write_jsonl
from tests.monitor.conftest import monitored
from tuneforge.monitor import query

pytestmark = pytest.mark.cli
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                    reason="headless Chromium not installed (run scripts/install-chromium.sh); "
                                           "required in CI")
N_NORMAL = N_SHIFTED = 40

TOPICS = ["the history of the Roman aqueducts", "how to care for a sourdough starter in winter",
          "a week-long walking itinerary through Kyoto's temples", "why the sky looks blue at noon and red at dusk",
          "the rules of cricket explained to a baseball fan", "choosing running shoes for flat feet",
          "the plot of a mystery novel set on a Norwegian ferry", "budgeting tips for a first apartment"]


def parity_rows(n: int, seed: int) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = r.randint(0, 99), r.randint(0, 99)
        rows.append({"prompt": f"is {a} plus {b} even?", "completion": "Y" if (a + b) % 2 == 0 else "N"})
    return rows


def shifted_prompt(r: random.Random) -> str:
    topic = r.choice(TOPICS)
    return (f"Please write a thorough, friendly explanation of {topic}. Cover the background, three practical "
            f"examples, common mistakes people make, and end with a short summary of about {r.randint(50, 90)} "
            f"words. Keep the tone warm, Conversational and CLEAR (reference #{r.randint(1000, 9999)}).")


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def keep_artifact(path: Path, name: str, capsys) -> Path:
    """Copy a test artifact out of pytest's tmp dir to $TUNEFORGE_ARTIFACTS (default:
    $TMP/tuneforge-artifacts-<user>: one per user, so another user's earlier run cannot make it unwritable)
    and say where, in the test output even when output is captured."""
    default = Path(tempfile.gettempdir()) / f"tuneforge-artifacts-{getpass.getuser()}"
    dest_dir = Path(os.environ.get("TUNEFORGE_ARTIFACTS", default))
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / name
    shutil.copy(path, dest)
    with capsys.disabled():
        print(f"\nartifact: {dest}")
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    from tuneforge.config import TrainConfig
    from tuneforge.models.tiny import save_tiny
    from tuneforge.train.recipe import train

    d = tmp_path_factory.mktemp("acceptance")
    data = write_jsonl(d / "train.jsonl", parity_rows(200, seed=0))
    base = save_tiny(d / "tiny", seed=0)
    fmt = train(TrainConfig(base=str(base), data=str(data), output=str(d / "format"), method="full", max_steps=25,
                            learning_rate=1e-2, per_device_train_batch_size=16, val_split=0.05), progress=False)
    run = train(TrainConfig(base=str(fmt / "model"), data=str(data), output=str(d / "parity"), max_steps=15,
                            learning_rate=1e-2, per_device_train_batch_size=16, val_split=0.05), progress=False)
    return {"dir": d, "run": run, "data": data, "base": fmt / "model"}


@pytest.fixture(scope="module")
def production(trained) -> dict:
    """Serve the run, send normal traffic and feedback, check drift (CLI, server still up), send shifted
    traffic and feedback, shut down (which drains the request log), check drift on the shifted window."""
    d, run = trained["dir"], trained["run"]
    db_url = f"sqlite:///{d / 'monitor.db'}"
    sent: dict[str, dict] = {}
    errors = 0
    with monitored(run, db_url, response_cache_size=0) as (srv, mon):
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)

        def ask(prompt: str, phase: str) -> str:
            r = client.chat.completions.create(model="parity", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=8, temperature=0)
            sent[r.id] = {"phase": phase, "prompt": prompt, "answer": r.choices[0].message.content,
                          "finish_reason": r.choices[0].finish_reason, "usage": r.usage}
            return r.id

        def rate(rid: str, **body) -> None:
            resp = client.post("/feedback", body={"id": rid, **body}, cast_to=object)
            assert resp["completion_id"] == rid

        normal = [ask(row["prompt"], "normal") for row in parity_rows(N_NORMAL, seed=1)]
        expected = {row["prompt"]: row["completion"] for row in parity_rows(N_NORMAL, seed=1)}
        for i, rid in enumerate(normal[:20]):
            if i % 4 == 3:  # every fourth: a half-good answer with the right one given back
                rate(rid, score=0.5, correction=expected[sent[rid]["prompt"]], comment="should be this")
            else:
                rate(rid, thumbs="up")
        for model in ("no-such-model", "nor-this-one", "nope"):
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            errors += 1
        assert mon.log.flush(30)
        normal_drift = cli("monitor", "drift", "--run", str(run), "--db", db_url, "--json")

        time.sleep(0.01)
        split = time.time()
        r = random.Random(2)
        shifted = [ask(shifted_prompt(r), "shifted") for _ in range(N_SHIFTED)]
        for rid in shifted[:15]:
            rate(rid, thumbs="down", comment="off topic")
    shifted_drift = cli("monitor", "drift", "--run", str(run), "--db", db_url, "--since", str(split), "--json")
    return {"db_url": db_url, "engine": mon.engine, "sent": sent, "errors": errors, "split": split,
            "normal_drift": normal_drift, "shifted_drift": shifted_drift, **trained}


def test_the_request_log_holds_every_request_with_status_and_plausible_latency(production):
    rows = query.requests(production["engine"])
    sent = production["sent"]
    assert len(rows) == len(sent) + production["errors"] == N_NORMAL + N_SHIFTED + 3
    by_id = {r["id"]: r for r in rows}
    for rid, s in sent.items():
        row = by_id[rid]
        assert row["status"] == 200 and row["model"] == "parity" and row["error"] is None
        assert 0 < row["latency_s"] < 30 and row["queue_time_s"] is not None  # seconds, measured on the server
        if row["completion_tokens"]:  # an answer that is only the end-of-turn token has no first token
            assert row["queue_time_s"] <= row["ttft_s"] <= row["latency_s"]
        assert (row["prompt_tokens"], row["completion_tokens"]) == (s["usage"].prompt_tokens,
                                                                    s["usage"].completion_tokens)
        assert json.loads(row["prompt"]) == [{"role": "user", "content": s["prompt"]}]
        assert row["completion"] == s["answer"] and row["finish_reason"] == s["finish_reason"]
    failed = [r for r in rows if r["id"] not in sent]
    assert sorted(r["status"] for r in failed) == [404] * 3 and all(r["error_type"] == "not_found_error"
                                                                     for r in failed)
    # the run learned its answer format: one letter, then the end-of-turn token
    normal = [s for s in sent.values() if s["phase"] == "normal"]
    assert all(s["answer"] in ("Y", "N") and s["finish_reason"] == "stop" for s in normal)
    assert len(query.feedback(production["engine"])) == 35


def test_normal_traffic_is_not_drift(production):
    res = production["normal_drift"]
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    signals = {s["name"]: s for s in report["signals"]}
    assert report["drift"] is False and report["n_requests"] == N_NORMAL and report["model"] == "parity"
    for name in ("prompt_length", "new_token_rate", "prompt_embedding", "completion_length", "empty_or_truncated",
                 "feedback_score"):
        assert signals[name]["verdict"] == "ok", signals[name]  # every signal was computed, none fired
    assert signals["new_token_rate"]["statistic"] == 0.0


def test_shifted_traffic_is_drift_on_the_input_signals_and_feedback(production):
    res = production["shifted_drift"]
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    signals = {s["name"]: s for s in report["signals"]}
    assert report["drift"] is True and report["n_requests"] == N_SHIFTED
    for name in ("prompt_length", "new_token_rate", "prompt_embedding", "feedback_score"):
        assert signals[name]["verdict"] == "DRIFT", signals[name]
    assert signals["prompt_length"]["p_value"] < 0.01 and signals["prompt_length"]["statistic"] > 0.2
    assert signals["prompt_embedding"]["p_value"] < 0.01
    assert signals["feedback_score"]["detail"]["n_current"] == 15


def test_the_drift_command_prints_verdicts_against_stated_thresholds(production):
    res = cli("monitor", "drift", "--run", str(production["run"]), "--db", production["db_url"], "--since",
              str(production["split"]), "--no-embeddings")
    assert res.returncode == 1
    out = res.stdout
    assert "KS p < 0.01 and PSI > 0.2" in out and "MMD permutation p < 0.01" in out and "DRIFT FOUND" in out
    assert "skipped (--no-embeddings)" in out
    bad = cli("monitor", "drift", "--run", str(production["run"]), "--db", production["db_url"], "--model", "x")
    assert bad.returncode == 2 and "no answered requests for model 'x'" in bad.stderr and "parity" in bad.stderr


def test_feedback_export_passes_data_check_and_train_from_continues_the_adapter(production, tmp_path):
    out = tmp_path / "feedback.jsonl"
    res = cli("monitor", "export-feedback", "--db", production["db_url"], "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "wrote 20 training rows" in res.stdout and "5 corrected" in res.stdout and "15 well-rated" in res.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    sent = production["sent"]
    for row in rows:
        meta = row["metadata"]
        assert meta["source"] == "tuneforge-feedback" and sent[meta["request_id"]]["phase"] == "normal"
        user, answer = row["messages"][0]["content"], row["messages"][-1]["content"]
        assert user == sent[meta["request_id"]]["prompt"]
        if meta["corrected"]:
            assert answer == dict((r["prompt"], r["completion"]) for r in parity_rows(N_NORMAL, seed=1))[user]
        else:
            assert answer == sent[meta["request_id"]]["answer"] and meta["score"] == 1.0
    check = cli("data", "check", str(out), "--base", str(production["base"]), "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] is True

    run, child = production["run"], tmp_path / "parity-2"
    res = cli("train", "--from", str(run), "--data", str(out), "--output", str(child), "--max_steps", "2",
              "--learning_rate", "1e-7", "--val_split", "0", "--logging_steps", "1", "--no-progress")
    assert res.returncode == 0, res.stderr
    shown = json.loads(cli("runs", "show", str(child)).stdout)
    assert shown["parent"] == str(run.resolve()) and shown["config"]["base"] == str(production["base"])
    from safetensors.torch import load_file

    parent_w = load_file(run / "adapter" / "adapter_model.safetensors")
    child_w = load_file(child / "adapter" / "adapter_model.safetensors")
    lora_b = [k for k in parent_w if "lora_B" in k]
    assert lora_b and all(float(parent_w[k].abs().max()) > 0 for k in lora_b)  # a fresh adapter's B is zero
    assert all(float((parent_w[k] - child_w[k]).abs().max()) < 1e-4 for k in parent_w)  # it went on from there


def dump_dom(url: str, profile: Path) -> str:
    res = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return res.stdout


def screenshot(url: str, shot: Path, profile: Path) -> Path:
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                    f"--screenshot={shot}", "--window-size=1280,1700", url], check=True, capture_output=True,
                   timeout=120)
    return shot


def check_rendered(dom: str, production) -> None:
    """The charts in the DOM hold the traffic that was sent."""
    import re

    n = N_NORMAL + N_SHIFTED + 3
    assert f'data-rendered="{n}"' in dom
    for chart in ("latency", "errors", "requests", "models", "tokens", "feedback", "feedbackCounts", "drift"):
        assert f'data-chart="{chart}"' in dom, chart
    assert re.search(r'<rect [^>]*data-series="requests" data-category="parity" data-value="80"', dom)
    assert re.search(r'<rect [^>]*data-series="requests" data-category="no-such-model" data-value="1"', dom)
    counts = dict(re.findall(r'data-category="(thumbs up|thumbs down|with correction)" data-value="(\d+)"', dom))
    assert counts == {"thumbs up": "15", "thumbs down": "15", "with correction": "5"}
    points = re.findall(r'<path [^>]*data-series="p50" data-points="(\d+)"', dom)
    assert points and int(points[0]) >= 1
    requests_bars = sum(int(v) for v in re.findall(r'<rect [^>]*fill="#2ca02c" data-value="(\d+)"', dom))
    assert requests_bars == n  # requests over time add up to every request sent
    verdicts = re.findall(r'data-signal="prompt_length" data-verdict="(\w+|n/a)"', dom)
    assert verdicts[-1] == "DRIFT" and "ok" in verdicts  # the normal check, then the shifted ones


def colour_pixels(png: Path, hex_color: str, tol: int = 30) -> int:
    from PIL import Image

    want = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return sum(1 for px in Image.open(png).convert("RGB").getdata() if all(abs(a - b) <= tol
                                                                            for a, b in zip(px, want)))


@needs_chromium
def test_the_monitor_report_renders_the_traffic_in_chromium(production, tmp_path, capsys):
    out = tmp_path / "report.html"
    res = cli("monitor", "report", "--db", production["db_url"], "--output", str(out))
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    import re

    assert not re.search(r'(src|href)=', html) and "<link" not in html  # nothing loaded from elsewhere
    assert "://" not in html.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
    check_rendered(dump_dom(out.as_uri(), tmp_path / "p1"), production)
    shot = screenshot(out.as_uri(), tmp_path / "report.png", tmp_path / "p2")
    keep_artifact(shot, "monitor-report.png", capsys)
    assert colour_pixels(shot, "#17becf") > 2000  # the requests-per-model bars
    assert colour_pixels(shot, "#1f77b4") > 50  # the p50 latency line
    assert colour_pixels(shot, "#d62728") > 500  # red drift cells (and the p99 line)


@needs_chromium
def test_the_live_dashboard_renders_the_traffic_in_chromium(production, tmp_path, capsys):
    with monitored(production["run"], production["db_url"]) as (srv, _):
        url = srv.url + "/dashboard"
        dom = dump_dom(url, tmp_path / "p1")
        shot = screenshot(url, tmp_path / "dashboard.png", tmp_path / "p2")
    check_rendered(dom, production)
    keep_artifact(shot, "monitor-dashboard.png", capsys)
    assert colour_pixels(shot, "#17becf") > 2000 and colour_pixels(shot, "#2ca02c") > 500


def test_the_server_checks_drift_on_a_schedule_and_exports_gauges(production):
    import httpx

    from tuneforge.monitor.attach import MonitorSettings

    settings = MonitorSettings(drift_run=str(production["run"]), drift_interval_s=0.5)
    with monitored(production["run"], production["db_url"], settings=settings) as (srv, mon):
        deadline = time.monotonic() + 120
        while mon.drift.last_report is None and time.monotonic() < deadline:
            time.sleep(0.2)
        report = mon.drift.last_report
        assert report is not None, mon.drift.last_error
        metrics = httpx.get(srv.url + "/metrics").text
    # the last 24 h hold the normal and the shifted traffic: the long prompts show
    assert report.n_requests == N_NORMAL + N_SHIFTED and report.drift
    gauges = {line.split("{")[0] + line[line.index("{"):line.index("}") + 1]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines() if line.startswith("tuneforge_drift_") and "{" in line}
    for s in report.signals:
        assert gauges[f'tuneforge_drift_detected{{signal="{s.name}"}}'] in ((-1.0,) if s.drift is None else
                                                                             (float(s.drift),))
    assert gauges['tuneforge_drift_detected{signal="prompt_length"}'] == 1.0
    assert any(line.startswith("tuneforge_drift_last_check_timestamp_seconds ") for line in metrics.splitlines())


def test_tuneforge_serve_writes_every_request_before_it_exits_on_sigterm(trained, tmp_path):
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tuneforge.db import connect
    from tuneforge.serve.server import free_port

    port, db_url = free_port(), f"sqlite:///{tmp_path / 'serve.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "serve", str(trained["run"]), "--port", str(port),
                             "--db", db_url, "--log-content", "hash"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        prompts = [row["prompt"] for row in parity_rows(24, seed=5)]

        def ask(p: str) -> str:
            r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "model": "parity", "max_tokens": 4, "messages": [{"role": "user", "content": p}]})
            return r.json()["id"]

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(ask, prompts))
        proc.send_signal(signal.SIGTERM)  # at once: rows may still be on the writer's queue
        # uvicorn shuts down gracefully (lifespan included), then re-raises SIGTERM: the default exit status
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = query.requests(connect(db_url))
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["content"] == "hash" and r["prompt"] is None and r["prompt_sha256"] for r in rows)
