/**
 * Data-parallel training over MPI, end to end under `mpirun --oversubscribe -np 2` on loopback
 * (tests/fixtures/data_parallel_train.ts, run by this runtime): two ranks with half the batch each
 * train the same parameters as one process with the whole batch (TopK, ReLU, DFC); checkpoint on
 * two + resume on two equals an uninterrupted run; a rank killed or hung mid-step stops the job
 * within the timeout, naming the rank, and leaves only whole checkpoints. Skips, saying why, when
 * mpirun is absent (REQUIRE_MPI=1 makes that a failure). Also the single-process communicator and
 * the reason MPI gives when it cannot load.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import * as t from "../mod.ts";
import { assert, assertEquals, test } from "./harness.ts";
import { runSync, scriptCommand } from "../tensor/platform/process.ts";
import { readEnv } from "../tensor/platform/env.ts";
import { openMpi } from "../tensor/distributed/mpi.ts";
import { singleProcess } from "../tensor/distributed/communicator.ts";
import { lostRank } from "../tensor/distributed/launch.ts";
import { loadCheckpoint } from "../sae/train/checkpoint.ts";
import { verifyPartitionIntegrity } from "../sae/crosscoder/partition.ts";
import { dfcPartition } from "../sae/arch/registry.ts";

const FIXTURE = "tests/fixtures/data_parallel_train.ts";
/**
 * Parameters after 20 steps, 2 ranks × 32 rows against 1 process × 64: each gradient entry is a
 * sum over 64 rows split into two partial sums of 32 (then halved), a reassociation worth a few
 * ulp per step; Adam divides by √v, so the parameters move by lr·(m/√v) with the same few-ulp
 * relative error, and 20 steps accumulate it. Observed: ≤ 1.2e-7 (1 ulp at |x| ≈ 0.7); the
 * bound allows 16 ulp. A wrong averaging (sum not mean, a rank's rows missing, a local top-k
 * instead of the batch's) moves parameters by ~1e-2.
 */
const ATOL = 1e-6;

const mpirun = runSync("mpirun", ["--version"]);
const why = mpirun.error ??
  (mpirun.status !== 0 ? `mpirun --version exited ${mpirun.status}` : null);
if (why && readEnv("REQUIRE_MPI") === "1") {
  throw new Error(`REQUIRE_MPI=1 but mpirun is absent: ${why}`);
}
if (why) console.log(`skip: data-parallel training under mpirun: ${why}`);

interface Ran {
  code: number | null;
  output: string;
  seconds: number;
}

/** Run the fixture (under mpirun with `ranks` > 0), returning its status, output and duration. */
function runFixture(ranks: number, args: string[], env: Record<string, string> = {}): Promise<Ran> {
  const cmd = [
    ...(ranks > 0
      ? ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", String(ranks)]
      : []),
    ...scriptCommand(FIXTURE),
    ...args,
  ];
  const started = performance.now();
  const child = spawn(cmd[0], cmd.slice(1), {
    env: { ...process.env, NO_COLOR: "1", ...env } as Record<string, string>,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const take = (b: Uint8Array) => (output += new TextDecoder().decode(b));
  child.stdout!.on("data", take);
  child.stderr!.on("data", take);
  // A hang is a failure of its own: stop the job well after any timeout under test.
  const guard = setTimeout(() => child.kill("SIGKILL"), 90_000);
  return new Promise((resolve) =>
    child.on("close", (code: number | null) => {
      clearTimeout(guard);
      resolve({ code, output, seconds: (performance.now() - started) / 1000 });
    })
  );
}

async function ok(ranks: number, args: string[]): Promise<void> {
  const r = await runFixture(ranks, args);
  if (r.code !== 0) {
    throw new Error(`${FIXTURE} ${args.join(" ")} on ${ranks || 1} exited ${r.code}:\n${r.output}`);
  }
}

async function host(x: t.Tensor): Promise<Float32Array> {
  return Float32Array.from(await x.data() as ArrayLike<number>);
}

/** The largest |a − b| over the checkpoints' parameters; the dead counters must agree exactly. */
async function paramDistance(a: string, b: string): Promise<number> {
  const [ca, cb] = await Promise.all([
    loadCheckpoint(`${a}/checkpoint`),
    loadCheckpoint(`${b}/checkpoint`),
  ]);
  assertEquals(ca.state.step, cb.state.step, "steps");
  assertEquals(
    Array.from(await host(ca.state.sinceFired)),
    Array.from(await host(cb.state.sinceFired)),
    "sinceFired",
  );
  let worst = 0;
  for (const [name, x] of Object.entries(ca.state.params)) {
    if (!(x instanceof t.Tensor)) continue;
    const [u, v] = [
      await host(x),
      await host((cb.state.params as unknown as Record<string, t.Tensor>)[name]),
    ];
    for (let i = 0; i < u.length; i++) worst = Math.max(worst, Math.abs(u[i] - v[i]));
  }
  return worst;
}

const root = await mkdtemp(join(tmpdir(), "sc-distributed-"));
const dir = (name: string) => join(root, name);

test("distributed: one process is its own job; MPI that cannot load says why", () => {
  const c = singleProcess("test");
  const a = Float32Array.of(1, 2);
  c.allReduce(a);
  assertEquals(Array.from(a), [1, 2]);
  assertEquals(Array.from(c.allGather(Int32Array.of(3))), [3]);
  assert(t.backendInfo().distributed.startsWith("single process"), t.backendInfo().distributed);
  const missing = openMpi({ mpicc: "/nonexistent/mpicc" });
  assert(
    missing.comm === null && missing.reason.includes("/nonexistent/mpicc not found"),
    missing.reason,
  );
});

test("distributed: the lost rank, read from mpirun's report and the watchdog's line", () => {
  assertEquals(
    lostRank(
      "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).",
    ),
    "rank 1 on vm was killed by signal 9 (Killed)",
  );
  assertEquals(
    lostRank(
      "sparsecoder: rank 0 of 2 (vm, pid 7): MPI_Allreduce did not complete within 3 s (SPARSECODER_MPI_TIMEOUT)",
    ),
    "rank 0 on vm waited 3 s in MPI_Allreduce for a rank that had died or hung",
  );
  assertEquals(
    lostRank("  Process name: [[2044,1],1]\n  Exit code:    2\n"),
    "rank 1 exited with status 2",
  );
  assertEquals(lostRank("something else"), null);
});

if (!why) {
  for (const arch of ["topk", "relu", "dfc"]) {
    test(`distributed: ${arch}, 2 ranks × B/2 train the parameters of 1 process × B`, async () => {
      await ok(0, ["--arch", arch, "--out", dir(`${arch}-1`)]);
      await ok(2, ["--arch", arch, "--out", dir(`${arch}-2`)]);
      const d = await paramDistance(dir(`${arch}-1`), dir(`${arch}-2`));
      assert(d <= ATOL, `${arch}: max |Δparam| ${d} > ${ATOL}`);
      if (arch === "dfc") {
        // Rank 0's checkpoint; the run checked at each checkpoint that every rank holds the same bits.
        const c = await loadCheckpoint(`${dir("dfc-2")}/checkpoint`);
        const integrity = await verifyPartitionIntegrity(c.state.params, dfcPartition(c.cfg)!);
        assert(integrity.ok && integrity.max === 0, `dfc masks: ${JSON.stringify(integrity)}`);
      }
    });
  }

  test("distributed: checkpoint on 2 ranks, resume on 2 = uninterrupted; resuming on 1 is refused", async () => {
    const out = dir("resume");
    await ok(2, ["--out", out, "--stop-after", "10"]);
    const refused = await runFixture(0, ["--out", out, "--resume"]);
    assert(
      refused.code !== 0 &&
        refused.output.includes("written by a run on 2 rank(s), this one has 1"),
      refused.output,
    );
    await ok(2, ["--out", out, "--resume"]);
    assertEquals(await paramDistance(out, dir("topk-2")), 0, "resumed vs uninterrupted");
  });

  for (const how of ["kill", "hang"] as const) {
    test(
      `distributed: rank 1 ${
        how === "kill"
          ? "killed mid-step: the job stops, naming rank 1"
          : "hung mid-step: rank 0's watchdog stops the job within the timeout"
      }; whole checkpoints only`,
      async () => {
        const out = dir(`die-${how}`);
        const timeout = how === "hang" ? 3 : 20;
        const r = await runFixture(2, ["--out", out, "--die-at", "7", "--die-how", how], {
          SPARSECODER_MPI_TIMEOUT: String(timeout),
        });
        assert(r.code !== 0, `exit status ${r.code}:\n${r.output}`);
        assert(r.seconds < timeout + 20, `took ${r.seconds.toFixed(1)} s`);
        const named = how === "kill"
          ? /process rank 1 .*exited on signal 9/.test(r.output)
          : r.output.includes(`rank 0 of 2`) &&
            r.output.includes(`did not complete within ${timeout} s`);
        assert(named, r.output);
        const c = await loadCheckpoint(`${out}/checkpoint`);
        assertEquals(c.state.step, 5, "the last whole checkpoint");
        const left = (await readdir(out)).filter((f) => f.includes(".tmp-") || f.includes(".old-"));
        assertEquals(left, [], "partial checkpoints");
      },
    );
  }

  test("distributed: sae train --ranks 2 relaunches under mpirun; rank 0 writes the run", async () => {
    const out = dir("cli");
    const cmd = scriptCommand("cli.ts");
    const args = [
      "train",
      "--ranks",
      "2",
      "--steps",
      "6",
      "--batch",
      "64",
      "--quiet",
      "--out",
      out,
    ];
    const r = runSync(cmd[0], [...cmd.slice(1), ...args], { timeoutMs: 90_000 });
    assert(r.status === 0, `exit ${r.status}: ${r.stdout}\n${r.stderr}`);
    const files = await readdir(out);
    for (const f of ["sae_weights.safetensors", "checkpoint", "metrics.jsonl", "eval.json"]) {
      assert(files.includes(f), `${out} lacks ${f}: ${files.join(", ")}`);
    }
    const c = await loadCheckpoint(`${out}/checkpoint`);
    assertEquals(c.data.ranks, 2, "the checkpoint records its ranks");
  });

  test("distributed: clean up", () => rm(root, { recursive: true, force: true }));
}
