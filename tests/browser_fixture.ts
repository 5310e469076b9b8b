/**
 * Headless Chromium for the dashboard tests (Debian's /usr/bin/chromium driven by playwright-core,
 * which works under both Deno and Bun): where it is, whether it must be there, where screenshots
 * go, and a count of painted canvas pixels to tell a drawn chart from an empty one.
 */
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { chromium, type Page } from "playwright-core";
import { readEnv } from "../tensor/platform/env.ts";
import { test } from "./harness.ts";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const haveChromium = existsSync(CHROMIUM);
const missing = `${CHROMIUM} not found (apt-get install -y chromium; .ci/run installs it)`;

/**
 * Whether the browser tests of file `name` run. CI sets REQUIRE_BROWSER=1 so a lost Chromium fails
 * the run instead of skipping unseen; a Chromium that is there but will not launch fails every
 * test either way.
 */
export function browserTestsRun(name: string): boolean {
  if (!haveChromium && readEnv("REQUIRE_BROWSER") === "1") {
    test(`${name}: Chromium required (REQUIRE_BROWSER=1)`, () => {
      throw new Error(`REQUIRE_BROWSER=1 but ${missing}`);
    });
  } else if (!haveChromium) console.log(`${name}: skipped: ${missing}`);
  return haveChromium;
}

/** Screenshots go under the system temp dir (or $TEST_OUTPUT), never into the repository. */
export const outDir = process.env.TEST_OUTPUT ?? join(tmpdir(), "sparsecoder-test-output");

/** Painted (non-transparent) pixels in the canvases under `selector`. */
export const paintedPixels = (page: Page, selector: string) =>
  page.evaluate((sel) => {
    let n = 0;
    document.querySelectorAll(`${sel} canvas`).forEach((c) => {
      const cv = c as HTMLCanvasElement;
      const px = cv.getContext("2d")!.getImageData(0, 0, cv.width, cv.height).data;
      for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) n++;
    });
    return n;
  }, selector);

export const launch = () =>
  chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
