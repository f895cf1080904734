// slipstream dashboard: polls the gateway's /api/metrics/* every 5 s and draws the figures and charts.
// Plain JS, no build step, no third-party code. Every figure on the page comes from the metrics API as it is
// (the page computes nothing of its own), and each one sits in an element with a stable data-metric name so a
// test or a person can compare it with the API. The admin key, when the gateway asks for one (HTTP 401), is kept
// in sessionStorage for this tab only and sent as "Authorization: Bearer <key>".
"use strict";

const REFRESH_MS = 5000;
const KEY_STORAGE = "slipstream.adminKey";
const REPORTS = ["summary", "performance", "costs", "cache", "health"];
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  window: 60,
  model: "",
  busy: false,
  lastDuration: 0, // ms the last refresh took
  again: false, // the window or filter changed while a refresh was in flight: run one more
  waitingForKey: false,
  keyRejected: false,
  models: [],
  last: null, // the last documents received, for redrawing charts on resize
  clearArmedUntil: 0,
};

class Unauthorized extends Error {}

// ------------------------------------------------------------------------------------------------ API
function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    cache: "no-store",
    headers: { ...authHeaders(), ...(options.headers || {}) },
  });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (_) {
      // not an OpenAI-shaped error body: keep the status line
    }
    throw new Error(message);
  }
  return response;
}

function queryString(extra = {}) {
  const params = new URLSearchParams({ window: String(state.window), ...extra });
  if (state.model) params.set("model", state.model);
  return params.toString();
}

// queue: a refresh asked for while one is in flight runs after it (a timer tick just skips: no pile-up).
async function refresh(queue = true) {
  if (state.waitingForKey) return;
  if (state.busy) {
    state.again = state.again || queue;
    return;
  }
  state.busy = true;
  state.again = false;
  const began = performance.now();
  try {
    const query = queryString();
    const docs = await Promise.all(
      REPORTS.map((name) => api(`/api/metrics/${name}?${query}`).then((r) => r.json())),
    );
    const [summary, performance, costs, cache, health] = docs;
    state.last = { summary, performance, costs, cache, health };
    render(state.last);
    hideBanner();
    document.body.dataset.state = "ready";
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error instanceof Unauthorized) {
      askForKey();
    } else {
      document.body.dataset.state = "error";
      showBanner(`Could not load metrics: ${error.message}`);
    }
  } finally {
    state.busy = false;
    state.lastDuration = performance.now() - began;
  }
  if (state.again) refresh();
}

// Every REFRESH_MS, or less often when the figures are slow to compute (a day's window over a busy log):
// the page never keeps the gateway busier than about a third of the time.
function schedule() {
  setTimeout(async () => {
    await refresh(false);
    schedule();
  }, Math.max(REFRESH_MS, 3 * state.lastDuration));
}

// ------------------------------------------------------------------------------------------------ formatting
const dash = "—";
const fmt = {
  int: (v) => (v == null ? dash : Math.round(v).toLocaleString("en-US")),
  ms(v) {
    if (v == null) return dash;
    if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
    if (v >= 100) return `${v.toFixed(0)} ms`;
    if (v >= 10) return `${v.toFixed(1)} ms`;
    return `${v.toFixed(2)} ms`;
  },
  pct: (v) => (v == null ? dash : `${(v * 100).toFixed(1)}%`),
  rate(v) {
    if (v == null) return dash;
    if (v === 0) return "0";
    if (v < 0.01) return v.toPrecision(2);
    return v >= 100 ? v.toFixed(0) : v.toFixed(2);
  },
  usd(v) {
    if (v == null) return dash;
    if (v === 0) return "$0.00";
    if (Math.abs(v) < 1) return `$${v.toFixed(4)}`;
    return `$${v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  },
  bytes(v) {
    if (v == null) return dash;
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
  },
  duration(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return m ? `${m}m ${s % 60}s` : `${s % 60}s`;
  },
  clock: (epoch) => new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
};

// Sets every [data-metric=name] element: the formatted text, and the raw value in data-value.
function setMetric(name, value, format) {
  for (const el of document.querySelectorAll(`[data-metric="${name}"]`)) {
    el.textContent = format(value);
    el.dataset.value = value == null ? "" : String(value);
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ------------------------------------------------------------------------------------------------ rendering
function render({ summary, performance, costs, cache, health }) {
  setMetric("count", summary.count, fmt.int);
  setMetric("requests_per_second", summary.requests_per_second, fmt.rate);
  setMetric("requests_per_second_1m", summary.requests_per_second_1m, fmt.rate);
  for (const p of ["p50", "p95", "p99"]) {
    setMetric(`latency_${p}`, summary.latency_ms[p], fmt.ms);
    setMetric(`ttft_${p}`, summary.ttft_ms[p], fmt.ms);
  }
  setMetric("hit_rate", summary.hit_rate, fmt.pct);
  setMetric("cache_hits", summary.cache_hits, fmt.int);
  setMetric("cache_lookups", summary.cache_lookups, fmt.int);
  setMetric("coalesced", summary.coalesced, fmt.int);
  setMetric("tokens_prompt", summary.tokens.prompt, fmt.int);
  setMetric("tokens_completion", summary.tokens.completion, fmt.int);
  setMetric("tokens_cached", summary.tokens.cached, fmt.int);
  setMetric("cost_usd", summary.cost_usd, fmt.usd);
  setMetric("saved_usd", summary.saved_usd, fmt.usd);
  setMetric("cost_per_hour_usd", costs.cost_per_hour_usd, fmt.usd);
  setMetric("saved_fraction", costs.saved_fraction, fmt.pct);
  setMetric("errors", summary.errors, fmt.int);
  setMetric("error_rate", summary.error_rate, fmt.pct);
  setMetric("retried", summary.retried, fmt.int);
  setMetric("fallbacks", summary.fallbacks, fmt.int);
  document.querySelector('[data-metric="errors"]').classList.toggle("rate-bad", summary.errors > 0);

  const status = document.getElementById("status");
  status.textContent = health.status;
  status.dataset.value = health.status;
  status.className = `status pill ${health.status}`;
  document.getElementById("uptime").textContent = `up ${fmt.duration(health.uptime_seconds)}`;

  renderCache(cache);
  renderErrors(summary.errors_by_class);
  renderDeployments(health);
  renderCosts(costs, performance);
  updateModels(health);
  drawCharts(performance.timeseries);
}

function renderCache(cache) {
  const store = cache.store || {};
  const outcomes = cache.window || { by_status: {}, saved_tokens: {} };
  setMetric("cache_entries", cache.enabled ? store.entries : null, fmt.int);
  setMetric("cache_bytes", cache.enabled ? store.bytes : null, fmt.bytes);
  setMetric("cache_evictions", cache.enabled ? store.evictions : null, fmt.int);
  setMetric("cache_misses", outcomes.by_status.miss, fmt.int);
  setMetric("cache_bypass", outcomes.by_status.bypass, fmt.int);
  const saved = outcomes.saved_tokens;
  setMetric("cache_saved_tokens", saved.prompt == null ? null : saved.prompt + saved.completion, fmt.int);
  document.getElementById("clear-cache").disabled = !cache.enabled;
}

function renderErrors(byClass) {
  const list = document.getElementById("errors");
  const entries = Object.entries(byClass || {});
  list.replaceChildren();
  if (!entries.length) {
    list.append(el("li", { class: "empty" }, "no errors in this window"));
    return;
  }
  const most = Math.max(...entries.map(([, n]) => n));
  for (const [name, count] of entries) {
    const fill = el("span");
    fill.style.width = `${(100 * count) / most}%`;
    list.append(
      el("li", { "data-error-class": name }, el("span", {}, name), el("b", {}, fmt.int(count)),
        el("div", { class: "meter" }, fill)),
    );
  }
}

function renderDeployments(health) {
  const body = document.querySelector("#deployments tbody");
  body.replaceChildren();
  for (const group of health.groups) {
    for (const d of group.deployments) {
      const seen = d.window || { count: 0, latency_ms: {} };
      const breaker = d.breaker.state;
      // The breaker's own recent failure rate: the request log files a failed request under no deployment.
      const errorCell = el("td", { class: "num", "data-field": "failure_rate" }, fmt.pct(d.breaker.error_rate));
      if (d.breaker.error_rate > 0) errorCell.classList.add("rate-bad");
      body.append(
        el("tr", { "data-deployment": d.deployment },
          el("td", {}, d.deployment),
          el("td", { class: "sub" }, group.name),
          el("td", {}, el("span", { class: `pill ${breaker}`, "data-field": "breaker" }, breaker.replace("_", " "))),
          el("td", { class: "num" }, fmt.int(d.in_flight)),
          el("td", { class: "num", "data-field": "count" }, fmt.int(seen.count)),
          errorCell,
          el("td", { class: "num" }, fmt.ms(seen.latency_ms.p95)),
          el("td", { class: "num" }, fmt.ms(d.latency_ewma == null ? null : d.latency_ewma * 1000))),
      );
    }
  }
  if (!body.children.length) {
    body.append(el("tr", { class: "empty" }, el("td", { colspan: "8" }, "no deployments match")));
  }
}

function renderCosts(costs, performance) {
  const body = document.querySelector("#costs tbody");
  const perf = new Map(performance.by_model.map((row) => [row.name, row]));
  body.replaceChildren();
  for (const row of costs.by_model) {
    const p = perf.get(row.name) || { hit_rate: null, latency_ms: {} };
    body.append(
      el("tr", { "data-model": row.name },
        el("td", {}, row.name),
        el("td", { class: "num" }, fmt.int(row.count)),
        el("td", { class: "num" }, fmt.pct(p.hit_rate)),
        el("td", { class: "num" }, fmt.ms(p.latency_ms.p95)),
        el("td", { class: "num" }, fmt.int(row.tokens.prompt + row.tokens.completion)),
        el("td", { class: "num", "data-field": "cost_usd" }, fmt.usd(row.cost_usd)),
        el("td", { class: "num good" }, fmt.usd(row.saved_usd))),
    );
  }
  if (!body.children.length) {
    body.append(el("tr", { class: "empty" }, el("td", { colspan: "7" }, "no requests in this window")));
  }
}

function updateModels(health) {
  const names = health.groups.map((g) => g.name);
  if (state.model || names.join() === state.models.join()) return; // keep the list while filtered
  state.models = names;
  const select = document.getElementById("model");
  select.replaceChildren(el("option", { value: "" }, "all models"));
  for (const name of names) select.append(el("option", { value: name }, name));
}

// ------------------------------------------------------------------------------------------------ charts
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

// A time chart: bars and/or lines over equal time buckets. series: {values, kind, cls, label}.
function timeChart(container, ts, series, { format, max } = {}) {
  const width = Math.max(container.clientWidth, 200);
  const height = Math.max(container.clientHeight, 60);
  const pad = { left: 52, right: 8, top: 8, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const n = ts.points.length;
  const all = series.flatMap((s) => s.values).filter((v) => v != null);
  const top = max ?? niceMax(Math.max(0, ...all));
  const x = (i) => pad.left + (i / n) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  // Layers in drawing order: grid and labels, bars, lines, then the dots (with their tooltips) on top.
  const [grid, bars, lines, dots] = [0, 1, 2, 3].map(() => root.appendChild(svg("g")));

  const ticks = 4;
  for (let i = 0; i <= ticks; i += 1) {
    const v = (top * i) / ticks;
    grid.append(svg("line", { class: "grid-line", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
    const label = svg("text", { class: "axis-label", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = format(v);
    grid.append(label);
  }
  for (const i of [0, Math.floor(n / 2), n]) {
    const anchor = i === 0 ? "start" : i === n ? "end" : "middle";
    const label = svg("text", { class: "axis-label", x: x(i), y: height - 4, "text-anchor": anchor });
    label.textContent = fmt.clock(ts.start + i * ts.bucket_seconds);
    grid.append(label);
  }

  const slot = plotW / n;
  for (const s of series) {
    if (s.kind === "bar") {
      s.values.forEach((v, i) => {
        if (!v) return;
        const rect = svg("rect", {
          class: `bar ${s.cls}`,
          x: x(i) + slot * 0.12,
          width: Math.max(1, slot * 0.76),
          y: y(v),
          height: Math.max(1, pad.top + plotH - y(v)),
          rx: Math.min(2, slot / 4),
        });
        const title = svg("title");
        title.textContent = `${fmt.clock(ts.start + i * ts.bucket_seconds)}  ${s.label}: ${format(v)}`;
        rect.append(title);
        bars.append(rect);
      });
    } else {
      let d = "";
      let open = false;
      s.values.forEach((v, i) => {
        if (v == null) {
          open = false;
          return;
        }
        const cx = x(i) + slot / 2;
        d += `${open ? "L" : "M"}${cx.toFixed(1)},${y(v).toFixed(1)}`;
        open = true;
        const dot = svg("circle", { class: `dot ${s.cls}`, cx, cy: y(v), r: n > 40 ? 2 : 3 });
        const title = svg("title");
        title.textContent = `${fmt.clock(ts.start + i * ts.bucket_seconds)}  ${s.label}: ${format(v)}`;
        dot.append(title);
        dots.append(dot);
      });
      if (d) lines.append(svg("path", { class: `line ${s.cls}`, d }));
    }
  }
  if (!all.some((v) => v > 0)) {
    const note = svg("text", { class: "empty-note", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle" });
    note.textContent = "no requests in this window";
    root.append(note);
  }
  container.replaceChildren(root);
}

function drawCharts(ts) {
  const points = ts.points;
  timeChart(document.getElementById("chart-rate"), ts, [
    { kind: "bar", cls: "", label: "requests/s", values: points.map((p) => p.rps) },
    { kind: "bar", cls: "err", label: "errors/s", values: points.map((p) => p.errors / ts.bucket_seconds) },
  ], { format: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(v >= 1 ? 1 : 2)) });
  timeChart(document.getElementById("chart-latency"), ts, [
    { kind: "line", cls: "s-p95", label: "p95", values: points.map((p) => p.latency_p95) },
    { kind: "line", cls: "s-p50", label: "p50", values: points.map((p) => p.latency_p50) },
    { kind: "line", cls: "s-ttft", label: "TTFT p50", values: points.map((p) => p.ttft_p50) },
  ], { format: fmt.ms });
  timeChart(document.getElementById("chart-hits"), ts, [
    { kind: "line", cls: "s-hit", label: "hit rate", values: points.map((p) => p.hit_rate) },
  ], { format: (v) => `${Math.round(v * 100)}%`, max: 1 });
}

// ------------------------------------------------------------------------------------------------ actions
async function exportAs(format) {
  try {
    const response = await api(`/api/metrics/export?${queryString({ format })}`);
    const blob = await response.blob();
    const disposition = response.headers.get("content-disposition") || "";
    const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || `slipstream-metrics.${format}`;
    const link = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) {
    if (error instanceof Unauthorized) askForKey();
    else toast(`Export failed: ${error.message}`, true);
  }
}

// Clearing takes two clicks within 4 s: the first arms the button, the second clears.
async function clearCache(button) {
  if (Date.now() > state.clearArmedUntil) {
    state.clearArmedUntil = Date.now() + 4000;
    button.textContent = "Click again to clear";
    button.classList.add("armed");
    setTimeout(() => {
      if (Date.now() >= state.clearArmedUntil) disarm(button);
    }, 4100);
    return;
  }
  disarm(button);
  button.disabled = true;
  try {
    const response = await api("/api/cache/clear", { method: "POST" });
    const result = await response.json();
    toast(`Cleared ${fmt.int(result.cleared)} cache entries`);
    await refresh();
  } catch (error) {
    if (error instanceof Unauthorized) askForKey();
    else toast(`Clearing the cache failed: ${error.message}`, true);
  } finally {
    button.disabled = false;
  }
}

function disarm(button) {
  state.clearArmedUntil = 0;
  button.textContent = "Clear cache";
  button.classList.remove("armed");
}

function askForKey() {
  const dialog = document.getElementById("key-dialog");
  const hadKey = Boolean(sessionStorage.getItem(KEY_STORAGE));
  document.getElementById("key-error").textContent = hadKey ? "That key was not accepted." : "";
  document.body.dataset.state = "locked";
  state.waitingForKey = true;
  if (!dialog.open) dialog.showModal();
  document.getElementById("key-input").focus();
}

function onKeySubmit(event) {
  event.preventDefault();
  const input = document.getElementById("key-input");
  const key = input.value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  input.value = "";
  document.getElementById("key-dialog").close();
  state.waitingForKey = false;
  refresh();
}

function showBanner(text) {
  const banner = document.getElementById("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  document.getElementById("banner").hidden = true;
}

let toastTimer = null;
function toast(text, bad = false) {
  const node = document.getElementById("toast");
  node.textContent = text;
  node.classList.toggle("bad", bad);
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 4000);
}

// ------------------------------------------------------------------------------------------------ start
function start() {
  const windowSelect = document.getElementById("window");
  const modelSelect = document.getElementById("model");
  windowSelect.addEventListener("change", () => {
    state.window = Number(windowSelect.value);
    refresh();
  });
  modelSelect.addEventListener("change", () => {
    state.model = modelSelect.value;
    refresh();
  });
  document.getElementById("export-json").addEventListener("click", () => exportAs("json"));
  document.getElementById("export-csv").addEventListener("click", () => exportAs("csv"));
  document.getElementById("clear-cache").addEventListener("click", (e) => clearCache(e.currentTarget));
  document.getElementById("change-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey();
  });
  document.getElementById("key-form").addEventListener("submit", onKeySubmit);
  document.getElementById("key-dialog").addEventListener("cancel", (e) => e.preventDefault());
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.last && drawCharts(state.last.performance.timeseries), 150);
  });
  refresh();
  schedule();
}

start();
