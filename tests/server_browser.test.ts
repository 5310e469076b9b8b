// The dashboard in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core, which
// works under both Deno and Bun): the density histogram and a feature page render real data on
// canvas, the try-it panel returns the reference features, and a screenshot is saved outside the
// repository. Also: report.html from `sae train` renders from disk with the network blocked.
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../server/app.ts";
import { loadAssets } from "../server/assets.ts";
import { startServer } from "../server/serve.ts";
import { main } from "../cli.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { makeFixture, topkRef } from "./server_fixture.ts";
import { browserTestsRun, launch, outDir, paintedPixels } from "./browser_fixture.ts";

if (browserTestsRun("server_browser")) {
  test(
    "dashboard: histogram, feature page and try-it panel render real data in Chromium",
    async () => {
      const f = await makeFixture({ d_in: 8, d_sae: 32, k: 4 });
      const s = startServer(createApp(f.dict, { assets: await loadAssets() }).fetch, {
        port: 0,
        hostname: "127.0.0.1",
        maxBodyBytes: 1 << 20,
      });
      const browser = await launch();
      try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
        const pageErrors: string[] = [];
        page.on("pageerror", (e) => pageErrors.push(String(e)));
        await page.goto(s.url + "/");
        await page.waitForSelector("body[data-ready=true]", { timeout: 20_000 });

        assertEquals(await page.textContent("#title-arch"), "· topk 8→32", "overview title");
        assert((await page.textContent("#info-table"))!.includes("d_sae32"), "overview table");
        assert(
          (await page.textContent("#metrics-table"))!.includes("fvu0.2500"),
          "saved metrics shown",
        );
        const hist = await page.$eval(
          "#density-chart",
          (e) => ({
            bins: (e as HTMLElement).dataset.bins,
            total: (e as HTMLElement).dataset.total,
          }),
        );
        assertEquals(
          hist,
          { bins: "50", total: "32" },
          "histogram of all 32 features from feature_density.npy",
        );
        assert((await paintedPixels(page, "#density-chart")) > 500, "the histogram is drawn");

        await page.fill("#feature-id", "3");
        await page.click("#feature-form button[type=submit]");
        await page.waitForSelector("#feature-chart[data-feature='3']");
        const dims = (await page.$eval("#feature-chart", (e) => (e as HTMLElement).dataset.dims))!
          .split(",").map(Number);
        const want = Array.from(f.W_dec.subarray(3 * 8, 4 * 8)).map((w, d) => [Math.abs(w), d])
          .sort((a, b) => b[0] - a[0]).map(([, d]) => d);
        assertEquals(dims, want, "bar plot of the decoder row's strongest dimensions");
        assert(
          (await paintedPixels(page, "#feature-chart")) > 500,
          "the feature's bar plot is drawn",
        );
        assertEquals(
          await page.$eval("#feature-examples", (e) => (e as HTMLElement).dataset.count),
          "2",
          "top examples listed",
        );
        assert(
          (await page.textContent("#feature-examples"))!.includes("the cat sat"),
          "example text",
        );
        assert(
          (await page.textContent("#feature-info"))!.includes("0.0003162"),
          "density of feature 3 (10^-3.5)",
        );

        await page.selectOption("#sample-select", "1");
        const text = await page.inputValue("#try-input");
        assert(text.split(",").length === 8, `a sample row fills the input: ${text}`);
        await page.click("#try-run");
        await page.waitForSelector("#try-results[data-count]");
        const ids = await page.$$eval(
          "#try-results a",
          (as) => as.map((a) => Number(a.textContent)),
        );
        assertEquals(
          ids,
          topkRef(f, text.split(",").map(Number)).indices,
          "try-it returns the reference top features",
        );
        assert(ids.length > 0, "features returned");

        await page.click("#try-results a >> nth=0");
        await page.waitForSelector(`#feature-chart[data-feature='${ids[0]}']`);
        await page.fill("#try-input", "1, 2, 3");
        await page.click("#try-run");
        await page.waitForSelector("#error:not([hidden])");
        assert(
          (await page.textContent("#error"))!.includes("422 wrong_width"),
          "a bad vector shows the server's error",
        );

        assertEquals(pageErrors, [], "no script errors on the page");
        await page.fill("#try-input", text);
        await page.click("#try-run");
        const shot = join(outDir, "dashboard.png");
        await page.screenshot({ path: shot, fullPage: true });
        assert((await stat(shot)).size > 20_000, "screenshot written");
        console.log(`server_browser: screenshot ${shot}`);
      } finally {
        await browser.close();
        await s.stop();
        await f.cleanup();
      }
    },
    120_000,
  );

  test(
    "dashboard: with auth on, the page asks for the token and loads once it is given",
    async () => {
      const f = await makeFixture();
      const s = startServer(
        createApp(f.dict, { assets: await loadAssets(), token: "dash-token" }).fetch,
        { port: 0, hostname: "127.0.0.1", maxBodyBytes: 1 << 20 },
      );
      const browser = await launch();
      try {
        const page = await browser.newPage();
        await page.goto(s.url + "/");
        await page.waitForSelector("#error:not([hidden])");
        assert(
          (await page.textContent("#error"))!.includes("401 unauthorized"),
          "the 401 is shown",
        );
        await page.fill("#token", "dash-token");
        await page.dispatchEvent("#token", "change");
        await page.waitForSelector("body[data-ready=true]");
        assertEquals(
          await page.$eval("#density-chart", (e) => (e as HTMLElement).dataset.bins),
          "50",
          "loaded with the token",
        );
        assert(await page.isHidden("#error"), "error cleared");
      } finally {
        await browser.close();
        await s.stop();
        await f.cleanup();
      }
    },
    120_000,
  );

  test("report.html from sae train renders offline (network blocked)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sae-report-browser-"));
    const browser = await launch();
    const [log, err] = [console.log, console.error];
    try {
      const out = join(dir, "run");
      console.log = console.error = () => {};
      const code = await main([
        "train",
        "--steps",
        "20",
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
      assertEquals(code, 0);
      const ctx = await browser.newContext();
      const requested: string[] = [];
      await ctx.route("**/*", (route) => {
        const u = route.request().url();
        if (u.startsWith("file:")) return route.continue();
        requested.push(u);
        return route.abort();
      });
      const page = await ctx.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));
      await page.goto("file://" + join(out, "report.html"));
      await page.waitForSelector("#density-chart[data-bins]");
      assertEquals(requested, [], "the report fetches nothing");
      assertEquals(pageErrors, [], "no script errors");
      assertEquals(
        await page.$eval("#fvu-chart", (e) => (e as HTMLElement).dataset.points),
        "3",
        "FVU curve over the logged steps (0, 10, 19)",
      );
      for (const id of ["#loss-chart", "#l0-chart", "#fvu-chart", "#density-chart"]) {
        assert((await paintedPixels(page, id)) > 300, `${id} drawn`);
      }
      await page.screenshot({ path: join(outDir, "report.png"), fullPage: true });
    } finally {
      console.log = log;
      console.error = err;
      await browser.close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
}
