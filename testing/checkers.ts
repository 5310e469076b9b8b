/**
 * Checkers for properties of gradient masks and partitions: each throws a TestFailure naming the
 * leaf, the flat index and the offending value, so a fast-check counterexample reads on its own.
 */
import { Tensor } from "../tensor/tensor.ts";
import { broadcastTo } from "../tensor/ops/elementwise.ts";
import { treeLeaves } from "../autodiff/tree.ts";
import { valueAndGrad } from "../autodiff/grad.ts";
import { dispose, tidy } from "../tensor/scope.ts";
import type { Partition } from "../sae/crosscoder/partition.ts";
import { partitionMasks } from "../sae/crosscoder/grad_mask.ts";

export class TestFailure extends Error {
  override name = "TestFailure";
}

/** Which entries must be zero: a partition (for crosscoder records) or bool tensors per leaf name (true = must be zero). */
export type ZeroMask = Partition | Record<string, Tensor | undefined>;

function masksOf(mask: ZeroMask, like: Tensor): Record<string, Tensor | undefined> {
  if ("exclusive" in mask && "shared" in mask) {
    const m = partitionMasks(mask as Partition, like.backend);
    return { W_enc: m.enc, W_dec: m.dec };
  }
  return mask as Record<string, Tensor | undefined>;
}

/**
 * Every masked entry of the record's named leaves is exactly zero (+0 or −0; NaN fails). Returns
 * how many masked entries were checked.
 */
export async function assertMaskedZero(
  record: object,
  mask: ZeroMask,
  what = "record",
): Promise<number> {
  const first = treeLeaves(record).find((x): x is Tensor => x instanceof Tensor);
  if (!first) throw new TestFailure(`${what}: no tensors to check`);
  const masks = masksOf(mask, first);
  const owned = "exclusive" in mask;
  let checked = 0;
  try {
    for (const [name, m] of Object.entries(masks)) {
      if (!m) continue;
      const leaf = (record as Record<string, unknown>)[name];
      if (!(leaf instanceof Tensor)) {
        throw new TestFailure(`${what}: mask names "${name}" but the record has no such tensor`);
      }
      const full = tidy(() => broadcastTo(m, leaf.shape));
      const [mv, lv] = [await full.data(), await leaf.data()];
      full.dispose();
      for (let i = 0; i < lv.length; i++) {
        if (!mv[i]) continue;
        checked++;
        if (lv[i] !== 0) {
          throw new TestFailure(
            `${what}.${name}[${i}] (shape [${leaf.shape.join(", ")}]) is ${
              lv[i]
            }, must be exactly 0`,
          );
        }
      }
    }
  } finally {
    if (owned) dispose(Object.values(masks));
  }
  return checked;
}

/**
 * The gradient of `lossFn` at `params` — after `transform`, e.g. the DFC's maskGradients — is
 * exactly zero on every masked entry. Returns the gradient record (caller disposes) and the count.
 */
export async function assertGradMask<P extends object>(
  lossFn: (p: P) => Tensor,
  params: P,
  mask: ZeroMask,
  o: { transform?: (g: P) => P; what?: string } = {},
): Promise<{ grads: P; checked: number }> {
  const [value, raw] = valueAndGrad(lossFn)(params) as [Tensor, P];
  value.dispose();
  const grads = o.transform ? o.transform(raw) : raw;
  if (grads !== raw) dispose(treeLeaves(raw).filter((x) => !treeLeaves(grads).includes(x)));
  const checked = await assertMaskedZero(grads, mask, o.what ?? "gradient");
  return { grads, checked };
}

/** Every Adam first and second moment (inside chains too) is exactly zero on the masked entries. */
export async function assertMomentsMasked(opt: unknown, mask: ZeroMask): Promise<number> {
  let checked = 0, found = 0;
  const visit = async (o: unknown, at: string): Promise<void> => {
    if (Array.isArray(o)) {
      for (let i = 0; i < o.length; i++) await visit(o[i], `${at}[${i}]`);
    } else if (o && typeof o === "object" && "mu" in o && "nu" in o) {
      found++;
      const s = o as { mu: object; nu: object };
      checked += await assertMaskedZero(s.mu, mask, `${at}.mu`);
      checked += await assertMaskedZero(s.nu, mask, `${at}.nu`);
    }
  };
  await visit(opt, "opt");
  if (found === 0) {
    throw new TestFailure(
      `assertMomentsMasked: no Adam state (mu, nu) found in the optimizer state`,
    );
  }
  return checked;
}
