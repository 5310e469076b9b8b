/**
 * A GPT-2 model folder in Hugging Face's layout: `config.json` plus `model.safetensors`, or shards
 * listed in `model.safetensors.index.json`. Keys may carry the `transformer.` prefix (files written
 * by save_pretrained) or not (the original upload). Every tensor's shape is checked against the
 * config before any data is materialised, and every failure names the file and the tensor.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { join } from "node:path";
import { fmt } from "../../tensor/shape.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { decode16 } from "../../tensor/dtype.ts";
import {
  adoptHostArray,
  type ParsedSafetensorsHeader,
  parseSafetensorsHeader,
  type SafetensorsHeaderEntry,
  safetensorsHeaderLength,
  toTensor,
} from "../safetensors.ts";
import { type Gpt2Config, readGpt2Config } from "./config.ts";

export class LmLoadError extends Error {
  override name = "LmLoadError";
}

/**
 * How weights are held once loaded. "keep": F16/BF16 tensors stay 16-bit (half the memory of
 * f32) and each op promotes them to f32, so the forward pass computes in f32 all the same; "f32":
 * widened when read (gradients with respect to the weights are then f32 too). F32 weights are f32
 * either way, and any other float type is read as f32.
 */
export type WeightDType = "f32" | "keep";

export interface LoadOptions {
  /** Default "keep" (see WeightDType). */
  dtype?: WeightDType;
}

export interface LayerNormParams {
  w: Tensor;
  b: Tensor;
}

/** One block's weights; the projections are [in, out] (GPT-2's Conv1D: y = x·W + b). */
export interface Gpt2BlockParams {
  ln1: LayerNormParams;
  /** [d, 3d]: all-q, all-k, all-v columns. */
  wQkv: Tensor;
  bQkv: Tensor;
  wO: Tensor;
  bO: Tensor;
  ln2: LayerNormParams;
  wIn: Tensor;
  bIn: Tensor;
  wOut: Tensor;
  bOut: Tensor;
}

export interface Gpt2Params {
  /** [V, d]; also the (tied) unembedding unless `head` is given. */
  wte: Tensor;
  /** [P, d] */
  wpe: Tensor;
  blocks: Gpt2BlockParams[];
  lnF: LayerNormParams;
  /** [V, d]: an untied unembedding (weight processing unties it from wte); absent: wte. */
  head?: Tensor;
  /** [V]: an unembedding bias (weight processing folds ln_f's bias into it); absent: none. */
  headBias?: Tensor;
}

export interface Gpt2Model {
  cfg: Gpt2Config;
  params: Gpt2Params;
}

/** Every tensor the model needs, by its unprefixed name, with its expected shape. */
export function gpt2TensorShapes(cfg: Gpt2Config): Map<string, number[]> {
  const { dModel: d, dMlp: m } = cfg;
  const out = new Map<string, number[]>([
    ["wte.weight", [cfg.vocabSize, d]],
    ["wpe.weight", [cfg.nPositions, d]],
  ]);
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `h.${l}.`;
    out.set(p + "ln_1.weight", [d]).set(p + "ln_1.bias", [d]);
    out.set(p + "attn.c_attn.weight", [d, 3 * d]).set(p + "attn.c_attn.bias", [3 * d]);
    out.set(p + "attn.c_proj.weight", [d, d]).set(p + "attn.c_proj.bias", [d]);
    out.set(p + "ln_2.weight", [d]).set(p + "ln_2.bias", [d]);
    out.set(p + "mlp.c_fc.weight", [d, m]).set(p + "mlp.c_fc.bias", [m]);
    out.set(p + "mlp.c_proj.weight", [m, d]).set(p + "mlp.c_proj.bias", [d]);
  }
  out.set("ln_f.weight", [d]).set("ln_f.bias", [d]);
  return out;
}

/**
 * Legacy buffers older files carry: the causal mask `h.{i}.attn.bias` and `attn.masked_bias`.
 * The leading dot matters: `attn.c_attn.bias` is a weight and must not match.
 */
const isLegacyBuffer = (name: string): boolean =>
  name.endsWith(".attn.bias") || name.endsWith(".attn.masked_bias");

const PREFIX = "transformer.";

/** The safetensors files of a folder: the single file, or the shards its index names. */
function shardFiles(dir: string): { files: string[]; index?: Record<string, string> } {
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return { files: [single] };
  const indexPath = join(dir, "model.safetensors.index.json");
  if (!existsSync(indexPath)) {
    throw new LmLoadError(
      `${dir}: no model.safetensors and no model.safetensors.index.json`,
    );
  }
  let map: unknown;
  try {
    map = (JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map?: unknown }).weight_map;
  } catch (e) {
    throw new LmLoadError(`${indexPath}: cannot read: ${(e as Error).message}`);
  }
  if (map === null || typeof map !== "object" || Array.isArray(map)) {
    throw new LmLoadError(`${indexPath}: weight_map must be an object of tensor → file`);
  }
  const index = map as Record<string, unknown>;
  for (const [k, v] of Object.entries(index)) {
    if (typeof v !== "string" || v.includes("/") || v.includes("\\") || v.startsWith(".")) {
      throw new LmLoadError(
        `${indexPath}: tensor ${JSON.stringify(k)} maps to bad file ${JSON.stringify(v)}`,
      );
    }
  }
  const byFile = new Map<string, string[]>();
  for (const [k, f] of Object.entries(index as Record<string, string>)) {
    byFile.set(f, [...(byFile.get(f) ?? []), k]);
  }
  const names = [...byFile.keys()].sort();
  for (const f of names) {
    if (!existsSync(join(dir, f))) {
      const held = byFile.get(f)!;
      throw new LmLoadError(
        `${indexPath}: shard ${JSON.stringify(f)} (named for ${held.length} tensor${
          held.length === 1 ? "" : "s"
        }, e.g. ${JSON.stringify(held[0])}) is missing: expected ${
          join(dir, f)
        }, found no such file`,
      );
    }
  }
  return { files: names.map((f) => join(dir, f)), index: index as Record<string, string> };
}

/** How a family's tensor names map onto the names its loader expects. */
export interface TensorLayout {
  /** The family, for messages. */
  family: string;
  /** Every tensor the model needs, by its (prefix-stripped) name, with its expected shape. */
  expected: Map<string, number[]>;
  /** A prefix to strip from stored names when present. */
  prefix?: string;
  /** Buffers to skip (causal masks, rotary caches). */
  ignore?: (name: string) => boolean;
  /** Tensors that may be present (e.g. a tied head's copy) and then must have these shapes. */
  optional?: Map<string, number[]>;
}

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Open `file`, run `f` on its descriptor, close it; an open failure names the file. */
function withFile<T>(file: string, f: (fd: number) => T): T {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw new LmLoadError(`${file}: cannot open: ${(e as Error).message}`);
  }
  try {
    return f(fd);
  } finally {
    closeSync(fd);
  }
}

/** Fill `buf` from file byte `position`; a short read (the file shrank) names what was read. */
function readAt(fd: number, file: string, buf: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < buf.byteLength) {
    // One read call moves at most ~2 GiB on Linux, so large tensors are read in pieces.
    const n = readSync(fd, buf, done, Math.min(buf.byteLength - done, 1 << 30), position + done);
    if (n <= 0) {
      throw new LmLoadError(
        `${file}: ${what}: expected ${buf.byteLength} bytes at file byte ${position}, found ${done} (the file is truncated)`,
      );
    }
    done += n;
  }
}

/** A safetensors file's header, validated against the file's size; no tensor data is read. */
export async function readSafetensorsHeader(file: string): Promise<ParsedSafetensorsHeader> {
  let fh: FileHandle;
  try {
    fh = await open(file, "r");
  } catch (e) {
    throw new LmLoadError(`${file}: cannot open: ${(e as Error).message}`);
  }
  try {
    const total = (await fh.stat()).size;
    const readAll = async (buf: Uint8Array, what: string): Promise<void> => {
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, 0);
      if (bytesRead !== buf.byteLength) {
        throw new LmLoadError(
          `${file}: ${what}: expected ${buf.byteLength} bytes at file byte 0, found ${bytesRead}`,
        );
      }
    };
    const first8 = new Uint8Array(Math.min(8, total));
    await readAll(first8, "header length");
    const n = safetensorsHeaderLength(first8, total, file);
    const prefix = new Uint8Array(8 + n);
    await readAll(prefix, "header");
    return parseSafetensorsHeader(prefix, total, file);
  } finally {
    await fh.close();
  }
}

/** A tensor located by its header: the file, its stored name, its dtype, shape and byte range. */
interface Located {
  file: string;
  key: string;
  entry: SafetensorsHeaderEntry;
}

/**
 * Read a model folder's tensors (single file or shards), checking every name and shape against
 * `layout` from the headers alone. The getter then reads one tensor's bytes by offset, so a load
 * holds the weights plus one tensor in flight, never a whole file.
 */
export async function readModelTensors(
  dir: string,
  layout: TensorLayout,
  opts: LoadOptions = {},
): Promise<{ get: (name: string) => Tensor; has: (name: string) => boolean }> {
  const { expected, prefix, ignore, optional } = layout;
  const keep = (opts.dtype ?? "keep") === "keep";
  if (opts.dtype !== undefined && opts.dtype !== "keep" && opts.dtype !== "f32") {
    throw new RangeError(
      `load ${dir}: dtype must be "f32" or "keep", got ${JSON.stringify(opts.dtype)}`,
    );
  }
  const { files, index } = shardFiles(dir);
  const found = new Map<string, Located>();
  for (const file of files) {
    const { tensors } = await readSafetensorsHeader(file);
    for (const [key, entry] of tensors) {
      const name = prefix && key.startsWith(prefix) ? key.slice(prefix.length) : key;
      if (ignore?.(name)) continue;
      const where = `${file}: tensor ${JSON.stringify(key)}`;
      if (index && index[key] !== undefined && join(dir, index[key]) !== file) {
        throw new LmLoadError(`${where}: the index places it in ${index[key]}`);
      }
      const prev = found.get(name);
      if (prev) throw new LmLoadError(`${where}: duplicates a tensor of ${prev.file}`);
      const shape = expected.get(name) ?? optional?.get(name);
      if (!shape) {
        throw new LmLoadError(
          `${where}: unexpected tensor (shape ${fmt(entry.shape)}) for ${layout.family}`,
        );
      }
      if (shape.length !== entry.shape.length || shape.some((v, i) => v !== entry.shape[i])) {
        throw new LmLoadError(
          `${where}: expected shape ${fmt(shape)}, found ${fmt(entry.shape)}`,
        );
      }
      found.set(name, { file, key, entry });
    }
  }
  const where = index ? join(dir, "model.safetensors.index.json") : files[0];
  for (const [name, shape] of expected) {
    if (!found.has(name)) {
      throw new LmLoadError(
        `${where}: missing tensor ${JSON.stringify(name)} (expected shape ${
          fmt(shape)
        }, found none)`,
      );
    }
  }
  const get = (name: string): Tensor => {
    const { file, key, entry } = found.get(name)!;
    const data = new Uint8Array(entry.end - entry.begin);
    withFile(file, (fd) => readAt(fd, file, data, entry.begin, `tensor ${JSON.stringify(key)}`));
    const sixteen = entry.dtype === "F16" || entry.dtype === "BF16";
    if (sixteen && !keep && HOST_LE) {
      // Widened straight from the bytes read: one f32 array, no 16-bit tensor cast and dropped.
      const words = new Uint16Array(data.buffer, 0, data.byteLength / 2);
      return adoptHostArray(decode16(entry.dtype === "F16" ? "f16" : "bf16", words), "f32", [
        ...entry.shape,
      ]);
    }
    return toTensor(
      {
        dtype: entry.dtype,
        shape: entry.shape,
        data,
        name: key,
        source: file,
        offset: entry.begin,
      },
      { dtype: keep && sixteen ? undefined : "f32", adopt: true },
    );
  };
  return { get, has: (name) => found.has(name) };
}

/** Load a GPT-2 model folder; F16/BF16 weights stay 16-bit unless `dtype: "f32"`. */
export async function loadGpt2(dir: string, opts: LoadOptions = {}): Promise<Gpt2Model> {
  const cfg = readGpt2Config(dir);
  const { get } = await readModelTensors(dir, {
    family: "gpt2",
    expected: gpt2TensorShapes(cfg),
    prefix: PREFIX,
    ignore: isLegacyBuffer,
    // GPT-2's head is tied to wte; a stored copy must at least have the right shape.
    optional: new Map([["lm_head.weight", [cfg.vocabSize, cfg.dModel]]]),
  }, opts);
  const ln = (p: string): LayerNormParams => ({ w: get(p + ".weight"), b: get(p + ".bias") });
  const blocks: Gpt2BlockParams[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `h.${l}.`;
    blocks.push({
      ln1: ln(p + "ln_1"),
      wQkv: get(p + "attn.c_attn.weight"),
      bQkv: get(p + "attn.c_attn.bias"),
      wO: get(p + "attn.c_proj.weight"),
      bO: get(p + "attn.c_proj.bias"),
      ln2: ln(p + "ln_2"),
      wIn: get(p + "mlp.c_fc.weight"),
      bIn: get(p + "mlp.c_fc.bias"),
      wOut: get(p + "mlp.c_proj.weight"),
      bOut: get(p + "mlp.c_proj.bias"),
    });
  }
  return {
    cfg,
    params: { wte: get("wte.weight"), wpe: get("wpe.weight"), blocks, lnF: ln("ln_f") },
  };
}
