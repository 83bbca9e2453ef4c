#include "api/dashboard.h"

namespace toolgate::api {

// Kept in one raw string so the binary serves it with no files beside it. Plain HTML, CSS and
// JavaScript: no build step, no fonts, no CDN.
const std::string_view kDashboardHtml = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>toolgate</title>
<style>
  :root { --ok:#1a7f37; --warn:#9a6700; --bad:#cf222e; --muted:#57606a; --line:#d0d7de; --bg:#f6f8fa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff; }
  header { display: flex; align-items: baseline; gap: 16px; padding: 10px 20px; border-bottom: 1px solid var(--line); background: var(--bg); }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: var(--muted); font-size: 12px; }
  main { padding: 12px 20px; }
  h2 { font-size: 15px; margin: 18px 0 8px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { font-size: 12px; color: var(--muted); font-weight: 600; }
  .badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; }
  .CLOSED { background: var(--ok); } .OPEN, .FORCED_OPEN { background: var(--bad); } .HALF_OPEN { background: var(--warn); }
  .page { background: var(--bad); } .ticket { background: var(--warn); } .quiet { background: #8c959f; }
  .small { font-size: 12px; color: var(--muted); }
  .bar { width: 120px; height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; margin-top: 3px; }
  .bar > div { height: 100%; background: #0969da; }
  .bar.full > div { background: var(--bad); }
  svg.spark { display: block; }
  .num { font-variant-numeric: tabular-nums; }
  #error { display: none; margin: 10px 20px; padding: 8px 12px; border: 1px solid var(--bad); color: var(--bad); border-radius: 6px; }
  #login { display: none; margin: 10px 20px; }
  .slo { margin-bottom: 6px; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
  @media (max-width: 1100px) { .grid { grid-template-columns: 1fr; } }
  code { font-size: 12px; }
</style>
</head>
<body>
<header><h1>toolgate</h1><span class="meta" id="updated">loading…</span><span class="meta" id="slo-evaluated"></span></header>
<div id="error"></div>
<form id="login"><label>Admin token <input type="password" id="token" size="40" autocomplete="off"></label> <button>Use</button></form>
<main>
  <h2>Connectors</h2>
  <table id="connectors">
    <thead><tr><th>connector</th><th>breaker</th><th>in flight</th><th>queue: depth / oldest</th><th>last 5 min, all instances</th><th>calls / min (1 h)</th><th>error ratio (1 h)</th>
      <th>latency p50 / p95 / p99 ms (1 h)</th><th>SLOs: budget left, burn 5m · 1h · 6h · 3d, alarms</th></tr></thead>
    <tbody></tbody>
  </table>
  <div class="grid">
    <section><h2>Kill switches</h2><table id="kill-switches"><thead><tr><th>scope</th><th>key</th><th>reason</th><th>by</th><th>since</th></tr></thead><tbody></tbody></table></section>
    <section><h2>Latest audit events</h2><table id="audit"><thead><tr><th>at</th><th>event</th><th>actor</th><th>details</th></tr></thead><tbody></tbody></table></section>
  </div>
</main>
<script>
"use strict";
const REFRESH_MS = 5000;
let token = sessionStorage.getItem("toolgate-admin-token") || "";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
// A sparkline of one or more series (arrays of numbers or null), scaled together.
function sparkline(series, colors, opts) {
  const w = 160, h = 34, pad = 2;
  const svg = svgEl("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  const values = series.flat().filter(v => v !== null && v !== undefined);
  let max = Math.max(opts && opts.min_max || 0, ...values);
  if (!(max > 0)) max = 1;
  const n = Math.max(...series.map(s => s.length));
  svg.append(svgEl("line", { x1: 0, y1: h - pad, x2: w, y2: h - pad, stroke: "#eaeef2" }));
  series.forEach((s, i) => {
    let d = "";
    s.forEach((v, x) => {
      if (v === null || v === undefined) return;
      const px = (n <= 1 ? w - pad : pad + (x * (w - 2 * pad)) / (n - 1)).toFixed(1);
      const py = (h - pad - (v / max) * (h - 2 * pad)).toFixed(1);
      const joined = x > 0 && s[x - 1] !== null && s[x - 1] !== undefined;
      const alone = !joined && (x + 1 >= s.length || s[x + 1] === null || s[x + 1] === undefined);
      d += (joined ? "L" : "M") + px + " " + py + " ";
      // A minute with calls between two without: a dot, or it would not show.
      if (alone) svg.append(svgEl("circle", { cx: px, cy: py, r: 2, fill: colors[i] }));
    });
    if (d) svg.append(svgEl("path", { d, fill: "none", stroke: colors[i], "stroke-width": 1.5 }));
  });
  const title = svgEl("title", {});
  title.textContent = "max " + (opts && opts.fmt ? opts.fmt(max) : max);
  svg.append(title);
  return svg;
}
const pct = v => (v === null || v === undefined) ? "–" : (v * 100).toFixed(v < 0.01 ? 2 : 1) + " %";
const num = v => (v === null || v === undefined) ? "–" : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));
const duration = s => s < 3600 ? Math.round(s / 60) + " min" : s < 172800 ? (s / 3600).toFixed(1) + " h" : (s / 86400).toFixed(1) + " d";
// Budget left over 30 days, and when it runs out at the 1 h burn rate.
function budget(s) {
  if (s.error_budget_remaining < 0) return "budget overspent " + (1 - s.error_budget_remaining).toFixed(1) + "×";
  const left = "budget " + pct(s.error_budget_remaining);
  return s.budget_exhausted_in_s === null ? left : left + " (gone in " + duration(s.budget_exhausted_in_s) + ")";
}
const last = a => { for (let i = a.length - 1; i >= 0; --i) if (a[i] !== null && a[i] !== undefined) return a[i]; return null; };

async function get(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) { document.getElementById("login").style.display = "block"; throw new Error("the admin listener needs its token"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// What agents were answered over the last 5 minutes, fleet-wide (GET /admin/status).
function outcomesCell(st) {
  const td = el("td", { class: "num" });
  if (!st) return td;
  const o = st.last_5m;
  td.dataset.testid = "last5m-" + st.id;
  td.append(el("div", {}, `${o.calls} calls`),
    el("div", { class: "small" }, `${o.succeeded} ok · ${o.failed} failed · ${o.blocked} blocked`));
  const reasons = Object.entries(o.deferred_by_reason || {}).map(([r, n]) => `${r} ${n}`).join(", ");
  td.append(el("div", { class: "small" }, `${o.deferred} deferred` + (reasons ? ` (${reasons})` : "")));
  if (st.limit_set_by_operator) {
    const n = st.limit || {};
    td.append(el("div", { class: "small", "data-testid": "limit-" + st.id },
      `limit ${st.max_in_flight} set by ${n.set_by || "an operator"}${n.set_at ? " at " + n.set_at : ""}: ${n.reason || "?"} (config ${st.config_max_in_flight})`));
  }
  return td;
}

// The connector's name and where it points; an MCP connector's server as the fleet last saw it.
function connectorCell(c) {
  const td = el("td", {}, el("b", {}, c.id));
  if (!c.mcp) {
    td.append(el("div", { class: "small" }, c.base_url));
    return td;
  }
  const m = c.mcp;
  td.append(el("div", { class: "small" }, m.url || m.program));
  const server = m.server_name ? `${m.server_name} ${m.server_version || ""}`.trim() : "server not reached yet";
  td.append(el("div", { class: "small", "data-testid": "mcp-" + c.id },
    `${c.kind}: ${server} · ${m.tool_count} tools` + (m.tools_refreshed_at ? ` · listed ${m.tools_refreshed_at}` : "")));
  return td;
}

function renderConnectors(connectors, slos, series, status) {
  const byId = Object.fromEntries(((status && status.connectors) || []).map(s => [s.id, s]));
  const tbody = document.querySelector("#connectors tbody");
  tbody.replaceChildren();
  for (const c of connectors) {
    const b = c.breaker;
    const breaker = el("td", {}, el("span", { class: "badge " + b.state, "data-testid": "breaker-" + c.id }, b.state));
    if (b.state === "OPEN" || b.state === "HALF_OPEN") {
      breaker.append(el("div", { class: "small" }, b.cooldown_remaining_s > 0 ? `cooldown ${b.cooldown_remaining_s} s left` : "probe allowed"));
    }
    const st = byId[c.id];
    if (st && st.breaker.forced_by !== undefined) {
      breaker.append(el("div", { class: "small", "data-testid": "forced-" + c.id }, `forced open by ${st.breaker.forced_by}${st.breaker.forced_at ? " at " + st.breaker.forced_at : ""}: ${st.breaker.forced_reason}`));
    }
    if (b.half_open_probe_in_flight) breaker.append(el("div", { class: "small" }, "probe in flight"));
    if (c.throttled_remaining_s > 0) {
      breaker.append(el("div", { class: "small", "data-testid": "throttled-" + c.id }, `throttled by the downstream: ${c.throttled_remaining_s} s left`));
    }
    const full = c.in_flight >= c.max_in_flight;
    const bar = el("div", { class: "bar" + (full ? " full" : "") }, el("div", { style: `width:${Math.min(100, (100 * c.in_flight) / Math.max(1, c.max_in_flight))}%` }));
    const points = (series.connectors || {})[c.id] || [];
    const calls = points.map(p => p.calls);
    const errors = points.map(p => p.error_ratio);
    const p50 = points.map(p => p.p50_ms), p95 = points.map(p => p.p95_ms), p99 = points.map(p => p.p99_ms);
    const sloCell = el("td", {});
    for (const s of slos.filter(s => s.connector === c.id)) {
      const firing = s.alarms.filter(a => a.firing);
      const line = el("div", { class: "slo", "data-testid": `slo-${c.id}-${s.slo}` },
        el("b", {}, s.slo), " ", el("span", { class: "small" }, "target " + pct(s.target) + (s.latency_threshold_ms ? ` < ${s.latency_threshold_ms} ms` : "")), el("br"),
        el("span", { class: "num" }, budget(s) + " · burn " +
          ["5m", "1h", "6h", "3d"].map(w => num(s.burn_rates[w])).join(" · ")), " ");
      if (firing.length === 0) line.append(el("span", { class: "badge quiet" }, "ok"));
      for (const a of firing) {
        line.append(el("span", { class: "badge " + a.severity, "data-testid": "alarm", title: `both windows burn faster than ${a.factor}` },
          `${a.severity.toUpperCase()} ${a.tier}`), " ");
      }
      sloCell.append(line);
    }
    tbody.append(el("tr", { "data-connector": c.id },
      connectorCell(c),
      breaker,
      el("td", { class: "num" }, `${c.in_flight} / ${c.max_in_flight}`, bar),
      queueCell(c),
      outcomesCell(st),
      el("td", {}, sparkline([calls], ["#0969da"]), el("span", { class: "small num" }, "now " + num(last(calls)))),
      el("td", {}, sparkline([errors], ["#cf222e"], { fmt: pct }), el("span", { class: "small num" }, "now " + pct(last(errors)))),
      el("td", {}, sparkline([p50, p95, p99], ["#1a7f37", "#9a6700", "#cf222e"]),
        el("span", { class: "small num" }, [last(p50), last(p95), last(p99)].map(num).join(" / "))),
      sloCell));
  }
}

// Queued calls (fleet-wide, from the store): depth, the oldest one's age, how many tenants wait.
function queueCell(c) {
  const depth = c.queue_depth || 0;
  const td = el("td", { class: "num", "data-testid": "queue-" + c.id }, depth === 0 ? "0" : `${depth} / ${age(c.queue_oldest_age_s || 0)}`);
  if (depth > 0) td.append(el("div", { class: "small" }, `${c.queue_tenants} tenant${c.queue_tenants === 1 ? "" : "s"}`));
  return td;
}

function age(s) {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

function renderKillSwitches(list) {
  const tbody = document.querySelector("#kill-switches tbody");
  tbody.replaceChildren();
  if (list.length === 0) tbody.append(el("tr", {}, el("td", { colspan: 5, class: "small" }, "none")));
  for (const k of list) tbody.append(el("tr", {}, el("td", {}, el("span", { class: "badge page" }, k.scope)), el("td", {}, k.key), el("td", {}, k.reason), el("td", {}, k.requested_by), el("td", { class: "small" }, k.at)));
}

function renderAudit(events) {
  const tbody = document.querySelector("#audit tbody");
  tbody.replaceChildren();
  for (const e of events) {
    const d = e.data || {};
    const details = [d.connector_id, d.slo, d.tier, d.from && `${d.from} → ${d.to}`, d.scope && `${d.scope}/${d.key}`, d.reason].filter(Boolean).join(" · ");
    tbody.append(el("tr", {}, el("td", { class: "small" }, e.at), el("td", {}, el("code", {}, e.type)), el("td", { class: "small" }, e.actor), el("td", { class: "small" }, details)));
  }
}

async function refresh() {
  const errorBox = document.getElementById("error");
  try {
    const [connectors, slo, series, kills, audit, status] = await Promise.all([
      get("/admin/connectors"), get("/admin/slo"), get("/admin/series"), get("/admin/kill-switches"), get("/admin/audit?limit=20"),
      get("/admin/status")]);
    renderConnectors(connectors.connectors, slo.slos, series, status);
    renderKillSwitches(kills.kill_switches);
    renderAudit(audit.events);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.getElementById("slo-evaluated").textContent = slo.evaluated_at ? "SLOs evaluated " + slo.evaluated_at + (slo.error ? " (" + slo.error + ")" : "") : "SLOs not evaluated yet";
    errorBox.style.display = "none";
    document.body.dataset.loaded = "true";
  } catch (e) {
    errorBox.textContent = "cannot refresh: " + e.message;
    errorBox.style.display = "block";
  }
}
document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem("toolgate-admin-token", token);
  document.getElementById("login").style.display = "none";
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
)HTML";

}  // namespace toolgate::api
