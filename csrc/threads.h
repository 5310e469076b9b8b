// Work split over POSIX threads, shared by the CPU backend's C files.
#ifndef SC_THREADS_H
#define SC_THREADS_H

#include <pthread.h>
#include <stddef.h>

#define MAX_THREADS 64

typedef void *(*task_fn)(void *);

// Run task(jobs[t]) for t < n, jobs[0] on this thread. A thread that cannot start runs here.
static inline void run_tasks(task_fn task, void *jobs, size_t size, int n) {
  pthread_t th[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int t = 1; t < n; t++) started[t] = pthread_create(&th[t], 0, task, (char *)jobs + t * size) == 0;
  task(jobs);
  for (int t = 1; t < n; t++) {
    if (started[t]) pthread_join(th[t], 0);
    else task((char *)jobs + t * size);
  }
}

static inline int clamp_threads(int threads) {
  return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

#endif
