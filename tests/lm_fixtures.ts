/**
 * What the language-model tests share: the fixture folder written by tests/golden/lm_reference.py,
 * the comparison against its float64 reference, and broken copies of a fixture for loader errors.
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Tensor } from "../tensor/tensor.ts";
import type { LiveSource } from "../data/lm/activation_buffer.ts";
import { loadSafetensors, saveSafetensors } from "../data/safetensors.ts";
import { assert, assertEquals, AssertionError } from "./harness.ts";

export const root = fileURLToPath(new URL("./golden/fixtures/lm/", import.meta.url));

/** |ours − ref| ≤ 1e-4·(|ref| + max|ref|): relative, with an absolute floor scaled to the tensor. */
export function assertScaleClose(name: string, ours: Tensor, ref: Tensor): void {
  assertEquals(ours.shape, ref.shape, `${name} shape`);
  const a = ours.dataSync(), e = ref.dataSync();
  let big = 0;
  for (let i = 0; i < e.length; i++) big = Math.max(big, Math.abs(e[i]));
  for (let i = 0; i < e.length; i++) {
    const err = Math.abs(a[i] - e[i]);
    if (!(err <= 1e-4 * (Math.abs(e[i]) + big))) {
      throw new AssertionError(`${name}[${i}]: got ${a[i]}, expected ${e[i]} (max|ref| ${big})`);
    }
  }
}

/** Logits and every stored hook against the reference; the hook-name sets must be equal. */
export async function checkAgainstReference(
  name: string,
  run: (tokens: Tensor) => { logits: Tensor; cache: Record<string, Tensor> },
  hookNames: string[],
): Promise<void> {
  const { tensors: ref } = await loadSafetensors(root + name + "/reference.safetensors");
  const { logits, cache } = run(ref.tokens);
  assertScaleClose("logits", logits, ref.logits);
  // Every stored hook is one we produce, and every one we produce is stored.
  const stored = Object.keys(ref).filter((k) => k !== "tokens" && k !== "logits").sort();
  assertEquals(stored, [...hookNames].sort(), "hook names");
  for (const h of hookNames) assertScaleClose(h, cache[h], ref[h]);
}

/** `fn` must fail with a message containing every one of `parts`. */
export async function expectError(fn: () => Promise<unknown>, parts: string[]): Promise<void> {
  let msg: string | null = null;
  try {
    await fn();
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg !== null, `expected an error naming ${parts.join(", ")}`);
  for (const p of parts) assert(msg.includes(p), `error ${JSON.stringify(msg)} lacks ${p}`);
}

/**
 * A copy of `fixture`'s config.json and model.safetensors in a temp folder, changed by `edit`
 * (the weights record is saved after it; it may also rewrite files in the folder), then `check`ed.
 */
export async function withBrokenCopy(
  fixture: string,
  edit: (weights: Record<string, Tensor>, dir: string) => void | Promise<void>,
  check: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `lm-${fixture}-`));
  try {
    await copyFile(root + fixture + "/config.json", join(dir, "config.json"));
    const { tensors } = await loadSafetensors(root + fixture + "/model.safetensors");
    await edit(tensors, dir);
    await saveSafetensors(join(dir, "model.safetensors"), tensors);
    await check(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Batch `index` of `size` rows of a live source: its values, shape, and where its rows came from. */
export async function takeBatch(src: LiveSource, index: number, size: number) {
  await src.prepare(index, size);
  const b = src.batch(index, size);
  const o = src.origin()!;
  return {
    x: b.x.dataSync() as Float32Array,
    y: b.y ? b.y.dataSync() as Float32Array : null,
    shape: b.x.shape,
    origin: { epoch: [...o.epoch], row: [...o.row], position: [...o.position] },
  };
}
