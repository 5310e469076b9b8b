/**
 * On a CUDA machine, under mpirun (one rank per GPU; on one GPU, `mpirun -np 1`): NCCL through
 * our binding on the cuda backend. Checks that every rank chose NCCL (backendInfo), that the
 * device all-reduce (sum and mean, f32, one group of several tensors) gives the host-computed
 * result, and times an all-reduce of 8.4M floats on the device. With two or more ranks, a
 * data-parallel TopK run of 10 steps with NCCL must match the same run through host memory
 * (SPARSECODER_NO_NCCL=1, run by bench/nccl_device.sh) within 1e-5. Exit status 1 on a failure.
 *   mpirun -np <GPUs> deno run -A bench/nccl_check.ts [--out params.bin]
 */
import { writeFileSync } from "node:fs";
import process from "node:process";
import * as t from "../mod.ts";
import { finalizeDistributed, initDistributed } from "../tensor/distributed/job.ts";
import { deviceAllReduce } from "../tensor/distributed/device.ts";
import { args } from "../tensor/platform/runtime.ts";

const argv = args();
const outPath = argv.includes("--out") ? argv[argv.indexOf("--out") + 1] : null;
const comm = initDistributed({ force: true });
t.useBackend("cuda");
const say = (s: string) => comm.rank === 0 && console.log(s);
let failed = false;
const fail = (s: string) => (console.error(`rank ${comm.rank}: FAIL ${s}`), failed = true);

const viaNccl = process.env.SPARSECODER_NO_NCCL !== "1";
const shape = [3, 5], n = 15;
const mine = (r: number) => Float32Array.from({ length: n }, (_, i) => (r + 1) * (i + 0.5));
const xs = [t.tensor(mine(comm.rank), { shape }), t.tensor(Float32Array.of(comm.rank + 1))];
for (const op of ["sum", "mean"] as const) {
  const got = deviceAllReduce(xs, comm, op);
  if (viaNccl && !got) {
    fail(`deviceAllReduce(${op}) did not use NCCL: ${t.backendInfo().distributed}`);
  }
  if (!got) continue;
  const want = new Float32Array(n);
  for (let r = 0; r < comm.size; r++) mine(r).forEach((v, i) => (want[i] += v));
  const scale = op === "mean" ? 1 / comm.size : 1;
  const a = await got[0].data(), b = await got[1].data();
  const worst = Math.max(...Array.from(a, (v, i) => Math.abs(v - want[i] * scale)));
  const ranks = (comm.size * (comm.size + 1)) / 2 * scale;
  if (worst > 1e-5 || Math.abs(b[0] - ranks) > 1e-6) {
    fail(`${op}: |Δ| ${worst}, scalar ${b[0]} ≠ ${ranks}`);
  }
  say(`device all-reduce ${op} on ${comm.size} rank(s): max |Δ| ${worst}`);
}
say(`backendInfo().distributed: ${t.backendInfo().distributed}`);

if (viaNccl) {
  const big = t.ones([8_397_312]);
  const times: number[] = [];
  for (let i = 0; i < 12; i++) {
    comm.barrier();
    const t0 = performance.now();
    const [r] = deviceAllReduce([big], comm, "mean")!;
    await r.data().then(() => {}); // waits for the stream
    if (i >= 2) times.push(performance.now() - t0);
    r.dispose();
  }
  const med = times.sort((a, b) => a - b)[5];
  say(
    `NCCL all-reduce of 8,397,312 f32 on ${comm.size} rank(s), incl. a 33.6 MB read-back: ${
      med.toFixed(2)
    } ms`,
  );
}

if (comm.size > 1) {
  const { sae } = t;
  const cfg = sae.resolveConfig({ arch: "topk", d_in: 64, d_sae: 512, k: 8 });
  const train = sae.resolveTrainConfig(cfg, { steps: 10, batch_size: 256, seed: 0 });
  const local = 256 / comm.size;
  const batch = (g: number) => ({
    x: t.random.normal(t.random.foldIn(t.random.key(7), g * comm.size + comm.rank), [local, 64]),
  });
  let state = await sae.initTrainState(t.random.key(0), cfg, train, [{
    x: t.random.normal(t.random.key(6), [256, 64]),
  }]);
  for (let g = 0; g < 10; g++) {
    state = (await sae.trainStep(state, batch(g), cfg, train, comm)).state;
  }
  if (outPath && comm.rank === 0) {
    const parts = await Promise.all(
      Object.values(state.params).map(async (p) =>
        Float32Array.from(await (p as t.Tensor).data() as ArrayLike<number>)
      ),
    );
    writeFileSync(
      outPath,
      new Uint8Array(new Float32Array(parts.flatMap((p) => Array.from(p))).buffer),
    );
  }
  say(`data-parallel TopK: 10 steps on ${comm.size} ranks (${viaNccl ? "NCCL" : "host memory"})`);
}
finalizeDistributed();
if (failed) process.exit(1);
