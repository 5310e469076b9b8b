/**
 * README: the HTTP app around a saved dictionary, called in-process (`sae serve DIR` puts the same
 * app on a socket). Needs runs/example from examples/sae.ts.
 */
import { createApp, disposeDictionary, loadDictionary } from "../server/mod.ts";

const dict = await loadDictionary("runs/example"); // ours or a SAELens folder
const app = createApp(dict, { maxRows: 256 }); // a Hono app: a pure function of the dictionary
const res = await app.fetch(
  new Request("http://localhost/v1/encode", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ inputs: [new Array(dict.d_in).fill(0.1)], top_k: 5 }),
  }),
);
console.log(res.status, await res.json()); // 200 { features: [{ indices: [...], values: [...] }] }
disposeDictionary(dict);
