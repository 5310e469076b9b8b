/**
 * `sae harvest --model M --hooks H[,H2…] --data IDS --context T --tokens N --out STORE …`: a
 * model's activations on a corpus written into an Arrow activation store (harvest_store.ts), with
 * a progress bar on stderr; run again with the same arguments, a killed harvest continues.
 * sae/cli.ts dispatches here.
 */
import process from "node:process";
import type { StoreDType } from "../arrow_store.ts";
import { openTextRows, TEXT_FLAGS, TEXT_FLAGS_HELP, textRowsOptions } from "../text/open_rows.ts";
import { LmUsageError } from "./commands.ts";
import { harvestToStore } from "./harvest_store.ts";
import { resolveModel } from "./hub.ts";
import { loadModel } from "./model.ts";

type Flags = Record<string, string | true>;

export const HARVEST_HELP =
  `sae harvest: a model's activations on a corpus, written into an Arrow activation store

  sae harvest --model MODEL --hooks H1[,H2…] --data TEXT --context T --tokens N --out STORE
              [--dtype f32|f16|bf16] [--batch 8] [--exclude-special] [--exclude-ids 50256,…]
              [--model-b MODEL2] [--rows-per-shard R]

  One store row per kept token, with token_id, sequence_id (the token row) and position: [d] for
  one hook, [L, d] for several (same width), [2, d] with --model-b (same vocabulary and width; one
  hook). The store holds exactly N rows (the last token row is cut), fewer if the data runs out.
${TEXT_FLAGS_HELP}
  --dtype       stored precision (default f32); bf16 halves the size
  --batch       token rows per forward pass (default 8)
  --exclude-special  leave out the model's special tokens (tokenizer.json's special added tokens;
                config.json's bos/eos/pad ids when it has no tokenizer.json); --exclude-ids lists
                ids explicitly
  --rows-per-shard   target rows per shard (default about 128 MiB); shards end between batches
  Killed, the same command continues after the last whole shard; other options against an
  existing store are an error.`;

const FLAGS = [
  "model",
  "hooks",
  "data",
  ...TEXT_FLAGS,
  "tokens",
  "out",
  "dtype",
  "batch",
  "exclude-special",
  "exclude-ids",
  "model-b",
  "rows-per-shard",
  "help",
];

function value(flags: Flags, name: string): string {
  const v = flags[name];
  if (v === undefined || v === true) throw new LmUsageError(`sae harvest: --${name} needs a value`);
  return v;
}

function count(flags: Flags, name: string, fallback?: number): number {
  if (flags[name] === undefined && fallback !== undefined) return fallback;
  const s = value(flags, name), n = Number(s);
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new LmUsageError(`sae harvest: --${name} must be a positive integer, got ${s}`);
  }
  return n;
}

/** Run `sae harvest …`; prints a summary on stdout and the progress bar on stderr. */
export async function harvestCommand(positional: string[], flags: Flags): Promise<void> {
  if (flags.help) {
    console.log(HARVEST_HELP);
    return;
  }
  for (const f of Object.keys(flags)) {
    if (!FLAGS.includes(f)) {
      throw new LmUsageError(`sae harvest: unknown option --${f} (see sae harvest --help)`);
    }
  }
  if (positional.length) {
    throw new LmUsageError(`sae harvest: unexpected argument ${positional[0]}`);
  }
  const modelName = value(flags, "model"), out = value(flags, "out");
  const hooks = value(flags, "hooks").split(",").filter((s) => s !== "");
  const text = textRowsOptions(flags, (m) => {
    throw new LmUsageError(`sae harvest: ${m}`);
  });
  const tokens = count(flags, "tokens");
  const batch = count(flags, "batch", 8);
  const rowsPerShard = flags["rows-per-shard"] === undefined
    ? undefined
    : count(flags, "rows-per-shard");
  const dtype = (flags.dtype === undefined ? "f32" : value(flags, "dtype")) as StoreDType;
  if (!["f32", "f16", "bf16"].includes(dtype)) {
    throw new LmUsageError(`sae harvest: --dtype must be f32, f16 or bf16, got ${dtype}`);
  }
  const exclude = new Set<number>();
  if (flags["exclude-ids"] !== undefined) {
    for (const s of value(flags, "exclude-ids").split(",").filter((s) => s !== "")) {
      const id = Number(s);
      if (!Number.isSafeInteger(id) || id < 0) {
        throw new LmUsageError(`sae harvest: --exclude-ids: ${s} is not a token id`);
      }
      exclude.add(id);
    }
  }
  const dir = await resolveModel(modelName);
  if (flags["exclude-special"] !== undefined && flags["exclude-special"] !== true) {
    throw new LmUsageError("sae harvest: --exclude-special takes no value");
  }
  const data = value(flags, "data");
  const { rows, special } = await openTextRows(data, dir, text).catch((e) => {
    throw new LmUsageError(`sae harvest: --data ${data}: ${(e as Error).message}`);
  });
  if (flags["exclude-special"] === true) {
    if (special.size === 0) {
      throw new LmUsageError(
        `sae harvest: --exclude-special: ${dir} names no special tokens (none in tokenizer.json, no bos/eos/pad ids in config.json); give --exclude-ids`,
      );
    }
    for (const id of special) exclude.add(id);
  }
  const model = await loadModel(dir);
  const modelBName = flags["model-b"] === undefined ? undefined : value(flags, "model-b");
  const modelB = modelBName === undefined ? undefined : await loadModel(modelBName);
  const r = await harvestToStore({
    model,
    modelName,
    modelB,
    modelBName,
    hooks,
    rows,
    tokens,
    out,
    dtype,
    batch,
    excludeIds: exclude,
    rowsPerShard,
    progress: process.stderr,
  });
  const m = r.manifest;
  const what = `${m.rows} rows [${m.row_shape}] ${m.dtype} in ${m.shards.length} shards`;
  if (r.alreadyComplete) console.log(`${out} is already complete: ${what}; nothing to do`);
  else {
    console.log(
      `wrote ${out}: ${what}${r.startRow > 0 ? ` (continued at token row ${r.startRow})` : ""}`,
    );
  }
  if (r.exhausted) {
    console.error(`sae harvest: the data ran out after ${m.rows} tokens (${tokens} asked)`);
  }
}
