// The feature pages, search and prompt view in headless Chromium, on a dictionary with `sae
// features` statistics over the fixture model: a feature page shows every saved context with its
// maximum token outlined and the tokens shaded, the histogram drawn and the logit tables filled;
// searching a token lists the features the API gives and links to their pages; the prompt view
// shades the prompt's tokens, lists a clicked token's features and opens a feature from there; an
// MLSAE's layer × latent heatmap has a cell per layer and latent; a DFC over two models draws its
// relative-norm histogram stacked by partition and badges each feature with its partition set on
// its page and in the prompt view. Screenshots go where
// server_browser.test.ts saves its.
import { cp, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { createApp } from "../server/app.ts";
import { loadAssets } from "../server/assets.ts";
import { disposeDictionary, loadDictionary } from "../server/dictionary.ts";
import { loadPrompter } from "../server/prompt.ts";
import { startServer } from "../server/serve.ts";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import {
  DFC,
  dictionaryWithFeatures,
  fixtureModelAndCorpus,
  MLP_SAE,
  randomDictionary,
  RESID_MLSAE,
  scaledDictionary,
} from "./features_fixture.ts";
import { postJson, viaSocket } from "./server_fixture.ts";
import { browserTestsRun, launch, outDir, paintedPixels } from "./browser_fixture.ts";

const L0 = "blocks.0.hook_resid_post", L1 = "blocks.1.hook_resid_post";
const visible = (t: string) => t.replace(/\n/g, "↵").replace(/\t/g, "→");

/** Serve `folder` (with a prompter for `model`) and open the dashboard; `check` gets the page. */
async function withDashboard(
  folder: string,
  model: string | null,
  check: (page: Page, api: (path: string) => Promise<any>, errors: string[]) => Promise<void>,
): Promise<void> {
  const dict = await loadDictionary(folder);
  const prompter = model ? await loadPrompter(dict.saved, model) : undefined;
  const s = startServer(
    createApp(dict, { assets: await loadAssets(), ...(prompter ? { prompter } : {}) }).fetch,
    { port: 0, hostname: "127.0.0.1", maxBodyBytes: 1 << 20 },
  );
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(s.url + "/");
    await page.waitForSelector("body[data-ready=true]", { timeout: 20_000 });
    await check(page, async (path) => await (await fetch(s.url + path)).json(), errors);
  } finally {
    await browser.close();
    await s.stop();
    disposeDictionary(dict);
  }
}

if (browserTestsRun("dashboard_browser")) {
  test("feature page, search by token and prompt view in Chromium", async () => {
    await withTempDir("dashboard-browser-", async (dir) => {
      const { dict: folder, model } = await dictionaryWithFeatures(dir, MLP_SAE);
      await withDashboard(folder, model, async (page, api, errors) => {
        // The feature with the strongest context: its page, opened by its #feature/N link.
        const stats = await Promise.all(
          Array.from({ length: 24 }, (_, f) => api(`/v1/features/${f}`)),
        );
        const f = stats.map((s) => s.stats.max_activation ?? -1)
          .reduce((best, v, i, all) => (v > all[best] ? i : best), 0);
        const st = stats[f].stats;
        await page.goto(page.url().replace(/#.*$/, "") + `#feature/${f}`);
        await page.reload();
        await page.waitForSelector(`#features[data-feature='${f}']`);
        assertEquals(
          await page.$eval("#feature-contexts", (e) => (e as HTMLElement).dataset.count),
          String(st.contexts.length),
          "every saved context listed",
        );
        const maxima = await page.$$eval(
          "#feature-contexts > li",
          (lis) => lis.map((li) => (li as HTMLElement).dataset.max),
        );
        const want = st.contexts.map((c: { text: string; spans: number[][]; max_at: number }) => {
          const [a, b] = c.spans[c.max_at];
          return visible(c.text.slice(a, b));
        });
        assertEquals(maxima, want, "the outlined token is each context's maximum");
        const shaded = await page.$$eval(
          "#feature-contexts .tok",
          (els) => els.filter((e) => (e as HTMLElement).style.background !== "").length,
        );
        assert(shaded >= st.contexts.length, `tokens shaded by activation: ${shaded}`);
        const text = await page.textContent("#feature-contexts > li");
        assert(text!.includes(visible(st.contexts[0].text)), `context text shown: ${text}`);
        assert((await paintedPixels(page, "#feature-hist")) > 300, "activation histogram drawn");
        assertEquals(
          await page.$eval("#feature-hist", (e) => (e as HTMLElement).dataset.total),
          String(st.fires),
          "the histogram holds every firing",
        );
        assertEquals(
          await page.$eval("#logits-up", (e) => (e as HTMLElement).dataset.count),
          "4",
          "logit table",
        );
        await page.screenshot({ path: join(outDir, "dashboard-feature.png"), fullPage: true });

        // Search by token: the text of this feature's strongest context's maximum token.
        const c0 = st.contexts[0];
        const id = c0.ids[c0.max_at];
        const tokText = (await api(`/v1/features?token_id=${id}`)).tokens[0].text;
        const byText = await api(`/v1/features?token=${encodeURIComponent(tokText)}&limit=20`);
        await page.fill("#search-token", tokText);
        await page.click("#search-form button[type=submit]");
        await page.waitForSelector("#search-results[data-count]");
        const listed = await page.$$eval(
          "#search-results a.feature",
          (as) => as.map((a) => Number((a as HTMLElement).dataset.feature)),
        );
        const wantIds = byText.tokens.flatMap((t: { features: { id: number }[] }) =>
          t.features.map((x) => x.id)
        );
        assertEquals(listed, wantIds, "the features the API gives, in its order");
        assert(listed.includes(f), `feature ${f} peaks on token ${id}`);
        await page.screenshot({ path: join(outDir, "dashboard-search.png"), fullPage: true });
        const other = listed.find((x) => x !== f) ?? f;
        await page.click(`#search-results a.feature[data-feature='${other}'] >> nth=0`);
        await page.waitForSelector(`#features[data-feature='${other}']`);

        // The prompt view.
        assert(await page.isVisible("#prompt"), "prompt view shown with a model");
        const prompt = "the cat sat on the mat";
        const r = await (await postJson(viaSocket(page.url().replace(/\/#.*$/, "")), "/v1/prompt", {
          text: prompt,
          top_k: 10,
        })).json();
        await page.fill("#prompt-text", prompt);
        await page.click("#prompt-run");
        await page.waitForSelector("#prompt-features[data-count]");
        assertEquals(
          await page.$eval("#prompt-tokens", (e) => (e as HTMLElement).dataset.tokens),
          String(r.tokens.length),
        );
        assertEquals(await page.textContent("#prompt-tokens"), visible(r.text), "prompt text");
        await page.click("#prompt-tokens .tok[data-token='2']");
        await page.waitForSelector("#prompt-features[data-token='2']");
        const feats = await page.$$eval(
          "#prompt-features a.feature",
          (as) => as.map((a) => Number((a as HTMLElement).dataset.feature)),
        );
        assertEquals(feats, r.tokens[2].features.map((x: { id: number }) => x.id), "token 2");
        await page.screenshot({ path: join(outDir, "dashboard-prompt.png"), fullPage: true });
        await page.click("#prompt-features a.feature >> nth=0");
        await page.waitForSelector(`#features[data-feature='${feats[0]}']`);
        // Too long for the model's 32 positions: the server's 413 is shown.
        await page.fill("#prompt-text", "the cat ".repeat(40));
        await page.click("#prompt-run");
        await page.waitForSelector("#error:not([hidden])");
        assert((await page.textContent("#error"))!.includes("413 text_too_long"), "413 shown");
        assertEquals(errors, [], "no script errors");
        const shot = join(outDir, "dashboard-prompt.png");
        assert((await stat(shot)).size > 20_000, "screenshot written");
        console.log(`dashboard_browser: screenshots in ${outDir}`);
      });
    });
  }, 120_000);

  test(
    "MLSAE prompt: the layer × latent heatmap in Chromium; no model, no prompt view",
    async () => {
      await withTempDir("dashboard-mlsae-", async (dir) => {
        const { model } = await fixtureModelAndCorpus(dir, 1);
        const folder = join(dir, "mlsae");
        await randomDictionary(folder, RESID_MLSAE);
        await withDashboard(folder, model, async (page, _api, errors) => {
          await page.fill("#prompt-text", "the cat sat on the mat");
          await page.click("#prompt-run");
          await page.waitForSelector("#prompt-heatmap[data-cells]");
          const cells = Number(
            await page.$eval("#prompt-heatmap", (e) => (e as HTMLElement).dataset.cells),
          );
          const rows = await page.$$eval(
            "#prompt-heatmap tr th:first-child",
            (t) => t.map((x) => x.textContent),
          );
          assertEquals(rows, ["", L0, L1], "one row per layer");
          const latents = await page.$$eval("#prompt-heatmap a.feature", (a) => a.length);
          assertEquals(cells, 2 * latents);
          assert(latents > 0 && latents <= 24, `latents: ${latents}`);
          assert(await page.isHidden("#search"), "no statistics: no search");
          await page.screenshot({ path: join(outDir, "dashboard-mlsae.png"), fullPage: true });
          assertEquals(errors, [], "no script errors");
        });
        await withDashboard(folder, null, async (page) => {
          assert(await page.isHidden("#prompt"), "no model: the prompt view is hidden");
        });
      });
    },
    120_000,
  );

  test(
    "DFC over two models: relative-norm histogram by partition, partition badges on feature pages and prompts",
    async () => {
      await withTempDir("dashboard-dfc-", async (dir) => {
        const { model } = await fixtureModelAndCorpus(dir, 1);
        const modelB = join(dir, "modelB");
        await cp(model, modelB, { recursive: true });
        const folder = join(dir, "dfc");
        await scaledDictionary(folder, { ...DFC, d_in: 32, extra: { hook_name: L1 } });
        await withDashboard(folder, `${model},${modelB}`, async (page, api, errors) => {
          const h = await api("/v1/relative-norms?bins=20");
          assert(await page.isVisible("#relnorm"), "relative-norm section shown");
          const chart = await page.$eval(
            "#relnorm-chart",
            (e) => ({ ...(e as HTMLElement).dataset }),
          );
          assertEquals(
            [chart.bins, chart.total, chart.sets],
            ["20", "20", "A-exclusive,B-exclusive,shared"],
          );
          assert((await paintedPixels(page, "#relnorm-chart")) > 300, "histogram drawn");
          const legend = await page.$$eval(
            "#relnorm-legend .badge",
            (b) => b.map((x) => x.textContent),
          );
          const sizes = Object.entries(h.by_partition as Record<string, number[]>)
            .map(([n, c]) => `${n} ${c.reduce((a, b) => a + b, 0)}`);
          assertEquals(legend, sizes, "legend: each set and its size");
          for (
            const [f, set] of [[2, "A-exclusive"], [7, "B-exclusive"], [15, "shared"]] as const
          ) {
            await page.fill("#feature-id", String(f));
            await page.click("#feature-form button[type=submit]");
            await page.waitForSelector(`#features[data-feature='${f}']`);
            assertEquals(
              await page.$eval("#feature-info .badge", (b) => b.textContent),
              set,
              `feature ${f}'s badge`,
            );
          }
          await page.screenshot({
            path: join(outDir, "dashboard-dfc-feature.png"),
            fullPage: true,
          });
          const prompt = "the cat sat on the mat";
          const r =
            await (await postJson(viaSocket(page.url().replace(/\/#.*$/, "")), "/v1/prompt", {
              text: prompt,
              top_k: 10,
            })).json();
          const t = r.tokens.findIndex((x: { features: unknown[] }) => x.features.length > 0);
          assert(t >= 0, "some token has features");
          await page.fill("#prompt-text", prompt);
          await page.click("#prompt-run");
          await page.waitForSelector("#prompt-features[data-count]");
          await page.click(`#prompt-tokens .tok[data-token='${t}']`);
          await page.waitForSelector(`#prompt-features[data-token='${t}']`);
          const badges = await page.$$eval(
            "#prompt-features .badge",
            (b) => b.map((x) => (x as HTMLElement).dataset.partition),
          );
          assertEquals(
            badges,
            r.tokens[t].features.map((x: { partition: string }) => x.partition),
            "one badge per feature, the API's partition",
          );
          await page.screenshot({ path: join(outDir, "dashboard-dfc-prompt.png"), fullPage: true });
          // Try it: 64 pasted values are the two inputs' rows of 32.
          const values = Array.from({ length: 64 }, (_, i) => Math.sin(i).toFixed(3));
          await page.fill("#try-input", values.join(", "));
          await page.click("#try-run");
          await page.waitForSelector("#try-results[data-count]");
          const enc =
            await (await postJson(viaSocket(page.url().replace(/\/#.*$/, "")), "/v1/encode", {
              inputs: [[values.slice(0, 32).map(Number), values.slice(32).map(Number)]],
              top_k: 10,
            })).json();
          assertEquals(
            await page.$eval("#try-results", (e) => (e as HTMLElement).dataset.count),
            String(enc.features[0].indices.length),
            "the try-it panel encodes the pasted row as [2, 32]",
          );
          assertEquals(errors, [], "no script errors");
        });
      });
    },
    120_000,
  );
}
