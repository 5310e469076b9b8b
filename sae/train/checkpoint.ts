/**
 * Training checkpoints: the whole TrainState (params, optimizer moments and counts, dead-feature
 * counters, θ, scales, the random key, the step) plus both configs and the data position, so a
 * resumed run continues exactly as an uninterrupted one. A checkpoint is a folder written beside
 * its target and swapped in by rename, so a crash leaves the previous checkpoint intact.
 */
import { rename, rm, stat } from "node:fs/promises";
import { Tensor } from "../../tensor/tensor.ts";
import { PRNGKey } from "../../tensor/random.ts";
import { type TreeDef, treeFlatten, treeUnflatten } from "../../autodiff/tree.ts";
import { ensureDir, readFileBytes, writeJsonAtomic } from "../../data/atomic.ts";
import { loadSafetensors, saveSafetensors } from "../../data/safetensors.ts";
import type { SaeConfig } from "../config.ts";
import type { TrainConfig } from "./config.ts";
import type { TrainState } from "./step.ts";
import { parseThreshold, type Threshold } from "../threshold.ts";
import { thresholdInputs } from "../arch/registry.ts";

export interface Checkpoint {
  state: TrainState;
  cfg: SaeConfig;
  train: TrainConfig;
  /** Where the data stream stands (the next batch index), and anything the source needs. */
  data: { nextBatch: number; [k: string]: unknown };
}

const STATE_FILE = "state.json", TENSORS_FILE = "state.safetensors";

interface StateJson {
  version: 1;
  def: TreeDef;
  /** Non-tensor leaves in order; tensors appear as {"tensor": name}. */
  leaves: unknown[];
  step: number;
  numDead: number;
  threshold: Threshold;
  scale: number;
  scaleOut: number;
  key: [number, number];
  cfg: SaeConfig;
  train: TrainConfig;
  data: Checkpoint["data"];
}

function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/**
 * Write a record tree as a checkpoint folder: its tensors in state.safetensors, everything else
 * and `body` in state.json. The folder is written beside `dir` and swapped in by rename.
 */
export async function writeTreeFolder(
  dir: string,
  tree: unknown,
  body: Record<string, unknown>,
): Promise<void> {
  const [leaves, def] = treeFlatten(tree);
  const tensors: Record<string, Tensor> = {};
  const json = leaves.map((l, i) => {
    if (l instanceof Tensor) {
      const name = `leaf${String(i).padStart(4, "0")}`;
      tensors[name] = l;
      return { tensor: name };
    }
    return l;
  });
  const tmp = `${dir}.tmp-${Date.now()}`, old = `${dir}.old-${Date.now()}`;
  await ensureDir(tmp);
  try {
    await saveSafetensors(`${tmp}/${TENSORS_FILE}`, tensors);
    await writeJsonAtomic(`${tmp}/${STATE_FILE}`, { version: 1, def, leaves: json, ...body });
    const had = await exists(dir);
    if (had) await rename(dir, old);
    await rename(tmp, dir);
    if (had) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw new Error(`cannot write checkpoint ${dir}: ${(e as Error).message}`, { cause: e });
  }
}

/** Read a folder writeTreeFolder wrote: the tree and state.json's other fields. */
export async function readTreeFolder<T>(
  dir: string,
): Promise<{ tree: T; body: Record<string, unknown> }> {
  const path = `${dir}/${STATE_FILE}`;
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(new TextDecoder().decode(await readFileBytes(path)));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  if (body.version !== 1) {
    throw new Error(`${path}: unknown version ${JSON.stringify(body.version)}`);
  }
  const { tensors } = await loadSafetensors(`${dir}/${TENSORS_FILE}`);
  const leaves = (body.leaves as unknown[]).map((l) => {
    if (l && typeof l === "object" && "tensor" in (l as object)) {
      const name = (l as { tensor: string }).tensor;
      const t = tensors[name];
      if (!t) {
        throw new Error(`${dir}/${TENSORS_FILE} lacks tensor "${name}" named in ${STATE_FILE}`);
      }
      return t;
    }
    return l;
  });
  return { tree: treeUnflatten<T>(body.def as TreeDef, leaves), body };
}

export async function saveCheckpoint(dir: string, c: Checkpoint): Promise<void> {
  const s = c.state;
  const body: Omit<StateJson, "version" | "def" | "leaves"> = {
    step: s.step,
    numDead: s.numDead,
    threshold: s.threshold,
    scale: s.scale,
    scaleOut: s.scaleOut,
    key: [s.key.words[0], s.key.words[1]],
    cfg: c.cfg,
    train: c.train,
    data: c.data,
  };
  await writeTreeFolder(dir, { params: s.params, opt: s.opt, sinceFired: s.sinceFired }, body)
    .catch((e) => {
      throw new Error(`saveCheckpoint: ${(e as Error).message}`, { cause: e });
    });
}

export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const { tree, body: raw } = await readTreeFolder<
    { params: TrainState["params"]; opt: unknown; sinceFired: Tensor }
  >(dir).catch((e) => {
    throw new Error(`loadCheckpoint: ${(e as Error).message}`);
  });
  const body = raw as unknown as StateJson;
  const path = `${dir}/${STATE_FILE}`;
  const state: TrainState = {
    ...tree,
    step: body.step,
    numDead: body.numDead,
    threshold: parseThreshold(body.threshold, thresholdInputs(body.cfg), `loadCheckpoint: ${path}`),
    scale: body.scale,
    scaleOut: body.scaleOut,
    key: new PRNGKey([body.key[0], body.key[1]]),
  };
  return { state, cfg: body.cfg, train: body.train, data: body.data };
}
