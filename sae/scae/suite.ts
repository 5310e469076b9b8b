/**
 * A sparsely connected autoencoder (SCAE) suite: per layer l, `attn_l` (a TopK SAE on
 * `blocks.l.hook_attn_out`) and `mlp_l` (a TopK transcoder from `blocks.l.ln2.hook_normalized` to
 * `blocks.l.hook_mlp_out`), in model order. On disk: a folder with one SAELens dictionary folder per
 * module, `suite.json` (model, residual style, module order, hooks, k, C) and, once connected,
 * `connections.safetensors` (connections.ts).
 */
import { basename, dirname, join } from "node:path";
import { readFileBytes, writeJsonAtomic } from "../../data/atomic.ts";
import { ConfigError } from "../config.ts";
import { loadSae, type SavedSae, saveSae } from "../io/saelens.ts";

export type ModuleKind = "attn" | "mlp";

/** One dictionary of the suite and the hook points it reads and writes. */
export interface ScaeModule {
  name: string;
  kind: ModuleKind;
  layer: number;
  hookIn: string;
  hookOut: string;
}

/**
 * "sequential" (GPT-2: the MLP reads the residual after attention, so attn_l feeds mlp_l) or
 * "parallel" (Pythia/NeoX: both read the block input, so only lower layers feed a module).
 */
export type ResidualStyle = "sequential" | "parallel";

export interface SuiteInfo {
  /** The model the suite was trained on (a folder or repo id, as given). */
  model: string;
  residual: ResidualStyle;
  modules: ScaeModule[];
  /** Active features per module (each module's cfg.json holds its own k too). */
  k: number;
  /** Connections kept per downstream feature, null before `connect`. */
  C: number | null;
}

export interface ScaeSuite extends SuiteInfo {
  dicts: Record<string, SavedSae>;
}

export const SUITE_FILE = "suite.json";
export const SUITE_FORMAT = "sparsecoder-scae";

/** The modules of an nLayer model in model order: attn_0, mlp_0, attn_1, mlp_1, … */
export function suiteModules(nLayer: number): ScaeModule[] {
  const out: ScaeModule[] = [];
  for (let l = 0; l < nLayer; l++) {
    const b = `blocks.${l}.`;
    out.push({
      name: `attn_${l}`,
      kind: "attn",
      layer: l,
      hookIn: b + "hook_attn_out",
      hookOut: b + "hook_attn_out",
    });
    out.push({
      name: `mlp_${l}`,
      kind: "mlp",
      layer: l,
      hookIn: b + "ln2.hook_normalized",
      hookOut: b + "hook_mlp_out",
    });
  }
  return out;
}

/** Whether `up`'s reconstruction reaches `down`'s input in a model of this residual style. */
export function feeds(up: ScaeModule, down: ScaeModule, residual: ResidualStyle): boolean {
  if (up.layer < down.layer) return true;
  return residual === "sequential" && up.layer === down.layer && up.kind === "attn" &&
    down.kind === "mlp";
}

/** The modules upstream of `down`, in model order. */
export function upstreamOf(info: SuiteInfo, down: string): ScaeModule[] {
  const d = moduleNamed(info, down);
  return info.modules.filter((u) => feeds(u, d, info.residual));
}

export function moduleNamed(info: SuiteInfo, name: string): ScaeModule {
  const m = info.modules.find((x) => x.name === name);
  if (!m) {
    throw new ConfigError(
      `scae suite: no module named ${JSON.stringify(name)} (has ${
        info.modules.map((x) => x.name).join(", ")
      })`,
    );
  }
  return m;
}

/** Write the suite: suite.json and one SAELens folder per module (each atomically). */
export async function saveSuite(dir: string, suite: ScaeSuite): Promise<void> {
  for (const m of suite.modules) {
    const d = suite.dicts[m.name];
    if (!d) throw new ConfigError(`saveSuite: no dictionary for module ${m.name}`);
    await saveSae(join(dir, m.name), d);
  }
  await writeJsonAtomic(join(dir, SUITE_FILE), suiteJson(suite));
}

export function suiteJson(info: SuiteInfo): Record<string, unknown> {
  return {
    format: SUITE_FORMAT,
    version: 1,
    model: info.model,
    residual: info.residual,
    k: info.k,
    C: info.C,
    modules: info.modules.map((m) => ({
      name: m.name,
      kind: m.kind,
      layer: m.layer,
      hook_in: m.hookIn,
      hook_out: m.hookOut,
    })),
  };
}

/** Read and check suite.json; errors name the file and the field. */
export async function readSuiteInfo(dir: string): Promise<SuiteInfo> {
  const path = join(dir, SUITE_FILE);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder().decode(await readFileBytes(path)));
  } catch (e) {
    throw new ConfigError(`${path}: ${(e as Error).message}`);
  }
  const fail = (msg: string): never => {
    throw new ConfigError(`${path}: ${msg}`);
  };
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) fail("expected a JSON object");
  if (raw.format !== SUITE_FORMAT) {
    fail(`format is ${JSON.stringify(raw.format)}, expected "${SUITE_FORMAT}"`);
  }
  if (raw.residual !== "sequential" && raw.residual !== "parallel") {
    fail(`residual must be "sequential" or "parallel", got ${JSON.stringify(raw.residual)}`);
  }
  const posInt = (v: unknown, what: string) =>
    typeof v === "number" && Number.isInteger(v) && v > 0
      ? v
      : fail(`${what} must be a positive integer, got ${JSON.stringify(v)}`);
  const k = posInt(raw.k, "k");
  const C = raw.C === null || raw.C === undefined
    ? null
    : Number.isInteger(raw.C) && (raw.C as number) >= 0
    ? raw.C as number
    : fail(`C must be a non-negative integer or null, got ${JSON.stringify(raw.C)}`);
  if (!Array.isArray(raw.modules) || raw.modules.length === 0) {
    fail("modules must be a non-empty list");
  }
  const modules = (raw.modules as Record<string, unknown>[]).map((m, i): ScaeModule => {
    const at = `modules[${i}]`;
    if (!m || typeof m !== "object") fail(`${at} must be an object`);
    if (m.kind !== "attn" && m.kind !== "mlp") {
      fail(`${at}.kind must be "attn" or "mlp", got ${JSON.stringify(m.kind)}`);
    }
    const layer = Number.isInteger(m.layer) && (m.layer as number) >= 0
      ? m.layer as number
      : fail(`${at}.layer must be a non-negative integer`);
    for (const f of ["name", "hook_in", "hook_out"]) {
      if (typeof m[f] !== "string") fail(`${at}.${f} must be a string`);
    }
    return {
      name: m.name as string,
      kind: m.kind as ModuleKind,
      layer,
      hookIn: m.hook_in as string,
      hookOut: m.hook_out as string,
    };
  });
  const names = new Set<string>();
  modules.forEach((m, i) => {
    if (names.has(m.name)) fail(`modules[${i}]: duplicate name ${m.name}`);
    names.add(m.name);
    if (i > 0) {
      const p = modules[i - 1];
      if (p.layer > m.layer || (p.layer === m.layer && p.kind === "mlp" && m.kind === "attn")) {
        fail(`modules[${i}] (${m.name}) comes before ${p.name} in the model, not after`);
      }
    }
  });
  return { model: String(raw.model ?? ""), residual: raw.residual as ResidualStyle, modules, k, C };
}

/** Load suite.json and every module's dictionary; each must be a TopK dictionary of the right widths. */
export async function loadSuite(dir: string): Promise<ScaeSuite> {
  const info = await readSuiteInfo(dir);
  const dicts: Record<string, SavedSae> = {};
  let width: number | null = null;
  for (const m of info.modules) {
    const d = await loadSae(join(dir, m.name));
    const where = join(dir, m.name);
    const want = m.kind === "attn" ? "topk" : "transcoder";
    if (d.cfg.arch !== want && !(m.kind === "mlp" && d.cfg.arch === "topk")) {
      throw new ConfigError(
        `${where}: module ${m.name} needs a ${want} dictionary, found ${d.cfg.arch}`,
      );
    }
    width ??= d.cfg.d_in;
    if (d.cfg.d_in !== width || d.cfg.d_out !== width) {
      throw new ConfigError(
        `${where}: d_in ${d.cfg.d_in} / d_out ${d.cfg.d_out}, but the suite's modules read and write d_model ${width}`,
      );
    }
    dicts[m.name] = d;
  }
  return { ...info, dicts };
}

/**
 * The hook names of a suite module's folder (SUITE/<module>), from its suite.json: for a
 * dictionary whose cfg.json names none (suites written by other tools). Null when `dir` is not a
 * module of a suite.
 */
export async function suiteModuleHooks(
  dir: string,
): Promise<{ hook_name: string; hook_name_out?: string } | null> {
  const info = await readSuiteInfo(dirname(dir)).catch(() => null);
  const m = info?.modules.find((x) => x.name === basename(dir));
  if (!m) return null;
  return { hook_name: m.hookIn, ...(m.kind === "mlp" ? { hook_name_out: m.hookOut } : {}) };
}
