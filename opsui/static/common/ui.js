// What both pages share: building DOM from data (textContent only, never markup),
// formatting, rates from counter differences, and polling with an optional bearer token.

import { formatNumber } from "./chart.js";

export { formatNumber };

const TOKEN_KEY = "edgestream.token";

// A number of seconds from the page's query string (?name=5), within [lo, hi].
export function secondsParam(name, fallback, lo = 1, hi = 3600) {
  const v = Number.parseFloat(new URLSearchParams(location.search).get(name));
  return Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : fallback;
}

// h("td", {class: "num"}, "12") -> <td class="num">12</td>; children are text or nodes.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? "–"));
  return node;
}

// Fill <tbody> of `table` with rows: arrays of cells (text, number, or a node). Integers
// (offsets, counts) are shown exactly, fractions (rates) rounded.
export function fillTable(table, rows, emptyText = "none") {
  const body = table.tBodies[0];
  if (!rows.length) {
    const cols = table.tHead ? table.tHead.rows[0].cells.length : 1;
    body.replaceChildren(h("tr", {}, h("td", { colspan: cols, class: "empty" }, emptyText)));
    return;
  }
  body.replaceChildren(...rows.map((cells) => h("tr", {}, ...cells.map((c) =>
    c instanceof Node ? (c.tagName === "TD" ? c : h("td", {}, c))
      : h("td", { class: typeof c === "number" ? "num" : "" },
        typeof c === "number" && !Number.isInteger(c) ? formatNumber(c) : c)))));
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind}` }, text);
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  if (seconds < 1) return "now";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export function bytes(n) {
  if (!Number.isFinite(n)) return "–";
  for (const [unit, size] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (n >= size) return `${(n / size).toFixed(1)} ${unit}`;
  }
  return `${n} B`;
}

// Per-second rates of counters between two snapshots: rates.of(key, value, t).
export class Rates {
  constructor() { this.last = new Map(); }
  of(key, value, t) {
    const prev = this.last.get(key);
    this.last.set(key, [value, t]);
    if (!prev || t <= prev[1] || value < prev[0]) return null; // first sample or a restart
    return (value - prev[0]) / (t - prev[1]);
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY); }

// The login form: stores the token for this tab only (sessionStorage) and polls again.
export function setupLogin(form, onLogin) {
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = form.querySelector("input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    form.querySelector("input").value = "";
    onLogin();
  });
  const forget = form.querySelector("button[data-forget]");
  if (forget) forget.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); });
}

// Poll `url` every `everyMs`: onData(doc) with each answer, onState(text, kind) with the
// connection state ("ok", "auth" when a token is needed or refused, "down").
export function poll(url, everyMs, onData, onState) {
  let timer = null;
  async function once() {
    clearTimeout(timer);
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    try {
      const ctl = new AbortController();
      const guard = setTimeout(() => ctl.abort(), Math.max(2000, everyMs * 2));
      const resp = await fetch(url, { headers, cache: "no-store", signal: ctl.signal });
      clearTimeout(guard);
      if (resp.status === 401 || resp.status === 403) {
        let why = `${resp.status}`;
        try { why += `: ${(await resp.json()).error}`; } catch { /* not JSON */ }
        onState(why, "auth");
      } else if (!resp.ok) {
        onState(`HTTP ${resp.status}`, "down");
      } else {
        const doc = await resp.json();
        onState(`updated ${new Date().toLocaleTimeString()}`, "ok");
        onData(doc);
      }
    } catch (err) {
      onState(`no answer: ${err.message || err}`, "down");
    }
    timer = setTimeout(once, everyMs);
  }
  once();
  return once; // call it to poll now (after a login)
}
