/**
 * One source's files read into units of text: the file listing (sorted, filtered, symbolic links
 * resolved to one copy each, restricted to what the Debian packages ship), decoding (UTF-8, gzip
 * for man pages), and the format's reader. A unit is what the held-out rule hashes: a file, or one
 * entry of a multi-entry file (a fortune, a group of nlp-corpus sentences).
 */
import { readdir, readFile, realpath, stat } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { brownToText } from "./brown.ts";
import { fortuneFiles, splitFortunes } from "./fortunes.ts";
import {
  debianPackage,
  DPKG,
  dpkgFiles,
  type DpkgPaths,
  npmPackage,
  type PackageInfo,
} from "./packages.ts";
import type { SourceSpec } from "./sources.ts";
import { troffToText } from "./troff.ts";

export interface SourceUnit {
  /** `<source id>/<path relative to the root>`, plus `#n` for the n-th entry of a file. */
  key: string;
  text: string;
}

export interface SourceRead {
  packages: PackageInfo[];
  files: number;
  units: SourceUnit[];
  /** Files or entries left out, by reason (e.g. "not UTF-8", "empty", "alias (.so)"). */
  skipped: Record<string, number>;
}

/** Sentences of nlp-corpus per document (its files hold 1000 unrelated sentences each). */
const NLP_SENTENCES = 50;

async function walk(root: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  const dir = join(root, rel);
  for (const name of (await readdir(dir)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    let s;
    try {
      s = await stat(join(root, r)); // follows links; a dangling link is passed over
    } catch {
      continue;
    }
    if (s.isDirectory()) out.push(...await walk(root, r));
    else if (s.isFile()) out.push(r);
  }
  return out;
}

/** Why a source cannot be read, naming what to install. */
function missing(spec: SourceSpec, what: string): string {
  return `source ${spec.id}: ${what}`;
}

/** The package records of a source, or the reason one is missing. */
async function packagesOf(spec: SourceSpec, dpkg: DpkgPaths): Promise<PackageInfo[] | string> {
  const out: PackageInfo[] = [];
  for (const p of spec.debian?.packages ?? []) {
    const info = await debianPackage(p, spec.debian!.licenceHint, dpkg);
    if (!info) return missing(spec, `Debian package ${p} is not installed (apt-get install ${p})`);
    out.push(info);
  }
  if (spec.npm) {
    const info = await npmPackage(spec.npm);
    if (!info) {
      return missing(
        spec,
        `npm package ${spec.npm} is not installed (npm install; it is in package.json)`,
      );
    }
    out.push(info);
  }
  return out;
}

/** The sorted relative paths of a source's files: filtered, deduplicated, owned by its packages. */
async function sourceFiles(spec: SourceSpec, dpkg: DpkgPaths): Promise<string[] | string> {
  let all: string[];
  try {
    all = await walk(spec.root);
  } catch (e) {
    return missing(spec, `cannot read ${spec.root}: ${(e as Error).message}`);
  }
  let files = all.filter((r) => spec.include.test(r) && !spec.exclude?.test(r));
  if (spec.format === "fortunes") files = fortuneFiles(files);
  if (spec.debian) {
    const owned = new Set<string>();
    for (const p of spec.debian.packages) {
      for (const f of await dpkgFiles(p, dpkg) ?? []) owned.add(f);
    }
    files = files.filter((r) => owned.has(join(spec.root, r)));
  }
  // One copy of each real file: man page aliases and fortunes' .u8 twins are links.
  const seen = new Set<string>();
  const out: string[] = [];
  for (const r of files) {
    const real = await realpath(join(spec.root, r));
    if (!seen.has(real)) seen.add(real), out.push(r);
  }
  if (out.length === 0) return missing(spec, `no files under ${spec.root} match ${spec.include}`);
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Read a source; a string is the reason it is missing. */
export async function readSource(
  spec: SourceSpec,
  dpkg: DpkgPaths = DPKG,
): Promise<SourceRead | string> {
  const packages = await packagesOf(spec, dpkg);
  if (typeof packages === "string") return packages;
  const files = await sourceFiles(spec, dpkg);
  if (typeof files === "string") return files;
  const units: SourceUnit[] = [];
  const skipped: Record<string, number> = {};
  const skip = (why: string) => skipped[why] = (skipped[why] ?? 0) + 1;
  for (const rel of files) {
    let bytes: Uint8Array = await readFile(join(spec.root, rel));
    if (rel.endsWith(".gz")) bytes = gunzipSync(bytes);
    let src: string;
    try {
      src = utf8.decode(bytes);
    } catch {
      skip("not UTF-8");
      continue;
    }
    const key = `${spec.id}/${rel}`;
    const add = (k: string, text: string) => {
      if (text.trim() === "") skip("empty");
      else units.push({ key: k, text });
    };
    switch (spec.format) {
      case "brown":
        add(key, brownToText(src));
        break;
      case "troff": {
        const text = troffToText(src);
        if (text === "" && /^\.so\s/m.test(src)) skip("alias (.so)");
        else add(key, text);
        break;
      }
      case "fortunes":
        splitFortunes(src).forEach((t, i) => add(`${key}#${i}`, t));
        break;
      case "nlp-corpus": {
        const sentences = parseSentences(src, join(spec.root, rel));
        for (let i = 0; i * NLP_SENTENCES < sentences.length; i++) {
          add(
            `${key}#${i}`,
            sentences.slice(i * NLP_SENTENCES, (i + 1) * NLP_SENTENCES).join("\n"),
          );
        }
        break;
      }
      case "code":
        add(key, src.replace(/\r\n?/g, "\n").replace(/^\uFEFF/, ""));
        break;
    }
  }
  return { packages, files: files.length, units, skipped };
}

function parseSentences(src: string, file: string): string[] {
  let v: unknown;
  try {
    v = JSON.parse(src);
  } catch (e) {
    throw new Error(`${file}: malformed JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) {
    throw new Error(`${file}: expected a JSON array of sentences (strings)`);
  }
  return v.map((s) => s.trim()).filter((s) => s !== "");
}
