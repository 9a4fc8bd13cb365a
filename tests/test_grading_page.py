"""The grading page, served for real on 127.0.0.1: two graders in headless Chromium, bad requests over HTTP,
the same files as the terminal grader, and `mlxlab eval grade --web` stopped with Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def page(small_eval):
    """The grading page over `small_eval`, served on a free port in a thread; stopped after the test."""
    from mlxlab.evaluate.grading_page import GradingPage

    served = GradingPage(small_eval, port=0)
    thread = threading.Thread(target=served.serve, daemon=True)
    thread.start()
    for _ in range(400):                                 # until it answers
        try:
            urllib.request.urlopen(served.url, timeout=5).close()
            break
        except OSError:
            threading.Event().wait(0.05)
    yield served
    served.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()


def post(page, path: str, payload) -> tuple[int, dict]:
    """(status, JSON body) of a POST to the page's API."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(page.url + path.lstrip("/"), data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_two_graders_grade_through_the_page(page, small_eval, browser):
    import krippendorff
    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    rows = {json.loads(line)["id"]: json.loads(line) for line in (small_eval / "results.jsonl").read_text().splitlines()}
    wait = WebDriverWait(browser, 20)

    def login(name: str) -> None:
        browser.get(page.url)
        box = browser.find_element(By.ID, "name")
        box.send_keys(name)
        browser.find_element(By.ID, "start").click()

    login("alice")
    wait.until(lambda b: b.find_element(By.ID, "progress").text == "0 of 8 graded")
    tabs = {"alice": browser.current_window_handle}
    browser.switch_to.new_window("tab")
    login("alice")                                       # the same grader from a second page: refused, shown
    wait.until(lambda b: "already grading" in b.find_element(By.ID, "error").text)
    browser.find_element(By.ID, "name").clear()
    browser.find_element(By.ID, "name").send_keys("bob")
    browser.find_element(By.ID, "start").click()
    wait.until(lambda b: b.find_element(By.ID, "progress").text == "0 of 8 graded")
    tabs["bob"] = browser.current_window_handle
    given: dict[str, dict[str, int]] = {"alice": {}, "bob": {}}
    for step in range(8):                                # the two graders take turns, both sessions open
        for name in ("alice", "bob"):
            browser.switch_to.window(tabs[name])
            text = browser.find_element(By.ID, "answer").text
            answer = next(a for a, r in rows.items() if (r["answer"].strip() or "(empty)") == text)
            assert "base" not in browser.find_element(By.TAG_NAME, "main").text.replace(text, "")   # blind
            shown = browser.find_element(By.ID, "reference-card").is_displayed()
            assert shown == (rows[answer]["prompt"] == "ports")                        # the reference, when there is one
            value = rows[answer]["quality"] - (name == "bob" and rows[answer]["quality"] > 0)
            if name == "alice":
                browser.find_element(By.ID, f"grade-{value}").click()               # buttons
            else:
                browser.find_element(By.TAG_NAME, "body").send_keys(str(value))     # keys 0-5
            given[name][answer] = value
            wait.until(lambda b: b.find_element(By.ID, "progress-text").text == f"{step + 1} / 8")   # stays in view
            if step == 2 and name == "alice" and os.environ.get("MLXLAB_SCREENSHOTS") == "1":
                browser.save_screenshot(str(ROOT / "benchmarks" / "results" / "grading_page.png"))
    for name in tabs:
        browser.switch_to.window(tabs[name])
        assert browser.find_element(By.ID, "done").is_displayed() and "8 of 8" in browser.find_element(By.ID, "done").text
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "409" not in e["message"]]
        assert not errors, errors
    assert set(given["alice"]) == set(given["bob"]) == set(rows)
    assert list(given["alice"]) != list(given["bob"])    # each grader's own order

    lines = [json.loads(line) for line in (small_eval / "grades.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and {(g["grader"], g["id"]): g["grade"] for g in lines} == {
        (n, a): v for n, mine in given.items() for a, v in mine.items()}
    summary = json.loads((small_eval / "summary.json").read_text())
    for answer in rows:
        assert summary["answers"][answer]["mean"] == pytest.approx((given["alice"][answer] + given["bob"][answer]) / 2)
    ids = sorted(rows)
    data = np.array([[given[n][a] for a in ids] for n in ("alice", "bob")], dtype=float)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=list(range(6)))
    assert summary["agreement"]["alpha"] == pytest.approx(expected) and summary["graders"] == ["alice", "bob"]


def test_bad_requests_get_clear_errors_and_lose_nothing(page, small_eval):
    from mlxlab.evaluate.evaluation import grade
    from mlxlab.errors import MlxlabError

    status, body = post(page, "/api/session", {"grader": "  "})
    assert status == 400 and "needs a name" in body["error"]
    assert post(page, "/api/session", {})[0] == 400
    assert post(page, "/api/session", b"not json")[0] == 400
    status, alice = post(page, "/api/session", {"grader": "alice"})
    assert status == 200 and alice["left"] == 8 and "model" not in alice["answer"]         # blind
    token, first = alice["token"], alice["answer"]["id"]
    status, body = post(page, "/api/grade", {"token": token, "id": first, "grade": 4})
    assert status == 200 and body["graded"] == 1
    skipped = body["answer"]["id"]
    status, body = post(page, "/api/skip", {"token": token, "id": skipped})
    assert status == 200 and body["answer"]["id"] != skipped and body["left"] == 7     # skipped: comes back last
    saved = (small_eval / "grades.jsonl").read_text()
    for bad, code, needle in [({"id": body["answer"]["id"], "grade": 7}, 422, "0 to 5"),
                              ({"id": body["answer"]["id"], "grade": "3"}, 422, "0 to 5"),
                              ({"id": body["answer"]["id"], "grade": True}, 422, "0 to 5"),
                              ({"id": "nope", "grade": 3}, 404, "unknown answer id"),
                              ({"id": ["a", "list"], "grade": 3}, 404, "unknown answer id"),
                              ({"id": first, "grade": 3, "token": "forged"}, 409, "session has ended")]:
        status, error = post(page, "/api/grade", {"token": token, **bad})
        assert status == code and needle in error["error"], (bad, status, error)
    assert (small_eval / "grades.jsonl").read_text() == saved            # nothing written, nothing lost
    status, error = post(page, "/api/session", {"grader": "alice"})       # a second page, same grader, at once
    assert status == 409 and "already grading" in error["error"]
    with pytest.raises(MlxlabError, match="already grading"):            # ... or the terminal
        grade(small_eval, grader="alice", input=io.StringIO("3\n"), out=io.StringIO())
    assert post(page, "/api/current", {"token": token})[1]["graded"] == 1
    post(page, "/api/release", {"token": token})                          # the page closed: alice may come back
    # the terminal continues the page's work: the answer graded there is not asked again
    screen = io.StringIO()
    result = grade(small_eval, grader="alice", input=io.StringIO("2\n" * 7), out=screen)
    assert result.graded == 8 and "1 of 8 answers graded; 7 to go" in screen.getvalue()
    status, back = post(page, "/api/session", {"grader": "alice"})
    assert status == 200 and back["done"] and back["graded"] == 8


def test_cli_web_prints_the_url_and_stops_on_ctrl_c(small_eval):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mlxlab", "eval", "grade", "--web", "--port", "0", "--output",
                             str(small_eval)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("grading page: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[2]
        with urllib.request.urlopen(url, timeout=20) as response:
            html = response.read().decode()
        assert "blind grading" in html and "<script src" not in html and "https://" not in html   # no CDN
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "summary:" in out and "Traceback" not in err
