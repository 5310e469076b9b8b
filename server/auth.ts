/**
 * Optional bearer-token auth. The token comes from an environment variable (read by the entry,
 * not here). Both sides are hashed to fixed-length digests and compared with a loop that never
 * exits early, so the time taken says nothing about how much of a guess was right, nor the length.
 */
import { HttpError } from "./validate.ts";

const encoder = new TextEncoder();

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(s)));
}

/** Equal strings, in time independent of where they differ. */
export async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([digest(a), digest(b)]);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

/** Throws 401 unless the Authorization header carries `Bearer <token>`. */
export async function checkBearer(header: string | null | undefined, token: string): Promise<void> {
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header ?? "");
  if (!m) {
    throw new HttpError(
      401,
      "unauthorized",
      header ? 'Authorization must be "Bearer <token>"' : "missing Authorization: Bearer <token>",
    );
  }
  if (!(await constantTimeEqual(m[1], token))) {
    throw new HttpError(401, "unauthorized", "invalid bearer token");
  }
}
