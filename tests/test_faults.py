"""Issue 14 item 7: faults of a remote backend, injected on loopback, through the real openai client.

429 with Retry-After, 500 and 503 are retried within the seconds left; a connection reset before any
answer is retried; a response slower than the timeout, a body that is not JSON, a 200 without image
data and an image of another framing are never sent again (the call may have been charged) and end
the attempt with a one-line cause; a moderation refusal is never retried; an endpoint that cannot be
reached ends the run, with its report, well within 60 s."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fixloop.tools.base import ModerationBlocked, RepairError, RepairRequest
from fixloop.tools.openai_images import EndpointUnreachable, openai_edit
from tests.openai_server import OpenAIImagesServer, moderation_error

IMAGE = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def edit(base_url: str, **parameters):
    return openai_edit(RepairRequest(image=IMAGE, prompt="fix the colours", parameters={
        "base_url": base_url, "api_key": "sk-loopback", "model": "gpt-image-2", **parameters}))


def one_line(exc: BaseException) -> str:
    assert "\n" not in str(exc) and str(exc)
    return str(exc)


class FaultServer:
    """Raw faults the Images API stand-in cannot give: a reset, a slow answer, a body that is not JSON."""

    def __init__(self, *faults: str, delay: float = 3.0):
        self.faults = deque(faults)
        self.delay = delay
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            break
                else:
                    self.rfile.read(length)
                owner.requests += 1
                fault = owner.faults.popleft() if owner.faults else "badjson"
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "slow":
                    time.sleep(owner.delay)
                body = b"{this is not json" if fault in ("badjson", "slow") else json.dumps({"created": 1}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_statuses_are_retried_and_succeed(status):
    with OpenAIImagesServer(statuses=[status, status], retry_after_ms=20) as server:
        result = edit(server.base_url)
        assert server.statuses == [status, status, 200]
    assert result.image.shape == IMAGE.shape and result.parameters["attempts"] == 3


def test_retry_after_is_honoured_and_a_wait_past_the_deadline_is_not_made():
    with OpenAIImagesServer(statuses=[429], retry_after_ms=300) as server:
        started = time.monotonic()
        edit(server.base_url)
        assert time.monotonic() - started >= 0.3
    with OpenAIImagesServer(statuses=[429, 429], retry_after_ms=30_000) as server:
        started = time.monotonic()
        with pytest.raises(RepairError) as caught:
            edit(server.base_url, deadline_s=5)
        assert time.monotonic() - started < 3
        assert len(server.requests) == 1
    assert "seconds budget" in one_line(caught.value) and "429" in str(caught.value)


def test_retries_stop_at_max_retries_with_a_one_line_cause():
    with OpenAIImagesServer(statuses=[500] * 5, retry_after_ms=1) as server:
        with pytest.raises(RepairError) as caught:
            edit(server.base_url, max_retries=2)
        assert len(server.requests) == 3
    assert "HTTP 500" in one_line(caught.value) and "3 attempts" in str(caught.value)


def test_moderation_is_never_retried():
    with OpenAIImagesServer(statuses=[moderation_error()]) as server:
        with pytest.raises(ModerationBlocked) as caught:
            edit(server.base_url)
        assert len(server.requests) == 1
    one_line(caught.value)


@pytest.mark.parametrize("body", [{"created": 1, "data": []}, {"created": 1}])
def test_a_200_without_image_data_is_not_paid_for_twice(body):
    with OpenAIImagesServer(statuses=[(200, body)]) as server:
        with pytest.raises(RepairError) as caught:
            edit(server.base_url)
        assert len(server.requests) == 1
    one_line(caught.value)


def test_an_image_of_another_framing_is_refused_once():
    with OpenAIImagesServer(image=np.zeros((40, 400, 3), np.uint8), strict=False) as server:
        with pytest.raises(RepairError) as caught:
            edit(server.base_url)
        assert len(server.requests) == 1
    assert "40" in one_line(caught.value) and "framing" in str(caught.value)


def test_an_image_at_another_scale_is_used():
    with OpenAIImagesServer(image=lambda request: np.zeros((96 * 4, 128 * 4, 3), np.uint8)) as server:
        result = edit(server.base_url, size="auto")
        assert len(server.requests) == 1
    assert result.image.shape == IMAGE.shape


def test_a_body_that_is_not_json_is_not_paid_for_twice():
    with FaultServer("badjson") as server:
        with pytest.raises(RepairError) as caught:
            edit(server.base_url)
        assert server.requests == 1
    assert "not JSON" in one_line(caught.value) or "not an Images API" in str(caught.value)


def test_a_slow_answer_times_out_and_is_not_sent_again():
    with FaultServer("slow", delay=3.0) as server:
        started = time.monotonic()
        with pytest.raises(RepairError) as caught:
            edit(server.base_url, timeout=0.5)
        assert time.monotonic() - started < 2.5
        assert server.requests == 1
    assert "timed out" in one_line(caught.value)


def test_a_reset_before_any_answer_is_retried():
    with FaultServer("reset", "badjson") as server:
        with pytest.raises(RepairError) as caught:
            edit(server.base_url, max_retries=1)
        assert server.requests == 2  # the reset was retried; the 200 that followed was not
    one_line(caught.value)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_is_one_line_and_bounded():
    started = time.monotonic()
    with pytest.raises(EndpointUnreachable) as caught:
        edit(f"http://127.0.0.1:{free_port()}/v1", max_retries=2)
    assert time.monotonic() - started < 10
    assert "cannot reach" in one_line(caught.value)


def test_a_run_against_an_unreachable_backend_ends_with_a_report_within_60_s(tmp_path, monkeypatch):
    from PIL import Image

    from fixloop.agent.runner import start_run
    from fixloop.agent.state import Budget, Outcome, RunInputs
    from tests.test_repair_loop import blurred_case, write_case

    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    case = blurred_case()
    paths = write_case(tmp_path, case.candidate, case.source)
    started = time.monotonic()
    state = start_run(RunInputs(out_dir=str(tmp_path / "run"), backend="openai",
                                base_url=f"http://127.0.0.1:{free_port()}/v1", **paths),
                      Budget(), db=tmp_path / "runs.sqlite")
    assert time.monotonic() - started < 60
    assert state.finished and (tmp_path / "run" / "report.json").is_file()
    failed = [a for a in state.attempts if a.outcome == Outcome.failed]
    assert len(failed) == 1 and failed[0].seconds > 0.5, [(a.outcome, a.seconds) for a in state.attempts]
    assert "cannot reach" in failed[0].reason and "\n" not in failed[0].reason
    assert "cannot be reached" in (state.stop_reason or "")
    Image.open(tmp_path / "run" / "final.png").verify()


def test_a_failed_attempt_records_its_real_duration(tmp_path, monkeypatch):
    from fixloop.agent.runner import start_run
    from fixloop.agent.state import Budget, Outcome, RunInputs
    from tests.test_repair_loop import blurred_case, write_case

    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    case = blurred_case()
    paths = write_case(tmp_path, case.candidate, case.source)
    with OpenAIImagesServer(statuses=[500] * 40, retry_after_ms=400) as server:
        state = start_run(RunInputs(out_dir=str(tmp_path / "run"), backend="openai", base_url=server.base_url,
                                    **paths), Budget(max_passes=1), db=tmp_path / "runs.sqlite")
        assert len(server.requests) == 4  # max_retries=3: 4 sends, none of them charged
    attempt = state.attempts[0]
    assert attempt.outcome == Outcome.failed and attempt.seconds >= 1.2, attempt.seconds
    assert "HTTP 500" in attempt.reason
