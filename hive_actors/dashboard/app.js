// hive_actors dashboard: the sessions table and a session view, live from the event stream.
// No framework, no build step. Every value from the hive is set with textContent: a task
// or a log line is data, never markup.
"use strict";

const STATES = ["created", "queued", "starting", "running", "idle", "stopping",
  "completed", "failed", "terminated"];
const TERMINAL = new Set(["completed", "failed", "terminated"]);
const LIVE = new Set(["queued", "starting", "running", "idle", "stopping"]);
const LOG_TAIL_BYTES = 64 * 1024;
const USAGE_EVERY_MS = 5000;
const LOG_KEEP_CHARS = 256 * 1024;

const state = {
  token: sessionStorage.getItem("hive-token") || "",
  sessions: new Map(),   // id -> SessionInfo as the API returns it
  lastSeq: 0,
  status: "",
  text: "",
  selected: null,        // { id, abort: AbortController }
  refreshing: new Map(), // id -> timer of a pending info refresh
  drawPending: false,
  hosts: [],             // a cluster's hosts (GET /hosts); none for one Hive
  hostsPending: null,    // timer of a pending hosts reload
};

// A repo session's changes come from git in its worktree: asked for one session at a time,
// only for rows on screen, and again only once the session's status has moved.
const changes = {
  summary: new Map(),    // id -> { files, insertions, deletions } or { error }
  due: new Set(),        // ids whose summary predates their last status event
  queue: [],             // ids to ask for, in order; the open session's goes first
  busy: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
}

async function api(method, path, body) {
  const options = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) options.body = JSON.stringify(body);
  const reply = await fetch(path, options);
  if (reply.status === 401) { askToken(); throw new ApiError(401, "a bearer token is needed"); }
  if (reply.status === 204) return null;
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new ApiError(reply.status, data.message || reply.statusText);
  return data;
}

// Read a streaming response line by line (fetch, not EventSource: it can send the token).
async function readLines(reply, onLine) {
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      onLine(buffer.slice(0, cut).replace(/\r$/, ""));
      buffer = buffer.slice(cut + 1);
    }
  }
}

// Follow /events from `since`, calling onEvent(event) for each; resumes after a drop.
async function followEvents(query, since, onEvent, signal, onLink = () => {}) {
  let cursor = since;
  while (!signal.aborted) {
    try {
      const params = new URLSearchParams({ ...query, since: String(cursor), follow: "true" });
      const reply = await fetch(`events?${params}`, { headers: headers(), signal });
      if (reply.status === 401) { askToken(); return; }
      if (!reply.ok) throw new Error(`events: HTTP ${reply.status}`);
      onLink(true);
      let data = [];
      await readLines(reply, (line) => {
        if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        else if (line === "" && data.length) {
          const event = JSON.parse(data.join("\n"));
          data = [];
          cursor = Math.max(cursor, event.seq);
          onEvent(event);
        }
      });
    } catch (error) {
      if (signal.aborted) return;
    }
    onLink(false);
    await new Promise((resume) => setTimeout(resume, 1000)); // the daemon went away: retry
  }
}

// -- the sessions table ----------------------------------------------------------------

function upsert(info) {
  const known = state.sessions.get(info.session_id);
  if (known && known.updated > info.updated) return; // an older snapshot than we have
  state.sessions.set(info.session_id, info);
  draw();
}

// A transition updates the row at once; the rest of the info (runs, restarts) follows.
function applyStatus(event) {
  const info = state.sessions.get(event.session_id);
  if (!info) { refresh(event.session_id); return; }
  if (event.at < info.updated) return; // the row already shows something newer
  state.sessions.set(event.session_id, {
    ...info, status: event.to, updated: event.at, reason: event.reason,
    detail: event.detail, exit_code: event.exit_code ?? info.exit_code, pid: event.pid,
  });
  if (info.branch) {
    changes.due.add(event.session_id); // its row asks again once it is on screen
    if (state.selected && state.selected.id === event.session_id) wantChanges(event.session_id, true);
  }
  refresh(event.session_id);
  draw();
}

function refresh(id) {
  if (state.refreshing.has(id)) return;
  state.refreshing.set(id, setTimeout(async () => {
    state.refreshing.delete(id);
    try { upsert(await api("GET", `sessions/${id}`)); } catch (error) {
      if (error.status === 404) forget(id);
    }
  }, 150));
}

function forget(id) {
  state.sessions.delete(id);
  changes.summary.delete(id);
  changes.due.delete(id);
  if (state.selected && state.selected.id === id) closeDetail();
  draw();
}

function onEvent(event) {
  state.lastSeq = Math.max(state.lastSeq, event.seq);
  switch (event.type) {
    case "session.created": refresh(event.session_id); break;
    case "session.status": applyStatus(event); break;
    case "session.restart": refresh(event.session_id); break;
    case "session.removed": forget(event.session_id); break;
    default: break;
  }
  if (state.hosts.length || event.type.startsWith("host.")) reloadHosts();
}

// -- a cluster's hosts ---------------------------------------------------------------------

// Load moves with every transition: reload at most a few times a second.
function reloadHosts() {
  if (state.hostsPending) return;
  state.hostsPending = setTimeout(async () => {
    state.hostsPending = null;
    try { drawHosts((await api("GET", "hosts")).hosts); } catch (error) { /* next event */ }
  }, 300);
}

function drawHosts(hosts) {
  state.hosts = hosts;
  document.body.classList.toggle("cluster", hosts.length > 0);
  $("hosts").hidden = hosts.length === 0;
  $("hosts").replaceChildren(...hosts.map((host) => el("span", {
    class: `host${host.alive ? "" : " down"}`, "data-host": host.name,
    title: `${host.alive ? "up" : "down"} since ${clock(host.since)}; ${host.queued} queued`,
  }, el("strong", { text: host.name }),
  el("span", { class: "load", text: host.alive ? `${host.running}/${host.max_running} running` : "down" }))));
}

function draw() {
  if (state.drawPending) return;
  state.drawPending = true;
  requestAnimationFrame(() => { state.drawPending = false; drawNow(); });
}

function matches(info) {
  if (state.status && info.status !== state.status) return false;
  if (!state.text) return true;
  const haystack = [info.session_id, info.task, info.reason || "", info.detail || "",
    info.role || "", info.host || "", info.branch || "", JSON.stringify(info.metadata || {})]
    .join(" ").toLowerCase();
  return haystack.includes(state.text);
}

function drawNow() {
  const all = [...state.sessions.values()].sort((a, b) => (a.created < b.created ? 1 : -1));
  drawCounts(all);
  document.body.classList.toggle("repos", all.some((info) => info.branch));
  document.body.classList.toggle("usage", all.some((info) => info.usage));
  const shown = all.filter(matches);
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren(...shown.map(row));
  onScreen.disconnect();
  for (const tr of body.querySelectorAll("tr[data-branch]")) onScreen.observe(tr);
  $("empty").hidden = all.length > 0;
  $("shown").textContent = `${shown.length} of ${all.length}`;
  if (state.selected) drawDetailHead(state.sessions.get(state.selected.id));
}

function drawCounts(all) {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const info of all) counts[info.status] += 1;
  const chip = (label, value, filter, cls) => {
    const button = el("button", { type: "button", class: cls, "data-state": filter,
      "aria-pressed": String(state.status === filter), text: `${label} ${value}` });
    button.addEventListener("click", () => setStatusFilter(filter));
    return button;
  };
  $("counts").replaceChildren(chip("all", all.length, "", "total"),
    ...STATES.filter((s) => counts[s]).map((s) => chip(s, counts[s], s, `st-${s}`)));
}

function row(info) {
  const tr = el("tr", { "data-id": info.session_id, "data-status": info.status });
  if (info.branch) tr.dataset.branch = info.branch;
  if (state.selected && state.selected.id === info.session_id) tr.className = "selected";
  tr.append(
    el("td", { class: "id", title: info.session_id, text: info.session_id.slice(0, 8) }),
    el("td", { class: "task", title: info.task, text: info.task }),
    el("td", { class: "repo-col branch", title: info.repo || "", text: info.branch || "" }),
    changesCell(info),
    el("td", { class: "host-col", text: info.host || "" }),
    el("td", { text: info.priority }),
    el("td", {}, el("span", { class: `status st-${info.status}`, text: info.status })),
    el("td", { class: "num age", "data-created": info.created, text: age(info.created) }),
    el("td", { class: "num runs", text: String(info.runs) }),
    el("td", { class: "num restarts", text: String(info.restarts) }),
    el("td", { class: "usage-col num memory", title: memoryTitle(info),
      text: info.usage ? bytes(info.usage.memory_bytes) : "" }),
    el("td", { class: "usage-col num cpu",
      title: info.usage ? plural(info.usage.processes ?? 0, "process") : "",
      text: info.usage && info.usage.cpu_seconds !== null ? `${info.usage.cpu_seconds.toFixed(1)} s` : "" }),
    el("td", { class: "num exit", text: info.exit_code ?? "" }),
    el("td", { title: info.detail || "", text: info.reason || "" }),
  );
  tr.addEventListener("click", () => openDetail(info.session_id));
  return tr;
}

function changesCell(info) {
  const cell = el("td", { class: "repo-col changes" });
  const known = info.branch && changes.summary.get(info.session_id);
  if (!known) return cell;
  if (known.error) {
    cell.title = known.error;
    cell.textContent = "?";
  } else if (known.files === 0) {
    cell.append(el("span", { class: "none", text: "no changes" }));
  } else {
    cell.append(...lineCounts(known, plural(known.files, "file")));
  }
  return cell;
}

// "N files +I −D" as text and spans (the counts coloured by their class).
function lineCounts({ insertions, deletions }, lead) {
  const parts = lead ? [lead, " "] : [];
  return [...parts, el("span", { class: "ins", text: `+${insertions}` }), " ",
    el("span", { class: "del", text: `\u2212${deletions}` })];
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : noun.endsWith("s") ? "es" : "s"}`;
}

// 67108864 as "64 MiB": binary units, as limits are given.
function bytes(size) {
  if (size === null || size === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
  return `${unit ? size.toPrecision(3).replace(/\.0+$/, "") : size} ${units[unit]}`;
}

function memoryTitle(info) {
  const parts = [];
  if (info.usage && info.usage.memory_peak_bytes !== null) parts.push(`peak ${bytes(info.usage.memory_peak_bytes)}`);
  if (info.limits && info.limits.memory) parts.push(`limit ${bytes(info.limits.memory)}`);
  return parts.join("; ");
}

function limitsText(limits) {
  if (!limits) return null;
  const parts = [];
  if (limits.memory) parts.push(`memory ${bytes(limits.memory)}`);
  if (limits.pids) parts.push(`${limits.pids} processes`);
  if (limits.cpus) parts.push(`${limits.cpus} cpu${limits.cpus === 1 ? "" : "s"}`);
  return parts.join(", ") || null;
}

function usageText(usage) {
  if (!usage) return null;
  return [`memory ${bytes(usage.memory_bytes) || "?"}`,
    usage.memory_peak_bytes !== null ? `peak ${bytes(usage.memory_peak_bytes)}` : null,
    usage.cpu_seconds !== null ? `cpu ${usage.cpu_seconds.toFixed(2)} s` : null,
    plural(usage.processes ?? 0, "process")].filter(Boolean).join(", ");
}

function age(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.floor(seconds % 60)}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`;
}

function setStatusFilter(value) {
  state.status = value;
  $("status-filter").value = value;
  draw();
}

// -- a repo session's changes -----------------------------------------------------------

const onScreen = new IntersectionObserver((entries) => {
  for (const entry of entries) if (entry.isIntersecting) wantChanges(entry.target.dataset.id);
});

// Ask for a session's changes unless its summary is current; `now` (the open session's)
// asks again regardless, ahead of the rows. Never for a session without a branch.
function wantChanges(id, now = false) {
  const info = state.sessions.get(id);
  if (!info || !info.branch) return;
  const queued = changes.queue.indexOf(id);
  if (now) {
    if (queued >= 0) changes.queue.splice(queued, 1);
    changes.queue.unshift(id);
  } else if (queued < 0 && (!changes.summary.has(id) || changes.due.has(id))) {
    changes.queue.push(id);
  }
  pumpChanges();
}

async function pumpChanges() {
  if (changes.busy || !changes.queue.length) return;
  const id = changes.queue.shift();
  if (!state.sessions.has(id)) { pumpChanges(); return; }
  changes.busy = true;
  changes.due.delete(id); // a status event from now on makes it due again
  try {
    const found = await api("GET", `sessions/${id}/changes`);
    changes.summary.set(id, { files: found.files.length, insertions: found.insertions,
      deletions: found.deletions });
    if (state.selected && state.selected.id === id) drawChanges(found);
  } catch (error) {
    if (error.status === 404) forget(id);
    else {
      // Not retried until its next status event: a worktree that is gone stays gone.
      changes.summary.set(id, { error: `changes: ${error.message}` });
      if (state.selected && state.selected.id === id) drawChangesError(error.message);
    }
  } finally {
    changes.busy = false;
  }
  draw();
  pumpChanges();
}

function resetChanges(info) {
  $("changes").hidden = !(info && info.branch);
  $("changes-summary").textContent = info && info.branch ? `${info.branch} (loading)` : "";
  $("changes-note").hidden = true;
  $("commits").replaceChildren();
  $("changed-files").replaceChildren();
  $("diff").replaceChildren();
}

function drawChanges(found) {
  $("changes").hidden = false;
  $("changes-summary").replaceChildren(`${found.branch} from `,
    el("code", { title: found.base, text: short(found.base) }), " · ",
    ...lineCounts(found, plural(found.files.length, "file")));
  const note = $("changes-note");
  note.hidden = !found.truncated;
  note.textContent = found.truncated ? "The diff is cut short at the daemon's max_diff_bytes; "
    + `\`git diff ${short(found.base)}\` in the session's working dir shows all of it.` : "";
  $("commits").replaceChildren(...found.commits.map((commit) => el("li", {},
    el("code", { class: "sha", title: commit.sha, text: short(commit.sha) }), " ", commit.subject)));
  $("changed-files").replaceChildren(...found.files.map((file) => el("li", {},
    el("span", { class: "path", text: file.path }), " ",
    ...(file.binary ? [el("span", { class: "none", text: "binary" })] : lineCounts(file)))));
  const diff = $("diff");
  const { scrollTop } = diff;
  diff.replaceChildren(diffLines(found.diff));
  diff.scrollTop = scrollTop;
}

function drawChangesError(message) {
  const note = $("changes-note");
  note.hidden = false;
  note.textContent = `Its changes cannot be read: ${message}`;
}

// Git's unified diff as one span per line, each classed by what the line is: the diff is
// the agent's data, so it is only ever set as text.
function diffLines(text) {
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const fragment = document.createDocumentFragment();
  let inHunk = false;
  for (const line of lines) {
    let kind;
    if (line.startsWith("diff ")) { inHunk = false; kind = "file"; }
    else if (line.startsWith("@@")) { inHunk = true; kind = "hunk"; }
    else if (!inHunk) kind = "file"; // index, ---, +++, mode and rename lines
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    else if (line.startsWith("\\")) kind = "meta"; // \ No newline at end of file
    else kind = "ctx";
    fragment.append(el("span", { class: kind, text: `${line}\n` }));
  }
  return fragment;
}

function short(sha) {
  return (sha || "").slice(0, 7);
}

// -- the session view ------------------------------------------------------------------

function openDetail(id) {
  closeDetail();
  const abort = new AbortController();
  state.selected = { id, abort };
  $("detail").hidden = false;
  $("timeline").replaceChildren();
  $("log").textContent = "";
  $("history").replaceChildren();
  $("files").replaceChildren();
  resetChanges(state.sessions.get(id));
  draw();
  drawDetailHead(state.sessions.get(id));
  wantChanges(id, true);
  followEvents({ session_id: id }, 0, (event) => onSessionEvent(id, event), abort.signal);
  tailLog(id, abort.signal);
}

function closeDetail() {
  if (!state.selected) return;
  state.selected.abort.abort();
  state.selected = null;
  $("detail").hidden = true;
  draw();
}

function drawDetailHead(info) {
  if (!info) return;
  $("detail-title").textContent = info.session_id;
  const badge = $("detail-status");
  badge.className = `status st-${info.status}`;
  badge.textContent = info.status;
  $("act-start").disabled = !(info.status === "created" || info.status === "idle");
  $("act-terminate").disabled = !LIVE.has(info.status) && info.status !== "created";
  $("act-remove").disabled = !TERMINAL.has(info.status);
  const fields = [
    ["task", info.task], ["priority", info.priority], ["status", info.status], ["host", info.host],
    ["reason", info.reason], ["detail", info.detail], ["exit code", info.exit_code],
    ["pid", info.pid], ["runs", info.runs], ["restarts", info.restarts],
    ["role", info.role], ["persistent", info.persistent], ["restart policy", info.restart_policy],
    ["created", info.created], ["updated", info.updated], ["working dir", info.working_dir],
    ["repo", info.repo], ["branch", info.branch], ["base", info.base && short(info.base)],
    ["setup", (info.setup || []).length
      ? `${info.setup.join(" ")} (${info.setup_done ? "done" : "not run yet"})` : null],
    ["ports", (info.ports || []).join(", ")], ["env", (info.env || []).join(", ")],
    ["limits", limitsText(info.limits)], ["usage", usageText(info.usage)],
    ["output dir", info.output_dir], ["database", info.database], ["log", info.log_file],
    ["metadata", Object.keys(info.metadata || {}).length ? JSON.stringify(info.metadata) : null],
  ];
  $("meta").replaceChildren(...fields.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  $("log-path").textContent = info.log_file;
}

function onSessionEvent(id, event) {
  if (event.type === "session.status") {
    const what = event.from ? `${event.from} → ${event.to}` : event.to;
    const why = [event.reason, event.detail].filter(Boolean).join(": ");
    $("timeline").append(el("li", { "data-to": event.to },
      el("time", { datetime: event.at, text: clock(event.at) }),
      el("strong", { text: what }), why ? ` (${why})` : ""));
  } else if (event.type === "session.restart") {
    $("timeline").append(el("li", {}, el("time", { text: clock(event.at) }),
      `restart of ${event.child}: ${event.detail}`));
  } else if (event.type === "session.stalled") {
    $("timeline").append(el("li", { class: "stalled" }, el("time", { text: clock(event.at) }),
      `stalled: no output for ${Math.round(event.silent_seconds)} s` +
      (event.action === "none" ? "" : ` (${event.action})`)));
  } else if (event.type === "session.active") {
    $("timeline").append(el("li", {}, el("time", { text: clock(event.at) }),
      `active again after ${Math.round(event.silent_seconds)} s of silence`));
  } else if (event.type === "journal.trimmed") { // what came before is gone from the journal
    $("timeline").append(el("li", { class: "trimmed" },
      `earlier events were trimmed from the journal (it goes on from #${event.first_seq})`));
  }
  reloadContext(id); // history and files come from the ContextManager, not the journal
}

let contextTimer = null;
function reloadContext(id) {
  clearTimeout(contextTimer);
  contextTimer = setTimeout(() => {
    if (state.selected && state.selected.id === id) loadContext(id);
  }, 200);
}

function clock(iso) {
  const at = new Date(iso);
  return at.toLocaleTimeString([], { hour12: false }) + "." + String(at.getMilliseconds()).padStart(3, "0");
}

async function tailLog(id, signal) {
  try {
    const { size } = await api("GET", `sessions/${id}/log?tail=0`);
    const offset = Math.max(0, size - LOG_TAIL_BYTES);
    const reply = await fetch(`sessions/${id}/log/stream?offset=${offset}`, { headers: headers(), signal });
    if (!reply.ok) return;
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    const log = $("log");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent = (log.textContent + decoder.decode(value, { stream: true })).slice(-LOG_KEEP_CHARS);
      if (stick) log.scrollTop = log.scrollHeight;
    }
  } catch (error) {
    if (!signal.aborted) toast(`log: ${error.message}`);
  }
}

async function loadContext(id) {
  try {
    const [{ history }, { active_files: files }] = await Promise.all([
      api("GET", `sessions/${id}/history`), api("GET", `sessions/${id}/files`)]);
    $("history").replaceChildren(...history.map(message));
    $("files").replaceChildren(...files.map((path) => el("li", { text: path })));
  } catch (error) {
    if (error.status !== 404) toast(`context: ${error.message}`);
  }
}

function message({ at, role, content }) {
  return el("li", {}, el("time", { text: clock(at) }), el("span", { class: "role", text: role }), content);
}

async function act(verb) {
  if (!state.selected) return;
  const id = state.selected.id;
  const questions = {
    start: null,
    terminate: `Terminate session ${id.slice(0, 8)}? Its agent gets SIGTERM, then SIGKILL.`,
    remove: `Clean up session ${id.slice(0, 8)}? Its working dir, output and log are deleted.`,
  };
  if (questions[verb] && !window.confirm(questions[verb])) return;
  try {
    if (verb === "remove") await api("DELETE", `sessions/${id}`);
    else {
      await api("POST", `sessions/${id}/${verb}`, {});
      upsert(await api("GET", `sessions/${id}`));
    }
  } catch (error) {
    toast(`${verb}: ${error.message}`);
  }
}

// -- the page --------------------------------------------------------------------------

let toastTimer = null;
function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

function askToken() {
  $("login").hidden = false;
  $("token").focus();
}

function setLink(up) {
  const link = $("link");
  link.className = `link ${up ? "live" : "down"}`;
  link.textContent = up ? "live" : "reconnecting";
}

async function connect() {
  const health = await api("GET", "health");
  const [{ sessions }, { hosts }] = await Promise.all([api("GET", "sessions"), api("GET", "hosts")]);
  drawHosts(hosts);
  state.sessions.clear();
  changes.summary.clear();
  for (const info of sessions) state.sessions.set(info.session_id, info);
  state.lastSeq = health.last_seq;
  state.cgroups = health.cgroup_mode !== "none";
  draw();
  // Events after the snapshot; older ones a row already reflects are skipped by time.
  followEvents({}, state.lastSeq, onEvent, new AbortController().signal, setLink);
}

function start() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    state.token = fromHash;
    sessionStorage.setItem("hive-token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  for (const s of STATES) $("status-filter").append(el("option", { value: s, text: s }));
  $("status-filter").addEventListener("change", (e) => setStatusFilter(e.target.value));
  $("text-filter").addEventListener("input", (e) => { state.text = e.target.value.trim().toLowerCase(); draw(); });
  $("act-start").addEventListener("click", () => act("start"));
  $("act-terminate").addEventListener("click", () => act("terminate"));
  $("act-remove").addEventListener("click", () => act("remove"));
  $("act-close").addEventListener("click", closeDetail);
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("hive-token", state.token);
    $("login").hidden = true;
    connect().catch((error) => toast(error.message));
  });
  // What running sessions use changes without an event: one list of them every 5 s,
  // and only while one runs, the page is seen and the daemon has cgroups.
  setInterval(async () => {
    if (document.hidden || !state.cgroups) return;
    if (![...state.sessions.values()].some((info) => info.status === "running")) return;
    try {
      for (const info of (await api("GET", "sessions?status=running")).sessions) upsert(info);
    } catch (error) { /* the next tick */ }
  }, USAGE_EVERY_MS);
  // Ages tick locally; nothing is fetched for them.
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.age")) cell.textContent = age(cell.dataset.created);
  }, 1000);
  connect().catch((error) => { if (error.status !== 401) toast(error.message); });
}

start();
