"use strict";
// rollguard's live dashboard: plain DOM and SVG, no library, nothing fetched from any
// server but the coordinator. The API token is in an HttpOnly cookie; every request
// that changes something carries X-Rollguard-Request, which the server requires of
// cookie-authorised POSTs.

const TERMINAL = new Set(["completed", "rolled_back", "failed", "refused"]);
const CONFIRM = {
  pause: ["Pause", "Stop promoting: the deployment stays where it is (a breach still rolls back)."],
  resume: ["Resume", "Go on from where the deployment paused or was held."],
  promote: ["Promote", "End the current step's bake now and go on, if every rule passes."],
  approve: ["Approve", "Approve the step that waits for an operator."],
  rollback: ["Roll back", "Return every host this deployment changed to the last stable version."],
};

const state = {
  selected: null, // the deployment shown
  deployment: null,
  windows: [],
  seen: new Set(), // event seqs already shown
  lastSeq: 0,
  page: 1,
  pages: 1,
  filter: "",
  action: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.reasons = (body && body.reasons) || [];
  }
}

// Who acts, for the event log: the name given at login (a plain cookie; the token's
// cookie is out of this script's reach).
function actor() {
  const found = document.cookie.split("; ").find((c) => c.startsWith("rollguard_actor="));
  const name = found ? decodeURIComponent(found.slice("rollguard_actor=".length)) : "";
  return name ? `${name} (dashboard)` : "dashboard";
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: {
      "X-Rollguard-Request": "dashboard",
      "X-Rollguard-Actor": actor(),
      "Content-Type": "application/json",
    },
  });
  if (response.status === 401) {
    location.assign("/login");
    throw new ApiError(401, { error: "logged out" });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -- formatting ---------------------------------------------------------------------

const pct = (x, digits = 2) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)} %`);
const num = (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const utc = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);
const clock = (t) => new Date(t * 1000).toISOString().slice(11, 19);

function ago(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// -- deployments ----------------------------------------------------------------------

function wantedFromUrl() {
  const match = location.pathname.match(/^\/deployments\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function loadDeployments() {
  const { deployments } = await api("/api/v1/deployments?limit=50");
  renderHistory(deployments);
  const wanted = wantedFromUrl();
  const running = deployments.find((d) => !TERMINAL.has(d.state));
  const next = wanted || (running && running.id) || state.selected || (deployments[0] && deployments[0].id);
  if (next && next !== state.selected) await select(next);
  else if (state.selected) await refreshDeployment();
}

async function select(id) {
  state.selected = id;
  state.windows = [];
  state.seen = new Set();
  $("decisions").replaceChildren();
  await refreshDeployment();
  const { events } = await api(`/api/v1/deployments/${encodeURIComponent(id)}/events`);
  for (const event of events) take(event, false);
  drawChart();
}

async function refreshDeployment() {
  if (!state.selected) return;
  try {
    const { deployment } = await api(`/api/v1/deployments/${encodeURIComponent(state.selected)}`);
    state.deployment = deployment;
    renderDeployment(deployment);
  } catch (error) {
    $("deployment").replaceChildren(el("p", { class: "error" }, error.message));
  }
}

function renderDeployment(d) {
  const running = !TERMINAL.has(d.state);
  $("deployment-title").replaceChildren(
    running ? "Running deployment " : "Deployment ",
    el("code", {}, d.id),
  );
  const step = d.step_name ? `${d.step_name} (${num(d.percent, 0)} % of the fleet), step ${d.step + 1} of ${d.steps_total}` : "–";
  const facts = [
    ["state", el("span", { class: `state ${d.state}`, "data-state": d.state }, d.state.replace(/_/g, " "))],
    ["version", `${d.from_version || "–"} → ${d.version}`],
    ["environment", `${d.environment} (${d.strategy})`],
    ["step", step],
    ["bake", d.bake_length ? `${span(d.bake_elapsed)} of ${span(d.bake_length)}` : "–"],
    ["started", `${utc(d.created)} UTC by ${d.actor}`],
    ["now", d.summary || "–"],
  ];
  if (d.rollback_reason) facts.push(["rolled back because", d.rollback_reason]);
  if (d.hold_reason) facts.push(["held", d.hold_reason.replace(/_/g, " ")]);
  if (d.unreachable && d.unreachable.length) facts.push(["unreachable", d.unreachable.join(", ")]);
  const list = el("dl");
  for (const [key, value] of facts) list.append(el("dt", {}, key), el("dd", {}, value));
  list.append(
    el("dt", {}, "report"),
    el("dd", {}, el("a", { href: `/deployments/${encodeURIComponent(d.id)}/report` }, "open the report")),
  );
  $("deployment").replaceChildren(list);
  $("actions").hidden = !running;
}

function renderHistory(deployments) {
  const rows = deployments.map((d) =>
    el(
      "tr",
      {},
      el("td", {}, el("a", { href: `/deployments/${encodeURIComponent(d.id)}` }, d.id)),
      el("td", {}, d.environment),
      el("td", {}, `${d.from_version || "–"} → ${d.version}`),
      el("td", {}, el("span", { class: `state ${d.state}` }, d.state.replace(/_/g, " "))),
      el("td", {}, utc(d.created).slice(0, 16)),
      el("td", {}, el("a", { href: `/deployments/${encodeURIComponent(d.id)}/report` }, "report")),
    ),
  );
  $("history").tBodies[0].replaceChildren(...rows);
}

// -- events ---------------------------------------------------------------------------

function take(event, live) {
  state.lastSeq = Math.max(state.lastSeq, event.seq);
  if (event.deployment !== state.selected || state.seen.has(event.seq)) return;
  state.seen.add(event.seq);
  if (event.kind === "analysis.window") {
    state.windows.push(event.evidence);
    if (live) drawChart();
    return;
  }
  const evidence = Object.keys(event.evidence || {}).length
    ? el("details", {}, el("summary", {}, "evidence"), el("pre", {}, JSON.stringify(event.evidence, null, 2)))
    : null;
  const item = el(
    "li",
    { class: event.kind.replace(/\./g, "-"), "data-kind": event.kind },
    el("time", {}, clock(event.time)),
    " ",
    el("strong", {}, event.kind),
    " ",
    event.message,
    event.actor ? el("span", { class: "muted" }, ` — ${event.actor}`) : null,
    evidence,
  );
  $("decisions").prepend(item);
}

let refreshTimer = null;
function soon(fn) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(fn, 300);
}

async function stream() {
  const kinds = await (await fetch("/dashboard/kinds.json")).json();
  const source = new EventSource(`/api/v1/events?after=${state.lastSeq}`);
  source.onopen = () => {
    $("stream").textContent = "live";
    $("stream").className = "pill live";
  };
  source.onerror = () => {
    $("stream").textContent = "reconnecting…";
    $("stream").className = "pill down";
  };
  const handle = (message) => {
    const event = JSON.parse(message.data);
    const fresh = event.seq > state.lastSeq; // a reconnect replays what was seen
    take(event, true);
    if (!fresh) return;
    if (event.kind.startsWith("alert.")) loadAlerts();
    if (event.kind.startsWith("deployment.") || event.kind.startsWith("operator.")) soon(loadDeployments);
    else if (event.deployment && event.deployment === state.selected && event.kind !== "analysis.window") soon(refreshDeployment);
  };
  for (const kind of kinds) source.addEventListener(kind, handle);
}

// -- the chart: canary versus baseline --------------------------------------------------

const CHART = { width: 900, height: 300, pad: 58, gap: 40 };

function drawChart() {
  const chart = $("chart");
  chart.setAttribute("data-points", String(state.windows.length));
  // [title, the number of a cohort, its label, the least top of the scale]
  const plots = [
    ["error rate", (c) => c.error_rate, (v) => pct(v, 1), 0.01],
    ["p95 latency", (c) => c.p95_ms, (v) => `${num(v, 0)} ms`, 10],
  ];
  const width = (CHART.width - CHART.gap) / 2;
  const nodes = [];
  const windows = [...state.windows].sort((a, b) => a.end - b.end);
  const t0 = windows.length ? windows[0].start : 0;
  const t1 = windows.length ? windows[windows.length - 1].end : 1;
  plots.forEach(([title, pick, label, least], index) => {
    const x0 = index * (width + CHART.gap) + CHART.pad;
    const x1 = index * (width + CHART.gap) + width - 12;
    const y0 = CHART.height - 28;
    const y1 = 24;
    let top = 0;
    for (const w of windows) for (const name of ["canary", "baseline"]) {
      const v = pick(w.cohorts[name] || {});
      if (v !== null && v !== undefined) top = Math.max(top, v);
    }
    top = Math.max(top * 1.15, least);
    const x = (t) => x0 + ((t - t0) / Math.max(1e-9, t1 - t0)) * (x1 - x0);
    const y = (v) => y0 - (v / top) * (y0 - y1);
    nodes.push(svg("text", { x: x0, y: 14, class: "chart-title" }));
    nodes[nodes.length - 1].textContent = title;
    nodes.push(svg("line", { x1: x0, y1: y0, x2: x1, y2: y0, class: "axis" }));
    nodes.push(svg("line", { x1: x0, y1: y0, x2: x0, y2: y1, class: "axis" }));
    const topLabel = svg("text", { x: x0 - 4, y: y1 + 4, class: "tick", "text-anchor": "end" });
    topLabel.textContent = windows.length ? label(top) : "";
    nodes.push(topLabel);
    const zero = svg("text", { x: x0 - 4, y: y0 + 4, class: "tick", "text-anchor": "end" });
    zero.textContent = "0";
    nodes.push(zero);
    if (windows.length) {
      const spanLabel = svg("text", { x: x1, y: y0 + 18, class: "tick", "text-anchor": "end" });
      spanLabel.textContent = `${span(t1 - t0)} (${windows.length} windows)`;
      nodes.push(spanLabel);
    }
    for (const name of ["baseline", "canary"]) {
      const points = [];
      for (const w of windows) {
        const v = pick(w.cohorts[name] || {});
        if (v !== null && v !== undefined) points.push([x(w.end), y(v)]);
      }
      if (points.length > 1) {
        nodes.push(svg("polyline", { points: points.map((p) => p.join(",")).join(" "), class: `series ${name}` }));
      }
      for (const [px, py] of points) nodes.push(svg("circle", { cx: px, cy: py, r: 3, class: `dot ${name}` }));
    }
  });
  if (!windows.length) {
    const empty = svg("text", { x: CHART.width / 2, y: CHART.height / 2, class: "tick", "text-anchor": "middle" });
    empty.textContent = "waiting for the first analysis window…";
    nodes.push(empty);
  }
  chart.replaceChildren(...nodes);
}

// -- operator actions -------------------------------------------------------------------

function ask(action) {
  const d = state.deployment;
  if (!d) return;
  const [title, text] = CONFIRM[action];
  state.action = action;
  $("confirm-title").textContent = `${title} ${d.id}?`;
  $("confirm-text").textContent =
    action === "rollback" ? `${text} (${d.version} → ${d.rollback_version || d.from_version || "the stable version"})` : text;
  $("confirm-reason").value = "";
  $("confirm").showModal();
}

async function act(action, reason) {
  const d = state.deployment;
  const result = $("action-result");
  const body = { reason };
  // Promote or approve what the operator sees, so a retry never skips a bake.
  if (action === "promote" && (d.state === "baking" || d.state === "held")) body.step = d.step;
  if (action === "approve" && d.state === "awaiting_approval") body.step = d.step + 1;
  result.className = "pending";
  result.replaceChildren(`${action}…`);
  try {
    const reply = await api(`/api/v1/deployments/${encodeURIComponent(d.id)}/${action}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    result.className = "ok";
    result.replaceChildren(`${action}: ${reply.message}`);
    if (reply.deployment) {
      state.deployment = reply.deployment;
      renderDeployment(reply.deployment);
    }
  } catch (error) {
    result.className = "error";
    result.replaceChildren(
      el("strong", {}, `${action} refused: `),
      error.message,
      error.reasons.length ? el("ul", {}, ...error.reasons.map((r) => el("li", {}, r))) : null,
    );
  }
}

// -- alerts and the fleet -----------------------------------------------------------------

async function loadAlerts() {
  const { alerts } = await api("/api/v1/alerts?limit=20");
  const firing = alerts.filter((a) => a.resolved === null).length;
  $("alerts-count").textContent = firing ? `${firing} firing` : "";
  $("alerts-count").className = firing ? "pill down" : "pill";
  $("alerts-empty").hidden = alerts.length > 0;
  $("alerts").tBodies[0].replaceChildren(
    ...alerts.map((a) => {
      const told = a.told.length
        ? [...new Set(a.told.map((d) => `${d.target}${d.outcome === "sent" ? "" : ` (${d.outcome})`}`))].join(", ")
        : "log";
      return el(
        "tr",
        { class: a.resolved === null ? "firing" : "resolved" },
        el("td", {}, a.resolved === null ? "FIRING" : "resolved"),
        el("td", {}, a.host || "–"),
        el("td", {}, a.rule),
        el("td", { title: JSON.stringify(a.evidence) }, a.message),
        el("td", {}, ago(a.started)),
        el("td", {}, told),
      );
    }),
  );
}

async function loadFleet() {
  const query = new URLSearchParams({ q: state.filter, page: String(state.page), size: "50" });
  const fleet = await api(`/api/v1/fleet?${query}`);
  state.page = fleet.page;
  state.pages = fleet.pages;
  $("fleet-headline").textContent = `${fleet.online} of ${fleet.total} hosts online, ${fleet.healthy} healthy`;
  $("fleet-groups").replaceChildren(
    ...fleet.groups.map((g) =>
      el(
        "div",
        { class: g.online < g.hosts || g.healthy < g.online ? "group trouble" : "group" },
        el("strong", {}, `${g.environment} / ${g.zone}`),
        el("span", {}, `${g.online}/${g.hosts} online, ${g.healthy} healthy`),
        el("span", { class: "muted" }, Object.entries(g.versions).map(([v, n]) => `${v} × ${n}`).join(", ")),
      ),
    ),
  );
  $("fleet-page").textContent = `${fleet.matched} hosts match · page ${fleet.page} of ${fleet.pages}`;
  $("fleet-prev").disabled = fleet.page <= 1;
  $("fleet-next").disabled = fleet.page >= fleet.pages;
  $("hosts").tBodies[0].replaceChildren(...fleet.hosts.map(hostRow));
}

function hostRow(h) {
  const value = (check, name) => (h.checks[check] ? h.checks[check].values[name] : undefined);
  const failing = Object.entries(h.checks).filter(([, c]) => !c.ok).map(([name]) => name);
  const requests = (value("application", "requests") || 0) + (value("application", "traffic_requests") || 0);
  const errors = (value("application", "errors") || 0) + (value("application", "traffic_errors") || 0);
  const zone = h.labels.zone || h.labels.availability_zone || h.labels.az || "–";
  return el(
    "tr",
    { class: h.online ? "" : "offline" },
    el("td", {}, h.host),
    el("td", {}, h.environment),
    el("td", {}, zone),
    el("td", {}, h.online ? "online" : "OFFLINE"),
    el("td", {}, h.version || "–"),
    el("td", {}, h.slot || "–"),
    el("td", { class: failing.length ? "bad" : "good" }, failing.length ? `failing: ${failing.join(", ")}` : "ok"),
    el("td", {}, num(value("cpu", "percent"))),
    el("td", {}, num(value("memory", "percent"))),
    el("td", {}, num(value("disk", "percent"))),
    el("td", {}, requests ? pct(errors / requests) : "–"),
    el("td", {}, ago(h.last_seen)),
  );
}

// -- wiring ------------------------------------------------------------------------------

function wire() {
  for (const button of document.querySelectorAll("#actions button")) {
    button.addEventListener("click", () => ask(button.dataset.action));
  }
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  $("confirm-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = $("confirm-reason").value.trim();
    if (!reason) return;
    $("confirm").close();
    act(state.action, reason);
  });
  let typing = null;
  $("fleet-filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.filter = $("fleet-filter").value;
      state.page = 1;
      loadFleet();
    }, 250);
  });
  $("fleet-prev").addEventListener("click", () => { state.page -= 1; loadFleet(); });
  $("fleet-next").addEventListener("click", () => { state.page += 1; loadFleet(); });
}

async function main() {
  wire();
  drawChart();
  await Promise.all([loadDeployments(), loadAlerts(), loadFleet()]);
  await stream();
  setInterval(() => loadFleet().catch(() => {}), 5000);
  setInterval(() => { if (state.deployment && !TERMINAL.has(state.deployment.state)) refreshDeployment(); }, 5000);
}

main().catch((error) => {
  $("action-result").className = "error";
  $("action-result").textContent = `The dashboard could not load: ${error.message}`;
});
