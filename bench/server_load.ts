/**
 * Load test of `sae serve` on loopback: /v1/encode with 1 and 64 rows per request for a TopK
 * dictionary at d=512, F=16384, k=32. The server runs in its own process (under Deno and/or Bun)
 * so autocannon, in this process, does not share its event loop. Each scenario is bounded in
 * time and requests; reported: requests/s, p50/p99 latency, errors and non-2xx answers, the
 * server's resident memory before and after, and how many requests the micro-batcher merged.
 *   deno run -A bench/server_load.ts [--runtime deno|bun|both] [--seconds 8] [--repeat 1] [--json]   (or bun bench/server_load.ts …)
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";
import * as t from "../mod.ts";
import { args } from "../tensor/platform/runtime.ts";

const argv = args();
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1] : dflt;
};
const json = argv.includes("--json");
// --repeat N runs each scenario N times back to back: memory that plateaus is a pool, one that climbs a leak.
const repeat = Number(opt("repeat", "1"));
const seconds = Number(opt("seconds", "8"));
const runtimes = opt("runtime", "both") === "both" ? ["deno", "bun"] : [opt("runtime", "deno")];
const d = 512, F = 16384, k = 32;
// One client first: the batcher has nothing to merge, so the 16-client row shows what merging buys.
const SCENARIOS = [
  { rows: 1, connections: 1, maxRequests: 200_000 },
  { rows: 1, connections: 16, maxRequests: 200_000 },
  { rows: 64, connections: 8, maxRequests: 20_000 },
];

const rssMiB = (pid: number) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
};

function startServer(
  runtime: string,
  dir: string,
): Promise<{ url: string; pid: number; stop: () => Promise<boolean> }> {
  const cmd = runtime === "deno"
    ? ["node_modules/.bin/deno", "run", "-A", "--v8-flags=--no-maglev", "sae/cli.ts"]
    : ["node_modules/.bin/bun", "sae/cli.ts"];
  const child = spawn(cmd[0], [...cmd.slice(1), "serve", dir, "--port", "0", "--max-rows", "64"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<void>((r) => child.on("exit", () => r()));
  let err = "";
  return new Promise((resolve, reject) => {
    child.stderr!.on("data", (b: Uint8Array) => {
      err += new TextDecoder().decode(b);
      const m = /listening on (http:\/\/\S+)/.exec(err);
      // Graceful shutdown is judged by the server's own "stopped" line: Deno's child_process
      // reports the signal it sent as the exit status even when the child exits normally.
      if (m) {
        resolve({
          url: m[1],
          pid: child.pid!,
          stop: () => (child.kill("SIGTERM"),
            exited.then(() => err.includes("sae serve: stopped"))),
        });
      }
    });
    exited.then(() => reject(new Error(`server exited early: ${err}`)));
  });
}

/** Runs until `duration` seconds pass or `maxRequests` are answered, whichever comes first. */
function load(
  url: string,
  body: string,
  connections: number,
  maxRequests: number,
  duration = seconds,
): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    autocannon({
      url: `${url}/v1/encode`,
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      connections,
      duration,
      maxOverallRequests: maxRequests,
    }, (e: Error | null, r: autocannon.Result) => (e ? reject(e) : resolve(r)));
  });
}

const dir = await mkdtemp(join(tmpdir(), "sae-server-bench-"));
try {
  const cfg = t.sae.resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
  const params = t.sae.architecture("topk").init(t.random.key(0), cfg);
  await t.sae.saveSae(dir, { params, cfg });
  const x = Array.from(
    await t.random.normal(t.random.key(1), [64, d]).data(),
    (v) => Number(v.toFixed(5)),
  );
  const rows = (n: number) => Array.from({ length: n }, (_, i) => x.slice(i * d, (i + 1) * d));
  if (!json) console.error("dictionary saved");
  const results = [];
  for (const runtime of runtimes) {
    const server = await startServer(runtime, dir);
    try {
      for (const s of SCENARIOS.flatMap((sc) => Array(repeat).fill(sc) as typeof SCENARIOS)) {
        const body = JSON.stringify({ inputs: rows(s.rows) });
        if (!json) {
          console.error(
            `${runtime}: ${s.rows} row(s) per request, ${s.connections} connections, ${seconds} s`,
          );
        }
        await load(server.url, body, 2, 100, 2); // warm-up: JIT tiers, BLAS threads, buffer pool
        const before = rssMiB(server.pid);
        const stats0 = await (await fetch(`${server.url}/v1/stats`)).json();
        const r = await load(server.url, body, s.connections, s.maxRequests);
        const stats1 = await (await fetch(`${server.url}/v1/stats`)).json();
        const after = rssMiB(server.pid);
        const reqs = stats1.encode.requests - stats0.encode.requests,
          batches = stats1.encode.batches - stats0.encode.batches;
        results.push({
          runtime,
          rows: s.rows,
          connections: s.connections,
          requests: r.requests.total,
          req_per_s: Math.round(r.requests.average),
          rows_per_s: Math.round(r.requests.average * s.rows),
          p50_ms: r.latency.p50,
          p99_ms: r.latency.p99,
          errors: r.errors + r.timeouts,
          non_2xx: r.non2xx,
          requests_per_batch: Number((reqs / Math.max(batches, 1)).toFixed(1)),
          live_tensors_before: stats0.tensors.liveBuffers,
          live_tensors_after: stats1.tensors.liveBuffers,
          rss_before_mib: Math.round(before),
          rss_after_mib: Math.round(after),
        });
      }
    } finally {
      if (!(await server.stop())) {
        console.error(
          `warning: the ${runtime} server did not report a graceful stop after SIGTERM`,
        );
      }
    }
  }
  if (json) {
    for (const r of results) {
      console.log(JSON.stringify({ bench: "server_load", d, F, k, seconds, ...r }));
    }
  } else {
    console.log(`/v1/encode, TopK d=${d} F=${F} k=${k}, ${seconds} s per scenario, loopback`);
    console.log(
      "runtime rows conns   req/s  rows/s  p50 ms  p99 ms  errors  non-2xx  req/batch  tensors before→after  RSS MiB before→after",
    );
    for (const r of results) {
      console.log(
        `${r.runtime.padEnd(7)} ${String(r.rows).padStart(4)} ${
          String(r.connections).padStart(5)
        } ${String(r.req_per_s).padStart(7)} ${String(r.rows_per_s).padStart(7)} ${
          String(r.p50_ms).padStart(7)
        } ${String(r.p99_ms).padStart(7)} ${String(r.errors).padStart(7)} ${
          String(r.non_2xx).padStart(8)
        } ${String(r.requests_per_batch).padStart(10)}  ${
          String(`${r.live_tensors_before}→${r.live_tensors_after}`).padStart(21)
        }  ${r.rss_before_mib}→${r.rss_after_mib}`,
      );
    }
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
