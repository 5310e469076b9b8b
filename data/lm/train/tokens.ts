/**
 * A JSON-lines corpus (`{"text", "domain"?, …}` per line) tokenised once into one flat int32 array,
 * each document followed by the end-of-text id, and cached as `.npy` beside a `.json` holding its
 * identity (the corpus file's size and sha256, the tokenizer.json's sha256, the domain filter): a
 * rerun whose identity matches reads the cache instead of tokenising again. With `domains`, a second
 * array gives each token's domain (an index into `domains`), for losses per domain. Without a cache
 * folder nothing is written (a one-off read, as `sae diff` does of held-out text).
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { tensor } from "../../../tensor/ops/create.ts";
import { ensureDir, writeJsonAtomic } from "../../atomic.ts";
import { loadNpy, saveNpy } from "../../npy.ts";
import { CorpusError } from "../../text/corpus_error.ts";
import { textLines } from "../../text/corpus_text.ts";
import type { Tokenizer } from "../../text/tokenizer.ts";

/** What a cached token array was made from; equal identities mean equal arrays. */
export interface TokenIdentity {
  corpus: { path: string; bytes: number; sha256: string };
  tokenizerSha256: string;
  endOfText: number;
  /** Only documents of this domain were kept; null: all. */
  domain: string | null;
}

export interface CorpusTokens {
  identity: TokenIdentity;
  ids: Int32Array;
  documents: number;
  /** Domain names in order of first appearance ("" for documents without one). */
  domains: string[];
  /** Per token, its document's index into `domains` (present when asked for). */
  domainOf?: Int32Array;
}

/** sha256 of a file, read in pieces. */
export async function fileSha256(path: string): Promise<{ bytes: number; sha256: string }> {
  const h = createHash("sha256");
  const fh = await open(path, "r");
  try {
    const buf = new Uint8Array(1 << 20);
    let bytes = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, bytes);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      bytes += bytesRead;
    }
    return { bytes, sha256: h.digest("hex") };
  } finally {
    await fh.close();
  }
}

/** A growable int32 buffer. */
class Ints {
  data = new Int32Array(1 << 16);
  length = 0;
  push(xs: ArrayLike<number>): void {
    if (this.length + xs.length > this.data.length) {
      const next = new Int32Array(Math.max(2 * this.data.length, this.length + xs.length));
      next.set(this.data.subarray(0, this.length));
      this.data = next;
    }
    this.data.set(xs, this.length);
    this.length += xs.length;
  }
  fill(value: number, n: number): void {
    this.push(new Int32Array(n).fill(value));
  }
  done(): Int32Array {
    return this.data.slice(0, this.length);
  }
}

/** The documents of a JSON-lines file: text and domain, errors naming the file and line. */
async function* jsonlRecords(file: string): AsyncGenerator<{ text: string; domain: string }> {
  for await (const block of textLines(file, { chunkBytes: 1 << 20, maxDocumentBytes: 64 << 20 })) {
    for (let i = 0; i < block.texts.length; i++) {
      const line = block.texts[i], where = `line ${block.firstLine + i}`;
      if (/^\s*$/.test(line)) continue;
      let r: unknown;
      try {
        r = JSON.parse(line);
      } catch (e) {
        throw new CorpusError(file, where, `malformed JSON: ${(e as Error).message}`);
      }
      if (r === null || typeof r !== "object" || Array.isArray(r)) {
        throw new CorpusError(file, where, `expected a JSON object with a "text" field`);
      }
      const { text, domain } = r as { text?: unknown; domain?: unknown };
      if (typeof text !== "string") {
        throw new CorpusError(
          file,
          where,
          `field "text" must be a string, got ${text === undefined ? "none" : typeof text}`,
        );
      }
      if (domain !== undefined && domain !== null && typeof domain !== "string") {
        throw new CorpusError(file, where, `field "domain" must be a string, got ${typeof domain}`);
      }
      yield { text, domain: (domain as string | null | undefined) ?? "" };
    }
  }
}

export interface CorpusTokensOptions {
  tokenizer: Tokenizer;
  /** The tokenizer folder (its tokenizer.json is hashed into the identity). */
  tokenizerDir: string;
  /** Where the cache lives, and the files' base name there; no cacheDir: no cache. */
  cacheDir?: string;
  name?: string;
  domain?: string | null;
  /** Keep each token's domain (domainOf). */
  withDomains?: boolean;
}

/** The corpus's token array, from the cache when its identity matches, else tokenised and cached. */
export async function corpusTokens(path: string, o: CorpusTokensOptions): Promise<CorpusTokens> {
  if (!existsSync(path)) throw new CorpusError(path, null, "no such file");
  const eot = o.tokenizer.eosId;
  if (eot === null) {
    throw new Error(
      `${o.tokenizerDir}: the tokenizer has no end-of-text token (eos_token) to join documents with`,
    );
  }
  if ((await stat(path)).isDirectory()) {
    throw new CorpusError(path, null, "expected one .jsonl file, found a folder");
  }
  const identity: TokenIdentity = {
    corpus: { path, ...(await fileSha256(path)) },
    tokenizerSha256: (await fileSha256(join(o.tokenizerDir, "tokenizer.json"))).sha256,
    endOfText: eot,
    domain: o.domain ?? null,
  };
  const base = o.cacheDir === undefined ? null : join(o.cacheDir, o.name ?? "tokens");
  const cached = base && await readCache(base, identity, !!o.withDomains);
  if (cached) return cached;
  const ids = new Ints(), dom = new Ints();
  const domains: string[] = [];
  let documents = 0;
  for await (const r of jsonlRecords(path)) {
    if (o.domain != null && r.domain !== o.domain) continue;
    if (r.text === "") continue;
    const enc = o.tokenizer.encode(r.text);
    ids.push(enc);
    ids.push([eot]);
    let d = domains.indexOf(r.domain);
    if (d < 0) d = domains.push(r.domain) - 1;
    if (o.withDomains) dom.fill(d, enc.length + 1);
    documents++;
  }
  if (documents === 0) {
    throw new CorpusError(
      path,
      null,
      o.domain != null ? `no document has domain ${JSON.stringify(o.domain)}` : "no documents",
    );
  }
  const out: CorpusTokens = {
    identity,
    ids: ids.done(),
    documents,
    domains,
    ...(o.withDomains ? { domainOf: dom.done() } : {}),
  };
  if (base === null) return out;
  await ensureDir(o.cacheDir!);
  await saveNpy(`${base}.npy`, tensor(out.ids, { dtype: "i32", shape: [out.ids.length] }));
  if (out.domainOf) {
    await saveNpy(
      `${base}.domains.npy`,
      tensor(out.domainOf, { dtype: "i32", shape: [out.domainOf.length] }),
    );
  }
  // The identity goes last: a cache whose .json is missing or stale is rebuilt.
  await writeJsonAtomic(`${base}.json`, {
    identity,
    documents,
    domains,
    tokens: out.ids.length,
  });
  return out;
}

async function readCache(
  base: string,
  identity: TokenIdentity,
  withDomains: boolean,
): Promise<CorpusTokens | null> {
  if (!existsSync(`${base}.json`) || !existsSync(`${base}.npy`)) return null;
  if (withDomains && !existsSync(`${base}.domains.npy`)) return null;
  let meta: { identity: TokenIdentity; documents: number; domains: string[]; tokens: number };
  try {
    meta = JSON.parse(await readFile(`${base}.json`, "utf8"));
  } catch {
    return null;
  }
  if (JSON.stringify(meta.identity) !== JSON.stringify(identity)) return null;
  const ids = Int32Array.from((await loadNpy(`${base}.npy`)).dataSync());
  if (ids.length !== meta.tokens) return null;
  const domainOf = withDomains
    ? Int32Array.from((await loadNpy(`${base}.domains.npy`)).dataSync())
    : undefined;
  return {
    identity,
    ids,
    documents: meta.documents,
    domains: meta.domains,
    ...(domainOf ? { domainOf } : {}),
  };
}

/**
 * The tokens of one domain (its documents in order), from an array with domainOf; with `except`,
 * the tokens of every other domain.
 */
export function domainTokens(
  t: CorpusTokens,
  domain: number,
  o: { except?: boolean } = {},
): Int32Array {
  if (!t.domainOf) throw new Error("domainTokens: the token array was read without domains");
  const out = new Ints();
  const except = o.except === true;
  let start = -1;
  for (let i = 0; i <= t.ids.length; i++) {
    const inside = i < t.ids.length && (t.domainOf[i] === domain) !== except;
    if (inside && start < 0) start = i;
    if (!inside && start >= 0) out.push(t.ids.subarray(start, i)), start = -1;
  }
  return out.done();
}
