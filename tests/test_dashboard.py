"""The dashboard in a real headless Chromium, against a real daemon on TCP with its token.

Chromium comes from Debian's package (``make browser`` installs it; ``.ci/run`` does so
before the tests). Screenshots go to ``$HIVE_SCREENSHOTS`` (default: ``test-artifacts/``);
``docs/images`` holds the ones the docs show, made by this test.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import GIT_IDENTITY, Daemon, eventually, git, make_repo

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("HIVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("HIVE_SCREENSHOTS", Path(__file__).parent.parent / "test-artifacts"))
# Headless as root in a container, with a closed network: no sandbox, no background calls.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium (as root)",
)
expect = playwright_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def served(daemon: Daemon) -> tuple[Daemon, str, str]:
    """A daemon with a TCP listener: (daemon, base url, token)."""
    ready = daemon.start("--tcp", "127.0.0.1:0")
    url = f"http://{ready.split()[1]}"
    return daemon, url, (daemon.root / "token").read_text().strip()


@pytest.fixture
def page(browser, served) -> Iterator[object]:  # type: ignore[no-untyped-def]
    _daemon, url, token = served
    yield from _open(browser, url, token)


def _open(browser, url: str, token: str) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The dashboard, logged in and live; at the end, no error the page raised."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"{url}/#token={token}")
    expect(opened.locator("#link")).to_have_text("live", timeout=WAIT_MS)
    opened.evaluate("window.__sameDocument = true")
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"the page raised: {errors}"


def row(page, session_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'tr[data-id="{session_id}"]')


def screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)
    assert (SHOTS / name).stat().st_size > 10_000


def release(fifo: Path) -> None:
    """Tell a ``--hold`` agent to finish (blocks until it has opened its FIFO)."""
    with open(fifo, "w", encoding="utf-8") as writer:
        writer.write("finish\n")


def test_a_session_made_by_the_cli_shows_up_and_moves_live(served, page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    daemon, _url, _token = served
    fifo = tmp_path / "hold"
    os.mkfifo(fifo)
    session_id = daemon.cli("create", "refactor the parser", "high").stdout.strip()
    expect(row(page, session_id)).to_have_attribute("data-status", "created", timeout=WAIT_MS)
    expect(row(page, session_id).locator("td.task")).to_have_text("refactor the parser")

    assert daemon.cli("start", session_id, "--hold", str(fifo)).returncode == 0
    expect(row(page, session_id)).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    expect(page.locator("#counts [data-state=running]")).to_have_text("running 1")

    releaser = threading.Thread(target=release, args=(fifo,))
    releaser.start()
    expect(row(page, session_id)).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    releaser.join()
    expect(row(page, session_id).locator("td.runs")).to_have_text("1")
    expect(row(page, session_id).locator("td.exit")).to_have_text("0")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened

    # A few more, in other states, for the picture.
    failing = daemon.cli("create", "migrate the schema", "low").stdout.strip()
    daemon.cli("start", failing, "--exit", "3")
    busy = daemon.cli("create", "write the docs", "medium", '{"team": "docs"}').stdout.strip()
    daemon.cli("start", busy, "--sleep", "inf")
    expect(row(page, failing)).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    expect(row(page, failing).locator("td.exit")).to_have_text("3")
    expect(row(page, busy)).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    expect(row(page, busy).locator("td.runs")).to_have_text("1")  # from a refresh
    expect(page.locator("#counts [data-state]")).to_have_count(4)  # all, completed, failed, running
    screenshot(page, "dashboard-sessions.png")
    daemon.cli("terminate", busy)
    expect(row(page, busy)).to_have_attribute("data-status", "terminated", timeout=WAIT_MS)


def test_the_session_view_and_its_buttons(served, page) -> None:  # type: ignore[no-untyped-def]
    daemon, _url, _token = served
    done = daemon.cli("create", "finished earlier").stdout.strip()
    daemon.cli("start", done)
    assert daemon.cli("wait", done).returncode == 0
    session_id = daemon.cli("create", "long job", "medium", '{"ticket": "HIVE-7"}').stdout
    session_id = session_id.strip()
    assert daemon.cli("start", session_id, "--sleep", "inf").returncode == 0
    assert daemon.cli("send", session_id, "user", "please add tests").returncode == 0
    with daemon.http() as http:
        added = http.post(f"/sessions/{session_id}/files", json={"path": "src/parser.rs"})
        assert added.status_code == 200
    expect(row(page, session_id)).to_have_attribute("data-status", "running", timeout=WAIT_MS)

    row(page, session_id).click()
    view = page.locator("#detail")
    expect(view).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(session_id)
    expect(page.locator("#meta")).to_contain_text("HIVE-7")
    expect(page.locator("#timeline li")).to_have_count(
        3, timeout=WAIT_MS
    )  # created, starting, running
    expect(page.locator("#timeline")).to_contain_text("starting → running")
    expect(page.locator("#log")).to_contain_text(
        "fake_agent: starting task 'long job'", timeout=WAIT_MS
    )
    expect(page.locator("#history")).to_contain_text("please add tests", timeout=WAIT_MS)
    expect(page.locator("#files")).to_have_text("src/parser.rs")
    expect(page.locator("#act-start")).to_be_disabled()
    expect(page.locator("#act-remove")).to_be_disabled()

    # A message sent now arrives without reopening the view.
    assert daemon.cli("send", session_id, "assistant", "tests added").returncode == 0
    expect(page.locator("#history li")).to_have_count(2, timeout=WAIT_MS)
    screenshot(page, "dashboard-session.png")

    dialogs: list[str] = []

    def answer(dialog) -> None:  # type: ignore[no-untyped-def]
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.locator("#act-terminate").click()
    expect(row(page, session_id)).to_have_attribute("data-status", "terminated", timeout=WAIT_MS)
    assert daemon.cli("status", session_id).stdout.strip() == "terminated"
    expect(page.locator("#timeline")).to_contain_text("stopping → terminated", timeout=WAIT_MS)
    assert "Terminate session" in dialogs[0]

    page.locator("#act-remove").click()
    expect(row(page, session_id)).to_have_count(0, timeout=WAIT_MS)
    expect(view).to_be_hidden()
    assert daemon.cli("status", session_id).stdout.strip() == "not_found"
    assert "Clean up session" in dialogs[1]
    expect(row(page, done)).to_have_attribute("data-status", "completed")  # untouched


def test_filters_by_status_and_text(served, page) -> None:  # type: ignore[no-untyped-def]
    daemon, _url, _token = served
    first = daemon.cli("create", "alpha task").stdout.strip()
    second = daemon.cli("create", "beta task").stdout.strip()
    daemon.cli("start", second)
    assert daemon.cli("wait", second).returncode == 0
    expect(row(page, second)).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(row(page, first)).to_be_visible()

    page.locator("#status-filter").select_option("completed")
    expect(row(page, first)).to_have_count(0)
    expect(row(page, second)).to_be_visible()
    page.locator("#status-filter").select_option("")
    page.locator("#text-filter").fill("ALPHA")
    expect(row(page, second)).to_have_count(0)
    expect(row(page, first)).to_be_visible()
    expect(page.locator("#shown")).to_have_text("1 of 2")
    page.locator("#counts [data-state=completed]").click()  # a count filters too
    expect(page.locator("#shown")).to_have_text("0 of 2")


def test_without_the_token_the_page_asks_for_it_and_shows_no_data(served, browser) -> None:  # type: ignore[no-untyped-def]
    daemon, url, token = served
    session_id = daemon.cli("create", "secret task").stdout.strip()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#login")).to_be_visible(timeout=WAIT_MS)
        expect(row(page, session_id)).to_have_count(0)
        page.locator("#token").fill(token)
        page.locator("#login button").click()
        expect(row(page, session_id)).to_be_visible(timeout=WAIT_MS)
    finally:
        context.close()
    # The page's files are public; the data behind them is not.
    assert httpx.get(f"{url}/").status_code == 200
    assert httpx.get(f"{url}/dashboard/app.js").status_code == 200
    assert httpx.get(f"{url}/sessions").status_code == 401
    assert httpx.get(f"{url}/dashboard/../sessions").status_code in (401, 404)


def test_the_session_view_says_where_the_journal_was_trimmed(daemon: Daemon, browser) -> None:  # type: ignore[no-untyped-def]
    daemon.env["HIVE_JOURNAL_RETENTION_HOURS"] = "0"  # every pass trims all it has
    daemon.env["HIVE_MAINTENANCE_INTERVAL"] = "0.2"
    ready = daemon.start("--tcp", "127.0.0.1:0")
    url, token = f"http://{ready.split()[1]}", (daemon.root / "token").read_text().strip()
    session_id = daemon.cli("create", "long job").stdout.strip()
    assert daemon.cli("start", session_id, "--sleep", "inf").returncode == 0

    def replay_starts_trimmed() -> bool:
        done = daemon.cli("events", session_id, "--since", "0", "--no-follow")
        return done.stdout.startswith('{"seq"') and '"journal.trimmed"' in done.stdout

    eventually(replay_starts_trimmed)
    for page in _open(browser, url, token):
        row(page, session_id).click()
        expect(page.locator("#timeline li.trimmed")).to_contain_text(
            "earlier events were trimmed from the journal", timeout=WAIT_MS
        )
    assert daemon.cli("terminate", session_id, "--grace", "0").returncode == 0


APPEND_AND_COMMIT = """
import subprocess
with open("f0.txt", "a") as f0:
    f0.write("added\\n")
subprocess.run(["git", "commit", "--quiet", "-am", "append a line"], check=True)
"""


def test_a_session_from_a_repository_shows_its_branch_and_diff(served, page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    daemon, _url, _token = served
    source = make_repo(tmp_path / "repo")
    base = git(source, "rev-parse", "HEAD").strip()
    asked: list[str] = []  # every /changes request the page makes
    page.on(
        "request", lambda request: asked.append(request.url) if "/changes" in request.url else None
    )
    with daemon.http() as http:
        made = http.post(
            "/sessions",
            json={
                "task": "append a line",
                "repo": str(source),
                "command": [sys.executable, "-c", APPEND_AND_COMMIT],
                "env": GIT_IDENTITY,
                "ports": 1,
            },
        )
        assert made.status_code == 201, made.text
        session_id, branch, ports = (made.json()[key] for key in ("session_id", "branch", "ports"))
        plain = http.post("/sessions", json={"task": "no repository"}).json()["session_id"]
        for each in (session_id, plain):
            assert http.post(f"/sessions/{each}/start", json={}).status_code == 200
            waited = http.get(f"/sessions/{each}/wait", params={"timeout": 60}).json()
            assert waited["status"] == "completed"

    line = row(page, session_id)
    expect(line).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(line.locator("td.branch")).to_have_text(branch)
    expect(line.locator("td.changes")).to_have_text("1 file +1 \u22120", timeout=WAIT_MS)
    expect(row(page, plain)).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(row(page, plain).locator("td.branch")).to_have_text("")
    expect(row(page, plain).locator("td.changes")).to_have_text("")
    page.locator("#text-filter").fill(branch)  # the branch is matched by the text filter
    expect(page.locator("#shown")).to_have_text("1 of 2")
    page.locator("#text-filter").fill("")

    line.click()
    expect(page.locator("#changes")).to_be_visible()
    expect(page.locator("#changes-summary")).to_contain_text(
        f"{branch} from {base[:7]}", timeout=WAIT_MS
    )
    expect(page.locator("#commits li")).to_have_count(1)
    expect(page.locator("#commits")).to_contain_text("append a line")
    expect(page.locator("#changed-files")).to_have_text("f0.txt +1 \u22120")
    expect(page.locator("#diff")).to_contain_text("+added")
    expect(page.locator("#diff .add")).to_have_count(1)  # coloured line by line
    expect(page.locator("#diff .add")).to_contain_text("+added")
    expect(page.locator("#diff .file").first).to_contain_text("diff --git a/f0.txt b/f0.txt")
    expect(page.locator("#changes-note")).to_be_hidden()  # nothing was cut
    meta = page.locator("#meta")
    expect(meta).to_contain_text(branch)
    expect(meta).to_contain_text(str(ports[0]))
    expect(meta).to_contain_text("GIT_AUTHOR_NAME")
    expect(meta).not_to_contain_text(GIT_IDENTITY["GIT_AUTHOR_NAME"])  # names, never values
    screenshot(page, "dashboard-changes.png")

    # A session without a repository has no changes panel, and the page never asks for them.
    row(page, plain).click()
    expect(page.locator("#detail-title")).to_have_text(plain)
    expect(page.locator("#changes")).to_be_hidden()
    expect(page.locator("#log")).to_contain_text("fake_agent", timeout=WAIT_MS)  # asked after
    assert any(f"/sessions/{session_id}/changes" in url for url in asked)
    assert not any(f"/sessions/{plain}/" in url for url in asked), asked


def test_limits_and_usage_show_in_the_row_and_the_session_view(served, page) -> None:  # type: ignore[no-untyped-def]
    daemon, _url, _token = served
    with daemon.http() as http:
        assert http.get("/health").json()["cgroup_mode"] in ("v2", "hybrid")
        made = http.post(
            "/sessions",
            json={"task": "limited", "limits": {"memory": "256M", "pids": 64, "cpus": 1.5}},
        )
        assert made.status_code == 201, made.text
        session_id = made.json()["session_id"]
        started = http.post(f"/sessions/{session_id}/start", json={"args": ["--sleep", "inf"]})
        assert started.status_code == 200
    line = row(page, session_id)
    expect(line).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    expect(line.locator("td.memory")).to_have_text(
        re.compile(r"^[\d.]+ (B|KiB|MiB)$"), timeout=WAIT_MS
    )
    expect(line.locator("td.memory")).to_have_attribute("title", re.compile(r"limit 256 MiB$"))
    expect(line.locator("td.cpu")).to_have_text(re.compile(r"^\d+\.\d s$"))
    line.click()
    meta = page.locator("#meta")
    expect(meta).to_contain_text("memory 256 MiB, 64 processes, 1.5 cpus")
    expect(meta).to_contain_text(re.compile(r"usage.*memory [\d.]+ (B|KiB|MiB).*cpu [\d.]+ s"))
    daemon.cli("terminate", session_id)
    expect(line).to_have_attribute("data-status", "terminated", timeout=WAIT_MS)
    expect(meta).to_contain_text("0 processes", timeout=WAIT_MS)  # as last seen at its end
