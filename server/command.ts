/**
 * `sae serve DIR`: load the dictionary, build the app, listen (127.0.0.1 unless told otherwise),
 * and on SIGINT/SIGTERM stop accepting, finish in-flight requests and return. cli.ts
 * dispatches here; usage errors are ConfigErrors, which the CLI prints and exits with 2.
 */
import { readEnv } from "../tensor/platform/env.ts";
import { selectBackend } from "../tensor/webgpu/mod.ts";
import { ConfigError } from "../sae/config.ts";
import { createApp, DEFAULTS } from "./app.ts";
import { loadAssets } from "./assets.ts";
import { loadDictionary } from "./dictionary.ts";
import { loadPrompter } from "./prompt.ts";
import { loadTokenizer } from "../data/text/tokenizer.ts";
import { onShutdownSignal, startServer } from "./serve.ts";

export const SERVE_HELP =
  `sae serve DIR: serve a dictionary over HTTP (JSON and Arrow IPC), with a dashboard at /

  --port N             port (default 8080; 0 picks a free one)
  --host ADDR          address to listen on (default 127.0.0.1; 0.0.0.0 to expose it)
  --backend NAME       backend to compute on (default: $SPARSECODER_BACKEND or cpu)
  --max-body-mb X      largest request body in MiB (default 16)
  --max-rows N         most rows per request (default 1024)
  --timeout-ms N       time per request, body upload included (default 30000)
  --batch-wait-ms X    micro-batching: longest wait for other requests (default 2)
  --max-batch-rows N   micro-batching: most rows per backend call (default 256)
  --cors ORIGINS       comma-separated origins allowed by CORS, or * (default: CORS off)
  --model M            a model folder (or Hub id in the cache) whose hook the dictionary reads:
                       enables the prompt view (POST /v1/prompt) and gives feature pages text;
                       a crosscoder over models takes --model A,B (one tokenizer between them)
  --max-prompt-tokens N  longest prompt in tokens (default: the model's context)
  --token-env NAME     require "Authorization: Bearer $NAME" on /v1/* (default variable
                       SAE_SERVER_TOKEN; auth is on when it is set and non-empty)

Optional files in DIR feed the dashboard: eval.json, feature_density.npy [d_sae],
top_examples.json, sample_inputs.npy [n, d_in] (a crosscoder's [n, n_inputs·d_in]), features/ (what sae features DIR saves:
feature pages with contexts, histograms, logit tables, and search by token; docs/server.md).`;

type Flags = Record<string, string | true>;

function value(flags: Flags, name: string): string | undefined {
  const v = flags[name];
  if (v === true) throw new ConfigError(`--${name} needs a value`);
  return v;
}

function number(flags: Flags, name: string, min: number, int: boolean): number | undefined {
  const v = value(flags, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n))) {
    throw new ConfigError(
      `--${name} must be ${int ? "an integer" : "a number"} >= ${min}, got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

const KNOWN = [
  "port",
  "host",
  "backend",
  "max-body-mb",
  "max-rows",
  "timeout-ms",
  "batch-wait-ms",
  "max-batch-rows",
  "cors",
  "token-env",
  "model",
  "max-prompt-tokens",
];

/** Runs until SIGINT/SIGTERM (or `signal` aborts); resolves after a graceful stop. */
export async function serveCommand(
  dir: string | undefined,
  flags: Flags,
  opts: { signal?: AbortSignal; onListen?: (url: string) => void } = {},
): Promise<void> {
  for (const f of Object.keys(flags)) {
    if (!KNOWN.includes(f)) {
      throw new ConfigError(`sae serve: unknown option --${f} (see sae serve --help)`);
    }
  }
  if (!dir) throw new ConfigError("sae serve: missing the dictionary folder (sae serve DIR)");
  const port = number(flags, "port", 0, true) ?? 8080;
  if (port > 65535) throw new ConfigError(`--port must be at most 65535, got ${port}`);
  const backend = value(flags, "backend");
  if (backend) {
    // selectBackend acquires an async device (webgpu) first; its error names what exists and why a
    // backend cannot run here. As a ConfigError the CLI exits with 2.
    try {
      await selectBackend(backend, "sae serve --backend");
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  const tokenVar = value(flags, "token-env") ?? "SAE_SERVER_TOKEN";
  const token = readEnv(tokenVar) || null;
  const maxBodyBytes = Math.floor(
    (number(flags, "max-body-mb", 0.001, false) ?? DEFAULTS.maxBodyBytes / (1 << 20)) * (1 << 20),
  );
  const cors = value(flags, "cors");
  const model = value(flags, "model");
  const maxPromptTokens = number(flags, "max-prompt-tokens", 1, true);
  if (maxPromptTokens !== undefined && !model) {
    throw new ConfigError("--max-prompt-tokens needs --model M");
  }
  // The model's tokenizer also gives the feature pages their text.
  const first = model?.split(",")[0];
  const tokenizer = first
    ? await loadTokenizer(first).catch((e) => {
      throw new ConfigError(`--model ${first}: ${(e as Error).message}`);
    })
    : undefined;
  const dict = await loadDictionary(dir, { tokenizer });
  const prompter = model
    ? await loadPrompter(dict.saved, model, { tokenizer, maxTokens: maxPromptTokens })
    : undefined;
  const app = createApp(dict, {
    maxBodyBytes,
    maxRows: number(flags, "max-rows", 1, true) ?? DEFAULTS.maxRows,
    requestTimeoutMs: number(flags, "timeout-ms", 1, true) ?? DEFAULTS.requestTimeoutMs,
    batchWaitMs: number(flags, "batch-wait-ms", 0, false) ?? DEFAULTS.batchWaitMs,
    maxBatchRows: number(flags, "max-batch-rows", 1, true) ?? DEFAULTS.maxBatchRows,
    token,
    ...(cors ? { corsOrigins: cors.split(",").map((s) => s.trim()).filter(Boolean) } : {}),
    assets: await loadAssets(),
    ...(prompter ? { prompter } : {}),
  });
  const server = startServer(app.fetch, {
    port,
    hostname: value(flags, "host") ?? "127.0.0.1",
    maxBodyBytes,
  });
  const stop = (why: string) => {
    console.error(`sae serve: ${why}: finishing in-flight requests, then stopping`);
    void server.stop();
  };
  // Handlers go in before "listening" is printed: a supervisor may signal as soon as it reads it.
  const removeSignals = onShutdownSignal(stop);
  opts.signal?.addEventListener("abort", () => stop("stop requested"), { once: true });
  const { cfg } = dict.saved;
  console.error(
    `sae serve: ${cfg.arch} dictionary ${
      dict.inputs > 1 ? `n_inputs=${dict.inputs} ` : ""
    }d_in=${cfg.d_in} d_sae=${cfg.d_sae} on ${dict.backend}${
      prompter ? `, prompts through ${model}` : ""
    }${
      dict.features ? `, feature statistics of ${dict.features.scanned} tokens` : ""
    }; listening on ${server.url} (auth ${token ? `on, token from $${tokenVar}` : "off"})`,
  );
  opts.onListen?.(server.url);
  try {
    await server.finished;
  } finally {
    removeSignals();
  }
  console.error("sae serve: stopped");
}
