/**
 * Forward tokens/s of a GPT-2-small-shaped model (12 layers, d 768, 12 heads, vocabulary 50257)
 * at context 128, batch 8, with one hook cached (blocks.6.hook_resid_post), through the
 * library's runWithCache on the default backend, beside the same forward written in plain
 * PyTorch (bench/lm_forward_torch.py, f32, no_grad, 2 threads) run from this process on the same
 * machine, the two sides alternating forward by forward; medians, and their ratio. Both sides build the same weights and tokens (bench/lm_weights.ts), so
 * the bench also reports how far apart their logits and cached values are.
 *   deno task bench:lm [--json] [--runs N]        bun bench/lm_forward.ts [--json] [--runs N]
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Buffer } from "node:buffer";
import { existsSync } from "node:fs";
import * as t from "../mod.ts";
import { runWithCache } from "../data/lm/model.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";
import { benchConfig, benchParams, benchTokens } from "./lm_weights.ts";

const argv = args();
const json = argv.includes("--json");
const runsAt = argv.indexOf("--runs");
const runs = runsAt >= 0 ? Number(argv[runsAt + 1]) : 5;
const nLayer = 12, dModel = 768, nHead = 12, vocabSize = 50257, T = 128, B = 8, WARMUP = 2;
const hookLayer = 6, hook = `blocks.${hookLayer}.hook_resid_post`, torchThreads = 2;

interface Probe {
  logits: number[];
  cache: number[];
}

/** The values at the positions the Python side probes. */
function probe(logits: t.Tensor, cache: t.Tensor): Probe {
  const lg = logits.dataSync(), c = cache.dataSync();
  const at = (x: ArrayLike<number>, i: number, j: number, k: number, dims: number[]) =>
    x[(i * dims[1] + j) * dims[2] + k];
  return {
    logits: Array.from(
      { length: 16 },
      (_, b) => at(lg, b % B, (7 * b) % T, (7919 * b) % vocabSize, [B, T, vocabSize]),
    ),
    cache: Array.from(
      { length: 16 },
      (_, b) => at(c, b % B, (5 * b) % T, (131 * b) % dModel, [B, T, dModel]),
    ),
  };
}

/** Largest |a − b| over max |b|: how far apart the two sides' values are. */
function relDiff(a: number[], b: number[]): number {
  const scale = Math.max(...b.map(Math.abs));
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]))) / scale;
}

/** The PyTorch side as a child process answering one JSON line per command (see the script). */
class TorchSide {
  #lines: string[] = [];
  #waiting: ((line: string | null) => void) | null = null;
  #proc: ChildProcess;
  constructor(args: string[]) {
    this.#proc = spawn("/usr/bin/python3", args, { stdio: ["pipe", "pipe", "pipe"] });
    let buf = "", err = "";
    this.#proc.stdout!.setEncoding("utf8");
    this.#proc.stdout!.on("data", (chunk: string) => {
      buf += chunk;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        this.#push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    this.#proc.stderr!.on("data", (chunk: Buffer) => (err += chunk.toString()));
    this.#proc.on("close", () => {
      this.stderr = err.trim().split("\n").pop() ?? "";
      this.#push(null);
    });
    this.#proc.on("error", (e: Error) => {
      this.stderr = e.message;
      this.#push(null);
    });
  }
  stderr = "";
  #push(line: string | null): void {
    const w = this.#waiting;
    if (w) {
      this.#waiting = null;
      w(line);
    } else if (line !== null) this.#lines.push(line);
  }
  /** The next line, parsed; null once the process has ended. */
  next(): Promise<Record<string, unknown> | null> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(JSON.parse(line));
    return new Promise((
      resolve,
    ) => (this.#waiting = (l) => resolve(l === null ? null : JSON.parse(l))));
  }
  ask(cmd: string): Promise<Record<string, unknown> | null> {
    this.#proc.stdin!.write(cmd + "\n");
    return this.next();
  }
  close(): void {
    this.#proc.stdin!.end();
  }
}

let torch: TorchSide | null = null;
let torchInfo: { threads: number; torch: string } | null = null;
let why = "";
if (existsSync("/usr/bin/python3")) {
  torch = new TorchSide([
    new URL("./lm_forward_torch.py", import.meta.url).pathname,
    ...[nLayer, dModel, nHead, vocabSize, T, B, hookLayer, torchThreads].map(String),
  ]);
  const ready = await torch.next();
  if (ready) torchInfo = ready as unknown as { threads: number; torch: string };
  else why = `python3-torch failed: ${torch.stderr}`, torch = null;
} else why = "no /usr/bin/python3 (apt-get install python3-torch)";

const cfg = benchConfig({ nLayer, dModel, nHead, vocabSize, nPositions: T });
const model = { family: "gpt2" as const, cfg, params: benchParams(cfg) };
const ids = benchTokens(B, T, vocabSize);
await t.cpuThreadsReady();

/**
 * One forward with the hook cached; the cached activation read back, as a harvester would, and
 * one logit (all of them would be a 200 MB copy that the PyTorch side does not make either): on
 * a GPU backend the readbacks wait for the work.
 */
const one = async (): Promise<{ logits: t.Tensor; cache: t.Tensor }> => {
  const { logits, cache } = t.tidy(() => runWithCache(model, ids, [hook]));
  await cache[hook].data();
  await t.tidy(() => t.slice(logits!, [B - 1, T - 1, vocabSize - 1])).data();
  return { logits: logits!, cache: cache[hook] };
};
const timeOurs = async (): Promise<number> => {
  const t0 = performance.now();
  t.dispose(await one());
  return performance.now() - t0;
};
const timeTorch = async (): Promise<number | null> => {
  const r = await torch?.ask("run");
  return r ? r.ms as number : null;
};
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

// The two sides alternate forward by forward, so a busy spell on a shared machine falls on both.
for (let i = 0; i < WARMUP; i++) await timeOurs(), await timeTorch();
const oursMs: number[] = [], torchMs: number[] = [];
for (let i = 0; i < runs; i++) {
  oursMs.push(await timeOurs());
  const tm = await timeTorch();
  if (tm !== null) torchMs.push(tm);
}
const ms = median(oursMs);
const tps = (B * T * 1000) / ms;
const last = await one();
const ours = probe(last.logits, last.cache);
const theirs = torch ? (await torch.ask("probe")) as unknown as Probe | null : null;
torch?.close();
if (torch && torchMs.length < runs) why = `python3-torch failed: ${torch.stderr}`;
const agree = theirs
  ? { logits: relDiff(ours.logits, theirs.logits), cache: relDiff(ours.cache, theirs.cache) }
  : null;

const pt = torchMs.length === runs ? (B * T * 1000) / median(torchMs) : null;
if (json) {
  console.log(JSON.stringify({
    bench: "lm_forward",
    layers: nLayer,
    d: dModel,
    heads: nHead,
    vocab: vocabSize,
    context: T,
    batch: B,
    hook,
    tokens_per_s: tps,
    ms_per_forward: ms,
    torch_tokens_per_s: pt ?? null,
    torch_ms_per_forward: pt ? median(torchMs) : null,
    torch_threads: torchInfo?.threads ?? null,
    ratio: pt ? tps / pt : null,
    rel_diff: agree,
    runtime,
    backend: t.getBackend().info(),
  }));
} else {
  console.log(
    `GPT-2-small-shaped forward, L=${nLayer} d=${dModel} H=${nHead} V=${vocabSize}, ` +
      `batch ${B} × context ${T}, ${hook} cached (${runtime}; ${t.getBackend().info()})`,
  );
  console.log(
    `  ours ${tps.toFixed(0)} tok/s (${ms.toFixed(0)} ms)   pytorch ${
      pt
        ? `${pt.toFixed(0)} tok/s (${median(torchMs).toFixed(0)} ms; ${
          torchInfo!.threads
        } threads, torch ${torchInfo!.torch})`
        : "n/a"
    }   ratio ${pt ? (tps / pt).toFixed(2) + "x" : why}`,
  );
  if (agree) {
    console.log(
      `  same weights and tokens on both sides: relative difference logits ${
        agree.logits.toExponential(1)
      }, cache ${agree.cache.toExponential(1)}`,
    );
  }
}
