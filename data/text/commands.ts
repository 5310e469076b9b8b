/**
 * `sae tokenize --model M (--text "…" | --data FILE) [--json]`: a model's token ids and pieces for
 * a text, as a table (id, piece, the token's text) or one JSON object. sae/cli.ts dispatches here.
 */
import { readFile } from "node:fs/promises";
import { HubError } from "../lm/hub.ts";
import { loadTokenizer, type Tokenizer, TokenizerError } from "./tokenizer.ts";

type Flags = Record<string, string | true>;

export const TOKENIZE_HELP =
  `sae tokenize --model MODEL (--text "TEXT" | --data FILE) [--json]: token ids and pieces

  --model MODEL   a folder holding tokenizer.json (+ tokenizer_config.json, config.json), or a
                  Hugging Face repo id resolved as sae lm does (the cache, or downloaded)
  --text TEXT     the text to tokenise          --data FILE   a UTF-8 text file instead
  --json          print {"ids": [...], "pieces": [...]} instead of a table
  Ids are the text's alone: no BOS is added (the summary line says whether the model expects one).`;

class Usage extends Error {}

/** Run `sae tokenize …`; prints to stdout, errors as "sae: …"; returns the exit code. */
export async function tokenizeCommand(positional: string[], flags: Flags): Promise<number> {
  try {
    if (flags.help) {
      console.log(TOKENIZE_HELP);
      return 0;
    }
    for (const f of Object.keys(flags)) {
      if (!["model", "text", "data", "json"].includes(f)) {
        throw new Usage(`sae tokenize: unknown option --${f} (see sae tokenize --help)`);
      }
    }
    if (positional.length) {
      throw new Usage(`sae tokenize: unexpected argument ${JSON.stringify(positional[0])}`);
    }
    const model = flags.model;
    if (typeof model !== "string") throw new Usage("sae tokenize: --model needs a value");
    if ((flags.text === undefined) === (flags.data === undefined)) {
      throw new Usage("sae tokenize: give --text TEXT or --data FILE (one of them)");
    }
    if (flags.text === true || flags.data === true) {
      throw new Usage(`sae tokenize: --${flags.text === true ? "text" : "data"} needs a value`);
    }
    const text = flags.text ?? await readText(flags.data as string);
    const tok = await loadTokenizer(model);
    const ids = tok.encode(text);
    const pieces = Array.from(ids, (id) => tok.piece(id));
    console.log(
      flags.json ? JSON.stringify({ ids: Array.from(ids), pieces }) : table(tok, ids, pieces),
    );
    return 0;
  } catch (e) {
    if (e instanceof Usage) {
      console.error(`sae: ${e.message}`);
      return 2;
    }
    if (e instanceof TokenizerError || e instanceof HubError) {
      console.error(`sae: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

async function readText(path: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new Usage(`sae tokenize: --data ${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Usage(`sae tokenize: --data ${path}: not valid UTF-8`);
  }
}

/** One row per token: id, piece, and its text (JSON-quoted so spaces and newlines show). */
function table(tok: Tokenizer, ids: Int32Array, pieces: string[]): string {
  const idW = Math.max(2, ...Array.from(ids, (id) => String(id).length));
  const pieceW = Math.min(24, Math.max(5, ...pieces.map((p) => p.length)));
  const rows = [`${"id".padStart(idW)}  ${"piece".padEnd(pieceW)}  text`];
  ids.forEach((id, i) => {
    const mark = tok.specialIds.has(id) ? "  (special)" : "";
    rows.push(
      `${String(id).padStart(idW)}  ${pieces[i].padEnd(pieceW)}  ${
        JSON.stringify(tok.decode([id]))
      }${mark}`,
    );
  });
  const name = (id: number | null) => id === null ? "none" : `${id} ${tok.piece(id)}`;
  rows.push(
    `${ids.length} tokens; vocabulary ${tok.vocabSize}; BOS ${name(tok.bosId)}${
      tok.addBos ? " (the model expects it first)" : ""
    }; EOS ${name(tok.eosId)}`,
  );
  return rows.join("\n");
}
