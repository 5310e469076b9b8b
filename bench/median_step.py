"""The median wall time of `steps` calls of `step` after `warmup` calls: the statistic every
PyTorch side of our benchmarks reports, as bench/train_timer.ts does for ours (medians, because
single steps on a shared 2-core VM vary by ±15%)."""
import statistics
import time


def median_step_seconds(step, steps, warmup=4):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
