// A small time-series line chart drawn on a canvas: no library, no build step.
// new LineChart(canvas, {unit, span}) ; chart.push(timeSeconds, {seriesName: value}) ;
// the chart keeps the last `span` seconds, one colour per series, and redraws itself.
// canvas.dataset.points says how many samples it holds (for tests and the curious).

const COLOURS = ["#2a7ae2", "#e2572a", "#2aa876", "#9b59b6", "#d4a017", "#16a2b8",
  "#c0392b", "#7f8c8d"];

export class LineChart {
  constructor(canvas, { unit = "", span = 120 } = {}) {
    this.canvas = canvas;
    this.unit = unit;
    this.window = span;
    this.times = [];
    this.series = new Map(); // name -> array of values (null: no value at that time)
  }

  push(t, values) {
    this.times.push(t);
    for (const [name, v] of Object.entries(values)) {
      if (!this.series.has(name)) {
        if (this.series.size >= COLOURS.length * 2) continue; // bounded legend
        this.series.set(name, new Array(this.times.length - 1).fill(null));
      }
    }
    for (const [name, arr] of this.series) {
      const v = values[name];
      arr.push(typeof v === "number" && Number.isFinite(v) ? v : null);
    }
    while (this.times.length && this.times[0] < t - this.window) {
      this.times.shift();
      for (const arr of this.series.values()) arr.shift();
    }
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || 400, h = c.clientHeight || 160;
    c.width = w * ratio;
    c.height = h * ratio;
    const g = c.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 56, right = 8, top = 8, bottom = 20;
    let max = 0;
    for (const arr of this.series.values()) for (const v of arr) if (v !== null && v > max) max = v;
    max = niceCeil(max);
    const n = this.times.length;
    const t1 = n ? this.times[n - 1] : 0, t0 = t1 - this.window;
    const x = (t) => left + ((t - t0) / this.window) * (w - left - right);
    const y = (v) => top + (1 - v / max) * (h - top - bottom);
    g.font = "11px sans-serif";
    g.strokeStyle = "#ddd";
    g.fillStyle = "#666";
    g.lineWidth = 1;
    for (const frac of [0, 0.5, 1]) {
      const yy = y(max * frac);
      g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
      g.fillText(formatNumber(max * frac) + this.unit, 2, yy + 4);
    }
    g.fillText(`last ${this.window}s`, left, h - 5);
    let i = 0;
    for (const [, arr] of this.series) {
      g.strokeStyle = COLOURS[i++ % COLOURS.length];
      g.lineWidth = 2;
      g.beginPath();
      let pen = false;
      arr.forEach((v, k) => {
        if (v === null) { pen = false; return; }
        if (pen) g.lineTo(x(this.times[k]), y(v)); else g.moveTo(x(this.times[k]), y(v));
        pen = true;
      });
      g.stroke();
    }
    c.dataset.points = String(n);
    this.legend();
  }

  legend() {
    const box = this.canvas.parentElement.querySelector(".legend");
    if (!box) return;
    box.replaceChildren();
    let i = 0;
    for (const [name, arr] of this.series) {
      const item = document.createElement("span");
      item.style.color = COLOURS[i++ % COLOURS.length];
      const last = arr.length ? arr[arr.length - 1] : null;
      item.textContent = `■ ${name} ${last === null ? "–" : formatNumber(last) + this.unit}`;
      box.append(item);
    }
  }
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

export function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}
