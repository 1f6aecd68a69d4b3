"""The studio in real headless Chromium (Selenium driving Debian's chromium + chromedriver) on a tiny model:
a broken upload shows its line, a good one gets a verdict and a cost, a job with a changed learning rate reaches
`succeeded` with its loss curve drawn, the result chats, evaluates and exports to GGUF with verify passing.
Error paths: a wrong API key, a job that fails on bad data, a server that goes away mid-job and comes back.
Screenshots of each page are kept as test artifacts (the directory the other browser tests use)."""

from __future__ import annotations

import getpass
import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.studio.conftest import KEY, api, chat_rows, jsonl_bytes, poll, studio_server, upload

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) and not os.environ.get("CI"),
    reason="headless Chromium + chromedriver not installed (scripts/install-chromium.sh); required in CI")
STEPS = {"max_steps": "6", "save_steps": "2", "eval_steps": "2", "max_seq_len": "64", "early_stopping_patience": "0"}


def artifacts_dir() -> Path:
    """$TUNEFORGE_ARTIFACTS, else $TMP/tuneforge-artifacts-<user> (as tests/monitor and tests/eval)."""
    default = Path(tempfile.gettempdir()) / f"tuneforge-artifacts-{getpass.getuser()}"
    d = Path(os.environ.get("TUNEFORGE_ARTIFACTS", default))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    drv.set_window_size(1280, 800)
    yield drv
    drv.quit()


def wait(drv, fn, timeout: float = 120, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.2).until(lambda d: fn(d))
    except Exception:
        shot = artifacts_dir() / f"studio-failure-{int(time.time())}.png"
        drv.save_screenshot(str(shot))
        raise AssertionError(f"timed out waiting for {what or fn}; screenshot {shot}; "
                             f"page errors: {[e.text for e in drv.find_elements('css selector', '.err') if e.text]}")


def text(drv, id_: str) -> str:
    els = drv.find_elements("id", id_)
    return els[0].text if els else ""


def shot(drv, name: str, capsys) -> Path:
    dest = artifacts_dir() / f"studio-{name}.png"
    drv.save_screenshot(str(dest))
    with capsys.disabled():
        print(f"\nartifact: {dest}")
    return dest


def go(drv, page: str) -> None:
    drv.find_element("css selector", f'nav button[data-page="{page}"]').click()


def set_key(drv, value: str) -> None:
    box = drv.find_element("id", "key")
    box.clear()
    box.send_keys(value)
    drv.find_element("id", "keysave").click()


def set_field(drv, id_: str, value: str) -> None:
    el = drv.find_element("id", id_)
    el.clear()
    el.send_keys(value)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("studio-files")
    broken = chat_rows(24)
    broken[2] = '{"messages": [{"role": "user", "content": "add 2 and 3"}'  # line 3: cut-off JSON
    out = {"broken": d / "broken.jsonl", "good": d / "good.jsonl", "few": d / "few.jsonl"}
    out["broken"].write_bytes(jsonl_bytes(broken))
    out["good"].write_bytes(jsonl_bytes(chat_rows(24)))
    out["few"].write_bytes(jsonl_bytes(chat_rows(5)))
    return out


@needs_chromium
def test_the_whole_path_in_the_browser(studio_base, files, browser, tmp_path, capsys):
    drv = browser
    with studio_server(studio_base, tmp_path / "srv") as (srv, _):
        drv.get(srv.url + "/studio")
        # a wrong key: the page says so next to the key box
        set_key(drv, "sk-wrong")
        wait(drv, lambda d: "Wrong or missing API key" in text(d, "key-err"), 30, "the wrong-key message")
        shot(drv, "wrong-key", capsys)
        set_key(drv, KEY)
        wait(drv, lambda d: not text(d, "key-err"), 30, "the key accepted")

        # 1. Data: a broken file shows its line; a good one gets the verdict and the cost
        drv.find_element("id", "file").send_keys(str(files["broken"]))
        wait(drv, lambda d: "line 3" in text(d, "check-errors"), 60, "the broken line")
        assert "broken.jsonl:3" in text(drv, "check-errors")
        shot(drv, "data-error", capsys)
        drv.find_element("id", "file").send_keys(str(files["good"]))
        wait(drv, lambda d: text(d, "verdict") in ("go", "no-go", "maybe"), 60, "the advisor's verdict")
        assert "passes the checks" in text(drv, "check")
        drv.find_element("id", "cost-btn").click()
        wait(drv, lambda d: "train_seconds" in text(d, "cost-table"), 120, "the cost estimate")
        shot(drv, "data", capsys)

        # 2. Train: prefilled with reasons; validation as you type; launch with a changed learning rate
        drv.find_element("id", "to-train").click()
        wait(drv, lambda d: d.find_elements("id", "f-learning_rate"), 60, "the prefilled form")
        assert drv.find_element("id", "f-learning_rate").get_attribute("value") == "0.002"
        assert "learning_rate 0.002 (auto)" in text(drv, "train-main")
        drv.find_element("css selector", "#train-all summary").click()
        set_field(drv, "f-lora_r", "0")
        wait(drv, lambda d: "greater than or equal to 1" in text(d, "err-lora_r"), 30, "the lora_r message")
        set_field(drv, "f-lora_r", "8")
        for k, v in STEPS.items():
            set_field(drv, f"f-{k}", v)
        set_field(drv, "f-learning_rate", "0.002")
        wait(drv, lambda d: not text(d, "err-lora_r"), 30, "the lora_r message cleared")
        shot(drv, "train", capsys)
        drv.find_element("id", "launch").click()

        # 3. Runs: live status and loss curve until succeeded
        wait(drv, lambda d: d.find_element("id", "job-status").get_attribute("data-status") == "succeeded", 300,
             "the job to succeed")
        points = drv.find_element("id", "train-line").get_attribute("points").split()
        assert len(points) >= 2
        wait(drv, lambda d: "learning rate 0.002" in text(d, "job-run"), 30, "the run's learning rate")
        shot(drv, "runs", capsys)
        job_id = text(drv, "job-title").split(" ")[0]

        # 5. Playground: the fine-tuned model answers, streamed
        go(drv, "play")
        wait(drv, lambda d: d.find_elements("css selector", '#p-models input[value^="ft:"]'), 30, "the models")
        for box in drv.find_elements("css selector", "#p-models input"):
            if box.is_selected() != box.get_attribute("value").startswith("ft:"):
                box.click()
        set_field(drv, "p-prompt", "add 2 and 3")
        drv.find_element("id", "p-send").click()
        wait(drv, lambda d: text(d, "p-ans-0").strip(), 60, "a streamed answer")
        shot(drv, "playground", capsys)

        # 4. Evaluate: base vs tuned with CIs and worst examples
        go(drv, "eval")
        wait(drv, lambda d: d.find_elements("css selector", f'#e-run option[value="{job_id}"]'), 30, "the runs")
        from selenium.webdriver.support.ui import Select

        Select(drv.find_element("id", "e-run")).select_by_value(job_id)
        set_field(drv, "e-limit", "6")
        set_field(drv, "e-tokens", "4")
        drv.find_element("id", "e-btn").click()
        wait(drv, lambda d: "95% CI" in text(d, "e-table") and "exact_match" in text(d, "e-table"), 300,
             "the evaluation")
        shot(drv, "evaluate", capsys)

        # 6. Export: GGUF, verify passes, a download link
        go(drv, "export")
        wait(drv, lambda d: d.find_elements("css selector", f'#x-run option[value="{job_id}"]'), 30, "the runs")
        Select(drv.find_element("id", "x-run")).select_by_value(job_id)
        Select(drv.find_element("id", "x-fmt")).select_by_visible_text("gguf-f16")
        drv.find_element("id", "x-btn").click()
        wait(drv, lambda d: "verify passed" in text(d, "x-list"), 300, "verify to pass")
        assert drv.find_elements("css selector", "#x-list button.dl")
        shot(drv, "export", capsys)
        assert drv.find_element("css selector", 'nav a[href="/dashboard"]')

        # phone width: still one readable column, nothing wider than the window
        drv.set_window_size(390, 844)
        go(drv, "data")
        width = drv.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, width
        shot(drv, "phone", capsys)


@needs_chromium
def test_a_job_that_fails_on_bad_data_says_why(studio_base, files, browser, tmp_path, capsys):
    drv = browser
    with studio_server(studio_base, tmp_path / "srv") as (srv, _):
        drv.get(srv.url + "/studio")
        set_key(drv, KEY)
        drv.find_element("id", "file").send_keys(str(files["few"]))
        wait(drv, lambda d: "passes the checks" in text(d, "check"), 60, "the check")
        drv.find_element("id", "to-train").click()
        wait(drv, lambda d: d.find_elements("id", "f-learning_rate"), 60, "the prefilled form")
        drv.find_element("id", "launch").click()
        wait(drv, lambda d: d.find_element("id", "job-status").get_attribute("data-status") == "failed", 120,
             "the job to fail")
        assert "at least 10 examples" in text(drv, "job-error")
        shot(drv, "job-failed", capsys)


@needs_chromium
def test_the_page_says_when_the_server_is_gone_and_recovers(studio_base, browser, tmp_path, capsys):
    from tuneforge.serve.server import free_port

    drv, root, port = browser, tmp_path / "srv", free_port()
    with studio_server(studio_base, root, port=port) as (srv, _):
        with api(srv) as c:
            fid = upload(c, chat_rows(24))
            job = c.post("/v1/fine_tuning/jobs", json={
                "model": str(studio_base), "training_file": fid,
                "tuneforge": {"max_steps": 40, "save_steps": 10, "eval_steps": 20, "max_seq_len": 64}}).json()
            poll(c, f"/v1/fine_tuning/jobs/{job['id']}", lambda j: j["status"] == "running", 120)
        drv.get(srv.url + "/studio#runs")
        set_key(drv, KEY)
        wait(drv, lambda d: d.find_element("id", "job-status").get_attribute("data-status") == "running", 60,
             "the running job")
    # the server is gone (its worker checkpointed the job and re-queued it)
    wait(drv, lambda d: "Server unreachable" in text(d, "conn"), 30, "the unreachable banner")
    shot(drv, "server-gone", capsys)
    with studio_server(studio_base, root, port=port) as (srv, _):
        wait(drv, lambda d: "Reconnected" in text(d, "conn"), 60, "the reconnected banner")
        wait(drv, lambda d: d.find_element("id", "job-status").get_attribute("data-status") == "succeeded", 400,
             "the resumed job to succeed")
        assert len(drv.find_element("id", "train-line").get_attribute("points").split()) >= 2
        shot(drv, "server-back", capsys)



SCHEMA = {"type": "object", "properties": {"pet": {"enum": ["cat", "dog"]}, "happy": {"type": "boolean"}},
          "required": ["pet", "happy"], "additionalProperties": False}


@needs_chromium
def test_playground_json_schema_mode_answers_valid_json_and_flags_bad_schemas(studio_base, browser, tmp_path,
                                                                             capsys):
    import json

    import jsonschema
    from selenium.webdriver.support.ui import Select

    drv = browser
    with studio_server(studio_base, tmp_path / "srv") as (srv, _):
        drv.get(srv.url + "/studio")
        set_key(drv, KEY)
        go(drv, "play")
        wait(drv, lambda d: d.find_elements("css selector", "#p-models input:checked"), 30, "the base model")
        assert not drv.find_element("id", "p-schema").is_displayed()
        Select(drv.find_element("id", "p-format")).select_by_visible_text("JSON schema")
        assert drv.find_element("id", "p-schema").is_displayed()
        assert drv.find_element("css selector", 'label[for="p-schema"]').text == "JSON schema"

        # invalid JSON as you type: a message next to the box, send disabled
        set_field(drv, "p-schema", '{"type": "object",')
        wait(drv, lambda d: "Not valid JSON" in text(d, "p-schema-err"), 10, "the invalid-JSON message")
        assert not drv.find_element("id", "p-send").is_enabled()
        assert drv.find_element("id", "p-schema").get_attribute("aria-invalid") == "true"
        shot(drv, "playground-schema-invalid", capsys)

        # a small object schema: every side's streamed answer parses and validates
        set_field(drv, "p-schema", json.dumps(SCHEMA))
        wait(drv, lambda d: not text(d, "p-schema-err") and d.find_element("id", "p-send").is_enabled(), 10,
             "the schema accepted")
        set_field(drv, "p-max", "200")
        set_field(drv, "p-prompt", "name a pet")
        drv.find_element("id", "p-send").click()
        wait(drv, lambda d: text(d, "p-ans-0").strip() and not d.find_element("id", "p-stop").is_enabled(), 120,
             "the structured answer")
        answer = json.loads(text(drv, "p-ans-0"))
        jsonschema.validate(answer, SCHEMA)
        drv.execute_script('document.getElementById("p-out").scrollIntoView({block: "end"})')
        shot(drv, "playground-json-schema", capsys)
        drv.set_window_size(390, 844)
        assert drv.execute_script("return document.documentElement.scrollWidth") <= 400
        drv.execute_script('document.getElementById("p-out").scrollIntoView({block: "end"})')
        shot(drv, "playground-json-schema-phone", capsys)
        drv.set_window_size(1280, 800)

        # a schema the server cannot honour: its 400 (naming the feature) is shown next to the schema box
        set_field(drv, "p-schema", json.dumps({"type": "object", "if": {"type": "object"}, "then": {}}))
        drv.find_element("id", "p-prompt").send_keys(ctrl_enter())
        wait(drv, lambda d: "if" in text(d, "p-schema-err") and "schema" in text(d, "p-schema-err"), 60,
             "the server's schema error")
        assert drv.find_element("id", "p-send").is_enabled()

        # JSON object mode: no schema box, the answer is an object (or one cut off by max_tokens, never free text)
        Select(drv.find_element("id", "p-format")).select_by_visible_text("JSON object")
        assert not drv.find_element("id", "p-schema").is_displayed() and not text(drv, "p-schema-err")
        drv.find_element("id", "p-send").click()
        wait(drv, lambda d: text(d, "p-ans-0").strip() and not d.find_element("id", "p-stop").is_enabled(), 120,
             "the JSON-object answer")
        answer = text(drv, "p-ans-0")
        assert answer.startswith("{"), answer
        try:
            assert isinstance(json.loads(answer), dict)
        except json.JSONDecodeError:
            assert len(answer) > 20  # ran out of max_tokens mid-object


def ctrl_enter() -> str:
    from selenium.webdriver.common.keys import Keys

    return Keys.CONTROL + Keys.ENTER
