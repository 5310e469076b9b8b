// The MPI calls data-parallel training needs, for FFI (tensor/distributed/mpi.ts compiles this
// file with mpicc on first use and caches the library). MPI's handles (MPI_COMM_WORLD, MPI_FLOAT,
// MPI_SUM) are link-time objects whose representation differs between MPI implementations, so
// they cannot be named from JavaScript: this file names them and exports plain C functions.
//
// Every collective runs on MPI_COMM_WORLD with MPI_ERRORS_RETURN: a failure comes back as a code
// (sc_mpi_error_string says what it means) rather than aborting inside MPI. A collective that
// waits longer than the timeout given to sc_mpi_init (a peer died without the launcher noticing,
// hung, or took another code path) is ended by a watchdog thread: it prints which collective on
// which rank waited, and exits the process, so the launcher stops every other rank; nothing
// waits forever. The watchdog never calls MPI, so MPI_THREAD_FUNNELED suffices.

#define _GNU_SOURCE  // dladdr
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// Exit status of a rank the watchdog stops (EX_TEMPFAIL: the job may succeed when rerun).
#define WATCHDOG_EXIT 75

static int g_rank = -1, g_size = 0;
static double g_timeout = 0;  // seconds; 0: no watchdog
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static const char *g_op = NULL;  // the collective in flight, or NULL
static unsigned long g_seq = 0;  // counts collectives, so a late wake-up never blames a newer one
static struct timespec g_started;
static int g_sleep_wait = 0;  // see arrive()

static void *watchdog(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_mu);
  for (;;) {
    if (!g_op) {
      pthread_cond_wait(&g_cv, &g_mu);
      continue;
    }
    unsigned long seq = g_seq;
    struct timespec deadline = g_started;
    deadline.tv_sec += (time_t)g_timeout;
    deadline.tv_nsec += (long)((g_timeout - (double)(time_t)g_timeout) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    int rc = 0;
    while (g_op && g_seq == seq && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&g_cv, &g_mu, &deadline);
    if (g_op && g_seq == seq) {
      char host[256] = "?";
      gethostname(host, sizeof host - 1);
      fprintf(stderr,
              "sparsecoder: rank %d of %d (%s, pid %d): %s did not complete within %g s "
              "(SPARSECODER_MPI_TIMEOUT): another rank has died, hung or left the collective; "
              "stopping this rank so that the launcher stops the others\n",
              g_rank, g_size, host, (int)getpid(), g_op, g_timeout);
      fflush(stderr);
      _exit(WATCHDOG_EXIT);
    }
  }
  return NULL;
}

static void enter(const char *op) {
  if (g_timeout <= 0) return;
  pthread_mutex_lock(&g_mu);
  g_op = op;
  g_seq++;
  clock_gettime(CLOCK_MONOTONIC, &g_started);
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
}

static void leave(void) {
  if (g_timeout <= 0) return;
  pthread_mutex_lock(&g_mu);
  g_op = NULL;
  pthread_cond_signal(&g_cv);
  pthread_mutex_unlock(&g_mu);
}

// Start MPI (once) and the watchdog; timeout_s <= 0 disables the watchdog; sleep_wait: how a
// rank waits for the others (see arrive). Returns an MPI code.
int sc_mpi_init(double timeout_s, int sleep_wait) {
  g_sleep_wait = sleep_wait;
  int done = 0, ended = 0;
  MPI_Finalized(&ended);
  if (ended) return MPI_ERR_OTHER;  // MPI cannot start twice in one process
  MPI_Initialized(&done);
  if (!done) {
    // The runtime opened this library with RTLD_LOCAL; Open MPI's plugins resolve symbols of
    // libmpi globally, so promote it (a no-op where the plugins are linked in).
    Dl_info info;
    if (dladdr((void *)&MPI_Init_thread, &info) && info.dli_fname)
      dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return rc;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  if (timeout_s > 0 && g_timeout <= 0) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g_cv, &attr);
    g_timeout = timeout_s;
    pthread_t th;
    if (pthread_create(&th, NULL, watchdog, NULL) != 0) g_timeout = 0;
    else pthread_detach(th);
  }
  return MPI_SUCCESS;
}

int sc_mpi_rank(void) { return g_rank; }
int sc_mpi_size(void) { return g_size; }

// The library's version line, e.g. "Open MPI v4.1.4, package: …" (first line, into out).
void sc_mpi_version(char *out, int len) {
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  MPI_Get_library_version(v, &n);
  char *nl = strchr(v, '\n');
  if (nl) *nl = 0;
  snprintf(out, (size_t)len, "%s", v);
}

void sc_mpi_error_string(int code, char *out, int len) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", code);
  snprintf(out, (size_t)len, "%s", s);
}

// MPI counts are ints: longer buffers go in chunks of at most CHUNK elements.
#define CHUNK (1 << 30)

// How a rank waits for the others to arrive at a collective. MPI's blocking calls spin, and a
// spinning rank takes the core that the rank it waits for needs when cores are shared (2 ranks
// on 2 busy cores ran at 16 % scaling efficiency). Sleeping: enter each collective through a
// non-blocking barrier polled with short sleeps (50 µs, doubling to 1 ms), then move the data
// with the blocking call at full speed, every rank being there.
static int arrive(void) {
  if (!g_sleep_wait || g_size < 2) return MPI_SUCCESS;
  MPI_Request req;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
  if (rc != MPI_SUCCESS) return rc;
  long ns = 50000;
  for (int polls = 0;; polls++) {
    int done = 0;
    rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    if (polls < 32) continue;  // the others are usually there already: a few quick polls first
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    if (ns < 1000000) ns *= 2;
  }
}

// dtype: 0 f32, 1 f64. op: 0 sum, 1 min, 2 max, 3 mean (the sum divided by the ranks).
// Every rank's n elements at send, reduced into recv; send == recv reduces in place.
int sc_mpi_allreduce(const void *send, void *recv, int64_t n, int dtype, int op) {
  MPI_Op o = op == 1 ? MPI_MIN : op == 2 ? MPI_MAX : MPI_SUM;
  MPI_Datatype t = dtype == 1 ? MPI_DOUBLE : MPI_FLOAT;
  size_t width = dtype == 1 ? sizeof(double) : sizeof(float);
  enter("MPI_Allreduce");
  int rc = arrive();
  for (int64_t i = 0; i < n && rc == MPI_SUCCESS; i += CHUNK) {
    int c = (int)(n - i < CHUNK ? n - i : CHUNK);
    char *r = (char *)recv + (size_t)i * width;
    const void *s = send == recv ? MPI_IN_PLACE : (const char *)send + (size_t)i * width;
    rc = MPI_Allreduce(s, r, c, t, o, MPI_COMM_WORLD);
  }
  leave();
  if (rc == MPI_SUCCESS && op == 3 && g_size > 1) {
    if (dtype == 1) {
      double *r = recv, inv = 1.0 / g_size;
      for (int64_t i = 0; i < n; i++) r[i] *= inv;
    } else {
      // In double, then rounded: what `x *= 1 / N` on a Float32Array does in JavaScript.
      float *r = recv;
      double inv = 1.0 / g_size;
      for (int64_t i = 0; i < n; i++) r[i] = (float)((double)r[i] * inv);
    }
  }
  return rc;
}

// The root's `bytes` bytes at buf, copied into buf on every rank.
int sc_mpi_broadcast(void *buf, int64_t bytes, int root) {
  enter("MPI_Bcast");
  int rc = arrive();
  for (int64_t i = 0; i < bytes && rc == MPI_SUCCESS; i += CHUNK) {
    int c = (int)(bytes - i < CHUNK ? bytes - i : CHUNK);
    rc = MPI_Bcast((char *)buf + i, c, MPI_BYTE, root, MPI_COMM_WORLD);
  }
  leave();
  return rc;
}

// Each rank's `bytes` bytes of send, concatenated in rank order into recv (size · bytes).
int sc_mpi_allgather(const void *send, int64_t bytes, void *recv) {
  if (bytes > INT_MAX) return MPI_ERR_COUNT;
  enter("MPI_Allgather");
  int rc = arrive();
  if (rc == MPI_SUCCESS) rc = MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
  leave();
  return rc;
}

int sc_mpi_barrier(void) {
  enter("MPI_Barrier");
  int rc = g_sleep_wait ? arrive() : MPI_Barrier(MPI_COMM_WORLD);
  leave();
  return rc;
}

// Stop every rank of the job with exit status `code` (the launcher kills the others).
void sc_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

int sc_mpi_finalize(void) {
  int done = 0;
  MPI_Finalized(&done);
  // Not watched: ranks finish at different times (rank 0 evaluates and saves after training),
  // and a rank that died by then is the launcher's to report.
  return done ? MPI_SUCCESS : MPI_Finalize();
}
