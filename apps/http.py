"""The HTTP service and the review page: ``fixloop serve``.

A thin FastAPI layer over :mod:`agent.service` (checks), :mod:`agent.jobs` (repair runs as background
jobs in the runs' SQLite file) and :mod:`agent.uploads` (what an upload is, before any work):

- ``POST /v1/checks``: multipart ``candidate`` [+ ``source``, ``mask``, ``reference``..., ``history``...,
  ``policy`` (TOML text), ``only``...] -> the report of ``fixloop check --json``, synchronously.
- ``POST /v1/repairs`` -> 202 ``{"id", "status", "links"}``; ``GET /v1/repairs[/{id}]``,
  ``GET .../events`` (server-sent events), ``GET .../final``, ``.../review.png``, ``.../attempts/{n}``,
  ``POST .../approval`` ``{"approve": bool}``, ``POST .../resume``, ``DELETE`` (cancel).
- ``GET /healthz``, ``GET /openapi.json``; the review pages ``GET /runs`` and ``GET /runs/{id}``.

Every ``/v1`` route needs ``Authorization: Bearer KEY`` (keys from ``FIXLOOP_API_KEYS`` or a key file);
a client sees only its own runs. A run's page also opens with the token its ``links.page`` carries (a
browser cannot send a header); that token grants that one run's page, images and approval alone.
Uploads are capped in bytes and in decoded pixels (read from the header, before decoding), sniffed by
content, parsed in memory, and never become paths; errors are one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import shutil
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from fixloop.agent.jobs import SETTLED, Job, JobConflict, JobManager, JobStatus, JobStore, resume_command
from fixloop.agent.state import RepairReport
from fixloop.checks.images import InputError

log = logging.getLogger("fixloop.http")
WEB = Path(__file__).with_name("web")
API_KEYS_ENV, KEY_FILE_ENV = "FIXLOOP_API_KEYS", "FIXLOOP_API_KEY_FILE"
MiB = 1024 * 1024


# ---- settings -----------------------------------------------------------------------------------


class Settings(BaseModel):
    """The server's settings: each field from ``FIXLOOP_<NAME>`` in the environment, or given."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=list, repr=False,
                                description="accepted Bearer keys (FIXLOOP_API_KEYS, comma-separated)")
    api_key_file: Path | None = Field(None, description="a file of keys, one a line ('#' comments)")
    host: str = Field("127.0.0.1", description="address to bind (loopback by default)")
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="repair runs that go on at once")
    check_workers: int | None = Field(None, ge=1, le=64, description="checks that run at once (default: workers)")
    max_upload_bytes: int = Field(25 * MiB, ge=1024, description="bytes per uploaded file")
    max_request_bytes: int = Field(100 * MiB, ge=1024, description="bytes per request, all parts together")
    max_pixels: int = Field(40_000_000, ge=64 * 64, description="decoded pixels per image (from its header)")
    max_references: int = Field(8, ge=0, le=64, description="reference (and history) images per request")
    max_analysis_side: int = Field(2048, ge=64, le=16384,
                                   description="the longest side a client's policy may have the checks measure at")
    max_budget_passes: int = Field(20, ge=0, le=100, description="the most repair passes a client may ask for")
    max_budget_usd: float = Field(5.0, ge=0, description="the most US dollars a client may ask for per run")
    max_budget_seconds: float = Field(3600.0, gt=0, description="the most wall seconds a client may ask for")
    home: Path | None = Field(None, description="runs.sqlite and run folders (default FIXLOOP_HOME)")
    resume_interrupted: bool = Field(True, description="resume runs a stopped server left running (else report them interrupted)")
    warmup: bool = Field(True, description="load the check models at start, so the first request is not slow")

    @classmethod
    def from_env(cls, **given: Any) -> "Settings":
        values: dict[str, Any] = {}
        for name, spec in cls.model_fields.items():
            raw = os.environ.get(f"FIXLOOP_{name.upper()}")
            if raw is None or raw == "":
                continue
            if name == "api_keys":
                values[name] = [k.strip() for k in raw.split(",") if k.strip()]
            elif spec.annotation is bool:
                values[name] = raw.strip().lower() not in ("0", "false", "no", "off")
            else:
                values[name] = raw
        values.update({k: v for k, v in given.items() if v is not None})
        try:
            return cls.model_validate(values)
        except Exception as exc:  # pydantic's ValidationError: one line
            first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ("?",), "msg": str(exc)}
            raise InputError(f"server setting {first['loc'][0]}: {first['msg']}") from None

    @property
    def root(self) -> Path:
        from fixloop.agent.runner import home

        return Path(self.home) if self.home is not None else home()

    @property
    def db(self) -> Path:
        return self.root / "runs.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.root / "http-runs"

    def keys(self) -> dict[bytes, str]:
        """sha256(key) -> owner id. The owner id is derived from the key, so it is stable across restarts
        and no key is ever stored."""
        keys = list(self.api_keys)
        if self.api_key_file is not None:
            try:
                lines = Path(self.api_key_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise InputError(f"key file {str(self.api_key_file)!r} cannot be read ({exc.strerror})") from None
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise InputError(f"no API keys: set {API_KEYS_ENV}=KEY[,KEY...] or give a key file (--key-file)")
        digests = {hashlib.sha256(k.encode()).digest(): "client-" + hashlib.sha256(k.encode()).hexdigest()[:12]
                   for k in keys}
        return digests


# ---- wire models --------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong and what to do, in one line")


class CheckForm(BaseModel):
    """``POST /v1/checks``: a ``multipart/form-data`` body. Images are sniffed by content (PNG, JPEG,
    WebP, TIFF, BMP); their names and content types are ignored."""

    candidate: bytes = Field(description="the edited image")
    source: bytes | None = Field(None, description="the image before the edit")
    mask: bytes | None = Field(None, description="edit mask at the source's size: white = where the edit was allowed")
    reference: list[bytes] = Field(default_factory=list, description="identity reference images (repeat the part)")
    history: list[bytes] = Field(default_factory=list, description="earlier passes, oldest first (repeat the part)")
    policy: str | None = Field(None, description="TOML laid over the default policy, like --policy (text or a file part)")
    only: list[str] = Field(default_factory=list, description="run only these checks (repeat the field)")


class RepairForm(BaseModel):
    """``POST /v1/repairs``: a ``multipart/form-data`` body, the inputs of ``fixloop repair``."""

    candidate: bytes = Field(description="the image to repair")
    source: bytes | None = Field(None, description="the image before the edit")
    mask: bytes | None = Field(None, description="edit mask at the source's size")
    reference: list[bytes] = Field(default_factory=list, description="identity reference images")
    policy: str | None = Field(None, description="TOML laid over the default policy")
    backend: Literal["local", "openai", "diffusers"] = "local"
    model: str | None = Field(None, description="GPT Image model name (openai); the diffusion checkpoint is the server's")
    budget_passes: int | None = Field(None, ge=0, description="repair passes at most (default: the policy's)")
    budget_usd: float | None = Field(None, ge=0, description="US dollars at most (default: the policy's)")
    budget_seconds: float | None = Field(None, gt=0, description="wall seconds at most (default: the policy's)")
    approve: bool = Field(False, description="pause before every paid call until POST .../approval answers")
    polish: bool | None = Field(None, description="also repair P2 findings once no P0/P1 is left")


class Links(BaseModel):
    self: str
    events: str
    final: str
    review_sheet: str
    approval: str
    page: str = Field(description="the review page; its token grants this run's page alone")


class RepairAccepted(BaseModel):
    id: str
    status: JobStatus
    links: Links


class EventLine(BaseModel):
    seq: int
    time: float
    event: str
    text: str
    data: dict[str, Any] = Field(default_factory=dict)


class RunSummary(BaseModel):
    verdict: str | None = None
    stop_reason: str | None = None
    passes: int = 0
    usd: float = 0.0
    seconds: float = 0.0
    backend: str | None = None


class RepairStatus(BaseModel):
    id: str
    status: JobStatus
    created: float
    updated: float
    summary: RunSummary
    question: dict[str, Any] | None = Field(None, description="the paid call the run waits on (waiting_approval)")
    error: str | None = Field(None, description="why the run failed or was interrupted")
    resume_command: str | None = Field(None, description="how to resume an interrupted run from a shell")
    events: list[EventLine] = Field(default_factory=list, description="the progress lines so far")
    report: RepairReport | None = Field(None, description="report.json of the run once it has finished")
    links: Links


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    models_loaded: bool = Field(description="the check models are loaded (the warm-up check ran)")
    models: dict[str, bool] = Field(description="model file -> found")
    workers: int
    queue: int = Field(description="repair runs waiting for a worker")
    running: int
    runs: dict[str, int] = Field(description="runs per status")


# ---- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


# ---- uploads: a multipart body parsed in memory, within the caps ---------------------------------


@dataclass
class Uploads:
    files: dict[str, list[bytes]] = field(default_factory=dict)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def file(self, name: str) -> bytes | None:
        values = self.files.get(name)
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


async def read_uploads(request, settings: Settings, file_fields: set[str], text_fields: set[str]) -> Uploads:
    """The multipart body of ``request``, in memory, refused (413) past the byte caps."""
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.datastructures import UploadFile

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, "send the inputs as multipart/form-data (e.g. curl -F candidate=@edit.png)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_request_bytes:
        raise ApiError(413, f"the request is {int(declared):,} bytes, over this server's cap of "
                            f"{settings.max_request_bytes:,}: send smaller images")

    async def capped():
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > settings.max_request_bytes:
                raise ApiError(413, f"the request is over this server's cap of {settings.max_request_bytes:,} bytes: "
                                    "send smaller images")
            yield chunk

    class InMemory(MultiPartParser):
        spool_max_size = settings.max_request_bytes + 1  # the byte cap bounds memory; nothing goes to disk

    parser = InMemory(request.headers, capped(), max_files=2 * settings.max_references + 4, max_fields=64,
                      max_part_size=256 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"the multipart body could not be read: {_one_line(exc.message)}") from None
    uploads = Uploads()
    try:
        for name, value in form.multi_items():
            if name not in file_fields and name not in text_fields:
                known = ", ".join(sorted(file_fields | text_fields))
                raise ApiError(400, f"unknown field {name!r}: use {known}")
            if isinstance(value, UploadFile):
                data = await value.read(settings.max_upload_bytes + 1)
                if len(data) > settings.max_upload_bytes:
                    raise ApiError(413, f"{name} is over this server's cap of {settings.max_upload_bytes:,} bytes "
                                        "per file: send a smaller image")
                if name in text_fields:  # a policy sent as a file part
                    try:
                        uploads.fields.setdefault(name, []).append(data.decode("utf-8"))
                    except UnicodeDecodeError:
                        raise ApiError(400, f"{name} is not UTF-8 text") from None
                else:
                    uploads.files.setdefault(name, []).append(data)
            elif name in file_fields:
                raise ApiError(400, f"{name} must be a file part (e.g. curl -F {name}=@image.png), not a text field")
            else:
                uploads.fields.setdefault(name, []).append(value)
    finally:
        await form.close()
    return uploads


def sniff_all(uploads: Uploads, settings: Settings, roles: list[str]) -> dict[str, list]:
    """Each image part sniffed by content and held to the pixel cap (413) before anything decodes it."""
    from fixloop.agent.uploads import sniff_image

    sniffed: dict[str, list] = {}
    for role in roles:
        parts = uploads.files.get(role, [])
        if role in ("reference", "history") and len(parts) > settings.max_references:
            raise ApiError(413, f"{len(parts)} {role} images, over this server's cap of {settings.max_references}")
        if role not in ("reference", "history") and len(parts) > 1:
            raise ApiError(400, f"{role} was sent {len(parts)} times: send it once")
        label = role
        sniffed[role] = [sniff_image(data, label if len(parts) == 1 else f"{label} {i + 1}", settings.max_pixels)
                         for i, data in enumerate(parts)]
    return sniffed


# ---- the app ------------------------------------------------------------------------------------


class Server:
    """What the routes share: settings, keys, the job manager, the check slots."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = settings.keys()
        self.store: JobStore | None = None
        self.jobs: JobManager | None = None
        self.check_slots = None
        self.models_loaded = threading.Event()

    def start(self) -> None:
        import anyio

        settings = self.settings
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(settings.db)
        self.jobs = JobManager(self.store, settings.db, workers=settings.workers,
                               resume_interrupted=settings.resume_interrupted)
        self.check_slots = anyio.CapacityLimiter(settings.check_workers or settings.workers)
        self.jobs.start()
        if settings.warmup:
            threading.Thread(target=self._warm_up, name="fixloop-warmup", daemon=True).start()

    def stop(self) -> None:
        if self.jobs is not None:
            self.jobs.stop()

    def _warm_up(self) -> None:
        """One check of a small synthetic pair: every model the checks use loads now, not on the first request."""
        import numpy as np

        from fixloop.agent import service

        try:
            y, x = np.mgrid[0:256, 0:256]
            image = np.dstack([x, y, (x + y) // 2]).astype(np.uint8)
            mask = np.zeros((256, 256), dtype=bool)
            mask[64:192, 64:192] = True
            service.check(image, source=image, mask=mask)
        except Exception:  # noqa: BLE001 - a failed warm-up only means the first request loads the models
            log.exception("warm-up check failed")
        finally:
            self.models_loaded.set()

    def owner(self, authorization: str | None) -> str:
        """The client a Bearer key stands for (401 without a valid one); every key is compared."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "send Authorization: Bearer KEY", {"WWW-Authenticate": "Bearer"})
        digest = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for known, owner in self.keys.items():
            if hmac.compare_digest(digest, known):
                found = owner
        if found is None:
            raise ApiError(401, "the key is not valid for this server", {"WWW-Authenticate": "Bearer"})
        return found

    def job_for(self, run_id: str, owner: str) -> Job:
        """The client's own job (404 for an unknown id and for another client's run alike)."""
        job = self.store.get(run_id)
        if job is None or not hmac.compare_digest(job.owner, owner):
            raise ApiError(404, f"no run {run_id!r} for this key")
        return job

    def job_for_page(self, run_id: str, authorization: str | None, token: str | None) -> Job:
        """A run's page: a Bearer key that owns it, or the run's own token (401 with neither, 404 otherwise)."""
        if not token:
            if authorization:
                return self.job_for(run_id, self.owner(authorization))
            raise ApiError(401, "open the page from the run's link (it carries a token) or send Authorization: Bearer KEY",
                           {"WWW-Authenticate": "Bearer"})
        job = self.store.get(run_id)
        if job is None or not hmac.compare_digest(job.token.encode(), token.encode()):
            raise ApiError(404, f"no run {run_id!r} for this token")
        return job


def create_app(settings: Settings | None = None):
    """The FastAPI app. Settings default to the environment's (:meth:`Settings.from_env`)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from fixloop.agent.uploads import TooLarge
    from fixloop.checks.report import Report

    settings = settings or Settings.from_env()
    server = Server(settings)

    @asynccontextmanager
    async def lifespan(app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    # no /docs or /redoc: FastAPI's pages load Swagger UI from a CDN, and many deployments have no internet
    app = FastAPI(title="fixloop", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Catch and repair broken image edits: checks, repair runs and their review pages.")
    app.state.server = server
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")

    # -- errors: one line, never a traceback

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(TooLarge)
    async def too_large(request, exc: TooLarge):
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=413)

    @app.exception_handler(InputError)
    async def bad_input(request, exc: InputError):
        status = 409 if isinstance(exc, JobConflict) else 400
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return JSONResponse({"detail": _one_line(f"{where}: {first.get('msg')}")}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse({"detail": _one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error: the server logged it"}, status_code=500)

    def client(authorization: str | None = Header(None, include_in_schema=False)) -> str:
        return server.owner(authorization)

    def links(request: Request, job: Job) -> Links:
        base = str(request.base_url).rstrip("/")
        api = f"{base}/v1/repairs/{job.id}"
        return Links(self=api, events=f"{api}/events", final=f"{api}/final", review_sheet=f"{api}/review.png",
                     approval=f"{api}/approval", page=f"{base}/runs/{job.id}?token={job.token}")

    errors = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}}
    upload_errors = {400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 413: {"model": ErrorBody},
                     415: {"model": ErrorBody}}

    def form_body(model: type[BaseModel]) -> dict:
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}

    # -- health

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        from fixloop.checks.models import all_status

        return Health(models_loaded=server.models_loaded.is_set(),
                      models={s.spec.name: s.found for s in all_status()}, workers=settings.workers,
                      queue=server.jobs.queue_length(), running=server.jobs.busy(), runs=server.store.counts())

    # -- checks

    check_files = {"candidate", "source", "mask", "reference", "history"}

    @app.post("/v1/checks", response_model=Report, responses=upload_errors, tags=["checks"],
              openapi_extra=form_body(CheckForm),
              summary="Check an edited image (the report of fixloop check --json)")
    async def post_check(request: Request, owner: str = Depends(client)) -> Response:
        import anyio

        from fixloop.agent import service

        uploads = await read_uploads(request, settings, check_files, {"policy", "only"})
        if uploads.file("candidate") is None:
            raise ApiError(400, "candidate is missing: send the edited image as the 'candidate' file part")
        sniffed = sniff_all(uploads, settings, ["candidate", "source", "mask", "reference", "history"])
        policy = _policy(uploads.text("policy"), settings)
        one = lambda role: sniffed[role][0].data if sniffed[role] else None  # noqa: E731

        def run():
            return service.check(one("candidate"), one("source"), one("mask"),
                                 [s.data for s in sniffed["reference"]], [s.data for s in sniffed["history"]],
                                 policy=policy, only=uploads.fields.get("only") or None)

        report = await anyio.to_thread.run_sync(run, limiter=server.check_slots)
        return Response(report.to_json(), media_type="application/json",
                        headers={"X-Fixloop-Verdict": report.verdict})

    # -- repairs

    @app.post("/v1/repairs", status_code=202, response_model=RepairAccepted, responses=upload_errors,
              tags=["repairs"], openapi_extra=form_body(RepairForm), summary="Start a repair run")
    async def post_repair(request: Request, owner: str = Depends(client)) -> Response:
        import anyio

        uploads = await read_uploads(request, settings, {"candidate", "source", "mask", "reference"},
                                     set(RepairForm.model_fields) - {"candidate", "source", "mask", "reference"})
        if uploads.file("candidate") is None:
            raise ApiError(400, "candidate is missing: send the image to repair as the 'candidate' file part")
        form = _repair_form(uploads)
        sniffed = sniff_all(uploads, settings, ["candidate", "source", "mask", "reference"])
        job = await anyio.to_thread.run_sync(_submit, server, owner, form, sniffed, uploads.text("policy"),
                                             limiter=server.check_slots)
        body = RepairAccepted(id=job.id, status=job.status, links=links(request, job))
        return JSONResponse(body.model_dump(mode="json"), status_code=202, headers={"Location": body.links.self})

    @app.get("/v1/repairs", response_model=list[RepairAccepted], responses=errors, tags=["repairs"],
             summary="The client's runs, newest first")
    def list_repairs(request: Request, owner: str = Depends(client)):
        return [RepairAccepted(id=j.id, status=j.status, links=links(request, j)) for j in server.store.jobs(owner)]

    @app.get("/v1/repairs/{run_id}", response_model=RepairStatus, responses=errors, tags=["repairs"],
             summary="Status, progress lines and (once done) the report of a run")
    def get_repair(run_id: str, request: Request, after: int = 0, owner: str = Depends(client)):
        job = server.job_for(run_id, owner)
        return _status(server, job, links(request, job), after)

    @app.get("/v1/repairs/{run_id}/events", responses=errors, tags=["repairs"],
             summary="The progress lines as server-sent events (ends when the run settles)")
    async def repair_events(run_id: str, request: Request, owner: str = Depends(client),
                            last_event_id: str | None = Header(None, include_in_schema=False)):
        from fastapi.responses import StreamingResponse

        job = server.job_for(run_id, owner)
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        return StreamingResponse(_sse(server, job.id, after, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/v1/repairs/{run_id}/approval", status_code=202, response_model=RepairStatus,
              responses={**errors, 409: {"model": ErrorBody}}, tags=["repairs"],
              summary="Answer the paid call a paused run waits on")
    def approve(run_id: str, answer: Approval, request: Request, owner: str = Depends(client)):
        job = server.job_for(run_id, owner)
        job = server.jobs.answer(job.id, answer.approve)
        return JSONResponse(_status(server, job, links(request, job)).model_dump(mode="json"), status_code=202)

    @app.post("/v1/repairs/{run_id}/resume", status_code=202, response_model=RepairStatus,
              responses={**errors, 409: {"model": ErrorBody}}, tags=["repairs"],
              summary="Resume a run the server was stopped during")
    def resume(run_id: str, request: Request, owner: str = Depends(client)):
        job = server.jobs.resume(server.job_for(run_id, owner).id)
        return JSONResponse(_status(server, job, links(request, job)).model_dump(mode="json"), status_code=202)

    @app.delete("/v1/repairs/{run_id}", status_code=202, response_model=RepairStatus, responses=errors,
                tags=["repairs"], summary="Cancel a run (the image so far is kept)")
    def cancel(run_id: str, request: Request, owner: str = Depends(client)):
        job = server.jobs.cancel(server.job_for(run_id, owner).id)
        return JSONResponse(_status(server, job, links(request, job)).model_dump(mode="json"), status_code=202)

    image_responses = {**errors, 200: {"content": {"image/png": {}}, "description": "the image"}}

    @app.get("/v1/repairs/{run_id}/final", responses=image_responses, tags=["repairs"], response_class=Response)
    def final(run_id: str, owner: str = Depends(client)):
        return _image(_run_file(server, server.job_for(run_id, owner), "final"))

    @app.get("/v1/repairs/{run_id}/review.png", responses=image_responses, tags=["repairs"], response_class=Response)
    def review_sheet(run_id: str, owner: str = Depends(client)):
        return _image(_run_file(server, server.job_for(run_id, owner), "review"))

    @app.get("/v1/repairs/{run_id}/attempts/{n}", responses=image_responses, tags=["repairs"], response_class=Response)
    def attempt_image(run_id: str, n: int, owner: str = Depends(client)):
        return _image(_run_file(server, server.job_for(run_id, owner), "attempt", n))

    # -- the review pages

    pages = _templates()
    page_headers = {
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
                                   "script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                                   "base-uri 'none'",
        "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

    def html(name: str, code: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(pages.get_template(name).render(**context), status_code=code, headers=page_headers)

    @app.get("/runs", response_class=HTMLResponse, tags=["pages"], summary="The client's runs (Bearer key)")
    def runs_page(request: Request, owner: str = Depends(client)):
        return html("runs.html", jobs=server.store.jobs(owner), when=_when)

    @app.get("/runs/{run_id}", response_class=HTMLResponse, tags=["pages"],
             summary="The review page of a run (Bearer key, or the token of the run's link)")
    def run_page(run_id: str, request: Request, token: str | None = Query(None),
                 authorization: str | None = Header(None, include_in_schema=False)):
        job = server.job_for_page(run_id, authorization, token)
        return html("run.html", **_page(server, job, links(request, job)))

    @app.get("/runs/{run_id}/state", tags=["pages"], summary="Status of a run for its page")
    def run_page_state(run_id: str, token: str | None = Query(None),
                       authorization: str | None = Header(None, include_in_schema=False)):
        job = server.job_for_page(run_id, authorization, token)
        return {"status": job.status.value, "events": len(server.store.events(job.id)), "updated": job.updated}

    @app.get("/runs/{run_id}/files/{which}", tags=["pages"], response_class=Response,
             summary="An image of the run's page: input, after, final, review, attempt-N")
    def run_page_file(run_id: str, which: str, token: str | None = Query(None),
                      authorization: str | None = Header(None, include_in_schema=False)):
        job = server.job_for_page(run_id, authorization, token)
        if which.startswith("attempt-") and which[8:].isdigit():
            return _image(_run_file(server, job, "attempt", int(which[8:])))
        if which not in ("input", "after", "final", "review"):
            raise ApiError(404, f"no file {which!r}")
        return _image(_run_file(server, job, which))

    @app.post("/runs/{run_id}/approval", tags=["pages"], summary="Approve or reject from the page (a form)")
    def run_page_approval(run_id: str, request: Request, decision: Literal["approve", "reject"] = Form(...),
                          token: str | None = Form(None),
                          authorization: str | None = Header(None, include_in_schema=False)):
        job = server.job_for_page(run_id, authorization, token)
        server.jobs.answer(job.id, decision == "approve")
        return RedirectResponse(f"/runs/{job.id}?token={job.token}", status_code=303)

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (CheckForm, RepairForm):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        # the report models exactly as `fixloop schema` publishes them (FastAPI's own rendering drops
        # null defaults), so a client generated from this document reads report.json the same way
        for model in (Report, RepairReport):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


# ---- the review page ----------------------------------------------------------------------------


def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(str(WEB / "templates")), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            return opened.size
    except (OSError, ValueError):
        return None


def _box_style(box, size) -> str | None:
    """A finding's box (pixels of the input) as CSS percentages over the picture."""
    if not box or not size:
        return None
    x0, y0, x1, y1 = box
    w, h = size
    return (f"left:{100 * x0 / w:.3f}%;top:{100 * y0 / h:.3f}%;"
            f"width:{100 * (x1 - x0) / w:.3f}%;height:{100 * (y1 - y0) / h:.3f}%")


def _page(server: Server, job: Job, links: Links) -> dict[str, Any]:
    """What the review page shows, from the job, its checkpoint and its progress lines."""
    from fixloop.agent import service
    from fixloop.agent.outputs import HIDDEN_PARAMETERS

    state = server.jobs.state(job.id)
    events = server.store.events(job.id)
    first = next((e for e in events if e.event == "inspect"), None)
    size = _image_size(Path(job.order["image"]))
    final_keys = {f.key for f in state.findings} if state is not None else set()
    open_keys = set(state.open_defects) | set(state.held_back) if state is not None else set()
    regions = []
    for f in (first.data.get("findings", []) if first else []):
        still = f["key"] in final_keys or f["key"] in open_keys
        regions.append({**f, "style": _box_style(f.get("box"), size),
                        "state": ("open" if still else "fixed") if state is not None and state.finished else
                                 ("found" if still or not state else "fixed")})
    attempts = []
    for a in state.attempts if state is not None else []:
        parameters = {k: v for k, v in {**a.plan.parameters, **a.tool_parameters}.items() if k not in HIDDEN_PARAMETERS}
        attempts.append({"index": a.index, "kind": a.plan.target.kind, "priority": a.plan.target.priority,
                         "stage": a.plan.target.stage, "template": a.plan.template, "tool": a.plan.tool,
                         "change": a.plan.change, "salvage": a.plan.salvage, "paid": a.plan.paid,
                         "parameters": _short_params(parameters), "cost": a.cost_usd, "seconds": a.seconds,
                         "outcome": a.outcome.value if a.outcome else "pending", "reason": a.reason,
                         "image": a.image is not None})
    open_defects = [*state.open_defects.values(), *state.held_back.values()] if state is not None else []
    question = service.waiting_for_approval(job.id, server.settings.db) if job.status == JobStatus.waiting_approval else None
    token = job.token
    from fixloop.agent.jobs import summary_of

    summary = summary_of(state) if state is not None else job.summary
    return {"job": job, "status": job.status.value, "summary": summary, "state": state, "links": links,
            "question": question, "regions": regions, "attempts": attempts, "open_defects": open_defects,
            "final_findings": state.findings if state is not None else [], "events": events, "size": size,
            "file": lambda which: f"/runs/{job.id}/files/{which}?token={token}", "token": token,
            "when": _when, "finished": bool(state is not None and state.finished)}


def _short_params(parameters: dict[str, Any]) -> list[tuple[str, str]]:
    shown = []
    for key, value in sorted(parameters.items()):
        text = json.dumps(value, default=str) if not isinstance(value, str) else value
        shown.append((key, text if len(text) <= 80 else text[:77] + "..."))
    return shown


def _policy(text: str | None, settings: Settings):
    """A client's policy laid over the defaults; it may not make the checks measure at more pixels than
    the server allows (its byte and pixel caps are not in the policy at all)."""
    from fixloop.agent.uploads import policy_from_text

    if text is None or not text.strip():
        return None
    policy = policy_from_text(text)
    if policy.analysis.max_side > settings.max_analysis_side:
        raise ApiError(400, f"policy: analysis.max_side {policy.analysis.max_side} is over this server's limit of "
                            f"{settings.max_analysis_side}: ask for less")
    return policy


def _repair_form(uploads: Uploads) -> RepairForm:
    from pydantic import ValidationError

    values: dict[str, Any] = {name: uploads.text(name) for name in RepairForm.model_fields
                              if uploads.text(name) is not None and name not in ("policy",)}
    for flag in ("approve", "polish"):
        if flag in values:
            values[flag] = values[flag].strip().lower() in ("1", "true", "yes", "on")
    try:
        return RepairForm.model_validate({"candidate": b"", **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(400, _one_line(f"{first['loc'][0]}: {first['msg']}")) from None


def _submit(server: Server, owner: str, form: RepairForm, sniffed: dict[str, list], policy_text: str | None) -> Job:
    """Validate a repair (decode, fit the inputs together, budgets within the server's caps), write its
    inputs into a new run folder and queue it. Nothing is written when it is refused."""
    import re

    from fixloop.agent import service
    from fixloop.agent.uploads import validate_inputs
    from fixloop.checks.report import atomic_path

    settings = server.settings
    policy = _policy(policy_text, settings) or service.resolve_policy(None)
    if form.model is not None and (form.backend != "openai" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", form.model)):
        raise ApiError(400, "model names a GPT Image model (backend openai); the diffusion checkpoint is the server's "
                            "(FIXLOOP_DIFFUSION_MODEL): leave model out")
    service.backend_ready(form.backend, form.model, policy)
    caps = {"budget_passes": (form.budget_passes, policy.repair.max_passes, settings.max_budget_passes),
            "budget_usd": (form.budget_usd, policy.repair.max_usd, settings.max_budget_usd),
            "budget_seconds": (form.budget_seconds, policy.repair.max_seconds, settings.max_budget_seconds)}
    limits = {}
    for name, (asked, default, cap) in caps.items():
        if asked is not None and asked > cap:
            raise ApiError(400, f"{name} {asked:g} is over this server's limit of {cap:g}: ask for less")
        limits[name] = asked if asked is not None else min(default, cap)
    one = lambda role: sniffed[role][0] if sniffed[role] else None  # noqa: E731
    validate_inputs(one("candidate").data, one("source") and one("source").data, one("mask") and one("mask").data,
                    [s.data for s in sniffed["reference"]], policy)

    run_id = service.new_run_id()
    folder = settings.runs_dir / run_id
    try:
        inputs = folder / "inputs"
        inputs.mkdir(parents=True)

        def write(item, name: str) -> str | None:
            if item is None:
                return None
            target = inputs / f"{name}{item.suffix}"
            with atomic_path(target) as tmp:
                Path(tmp).write_bytes(item.data)
            return str(target)

        policy_path = None
        if policy_text is not None and policy_text.strip():
            policy_path = inputs / "policy.toml"
            policy_path.write_text(policy_text, encoding="utf-8")
        order = service.RepairOrder(
            image=write(one("candidate"), "image"), source=write(one("source"), "source"), mask=write(one("mask"), "mask"),
            references=[write(r, f"reference-{i + 1}") for i, r in enumerate(sniffed["reference"])],
            backend=form.backend, model=form.model, max_passes=int(limits["budget_passes"]),
            max_usd=float(limits["budget_usd"]), max_seconds=float(limits["budget_seconds"]), out=str(folder),
            approve=form.approve, polish=form.polish, policy=None if policy_path is None else str(policy_path),
            run_id=run_id)
        return server.jobs.submit(order, owner)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _status(server: Server, job: Job, links: Links, after: int = 0) -> RepairStatus:
    from fixloop.agent import service

    from fixloop.agent.jobs import summary_of

    question = report = None
    state = None if job.status in (JobStatus.queued, JobStatus.failed) else server.jobs.state(job.id)
    summary = summary_of(state) if state is not None else job.summary  # live while the run goes on
    if job.status == JobStatus.waiting_approval:
        question = service.waiting_for_approval(job.id, server.settings.db)
    if state is not None and state.finished:
        report = service.run_report(state)
    return RepairStatus(
        id=job.id, status=job.status, created=job.created, updated=job.updated, summary=RunSummary(**summary),
        question=question, error=job.error,
        resume_command=resume_command(job.id) if job.status == JobStatus.interrupted else None,
        events=[EventLine(**vars(e)) for e in server.store.events(job.id, after)], report=report, links=links)


async def _sse(server: Server, run_id: str, after: int, request):
    """Stored lines first, then new ones as they come; a ``status`` event on every change of status; the
    stream ends once the run settles (done, failed, cancelled, interrupted)."""
    from starlette.concurrency import run_in_threadpool

    last_status, quiet = None, 0.0
    while True:
        events = await run_in_threadpool(server.store.events, run_id, after)
        for e in events:
            after = e.seq
            payload = json.dumps({"seq": e.seq, "time": e.time, "event": e.event, "text": e.text, "data": e.data})
            yield f"id: {e.seq}\nevent: progress\ndata: {payload}\n\n"
        job = await run_in_threadpool(server.store.get, run_id)
        if job.status != last_status:
            last_status = job.status
            yield f"event: status\ndata: {json.dumps({'status': job.status.value, 'summary': job.summary})}\n\n"
        if job.status in SETTLED:
            return
        if await request.is_disconnected():
            return
        if events:
            quiet = 0.0
        else:
            quiet += 0.25
            if quiet >= 15:
                quiet = 0.0
                yield ": keep-alive\n\n"
        await asyncio.sleep(0.25)


def _run_file(server: Server, job: Job, which: str, n: int | None = None) -> Path:
    """A file of a run the client may see: the input, the final or current image, the review sheet, an
    attempt's output. Only paths the run itself recorded, all inside its folder."""
    from fixloop.agent.outputs import final_name

    folder = job.out_dir.resolve()
    state = server.jobs.state(job.id)
    path: Path | None = None
    if which == "input":
        path = Path(job.order["image"])
    elif which == "final":
        if state is None or not state.finished:
            raise ApiError(404, f"run {job.id!r} has no final image yet (it is {job.status.value})")
        path = folder / final_name(state.inputs.output_format)
    elif which == "after":  # the final image, or the best so far while the run goes on
        if state is not None and state.finished:
            path = folder / final_name(state.inputs.output_format)
        elif state is not None and state.current_image:
            path = Path(state.current_image) if Path(state.current_image).is_absolute() else folder / state.current_image
        else:
            path = Path(job.order["image"])
    elif which == "review":
        if state is None or not state.finished:
            raise ApiError(404, f"run {job.id!r} has no review sheet yet (it is {job.status.value})")
        path = folder / "review.png"
    elif which == "attempt":
        attempt = next((a for a in (state.attempts if state else []) if a.index == n), None)
        if attempt is None or attempt.image is None:
            raise ApiError(404, f"run {job.id!r} has no image for attempt {n}")
        path = folder / attempt.image
    path = path.resolve()
    if folder not in path.parents or not path.is_file():
        raise ApiError(404, f"run {job.id!r} has no such file")
    return path


def _image(path: Path):
    from fastapi.responses import FileResponse

    media = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
             ".tif": "image/tiff", ".tiff": "image/tiff", ".bmp": "image/bmp"}.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=60"})


def serve(host: str | None = None, port: int | None = None, workers: int | None = None,
          key_file: Path | None = None, log_level: str = "info") -> None:
    """Start the server (blocking) with settings from the environment and the given overrides."""
    import uvicorn

    settings = Settings.from_env(host=host, port=port, workers=workers, api_key_file=key_file)
    settings.keys()  # no keys: one line, before anything starts
    from fixloop.agent.jobs import claim_store

    claim_store(settings.db)  # another server on this FIXLOOP_HOME: one line too
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, proxy_headers=False,
                timeout_graceful_shutdown=5)
