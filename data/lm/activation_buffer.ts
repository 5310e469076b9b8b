/**
 * Activations straight from a language model, for training without a store: dictionary_learning's
 * ActivationBuffer. The buffer holds the activations of about `contexts` token rows (one buffer row
 * per kept token), serves batches drawn uniformly at random without replacement from the unread
 * rows (seeded xoshiro128**, the same under Deno and Bun), and refills from the token rows once half
 * has been read. A new pass over the rows (epoch) starts only when fewer than a batch is left, so
 * every kept token of a pass is served exactly once before the next pass mixes in.
 *
 * Exact resume: which (row, position) fills which slot, and which slot each batch draws, depend only
 * on the token ids and the seed, never on the activations. Batch i is therefore found by replaying
 * that bookkeeping on ids alone (no model) up to i, then running the model only on the rows whose
 * tokens are still unread. The model always runs on the same fixed groups of `modelBatch` rows (rows
 * g·mb … g·mb + mb − 1 of a pass), so an activation recomputed after a resume is bitwise the one the
 * uninterrupted run computed.
 *
 * Several models (`alongside`, a crosscoder across models: a base and a finetuned model) run on the
 * same token rows in the same groups, and a row is [M, d]: each model's activation at the one hook,
 * in model order, each bitwise what that model alone gives.
 *
 * Reading text is asynchronous and DataSource.batch is not: `prepare(index, size)` does the work
 * (reads rows, runs the model, draws) and `batch(index, size)` hands the result over. Indices from
 * HELD_OUT_START on are evaluation batches read in row order from a separate pass, unshuffled.
 */
import type { TokenRow, TokenRowStream } from "../text/token_rows.ts";
import { type Batch, type DataSource, HELD_OUT_START } from "../sources.ts";
import { rng } from "../shuffle_buffer.ts";
import { adoptHostArray } from "../safetensors.ts";
import { tensor } from "../../tensor/ops/create.ts";
import { tidy } from "../../tensor/scope.ts";
import { hookNames, type LanguageModel, modelInfo, runWithCache } from "./model.ts";

export interface ActivationBufferOptions {
  model: LanguageModel;
  /** How the model was named (folder or repo id): for describe() and identity. */
  modelName: string;
  /**
   * Further models run on the same token rows (they must share the tokenizer): rows are then
   * [M, d], model `model` first, all at the one hook of `hooks`.
   */
  alongside?: readonly { model: LanguageModel; name: string }[];
  rows: TokenRowStream;
  /** Hook points read: one gives rows [d]; several (equal widths) give rows [L, d]. */
  hooks: readonly string[];
  /** A transcoder's target: batches then carry y [n, d_out] from this hook at the same tokens. */
  targetHook?: string;
  /** Token rows whose activations the buffer holds: capacity = contexts · context buffer rows. */
  contexts: number;
  /** Token rows per forward pass (default 8). */
  modelBatch?: number;
  seed?: number;
  /** Token ids whose positions are never served (special tokens: BOS, EOS, padding). */
  exclude?: ReadonlySet<number>;
}

/** Where each row of the latest batch came from: pass, row of that pass, position in the row. */
export interface Origin {
  epoch: Int32Array;
  row: Int32Array;
  position: Int32Array;
}

export interface BufferStats {
  /** Forward passes run, token rows they covered, and their wall time (model and readback). */
  forwards: number;
  contextsRun: number;
  forwardSeconds: number;
  /** Refills so far, and the unread rows now. */
  refills: number;
  unread: number;
  capacity: number;
  /** The pass over the token rows the buffer is reading (0-based). */
  epoch: number;
}

export type LiveSource = DataSource & {
  prepare(index: number, size: number): Promise<void>;
  identity: Record<string, unknown>;
  stats(): BufferStats;
  /** Where the rows of the latest prepared batch came from. */
  origin(): Origin | null;
  /** Stop reading (close the token rows' current pass). */
  close(): Promise<void>;
};

interface Group {
  epoch: number;
  start: number;
  rows: RowInfo[];
  /** All rows of the group have been read (the pass moved past it or ended). */
  complete: boolean;
  /** Activations per read hook (and the target last), [rows, T, w] flattened; null when not held. */
  acts: Float32Array[] | null;
}

interface RowInfo {
  epoch: number;
  index: number;
  ids: Int32Array;
  /** Positions served: inside the row's length and not excluded. */
  kept: Int32Array;
  group: Group;
}

interface Prepared {
  index: number;
  size: number;
  x: Float32Array;
  y: Float32Array | null;
  origin: Origin;
}

const DEFAULT_MODEL_BATCH = 8;

/** A DataSource of `hooks`' activations of `model` over token rows, through a shuffled buffer. */
export function activationBuffer(o: ActivationBufferOptions): LiveSource {
  return new ActivationBuffer(o).source();
}

class ActivationBuffer {
  private readonly T: number;
  private readonly L: number;
  private readonly w: number;
  private readonly wy: number;
  private readonly mb: number;
  private readonly capacity: number;
  private readonly models: LanguageModel[];
  private readonly modelNames: string[];
  /** The hooks each model is run for: the first model's reads and target, the others' one hook. */
  private readonly names: string[][];
  /** Where each input (hook, or model) and the target sit in the forward's outputs. */
  private readonly hookAt: number[];
  private readonly targetAt: number;
  private readonly exclude: ReadonlySet<number>;
  private readonly vocab: number;
  // Slots: ids of unread slots first (`count` of them), then free ones; a slot's row and position.
  private readonly x: Float32Array;
  private readonly y: Float32Array | null;
  private readonly slots: Int32Array;
  private readonly slotRow: (RowInfo | null)[];
  private readonly slotPos: Int32Array;
  private readonly slotHas: Uint8Array;
  private count = 0;
  private missing = 0;
  private next32: () => number = () => 0;
  // The token rows: the current pass, rows read but not yet loaded, the group being read.
  private it: AsyncIterator<TokenRow> | null = null;
  private epoch = -1;
  private passRows = 0;
  private passKept = 0;
  private passEnded = false;
  private queue: RowInfo[] = [];
  private reading: Group | null = null;
  private cached: Group | null = null;
  // Which batch comes next, of which size.
  private position = 0;
  private size = 0;
  private prepared: Prepared | null = null;
  private stats = { forwards: 0, contextsRun: 0, forwardSeconds: 0, refills: 0 };

  constructor(private readonly o: ActivationBufferOptions) {
    const { hooks, rows } = o;
    this.T = rows.context;
    this.models = [o.model, ...(o.alongside ?? []).map((a) => a.model)];
    this.modelNames = [o.modelName, ...(o.alongside ?? []).map((a) => a.name)];
    const M = this.models.length;
    const where = `activation buffer (${this.modelNames.join(" + ")} on ${rows.describe()})`;
    if (!hooks.length) throw new RangeError(`${where}: no hook point given`);
    if (M > 1 && (hooks.length > 1 || o.targetHook)) {
      throw new RangeError(
        `${where}: several models are read at one hook each (rows [models, d]); got hooks ${
          [...hooks, ...(o.targetHook ? [o.targetHook] : [])].join(", ")
        }`,
      );
    }
    this.models.forEach((model, m) => {
      const known = new Set(hookNames(model));
      for (const h of [...hooks, ...(o.targetHook ? [o.targetHook] : [])]) {
        if (!known.has(h)) {
          throw new RangeError(
            `${where}: ${h} is not a hook point of ${
              M > 1 ? `${this.modelNames[m]}, a ` : "this "
            }${model.family} model (sae lm info lists them)`,
          );
        }
      }
    });
    const maxPos = Math.min(...this.models.map((m) => modelInfo(m).maxPositions));
    if (!Number.isInteger(this.T) || this.T < 1 || this.T > maxPos) {
      throw new RangeError(
        `${where}: context ${this.T} must be an integer in [1, ${maxPos}] (the model's positions)`,
      );
    }
    for (
      const [name, v] of [["contexts", o.contexts], ["modelBatch", o.modelBatch ?? 1]] as const
    ) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new RangeError(`${where}: ${name} must be a positive integer, got ${v}`);
      }
    }
    this.mb = o.modelBatch ?? DEFAULT_MODEL_BATCH;
    const first = [...new Set([...hooks, ...(o.targetHook ? [o.targetHook] : [])])];
    this.names = [first, ...this.models.slice(1).map(() => [hooks[0]])];
    this.hookAt = M > 1
      ? this.models.map((_, m) => (m === 0 ? first.indexOf(hooks[0]) : first.length + m - 1))
      : hooks.map((h) => first.indexOf(h));
    this.targetAt = o.targetHook ? first.indexOf(o.targetHook) : -1;
    // Widths from a one-token pass (heads flattened: hook_z [b, p, h, hd] reads as h·hd).
    const widthsOf = (m: number): Record<string, number> =>
      tidy(() => {
        const { cache } = runWithCache(
          this.models[m],
          tensor(new Int32Array(1), { shape: [1, 1] }),
          this.names[m],
          { stopEarly: true },
        );
        return Object.fromEntries(
          this.names[m].map((h) => [h, cache[h].shape.slice(2).reduce((a, b) => a * b, 1)]),
        );
      });
    const widths = widthsOf(0);
    this.L = M > 1 ? M : hooks.length;
    this.w = widths[hooks[0]];
    for (let m = 1; m < M; m++) {
      const wm = widthsOf(m)[hooks[0]];
      if (wm !== this.w) {
        throw new RangeError(
          `${where}: models read together must have equal widths at ${hooks[0]}: ${
            this.modelNames[0]
          } has ${this.w}, ${this.modelNames[m]} has ${wm}`,
        );
      }
    }
    const odd = hooks.find((h) => widths[h] !== this.w);
    if (odd) {
      throw new RangeError(
        `${where}: hooks read together must have equal widths: ${
          hooks[0]
        } has ${this.w}, ${odd} has ${widths[odd]}`,
      );
    }
    this.wy = o.targetHook ? widths[o.targetHook] : 0;
    this.capacity = o.contexts * this.T;
    this.exclude = o.exclude ?? new Set();
    this.vocab = Math.min(...this.models.map((m) => m.cfg.vocabSize));
    this.x = new Float32Array(this.capacity * this.L * this.w);
    this.y = o.targetHook ? new Float32Array(this.capacity * this.wy) : null;
    this.slots = Int32Array.from({ length: this.capacity }, (_, i) => i);
    this.slotRow = new Array(this.capacity).fill(null);
    this.slotPos = new Int32Array(this.capacity);
    this.slotHas = new Uint8Array(this.capacity);
  }

  source(): LiveSource {
    const o = this.o;
    const identity = {
      kind: "model",
      model: o.modelName,
      ...(this.models.length > 1 ? { models: this.modelNames } : {}),
      hooks: [...o.hooks],
      ...(o.targetHook ? { target_hook: o.targetHook } : {}),
      data: o.rows.describe(),
      context: this.T,
      buffer_contexts: o.contexts,
      model_batch: this.mb,
      seed: o.seed ?? 0,
      exclude: [...this.exclude].sort((a, b) => a - b),
    };
    return {
      prepare: (index, size) => this.prepare(index, size),
      batch: (index, size) => this.batch(index, size),
      describe: () =>
        `${this.modelNames.join(" + ")} ${o.hooks.join(",")}${
          o.targetHook ? ` → ${o.targetHook}` : ""
        } on ${o.rows.describe()} (live: ${o.contexts} contexts of ${this.T} tokens, refilled at half)`,
      width: this.w,
      ...(this.L > 1 ? { layers: this.L } : {}),
      ...(o.targetHook ? { targetWidth: this.wy } : {}),
      identity,
      stats: () => ({
        ...this.stats,
        unread: this.count,
        capacity: this.capacity,
        epoch: Math.max(0, this.epoch),
      }),
      origin: () => this.prepared?.origin ?? null,
      close: () => this.reset(0),
    };
  }

  private async prepare(index: number, size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new RangeError(`activation buffer: batch size must be a positive integer, got ${size}`);
    }
    if (this.prepared?.index === index && this.prepared.size === size) return;
    if (index >= HELD_OUT_START) {
      this.prepared = { index, size, ...(await this.heldOut(index - HELD_OUT_START, size)) };
      return;
    }
    if (size > this.capacity) {
      throw new RangeError(
        `activation buffer: a batch of ${size} rows exceeds the buffer's ${this.capacity} (${this.o.contexts} contexts of ${this.T} tokens): raise the buffer's contexts`,
      );
    }
    // Batch i of size n is the i-th draw of a sequence of draws of n: replay when it cannot follow on.
    if (index < this.position || size !== this.size) await this.reset(size);
    while (this.position < index) await this.step(size, false);
    this.prepared = { index, size, ...(await this.step(size, true)) };
  }

  private batch(index: number, size: number): Batch {
    const p = this.prepared;
    if (!p || p.index !== index || p.size !== size) {
      throw new Error(
        `activation buffer: batch ${index} of ${size} rows was not prepared: await source.prepare(${index}, ${size}) first (runTraining does)`,
      );
    }
    const x = adoptHostArray(
      p.x.slice(),
      "f32",
      this.L > 1 ? [size, this.L, this.w] : [size, this.w],
    );
    return p.y ? { x, y: adoptHostArray(p.y.slice(), "f32", [size, this.wy]) } : { x };
  }

  private async reset(size: number): Promise<void> {
    await this.it?.return?.();
    this.it = null;
    this.epoch = -1;
    this.passRows = this.passKept = 0;
    this.passEnded = false;
    this.queue = [];
    this.reading = this.cached = null;
    this.count = this.missing = 0;
    this.slotRow.fill(null);
    this.slotHas.fill(0);
    this.next32 = rng(this.o.seed ?? 0);
    this.position = 0;
    this.size = size;
  }

  /** One draw of n rows; with `compute` false only the bookkeeping moves (no model, no copies). */
  private async step(n: number, compute: boolean) {
    // Recovery first: the group it computes last is the one a refill goes on reading.
    if (compute && this.missing > 0) await this.recover();
    if (this.count * 2 <= this.capacity || this.count < n) await this.refill(n, compute);
    const out = this.draw(n, compute);
    this.position++;
    return out;
  }

  /**
   * Load whole token rows into free slots until the next would not fit. A new pass starts only when
   * fewer than `need` rows are unread (each kept token once per epoch).
   */
  private async refill(need: number, compute: boolean): Promise<void> {
    this.stats.refills++;
    for (;;) {
      if (this.queue.length === 0 && !(await this.readRow())) {
        if (this.count >= need) return;
        if (this.it && this.passKept === 0) {
          throw new RangeError(
            `activation buffer: ${this.o.rows.describe()} has no token left to serve (every position excluded or padding)`,
          );
        }
        await this.startPass();
        continue;
      }
      const row = this.queue[0];
      if (this.count + row.kept.length > this.capacity) return;
      this.queue.shift();
      if (compute && row.kept.length && !row.group.acts) await this.compute(row.group);
      for (const p of row.kept) {
        const slot = this.slots[this.count++];
        this.slotRow[slot] = row;
        this.slotPos[slot] = p;
        if (compute) this.copyIn(slot, row, p);
        else {
          this.slotHas[slot] = 0;
          this.missing++;
        }
      }
    }
  }

  private async startPass(): Promise<void> {
    await this.it?.return?.();
    this.it = this.o.rows.rows()[Symbol.asyncIterator]();
    this.epoch++;
    this.passRows = this.passKept = 0;
    this.passEnded = false;
    if (this.reading) this.reading.complete = true;
    this.reading = null;
  }

  /** Read one row of the current pass into the queue; false when the pass has ended (or none began). */
  private async readRow(): Promise<boolean> {
    if (!this.it || this.passEnded) return false;
    const r = await this.it.next();
    if (r.done) {
      this.passEnded = true;
      if (this.reading) this.reading.complete = true;
      if (this.passRows === 0) {
        throw new RangeError(`activation buffer: ${this.o.rows.describe()} holds no token rows`);
      }
      return false;
    }
    const index = this.passRows++;
    const ids = this.checkRow(r.value, index);
    const start = Math.floor(index / this.mb) * this.mb;
    if (!this.reading || this.reading.start !== start) {
      if (this.reading) this.reading.complete = true;
      this.reading = { epoch: this.epoch, start, rows: [], complete: false, acts: null };
    }
    const row: RowInfo = {
      epoch: this.epoch,
      index,
      ids,
      kept: this.keptPositions(ids, r.value.length),
      group: this.reading,
    };
    this.reading.rows.push(row);
    this.passKept += row.kept.length;
    this.queue.push(row);
    return true;
  }

  private checkRow(row: TokenRow, index: number): Int32Array {
    const where = `activation buffer: ${this.o.rows.describe()} row ${index}`;
    if (!(row.ids instanceof Int32Array) || row.ids.length !== this.T) {
      throw new RangeError(
        `${where}: expected ${this.T} int32 token ids, got ${row.ids?.length ?? "none"}`,
      );
    }
    const bad = row.ids.findIndex((v) => v < 0 || v >= this.vocab);
    if (bad >= 0) {
      throw new RangeError(
        `${where} position ${bad} holds token ${
          row.ids[bad]
        }, outside the vocabulary [0, ${this.vocab})`,
      );
    }
    if (
      row.length !== undefined &&
      (!Number.isInteger(row.length) || row.length < 0 || row.length > this.T)
    ) {
      throw new RangeError(`${where}: length ${row.length} is not in [0, ${this.T}]`);
    }
    return row.ids.slice();
  }

  private keptPositions(ids: Int32Array, length = this.T): Int32Array {
    const kept: number[] = [];
    for (let p = 0; p < length; p++) if (!this.exclude.has(ids[p])) kept.push(p);
    return Int32Array.from(kept);
  }

  /** Run the model on a whole group (reading its remaining rows first); the latest group is held. */
  private async compute(g: Group): Promise<void> {
    while (!g.complete && g === this.reading && (await this.readRow()));
    g.complete = true;
    if (this.cached && this.cached !== g) this.cached.acts = null;
    g.acts = this.forward(g.rows.map((r) => r.ids));
    this.cached = g;
  }

  /**
   * Activations of each asked hook (target among the first model's), then the other models' hook,
   * for rows of ids, [B·T·w] flattened, in f32.
   */
  private forward(rows: Int32Array[]): Float32Array[] {
    const B = rows.length, T = this.T, ids = new Int32Array(B * T);
    rows.forEach((r, i) => ids.set(r, i * T));
    this.stats.forwards++;
    this.stats.contextsRun += B;
    const started = performance.now();
    const acts = this.models.flatMap((model, m) =>
      tidy(() => {
        const { cache } = runWithCache(model, tensor(ids, { shape: [B, T] }), this.names[m], {
          stopEarly: true,
        });
        // A copy: the tensors' storage is released when the scope ends.
        return this.names[m].map((h) =>
          Float32Array.from(cache[h].dataSync() as ArrayLike<number>)
        );
      })
    );
    this.stats.forwardSeconds += (performance.now() - started) / 1000;
    return acts;
  }

  private copyIn(slot: number, row: RowInfo, p: number): void {
    const acts = row.group.acts!, w = this.w, L = this.L;
    const at = (row.index - row.group.start) * this.T + p;
    for (let l = 0; l < L; l++) {
      this.x.set(acts[this.hookAt[l]].subarray(at * w, (at + 1) * w), (slot * L + l) * w);
    }
    if (this.y) {
      const wy = this.wy;
      this.y.set(acts[this.targetAt].subarray(at * wy, (at + 1) * wy), slot * wy);
    }
    this.slotHas[slot] = 1;
  }

  /** After a replay: run the model on the groups of the unread rows that have no activations. */
  private async recover(): Promise<void> {
    const byGroup = new Map<Group, number[]>();
    for (let i = 0; i < this.count; i++) {
      const slot = this.slots[i];
      if (this.slotHas[slot]) continue;
      const g = this.slotRow[slot]!.group;
      const list = byGroup.get(g);
      if (list) list.push(slot);
      else byGroup.set(g, [slot]);
    }
    const order = [...byGroup.keys()].sort((a, b) => a.epoch - b.epoch || a.start - b.start);
    for (const g of order) {
      if (!g.acts) await this.compute(g);
      for (const slot of byGroup.get(g)!) {
        this.copyIn(slot, this.slotRow[slot]!, this.slotPos[slot]);
      }
    }
    this.missing = 0;
  }

  /** n rows drawn uniformly without replacement from the unread ones. */
  private draw(n: number, compute: boolean): Omit<Prepared, "index" | "size"> {
    const rows = Math.min(n, this.count);
    if (rows < n) throw new Error(`activation buffer: only ${rows} rows for a batch of ${n}`);
    const lw = this.L * this.w, wy = this.wy;
    const x = new Float32Array(compute ? n * lw : 0);
    const y = this.y && compute ? new Float32Array(n * wy) : null;
    const origin: Origin = {
      epoch: new Int32Array(n),
      row: new Int32Array(n),
      position: new Int32Array(n),
    };
    for (let j = 0; j < n; j++) {
      // Uniform in [0, count): multiply-high of a 32-bit draw, as the store's shuffle buffer does.
      const r = Math.floor((this.next32() * this.count) / 4294967296);
      const slot = this.slots[r], row = this.slotRow[slot]!;
      if (compute) {
        x.set(this.x.subarray(slot * lw, (slot + 1) * lw), j * lw);
        if (y) y.set(this.y!.subarray(slot * wy, (slot + 1) * wy), j * wy);
      } else if (!this.slotHas[slot]) this.missing--;
      origin.epoch[j] = row.epoch;
      origin.row[j] = row.index;
      origin.position[j] = this.slotPos[slot];
      this.slotRow[slot] = null;
      this.slotHas[slot] = 0;
      const last = --this.count;
      this.slots[r] = this.slots[last];
      this.slots[last] = slot;
    }
    return { x, y, origin };
  }

  /**
   * Evaluation batch k: kept tokens of consecutive rows from row k·⌈size/T⌉ of a separate pass
   * (wrapping round), in order, unshuffled; the model runs on groups of modelBatch rows.
   */
  private async heldOut(k: number, size: number): Promise<Omit<Prepared, "index" | "size">> {
    let skip = k * Math.ceil(size / this.T);
    const picked: { ids: Int32Array; kept: Int32Array; index: number }[] = [];
    let got = 0;
    while (got < size) {
      let seen = 0, looked = 0;
      for await (const r of this.o.rows.rows()) {
        const index = seen++;
        if (skip > 0) {
          skip--;
          continue;
        }
        looked++;
        const ids = this.checkRow(r, index);
        const kept = this.keptPositions(ids, r.length);
        if (!kept.length) continue;
        picked.push({ ids, kept, index });
        got += kept.length;
        if (got >= size) break;
      }
      if (seen === 0) {
        throw new RangeError(`activation buffer: ${this.o.rows.describe()} holds no token rows`);
      }
      if (got === 0 && looked === seen) {
        throw new RangeError(
          `activation buffer: ${this.o.rows.describe()} has no token left to serve (every position excluded or padding)`,
        );
      }
      skip %= seen;
    }
    const lw = this.L * this.w, wy = this.wy;
    const x = new Float32Array(size * lw), y = this.y ? new Float32Array(size * wy) : null;
    const origin: Origin = {
      epoch: new Int32Array(size).fill(-1),
      row: new Int32Array(size),
      position: new Int32Array(size),
    };
    const { hookAt, targetAt } = this;
    let j = 0;
    for (let s = 0; s < picked.length && j < size; s += this.mb) {
      const group = picked.slice(s, s + this.mb);
      const acts = this.forward(group.map((g) => g.ids));
      group.forEach((g, gi) => {
        for (const p of g.kept) {
          if (j >= size) return;
          const at = gi * this.T + p;
          for (let l = 0; l < this.L; l++) {
            x.set(
              acts[hookAt[l]].subarray(at * this.w, (at + 1) * this.w),
              (j * this.L + l) * this.w,
            );
          }
          if (y) y.set(acts[targetAt].subarray(at * wy, (at + 1) * wy), j * wy);
          origin.row[j] = g.index;
          origin.position[j] = p;
          j++;
        }
      });
    }
    return { x, y, origin };
  }
}
