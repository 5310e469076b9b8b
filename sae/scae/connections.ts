/**
 * Which upstream features each downstream feature of an SCAE suite reads. For each (downstream,
 * upstream) pair, an int32 table [F_down, C]: row i lists upstream feature ids, padded with −1.
 * On disk, `connections.safetensors` holds one I32 tensor per pair named "{down}<-{up}" and, when
 * `connect` wrote it, an F32 tensor "score:{down}<-{up}" of the same shape (the mean contribution
 * each kept connection was ranked by, so a smaller C can be cut from a larger one). The reference's
 * `top_connections_{C}.pkl` (dict of dicts of LongTensors, pickled) imports through the safe
 * pickle reader.
 */
import { join } from "node:path";
import { readFileBytes, writeJsonAtomic } from "../../data/atomic.ts";
import { loadSafetensors, saveSafetensors } from "../../data/safetensors.ts";
import { isTensorRef, parsePickledTensors, torchTensor } from "../../data/torch_pt.ts";
import { describe } from "../../data/pickle.ts";
import { tensor } from "../../tensor/ops/create.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { moduleNamed, SUITE_FILE, type SuiteInfo, suiteJson, upstreamOf } from "./suite.ts";

export const CONNECTIONS_FILE = "connections.safetensors";

/** One pair's table: ids[i·C + c] is an upstream feature of downstream feature i, or −1. */
export interface ConnTable {
  rows: number;
  C: number;
  ids: Int32Array;
  /** The score each kept id was ranked by (NaN where the id is −1). */
  scores?: Float32Array;
}

/** downstream module → upstream module → table. */
export type Connections = Record<string, Record<string, ConnTable>>;

export const pairName = (down: string, up: string): string => `${down}<-${up}`;

export class ConnectionsError extends Error {
  override name = "ConnectionsError";
}

/**
 * Every table names a real (downstream, upstream) pair of the suite, has one row per downstream
 * feature, and holds ids in [0, F_up) or −1, none repeated within a row. Errors name the source,
 * the pair and the row.
 */
export function checkConnections(
  info: SuiteInfo,
  features: (module: string) => number,
  conns: Connections,
  source: string,
): void {
  const fail = (msg: string): never => {
    throw new ConnectionsError(`${source}: ${msg}`);
  };
  for (const [down, ups] of Object.entries(conns)) {
    try {
      moduleNamed(info, down);
    } catch {
      fail(`downstream module ${JSON.stringify(down)} is not in the suite`);
    }
    const allowed = new Set(upstreamOf(info, down).map((m) => m.name));
    const Fd = features(down);
    for (const [up, t] of Object.entries(ups)) {
      const pair = JSON.stringify(pairName(down, up));
      if (!allowed.has(up)) {
        fail(
          `${pair}: ${up} is not upstream of ${down} in a ${info.residual}-residual model (upstream: ${
            [...allowed].join(", ") || "none"
          })`,
        );
      }
      if (t.rows !== Fd) fail(`${pair}: ${t.rows} rows, but ${down} has ${Fd} features`);
      if (t.ids.length !== t.rows * t.C) {
        fail(`${pair}: ${t.ids.length} ids for a [${t.rows}, ${t.C}] table`);
      }
      const Fu = features(up);
      const seen = new Set<number>();
      for (let i = 0; i < t.rows; i++) {
        seen.clear();
        for (let c = 0; c < t.C; c++) {
          const id = t.ids[i * t.C + c];
          if (id === -1) continue;
          if (!(id >= 0 && id < Fu)) {
            fail(
              `${pair} row ${i}: id ${id} out of range (−1 or [0, ${Fu}): ${up} has ${Fu} features)`,
            );
          }
          if (seen.has(id)) fail(`${pair} row ${i}: id ${id} appears twice`);
          seen.add(id);
        }
      }
    }
  }
}

/** Write connections.safetensors atomically. */
export async function saveConnections(path: string, conns: Connections): Promise<void> {
  const tensors: Record<string, Tensor> = {};
  for (const [down, ups] of Object.entries(conns)) {
    for (const [up, t] of Object.entries(ups)) {
      tensors[pairName(down, up)] = tensor(t.ids, { dtype: "i32", shape: [t.rows, t.C] });
      if (t.scores) {
        tensors["score:" + pairName(down, up)] = tensor(t.scores, {
          dtype: "f32",
          shape: [t.rows, t.C],
        });
      }
    }
  }
  await saveSafetensors(path, tensors, { format: "sparsecoder-scae-connections" });
  for (const t of Object.values(tensors)) t.dispose();
}

/**
 * What `connect` writes into a suite folder: connections.safetensors, then suite.json with C set to
 * the tables' C (the largest, should they differ; 0 without tables), so the folder says how it was
 * connected. Both writes are atomic; returns the suite info as written.
 */
export async function saveSuiteConnections(
  dir: string,
  info: SuiteInfo,
  conns: Connections,
): Promise<SuiteInfo> {
  let C = 0;
  for (const ups of Object.values(conns)) for (const t of Object.values(ups)) C = Math.max(C, t.C);
  await saveConnections(join(dir, CONNECTIONS_FILE), conns);
  const written = { ...info, C };
  await writeJsonAtomic(join(dir, SUITE_FILE), suiteJson(written));
  return written;
}

/** Read connections.safetensors and check it against the suite. */
export async function loadConnections(
  path: string,
  info: SuiteInfo,
  features: (module: string) => number,
): Promise<Connections> {
  const { tensors } = await loadSafetensors(path);
  const conns: Connections = {};
  try {
    for (const [name, t] of Object.entries(tensors)) {
      if (name.startsWith("score:")) continue;
      const m = /^(.+)<-(.+)$/.exec(name);
      if (!m) throw new ConnectionsError(`${path}: tensor "${name}" is not named "{down}<-{up}"`);
      if (t.dtype !== "i32" || t.ndim !== 2) {
        throw new ConnectionsError(
          `${path}: tensor "${name}" must be I32 [F_down, C], got ${t.dtype} [${t.shape}]`,
        );
      }
      const table: ConnTable = {
        rows: t.shape[0],
        C: t.shape[1],
        ids: Int32Array.from(await t.data()),
      };
      const s = tensors["score:" + name];
      if (s) {
        if (s.ndim !== 2 || s.shape[0] !== t.shape[0] || s.shape[1] !== t.shape[1]) {
          throw new ConnectionsError(
            `${path}: tensor "score:${name}" has shape [${s.shape}], its ids [${t.shape}]`,
          );
        }
        table.scores = Float32Array.from(await s.data());
      }
      (conns[m[1]] ??= {})[m[2]] = table;
    }
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
  checkConnections(info, features, conns, path);
  return conns;
}

/**
 * The reference's `top_connections_{C}.pkl`: a pickled dict {down: {up: LongTensor [F_down, C]}}
 * (plain pickle.dump or torch.save), read without running any Python code; checked like a
 * connections file.
 */
export async function importPickledConnections(
  path: string,
  info: SuiteInfo,
  features: (module: string) => number,
): Promise<Connections> {
  const v = parsePickledTensors(await readFileBytes(path), path);
  const fail = (msg: string): never => {
    throw new ConnectionsError(`${path}: ${msg}`);
  };
  if (!(v instanceof Map)) fail(`expected a dict of dicts of tensors, got ${describe(v)}`);
  const conns: Connections = {};
  for (const [down, ups] of v as Map<string | number, unknown>) {
    if (!(ups instanceof Map)) {
      fail(`[${JSON.stringify(down)}] must be a dict of tensors, got ${describe(ups as never)}`);
    }
    conns[String(down)] = {};
    for (const [up, ref] of ups as Map<string | number, unknown>) {
      const pair = pairName(String(down), String(up));
      if (!isTensorRef(ref as never)) {
        fail(`${pair}: expected a tensor, got ${describe(ref as never)}`);
      }
      const r = (ref as { value: Parameters<typeof torchTensor>[0] }).value;
      if (r.shape.length !== 2) fail(`${pair}: expected a [F_down, C] tensor, got [${r.shape}]`);
      const t = torchTensor(r, `${path}: ${pair}`, { dtype: "i32" });
      conns[String(down)][String(up)] = {
        rows: r.shape[0],
        C: r.shape[1],
        ids: Int32Array.from(t.dataSync()),
      };
      t.dispose();
    }
  }
  checkConnections(info, features, conns, path);
  return conns;
}

/** How many connections downstream feature `row` of `down` has, over every upstream module. */
export function rowCount(conns: Connections, down: string, row: number): number {
  let n = 0;
  for (const t of Object.values(conns[down] ?? {})) {
    for (let c = 0; c < t.C; c++) if (t.ids[row * t.C + c] !== -1) n++;
  }
  return n;
}

/**
 * The top `c` connections of each downstream feature, ranked jointly over its upstream modules by
 * the stored scores (|score| descending, ties to the earlier module, then the earlier column).
 * Tables keep width c. A table without scores can only be cut where no row loses an id.
 */
export function truncateConnections(conns: Connections, c: number): Connections {
  const out: Connections = {};
  for (const [down, ups] of Object.entries(conns)) {
    const names = Object.keys(ups);
    out[down] = {};
    const rows = names.length ? ups[names[0]].rows : 0;
    for (const u of names) {
      out[down][u] = {
        rows,
        C: c,
        ids: new Int32Array(rows * c).fill(-1),
        ...(ups[u].scores ? { scores: new Float32Array(rows * c).fill(NaN) } : {}),
      };
    }
    for (let i = 0; i < rows; i++) {
      const cand: { s: number; u: number; col: number }[] = [];
      names.forEach((u, ui) => {
        const t = ups[u];
        for (let col = 0; col < t.C; col++) {
          if (t.ids[i * t.C + col] === -1) continue;
          cand.push({ s: t.scores ? Math.abs(t.scores[i * t.C + col]) : NaN, u: ui, col });
        }
      });
      if (cand.length > c && cand.some((x) => Number.isNaN(x.s))) {
        throw new ConnectionsError(
          `truncateConnections: ${down} row ${i} has ${cand.length} connections; cutting to ${c} needs the scores connect writes (this table has none)`,
        );
      }
      cand.sort((a, b) => b.s - a.s || a.u - b.u || a.col - b.col);
      const filled = new Array<number>(names.length).fill(0);
      for (const x of cand.slice(0, c)) {
        const src = ups[names[x.u]], dst = out[down][names[x.u]];
        const at = i * c + filled[x.u]++;
        dst.ids[at] = src.ids[i * src.C + x.col];
        if (dst.scores) dst.scores[at] = src.scores![i * src.C + x.col];
      }
    }
  }
  return out;
}
