/**
 * Peak memory of loading a model folder: writes a GPT-2-shaped model of random weights (about
 * 200 MB in f32; `--dtype bf16` for the same shape in BF16), then loads it in a fresh process per
 * way and reports the peak resident set (Linux VmHWM) above the runtime's own, as a multiple of
 * the weights' size in memory. Ways: the streaming loader with dtype "keep" and "f32", and
 * "whole-file", which reads each file whole and converts every tensor while the bytes are held
 * (the loader's former method), for comparison.
 *
 *   deno run -A bench/lm_load_memory.ts [--dtype f32|bf16] [--dir DIR]
 *   bun bench/lm_load_memory.ts ...
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { f32ToBf16 } from "../tensor/dtype.ts";

const SHAPE = { vocab: 50257, positions: 1024, d: 512, layers: 8 };

/** Peak resident set of this process so far, in bytes (Linux). */
function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  if (!m) throw new Error("no VmHWM in /proc/self/status (Linux only)");
  return Number(m[1]) * 1024;
}

/** Write config.json and model.safetensors, one tensor at a time (the writer stays small). */
function writeModel(dir: string, dtype: "f32" | "bf16"): void {
  const { vocab: V, positions: P, d, layers: L } = SHAPE;
  const shapes: [string, number[]][] = [["wte.weight", [V, d]], ["wpe.weight", [P, d]]];
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    shapes.push(
      [p + "ln_1.weight", [d]],
      [p + "ln_1.bias", [d]],
      [p + "attn.c_attn.weight", [d, 3 * d]],
      [p + "attn.c_attn.bias", [3 * d]],
      [p + "attn.c_proj.weight", [d, d]],
      [p + "attn.c_proj.bias", [d]],
      [p + "ln_2.weight", [d]],
      [p + "ln_2.bias", [d]],
      [p + "mlp.c_fc.weight", [d, 4 * d]],
      [p + "mlp.c_fc.bias", [4 * d]],
      [p + "mlp.c_proj.weight", [4 * d, d]],
      [p + "mlp.c_proj.bias", [d]],
    );
  }
  shapes.push(["ln_f.weight", [d]], ["ln_f.bias", [d]]);
  const item = dtype === "f32" ? 4 : 2;
  const header: Record<string, unknown> = {};
  let pos = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1) * item;
    header[name] = { dtype: dtype.toUpperCase(), shape, data_offsets: [pos, pos + n] };
    pos += n;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const file = join(dir, "model.safetensors");
  const head = new Uint8Array(8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  head.set(new TextEncoder().encode(json), 8);
  writeFileSync(file, head);
  let seed = 12345;
  for (const [, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      f[i] = (seed / 2 ** 32 - 0.5) * 0.04;
    }
    const out = dtype === "f32" ? f : Uint16Array.from(f, f32ToBf16);
    writeFileSync(file, new Uint8Array(out.buffer), { flag: "a" });
  }
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({
      model_type: "gpt2",
      vocab_size: V,
      n_positions: P,
      n_embd: d,
      n_layer: L,
      n_head: 8,
    }),
  );
}

/** Child: load `dir` one way, print the peak RSS before and after and the weights' bytes. */
async function child(dir: string, way: string): Promise<void> {
  const { loadModel, modelInfo } = await import("../data/lm/model.ts");
  const { readFileBytes } = await import("../data/atomic.ts");
  const { parseSafetensors, toTensor } = await import("../data/safetensors.ts");
  const before = peakRss();
  let bytes = 0;
  if (way === "whole-file") {
    const parsed = parseSafetensors(await readFileBytes(join(dir, "model.safetensors")));
    const kept = [...parsed.tensors.values()].map((e) => toTensor(e, { dtype: "f32" }));
    for (const t of kept) bytes += t.storage.bytes;
  } else {
    const model = await loadModel(dir, { dtype: way as "keep" | "f32" });
    const info = modelInfo(model);
    const per = info.dtypes[0] === "f32" ? 4 : 2;
    bytes = info.nParams * per;
  }
  console.log(JSON.stringify({ before, after: peakRss(), bytes }));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (k: string, d: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : d);
  if (args[0] === "--child") return await child(args[1], args[2]);
  const dtype = opt("--dtype", "f32") as "f32" | "bf16";
  const dir = opt("--dir", join(tmpdir(), `lm-load-memory-${dtype}`));
  if (!existsSync(join(dir, "model.safetensors"))) {
    mkdirSync(dir, { recursive: true });
    writeModel(dir, dtype);
  }
  const fileBytes = readFileSync(join(dir, "model.safetensors")).byteLength; // small enough here
  const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
  const self = new URL(import.meta.url).pathname;
  const cmd = isDeno ? [process.execPath, "run", "-A", self] : [process.execPath, self];
  console.log(
    `${isDeno ? "deno" : "bun"}: ${dir}: model.safetensors ${(fileBytes / 1e6).toFixed(0)} MB`,
  );
  for (const way of ["whole-file", "keep", "f32"]) {
    const r = spawnSync(cmd[0], [...cmd.slice(1), "--child", dir, way], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${way}: ${r.stderr}`);
    const { before, after, bytes } = JSON.parse(r.stdout.trim().split("\n").pop()!);
    const extra = after - before;
    console.log(
      `${way.padEnd(10)} weights ${(bytes / 1e6).toFixed(0)} MB, peak RSS ${
        (after / 1e6).toFixed(0)
      } MB (runtime ${(before / 1e6).toFixed(0)} MB), load added ${(extra / 1e6).toFixed(0)} MB = ${
        (extra / bytes).toFixed(2)
      }x the weights`,
    );
  }
}

await main();
