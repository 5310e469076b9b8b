/**
 * JSON lines (`.jsonl`, optionally Zstandard-compressed): one JSON object per line; `field` names
 * the text. A string is a document's text; a list of integers is a pre-tokenised document's ids;
 * null is an empty document. Blank lines are not records and are passed over. `labelField`, when
 * given, is carried as each document's `label` (a string or a number; any other value is an error).
 */
import type { CorpusDocument } from "./corpus.ts";
import { CorpusError } from "./corpus_error.ts";
import { type LineReadOptions, textLines } from "./corpus_text.ts";
import { tokenIds } from "./token_ids.ts";

export async function* jsonlDocuments(
  file: string,
  field: string,
  opts: LineReadOptions,
  labelField?: string,
): AsyncGenerator<CorpusDocument> {
  for await (const block of textLines(file, opts)) {
    for (let i = 0; i < block.texts.length; i++) {
      const text = block.texts[i], line = block.firstLine + i;
      if (/^\s*$/.test(text)) continue;
      const where = `line ${line}`;
      let record: unknown;
      try {
        record = JSON.parse(text);
      } catch (e) {
        throw new CorpusError(file, where, `malformed JSON: ${(e as Error).message}`);
      }
      if (typeof record !== "object" || record === null || Array.isArray(record)) {
        throw new CorpusError(
          file,
          where,
          `expected a JSON object with a ${JSON.stringify(field)} field, found ${
            Array.isArray(record) ? "an array" : record === null ? "null" : typeof record
          }`,
        );
      }
      if (!Object.hasOwn(record, field)) {
        const keys = Object.keys(record);
        throw new CorpusError(
          file,
          where,
          `no field ${JSON.stringify(field)}; the object has ${
            keys.length === 0
              ? "no fields"
              : "fields " + keys.slice(0, 20).map((k) => JSON.stringify(k)).join(", ") +
                (keys.length > 20 ? `, … (${keys.length} in all)` : "")
          } (choose one with the field option)`,
        );
      }
      const value = (record as Record<string, unknown>)[field];
      let label: { label?: string } = {};
      if (labelField !== undefined) {
        const l = (record as Record<string, unknown>)[labelField];
        if (typeof l !== "string" && typeof l !== "number") {
          throw new CorpusError(
            file,
            where,
            `label field ${JSON.stringify(labelField)} is ${
              l === undefined ? "missing" : JSON.stringify(l)
            }; expected a string or a number`,
          );
        }
        label = { label: String(l) };
      }
      if (typeof value === "string") yield { text: value, file, line, ...label };
      else if (value === null) yield { text: "", file, line, ...label };
      else if (Array.isArray(value)) {
        yield {
          ids: tokenIds(value, (msg) => new CorpusError(file, where, `${field}: ${msg}`)),
          file,
          line,
          ...label,
        };
      } else {
        throw new CorpusError(
          file,
          where,
          `field ${
            JSON.stringify(field)
          } is ${typeof value}; expected a string or a list of token ids`,
        );
      }
    }
  }
}
