/**
 * Small dictionaries for the server tests, written to a temporary folder with sae/io/saelens.ts plus the
 * optional dashboard files, and a plain-JS reference of the encoder to check answers against.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as t from "../mod.ts";
import type { ArchName } from "../sae/config.ts";
import { loadDictionary, type ServedDictionary } from "../server/dictionary.ts";
import { serveCommand } from "../server/command.ts";

export interface Fixture {
  dir: string;
  dict: ServedDictionary;
  /** Host copies of the parameters: W_enc [d_in, d_sae], W_dec [d_sae, d_in], biases. */
  W_enc: Float32Array;
  W_dec: Float32Array;
  b_enc: Float32Array;
  b_dec: Float32Array;
  d_in: number;
  d_sae: number;
  k: number;
  cleanup(): Promise<void>;
}

export async function makeFixture(
  opts: {
    arch?: ArchName;
    d_in?: number;
    d_sae?: number;
    k?: number;
    seed?: number;
    extras?: boolean;
  } = {},
): Promise<Fixture> {
  const arch = opts.arch ?? "topk",
    d_in = opts.d_in ?? 8,
    d_sae = opts.d_sae ?? 32,
    k = opts.k ?? 4;
  const keys = t.random.split(t.random.key(opts.seed ?? 1), 5);
  const cfg = t.sae.resolveConfig({ arch, d_in, d_sae, ...(arch === "topk" ? { k } : {}) });
  const params = {
    W_enc: t.random.normal(keys[0], [d_in, d_sae], { std: 0.5 }),
    W_dec: t.random.normal(keys[1], [d_sae, d_in], { std: 0.3 }),
    b_enc: t.random.normal(keys[2], [d_sae], { std: 0.1 }),
    b_dec: t.random.normal(keys[3], [d_in], { std: 0.1 }),
  };
  const dir = await mkdtemp(join(tmpdir(), "sae-server-"));
  await t.sae.saveSae(dir, { params, cfg });
  if (opts.extras !== false) {
    // Densities spread over the histogram's range, a few examples, sample rows.
    const density = Float32Array.from(
      { length: d_sae },
      (_, i) => (i % 7 === 0 ? 0 : 10 ** (-(i % 6) - 0.5)),
    );
    await t.saveNpy(join(dir, "feature_density.npy"), t.tensor(density));
    await writeFile(
      join(dir, "top_examples.json"),
      JSON.stringify({
        "3": [{ activation: 4.5, text: "the cat sat", source: "doc 1" }, {
          activation: 2.25,
          text: "a dog ran",
        }],
      }),
    );
    await t.saveNpy(join(dir, "sample_inputs.npy"), t.random.normal(keys[4], [5, d_in]));
    await writeFile(
      join(dir, "eval.json"),
      JSON.stringify({
        fvu: 0.25,
        l0: k,
        mse: 0.5,
        cosine: 0.9,
        density_histogram: { edges: [-10, -5, 0], counts: [d_sae - 2, 2] },
      }),
    );
  }
  const host = async (x: t.Tensor) => Float32Array.from(await x.data());
  const fx = {
    W_enc: await host(params.W_enc),
    W_dec: await host(params.W_dec),
    b_enc: await host(params.b_enc),
    b_dec: await host(params.b_dec),
  };
  t.dispose(params);
  const dict = await loadDictionary(dir);
  return {
    dir,
    dict,
    ...fx,
    d_in,
    d_sae,
    k,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** ReLU pre-activations (x − b_dec)·W_enc + b_enc of one row, in f64. */
export function preacts(f: Fixture, x: number[]): number[] {
  return Array.from({ length: f.d_sae }, (_, j) => {
    let s = f.b_enc[j];
    for (let i = 0; i < f.d_in; i++) s += (x[i] - f.b_dec[i]) * f.W_enc[i * f.d_sae + j];
    return s;
  });
}

/** TopK reference: the k largest positive pre-activations, largest first. */
export function topkRef(f: Fixture, x: number[]): { indices: number[]; values: number[] } {
  const pre = preacts(f, x).map((v, j) => [Math.max(v, 0), j] as const).sort((a, b) =>
    b[0] - a[0] || a[1] - b[1]
  ).slice(0, f.k).filter(([v]) => v > 0);
  return { indices: pre.map(([, j]) => j), values: pre.map(([v]) => v) };
}

/** Σ_j f_j·W_dec[j] + b_dec. */
export function decodeRef(f: Fixture, idx: number[], vals: number[]): number[] {
  return Array.from(
    { length: f.d_in },
    (_, i) => idx.reduce((s, j, q) => s + vals[q] * f.W_dec[j * f.d_in + i], f.b_dec[i]),
  );
}

/** A deterministic input row. */
export function row(f: Fixture, seed: number): number[] {
  return Array.from({ length: f.d_in }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) * 1.5);
}

/** Something that answers requests: the app's fetch handler, or fetch against a live socket. */
export type Client = (path: string, init?: RequestInit) => Promise<Response>;

export const viaApp =
  (app: { fetch: (r: Request) => Response | Promise<Response> }): Client => async (path, init) =>
    await app.fetch(new Request(`http://localhost${path}`, init));
export const viaSocket = (url: string): Client => (path, init) => fetch(url + path, init);

export const postJson = (
  c: Client,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
) =>
  c(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });

/**
 * Start `sae serve` in-process, its messages kept in `said` instead of printed; resolves with its
 * URL once it listens, rejects if it ends first.
 */
export async function serveQuietly(
  dir: string,
  flags: Record<string, string>,
): Promise<{ url: string; said: string[]; stop(): Promise<void> }> {
  const ctl = new AbortController();
  const said: string[] = [];
  const quiet = console.error;
  const keep = (m: unknown) => void said.push(String(m));
  console.error = keep;
  let running!: Promise<void>;
  const url = await new Promise<string>((resolve, reject) => {
    running = serveCommand(dir, flags, { signal: ctl.signal, onListen: resolve });
    running.then(() => reject(new Error("sae serve returned before listening")), reject);
  }).finally(() => (console.error = quiet));
  return {
    url,
    said,
    stop: async () => {
      console.error = keep;
      ctl.abort();
      await running.finally(() => (console.error = quiet));
    },
  };
}
