/**
 * What the dashboard's feature pages, search and prompt view cost on a served dictionary: load time
 * of DIR/features (the token index included) and of the model, then medians of in-process requests
 * (app.fetch, no socket) for a feature page, a token search and two prompts; for a crosscoder
 * (MODEL may be A,B) also the relative-norm histogram. Without features/ the search is skipped.
 *   deno run -A --v8-flags=--no-maglev bench/dashboard_pages.ts [DIR] [MODEL] [--feature N]   (or bun bench/dashboard_pages.ts …)
 * Defaults: runs/demo (after sae features runs/demo …) and models/lm-1l.
 */
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { args } from "../tensor/platform/runtime.ts";
import { createApp } from "../server/app.ts";
import { loadDictionary } from "../server/dictionary.ts";
import { loadPrompter } from "../server/prompt.ts";

const argv = args();
const at = argv.indexOf("--feature");
const feature = at >= 0 ? Number(argv[at + 1]) : 1886;
const [dir = "runs/demo", model = "models/lm-1l"] = argv.filter((a, i) =>
  !a.startsWith("--") && argv[i - 1] !== "--feature"
);

let t0 = performance.now();
const tokenizer = await loadTokenizer(model.split(",")[0]);
const dict = await loadDictionary(dir, { tokenizer });
console.log(
  `loadDictionary ${dict.features ? "with" : "without"} features/: ${
    (performance.now() - t0).toFixed(0)
  } ms${dict.features ? ` (${dict.features.index.size} tokens indexed)` : ""}`,
);
t0 = performance.now();
const prompter = await loadPrompter(dict.saved, model, { tokenizer });
console.log(`loadPrompter: ${(performance.now() - t0).toFixed(0)} ms`);
const app = createApp(dict, { prompter });

async function time(label: string, make: () => Request, n: number): Promise<void> {
  const ms: number[] = [];
  let bytes = 0, status = 0;
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const r = await app.fetch(make());
    bytes = (await r.arrayBuffer()).byteLength;
    status = r.status;
    ms.push(performance.now() - s);
  }
  ms.sort((a, b) => a - b);
  console.log(`${label}: median ${ms[n >> 1].toFixed(1)} ms, ${bytes} bytes, status ${status}`);
}

const prompt = (text: string) => () =>
  new Request("http://local/v1/prompt", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ text }),
  });
await time(
  `GET /v1/features/${feature}`,
  () => new Request(`http://local/v1/features/${feature}`),
  20,
);
if (dict.features) {
  await time(
    "GET /v1/features?token= München",
    () => new Request(`http://local/v1/features?token=${encodeURIComponent(" München")}`),
    20,
  );
}
if (dict.cross?.relative) {
  await time("GET /v1/relative-norms", () => new Request("http://local/v1/relative-norms"), 20);
}
const short = "Ich glaube, daß ich morgen nach München fahre. def f(x=None): return x + 1";
const long = "The quick brown fox jumps over the lazy dog. ".repeat(6);
for (const text of [short, long]) {
  await time(`POST /v1/prompt (${tokenizer.encode(text).length} tokens)`, prompt(text), 10);
}
