/**
 * Tracing for reverse mode. Each `grad`/`vjp` opens a Trace; a primitive whose inputs are live
 * in an open trace is recorded there (its outputs become live too). Traces nest: the backward
 * pass of an inner trace runs while outer traces are still open, so it is itself recorded and
 * can be differentiated again (grad of grad). Constants closed over are simply not live.
 */
import { type Node, observeBind } from "../tensor/prims.ts";
import { claimTensorSlot, type Tensor } from "../tensor/tensor.ts";

export class Trace {
  open = true;
}

/** A tensor's place in the open traces: which ones it is live in, and the node that made it. */
interface TapeEntry {
  traces: Set<Trace>;
  /** Undefined for a leaf. */
  producer: Node | undefined;
}

/** Set only on tensors live in some trace; kept in the tensor's slot, which only autodiff reads. */
const tapes = claimTensorSlot<TapeEntry>("autodiff");

const stack: Trace[] = [];

/** Called for every bound primitive (and by customVjp for its node): records it where live. */
export function record(node: Node): void {
  if (stack.length === 0) return;
  let traces: Set<Trace> | undefined;
  for (const x of node.inputs) {
    const tape = tapes.get(x);
    if (!tape) continue;
    for (const t of tape.traces) if (t.open) (traces ??= new Set()).add(t);
  }
  if (!traces) return;
  for (const o of node.outputs) tapes.set(o, { traces, producer: node });
}

/** Whether `x` is live in any trace (open, or closed without reaching it). */
export const isTraced = (x: Tensor): boolean => tapes.get(x) !== undefined;

// Loading autodiff is what turns tracing on: the tensor layer calls back into it on every bind.
// With no trace on the stack (inside `untraced`: a customVjp's forward) nothing can be recorded,
// so nothing is watched and fused kernels may run there.
observeBind({ bound: record, watches: (x) => stack.length > 0 && isTraced(x) });

/** Open a trace and make `leaf` live in it (leaves must be fresh aliases the caller owns). */
export function openTrace(): Trace {
  const t = new Trace();
  stack.push(t);
  return t;
}

export function markLeaf(trace: Trace, leaf: Tensor): void {
  const tape = tapes.get(leaf);
  if (tape) tape.traces.add(trace);
  else tapes.set(leaf, { traces: new Set([trace]), producer: undefined });
}

/** Run `fn` with no trace recording (the forward pass of a customVjp function). */
export function untraced<T>(fn: () => T): T {
  const saved = stack.splice(0, stack.length);
  try {
    return fn();
  } finally {
    stack.push(...saved);
  }
}

/** The recorded graph between a trace's leaves and its outputs, in topological order. */
export interface Tape {
  steps: { node: Node; live: boolean[] }[];
  leaves: Tensor[];
}

/**
 * Close `trace`: collect the nodes that lead from `leaves` to `outputs`, then forget the trace on
 * every tensor (and on `alsoForget`, e.g. aux outputs) so nothing keeps the graph alive once the
 * tape is dropped.
 */
export function closeTrace(
  trace: Trace,
  leaves: Tensor[],
  outputs: Tensor[],
  alsoForget: Tensor[] = [],
): Tape {
  const i = stack.lastIndexOf(trace);
  if (i >= 0) stack.splice(i, 1);
  trace.open = false;
  const isLeaf = new Set(leaves);
  const liveIn = (x: Tensor) => tapes.get(x)?.traces.has(trace) ?? false;
  const done = new Set<Node>();
  const order: Node[] = [];
  // Iterative post-order DFS: deep graphs (long loops inside a loss) must not overflow the stack.
  // A node is marked when it is emitted, not when pushed: a node reached again from a later
  // consumer is pushed again and expanded there, so it is emitted before every consumer (a
  // push-time mark let a consumer be emitted before its producer, and the backward pass then
  // dropped that consumer's cotangent). Stale duplicates are skipped when they surface.
  const todo: { node: Node; expanded: boolean }[] = [];
  const push = (x: Tensor) => {
    if (isLeaf.has(x) || !liveIn(x)) return;
    const n = tapes.get(x)!.producer;
    if (n && !done.has(n)) todo.push({ node: n, expanded: false });
  };
  for (const o of outputs) push(o);
  while (todo.length) {
    const top = todo[todo.length - 1];
    if (top.expanded) {
      todo.pop();
      done.add(top.node);
      order.push(top.node);
    } else if (done.has(top.node)) {
      todo.pop();
    } else {
      top.expanded = true;
      for (const x of top.node.inputs) push(x);
    }
  }
  const steps = order.map((node) => ({ node, live: node.inputs.map(liveIn) }));
  for (const { node } of steps) forget(node.outputs, trace);
  forget(leaves, trace);
  forget(outputs, trace);
  forget(alsoForget, trace);
  return { steps, leaves };
}

function forget(xs: Tensor[], trace: Trace): void {
  for (const x of xs) {
    const traces = tapes.get(x)?.traces;
    if (!traces) continue;
    traces.delete(trace);
    if (traces.size === 0) tapes.set(x, undefined);
  }
}
