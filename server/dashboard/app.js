// The dashboard: plain browser JavaScript over the server's own API; charts with uPlot (served by
// the app from node_modules). Each panel marks what it rendered in data-* attributes, which the
// browser test reads.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, featureChart: null };

function headers(extra) {
  const h = Object.assign({}, extra);
  const tok = $("token").value.trim();
  if (tok) h.Authorization = `Bearer ${tok}`;
  return h;
}

async function api(path, body) {
  const init = body === undefined ? { headers: headers() } : {
    method: "POST",
    headers: headers({ "content-type": "application/json" }),
    body: JSON.stringify(body),
  };
  const r = await fetch(path, init);
  const j = await r.json().catch(() => ({}));
  if (!r.ok) {
    throw new Error(
      j.error ? `${r.status} ${j.error.code}: ${j.error.message}` : `${r.status} ${r.statusText}`,
    );
  }
  return j;
}

function showError(e) {
  const el = $("error");
  el.hidden = !e;
  el.textContent = e ? String(e.message || e) : "";
}

const fmt = (
  v,
) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v));

function fillTable(table, rows) {
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = k;
    const td = document.createElement("td");
    td.textContent = fmt(v);
    tr.append(th, td);
    return tr;
  }));
}

function barChart(el, xs, ys, opts) {
  el.replaceChildren();
  const width = Math.max(320, el.clientWidth || 480);
  return new uPlot(
    {
      width,
      height: 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false } },
      axes: [{ label: opts.xLabel, values: opts.xValues }, { label: opts.yLabel }],
      series: [{}, {
        label: opts.yLabel,
        fill: opts.fill || "rgba(37,99,235,.35)",
        stroke: opts.stroke || "#2563eb",
        paths: uPlot.paths.bars({ size: [0.9, 60] }),
        points: { show: false },
      }],
    },
    [xs, ys],
    el,
  );
}

async function loadInfo() {
  const info = await api("/v1/info");
  state.info = info;
  $("title-arch").textContent = `· ${info.architecture} ${info.d_in}→${info.d_sae}`;
  const rows = [["architecture", info.architecture], ["d_in", info.d_in], ["d_sae", info.d_sae], [
    "d_out",
    info.d_out,
  ]];
  if (info.k !== undefined) rows.push(["k", info.k]);
  if (info.threshold !== undefined) rows.push(["threshold", info.threshold]);
  rows.push(["dtype", info.dtype], ["backend", info.backend], [
    "parameters",
    info.d_in * info.d_sae + info.d_sae * info.d_out,
  ]);
  fillTable($("info-table"), rows);
  if (info.metrics) fillTable($("metrics-table"), Object.entries(info.metrics));
  $("feature-id").max = String(info.d_sae - 1);
  $("overview").dataset.ready = "true";
}

async function loadDensity() {
  const el = $("density-chart");
  let h;
  try {
    h = await api("/v1/density");
  } catch {
    el.textContent = "No density data in this folder (feature_density.npy or eval.json).";
    el.dataset.bins = "0";
    return;
  }
  const centers = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
  barChart(el, centers, h.counts, { xLabel: "log10 firing frequency", yLabel: "features" });
  $("density-source").textContent = `(from ${h.source})`;
  el.dataset.bins = String(h.counts.length);
  el.dataset.total = String(h.counts.reduce((a, b) => a + b, 0));
}

async function showFeature(id) {
  showError(null);
  const f = await api(`/v1/features/${id}`);
  $("feature-id").value = String(f.id);
  const rows = [["feature", f.id], ["decoder norm", f.decoder_norm]];
  if (f.bias !== null) rows.push(["encoder bias", f.bias]);
  if (f.threshold !== null) rows.push(["threshold", f.threshold]);
  rows.push([
    "firing density",
    f.density === null ? "unknown (no feature_density.npy)" : f.density,
  ]);
  const info = document.createElement("table");
  fillTable(info, rows);
  $("feature-info").replaceChildren(info);
  // The 16 output dimensions with the largest |decoder weight|.
  const top = f.decoder.map((w, d) => [w, d]).sort((a, b) => Math.abs(b[0]) - Math.abs(a[0])).slice(
    0,
    16,
  );
  const dims = top.map(([, d]) => d);
  const el = $("feature-chart");
  state.featureChart = barChart(el, top.map((_, i) => i), top.map(([w]) => w), {
    xLabel: "output dimension",
    yLabel: "weight",
    xValues: (_u, ticks) =>
      ticks.map((t) => (Number.isInteger(t) && dims[t] !== undefined ? String(dims[t]) : "")),
  });
  el.dataset.feature = String(f.id);
  el.dataset.dims = dims.join(",");
  const ex = $("feature-examples");
  if (f.top_examples && f.top_examples.length) {
    ex.replaceChildren(...f.top_examples.map((e) => {
      const li = document.createElement("li");
      li.textContent = `${fmt(e.activation)}  ${e.text ?? ""}${e.source ? `  (${e.source})` : ""}`;
      return li;
    }));
  } else {ex.innerHTML = `<li class="muted">${
      f.top_examples ? "none recorded for this feature" : "none in this folder"
    }</li>`;}
  ex.dataset.count = String(f.top_examples ? f.top_examples.length : 0);
}

async function loadSamples() {
  let s;
  try {
    s = await api("/v1/samples");
  } catch {
    $("sample-select").disabled = true;
    return;
  }
  state.samples = s.rows;
  const sel = $("sample-select");
  s.rows.forEach((_, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = `sample row ${i}`;
    sel.append(o);
  });
}

async function runTry() {
  showError(null);
  const text = $("try-input").value.trim();
  const values = text.split(/[\s,]+/).filter(Boolean).map(Number);
  const status = $("try-status");
  const topK = Number($("try-topk").value) || 10;
  try {
    const r = await api("/v1/encode", { inputs: [values], top_k: topK });
    const f = r.features[0];
    status.textContent = `${f.indices.length} features shown (largest first)`;
    const head = document.createElement("tr");
    head.innerHTML = "<th>feature</th><th>activation</th>";
    $("try-results").replaceChildren(
      head,
      ...f.indices.map((id, i) => {
        const tr = document.createElement("tr");
        const a = document.createElement("a");
        a.textContent = String(id);
        a.onclick = () => showFeature(id).catch(showError);
        const td1 = document.createElement("td"), td2 = document.createElement("td");
        td1.append(a);
        td2.textContent = fmt(f.values[i]);
        tr.append(td1, td2);
        return tr;
      }),
    );
    $("try-results").dataset.count = String(f.indices.length);
  } catch (e) {
    status.textContent = "";
    showError(e);
  }
}

function wire() {
  $("token").value = sessionStorage.getItem("sae-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("sae-token", $("token").value.trim());
    start();
  });
  $("feature-form").addEventListener("submit", (e) => {
    e.preventDefault();
    showFeature(Number($("feature-id").value)).catch(showError);
  });
  const step = (d) => () =>
    showFeature(Math.min(Math.max(0, Number($("feature-id").value) + d), state.info.d_sae - 1))
      .catch(showError);
  $("feature-prev").onclick = step(-1);
  $("feature-next").onclick = step(1);
  $("sample-select").addEventListener("change", (e) => {
    const i = e.target.value;
    if (i !== "" && state.samples) {
      $("try-input").value = state.samples[Number(i)].map((v) => v.toPrecision(5)).join(", ");
    }
  });
  $("try-run").onclick = runTry;
}

async function start() {
  showError(null);
  try {
    await loadInfo();
    await Promise.all([
      loadDensity(),
      showFeature(Number($("feature-id").value) || 0),
      loadSamples(),
    ]);
    document.body.dataset.ready = "true";
  } catch (e) {
    showError(e);
  }
}

wire();
start();
