/**
 * report.html in a run folder: loss, L0, FVU and dead-fraction curves from metrics.jsonl, the
 * evaluation table and the feature-density histogram from eval.json. One self-contained file:
 * uPlot's script and stylesheet and the data are inlined, so it opens offline from disk.
 * `sae train` also leaves feature_density.npy and sample_inputs.npy for the server's dashboard.
 */
import { readFile } from "node:fs/promises";
import { saveNpy } from "../../data/npy.ts";
import { writeFileAtomic } from "../../data/atomic.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { reshape, sliceAxis } from "../../tensor/ops/shape.ts";
import { dispose, tidy } from "../../tensor/scope.ts";
import type { Batch } from "../arch/architecture.ts";
import { readUplot } from "./uplot.ts";
import type { EvalMetrics } from "./metrics.ts";
import { snakeKeys } from "../io/file_keys.ts";

export interface ReportData {
  title: string;
  /** cfg.json as saved (architecture, sizes, our config under "sparsecoder"), if any. */
  config: Record<string, unknown> | null;
  /** metrics.jsonl rows: step, loss, l0, fvu, dead_fraction, ... (older files: deadFraction). */
  steps: Record<string, number>[];
  /** eval.json (numbers and density_histogram), if written yet. */
  evaluation: Record<string, unknown> | null;
}

// Inside <script>, "</" would end the element; "<\/" is the same string to JSON.parse.
const scriptJson = (v: unknown) =>
  JSON.stringify(v).replace(/<\//g, "<\\/").replace(/<!--/g, "<\\!--");
const escapeHtml = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]!));

const PAGE_SCRIPT = `
const D = JSON.parse(document.getElementById("report-data").textContent);
const col = (k) => D.steps.map((r) => (typeof r[k] === "number" ? r[k] : null));
const xs = D.steps.map((r) => r.step);
function chart(id, label, ys, log) {
  const el = document.getElementById(id);
  if (!xs.length) { el.textContent = "no steps logged yet"; return; }
  new uPlot({ width: Math.max(360, el.clientWidth || 480), height: 220, legend: { show: false }, scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
    axes: [{ label: "step" }, { label }], series: [{}, { label, stroke: "#2563eb", width: 1.5, points: { show: xs.length < 40 } }] }, [xs, ys], el);
  el.dataset.points = String(xs.length);
}
chart("loss-chart", "loss", col("loss").map((v) => (v !== null && v > 0 ? v : null)), true);
chart("l0-chart", "L0", col("l0"), false);
chart("fvu-chart", "FVU", col("fvu"), false);
chart("dead-chart", "dead fraction", col("dead_fraction"), false);
const h = D.evaluation && D.evaluation.density_histogram;
const hel = document.getElementById("density-chart");
if (h && h.counts && h.counts.length) {
  const c = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
  new uPlot({ width: Math.max(360, hel.clientWidth || 480), height: 220, legend: { show: false }, scales: { x: { time: false } },
    axes: [{ label: "log10 firing frequency" }, { label: "features" }],
    series: [{}, { label: "features", fill: "rgba(37,99,235,.35)", stroke: "#2563eb", paths: uPlot.paths.bars({ size: [0.9, 60] }), points: { show: false } }] }, [c, h.counts], hel);
  hel.dataset.bins = String(h.counts.length);
} else hel.textContent = "the density histogram appears once the run is evaluated (eval.json)";
`;

/** The whole page as a string (pure). */
export function renderReport(d: ReportData, uplot: { js: string; css: string }): string {
  const ev = d.evaluation ?? {};
  const evalRows = Object.entries(ev).filter(([, v]) => typeof v === "number").map(([k, v]) =>
    `<tr><th>${escapeHtml(k)}</th><td>${Number((v as number).toPrecision(6))}</td></tr>`
  ).join("");
  const c = d.config ?? {};
  const cfgRows = ["architecture", "d_in", "d_sae", "d_out", "k", "dtype"].filter((k) =>
    c[k] !== undefined
  ).map((k) => `<tr><th>${k}</th><td>${escapeHtml(String(c[k]))}</td></tr>`).join("");
  const last = d.steps[d.steps.length - 1];
  // Rows of older runs' metrics.jsonl carry camelCase names (deadFraction).
  const data = { ...d, steps: d.steps.map(snakeKeys) };
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(d.title)}</title>
<style>${uplot.css}</style>
<style>body{font:14px/1.45 system-ui,sans-serif;margin:20px;color:#1d2230;background:#f8fafc}main{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 14px}h1{font-size:18px}h2{font-size:15px;margin:0 0 6px}table{border-collapse:collapse}th,td{text-align:left;padding:2px 10px 2px 0;border-bottom:1px solid #e5e7eb}</style>
</head><body>
<h1>${escapeHtml(d.title)}</h1>
<p>${
    last
      ? `step ${last.step + 1}: loss ${Number(last.loss.toPrecision(4))}, L0 ${
        Number(last.l0.toFixed(2))
      }, FVU ${Number(last.fvu.toFixed(4))}`
      : "no steps logged yet"
  }</p>
<main>
<section><h2>Dictionary</h2><table>${cfgRows}</table></section>
<section id="evaluation"><h2>Evaluation</h2>${
    evalRows ? `<table>${evalRows}</table>` : "<p>not evaluated yet</p>"
  }</section>
<section><h2>Loss (log scale)</h2><div id="loss-chart"></div></section>
<section><h2>L0 (active features per token)</h2><div id="l0-chart"></div></section>
<section><h2>Fraction of variance unexplained</h2><div id="fvu-chart"></div></section>
<section><h2>Dead features</h2><div id="dead-chart"></div></section>
<section><h2>Feature density (held-out evaluation)</h2><div id="density-chart"></div></section>
</main>
<script id="report-data" type="application/json">${scriptJson(data)}</script>
<script>${uplot.js.replace(/<\/script/gi, "<\\/script")}</script>
<script>${PAGE_SCRIPT}</script>
</body></html>
`;
}

async function readOptional(path: string): Promise<string | null> {
  return await readFile(path, "utf8").catch(() => null);
}

/** Read the run folder and write report.html atomically. */
export async function writeReport(dir: string): Promise<void> {
  const [cfgText, metricsText, evalText, uplot] = await Promise.all([
    readOptional(`${dir}/cfg.json`),
    readOptional(`${dir}/metrics.jsonl`),
    readOptional(`${dir}/eval.json`),
    readUplot(),
  ]);
  const parse = (text: string | null, what: string) => {
    try {
      return text ? JSON.parse(text) : null;
    } catch (e) {
      throw new Error(`report: ${dir}/${what}: ${(e as Error).message}`);
    }
  };
  // A line cut short by a crash mid-append is skipped rather than failing the report.
  const steps = (metricsText ?? "").split("\n").filter((l) => l.trim()).flatMap((l) => {
    try {
      return [JSON.parse(l)];
    } catch {
      return [];
    }
  });
  const html = renderReport({
    title: `sparsecoder run ${dir}`,
    config: parse(cfgText, "cfg.json"),
    steps,
    evaluation: parse(evalText, "eval.json"),
  }, uplot);
  await writeFileAtomic(`${dir}/report.html`, html);
}

/** For the training driver: a report that cannot be written is a warning, never a failed run. */
export async function writeReportQuietly(dir: string): Promise<void> {
  await writeReport(dir).catch((e) =>
    console.error(`warning: report.html not written: ${(e as Error).message}`)
  );
}

/**
 * After `sae train` has evaluated: the dashboard's optional files (per-feature density, up to 32
 * sample input rows) and the report with the density histogram. Releases `sample` when done.
 */
export async function writeRunExtras(dir: string, m: EvalMetrics, sample: Batch): Promise<void> {
  const x = sample.x, d = x.shape[x.ndim - 1];
  const files = tidy(() => ({
    density: tensor(Float32Array.from(m.feature_density)),
    rows: sliceAxis(reshape(x, [-1, d]), 0, 0, Math.min(32, x.size / d)),
  }));
  try {
    await saveNpy(`${dir}/feature_density.npy`, files.density);
    await saveNpy(`${dir}/sample_inputs.npy`, files.rows);
  } finally {
    dispose([files, sample]);
  }
  await writeReportQuietly(dir);
}
