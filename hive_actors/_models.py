"""The data users see: session metadata and lifecycle events (pydantic models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    TypeAdapter,
    model_validator,
)

from hive_actors._states import TERMINAL, Status

Timestamp = Annotated[datetime, PlainSerializer(lambda moment: moment.isoformat(), return_type=str)]


class Limits(BaseModel):
    """A session's resource limits, enforced by its run's cgroup (None: no limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory: int | None = None
    """Bytes of memory (swap included) its processes may use together; past it the kernel
    kills one of them and the run ends ``memory_limit``."""
    pids: int | None = None
    """Processes (and threads) it may have at once; a fork past it fails."""
    cpus: float | None = None
    """Cores' worth of CPU time it may use, as a quota per 100 ms period."""

    def given(self) -> tuple[str, ...]:
        """The names of the limits that are set."""
        return tuple(name for name in type(self).model_fields if getattr(self, name) is not None)

    def over(self, defaults: Limits) -> Limits:
        """These limits, each one not given taken from ``defaults``."""
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class Usage(BaseModel):
    """What a session's current (or last) run uses, from its cgroup's counters."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    """The most it used at once (None where the kernel does not keep it)."""
    cpu_seconds: float | None = None
    processes: int | None = None


class SessionInfo(BaseModel):
    """Everything known about one session; what ``get`` returns and session.json holds.

    ``runs`` counts agent processes started; ``restarts`` counts every restart the session's
    supervision did (of its child actors, and of its agent under a restart policy).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str
    task: str
    priority: Literal["high", "medium", "low"]
    status: Status
    created: Timestamp
    updated: Timestamp
    working_dir: str
    output_dir: str
    database: str
    log_file: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    pid: int | None = None
    """The pid of the running agent's process group leader (the shim), while it runs."""
    pid_start: int | None = None
    """That process's start time (clock ticks since boot): pid + start time identify it."""
    exit_code: int | None = None
    reason: str | None = None
    """Why the session reached its status, as a word: ``exited``, ``exit_code``,
    ``spawn_error``, ``requested``, ``shutdown``, ``restart_intensity``, ``lost``..."""
    detail: str | None = None
    """The same for people: "exited with code 3", the spawn error's text, ..."""
    queue_position: int | None = None
    """While queued: 1 for the next session to start (filled in when read)."""
    runs: int = 0
    restarts: int = 0
    role: str | None = None
    persistent: bool = False
    restart_policy: Literal["never", "on-failure", "always"] = "never"
    """Restart the agent when it exits: never, on-failure (non-zero exit), always."""
    restart_limit: int = 3
    """Agent restarts allowed in a row before the session ends with the last outcome."""
    restart_backoff: float = 1.0
    """Seconds before the first restart; doubled for each one after (at most 300 s)."""
    run_task: str | None = None
    """The task of the current (or last) run when it is not the session's own ``task``:
    a pooled persistent session runs a new task each time (``Hive.execute``)."""
    idle_timeout: float | None = None
    """Seconds a persistent session may stay idle before it is completed."""
    host: str | None = None
    """The cluster host the session lives on (``ClusterHive``); None under a plain Hive."""
    max_lifetime: float | None = None
    """Seconds after creation when a session still not ended is terminated."""

    @property
    def current_task(self) -> str:
        """What the agent is (or was last) asked to do."""
        return self.run_task if self.run_task is not None else self.task

    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    """The names of the session's extra environment variables. Their values can be
    credentials: they are kept apart, owner-only, and never shown."""
    repo: str | None = None
    """The git repository the session's working dir is a worktree of (None: a plain dir)."""
    base: str | None = None
    """The full sha of the commit the worktree started from."""
    branch: str | None = None
    """The branch the session works on (``<branch_prefix><short id>``), kept after cleanup."""
    setup: tuple[str, ...] = ()
    """The setup step (argv) run before the agent's first run; empty: none."""
    setup_done: bool = False
    """The setup step succeeded (or there is none to run)."""
    ports: tuple[int, ...] = ()
    """The session's own TCP ports (``HIVE_PORT`` is the first, ``HIVE_PORTS`` all)."""
    stall_timeout: float | None = None
    """Seconds a running agent's log may stay still before it counts as stalled."""
    stall_action: Literal["none", "terminate", "restart"] = "none"
    """What a stall does besides its ``session.stalled`` event."""
    resume_command: tuple[str, ...] = ()
    """The argv template of every run after the first (empty: ``command`` again)."""
    limits: Limits = Limits()
    """Its resource limits (its own, else the Hive's ``memory_max``/``pids_max``/``cpus_max``)."""
    usage: Usage | None = None
    """What its run uses: read afresh while one runs, as last seen once it ended; None
    without cgroups (or before its first run)."""

    _legacy_env: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _env_names_only(cls, data: Any, handler: ModelWrapValidatorHandler[SessionInfo]) -> Any:
        """A row written before env values were kept apart holds them: keep only their
        names, and the values aside for the Hive to move (``legacy_env``)."""
        values = data.get("env") if isinstance(data, dict) else None
        if not isinstance(values, dict):
            return handler(data)
        info = handler({**data, "env": sorted(values)})
        info._legacy_env = {str(name): str(value) for name, value in values.items()}
        return info

    @property
    def legacy_env(self) -> dict[str, str]:
        """Env values found in an old row or session.json (moved away once read)."""
        return self._legacy_env

    @property
    def setting_up(self) -> bool:
        """The next process of the session is its setup step, not the agent."""
        return bool(self.setup) and not self.setup_done

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form (what session.json, ``hivectl get`` and HTTP show)."""
        return self.model_dump(mode="json")


class HostInfo(BaseModel):
    """One host of a cluster (``ClusterHive.hosts()``): a machine's share of the sessions."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    """Its Ray node's ``hive-host`` label, else the machine's hostname."""
    alive: bool
    running: int
    """Sessions starting, running or stopping there."""
    queued: int
    max_running: int
    """Agents it runs at once (0 until it first answered)."""
    sessions: int
    """Sessions placed there and not ended."""
    since: Timestamp
    """When it was last seen come up, or go down."""

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class EventBase(BaseModel):
    """Fields every event has; see the subclasses for each type's own."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    seq: int = 0
    """Global, strictly increasing; assigned when the event is journaled."""
    session_id: str
    at: Timestamp
    recovered: bool = False
    """True for events a restarted Hive emits about what happened while it was down."""
    host: str | None = None
    """The cluster host it happened on (``ClusterHive``); None under a plain Hive."""

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class SessionCreatedEvent(EventBase):
    type: Literal["session.created"] = "session.created"
    task: str
    priority: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class SessionStatusEvent(EventBase):
    type: Literal["session.status"] = "session.status"
    from_: Status | None = Field(default=None, alias="from")
    to: Status
    reason: str | None = None
    detail: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    usage: Usage | None = None
    """What the run that just ended used (where that end is this change, with cgroups)."""


class SessionTerminatedEvent(EventBase):
    type: Literal["session.terminated"] = "session.terminated"
    reason: str | None = None
    detail: str | None = None
    exit_code: int | None = None


class SessionRestartEvent(EventBase):
    """A child actor of the session died and was restarted (the agent kept running)."""

    type: Literal["session.restart"] = "session.restart"
    child: str
    detail: str
    restarts: int


class SessionStalledEvent(EventBase):
    """A running agent's log has not grown for ``silent_seconds`` (its ``stall_timeout``);
    ``action`` is what follows: ``none``, ``terminate`` or ``restart``."""

    type: Literal["session.stalled"] = "session.stalled"
    silent_seconds: float
    action: str


class SessionActiveEvent(EventBase):
    """A stalled agent's log grew again, after ``silent_seconds`` of silence."""

    type: Literal["session.active"] = "session.active"
    silent_seconds: float


class SessionRemovedEvent(EventBase):
    type: Literal["session.removed"] = "session.removed"


class ContextMessageEvent(EventBase):
    type: Literal["context.message"] = "context.message"
    role: str
    content: str


class HostEvent(EventBase):
    """A cluster host went down or came back (``ClusterHive`` only): no session's event."""

    session_id: str | None = None  # type: ignore[assignment]  # a host's, not a session's
    host: str
    detail: str | None = None


class HostUpEvent(HostEvent):
    type: Literal["host.up"] = "host.up"


class HostDownEvent(HostEvent):
    type: Literal["host.down"] = "host.down"


class JournalTrimmedEvent(BaseModel):
    """What a replay gets where the journal no longer has events it asked for.

    Not journaled, and not an EventBase (it happened to no session): the replay's events
    with a seq below ``first_seq`` were trimmed, and the replay goes on from
    ``first_seq``. Its ``seq`` is ``first_seq - 1``, so a consumer that resumes after the
    last seq it saw resumes after this, as after any event.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int
    session_id: str | None = None
    """The session whose topic was replayed, or None for the global topic."""
    type: Literal["journal.trimmed"] = "journal.trimmed"
    first_seq: int
    """The oldest seq the journal still has for this topic."""

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


Event = Annotated[
    SessionCreatedEvent
    | SessionStatusEvent
    | SessionTerminatedEvent
    | SessionRestartEvent
    | SessionStalledEvent
    | SessionActiveEvent
    | SessionRemovedEvent
    | ContextMessageEvent
    | HostUpEvent
    | HostDownEvent
    | JournalTrimmedEvent,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "session.created",
    "session.status",
    "session.terminated",
    "session.restart",
    "session.stalled",
    "session.active",
    "session.removed",
    "context.message",
    "host.up",
    "host.down",
    "journal.trimmed",
)

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form (as journaled or sent over the wire)."""
    return _EVENT_ADAPTER.validate_python(data)
