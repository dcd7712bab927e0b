"""The daemon's HTTP/JSON API (FastAPI): everything the Python API does, plus a live,
resumable event stream (Server-Sent Events).

Handlers that call the Hive are plain ``def``: they block on actor replies, so FastAPI runs
them in its thread pool and the event loop stays free for streams.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hive_actors import __version__
from hive_actors._engine import Engine
from hive_actors._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hive_actors._models import Event, HostInfo, SessionInfo
from hive_actors._states import SETTLED
from hive_actors._validate import MAX_JSON_DEPTH, pydantic_problem
from hive_actors.errors import (
    HiveClosed,
    HiveError,
    HostUnavailable,
    InvalidInput,
    InvalidRepository,
    InvalidTransition,
    PortsExhausted,
    SessionNotFound,
)

T = TypeVar("T")

MAX_WAIT = 300.0
"""The longest one wait request blocks; clients wait longer by asking again."""
LOG_FOLLOW_INTERVAL = 0.1
"""How often a followed log is checked for growth (like tail -f without inotify)."""
MAX_TAIL_LINES = 10_000

_ERRORS: list[tuple[type[Exception], int, str]] = [
    (SessionNotFound, 404, "not_found"),
    (InvalidInput, 422, "invalid_input"),
    (InvalidTransition, 409, "invalid_transition"),
    (HostUnavailable, 409, "host_unavailable"),
    (PortsExhausted, 409, "ports_exhausted"),
    (HiveClosed, 503, "shutting_down"),
    (HiveError, 500, "hive_error"),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Body):
    task: str
    priority: Literal["high", "medium", "low"] = "medium"
    metadata: dict[str, Any] | None = None
    command: list[str] | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    role: str | None = None
    persistent: bool = False
    restart: Literal["never", "on-failure", "always"] = "never"
    restart_limit: int = 3
    restart_backoff: float = 1.0
    host: str | None = None
    """A cluster host's name (a daemon serving a Ray cluster); else the least loaded."""
    repo: str | None = None
    """An absolute path to a git repository on the daemon's machine (the host's, on a
    cluster): the session's working dir is a new worktree of it, on its own branch."""
    ref: str | None = None
    """The branch, tag or commit the worktree starts at; default the repository's HEAD."""
    setup: list[str] | None = None
    """The setup step (argv) run before the agent's first run; default the daemon's."""
    ports: int | None = None
    """TCP ports of its own (``HIVE_PORT``, ``HIVE_PORTS``); default ``ports_per_session``."""
    stall_timeout: float | None = None
    """Seconds its running agent's log may stay still before it counts as stalled."""
    stall_action: Literal["none", "terminate", "restart"] | None = None
    """What a stall does besides its event; default the daemon's ``stall_action``."""
    resume_command: list[str] | None = None
    """The argv template of every run after the first (``{task}``, ``{session_id}``, ``{run}``)."""
    limits: dict[str, Any] | None = None
    """``{"memory": "2G", "pids": 512, "cpus": 1.5}``, any of them; default the daemon's."""


class StartBody(_Body):
    args: list[str] | None = None


class TerminateBody(_Body):
    grace: float | None = None


class MessageBody(_Body):
    role: str
    content: str


class FileBody(_Body):
    path: str


class FileIndexBody(_Body):
    path: str
    info: dict[str, Any]


class CleanupBody(_Body):
    max_age_hours: float = 24


class StatusReply(BaseModel):
    session_id: str
    status: str


class WaitReply(StatusReply):
    settled: bool


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    pid: int
    root: str
    created: str
    sessions: int
    last_seq: int
    cgroup_mode: str
    """How runs are contained and limited: ``v2``, ``hybrid``, ``v1`` or ``none``."""


def create_app(
    hive: Engine, shutdown: Callable[[], None], stopping: asyncio.Event | None = None
) -> FastAPI:
    """The API for ``hive``.

    ``shutdown`` is called (from a worker thread) by POST /shutdown; once ``stopping`` is
    set, open event and log streams end so the daemon can stop without waiting for them.
    """
    stopping = stopping or asyncio.Event()
    app = FastAPI(
        title="hive_actors",
        version=__version__,
        description="Session supervisor for AI coding agents: one isolated workspace, "
        "database, log and process per session.",
    )

    for error_type, http_status, code in _ERRORS:
        app.add_exception_handler(error_type, _error_handler(http_status, code))
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    _dashboard_routes(app)
    _daemon_routes(app, hive, shutdown)
    _session_routes(app, hive, stopping)
    _context_routes(app, hive)
    _event_routes(app, hive, stopping)
    return app


DASHBOARD = Path(__file__).with_name("dashboard")
_PAGE, _ASSETS = "/", "/dashboard"
_NO_STORE = {"Cache-Control": "no-store"}


def is_public(method: str | None, path: str) -> bool:
    """The dashboard's page and assets: served without a token (they hold no data; every
    call they make for data sends the token)."""
    return method == "GET" and (path == _PAGE or path.startswith(_ASSETS + "/"))


def _dashboard_routes(app: FastAPI) -> None:
    @app.get(_PAGE, response_class=FileResponse, include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html", headers=_NO_STORE)

    app.mount(_ASSETS, StaticFiles(directory=DASHBOARD), name="dashboard")


def _daemon_routes(app: FastAPI, hive: Engine, shutdown: Callable[[], None]) -> None:

    @app.get("/health", response_model=Health, tags=["daemon"])
    def health() -> Health:
        """Liveness, and what this daemon serves."""
        stats = hive.stats()
        return Health(
            version=__version__,
            pid=os.getpid(),
            root=str(hive.root),
            created=hive.created,
            sessions=stats.sessions,
            last_seq=stats.last_seq,
            cgroup_mode=stats.cgroup_mode,
        )

    @app.get("/metrics", response_class=Response, tags=["daemon"])
    def metrics() -> Response:
        """Prometheus metrics: sessions by state, transitions, restarts, spawn errors,
        queue length, subscribers, and lifecycle durations as histograms."""
        return Response(hive.metrics(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/hosts", tags=["daemon"])
    def hosts() -> dict[str, list[HostInfo]]:
        """A cluster's hosts (a daemon serving a Ray cluster): name, alive, load, since.
        Empty for a daemon serving one Hive."""
        return {"hosts": hive.hosts()}

    @app.post("/shutdown", status_code=202, tags=["daemon"])
    def shutdown_daemon() -> dict[str, str]:
        """Stop the daemon: running sessions are terminated with their grace period."""
        shutdown()
        return {"status": "shutting_down"}


def _absolute(repo: str | None) -> str | None:
    """A repository path from a client: absolute, since the daemon's working dir is not
    the client's."""
    if repo is not None and not os.path.isabs(repo):
        raise InvalidRepository(
            f"repo must be an absolute path on the daemon's machine, not {repo!r}"
        )
    return repo


def _session_routes(app: FastAPI, hive: Engine, stopping: asyncio.Event) -> None:

    @app.post("/sessions", response_model=SessionInfo, status_code=201, tags=["sessions"])
    def create(body: CreateBody) -> SessionInfo:
        """Create a session (UUID, working dir, memory.db, output dir, log)."""
        session_id = hive.create_session(
            body.task,
            body.priority,
            body.metadata,
            command=body.command,
            args=body.args,
            env=body.env,
            role=body.role,
            persistent=body.persistent,
            restart=body.restart,
            restart_limit=body.restart_limit,
            restart_backoff=body.restart_backoff,
            host=body.host,
            repo=_absolute(body.repo),
            ref=body.ref,
            setup=body.setup,
            ports=body.ports,
            stall_timeout=body.stall_timeout,
            stall_action=body.stall_action,
            resume_command=body.resume_command,
            limits=body.limits,
        )
        return hive.get_session_info(session_id)

    @app.get("/sessions", tags=["sessions"])
    def list_sessions(status: str | None = None) -> dict[str, list[SessionInfo]]:
        """Every session (or those with ``status``), oldest first."""
        return {"sessions": hive.list_sessions(status)}

    @app.get("/sessions/{session_id}", response_model=SessionInfo, tags=["sessions"])
    def get(session_id: str) -> SessionInfo:
        return hive.get_session_info(session_id)

    @app.get("/sessions/{session_id}/status", response_model=StatusReply, tags=["sessions"])
    def status(session_id: str) -> StatusReply:
        """The status word; ``not_found`` (with 200) for an unknown id."""
        return StatusReply(session_id=session_id.lower(), status=hive.status(session_id))

    @app.post("/sessions/{session_id}/start", response_model=StatusReply, tags=["sessions"])
    def start(session_id: str, body: StartBody | None = None) -> StatusReply:
        """Start the agent; answers once the spawn was tried (running, or failed)."""
        args = None if body is None else body.args
        result = hive.start_session(session_id, args)
        return StatusReply(session_id=session_id.lower(), status=result)

    @app.post("/sessions/{session_id}/terminate", response_model=StatusReply, tags=["sessions"])
    def terminate(session_id: str, body: TerminateBody | None = None) -> StatusReply:
        """SIGTERM to the agent's group, SIGKILL after the grace period."""
        grace = None if body is None else body.grace
        result = hive.terminate_session(session_id, grace)
        return StatusReply(session_id=session_id.lower(), status=result)

    @app.get("/sessions/{session_id}/wait", response_model=WaitReply, tags=["sessions"])
    def wait(
        session_id: str, timeout: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 30.0
    ) -> WaitReply:
        """Block until the session is settled or ``timeout`` s pass (then ``settled`` false)."""
        try:
            result = hive.wait(session_id, timeout)
        except TimeoutError:
            result = hive.status(session_id)
        return WaitReply(session_id=session_id.lower(), status=result, settled=result in SETTLED)

    @app.get("/sessions/{session_id}/output-dir", tags=["sessions"])
    def output_dir(session_id: str) -> dict[str, str]:
        return {"output_dir": hive.output_dir(session_id)}

    @app.get("/sessions/{session_id}/log", tags=["logs"])
    def log(
        session_id: str, tail: Annotated[int, Query(ge=0, le=MAX_TAIL_LINES)] = 50
    ) -> dict[str, Any]:
        """The log's path, size and last ``tail`` lines."""
        size, text = hive.log_tail(session_id, tail)
        return {"log_file": hive.log_file(session_id), "size": size, "tail": text}

    @app.get("/sessions/{session_id}/log/stream", tags=["logs"])
    async def log_stream(
        session_id: str,
        offset: Annotated[int, Query(ge=0)] = 0,
        follow: bool = True,
    ) -> StreamingResponse:
        """The log's bytes from ``offset``; with ``follow``, until the session is settled."""
        hive.log_file(session_id)  # SessionNotFound before the response starts
        return StreamingResponse(
            until(stopping, _follow_log(hive, session_id, offset, follow)),
            media_type="text/plain",
        )

    @app.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
    def remove(session_id: str, delete_branch: bool = False) -> Response:
        """Remove one ended session (409 while it is live: terminate it first). A worktree
        is removed from its repository; its branch is kept unless ``delete_branch``."""
        hive.remove_session(session_id, delete_branch=delete_branch)
        return Response(status_code=204)

    @app.get("/sessions/{session_id}/changes", tags=["sessions"])
    def changes(session_id: str) -> dict[str, Any]:
        """A session from a repository: its branch, base, commits, changed files and diff
        against base (uncommitted changes included; ``truncated`` past max_diff_bytes)."""
        return hive.changes(session_id).to_json_dict()

    @app.post("/cleanup", tags=["sessions"])
    def cleanup(body: CleanupBody | None = None) -> dict[str, Any]:
        """Remove ended sessions last changed at least ``max_age_hours`` ago."""
        removed = hive.cleanup(24 if body is None else body.max_age_hours)
        return {"removed": removed, "count": len(removed)}


def _context_routes(app: FastAPI, hive: Engine) -> None:
    @app.post("/sessions/{session_id}/messages", tags=["context"])
    def send_message(session_id: str, body: MessageBody) -> dict[str, int]:
        """Append to the conversation history; answers the event's seq."""
        return {"seq": hive.send_message(session_id, body.role, body.content)}

    @app.get("/sessions/{session_id}/history", tags=["context"])
    def history(session_id: str, limit: int | None = None) -> dict[str, Any]:
        return {"history": hive.context(session_id).history(limit)}

    @app.get("/sessions/{session_id}/context", tags=["context"])
    def context(session_id: str, budget: int | None = None) -> dict[str, Any]:
        """History, active files and file index in one object within ``budget`` characters."""
        return hive.context(session_id).build_context(budget)

    @app.get("/sessions/{session_id}/files", tags=["context"])
    def active_files(session_id: str) -> dict[str, list[str]]:
        return {"active_files": hive.context(session_id).active_files()}

    @app.post("/sessions/{session_id}/files", tags=["context"])
    def add_file(session_id: str, body: FileBody) -> dict[str, list[str]]:
        return {"active_files": hive.context(session_id).add_file(body.path)}

    @app.delete("/sessions/{session_id}/files", tags=["context"])
    def remove_file(session_id: str, path: str) -> dict[str, bool]:
        return {"removed": hive.context(session_id).remove_file(path)}

    @app.get("/sessions/{session_id}/file-index", tags=["context"])
    def file_index(session_id: str) -> dict[str, Any]:
        return {"file_index": hive.context(session_id).file_index()}

    @app.put("/sessions/{session_id}/file-index", tags=["context"])
    def update_file_index(session_id: str, body: FileIndexBody) -> dict[str, Any]:
        context = hive.context(session_id)
        context.update_file_index(body.path, body.info)
        return {"file_index": context.file_index()}


def _event_routes(app: FastAPI, hive: Engine, stopping: asyncio.Event) -> None:
    def event_source(
        session_id: str | None = None,
        since: Annotated[int | None, Query(ge=0)] = None,
        follow: bool = True,
        last_event_id: Annotated[int | None, Header(ge=0)] = None,
    ) -> AsyncIterator[Event]:
        # A dependency, so that every parameter is checked (422) before the stream's
        # 200 is sent: the body of a streaming endpoint runs only once it has been.
        start = since if last_event_id is None else last_event_id
        return hive.aevents(session_id, hive.last_seq if start is None else start, follow=follow)

    checked_source = Depends(event_source)  # a local: an annotation could not name it

    @app.get("/events", response_class=EventSourceResponse, tags=["events"])
    async def events(
        source: AsyncIterator[Event] = checked_source,
    ) -> AsyncIterator[ServerSentEvent]:
        """Journaled events after ``since`` (or the ``Last-Event-ID`` a reconnecting
        client sends), then live ones. Each SSE message has ``id`` = seq, ``event`` = type
        and the event's JSON as ``data``. Without ``since`` or ``Last-Event-ID`` the stream
        starts with live events only.
        """
        async for event in until(stopping, source):
            yield ServerSentEvent(data=event.to_json_dict(), event=event.type, id=str(event.seq))


async def until(stop: asyncio.Event, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Items of ``source`` until it ends or ``stop`` is set, whichever comes first.

    However this ends (the client hung up, say, and the stream was cancelled), ``source``
    is closed at once, and with it any subscription it holds.
    """
    stopped = asyncio.ensure_future(stop.wait())
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(anext(source))
            await asyncio.wait({pending, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                return
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopped.cancel()
        if pending is not None and not pending.done():
            # The source is running in that task: cancelling it is what closes it (an
            # async generator cannot be closed while it runs). Done before anything here
            # awaits, so a second cancellation of ours cannot skip it.
            pending.cancel()
            await asyncio.wait({pending})
        await source.aclose()  # type: ignore[attr-defined]


def _error_handler(status: int, code: str) -> Callable[[Request, Exception], Any]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": code, "message": str(exc)}, status_code=status)

    return handle


async def _http_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI's only 400: a body it could not parse
        return _invalid_input(_unparsable_body(exc.__cause__))
    code = {404: "not_found"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        if error["type"] == "json_invalid":  # its loc is the character, not a field
            why = error.get("ctx", {}).get("error", error["msg"])
            problems.append(f"body is not valid JSON ({why}, at character {error['loc'][-1]})")
            continue
        where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        problems.append(f"{where}: {pydantic_problem(error)}")
    return _invalid_input("; ".join(problems))


def _invalid_input(message: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_input", "message": message}, status_code=422)


def _unparsable_body(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a body, said as the caller can fix it."""
    if isinstance(cause, UnicodeDecodeError):
        return f"body is not UTF-8 text ({cause.reason} at byte {cause.start}); send UTF-8 JSON"
    if isinstance(cause, RecursionError):
        return (
            "body nests objects and lists too deeply to parse; free JSON such as metadata "
            f"may nest at most {MAX_JSON_DEPTH} levels"
        )
    return f"body could not be parsed as JSON ({cause or 'no reason given'})"


async def _follow_log(
    hive: Engine, session_id: str, offset: int, follow: bool
) -> AsyncIterator[bytes]:
    position = offset
    ending = not follow
    while True:
        chunk = await asyncio.to_thread(hive.read_log, session_id, position)
        if chunk:
            position += len(chunk)
            yield chunk
            continue
        if ending:
            return
        if hive.status(session_id) in SETTLED:
            ending = True  # read once more: the agent may have written just before it ended
            continue
        await asyncio.sleep(LOG_FOLLOW_INTERVAL)
