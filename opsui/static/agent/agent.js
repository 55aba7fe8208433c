// One gateway at a glance: polls the agent's /status every second. Rates are computed
// here from the counters' differences between two snapshots. The uplink shows as
// "stalled" when records wait and the acked offset has not moved for STALLED_AFTER_S,
// or when the agent is retrying the cloud with records waiting.

import { LineChart } from "/ui/common/chart.js";
import {
  Rates, ago, badge, bytes, fillTable, formatNumber, h, poll, secondsParam,
} from "/ui/common/ui.js";

const STALLED_AFTER_S = secondsParam("stalled_after", 5);
const $ = (id) => document.getElementById(id);
const rates = new Rates();
const charts = {
  rates: new LineChart($("chart-rates"), { unit: "/s" }),
  backlog: new LineChart($("chart-backlog")),
  age: new LineChart($("chart-age"), { unit: "s" }),
};

function setBadge(id, text, kind) {
  $(id).replaceWith(Object.assign(badge(text, kind), { id }));
}

export function uplinkVerdict(doc) {
  const up = doc.uplink || {};
  const waiting = doc.streams.some((s) => s.backlog_records > 0);
  const frozen = doc.streams.some((s) => s.backlog_records > 0 && s.acked_moved_at
    && doc.time - s.acked_moved_at >= STALLED_AFTER_S);
  if (up.state === "stopped") return ["stopped", "bad"];
  if (waiting && (up.state === "retrying" || frozen)) return ["stalled", "bad"];
  if (up.state === "retrying") return ["retrying", "warn"];
  return [up.state || "unknown", up.state === "connected" ? "ok" : "idle"];
}

function render(doc) {
  const t = doc.time;
  $("edge-id").textContent = doc.edge_id;
  setBadge("health", doc.healthy ? "healthy" : "unhealthy", doc.healthy ? "ok" : "bad");
  const [verdict, kind] = uplinkVerdict(doc);
  setBadge("uplink", verdict, kind);
  const up = doc.uplink || {};
  $("uplink-url").textContent = up.url || "";
  $("in-flight").textContent = up.in_flight ?? "–";
  $("retries").textContent = up.retries ?? "–";
  // the agent keeps its last error after sends succeed again: say it is an old one
  const lastError = up.last_error || up.tls_error || "";
  $("uplink-error").textContent = !lastError ? "none"
    : verdict === "connected" ? `${lastError} (before the uplink recovered)` : lastError;
  const problems = doc.problems || [];
  $("problems").replaceChildren(...(problems.length ? problems.map((p) => h("li", {}, p))
    : [h("li", { class: "none" }, "none")]));

  const totals = { received: 0, appended: 0, sent: 0 };
  const known = { received: false, appended: false, sent: false };
  const backlog = {}, age = {};
  let backlogTotal = 0, oldest = null;
  const rows = doc.streams.map((s) => {
    const sent = (s.uplink || {}).records_sent || 0;
    const r = {
      received: rates.of(`${s.name}/received`, s.received, t),
      appended: rates.of(`${s.name}/appended`, s.appended, t),
      sent: rates.of(`${s.name}/sent`, sent, t),
    };
    for (const k of Object.keys(totals)) if (r[k] !== null) { totals[k] += r[k]; known[k] = true; }
    backlog[s.name] = s.backlog_records;
    age[s.name] = s.oldest_unsent_age_s ?? 0;
    backlogTotal += s.backlog_records || 0;
    if (s.oldest_unsent_age_s !== null && s.oldest_unsent_age_s !== undefined) {
      oldest = Math.max(oldest ?? 0, s.oldest_unsent_age_s);
    }
    const drops = Object.entries(s.drops || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "0";
    const err = (s.uplink || {}).last_error || (s.uplink || {}).stopped || s.write_error || "";
    const old = verdict === "connected" && !s.write_error && !(s.uplink || {}).stopped;
    return [s.name, s.priority, r.received, r.appended, r.sent, s.backlog_records,
      bytes(s.backlog_bytes), ago(s.oldest_unsent_age_s), s.acked_offset, s.end_offset,
      drops, s.dead_lettered, h("td", { class: old ? "note" : "error" }, err)];
  });
  fillTable($("streams"), rows, "no streams");
  for (const k of Object.keys(totals)) if (!known[k]) totals[k] = null;
  charts.rates.push(t, totals);
  charts.backlog.push(t, backlog);
  charts.age.push(t, age);
  $("received-rate").textContent = formatNumber(totals.received);
  $("sent-rate").textContent = formatNumber(totals.sent);
  $("backlog").textContent = formatNumber(backlogTotal);
  $("oldest").textContent = oldest === null ? "none" : ago(oldest);

  const dl = [];
  for (const [stream, reasons] of Object.entries((doc.dead_letter || {}).by_stream || {})) {
    for (const [reason, n] of Object.entries(reasons)) dl.push([stream, reason, n]);
  }
  fillTable($("deadletters"), dl, "none");
  fillTable($("mqtt"), (doc.mqtt || []).map((m) => [m.client_id,
    badge(m.connected ? "connected" : "disconnected", m.connected ? "ok" : "bad"), m.connects,
    h("td", { class: "error" }, m.refused || m.last_error || "")]), "no MQTT sessions");
}

function state(text, kind) {
  $("conn").textContent = text;
  if (kind !== "ok") setBadge("health", "no answer", "bad");
}

poll("/status", 1000, render, state);
