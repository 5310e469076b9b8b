// Models by Hugging Face repo id (data/lm/hub.ts): a cache layout built here (refs → snapshot →
// symlinks into blobs), found through HF_HUB_CACHE, HF_HOME or the cacheDir option; revisions;
// offline mode and an unreachable network as errors that say what is missing, where we looked
// and how to fix it; and a download from a fake hub (a custom fetch) into the same layout.
import { lstatSync, readFileSync, readlinkSync } from "node:fs";
import { copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import process from "node:process";
import { forward, loadModel } from "../data/lm/model.ts";
import { hubCacheDir, offlineFromEnv, parseRepoId, resolveModel } from "../data/lm/hub.ts";
import { assert, assertEquals, test, withTempDir } from "./harness.ts";
import { expectError, root } from "./lm_fixtures.ts";

const TOKENS = [[1, 5, 9, 2]];
const HASH_MAIN = "a".repeat(40);
const HASH_V1 = "b".repeat(40);

/**
 * models--ORG--NAME for `repo` under `cache`: each of `files` (name → source path) stored as
 * blobs/<etag> with a relative symlink from snapshots/<hash>/, and refs/<ref> → hash.
 */
async function cacheRepo(
  cache: string,
  repo: string,
  hash: string,
  files: Record<string, string>,
  ref?: string,
): Promise<string> {
  const repoDir = join(cache, "models--" + repo.split("/").join("--"));
  const snap = join(repoDir, "snapshots", hash);
  await mkdir(join(repoDir, "blobs"), { recursive: true });
  await mkdir(snap, { recursive: true });
  for (const [name, src] of Object.entries(files)) {
    const etag = `${hash.slice(0, 8)}-${name.replace(/[^a-z0-9]/gi, "")}`;
    await copyFile(src, join(repoDir, "blobs", etag));
    await symlink(join("..", "..", "blobs", etag), join(snap, name));
  }
  if (ref) {
    await mkdir(join(repoDir, "refs"), { recursive: true });
    await writeFile(join(repoDir, "refs", ref), hash);
  }
  return snap;
}

const gpt2Files = (fixture = "gpt2") => ({
  "config.json": join(root, fixture, "config.json"),
  "model.safetensors": join(root, fixture, "model.safetensors"),
});

/** Run `fn` with environment variables set (undefined: unset), restoring them after. */
async function withEnv(vars: Record<string, string | undefined>, fn: () => Promise<void>) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (k: string, v: string | undefined) => {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };
  try {
    for (const [k, v] of Object.entries(vars)) set(k, v);
    await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) set(k, v);
  }
}

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("lm-hub-", fn);

const NO_HF_ENV = {
  HF_HUB_CACHE: undefined,
  HUGGINGFACE_HUB_CACHE: undefined,
  HF_HOME: undefined,
  HF_HUB_OFFLINE: undefined,
  HF_TOKEN: undefined,
  HF_ENDPOINT: undefined,
};

/** The first logits of a model, for telling two models apart. */
async function logitsOf(idOrDir: string, opts = {}): Promise<number[]> {
  return Array.from(forward(await loadModel(idOrDir, opts), TOKENS).dataSync());
}

test("lm hub: the cache folder follows huggingface_hub's precedence", () => {
  assertEquals(hubCacheDir({ HF_HUB_CACHE: "/a", HF_HOME: "/b" }), "/a");
  assertEquals(hubCacheDir({ HUGGINGFACE_HUB_CACHE: "/old", HF_HOME: "/b" }), "/old");
  assertEquals(hubCacheDir({ HF_HOME: "/b", XDG_CACHE_HOME: "/x" }), join("/b", "hub"));
  assertEquals(hubCacheDir({ XDG_CACHE_HOME: "/x" }), join("/x", "huggingface", "hub"));
  assert(hubCacheDir({}).endsWith(join(".cache", "huggingface", "hub")), hubCacheDir({}));
  assertEquals([offlineFromEnv({ HF_HUB_OFFLINE: "1" }), offlineFromEnv({})], [true, false]);
  assertEquals(offlineFromEnv({ HF_HUB_OFFLINE: "true" }), true);
  assertEquals(parseRepoId("EleutherAI/pythia-70m-deduped@step3000"), {
    repo: "EleutherAI/pythia-70m-deduped",
    revision: "step3000",
  });
  assertEquals(parseRepoId("gpt2"), { repo: "gpt2", revision: undefined });
  for (const bad of ["a/b/c", "../x", "x@", "a--b", "/abs/path", "a b"]) {
    assertEquals(parseRepoId(bad), null, bad);
  }
});

test("lm hub: a repo id loads from the cache via HF_HUB_CACHE, HF_HOME and cacheDir", async () => {
  const want = await logitsOf(join(root, "gpt2"));
  await withTemp(async (tmp) => {
    const cache = join(tmp, "home", "hub");
    const snap = await cacheRepo(cache, "gpt2", HASH_MAIN, gpt2Files(), "main");
    await withEnv({ ...NO_HF_ENV, HF_HUB_OFFLINE: "1" }, async () => {
      assertEquals(await resolveModel("gpt2", { cacheDir: cache }), snap);
      assertEquals(await logitsOf("gpt2", { cacheDir: cache }), want);
    });
    await withEnv({ ...NO_HF_ENV, HF_HUB_OFFLINE: "1", HF_HUB_CACHE: cache }, async () => {
      assertEquals(await logitsOf("gpt2"), want);
    });
    await withEnv({ ...NO_HF_ENV, HF_HUB_OFFLINE: "1", HF_HOME: join(tmp, "home") }, async () => {
      assertEquals(await resolveModel("gpt2"), snap);
    });
    // An organisation's repo: models--ORG--NAME.
    await cacheRepo(cache, "Org/tiny-gpt2", HASH_MAIN, gpt2Files(), "main");
    assertEquals(await logitsOf("Org/tiny-gpt2", { cacheDir: cache, offline: true }), want);
  });
});

test("lm hub: @revision and the revision option pick a ref or a commit hash", async () => {
  const main = await logitsOf(join(root, "gpt2"));
  const other = await logitsOf(join(root, "llama"));
  assert(main.length !== other.length || main.some((v, i) => v !== other[i]), "distinct models");
  await withTemp(async (cache) => {
    await cacheRepo(cache, "gpt2", HASH_MAIN, gpt2Files(), "main");
    await cacheRepo(cache, "gpt2", HASH_V1, gpt2Files("llama"), "v1");
    const opts = { cacheDir: cache, offline: true };
    assertEquals(await logitsOf("gpt2", opts), main);
    assertEquals(await logitsOf("gpt2@v1", opts), other);
    assertEquals(await logitsOf("gpt2", { ...opts, revision: "v1" }), other);
    // A commit hash needs no ref.
    assertEquals(await logitsOf(`gpt2@${HASH_V1}`, opts), other);
    await expectError(
      () => resolveModel("gpt2@v1", { ...opts, revision: "main" }),
      ['"v1"', '"main"', "differs"],
    );
  });
});

test("lm hub: a folder path is used as is; a missing one is not taken for a repo id", async () => {
  const dir = join(root, "gpt2");
  assertEquals(await resolveModel(dir, { offline: true }), dir);
  await expectError(() => resolveModel("./no/such/model"), [
    "./no/such/model",
    "no such folder",
    "repo id",
  ]);
  await expectError(() => resolveModel(join(dir, "config.json")), ["is a file"]);
});

test("lm hub: a file missing from the cache in offline mode says what, where and how to fix", async () => {
  await withTemp(async (cache) => {
    // The snapshot has the config but not the weights.
    await cacheRepo(cache, "EleutherAI/pythia-tiny", HASH_MAIN, {
      "config.json": join(root, "gpt_neox", "config.json"),
    }, "main");
    const parts = [
      "model.safetensors",
      "EleutherAI/pythia-tiny",
      "revision main",
      cache,
      "models--EleutherAI--pythia-tiny",
      join("snapshots", HASH_MAIN),
      "To fix",
      "pass the path of a folder",
    ];
    await expectError(
      () => loadModel("EleutherAI/pythia-tiny", { cacheDir: cache, offline: true }),
      [...parts, "offline option"],
    );
    await withEnv({ ...NO_HF_ENV, HF_HUB_OFFLINE: "1", HF_HUB_CACHE: cache }, async () => {
      await expectError(() => loadModel("EleutherAI/pythia-tiny"), [...parts, "HF_HUB_OFFLINE"]);
    });
    // Nothing cached at all: no ref for the revision.
    await expectError(() => resolveModel("gpt2@v7", { cacheDir: cache, offline: true }), [
      "config.json",
      "model.safetensors",
      "revision v7",
      "no refs/v7",
      "To fix",
    ]);
  });
});

test("lm hub: an unreachable network is an error naming repo, file, cache and the fix", async () => {
  await withTemp(async (cache) => {
    await withEnv(NO_HF_ENV, async () => {
      let calls = 0;
      const noNetwork = (() => {
        calls++;
        return Promise.reject(new TypeError("error sending request: network is unreachable"));
      }) as typeof fetch;
      const parts = [
        "cannot download config.json, model.safetensors of gpt2 (revision main)",
        "network is unreachable",
        cache,
        "models--gpt2",
        "To fix",
        "copy the folder models--gpt2",
      ];
      await expectError(
        () => loadModel("gpt2", { cacheDir: cache, fetch: noNetwork, progress: false }),
        parts,
      );
      assertEquals(calls, 1);
      // The real fetch against a port where nothing listens (just freed) fails as fast.
      const port = await closedPort();
      const t0 = performance.now();
      await expectError(
        () => resolveModel("gpt2", { cacheDir: cache, endpoint: `http://127.0.0.1:${port}` }),
        ["cannot download", `http://127.0.0.1:${port}`, "models--gpt2", "To fix"],
      );
      assert(performance.now() - t0 < 10_000, "a refused connection fails at once");
    });
  });
});

/** A local port that was free a moment ago: connecting to it is refused at once. */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A fake hub serving `files` of `repo` at commit `sha` through the endpoints @huggingface/hub calls. */
function fakeHub(repo: string, sha: string, files: Record<string, Uint8Array>) {
  const requests: string[] = [];
  const fetchFn = ((input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(
      typeof input === "string" ? input : input instanceof URL ? input : input.url,
    );
    requests.push(url.pathname);
    const headers = new Headers(init?.headers);
    if (url.pathname.startsWith(`/api/models/${repo}/revision/`)) {
      return Promise.resolve(Response.json({
        _id: "x",
        id: repo,
        sha,
        siblings: Object.keys(files).map((rfilename) => ({ rfilename })),
        private: false,
        downloads: 0,
        likes: 0,
        lastModified: "2024-01-01T00:00:00.000Z",
      }));
    }
    const m = new RegExp(`^/${repo}/resolve/${sha}/(.+)$`).exec(url.pathname);
    const body = m ? files[decodeURIComponent(m[1])] : undefined;
    if (!body) {
      return Promise.resolve(
        new Response("not found", { status: 404, headers: { "X-Error-Code": "EntryNotFound" } }),
      );
    }
    const etag = `"etag-${m![1].replace(/[^a-z0-9]/gi, "")}"`;
    if (headers.get("Range") === "bytes=0-0") {
      return Promise.resolve(
        new Response(body.slice(0, 1), {
          status: 206,
          headers: { "Content-Range": `bytes 0-0/${body.byteLength}`, ETag: etag },
        }),
      );
    }
    return Promise.resolve(new Response(body.slice(), { status: 200, headers: { ETag: etag } }));
  }) as typeof fetch;
  return { fetch: fetchFn, requests };
}

test("lm hub: a download lands in the cache layout Python reads, then loads offline", async () => {
  const want = await logitsOf(join(root, "gpt2"));
  const sha = "c".repeat(40);
  const files = {
    "config.json": readFileSync(join(root, "gpt2", "config.json")),
    "model.safetensors": readFileSync(join(root, "gpt2", "model.safetensors")),
    "tokenizer.json": new TextEncoder().encode("{}"),
    "README.md": new TextEncoder().encode("not fetched"),
  };
  await withTemp(async (cache) => {
    await withEnv(NO_HF_ENV, async () => {
      const hub = fakeHub("Org/tiny", sha, files);
      let drawn = "";
      const sink = { write: (s: string) => (drawn += s), isTTY: false };
      const snap = await resolveModel("Org/tiny", {
        cacheDir: cache,
        fetch: hub.fetch,
        endpoint: "https://hub.test",
        progress: sink,
      });
      const repoDir = join(cache, "models--Org--tiny");
      assertEquals(snap, join(repoDir, "snapshots", sha));
      assertEquals(readFileSync(join(repoDir, "refs", "main"), "utf8"), sha);
      for (const f of ["config.json", "model.safetensors", "tokenizer.json"]) {
        assert(lstatSync(join(snap, f)).isSymbolicLink(), `${f} is a link`);
        const target = readlinkSync(join(snap, f));
        assertEquals(target, join("..", "..", "blobs", `etag-${f.replace(/[^a-z0-9]/gi, "")}`));
        assert(readFileSync(join(snap, f)).equals(files[f as keyof typeof files]), `${f} content`);
      }
      assert(!hub.requests.some((p) => p.endsWith("README.md")), "only the files a model needs");
      assert(drawn.includes("Org/tiny model.safetensors"), `progress drawn: ${drawn}`);
      assertEquals(await logitsOf("Org/tiny", { cacheDir: cache, offline: true }), want);
    });
  });
});
