/** The HTTP server, re-exported by ../mod.ts as `server`. Re-exports only. */
export { type AppOptions, createApp, DEFAULTS } from "./app.ts";
export { type Asset, type Assets, loadAssets, readUplot } from "./assets.ts";
export { type Batcher, type BatcherOptions, type BatcherStats, createBatcher } from "./batcher.ts";
export { type ServedDictionary, type SparseRow, type TopExample, decodeRows, disposeDictionary, encodeRows, loadDictionary } from "./dictionary.ts";
export { openApiDocument } from "./openapi.ts";
export { type RunningServer, type ServeOptions, onShutdownSignal, startServer } from "./serve.ts";
export { serveCommand } from "./command.ts";
export { HttpError, type Limits } from "./validate.ts";
