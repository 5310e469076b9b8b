/**
 * A model by Hugging Face repo id (`gpt2`, `EleutherAI/pythia-70m-deduped@main`) resolved to a
 * local folder in the Hugging Face cache, the same layout Python's huggingface_hub reads and
 * writes: `models--ORG--NAME/refs/<revision>` holds a commit hash, `snapshots/<hash>/<file>`
 * links into `blobs/<etag>`. A snapshot that already holds the config and the weights is used
 * without asking the hub (pass a commit hash as the revision to pin one). Missing files are
 * downloaded with @huggingface/hub, imported only then, so a cached or local load never loads it.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { copyFile, lstat, mkdir, open, rename, symlink, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import process from "node:process";
import { writeFileAtomic } from "../atomic.ts";
import { byteProgress, type ProgressSink } from "../progress.ts";

export class HubError extends Error {
  override name = "HubError";
}

export interface HubOptions {
  /** The hub cache folder; default from the environment (see hubCacheDir). */
  cacheDir?: string;
  /** A branch, tag or commit hash; default "main". An `@revision` in the id says the same. */
  revision?: string;
  /** Never use the network; default: HF_HUB_OFFLINE is 1/true/yes/on. */
  offline?: boolean;
  /** The hub's address; default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Used for every request (a proxy, or a test's fake hub). */
  fetch?: typeof fetch;
  /** For gated or private repos; default $HF_TOKEN, else the token file huggingface-cli writes. */
  token?: string;
  /** Draw download progress on stderr (default true), or on this sink. */
  progress?: boolean | ProgressSink;
}

type Env = Record<string, string | undefined>;

const expandHome = (p: string): string =>
  p === "~" || p.startsWith("~/") ? join(homedir(), p.slice(1)) : p;

/** $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
function hfHome(env: Env): string {
  if (env.HF_HOME) return expandHome(env.HF_HOME);
  return join(expandHome(env.XDG_CACHE_HOME || join(homedir(), ".cache")), "huggingface");
}

/**
 * The hub cache folder as huggingface_hub chooses it: $HF_HUB_CACHE, else the older
 * $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (HF_HOME defaulting as in hfHome).
 */
export function hubCacheDir(env: Env = process.env): string {
  const direct = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return direct ? expandHome(direct) : join(hfHome(env), "hub");
}

/** HF_HUB_OFFLINE as huggingface_hub reads it. */
export function offlineFromEnv(env: Env = process.env): boolean {
  return ["1", "ON", "YES", "TRUE"].includes((env.HF_HUB_OFFLINE ?? "").toUpperCase());
}

const NAME = "[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?";
const REPO_ID = new RegExp(`^(?:${NAME}/)?${NAME}$`);
const COMMIT = /^[0-9a-f]{40}$/;

/** `org/name@revision` split and checked; null when the text is not a repo id. */
export function parseRepoId(text: string): { repo: string; revision?: string } | null {
  const at = text.indexOf("@");
  const repo = at < 0 ? text : text.slice(0, at);
  const revision = at < 0 ? undefined : text.slice(at + 1);
  if (!REPO_ID.test(repo) || repo.includes("--") || repo.includes("..")) return null;
  if (revision !== undefined && (revision === "" || revision.includes(".."))) return null;
  return { repo, revision };
}

/** The repo's folder in the cache: models--ORG--NAME. */
export const repoFolderName = (repo: string): string => "models--" + repo.split("/").join("--");

/** Optional files fetched with the weights when the repo has them (the tokenizer reads them). */
const EXTRA_FILES = ["tokenizer.json", "tokenizer_config.json"];

/** What a snapshot folder still lacks of the config and the weights (shards via the index). */
function missingFiles(snap: string): string[] {
  if (!existsSync(snap)) return ["config.json", "model.safetensors"];
  const missing = existsSync(join(snap, "config.json")) ? [] : ["config.json"];
  if (existsSync(join(snap, "model.safetensors"))) return missing;
  const index = join(snap, "model.safetensors.index.json");
  if (!existsSync(index)) return [...missing, "model.safetensors"];
  return [...missing, ...shardNames(index).filter((f) => !existsSync(join(snap, f)))];
}

/** The shard file names an index's weight_map points to. */
function shardNames(indexPath: string): string[] {
  let map: unknown;
  try {
    map = (JSON.parse(readFileSync(indexPath, "utf8")) as { weight_map?: unknown }).weight_map;
  } catch (e) {
    throw new HubError(`${indexPath}: cannot read: ${(e as Error).message}`);
  }
  if (map === null || typeof map !== "object" || Array.isArray(map)) {
    throw new HubError(`${indexPath}: weight_map must be an object of tensor → file`);
  }
  const files = new Set<string>();
  for (const [k, v] of Object.entries(map as Record<string, unknown>)) {
    if (typeof v !== "string" || v.includes("/") || v.includes("\\") || v.startsWith(".")) {
      throw new HubError(
        `${indexPath}: tensor ${JSON.stringify(k)} maps to bad file ${JSON.stringify(v)}`,
      );
    }
    files.add(v);
  }
  return [...files].sort();
}

/** The commit a ref names in the cache, or null. */
function readRef(repoDir: string, revision: string): string | null {
  const path = join(repoDir, "refs", revision);
  if (!existsSync(path)) return null;
  const hash = readFileSync(path, "utf8").trim();
  if (!COMMIT.test(hash)) {
    throw new HubError(`${path}: expected a 40-digit commit hash, found ${JSON.stringify(hash)}`);
  }
  return hash;
}

/** Everything an error needs to say where it looked and how to get unstuck. */
interface Where {
  repo: string;
  revision: string;
  cache: string;
  repoDir: string;
  commit: string | null;
}

function lookedIn(w: Where): string {
  const snap = w.commit
    ? `snapshot ${join(w.repoDir, "snapshots", w.commit)}`
    : `no refs/${w.revision} there`;
  return `looked in the Hugging Face cache ${w.cache} (${repoFolderName(w.repo)}: ${snap})`;
}

function howToFix(w: Where): string {
  return `To fix: download it where the network is reachable (e.g. \`huggingface-cli download ${w.repo}${
    w.revision === "main" ? "" : ` --revision ${w.revision}`
  }\`) and copy the folder ${repoFolderName(w.repo)} into ${w.cache} ` +
    `(or point HF_HUB_CACHE or HF_HOME at a cache holding it), or pass the path of a folder holding config.json and model.safetensors`;
}

/**
 * A local folder holding the model: `idOrDir` itself when it exists, otherwise the cache
 * snapshot of the repo id, downloading what is missing unless offline.
 */
export async function resolveModel(idOrDir: string, opts: HubOptions = {}): Promise<string> {
  if (existsSync(idOrDir)) {
    if (!statSync(idOrDir).isDirectory()) {
      throw new HubError(`${idOrDir}: is a file; expected a folder holding config.json`);
    }
    return idOrDir;
  }
  const id = parseRepoId(idOrDir);
  if (!id) {
    throw new HubError(
      `${idOrDir}: no such folder, and not a Hugging Face repo id such as "gpt2" or "EleutherAI/pythia-70m@main"`,
    );
  }
  if (id.revision && opts.revision && id.revision !== opts.revision) {
    throw new HubError(
      `${idOrDir}: revision ${
        JSON.stringify(id.revision)
      } in the id differs from the revision option ${JSON.stringify(opts.revision)}`,
    );
  }
  const revision = id.revision ?? opts.revision ?? "main";
  const cache = opts.cacheDir ?? hubCacheDir();
  const repoDir = join(cache, repoFolderName(id.repo));
  const commit = COMMIT.test(revision) ? revision : readRef(repoDir, revision);
  const where: Where = { repo: id.repo, revision, cache, repoDir, commit };
  const missing = commit ? missingFiles(join(repoDir, "snapshots", commit)) : [
    "config.json",
    "model.safetensors",
  ];
  if (commit && missing.length === 0) return join(repoDir, "snapshots", commit);
  const what = `${missing.join(", ")} of ${id.repo} (revision ${revision})`;
  if (opts.offline ?? offlineFromEnv()) {
    throw new HubError(
      `${what} not cached, and offline mode (${
        opts.offline ? "the offline option" : "HF_HUB_OFFLINE"
      }) forbids downloading: ${lookedIn(where)}. ${howToFix(where)}`,
    );
  }
  try {
    return await download(where, opts);
  } catch (e) {
    if (e instanceof HubError) throw e;
    const status = (e as { statusCode?: number }).statusCode;
    const why = status === 401 || status === 403
      ? `the hub refused access (HTTP ${status}): the repo is gated or private; accept its terms on the hub and set HF_TOKEN`
      : status === 404
      ? `the hub has no such repo or revision (HTTP 404)`
      : `${(e as Error).message}${
        (e as Error).cause
          ? ` (${((e as Error).cause as Error).message ?? (e as Error).cause})`
          : ""
      }`;
    throw new HubError(
      `cannot download ${what} from ${endpointOf(opts)}: ${why}; ${lookedIn(where)}. ${
        howToFix(where)
      }`,
      { cause: e },
    );
  }
}

const endpointOf = (opts: HubOptions): string =>
  (opts.endpoint ?? process.env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, "");

function tokenOf(opts: HubOptions): string | undefined {
  if (opts.token) return opts.token;
  const env = process.env;
  if (env.HF_TOKEN) return env.HF_TOKEN;
  const file = env.HF_TOKEN_PATH ? expandHome(env.HF_TOKEN_PATH) : join(hfHome(env), "token");
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The subset of @huggingface/hub this file calls. */
interface HubModule {
  modelInfo(p: Record<string, unknown>): Promise<{ sha?: string; filePaths?: string[] }>;
  fileDownloadInfo(p: Record<string, unknown>): Promise<{ size: number; etag: string } | null>;
  downloadFile(p: Record<string, unknown>): Promise<Blob | null>;
}

// A variable, not a literal: type-checking and bundling never pull the package in.
const HUB_PACKAGE = "@huggingface/hub";

/** Fetch what the snapshot lacks (config, weights, tokenizer files), then record the ref. */
async function download(w: Where, opts: HubOptions): Promise<string> {
  const hub = await import(HUB_PACKAGE) as HubModule;
  const common = {
    repo: w.repo,
    hubUrl: endpointOf(opts),
    accessToken: tokenOf(opts),
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  };
  const info = await hub.modelInfo({
    ...common,
    name: w.repo,
    revision: w.commit ?? w.revision,
    additionalFields: ["sha", "filePaths"],
  });
  const sha = info.sha;
  if (typeof sha !== "string" || !COMMIT.test(sha)) {
    throw new HubError(
      `${w.repo} (revision ${w.revision}): the hub's answer has no commit hash (sha ${
        JSON.stringify(sha)
      })`,
    );
  }
  const listed = new Set(info.filePaths ?? []);
  const snap = join(w.repoDir, "snapshots", sha);
  const fetchFile = async (path: string): Promise<void> => {
    if (!existsSync(join(snap, path))) await downloadOne(hub, common, w, sha, path, opts);
  };
  if (!listed.has("config.json")) {
    throw new HubError(`${w.repo} (revision ${w.revision}, commit ${sha}) has no config.json`);
  }
  await fetchFile("config.json");
  if (listed.has("model.safetensors")) {
    await fetchFile("model.safetensors");
  } else if (listed.has("model.safetensors.index.json")) {
    await fetchFile("model.safetensors.index.json");
    for (const f of shardNames(join(snap, "model.safetensors.index.json"))) await fetchFile(f);
  } else {
    const others = [...listed].filter((f) => /\.(bin|pt|pth|h5|msgpack|gguf)$/.test(f));
    throw new HubError(
      `${w.repo} (revision ${w.revision}, commit ${sha}) has no model.safetensors or model.safetensors.index.json${
        others.length ? ` (only ${others.join(", ")}; convert them to safetensors)` : ""
      }`,
    );
  }
  for (const f of EXTRA_FILES) if (listed.has(f)) await fetchFile(f);
  if (!COMMIT.test(w.revision)) {
    await mkdir(dirname(join(w.repoDir, "refs", w.revision)), { recursive: true });
    await writeFileAtomic(join(w.repoDir, "refs", w.revision), sha);
  }
  return snap;
}

/** One file into blobs/<etag> (temp file, then rename) and a link to it from the snapshot. */
async function downloadOne(
  hub: HubModule,
  common: Record<string, unknown>,
  w: Where,
  sha: string,
  path: string,
  opts: HubOptions,
): Promise<void> {
  const info = await hub.fileDownloadInfo({ ...common, path, revision: sha });
  if (!info) throw new HubError(`${w.repo} (commit ${sha}): the hub lists ${path} but serves none`);
  // huggingface_hub names blobs by the ETag without quotes or the weak-validator prefix.
  const etag = info.etag.replace(/^W\//, "").replaceAll('"', "");
  if (!/^[A-Za-z0-9._-]+$/.test(etag)) {
    throw new HubError(`${w.repo} ${path}: unusable ETag ${JSON.stringify(info.etag)}`);
  }
  const blobPath = join(w.repoDir, "blobs", etag);
  if (!existsSync(blobPath)) {
    const blob = await hub.downloadFile({ ...common, path, revision: sha, downloadInfo: info });
    if (!blob) throw new HubError(`${w.repo} (commit ${sha}): ${path} vanished from the hub`);
    await mkdir(dirname(blobPath), { recursive: true });
    await saveStream(blob.stream(), blobPath, info.size, `${w.repo} ${path}`, opts.progress);
  }
  const pointer = join(w.repoDir, "snapshots", sha, path);
  await mkdir(dirname(pointer), { recursive: true });
  await lstat(pointer).then(() => unlink(pointer), () => {});
  try {
    await symlink(relative(dirname(pointer), blobPath), pointer);
  } catch {
    await copyFile(blobPath, pointer); // no symlinks here (some Windows setups): a copy, as Python does
  }
}

/** Stream into a temp file beside `dest`, check the size, then rename: `dest` is whole or absent. */
async function saveStream(
  stream: ReadableStream<Uint8Array>,
  dest: string,
  size: number,
  label: string,
  progress: HubOptions["progress"],
): Promise<void> {
  const rnd = crypto.getRandomValues(new Uint8Array(4));
  const tmp = `${dest}.${
    Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("")
  }.incomplete`;
  const bar = progress === false
    ? null
    : byteProgress(label, size, progress === true || progress === undefined ? undefined : progress);
  const fh = await open(tmp, "wx");
  let written = 0;
  try {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let at = 0;
      while (at < value.byteLength) {
        at += (await fh.write(value, at, value.byteLength - at)).bytesWritten;
      }
      written += value.byteLength;
      bar?.advance(value.byteLength);
    }
    if (written !== size) {
      throw new HubError(`${label}: the download ended after ${written} of ${size} bytes`);
    }
    await fh.sync();
    await fh.close();
    await rename(tmp, dest);
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  } finally {
    bar?.done();
  }
}
