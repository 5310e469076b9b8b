/**
 * Training checkpoints of `sae lm train`: the parameters, the AdamW moments and step count, the
 * options and the identity of the data, so `--resume` continues exactly where the run stopped
 * (batches are a pure function of seed and step). A checkpoint is a folder (state.json +
 * state.safetensors) written beside its target and swapped in by rename: a kill at any moment
 * leaves the previous checkpoint whole.
 */
import { existsSync } from "node:fs";
import { readFile, rename, rm } from "node:fs/promises";
import { type TreeDef, treeFlatten, treeUnflatten } from "../../../autodiff/tree.ts";
import type { AdamState } from "../../../autodiff/optim.ts";
import { Tensor } from "../../../tensor/tensor.ts";
import { ensureDir, writeJsonAtomic } from "../../atomic.ts";
import { loadSafetensors, saveSafetensors } from "../../safetensors.ts";
import type { Gpt2Config } from "../config.ts";
import type { Gpt2Params } from "../load.ts";
import type { LmTrainState } from "./step.ts";

export interface LmCheckpoint {
  state: LmTrainState;
  cfg: Gpt2Config;
  /** What must match for a resume to be exact: options that shape the run, data identities. */
  run: Record<string, unknown>;
  /** Training time so far (ms), for tokens/s and the model card. */
  elapsedMs: number;
}

const STATE = "state.json", TENSORS = "state.safetensors";

interface StateJson {
  version: 1;
  def: TreeDef;
  leaves: unknown[];
  step: number;
  cfg: Gpt2Config;
  run: Record<string, unknown>;
  elapsedMs: number;
}

export async function saveLmCheckpoint(dir: string, c: LmCheckpoint): Promise<void> {
  const [leaves, def] = treeFlatten({ params: c.state.params, opt: c.state.opt });
  const tensors: Record<string, Tensor> = {};
  const json = leaves.map((l, i) => {
    if (!(l instanceof Tensor)) return l;
    const name = `leaf${String(i).padStart(4, "0")}`;
    tensors[name] = l;
    return { tensor: name };
  });
  const body: StateJson = {
    version: 1,
    def,
    leaves: json,
    step: c.state.step,
    cfg: c.cfg,
    run: c.run,
    elapsedMs: c.elapsedMs,
  };
  const stamp = `${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
  const tmp = `${dir}.tmp-${stamp}`, old = `${dir}.old-${stamp}`;
  await ensureDir(tmp);
  try {
    await saveSafetensors(`${tmp}/${TENSORS}`, tensors);
    await writeJsonAtomic(`${tmp}/${STATE}`, body);
    const had = existsSync(dir);
    if (had) await rename(dir, old);
    await rename(tmp, dir);
    if (had) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw new Error(`saveLmCheckpoint: cannot write ${dir}: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

export async function loadLmCheckpoint(dir: string): Promise<LmCheckpoint> {
  const path = `${dir}/${STATE}`;
  let body: StateJson;
  try {
    body = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new Error(`loadLmCheckpoint: ${path}: ${(e as Error).message}`);
  }
  if (body.version !== 1) {
    throw new Error(`loadLmCheckpoint: ${path}: unknown version ${JSON.stringify(body.version)}`);
  }
  const { tensors } = await loadSafetensors(`${dir}/${TENSORS}`);
  const leaves = body.leaves.map((l) => {
    if (l === null || typeof l !== "object" || !("tensor" in l)) return l;
    const t = tensors[(l as { tensor: string }).tensor];
    if (!t) {
      throw new Error(
        `loadLmCheckpoint: ${dir}/${TENSORS} lacks tensor ${
          JSON.stringify((l as { tensor: string }).tensor)
        } named in ${STATE}`,
      );
    }
    return t;
  });
  const tree = treeUnflatten<{ params: Gpt2Params; opt: AdamState }>(body.def, leaves);
  return {
    state: { step: body.step, params: tree.params, opt: tree.opt },
    cfg: body.cfg,
    run: body.run,
    elapsedMs: body.elapsedMs,
  };
}
