"""The HTTP service (apps/http.py, agent/jobs.py, agent/uploads.py): `fixloop serve`.

In-process tests drive the FastAPI app with its TestClient (its lifespan starts the real worker pool
over a real SQLite store); the tests marked slow start real servers on 127.0.0.1: uvicorn in a thread
for parallel checks, and `fixloop serve` as a subprocess that is killed with SIGKILL during a paid
call and started again. Paid calls go to the loopback GPT Image server of tests/openai_server.py
through the real openai client. Images are 384-512 px.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from fixloop.agent.example import build_example
from tests import defects
from tests.conftest import photo
from tests.openai_server import OpenAIImagesServer

KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
FIXLOOP = [sys.executable, "-m", "fixloop.apps.cli"]
SETTLED = {"done", "failed", "cancelled", "interrupted"}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def darkened():
    """A 384 px photo and its copy 0.8 EV darker (exposure_drift against the source)."""
    source = cv2.resize(photo("face_obama_01.jpg"), (384, 384), interpolation=cv2.INTER_AREA)
    return png(source), png(defects.exposure(source, -0.8).candidate)


def example_parts() -> dict[str, bytes]:
    """The shipped example (512 px): spill + darker + warmer, repaired offline in two passes."""
    case = build_example()
    return {"candidate": png(case["candidate"]), "source": png(case["source"]), "mask": png(case["mask"])}


@pytest.fixture(scope="module")
def example():
    return example_parts()


def blurred_case(size: int = 512):
    image = cv2.resize(photo("face_harington_01.jpg"), (size, size), interpolation=cv2.INTER_AREA)
    return defects.blur_region(image, 3.0)


def settings_for(tmp_path: Path, **given):
    from fixloop.apps.http import Settings

    return Settings(api_keys=[KEY_A, KEY_B], home=tmp_path / "home", warmup=False, **given)


@pytest.fixture
def app_client(tmp_path):
    """A started app (worker pool, SQLite store under tmp_path) and its test client."""
    from fastapi.testclient import TestClient

    from fixloop.apps.http import create_app

    def make(**given):
        client = TestClient(create_app(settings_for(tmp_path, **given)))
        client.__enter__()
        made.append(client)
        return client

    made: list = []
    yield make
    for client in made:
        client.__exit__(None, None, None)


@pytest.fixture
def client(app_client):
    return app_client()


@pytest.fixture
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")


def files(**parts) -> list:
    out = []
    for name, value in parts.items():
        for data in value if isinstance(value, list) else [value]:
            out.append((name, (f"{name}.bin", data, "application/octet-stream")))
    return out


def wait_status(client, run_id: str, statuses: set[str], headers=A, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/repairs/{run_id}", headers=headers).json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"still {body['status']}: {[e['text'] for e in body['events']]}"
        time.sleep(0.2)


def comparable(report: dict) -> dict:
    """A check report without its timings and labels (the command line names its files)."""
    report = json.loads(json.dumps(report))
    report.pop("seconds")
    for run in report["checks"]:
        run.pop("seconds")
    report["checks"].sort(key=lambda run: run["name"])  # listed as they finish
    for key in ("candidate", "source", "mask"):
        report["inputs"].pop(key)
    return report


def one_line(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    return detail


# ---- service basics -----------------------------------------------------------------------------


def test_healthz_needs_no_key_and_reports_workers_queue_and_models(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["workers"] == 1 and body["queue"] == 0
    assert body["models"]["mediapipe_pose_landmarks"] is True
    assert body["models_loaded"] is False  # warm-up is off in these tests


def test_openapi_uses_the_projects_models(client):
    from fixloop.agent.state import RepairReport
    from fixloop.checks.report import Report

    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for model in (Report, RepairReport):
        published = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in published.pop("$defs", {}).items():
            assert components[name] == sub, name
        assert components[model.__name__] == published
    ok = schema["paths"]["/v1/checks"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Report"}
    body = schema["paths"]["/v1/checks"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body == {"$ref": "#/components/schemas/CheckForm"}
    assert components["CheckForm"]["properties"]["candidate"]["format"] == "binary"
    assert "RepairForm" in components
    assert components["RepairStatus"]["properties"]["report"]["anyOf"][0] == {"$ref": "#/components/schemas/RepairReport"}


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/checks"), ("POST", "/v1/repairs"), ("GET", "/v1/repairs"), ("GET", "/v1/repairs/x"),
    ("GET", "/v1/repairs/x/events"), ("GET", "/v1/repairs/x/final"), ("GET", "/v1/repairs/x/review.png"),
    ("GET", "/v1/repairs/x/attempts/1"), ("POST", "/v1/repairs/x/approval"), ("DELETE", "/v1/repairs/x"),
    ("GET", "/runs"),
])
def test_every_api_route_needs_a_valid_bearer_key(client, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEY_A}"},
                    {"Authorization": "Bearer "}):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        one_line(response)


def test_no_keys_no_server(tmp_path, monkeypatch):
    from fixloop.apps.http import Settings, create_app

    monkeypatch.delenv("FIXLOOP_API_KEYS", raising=False)
    with pytest.raises(Exception, match="no API keys"):
        create_app(Settings(home=tmp_path, warmup=False))
    result = subprocess.run([*FIXLOOP, "serve", "--port", "1"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "FIXLOOP_HOME": str(tmp_path)})
    assert result.returncode == 2 and result.stderr.strip().startswith("fixloop: no API keys"), result.stderr


def test_one_server_per_store(tmp_path, client):
    """The app of the ``client`` fixture holds tmp_path/home; another process cannot start on it."""
    env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home"), "FIXLOOP_API_KEYS": KEY_A}
    result = subprocess.run([*FIXLOOP, "serve", "--port", str(free_port())], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("fixloop: another process runs the jobs of"), result.stderr


def test_keys_come_from_the_environment_and_a_key_file(tmp_path, monkeypatch):
    from fixloop.apps.http import Settings

    key_file = tmp_path / "keys.txt"
    key_file.write_text("# one key a line\nfile-key\n\n")
    monkeypatch.setenv("FIXLOOP_API_KEYS", "env-1, env-2")
    monkeypatch.setenv("FIXLOOP_WORKERS", "3")
    settings = Settings.from_env(api_key_file=key_file)
    assert settings.workers == 3 and len(settings.keys()) == 3
    assert "env-1" not in repr(settings)  # keys never show in logs


# ---- POST /v1/checks ----------------------------------------------------------------------------


def test_a_check_answers_the_report_of_fixloop_check_json(client, darkened, tmp_path):
    source, candidate = darkened
    response = client.post("/v1/checks", files=files(candidate=candidate, source=source), headers=A)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verdict"] == "fail" and response.headers["x-fixloop-verdict"] == "fail"
    assert "exposure_drift" in [f["kind"] for f in body["findings"]]
    from fixloop.checks.report import Report

    Report.model_validate(body)  # the published schema's model
    (tmp_path / "c.png").write_bytes(candidate)
    (tmp_path / "s.png").write_bytes(source)
    cli = subprocess.run([*FIXLOOP, "check", str(tmp_path / "c.png"), "--source", str(tmp_path / "s.png"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr
    assert comparable(json.loads(cli.stdout)) == comparable(body)


def test_a_policy_sent_as_text_is_laid_over_the_defaults(client, darkened):
    source, candidate = darkened
    loose = "[checks.exposure_drift]\nev_threshold = 3.0\n"
    body = client.post("/v1/checks", files=files(candidate=candidate, source=source),
                       data={"policy": loose, "only": ["exposure_drift"]}, headers=A).json()
    assert body["verdict"] == "pass" and [c["name"] for c in body["checks"]] == ["exposure_drift"]
    as_file = client.post("/v1/checks", files=files(candidate=candidate, source=source, policy=loose.encode()),
                          data={"only": "exposure_drift"}, headers=A).json()
    assert as_file["verdict"] == "pass"
    for policy, message in [("[checks.exposure_drift\n", "policy is not valid TOML"),
                            ("[checks.exposure_drif]\nev_threshold = 1\n", "did you mean 'exposure_drift'"),
                            ("[checks.exposure_drift]\nev_threshold = -1\n", "checks.exposure_drift.ev_threshold"),
                            ('[repair.backends.diffusers]\nmodel = "/etc"\n', "names a file on the server"),
                            ("[analysis]\nmax_side = 16384\n", "max_side 16384 is over this server's limit of 2048")]:
        response = client.post("/v1/checks", files=files(candidate=candidate), data={"policy": policy}, headers=A)
        assert response.status_code == 400 and message in one_line(response), response.text


def test_uploads_over_the_caps_are_413_before_anything_decodes(app_client, tmp_path):
    client = app_client(max_upload_bytes=64 * 1024, max_request_bytes=512 * 1024, max_pixels=1_000_000,
                        max_references=2)
    noise = np.random.default_rng(1).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    big_file = png(noise)  # ~270 kB of noise
    response = client.post("/v1/checks", files=files(candidate=big_file), headers=A)
    assert response.status_code == 413 and "per file" in one_line(response)

    many = files(candidate=big_file, source=big_file)  # over the request cap, refused from Content-Length
    response = client.post("/v1/checks", files=many, headers=A)
    assert response.status_code == 413 and "over this server's cap" in one_line(response)

    flat = png(np.zeros((1100, 1100, 3), dtype=np.uint8))  # a few kB, 1.2 MP decoded
    response = client.post("/v1/checks", files=files(candidate=flat), headers=A)
    assert response.status_code == 413
    assert one_line(response) == "candidate is 1100x1100 (1.2 MP), over this server's cap of 1.0 MP: downscale it"

    response = client.post("/v1/checks", files=files(candidate=png(noise[:64, :64]), reference=[png(noise[:64, :64])] * 3),
                           headers=A)
    assert response.status_code == 413 and "3 reference images" in one_line(response)

    started = time.perf_counter()
    response = client.post("/v1/checks", files=files(candidate=png_bomb(60000, 60000)), headers=A)
    assert response.status_code == 413
    # read from the header either way: Pillow's own bomb limit (when the process has one) or the cap
    assert re.fullmatch(r"candidate (is 60000x60000 \(3600.0 MP\)|would decode to 3600.0 MP), over this "
                        r"server's cap of 1.0 MP: downscale it", one_line(response)), one_line(response)
    assert time.perf_counter() - started < 2, "the bomb was decoded"
    response = client.post("/v1/repairs", files=files(candidate=png(noise[:64, :64]), mask=png_bomb(5000, 5000)),
                           headers=A)
    assert response.status_code == 413 and one_line(response).startswith("mask is 5000x5000 (25.0 MP)")


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` grey pixels, its data a few kB of zlib'd zeros (truncated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.parametrize("route", ["/v1/checks", "/v1/repairs"])
def test_bad_images_are_400_with_one_line_and_nothing_is_kept(client, darkened, tmp_path, monkeypatch, route):
    source, candidate = darkened
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    spooled = []  # an upload spooled to an (unlinked, invisible) temporary file would show here
    real_temporary_file = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: spooled.append(a) or real_temporary_file(*a, **k))
    other_size = png(np.full((200, 300), 255, dtype=np.uint8))
    large = png(np.random.default_rng(2).integers(0, 255, (800, 800, 3), dtype=np.uint8))  # ~1.9 MB
    assert len(large) > 1024 * 1024  # past Starlette's 1 MB spool: this one is kept in memory too
    cases = [
        (files(candidate=large, mask=other_size), "mask is 300x200"),
        (files(candidate=candidate[: len(candidate) // 2]), "candidate 'upload' could not be decoded"),
        (files(candidate=b"<html>not an image</html>"), "candidate is not an image"),
        (files(candidate=candidate, source=source, mask=other_size), "mask is 300x200"),
        (files(source=source), "candidate is missing"),
        ([("candidate", (None, "text"))], "candidate must be a file part"),
        (files(candidate=candidate, image=candidate), "unknown field 'image'"),
    ]
    for parts, message in cases:
        response = client.post(route, files=parts, headers=A)
        assert response.status_code == 400, (message, response.text)
        assert message in one_line(response), response.text
    response = client.post(route, content=candidate, headers={**A, "Content-Type": "image/png"})
    assert response.status_code == 415
    runs = tmp_path / "home" / "http-runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert list(spool.iterdir()) == [] and spooled == []
    assert client.get("/v1/repairs", headers=A).json() == []


# ---- repair runs --------------------------------------------------------------------------------


def test_a_repair_runs_in_the_background_to_done_with_links_events_and_images(client, example):
    response = client.post("/v1/repairs", files=files(**example), data={"budget_passes": "4"}, headers=A)
    assert response.status_code == 202, response.text
    accepted = response.json()
    run_id, links = accepted["id"], accepted["links"]
    assert accepted["status"] in ("queued", "running") and response.headers["location"] == links["self"]
    assert set(links) == {"self", "events", "final", "review_sheet", "approval", "page"}
    assert "?token=" in links["page"]

    done = wait_status(client, run_id, SETTLED)
    assert done["status"] == "done", done
    assert done["summary"]["verdict"] == "pass" and done["summary"]["passes"] == 2
    texts = [e["text"] for e in done["events"]]
    assert texts[1].startswith("inspect: 3 finding(s)") and any("✓ accepted" in t for t in texts)
    assert texts[-1].startswith("done: clean")
    report = done["report"]
    assert report["verdict"] == "pass" and report["budget"]["max_passes"] == 4
    from fixloop.agent.state import RepairReport

    RepairReport.model_validate(report)
    assert client.get(f"/v1/repairs/{run_id}?after={len(texts) - 1}", headers=A).json()["events"][0]["text"] == texts[-1]

    final = client.get(links["final"], headers=A)
    assert final.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(final.content)).size == (512, 512)
    assert client.get(links["review_sheet"], headers=A).headers["content-type"] == "image/png"
    assert client.get(f"/v1/repairs/{run_id}/attempts/1", headers=A).status_code == 200
    assert client.get(f"/v1/repairs/{run_id}/attempts/9", headers=A).status_code == 404

    with client.stream("GET", links["events"], headers=A) as stream:
        sse = "".join(stream.iter_text())
    assert stream.headers["content-type"].startswith("text/event-stream")
    progress = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: {\"seq\"")]
    assert [p["text"] for p in progress] == texts
    assert sse.rstrip().endswith('"backend": "local"}}') and 'event: status\ndata: {"status": "done"' in sse
    with client.stream("GET", links["events"], headers={**A, "Last-Event-ID": str(len(texts) - 1)}) as stream:
        resumed = "".join(stream.iter_text())
    assert resumed.count("event: progress") == 1

    # another client sees none of it
    for method, path in [("GET", f"/v1/repairs/{run_id}"), ("GET", f"/v1/repairs/{run_id}/final"),
                         ("GET", f"/v1/repairs/{run_id}/events"), ("GET", f"/v1/repairs/{run_id}/review.png"),
                         ("GET", f"/v1/repairs/{run_id}/attempts/1"), ("DELETE", f"/v1/repairs/{run_id}")]:
        response = client.request(method, path, headers=B)
        assert response.status_code == 404 and run_id in one_line(response), (method, path)
    assert client.post(f"/v1/repairs/{run_id}/approval", json={"approve": True}, headers=B).status_code == 404
    assert client.get("/v1/repairs", headers=B).json() == []
    assert [r["id"] for r in client.get("/v1/repairs", headers=A).json()] == [run_id]


def test_repair_requests_are_held_to_the_servers_limits(client, example, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for data, message in [({"budget_usd": "50"}, "budget_usd 50 is over this server's limit of 5"),
                          ({"backend": "magic"}, "backend"),
                          ({"backend": "openai"}, "OPENAI_API_KEY"),
                          ({"backend": "diffusers", "model": "/models/sd"}, "the diffusion checkpoint is the server's"),
                          ({"budget_passes": "many"}, "budget_passes")]:
        response = client.post("/v1/repairs", files=files(**example), data=data, headers=A)
        assert response.status_code == 400 and message in one_line(response), (data, response.text)
    assert client.get("/v1/repairs", headers=A).json() == []


def paused_run(client, case, server, **data) -> dict:
    response = client.post("/v1/repairs", files=files(candidate=png(case.candidate), source=png(case.source)),
                           data={"backend": "openai", "approve": "true", **data}, headers=A)
    assert response.status_code == 202, response.text
    return wait_status(client, response.json()["id"], {"waiting_approval", *SETTLED})


def test_approval_round_trip_and_a_declined_paid_call(client, openai_key):
    from tests.test_repair_loop import clean_fix

    case = blurred_case()
    with OpenAIImagesServer(image=clean_fix(case.source)) as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        try:
            waiting = paused_run(client, case, server)
            run_id = waiting["id"]
            assert waiting["status"] == "waiting_approval", waiting
            assert waiting["question"]["tool"] == "openai" and waiting["question"]["estimated_usd"] > 0
            assert waiting["events"][-1]["text"].startswith("waiting for approval: Run a paid openai edit")
            assert server.requests == []
            answered = client.post(f"/v1/repairs/{run_id}/approval", json={"approve": True}, headers=A)
            assert answered.status_code == 202 and answered.json()["status"] in ("queued", "running", "done")
            done = wait_status(client, run_id, SETTLED)
            assert done["status"] == "done" and done["summary"]["verdict"] == "pass", done
            assert len(server.requests) == 1
            assert done["report"]["attempts"][0]["plan"]["tool"] == "openai"
            again = client.post(f"/v1/repairs/{run_id}/approval", json={"approve": True}, headers=A)
            assert again.status_code == 409 and "not waiting for an approval" in one_line(again)
            assert client.post(f"/v1/repairs/{run_id}/approval", json={"approve": "maybe"}, headers=A).status_code == 422

            declined = paused_run(client, case, server)
            client.post(f"/v1/repairs/{declined['id']}/approval", json={"approve": False}, headers=A)
            done = wait_status(client, declined["id"], SETTLED)
            assert done["status"] == "done" and done["summary"]["verdict"] == "fail"
            assert done["report"]["attempts"][0]["outcome"] == "declined"
            assert len(server.requests) == 1  # the declined call was never made
        finally:
            os.environ.pop("OPENAI_BASE_URL", None)


def test_cancel_keeps_the_image_so_far_and_a_slow_repair_never_blocks_checks(client, openai_key, darkened):
    """One worker, held by a paid call that hangs: checks still answer, a second run waits queued and
    is cancelled before it starts; the running run is cancelled, stops at its next step after the call
    returns, and delivers the image so far. A paused run is cancelled too."""
    from tests.test_repair_loop import blurrier

    case = blurred_case()
    release = threading.Event()

    def answer(request):
        release.wait(60)
        return blurrier(request)

    with OpenAIImagesServer(image=answer) as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        try:
            parts = files(candidate=png(case.candidate), source=png(case.source))
            running = client.post("/v1/repairs", files=parts, data={"backend": "openai"}, headers=A).json()
            deadline = time.monotonic() + 90
            while not server.requests and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(server.requests) == 1
            started = time.perf_counter()
            source, candidate = darkened
            check = client.post("/v1/checks", files=files(candidate=candidate, source=source), headers=A)
            assert check.status_code == 200 and time.perf_counter() - started < 30
            queued = client.post("/v1/repairs", files=files(candidate=png(case.candidate)), headers=A).json()
            assert client.get(f"/v1/repairs/{queued['id']}", headers=A).json()["status"] == "queued"
            assert client.get("/healthz").json()["queue"] == 1
            gone = client.delete(f"/v1/repairs/{queued['id']}", headers=A)
            assert gone.status_code == 202 and gone.json()["status"] == "cancelled"

            assert client.delete(f"/v1/repairs/{running['id']}", headers=A).json()["status"] == "running"
            release.set()
            done = wait_status(client, running["id"], SETTLED)
            assert done["status"] == "cancelled", done
            assert done["summary"]["stop_reason"].startswith("cancelled")
            assert len(server.requests) == 1
            report = done["report"]
            assert report["stop_reason"].startswith("cancelled") and report["attempts"][0]["outcome"] == "rolled_back"
            final = client.get(f"/v1/repairs/{running['id']}/final", headers=A)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(final.content)).convert("RGB")), case.candidate)
            assert client.get(f"/v1/repairs/{queued['id']}", headers=A).json()["status"] == "cancelled"
        finally:
            os.environ.pop("OPENAI_BASE_URL", None)


def test_a_paused_run_is_cancelled_with_the_image_so_far(client, openai_key):
    case = blurred_case()
    with OpenAIImagesServer() as server:
        os.environ["OPENAI_BASE_URL"] = server.base_url
        try:
            waiting = paused_run(client, case, server)
            assert waiting["status"] == "waiting_approval"
            client.delete(f"/v1/repairs/{waiting['id']}", headers=A)
            done = wait_status(client, waiting["id"], SETTLED)
        finally:
            os.environ.pop("OPENAI_BASE_URL", None)
        assert server.requests == []
    assert done["status"] == "cancelled" and done["report"]["attempts"] == []
    assert client.get(f"/v1/repairs/{waiting['id']}/final", headers=A).status_code == 200
    assert client.post(f"/v1/repairs/{waiting['id']}/approval", json={"approve": True}, headers=A).status_code == 409


# ---- real servers -------------------------------------------------------------------------------


class LiveServer:
    """The app on uvicorn in a thread, bound to a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


@pytest.mark.slow
def test_two_checks_in_parallel_give_the_same_reports_as_one_at_a_time(tmp_path, darkened):
    from fixloop.apps.http import create_app

    source, candidate = darkened
    blurred = blurred_case(384)
    pairs = [files(candidate=candidate, source=source), files(candidate=png(blurred.candidate), source=png(blurred.source))]
    with LiveServer(create_app(settings_for(tmp_path, workers=2))) as live:
        with httpx.Client(base_url=live.url, headers=A, timeout=120) as http:
            alone = [http.post("/v1/checks", files=p).json() for p in pairs]
            together: list = [None, None]

            def post(i):
                with httpx.Client(base_url=live.url, headers=A, timeout=120) as own:
                    together[i] = own.post("/v1/checks", files=pairs[i]).json()

            threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
    assert [comparable(r) for r in together] == [comparable(r) for r in alone]
    assert alone[0]["findings"][0]["kind"] == "exposure_drift" and alone[1]["findings"][0]["kind"] == "texture_blur"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen([*FIXLOOP, "serve", "--port", str(port), "--workers", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("restart", ["resumes", "reports interrupted"])
def test_a_server_killed_during_a_paid_call_picks_the_run_up_without_repeating_a_finished_call(tmp_path, restart):
    """The first paid call finishes (rolled back); the server is killed with SIGKILL while the second is
    in flight. Started again, it resumes the run from its checkpoint (or reports it interrupted with
    its resume command, and resumes it on request): the second call is made again, never the first."""
    from tests.test_repair_loop import blurrier, clean_fix, editable

    case = blurred_case()
    release = threading.Event()
    phase = {"now": "first server"}

    def answer(request):
        if phase["now"] == "first server":
            if len(server.requests) == 1:
                return blurrier(request)
            release.wait(60)
        return clean_fix(case.source)(request)

    with OpenAIImagesServer(image=answer) as server:
        env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home"), "FIXLOOP_API_KEYS": KEY_A,
               "FIXLOOP_WARMUP": "0", "OPENAI_API_KEY": "sk-loopback", "OPENAI_BASE_URL": server.base_url}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        first = start_server(env, port)
        try:
            response = httpx.post(f"{url}/v1/repairs", headers=A, timeout=60, data={"backend": "openai"},
                                  files=files(candidate=png(case.candidate), source=png(case.source)))
            assert response.status_code == 202, response.text
            run_id = response.json()["id"]
            deadline = time.monotonic() + 120
            while len(server.requests) < 2 and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.05)
            assert len(server.requests) == 2
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        release.set()
        phase["now"] = "second server"
        if restart == "reports interrupted":
            env["FIXLOOP_RESUME_INTERRUPTED"] = "0"
        second = start_server(env, port)
        try:
            with httpx.Client(base_url=url, headers=A, timeout=60) as http:
                if restart == "reports interrupted":
                    body = http.get(f"/v1/repairs/{run_id}").json()
                    assert body["status"] == "interrupted", body
                    assert body["resume_command"] == f"fixloop repair --resume {run_id}"
                    assert f"POST /v1/repairs/{run_id}/resume" in body["error"]
                    assert http.post(f"/v1/repairs/{run_id}/resume").status_code == 202
                done = wait_status(http, run_id, SETTLED, timeout=180)
                assert http.post(f"/v1/repairs/{run_id}/resume").status_code == 409
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        masks = [editable(r) for r in server.requests]
    assert done["status"] == "done" and done["summary"]["verdict"] == "pass", done
    assert len(masks) == 3  # first, the killed second, the second again
    assert not np.array_equal(masks[0], masks[2]) and np.array_equal(masks[1], masks[2])
    assert [a["outcome"] for a in done["report"]["attempts"]] == ["rolled_back", "accepted"]
    texts = [e["text"] for e in done["events"]]
    assert any(t.startswith("the server restarted during the run") for t in texts) == (restart == "resumes")


@pytest.mark.slow
def test_the_load_bench_runs_against_a_real_server():
    result = subprocess.run([sys.executable, "-m", "bench.http_load", "--clients", "2", "--seconds", "3",
                             "--workers", "1", "--no-write"], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    row = [line for line in result.stdout.splitlines() if line.startswith("| 1 |")]
    assert row and row[0].endswith("| 0 |"), result.stdout  # no errors
