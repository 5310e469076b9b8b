/** The HTTP server: the `sparsecoder/server` entry (loads hono, apache-arrow). Re-exports only. */
export { type AppOptions, createApp, DEFAULTS } from "./app.ts";
export { type Asset, type Assets, loadAssets, readUplot } from "./assets.ts";
export { type Batcher, type BatcherOptions, type BatcherStats, createBatcher } from "./batcher.ts";
export {
  decodeRows,
  disposeDictionary,
  encodeRows,
  loadDictionary,
  type ServedDictionary,
  type SparseRow,
  type TopExample,
} from "./dictionary.ts";
export { openApiDocument } from "./openapi.ts";
export { onShutdownSignal, type RunningServer, type ServeOptions, startServer } from "./serve.ts";
export { serveCommand } from "./command.ts";
export { HttpError, type Limits } from "./validate.ts";
