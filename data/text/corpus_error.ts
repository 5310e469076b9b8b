/**
 * The error every corpus reader throws for bad input: it names the file and, where one applies,
 * the 1-based line or 0-based row, so the message alone finds the offending record.
 */
export class CorpusError extends Error {
  override name = "CorpusError";
  constructor(
    readonly file: string,
    readonly where: string | null,
    readonly detail: string,
  ) {
    super(`${file}${where === null ? "" : ` ${where}`}: ${detail}`);
  }
}
