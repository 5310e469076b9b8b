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

// ---- crosscoders: partition badges and the relative-norm histogram ------------------------------

// One colour per partition set: A-exclusive, B-exclusive, … in input order, shared last.
const PART_COLORS = ["#dc2626", "#2563eb", "#16a34a", "#9333ea", "#ea580c"];
const SHARED_COLOR = "#64748b";

function partColor(name) {
  if (name === "shared") return SHARED_COLOR;
  const l = name.charCodeAt(0) - 65;
  return PART_COLORS[l % PART_COLORS.length];
}

/** A DFC feature's partition set as a coloured badge. */
function partitionBadge(name) {
  const b = document.createElement("span");
  b.className = "badge";
  b.textContent = name;
  b.dataset.partition = name;
  b.style.setProperty("--part-color", partColor(name));
  return b;
}

/**
 * The relative-norm histogram; a DFC's bars stacked by partition set: each set drawn as the
 * running total up to it, largest first, so every set shows as its own band.
 */
async function loadRelativeNorms() {
  const cc = state.info.crosscoder;
  $("relnorm").hidden = !(cc && cc.relative_norm);
  if (!cc || !cc.relative_norm) return;
  const h = await api("/v1/relative-norms?bins=20");
  const el = $("relnorm-chart");
  el.replaceChildren();
  const xs = h.counts.map((_, j) => (h.edges[j] + h.edges[j + 1]) / 2);
  const sets = h.by_partition ? Object.keys(h.by_partition) : [];
  const layers = sets.length
    ? sets.map((_, s) =>
      // A set with no features in a bin draws no bar there (null), not a flat line.
      xs.map((_, j) =>
        h.by_partition[sets[s]][j]
          ? sets.slice(0, s + 1).reduce((a, n) => a + h.by_partition[n][j], 0)
          : null
      )
    ).reverse()
    : [h.counts];
  const names = sets.length ? [...sets].reverse() : ["features"];
  new uPlot(
    {
      width: Math.max(320, el.clientWidth || 480),
      height: 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: false, range: [0, 1] },
        y: { range: (_u, _lo, hi) => [0, Math.max(1, hi)] },
      },
      axes: [{ label: "relative norm (0: A only, 1: B only)" }, { label: "features" }],
      series: [
        {},
        ...names.map((n) => ({
          label: n,
          fill: sets.length ? partColor(n) : "rgba(37,99,235,.35)",
          stroke: sets.length ? partColor(n) : "#2563eb",
          paths: uPlot.paths.bars({ size: [0.9, 60] }),
          points: { show: false },
        })),
      ],
    },
    [xs, ...layers],
    el,
  );
  $("relnorm-legend").replaceChildren(...sets.map((n) => {
    const b = partitionBadge(n);
    b.textContent = `${n} ${h.by_partition[n].reduce((a, c) => a + c, 0)}`;
    return b;
  }));
  $("relnorm-inputs").textContent = cc.hooks
    ? `A = ${cc.hooks[0]}, B = ${cc.hooks[1]}.`
    : state.info.prompt && state.info.prompt.model.includes(",")
    ? state.info.prompt.model.split(",").map((m, l) => `${cc.inputs[l]} = ${m}`).join(", ") + "."
    : "";
  el.dataset.bins = String(h.counts.length);
  el.dataset.total = String(h.counts.reduce((a, b) => a + b, 0) + h.nan);
  el.dataset.sets = sets.join(",");
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
  const cc = info.crosscoder;
  if (cc) {
    rows.push([
      "inputs",
      `${cc.n_inputs}: ${cc.inputs.join(", ")}${cc.hooks ? ` (${cc.hooks.join(", ")})` : ""}`,
    ]);
    if (cc.partition) {
      rows.push([
        "partition",
        Object.entries(cc.partition).map(([n, r]) => `${n} [${r.start}, ${r.end})`).join(", "),
      ]);
    }
  }
  rows.push(["dtype", info.dtype], ["backend", info.backend], [
    "parameters",
    (cc ? cc.n_inputs : 1) * (info.d_in * info.d_sae + info.d_sae * info.d_out),
  ]);
  fillTable($("info-table"), rows);
  if (info.metrics) fillTable($("metrics-table"), Object.entries(info.metrics));
  $("feature-id").max = String(info.d_sae - 1);
  if (info.features) {
    rows.push([
      "statistics",
      `${info.features.tokens_scanned} tokens scanned (${info.features.format})`,
    ]);
    fillTable($("info-table"), rows);
  }
  $("search").hidden = !info.features;
  $("prompt").hidden = !info.prompt;
  if (info.prompt) $("prompt-model").textContent = info.prompt.model;
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

// ---- token-level rendering (contexts, prompts) -------------------------------------------------

const visible = (t) => t.replace(/\n/g, "↵").replace(/\t/g, "→");

/** A link that opens feature `id`'s page. */
function featureLink(id) {
  const a = document.createElement("a");
  a.className = "feature";
  a.textContent = String(id);
  a.dataset.feature = String(id);
  a.onclick = () => showFeature(id).catch(showError);
  return a;
}

/**
 * Text with per-token shading. `spans[i]` is token i's [start, end) in `text`; neighbours share a
 * character split across them, so the text is cut at every span edge and each piece takes the
 * strongest token covering it. `weight(i)` in 0..1 is token i's shade.
 */
function shadedTokens(text, spans, weight, title, maxAt) {
  const cuts = new Set([0, text.length]);
  for (const [a, b] of spans) if (b > a) cuts.add(a), cuts.add(b);
  const edges = [...cuts].sort((x, y) => x - y);
  const out = [];
  for (let k = 0; k + 1 < edges.length; k++) {
    const a = edges[k], b = edges[k + 1];
    let best = -1;
    spans.forEach(([s, e], i) => {
      if (s <= a && e >= b && e > s && (best < 0 || weight(i) > weight(best) || i === maxAt)) {
        best = i;
      }
    });
    const el = document.createElement("span");
    el.className = "tok";
    el.textContent = visible(text.slice(a, b));
    if (best >= 0) {
      const w = Math.max(0, Math.min(1, weight(best)));
      if (w > 0) el.style.background = `rgba(249,115,22,${(0.08 + 0.72 * w).toFixed(3)})`;
      el.title = title(best);
      el.dataset.token = String(best);
      if (best === maxAt) el.classList.add("max");
    }
    out.push(el);
  }
  return out;
}

/** One saved context: its value, tags, and its tokens shaded by activation relative to `scale`. */
function contextItem(c, scale) {
  const li = document.createElement("li");
  const v = document.createElement("span");
  v.className = "value";
  v.textContent = c.value.toFixed(3);
  li.append(v);
  li.append(...shadedTokens(
    c.text,
    c.spans,
    (i) => (scale > 0 ? c.acts[i] / scale : 0),
    (i) => `token ${c.ids[i]} · ${c.acts[i].toPrecision(3)}`,
    c.max_at,
  ));
  for (const tag of [c.slice, c.domain]) {
    if (tag) {
      const t = document.createElement("span");
      t.className = "tag";
      t.textContent = tag;
      li.append(t);
    }
  }
  const max = li.querySelector(".tok.max");
  li.dataset.max = max ? max.textContent : "";
  return li;
}

function logitTable(el, rows) {
  if (!rows || !rows.length) {
    el.innerHTML = `<tr><td class="muted">not saved</td></tr>`;
    return;
  }
  // Crosscoders: one list per input; each row shows them side by side.
  el.replaceChildren(...rows[0].map((_, j) => {
    const tr = document.createElement("tr");
    for (const list of rows) {
      const a = document.createElement("td"), b = document.createElement("td");
      a.textContent = JSON.stringify(list[j].token);
      a.title = `token ${list[j].id}`;
      b.textContent = list[j].value.toFixed(3);
      tr.append(a, b);
    }
    return tr;
  }));
  el.dataset.count = String(rows[0].length);
}

function showStats(st) {
  const box = $("feature-stats");
  box.hidden = !st;
  if (!st) return;
  const scale = st.max_activation || 0;
  const list = $("feature-contexts");
  list.replaceChildren(...st.contexts.map((c) => contextItem(c, scale)));
  list.dataset.count = String(st.contexts.length);
  if (!st.contexts.length) {
    list.innerHTML = `<li class="muted">never fired in the scanned text</li>`;
  }
  const hist = $("feature-hist");
  if (st.histogram && st.histogram.scale > 0) {
    const h = st.histogram, w = h.scale / h.counts.length;
    barChart(hist, h.counts.map((_, j) => (j + 0.5) * w), h.counts, {
      xLabel: "activation",
      yLabel: "firings",
    });
    hist.dataset.bins = String(h.counts.length);
    hist.dataset.total = String(h.counts.reduce((a, b) => a + b, 0));
  } else {
    hist.textContent = "no histogram saved (or the feature never fired)";
    hist.dataset.bins = "0";
  }
  logitTable($("logits-up"), st.logits.up);
  logitTable($("logits-down"), st.logits.down);
  const shares = [];
  const pct = (x) => `${(100 * x).toFixed(1)} %`;
  if (st.slice_fires && st.fires > 0) {
    for (const [n, v] of Object.entries(st.slice_fires)) {
      shares.push([`firings at ${n}`, pct(v / st.fires)]);
    }
  }
  if (st.domain_share) {
    for (const [n, v] of Object.entries(st.domain_share)) {
      shares.push([`top contexts in ${n}`, pct(v)]);
    }
  }
  // A served crosscoder's norms are in the feature's table already (from the weights).
  if (st.decoder_norms && !state.info.crosscoder) {
    shares.push([
      "decoder norm per input",
      st.decoder_norms.map((x) => x.toFixed(3)).join(", "),
    ]);
  }
  if (st.relative_norm !== null && !state.info.crosscoder) {
    shares.push(["relative decoder norm", st.relative_norm]);
  }
  fillTable(
    $("feature-shares"),
    shares.length ? shares : [["—", "no per-slice or per-domain figures"]],
  );
  const iv = $("interval-list");
  iv.replaceChildren(...(st.intervals || []).map((q) => {
    const d = document.createElement("div");
    const h = document.createElement("p");
    h.className = "muted";
    h.textContent = `(${q.low.toPrecision(3)}, ${q.high.toPrecision(3)}]: ${q.count} firings`;
    const ol = document.createElement("ol");
    ol.className = "contexts";
    ol.append(...q.samples.map((c) => contextItem(c, scale)));
    d.append(h, ol);
    return d;
  }));
}

// ---- search by token ----------------------------------------------------------------------------

async function runSearch() {
  showError(null);
  const q = $("search-token").value;
  const out = $("search-results");
  if (!q) return;
  try {
    const r = await api(`/v1/features?token=${encodeURIComponent(q)}&limit=20`);
    $("search-status").textContent = `"${q}" is ${r.tokens.length} token${
      r.tokens.length === 1 ? "" : "s"
    }`;
    out.replaceChildren(...r.tokens.map((t) => {
      const d = document.createElement("div");
      const h = document.createElement("h3");
      h.textContent = `${JSON.stringify(t.text)} (token ${t.id}): ${t.features.length} features`;
      const table = document.createElement("table");
      table.dataset.token = String(t.id);
      const head = document.createElement("tr");
      head.innerHTML = "<th>feature</th><th>top contexts on it</th><th>max</th><th>density</th>";
      table.append(
        head,
        ...t.features.map((f) => {
          const tr = document.createElement("tr");
          const cells = [
            featureLink(f.id),
            f.contexts,
            fmt(f.max_activation),
            f.density === null ? "—" : fmt(f.density),
          ];
          for (const c of cells) {
            const td = document.createElement("td");
            td.append(c instanceof Node ? c : String(c));
            tr.append(td);
          }
          return tr;
        }),
      );
      d.append(h, table);
      return d;
    }));
    out.dataset.count = String(r.tokens.reduce((n, t) => n + t.features.length, 0));
  } catch (e) {
    out.replaceChildren();
    showError(e);
  }
}

// ---- prompt view ----------------------------------------------------------------------------------

function selectPromptToken(r, t) {
  document.querySelectorAll("#prompt-tokens .tok").forEach((el) =>
    el.classList.toggle("selected", el.dataset.token === String(t))
  );
  const tok = r.tokens[t];
  const head = document.createElement("tr");
  const cross = r.kind === "crosscoder";
  const parts = cross && tok.features.some((f) => f.partition);
  head.innerHTML = `<th>feature</th><th>activation</th>${r.layers ? "<th>layer</th>" : ""}${
    parts ? "<th>partition</th>" : ""
  }${cross ? "<th>relative norm</th>" : ""}`;
  $("prompt-features").replaceChildren(
    head,
    ...tok.features.map((f) => {
      const tr = document.createElement("tr");
      const cells = [featureLink(f.id), fmt(f.value)];
      if (r.layers) cells.push(f.slice);
      if (parts) cells.push(partitionBadge(f.partition));
      if (cross) cells.push(f.relative_norm === undefined ? "—" : fmt(f.relative_norm));
      for (const c of cells) {
        const td = document.createElement("td");
        td.append(c instanceof Node ? c : String(c));
        tr.append(td);
      }
      return tr;
    }),
  );
  $("prompt-features").dataset.token = String(t);
  $("prompt-features").dataset.count = String(tok.features.length);
}

function heatmap(r) {
  const box = $("prompt-layers");
  box.hidden = !r.layers;
  if (!r.layers) return;
  const { names, latents, sums } = r.layers;
  const max = Math.max(1e-12, ...sums.flat());
  const head = document.createElement("tr");
  head.append(document.createElement("th"));
  for (const f of latents) {
    const th = document.createElement("th");
    th.append(featureLink(f));
    head.append(th);
  }
  const rows = names.map((n, l) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = n;
    tr.append(th);
    sums[l].forEach((v) => {
      const td = document.createElement("td");
      td.textContent = v > 0 ? v.toPrecision(2) : "";
      td.style.background = `rgba(37,99,235,${(0.85 * v / max).toFixed(3)})`;
      if (v / max > 0.5) td.style.color = "#fff";
      tr.append(td);
    });
    return tr;
  });
  $("prompt-heatmap").replaceChildren(head, ...rows);
  $("prompt-heatmap").dataset.cells = String(names.length * latents.length);
}

async function runPrompt() {
  showError(null);
  const status = $("prompt-status");
  status.textContent = "running…";
  try {
    const r = await api("/v1/prompt", { text: $("prompt-text").value, top_k: 10 });
    const top = r.tokens.map((t) => (t.features[0] ? t.features[0].value : 0));
    const scale = Math.max(1e-12, ...top);
    const box = $("prompt-tokens");
    box.replaceChildren(...shadedTokens(
      r.text,
      r.tokens.map((t) => t.span),
      (i) => top[i] / scale,
      (i) => {
        const f = r.tokens[i].features[0];
        return `token ${r.tokens[i].id}${
          f ? ` · top feature ${f.id} (${f.value.toPrecision(3)})` : ""
        }`;
      },
      -1,
    ));
    box.querySelectorAll(".tok").forEach((el) => {
      if (el.dataset.token !== undefined) {
        el.onclick = () => selectPromptToken(r, Number(el.dataset.token));
      }
    });
    box.dataset.tokens = String(r.tokens.length);
    status.textContent = `${r.tokens.length} tokens (${r.kind})`;
    heatmap(r);
    // Start on the token whose top feature is strongest.
    selectPromptToken(r, top.indexOf(Math.max(...top)));
  } catch (e) {
    status.textContent = "";
    showError(e);
  }
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
  const cc = f.crosscoder;
  if (cc) {
    rows.push([
      "decoder norm per input",
      cc.decoder_norms.map((x, l) => `${cc.inputs[l]} ${x.toFixed(3)}`).join(", "),
    ]);
    if (cc.relative_norm !== null) rows.push(["relative decoder norm", cc.relative_norm]);
  }
  const info = document.createElement("table");
  fillTable(info, rows);
  const badges = document.createElement("p");
  if (cc && cc.partition) badges.append("partition ", partitionBadge(cc.partition));
  $("feature-info").replaceChildren(badges, info);
  $("feature-info").dataset.partition = cc && cc.partition ? cc.partition : "";
  // The 16 output dimensions with the largest |decoder weight| (a crosscoder's named by input).
  const flat = cc ? f.decoder.flat() : f.decoder;
  const width = cc ? f.decoder[0].length : flat.length;
  const dimName = (d) => (cc ? `${cc.inputs[Math.floor(d / width)]}:${d % width}` : String(d));
  const top = flat.map((w, d) => [w, d]).sort((a, b) => Math.abs(b[0]) - Math.abs(a[0])).slice(
    0,
    16,
  );
  const dims = top.map(([, d]) => dimName(d));
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
  showStats(f.stats);
  history.replaceState(null, "", `#feature/${f.id}`);
  $("features").dataset.feature = String(f.id);
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
    // A crosscoder's row is one vector per input: the pasted values split evenly.
    const L = state.info.crosscoder ? state.info.crosscoder.n_inputs : 1;
    const w = values.length / L;
    const row = L === 1
      ? values
      : Array.from({ length: L }, (_, l) => values.slice(l * w, (l + 1) * w));
    const r = await api("/v1/encode", { inputs: [row], top_k: topK });
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
      $("try-input").value = state.samples[Number(i)].flat().map((v) => v.toPrecision(5)).join(
        ", ",
      );
    }
  });
  $("try-run").onclick = runTry;
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    runSearch();
  });
  $("prompt-run").onclick = runPrompt;
}

async function start() {
  showError(null);
  try {
    await loadInfo();
    await Promise.all([
      loadDensity(),
      loadRelativeNorms(),
      showFeature(
        Number((/^#feature\/(\d+)$/.exec(location.hash) || [])[1] ?? $("feature-id").value) || 0,
      ),
      loadSamples(),
    ]);
    document.body.dataset.ready = "true";
  } catch (e) {
    showError(e);
  }
}

wire();
start();
