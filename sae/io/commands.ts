/**
 * The data commands of the `sae` CLI (`sae convert`, `sae inspect`): argument checking and
 * printing around convert.ts and inspect.ts. The sae command line (sae/cli.ts) dispatches here; usage errors print
 * "sae: …" and return exit code 2, as the other commands do.
 */
import { convertPath } from "./convert.ts";
import { inspectPath } from "./inspect.ts";
import { formatInspection } from "./tools.ts";

type Flags = Record<string, string | true>;

export const CONVERT_HELP = `sae convert IN OUT: convert activations or a dictionary

  IN     activations: an Arrow store, a SAELens cache (folder or .arrow[#hook]), a
         dictionary_learning cache (folder; DIR1,DIR2 for [N, L, d]), .npy, .safetensors[#tensor]
         or a dictionary: a dictionary_learning ae.pt (with config.json beside it), a sparsify
         folder (cfg.json + sae.safetensors), a SAELens folder
  OUT    a folder (Arrow store for activations, SAELens folder for dictionaries) or FILE.npy
  --dtype f32|f16|bf16    store dtype (default: the input's)
  --rows-per-shard N      rows per store shard (default: ~128 MiB shards)
  --model NAME, --hook-point NAME   recorded in the store's manifest
  --token-ids             also store token ids (from stores, SAELens caches, dictionary_learning tokens.pt)`;

export const INSPECT_HELP = `sae inspect PATH: print what PATH holds

  activations: format, rows, row shape, dtype, statistics (per-dimension mean/variance summary)
  dictionaries: format, architecture, sizes, k/threshold, tensors, decoder norms
  --verify     check an Arrow store's sha256 checksums
  --max-rows N scan at most N rows for statistics (formats without stored statistics)
  --json       one JSON line`;

class Usage extends Error {}

function check(flags: Flags, known: string[], cmd: string): void {
  for (const f of Object.keys(flags)) {
    if (!known.includes(f)) {
      throw new Usage(`sae ${cmd}: unknown option --${f} (see sae ${cmd} --help)`);
    }
  }
}

function str(flags: Flags, name: string): string | undefined {
  const v = flags[name];
  if (v === true) throw new Usage(`--${name} needs a value`);
  return v;
}

/** Run `sae convert` / `sae inspect`; returns the exit code. */
export async function dataCommand(
  cmd: "convert" | "inspect",
  positional: string[],
  flags: Flags,
): Promise<number> {
  try {
    if (flags.help) {
      console.log(cmd === "convert" ? CONVERT_HELP : INSPECT_HELP);
      return 0;
    }
    if (cmd === "convert") {
      check(flags, ["dtype", "rows-per-shard", "model", "hook-point", "token-ids"], cmd);
      if (positional.length !== 2) {
        throw new Usage(
          `sae convert: expected IN and OUT, got ${positional.length} arguments (see sae convert --help)`,
        );
      }
      const dtype = str(flags, "dtype");
      if (dtype !== undefined && !["f32", "f16", "bf16"].includes(dtype)) {
        throw new Usage(`--dtype must be f32, f16 or bf16, got ${JSON.stringify(dtype)}`);
      }
      const rps = str(flags, "rows-per-shard");
      if (rps !== undefined && !(Number.isSafeInteger(Number(rps)) && Number(rps) > 0)) {
        throw new Usage(`--rows-per-shard must be a positive integer, got ${JSON.stringify(rps)}`);
      }
      const r = await convertPath(positional[0], positional[1], {
        dtype: dtype as "f32" | "f16" | "bf16" | undefined,
        rowsPerShard: rps ? Number(rps) : undefined,
        model: str(flags, "model"),
        hookPoint: str(flags, "hook-point"),
        tokenIds: flags["token-ids"] === true,
      });
      if (r.kind === "store") {
        console.log(
          `wrote an Arrow store: ${r.out} (${r.manifest.rows} rows of [${r.manifest.row_shape}] ${r.manifest.dtype} in ${r.manifest.shards.length} shards)`,
        );
      } else if (r.kind === "npy") console.log(`wrote ${r.out} ([${r.shape}] f32)`);
      else console.log(`wrote a SAELens folder: ${r.out} (${r.architecture}, from ${r.format})`);
      return 0;
    }
    check(flags, ["verify", "max-rows", "json"], cmd);
    if (positional.length !== 1) {
      throw new Usage(`sae inspect: expected one PATH, got ${positional.length} arguments`);
    }
    const mr = str(flags, "max-rows");
    if (mr !== undefined && !(Number.isSafeInteger(Number(mr)) && Number(mr) > 0)) {
      throw new Usage(`--max-rows must be a positive integer, got ${JSON.stringify(mr)}`);
    }
    const r = await inspectPath(positional[0], {
      verify: flags.verify === true,
      maxRows: mr ? Number(mr) : undefined,
    });
    console.log(flags.json ? JSON.stringify(r) : formatInspection(r));
    return 0;
  } catch (e) {
    // Bad input files are reported like bad arguments: one line naming the file and the problem.
    console.error(`sae: ${(e as Error).message}`);
    return e instanceof Usage ? 2 : 1;
  }
}
