// report.html: the pure renderer (data inlined and escaped, uPlot inlined, no external URLs) and
// what `sae train` leaves in the run folder for the report and for `sae serve`'s dashboard.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import { main } from "../cli.ts";
import { renderReport } from "../sae/eval/report.ts";
import { readUplot } from "../sae/eval/uplot.ts";
import { loadDictionary } from "../server/dictionary.ts";
import { assert, assertEquals, test } from "./harness.ts";

test("renderReport inlines uPlot and the data, escapes what could end a script, links nothing external", async () => {
  const uplot = await readUplot();
  const html = renderReport({
    title: "run </script><b>x</b>",
    config: { architecture: "topk", d_in: 4, d_sae: 16, k: 2 },
    steps: [{ step: 0, loss: 2, l0: 3, fvu: 0.5, deadFraction: 0 }, {
      step: 9,
      loss: 1,
      l0: 2,
      fvu: 0.25,
      deadFraction: 0.1,
    }],
    evaluation: {
      fvu: 0.2,
      note: "</script><script>alert(1)</script>",
      density_histogram: { edges: [-10, -5, 0], counts: [3, 13] },
    },
  }, uplot);
  assert(
    html.includes(uplot.css.slice(0, 200)) && html.includes(uplot.js.slice(0, 200)),
    "uPlot inlined",
  );
  assertEquals(
    html.match(/<\/script>/gi)?.length,
    3,
    "only the three script elements close (data and title escaped)",
  );
  assert(html.includes("run &lt;/script&gt;&lt;b&gt;x&lt;/b&gt;"), "title escaped");
  assert(!/<(script|link)[^>]+(src|href)=/i.test(html), "no external scripts or stylesheets");
  const data = JSON.parse(
    html.split('<script id="report-data" type="application/json">')[1].split("</script>")[0],
  );
  assertEquals(
    data.steps.map((s: { fvu: number }) => s.fvu),
    [0.5, 0.25],
    "curves' data round-trips",
  );
  assertEquals(
    data.evaluation.note,
    "</script><script>alert(1)</script>",
    "escaped text parses back unchanged",
  );
  assertEquals(data.evaluation.density_histogram.counts, [3, 13]);
});

test("sae train writes report.html, feature_density.npy and sample_inputs.npy; sae serve loads them", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sae-report-"));
  const [log, err] = [console.log, console.error];
  try {
    const out = join(dir, "run");
    console.log = () => {};
    console.error = () => {};
    const code = await main([
      "train",
      "--arch",
      "topk",
      "--steps",
      "12",
      "--batch",
      "64",
      "--d-sae",
      "32",
      "--k",
      "4",
      "--synthetic-d",
      "16",
      "--synthetic-features",
      "24",
      "--quiet",
      "--out",
      out,
    ]);
    console.log = log;
    console.error = err;
    assertEquals(code, 0, "train");
    const html = await readFile(join(out, "report.html"), "utf8");
    const data = JSON.parse(
      html.split('<script id="report-data" type="application/json">')[1].split("</script>")[0],
    );
    assertEquals(data.steps.map((s: { step: number }) => s.step), [0, 10, 11], "every logged step");
    assertEquals(data.config.d_sae, 32, "cfg.json");
    const evalJson = JSON.parse(await readFile(join(out, "eval.json"), "utf8"));
    assertEquals(
      data.evaluation.density_histogram,
      evalJson.density_histogram,
      "the evaluation's histogram",
    );
    const density = await t.loadNpy(join(out, "feature_density.npy"));
    assertEquals(density.shape, [32]);
    const d = Array.from(await density.data());
    assert(d.every((v) => v >= 0 && v <= 1), "frequencies");
    assertEquals(
      Math.round(d.filter((v) => v > 0).length / 32 * 1e6) / 1e6,
      Math.round(evalJson.frac_alive * 1e6) / 1e6,
      "alive features agree with eval.json",
    );
    const samples = await t.loadNpy(join(out, "sample_inputs.npy"));
    assertEquals(samples.shape, [32, 16]);
    t.dispose([density, samples]);
    const served = await loadDictionary(out);
    assert(
      served.density !== null && served.samples?.rows === 32 && served.evaluation !== null,
      "the dashboard's files load",
    );
  } finally {
    console.log = log;
    console.error = err;
    await rm(dir, { recursive: true, force: true });
  }
});
