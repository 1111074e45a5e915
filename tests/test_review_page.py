"""The review page (GET /runs/{id}, GET /runs) in a real browser: headless Chromium from Debian's
`chromium` package driven by Playwright, against the app on uvicorn on 127.0.0.1.

A GPT Image run (loopback server, real openai client) pauses before its paid call; the page opened
from the run's link shows the question, the before/after slider, the finding regions and their
toggles; clicking Approve carries the run on, and the page follows it to done with the attempt in its
timeline. The page of a finished offline run is docs/review-page.png (written there with
FIXLOOP_UPDATE_DOCS=1, else into the test's temporary folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from tests.openai_server import OpenAIImagesServer
from tests.test_http import A, B, LiveServer, SETTLED, blurred_case, files, png, settings_for, wait_status

CHROMIUM = Path(os.environ.get("FIXLOOP_CHROMIUM", "/usr/bin/chromium"))
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.slow


@pytest.fixture
def live(tmp_path, monkeypatch):
    """The app on a real server, and the loopback GPT Image server its runs call."""
    from fixloop.apps.http import create_app
    from tests.test_repair_loop import clean_fix

    case = blurred_case()
    with OpenAIImagesServer(image=clean_fix(case.source)) as images:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
        monkeypatch.setenv("OPENAI_BASE_URL", images.base_url)
        with LiveServer(create_app(settings_for(tmp_path))) as server:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                yield server, http, images, case


@pytest.fixture
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FIXLOOP_CHROMIUM)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def paused(http, case) -> dict:
    response = http.post("/v1/repairs", headers=A, data={"backend": "openai", "approve": "true"},
                         files=files(candidate=png(case.candidate), source=png(case.source)))
    assert response.status_code == 202, response.text
    body = wait_status(http, response.json()["id"], {"waiting_approval", *SETTLED})
    assert body["status"] == "waiting_approval", body
    return body


def test_approve_on_the_page_carries_the_run_on_and_the_slider_moves(live, browser, tmp_path):
    server, http, images, case = live
    run = paused(http, case)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(run["links"]["page"])

    assert page.locator("#status").inner_text() == "waiting approval"
    assert "Run a paid openai edit for texture_blur" in page.locator("#approval").inner_text()
    # both pictures are loaded (same-origin, token in their URLs)
    for selector in ("img.before", "#after"):
        assert page.eval_on_selector(selector, "img => img.complete && img.naturalWidth") == 512, selector

    # the before/after slider
    assert "inset(0px 0px 0px 50%)" in page.eval_on_selector("#after", "img => getComputedStyle(img).clipPath")
    page.locator("#slider").fill("20")
    assert page.eval_on_selector("#after", "img => img.style.clipPath") == "inset(0px 0px 0px 20%)"
    assert page.eval_on_selector("#divider", "d => d.style.left") == "20%"

    # the finding regions: one per finding with a box, drawn in its priority's colour, toggled off and on
    region = page.locator(".region").first
    assert region.is_visible() and "P1" in region.get_attribute("class")
    assert "texture_blur" in region.inner_text()
    toggle = page.locator("input[data-toggle]").first
    toggle.uncheck()
    assert not region.is_visible()
    toggle.check()
    assert region.is_visible()

    assert images.requests == []
    with page.expect_navigation():
        page.locator("#approve").click()
    # the page follows the run (it reloads itself while the run goes on) until it is done
    page.locator('body[data-status="done"]').wait_for(state="attached", timeout=120_000)
    assert len(images.requests) == 1
    assert page.locator("#status").inner_text() == "done"
    assert page.locator("#verdict").inner_text() == "verdict pass"
    attempt = page.locator("#timeline li.attempt").first
    assert "accepted" in attempt.inner_text() and "openai" in attempt.inner_text()
    attempt.locator("summary").click()
    shot = attempt.locator("details img")
    shot.wait_for(state="visible")
    assert page.eval_on_selector("#timeline details img", "img => img.complete && img.naturalWidth") > 0
    assert page.locator("#approval").count() == 0
    assert page.locator(".region.fixed").count() == 1  # the blur is no longer found on the final image
    assert errors == []
    status = http.get(f"/v1/repairs/{run['id']}", headers=A).json()
    assert status["status"] == "done" and status["report"]["attempts"][0]["outcome"] == "accepted"

    attempt.locator("summary").click()  # fold the picture again for the screenshot
    page.locator("#slider").fill("55")
    page.close()


def test_a_finished_local_run_shows_every_pass_and_region(live, browser, tmp_path):
    """The shipped example (spill + darker + warmer) repaired offline in two passes: the page of the
    finished run, as docs/review-page.png shows it."""
    from tests.test_http import example_parts

    server, http, images, case = live
    response = http.post("/v1/repairs", headers=A, files=files(**example_parts()))
    done = wait_status(http, response.json()["id"], SETTLED)
    assert done["status"] == "done" and done["summary"]["verdict"] == "pass", done
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(done["links"]["page"])
    assert page.locator("#timeline li.attempt.outcome-accepted").count() == 2
    assert page.locator(".region.P0").count() == 1  # mask_spill, drawn in P0 red; the light drifts have no box
    assert [t.strip() for t in page.locator(".toggle .state-fixed").all_inner_texts()] == ["fixed"] * 3
    assert page.locator("#open-defects").count() == 0
    page.locator("#slider").fill("50")
    page.evaluate("document.fonts.ready")
    target = DOCS / "review-page.png" if os.environ.get("FIXLOOP_UPDATE_DOCS") == "1" else tmp_path / "review-page.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    page.close()


def test_reject_on_the_page_skips_the_paid_call(live, browser):
    server, http, images, case = live
    run = paused(http, case)
    page = browser.new_page()
    page.goto(run["links"]["page"])
    with page.expect_navigation():
        page.locator("#reject").click()
    page.locator('body[data-status="done"]').wait_for(state="attached", timeout=120_000)
    assert images.requests == []
    assert "declined" in page.locator("#timeline").inner_text()
    assert "the paid repair was declined" in page.locator("#open-defects").inner_text()
    page.close()


def test_the_page_needs_the_runs_token_or_its_owners_key(live):
    server, http, images, case = live
    run = paused(http, case)
    run_id, token = run["id"], re.search(r"token=([\w-]+)", run["links"]["page"]).group(1)
    assert http.get(f"/runs/{run_id}").status_code == 401
    assert http.get(f"/runs/{run_id}?token=wrong").status_code == 404
    assert http.get(f"/runs/{run_id}", headers=B).status_code == 404
    assert http.get(f"/runs/{run_id}/files/input").status_code == 401
    assert http.get(f"/runs/{run_id}/files/input?token=wrong").status_code == 404
    assert http.get("/runs/no-such-run?token=" + token).status_code == 404  # a token opens its own run only
    assert http.post(f"/runs/{run_id}/approval", data={"decision": "approve", "token": "wrong"}).status_code == 404
    page = http.get(f"/runs/{run_id}?token={token}")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert http.get(f"/runs/{run_id}", headers=A).status_code == 200
    assert http.get(f"/runs/{run_id}/files/attempt-1?token={token}").status_code == 404  # none yet
    assert http.get(f"/runs/{run_id}/files/../../etc/passwd?token={token}").status_code == 404
    # the list of runs: the owner's key only; a run's token does not open it
    assert http.get("/runs").status_code == 401
    listed = http.get("/runs", headers=A)
    assert listed.status_code == 200 and run_id in listed.text and f"token={token}" in listed.text
    assert run_id not in http.get("/runs", headers=B).text
    # the static files ship with the package
    assert http.get("/static/review.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert http.get("/static/review.css").status_code == 200
    http.post(f"/v1/repairs/{run_id}/approval", json={"approve": False}, headers=A)
    wait_status(http, run_id, SETTLED)
