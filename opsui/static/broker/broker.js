// The cloud broker's dashboard: polls /v1/dashboard every second (with the tab's read
// token, if any) and draws topics, edges, groups and mirrors; rates are computed here
// from the differences between two snapshots.

import { LineChart } from "/ui/common/chart.js";
import {
  Rates, ago, badge, bytes, fillTable, h, poll, secondsParam, setupLogin,
} from "/ui/common/ui.js";

const SILENT_AFTER_S = secondsParam("silent_after", 10);
const $ = (id) => document.getElementById(id);
const rates = new Rates();
const charts = {
  ingest: new LineChart($("chart-ingest"), { unit: "/s" }),
  lag: new LineChart($("chart-lag")),
  mirrors: new LineChart($("chart-mirrors")),
};

function mirrorState(m) {
  const states = (m.partitions || []).map((p) => p.state);
  for (const worst of ["stalled", "retrying", "starting", "copying"]) {
    if (states.includes(worst)) return worst;
  }
  return states[0] || "starting"; // every partition idle: caught up
}

function render(doc) {
  const t = doc.time;
  $("health").replaceWith(Object.assign(badge(doc.healthy ? "healthy" : "failing",
    doc.healthy ? "ok" : "bad"), { id: "health" }));
  const perTopic = {};
  const partRows = [];
  for (const topic of doc.topics) {
    let sum = 0, any = false;
    for (const p of topic.partitions) {
      const r = rates.of(`p/${topic.topic}/${p.partition}`, p.end_offset, t);
      if (r !== null) { sum += r; any = true; }
      partRows.push([topic.topic, p.partition, p.start_offset, p.end_offset, r, bytes(p.bytes),
        p.failed ? h("td", { class: "error" }, `failed: ${p.failed}`) : badge("ok", "ok")]);
    }
    perTopic[topic.topic] = any ? sum : null;
  }
  const known = Object.values(perTopic).filter((v) => v !== null);
  $("total-rate").textContent = known.length ? Math.round(known.reduce((a, b) => a + b, 0)) : "–";
  charts.ingest.push(t, perTopic);
  fillTable($("partitions"), partRows, "no topics");

  const edgeRows = doc.edges.map((e) => {
    const silent = t - e.last_seen >= SILENT_AFTER_S;
    const r = rates.of(`e/${e.edge_id}/${e.stream}`, e.records, t);
    return [e.edge_id, e.stream, e.topic, badge(silent ? "silent" : "active", silent ? "warn" : "ok"),
      ago(t - e.last_seen), e.generation, e.acked_offset, r, e.batches, e.errors,
      h("td", { class: "error" }, e.last_error ? `${e.last_error} (${ago(t - e.last_error_at)} ago)` : "")];
  });
  $("edge-count").textContent = doc.edges.length;
  $("silent-after").textContent = SILENT_AFTER_S;
  fillTable($("edges"), edgeRows, "no edge has sent anything since the broker started");

  const lagByGroup = {};
  const groupRows = [];
  let totalLag = 0;
  for (const g of doc.groups) {
    lagByGroup[g.group] = g.lag;
    totalLag += g.lag;
    const members = g.members.map((m) => m.member_id).join(", ") || "none";
    if (!g.offsets.length) groupRows.push([g.group, g.state, members, "–", "–", "–", "–", "–"]);
    for (const o of g.offsets) {
      groupRows.push([g.group, g.state, members, o.topic, o.partition, o.offset, o.end_offset, o.lag]);
    }
  }
  $("total-lag").textContent = doc.groups.length ? totalLag : "–";
  charts.lag.push(t, lagByGroup);
  fillTable($("groups"), groupRows, "no consumer groups");

  const mirrorLag = {};
  let totalMirrorLag = 0;
  const mirrorRows = doc.mirrors.map((m) => {
    const state = mirrorState(m);
    mirrorLag[m.name] = m.lag;
    totalMirrorLag += m.lag || 0;
    const err = (m.partitions || []).map((p) => p.last_error).find((e) => e) || "";
    const copied = (m.partitions || []).reduce((a, p) => a + (p.records_copied || 0), 0);
    return [m.name, m.topic, m.target_description || m.target, badge(state,
      state === "copying" || state === "idle" ? "ok" : state === "starting" ? "idle" : "bad"),
    m.lag, copied, h("td", { class: "error" }, err)];
  });
  $("mirror-lag").textContent = doc.mirrors.length ? totalMirrorLag : "–";
  charts.mirrors.push(t, mirrorLag);
  fillTable($("mirrors"), mirrorRows, "no mirrors");
  $("truncated").textContent = doc.truncated.length
    ? `Cut to the dashboard's limits: ${doc.truncated.join(", ")} (see /metrics for all).` : "";
}

function state(text, kind) {
  $("conn").textContent = text;
  $("login-panel").classList.toggle("hidden", kind !== "auth");
  $("login-why").textContent = kind === "auth" ? text : "";
  if (kind === "down") {
    $("health").replaceWith(Object.assign(badge("no answer", "bad"), { id: "health" }));
  }
}

const pollNow = poll("/v1/dashboard", 1000, render, state);
setupLogin($("login"), pollNow);
