/**
 * The GPU side of the backend: buffers (pooled), the pipeline cache, batched dispatch and
 * readback. Elements are 32-bit words (f32, i32, bool as u32, bf16 as f32 values rounded to
 * bf16), except f16 on devices with `shader-f16` (2 bytes); kernels index by element either way.
 *
 * Kernels are recorded, not submitted one by one: a batch holds up to MAX_BATCH dispatches (and
 * buffer clears) with their parameters packed into one buffer, and goes to the queue in one
 * submission when full, before any upload or readback, and when the pool is trimmed. Uploads
 * (queue.writeBuffer) take effect ahead of unsubmitted work, which is why they flush first: a
 * pooled buffer may still be read by a recorded kernel.
 */
import type { DType } from "../dtype.ts";
import type { Gpu } from "./device.ts";
import { elemBytes } from "./wgsl.ts";

// GPUBufferUsage / GPUMapMode bits, spelled out so no runtime globals are needed.
const MAP_READ = 1, COPY_SRC = 4, COPY_DST = 8, STORAGE = 128;

/** A device buffer; `buffer` is null once released. */
export interface GBuf {
  buffer: Gpu;
  /** Capacity in bytes (pool bucket). */
  bytes: number;
}

/** Rounded up to 256 bytes; never zero-sized (WebGPU rejects empty bindings). */
const bucket = (bytes: number) => Math.max(16, Math.ceil(bytes / 256) * 256);

/**
 * Released buffers wait here for the next allocation of the same size. Queue order makes reuse
 * safe: every later kernel is recorded after the work that used the buffer before. Buffers over
 * the cap are destroyed only after the batch that may still use them is submitted.
 */
class Pool {
  #free = new Map<number, Gpu[]>();
  #doomed: Gpu[] = [];
  pooled = 0;
  allocated = 0;
  constructor(readonly maxPooled: number) {}
  take(device: Gpu, bytes: number): Gpu {
    const b = this.#free.get(bytes)?.pop();
    if (b) {
      this.pooled -= bytes;
      return b;
    }
    this.allocated += bytes;
    return device.createBuffer({ size: bytes, usage: STORAGE | COPY_SRC | COPY_DST });
  }
  give(buf: Gpu, bytes: number): void {
    if (this.pooled + bytes > this.maxPooled) {
      this.#doomed.push(buf);
      this.allocated -= bytes;
      return;
    }
    let list = this.#free.get(bytes);
    if (!list) this.#free.set(bytes, list = []);
    list.push(buf);
    this.pooled += bytes;
  }
  /** Destroy what was given back over the cap (call after submitting). */
  reap(): void {
    for (const b of this.#doomed) b.destroy();
    this.#doomed = [];
  }
  clear(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.allocated -= this.pooled;
    this.pooled = 0;
    this.#free.clear();
    this.reap();
  }
}

export const WG = 256;
/** Workgroups per grid dimension (WebGPU's guaranteed minimum). */
const MAX_GROUPS = 65535;
const MAX_BATCH = 64;
/** Parameter blocks start at storage-offset alignment (256 bytes = 64 words). */
const ALIGN_WORDS = 64;

/** Device buffers are captured when recorded: a GBuf may be released before the batch is submitted. */
type Job = { kind: "run"; pipe: Gpu; bufs: Gpu[]; at: number; len: number; groups: number } | {
  kind: "clear";
  buf: Gpu;
  bytes: number;
};

export class Runtime {
  readonly pool: Pool;
  #pipelines = new Map<string, Gpu>();
  #jobs: Job[] = [];
  #params: number[] = [];
  constructor(readonly device: Gpu, maxPooledBytes = 1 << 30) {
    this.pool = new Pool(maxPooledBytes);
  }

  /** Room for `n` elements of `dtype` (contents undefined). */
  alloc(n: number, dtype: DType = "f32"): GBuf {
    const bytes = bucket(n * elemBytes(dtype));
    return { buffer: this.pool.take(this.device, bytes), bytes };
  }

  free(b: GBuf): void {
    if (b.buffer === null) return;
    this.pool.give(b.buffer, b.bytes);
    b.buffer = null;
  }

  upload(data: Uint32Array | Int32Array | Float32Array | Uint16Array): GBuf {
    this.flush();
    const b = this.alloc(Math.ceil(data.byteLength / 4));
    // writeBuffer wants a multiple of 4 bytes: an odd count of 16-bit words gets one of padding.
    const src = data.byteLength % 4 === 0 ? data : (() => {
      const p = new Uint16Array(data.length + 1);
      p.set(data as Uint16Array);
      return p;
    })();
    if (src.byteLength > 0) {
      this.device.queue.writeBuffer(b.buffer, 0, src.buffer, src.byteOffset, src.byteLength);
    }
    return b;
  }

  /** `n` zeroed elements of `dtype`. */
  zeros(n: number, dtype: DType = "f32"): GBuf {
    const b = this.alloc(n, dtype);
    this.#record({ kind: "clear", buf: b.buffer, bytes: b.bytes });
    return b;
  }

  /** The first `bytes` bytes of a buffer. */
  async read(b: GBuf, bytes: number): Promise<ArrayBuffer> {
    if (bytes === 0) return new ArrayBuffer(0);
    if (b.buffer === null) throw new Error("webgpu: read of a released buffer");
    this.flush();
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: MAP_READ | COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(b.buffer, 0, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(1);
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  }

  pipeline(code: string): Gpu {
    let p = this.#pipelines.get(code);
    if (!p) {
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      this.#pipelines.set(code, p);
    }
    return p;
  }

  get pipelines(): number {
    return this.#pipelines.size;
  }

  /**
   * Record `code` over `groups` workgroups (spread over a 2-D grid when above the per-dimension
   * limit; shaders recover the linear id with GROUP_ID). Bindings are `bufs` in order, then
   * `prm` (the u32 parameters `meta`) as the last binding.
   */
  dispatch(code: string, bufs: GBuf[], meta: ArrayLike<number>, groups: number): void {
    if (groups <= 0) return;
    const at = this.#params.length, len = Math.max(meta.length, 1);
    for (let i = 0; i < len; i++) this.#params.push((meta[i] ?? 0) >>> 0);
    while (this.#params.length % ALIGN_WORDS) this.#params.push(0);
    this.#record({
      kind: "run",
      pipe: this.pipeline(code),
      bufs: bufs.map((b) => b.buffer),
      at,
      len,
      groups,
    });
  }

  /** Several dispatches in order (each sees the previous one's writes). */
  dispatchAll(
    jobs: { code: string; bufs: GBuf[]; meta: ArrayLike<number>; groups: number }[],
  ): void {
    for (const j of jobs) this.dispatch(j.code, j.bufs, j.meta, j.groups);
  }

  #record(job: Job): void {
    this.#jobs.push(job);
    if (this.#jobs.length >= MAX_BATCH) this.flush();
  }

  /** Submit the recorded kernels: one parameter upload, one compute pass per run of dispatches. */
  flush(): void {
    if (this.#jobs.length === 0) return;
    const jobs = this.#jobs, params = Uint32Array.from(this.#params);
    this.#jobs = [];
    this.#params = [];
    const pb = this.#paramBuffer(params.byteLength);
    if (params.length > 0) {
      this.device.queue.writeBuffer(pb, 0, params.buffer, 0, params.byteLength);
    }
    const enc = this.device.createCommandEncoder();
    let pass: Gpu = null;
    for (const j of jobs) {
      if (j.kind === "clear") {
        if (pass) pass = (pass.end(), null);
        enc.clearBuffer(j.buf, 0, j.bytes);
        continue;
      }
      pass ??= enc.beginComputePass();
      const entries = j.bufs.map((buffer, i) => ({ binding: i, resource: { buffer } as never }));
      entries.push({
        binding: j.bufs.length,
        resource: { buffer: pb, offset: j.at * 4, size: j.len * 4 } as never,
      });
      pass.setPipeline(j.pipe);
      pass.setBindGroup(
        0,
        this.device.createBindGroup({ layout: j.pipe.getBindGroupLayout(0), entries }),
      );
      const y = Math.ceil(j.groups / MAX_GROUPS);
      pass.dispatchWorkgroups(Math.ceil(j.groups / y), y);
    }
    if (pass) pass.end();
    this.device.queue.submit([enc.finish()]);
    this.pool.reap();
  }

  /**
   * The parameters' own buffer, never pooled: a pooled one could be a buffer this very batch
   * writes. One suffices, since the next batch's upload is queued after this batch's work.
   */
  #params_buf: Gpu = null;
  #params_bytes = 0;
  #paramBuffer(bytes: number): Gpu {
    if (bytes > this.#params_bytes) {
      this.#params_buf?.destroy();
      this.#params_bytes = Math.max(bytes, MAX_BATCH * ALIGN_WORDS * 4);
      this.#params_buf = this.device.createBuffer({
        size: this.#params_bytes,
        usage: STORAGE | COPY_DST,
      });
    }
    return this.#params_buf;
  }
}

/** WGSL: the linear workgroup id over the 2-D grid `dispatch` uses. */
export const GROUP_ID = "(wid.x + wid.y * nwg.x)";
export const ENTRY_ARGS =
  "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>";
