"""Configuration: one validated model, built from arguments and HIVE_* variables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hive_actors import _validate
from hive_actors._models import Limits
from hive_actors._paths import default_root, usable_root
from hive_actors.errors import InvalidConfig

DEFAULT_COMMAND: tuple[str, ...] = ("claude-flow", "hive-mind", "spawn", "{task}")
ENV_PREFIX = "HIVE_"


class HiveConfig(BaseModel):
    """Every setting of a Hive. Each field can also come from ``HIVE_<FIELD>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path = Field(default_factory=default_root)
    """Holds registry.db, and by default the sessions and logs."""
    working_root: Path | None = None
    """Parent of the session working dirs; default ``<root>/sessions``."""
    output_root: Path | None = None
    """If set, a session's ``output/`` is a link to ``<output_root>/<uuid>``."""
    log_root: Path | None = None
    """Where ``<uuid>.log`` files go; default ``<root>/logs``."""
    command: tuple[str, ...] = DEFAULT_COMMAND
    """The agent command template; an element ``{task}`` is replaced by the task text."""
    max_running: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default_factory=lambda: (os.cpu_count() or 1) * 4
    )
    """Agents that may run at once; a start beyond it is queued (priority, then age)."""
    grace_period: Annotated[float, Field(ge=0, le=3600)] = 10.0
    """Seconds between the stop signal and SIGKILL."""
    max_restarts: Annotated[int, Field(ge=0, le=1000)] = 3
    """Child-actor restarts allowed within ``restart_window`` before the session fails."""
    restart_window: Annotated[float, Field(gt=0, le=86400)] = 5.0
    max_history: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Messages a ContextManager keeps; the oldest are dropped first."""
    max_files: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Active files a ContextManager keeps; the oldest are dropped first."""
    max_message_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 256 * 1024
    context_budget: Annotated[int, Field(ge=256, le=100_000_000)] = 32_000
    """Default size, in characters of JSON, of what ``build_context`` returns."""
    idle_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Default seconds a persistent session may stay idle before it is completed."""
    max_lifetime: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Default seconds after creation when a session still not ended is terminated."""
    retention_hours: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """If set, ended sessions older than this are removed automatically."""
    journal_retention_hours: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """Events older than this are trimmed from the journal; unset: ``retention_hours``."""
    log_max_bytes: Annotated[int, Field(ge=1024)] | None = None
    """If set, a live session's log larger than this is rotated."""
    log_keep: Annotated[int, Field(ge=0, le=100)] = 3
    """Rotated log files kept per session (``<uuid>.log.1`` is the newest)."""
    maintenance_interval: Annotated[float, Field(gt=0, le=86400)] = 60.0
    """Seconds between housekeeping passes (retention cleanup, log rotation)."""
    branch_prefix: str = "hive/"
    """A session made from a repository works on the new branch ``<branch_prefix><short id>``."""
    max_diff_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 1024 * 1024
    """The longest diff ``changes`` returns; a longer one is cut (``truncated``)."""
    setup: tuple[str, ...] = ()
    """Default setup step (argv, never a shell), run in the working dir before a session's
    first run; empty: none."""
    setup_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Seconds a setup step may run; past it the session fails (``setup_timeout``)."""
    ports_per_session: Annotated[int, Field(ge=0, le=1000)] = 0
    """Default number of TCP ports a session gets (``HIVE_PORT``, ``HIVE_PORTS``)."""
    port_range: str = "20000-29999"
    """Where sessions' ports come from: ``"LOW-HIGH"``, both included."""
    stall_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    """Default seconds a running agent's log may stay still before it counts as stalled."""
    stall_action: Literal["none", "terminate", "restart"] = "none"
    """Default for what a stall does besides its event: nothing, terminate, or restart."""
    resume_command: tuple[str, ...] = ()
    """Default argv template of every run after the first (``{task}``, ``{session_id}``,
    ``{run}``); empty: ``command`` again."""
    memory_max: int | None = None
    """Default memory limit of a session (bytes, or ``512M``, ``2G``: 1K = 1024)."""
    pids_max: int | None = None
    """Default limit on a session's processes and threads at once."""
    cpus_max: float | None = None
    """Default limit on a session's CPU, in cores (a quota: ``0.5`` is half a core)."""
    cgroups: Literal["auto", "off"] = "auto"
    """``auto``: a cgroup per run where this machine lets the Hive make them (see
    docs/limits.md); ``off``: process groups and the session marker only, no limits."""
    shutdown: Literal["terminate", "leave"] = "terminate"
    """What closing the Hive does to running agents: terminate them (grace period, reason
    ``shutdown``), or leave them running for the next Hive on this root to re-adopt."""

    @field_validator("command", mode="before")
    @classmethod
    def _check_command(cls, value: object) -> tuple[str, ...]:
        return _validate.command(value)

    @field_validator("setup", mode="before")
    @classmethod
    def _check_setup(cls, value: object) -> tuple[str, ...]:
        return _validate.setup(value)

    @field_validator("resume_command", mode="before")
    @classmethod
    def _check_resume_command(cls, value: object) -> tuple[str, ...]:
        return _validate.resume_command(value)

    @field_validator("memory_max", mode="before")
    @classmethod
    def _check_memory_max(cls, value: object) -> int | None:
        return _validate.memory(value, "memory_max")

    @field_validator("pids_max", mode="before")
    @classmethod
    def _check_pids_max(cls, value: object) -> int | None:
        return _validate.pids(value, "pids_max")

    @field_validator("cpus_max", mode="before")
    @classmethod
    def _check_cpus_max(cls, value: object) -> float | None:
        return _validate.cpus(value, "cpus_max")

    @property
    def limits(self) -> Limits:
        """The default limits of every session."""
        return Limits(memory=self.memory_max, pids=self.pids_max, cpus=self.cpus_max)

    @field_validator("branch_prefix")
    @classmethod
    def _check_branch_prefix(cls, value: str) -> str:
        return _validate.branch_prefix(value)

    @field_validator("port_range")
    @classmethod
    def _check_port_range(cls, value: str) -> str:
        _validate.port_range(value)
        return value

    @property
    def ports(self) -> tuple[int, int]:
        """``port_range`` as (low, high), both included."""
        return _validate.port_range(self.port_range)

    @field_validator("root")
    @classmethod
    def _check_root(cls, value: Path) -> Path:
        return usable_root(value)

    @property
    def sessions_dir(self) -> Path:
        return self.working_root or self.root / "sessions"

    @property
    def logs_dir(self) -> Path:
        return self.log_root or self.root / "logs"

    @property
    def registry_path(self) -> Path:
        return self.root / "registry.db"

    @property
    def journal_hours(self) -> float | None:
        """How long the journal keeps an event (None: until its session is removed)."""
        if self.journal_retention_hours is not None:
            return self.journal_retention_hours
        return self.retention_hours

    @classmethod
    def env_settings(
        cls, environ: Mapping[str, str] | None = None, exclude: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The settings ``HIVE_*`` variables give (unchecked: ``load`` checks them)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            variable = ENV_PREFIX + name.upper()
            if name not in exclude and environ.get(variable, "") != "":
                values[name] = _from_env(variable, name, environ[variable])
        return values

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HiveConfig:
        """Build a config from ``HIVE_*`` variables, then ``overrides`` (which win).

        Raises InvalidConfig naming the argument or variable that is wrong.
        """
        values = cls.env_settings(environ)
        origin = {name: ENV_PREFIX + name.upper() for name in values}
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
                origin[name] = name
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise InvalidConfig(
                f"unknown setting {', '.join(unknown)}; known: {', '.join(cls.model_fields)}"
            )
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "config"
                problems.append(f"{origin.get(field, field)}: {_validate.pydantic_problem(error)}")
            raise InvalidConfig("invalid configuration: " + "; ".join(problems)) from None


_JSON_LISTS = {
    "command": '["my-agent", "{task}"]',
    "setup": '["npm", "ci"]',
    "resume_command": '["claude", "--continue"]',
}


def _from_env(variable: str, name: str, raw: str) -> object:
    example = _JSON_LISTS.get(name)
    if example is None:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidConfig(
            f"{variable} must be a JSON list of strings such as {example}, not {raw!r}"
        ) from None
