/**
 * Data parallel on this machine: the TopK training step (d=512, F=8192, k=32, global batch 2048)
 * as 1 process × 1 thread, 1 process × 2 threads and 2 ranks × 1 thread under mpirun, waiting
 * by sleeping (the default) and by spinning (SPARSECODER_MPI_WAIT=spin) (median step time;
 * scaling efficiency = T(1×1) / (2 · T(2×1))), and the MPI all-reduce rate on 8.4M
 * floats (the gradient of a 512 × 8192 TopK SAE: 2·512·8192 + 8192 + 512).
 *   deno run -A bench/data_parallel.ts [--json]      bun bench/data_parallel.ts [--json]
 * Internally it reruns itself as `--step` (alone or under mpirun) and `--allreduce` (mpirun).
 */
import { loadavg } from "node:os";
import process from "node:process";
import * as t from "../mod.ts";
import { resolveConfig } from "../sae/config.ts";
import { resolveTrainConfig } from "../sae/train/config.ts";
import { initTrainState, stateTensors, trainStep } from "../sae/train/step.ts";
import { disposeReplaced } from "../tensor/scope.ts";
import { finalizeDistributed, initDistributed } from "../tensor/distributed/job.ts";
import { mpirunArgs } from "../tensor/distributed/launch.ts";
import { runSync, scriptCommand } from "../tensor/platform/process.ts";
import { args, runtime } from "../tensor/platform/runtime.ts";

const d = 512, F = 8192, k = 32, B = 2048, WARMUP = 2, STEPS = 8, FLOATS = 2 * d * F + F + d;
const argv = args();
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** This job's median TopK step time (ms) over the global batch B. */
async function stepTime(): Promise<{ ms: number; rank: number }> {
  const comm = initDistributed();
  const cfg = resolveConfig({ arch: "topk", d_in: d, d_sae: F, k });
  const train = resolveTrainConfig(cfg, { steps: 1000, batch_size: B, seed: 0 });
  const local = B / comm.size;
  // Rows of this rank's share of batch i: a deterministic function of (i, rank).
  const batch = (i: number) => ({
    x: t.random.normal(t.random.foldIn(t.random.key(7), i * comm.size + comm.rank), [local, d]),
  });
  const first = [{ x: t.random.normal(t.random.key(6), [B, d]) }];
  let state = await initTrainState(t.random.key(0), cfg, train, first);
  const times: number[] = [];
  for (let i = 0; i < WARMUP + STEPS; i++) {
    const b = batch(i);
    comm.barrier();
    const t0 = performance.now();
    const { state: next } = await trainStep(state, b, cfg, train, comm);
    comm.barrier();
    if (i >= WARMUP) times.push(performance.now() - t0);
    disposeReplaced([stateTensors(state), b], stateTensors(next));
    state = next;
  }
  finalizeDistributed();
  return { ms: median(times), rank: comm.rank };
}

/** Median seconds of an in-place all-reduce (sum) of FLOATS f32 over the job's ranks. */
function allReduceTime(): { s: number; rank: number } {
  const comm = initDistributed();
  const buf = new Float32Array(FLOATS).fill(1);
  const times: number[] = [];
  for (let i = 0; i < 12; i++) {
    comm.barrier();
    const t0 = performance.now();
    comm.allReduce(buf);
    if (i >= 2) times.push((performance.now() - t0) / 1000);
  }
  finalizeDistributed();
  return { s: median(times), rank: comm.rank };
}

function child(ranks: number, threads: number, mode: string, wait = "sleep"): number {
  const cmd = [...scriptCommand("bench/data_parallel.ts"), mode];
  const full = ranks > 1 ? ["mpirun", ...mpirunArgs(ranks, cmd)] : cmd;
  const r = runSync(full[0], full.slice(1), {
    env: {
      ...process.env,
      SPARSECODER_THREADS: String(threads),
      OPENBLAS_NUM_THREADS: String(threads),
      SPARSECODER_MPI_WAIT: wait,
    } as Record<string, string>,
    timeoutMs: 600_000,
  });
  const line = r.stdout.trim().split("\n").find((l) => l.startsWith("RESULT "));
  if (r.status !== 0 || !line) {
    throw new Error(
      `${full.join(" ")} exited ${r.status}: ${r.error ?? ""}\n${r.stdout}\n${r.stderr}`,
    );
  }
  return Number(line.slice(7));
}

if (argv.includes("--step")) {
  const { ms, rank } = await stepTime();
  if (rank === 0) console.log(`RESULT ${ms}`);
} else if (argv.includes("--allreduce")) {
  const { s, rank } = allReduceTime();
  if (rank === 0) console.log(`RESULT ${s}`);
} else {
  const one1 = child(1, 1, "--step"), one2 = child(1, 2, "--step"), two1 = child(2, 1, "--step");
  const spin = child(2, 1, "--step", "spin");
  const ar = child(2, 1, "--allreduce");
  const r = {
    runtime,
    config: { d, F, k, batch: B, steps: STEPS },
    load_average: loadavg()[0],
    step_ms: { "1x1": one1, "1x2": one2, "2x1": two1, "2x1 spin": spin },
    tokens_per_s: { "1x1": B / one1 * 1e3, "1x2": B / one2 * 1e3, "2x1": B / two1 * 1e3 },
    scaling_efficiency_2x1: one1 / (2 * two1),
    ranks_vs_threads: one2 / two1,
    allreduce: { floats: FLOATS, seconds: ar, gb_per_s: (FLOATS * 4) / ar / 1e9 },
  };
  if (argv.includes("--json")) console.log(JSON.stringify(r));
  else {
    console.log(
      `TopK step d=${d} F=${F} k=${k} batch ${B} (${runtime}), median of ${STEPS}; load average ${
        r.load_average.toFixed(2)
      } at the end:`,
    );
    for (const [name, ms] of Object.entries(r.step_ms)) {
      console.log(
        `  ${name.replace("x", " × ")}: ${ms.toFixed(1)} ms (${(B / ms).toFixed(1)}k tok/s)`,
      );
    }
    console.log(
      `  2 ranks × 1 thread: scaling efficiency ${
        (100 * r.scaling_efficiency_2x1).toFixed(0)
      }% of 2 × (1 × 1); ${r.ranks_vs_threads.toFixed(2)}× the speed of 1 process × 2 threads`,
    );
    console.log(
      `MPI all-reduce of ${FLOATS} f32 on 2 ranks: ${(ar * 1e3).toFixed(1)} ms, ${
        r.allreduce.gb_per_s.toFixed(2)
      } GB/s (buffer bytes / time)`,
    );
  }
}
