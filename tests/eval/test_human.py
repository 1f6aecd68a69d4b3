"""Blind A/B human evaluation: export a sheet from eval.json, fill it in, import and unblind the ratings."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tuneforge.errors import TuneforgeError
from tuneforge.eval.human import RatingError, export_sheet, import_ratings, wilson_interval

CHROMIUM = "/usr/bin/chromium"


def write_eval(path: Path, n: int = 20, baseline: bool = True) -> Path:
    examples = []
    for i in range(n):
        ex = {"where": f"val.jsonl:{i + 1}", "prompt": f"prompt {i}\nsecond line, with \"quotes\"",
              "reference": f"ref {i}", "tuned_prediction": f"TUNED {i} <b>&</b>", "tuned_latency_s": 0.1}
        if baseline:
            ex.update(baseline_prediction=f"BASE {i}", baseline_latency_s=0.1)
        examples.append(ex)
    models = {"tuned": {"name": "runs/r1", "metrics": {}}}
    if baseline:
        models["baseline"] = {"name": "base", "metrics": {}}
    path.write_text(json.dumps({"data": "val.jsonl", "task": "generation", "n_examples": n, "models": models,
                                "examples": examples}))
    return path


def read_sheet(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_sheet(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_export_writes_blind_csv_form_and_key(tmp_path):
    paths = export_sheet(write_eval(tmp_path / "eval.json"), tmp_path / "he", seed=0)
    assert {k: p.name for k, p in paths.items()} == {"csv": "human_eval.csv", "html": "human_eval.html",
                                                     "key": "human_eval_key.json"}
    rows = read_sheet(paths["csv"])
    assert list(rows[0]) == ["id", "prompt", "reference", "response_1", "response_2", "rating"]
    assert len(rows) == 20 and all(r["rating"] == "" for r in rows)
    assert rows[0]["prompt"] == 'prompt 0\nsecond line, with "quotes"'  # multi-line text survives the CSV
    key = json.loads(paths["key"].read_text())["tuned"]
    for r in rows:  # the key points at the tuned answer; the sheet itself never names the models
        assert r[key[r["id"]]].startswith("TUNED")
    assert set(key.values()) == {"response_1", "response_2"}  # order randomised per row
    assert "runs/r1" not in paths["csv"].read_text() and "runs/r1" not in paths["html"].read_text()


def test_export_order_is_reproducible_from_the_seed(tmp_path):
    ev = write_eval(tmp_path / "eval.json")
    k = lambda d, s: json.loads(export_sheet(ev, tmp_path / d, seed=s)["key"].read_text())["tuned"]  # noqa: E731
    assert k("a", 0) == k("b", 0)
    assert k("a", 0) != k("c", 1)


def test_export_form_is_self_contained_escaped_and_has_radios(tmp_path):
    page = export_sheet(write_eval(tmp_path / "eval.json", n=3), tmp_path)["html"].read_text()
    assert page.count('type="radio"') == 9 and 'id="download"' in page and "Blob" in page
    assert "<b>&</b>" not in page.split('<script type="application/json"')[0]
    assert "TUNED 0 &lt;b&gt;&amp;&lt;/b&gt;" in page
    assert "</b>" not in page.split('id="rows"')[1].split("</script>")[0]  # embedded JSON cannot break out
    assert not re.search(r'(src|href)="', page)


def test_export_needs_baseline_predictions(tmp_path):
    with pytest.raises(TuneforgeError, match="baseline and tuned"):
        export_sheet(write_eval(tmp_path / "eval.json", baseline=False), tmp_path / "he")
    with pytest.raises(TuneforgeError, match="no such eval.json"):
        export_sheet(tmp_path / "missing.json", tmp_path / "he")


def fill(paths: dict, outcomes: list[str]) -> Path:
    """Rate row i as outcomes[i] from the tuned model's side: 'win', 'loss', 'tie' or '' (unrated)."""
    key = json.loads(paths["key"].read_text())["tuned"]
    rows = read_sheet(paths["csv"])
    for r, o in zip(rows, outcomes):
        t = key[r["id"]][-1]  # "1" or "2"
        r["rating"] = {"win": t, "loss": "2" if t == "1" else "1", "tie": "Tie ", "": ""}[o]
    write_sheet(paths["csv"], rows)
    return paths["csv"]


def test_import_unblinds_counts_and_intervals(tmp_path):
    paths = export_sheet(write_eval(tmp_path / "eval.json"), tmp_path, seed=3)
    outcomes = ["win"] * 10 + ["loss"] * 4 + ["tie"] * 3 + [""] * 3
    r = import_ratings(fill(paths, outcomes), paths["key"])
    assert (r["wins"], r["losses"], r["ties"], r["n_rated"], r["n_rows"]) == (10, 4, 3, 17, 20)
    assert r["win_rate"] == pytest.approx(10 / 17) and r["tie_rate"] == pytest.approx(3 / 17)
    w = r["win_rate_excluding_ties"]
    assert w["n"] == 14 and w["rate"] == pytest.approx(10 / 14) and w["low"] < 10 / 14 < w["high"]
    nw = r["net_win"]
    assert nw["mean"] == pytest.approx(6 / 17) and nw["low"] < nw["mean"] < nw["high"]
    assert r["unrated"] == ["18", "19", "20"]
    assert r["models"] == {"baseline": "base", "tuned": "runs/r1"}


def test_wilson_interval_matches_known_values():
    w = wilson_interval(8, 10)
    assert (round(w["low"], 4), round(w["high"], 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 5)["low"] == 0.0 and wilson_interval(5, 5)["high"] == 1.0
    assert wilson_interval(0, 0) is None


def test_import_bad_rating_names_csv_line_and_value(tmp_path):
    paths = export_sheet(write_eval(tmp_path / "eval.json", n=5), tmp_path)
    rows = read_sheet(paths["csv"])
    rows[2]["rating"] = "maybe"
    write_sheet(paths["csv"], rows)
    # each row's prompt spans two lines, so row 3 starts on line 2 + 2*2 = 6
    with pytest.raises(ValueError, match=r"human_eval\.csv:6: rating 'maybe'"):
        import_ratings(paths["csv"], paths["key"])
    assert issubclass(RatingError, TuneforgeError)


def test_import_rejects_ids_not_in_the_key(tmp_path):
    paths = export_sheet(write_eval(tmp_path / "eval.json", n=3), tmp_path)
    rows = read_sheet(paths["csv"])
    rows[0]["id"] = "999"
    write_sheet(paths["csv"], rows)
    with pytest.raises(ValueError, match="'999' is not in the key"):
        import_ratings(paths["csv"], paths["key"])


def test_import_with_nothing_rated_lists_every_row(tmp_path):
    paths = export_sheet(write_eval(tmp_path / "eval.json", n=4), tmp_path)
    r = import_ratings(paths["csv"], paths["key"])
    assert r["n_rated"] == 0 and r["win_rate"] is None and r["net_win"] is None
    assert r["unrated"] == ["1", "2", "3", "4"]


@pytest.mark.integration  # starts a headless browser: out of the quick loop
@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="headless Chromium not installed (run scripts/install-chromium.sh); required in CI")
def test_form_download_csv_round_trips_through_import(tmp_path):
    """Click ratings in a real browser, build the download CSV with the form's own JavaScript, import it."""
    paths = export_sheet(write_eval(tmp_path / "eval.json", n=4), tmp_path, seed=1)
    key = json.loads(paths["key"].read_text())["tuned"]
    picks = {"1": key["1"][-1], "2": "tie", "3": "2" if key["3"] == "response_1" else "1"}  # win, tie, loss
    clicks = "".join(f"document.querySelector('input[name=\"r-{i}\"][value=\"{v}\"]').click();"
                     for i, v in picks.items())
    probe = tmp_path / "probe.html"
    probe.write_text(paths["html"].read_text().replace(
        "</body>", f"<script>{clicks}document.body.setAttribute('data-csv', toCsv());</script></body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.resolve().as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    filled = tmp_path / "filled.csv"
    filled.write_text(html.unescape(re.search(r'data-csv="([^"]*)"', dom).group(1)), newline="")
    assert read_sheet(filled)[0]["prompt"] == read_sheet(paths["csv"])[0]["prompt"]
    r = import_ratings(filled, paths["key"])
    assert (r["wins"], r["ties"], r["losses"], r["unrated"]) == (1, 1, 1, ["4"])
