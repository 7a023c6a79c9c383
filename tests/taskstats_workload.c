/*
 * Workload for tests/taskstats.rs: the kernel's per-task taskstats records
 * are the oracle for the tracer's extended accounting fields.
 *
 * Built at test time with:
 *     cc -O1 -pthread -o <tmpdir>/taskstats_workload tests/taskstats_workload.c -lutil
 *
 * Usage: taskstats_workload DIR   (DIR: a directory on a disk-backed file
 * system, where the I/O cases create and remove their files).
 *
 * It starts every case at once as a child of its own (so that they compete
 * for the CPUs and the delays have something to count), each with a comm of
 * its own, and waits for all of them. It prints, one write(2) per line:
 *     case <name> <pid>      for itself (name `workload`) and every child,
 *     thread <name> <tid>    for every thread of a multi-threaded case,
 *                            main threads included.
 * Exits 0 when every case went as planned, non-zero with a message on
 * stderr otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIB 1024
#define MIB (1024 * 1024)

static const char *dir;

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "taskstats_workload[%ld]: ", (long)syscall(SYS_gettid));
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));
	va_end(ap);
	exit(2);
}

static pid_t gettid_(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* One line, one write(2): lines from several processes do not mix. */
static void say(const char *kind, const char *name, long id)
{
	char line[128];
	int n = snprintf(line, sizeof(line), "%s %s %ld\n", kind, name, id);

	if (write(STDOUT_FILENO, line, (size_t)n) != n)
		die("writing to stdout");
}

static double cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Burns `ms` milliseconds of this thread's CPU time. */
static void spin(int ms)
{
	double end = cpu_seconds() + ms / 1000.0;
	volatile unsigned long x = 0;

	while (cpu_seconds() < end)
		for (int i = 0; i < 10000; i++)
			x += (unsigned long)i;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void path_for(char *buf, size_t size, const char *what)
{
	snprintf(buf, size, "%s/%s.%ld", dir, what, (long)gettid_());
}

/* Writes `total` bytes in write(2)s of `chunk`; fsync when asked. Returns
 * the open descriptor (read-write). */
static char block[64 * KIB]; /* filled by main() */

static int write_file(const char *path, size_t total, size_t chunk, int do_fsync)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (fd < 0)
		die("creating %s", path);
	for (size_t done = 0; done < total;) {
		size_t n = total - done < chunk ? total - done : chunk;
		ssize_t w = write(fd, block, n);

		if (w <= 0)
			die("writing %s", path);
		done += (size_t)w;
	}
	if (do_fsync && fsync(fd) != 0)
		die("fsync %s", path);
	return fd;
}

/* Reads fd from its start to the end in read(2)s of `chunk` bytes; returns
 * the bytes read. */
static size_t read_all(int fd, size_t chunk)
{
	static __thread char buf[64 * KIB];
	size_t total = 0;
	ssize_t r;

	if (lseek(fd, 0, SEEK_SET) != 0)
		die("lseek");
	while ((r = read(fd, buf, chunk)) > 0)
		total += (size_t)r;
	if (r < 0)
		die("read");
	return total;
}

/* Touches `bytes` of fresh memory, one write per page; keeps it. */
static void touch_memory(size_t bytes)
{
	volatile char *p = malloc(bytes);

	if (!p)
		die("malloc %zu", bytes);
	for (size_t i = 0; i < bytes; i += 4096)
		p[i] = (char)i;
}

/* ---- the cases ------------------------------------------------------- */

/* 4 MiB in 4 KiB write(2)s (1024 syscalls), fsync: write_bytes,
 * write_char, write_syscalls. */
static void case_write_fsync(void)
{
	char path[4096];

	path_for(path, sizeof(path), "write");
	int fd = write_file(path, 4 * MIB, 4 * KIB, 1);
	close(fd);
	unlink(path);
}

/* 2 MiB written and synced, dropped from the page cache, then read back in
 * 1000-byte read(2)s (2098 syscalls, neither the sizes nor the total a
 * multiple of 1024 on the way): read_bytes from the disk, read_char,
 * read_syscalls. */
static void case_read_cold(void)
{
	char path[4096];

	path_for(path, sizeof(path), "read");
	int fd = write_file(path, 2 * MIB + 333, 64 * KIB, 1);
	if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
		die("posix_fadvise");
	if (read_all(fd, 1000) != 2 * MIB + 333)
		die("short read of %s", path);
	close(fd);
	unlink(path);
}

/* 3 MiB dirtied and truncated before writeback: cancelled_write_bytes. */
static void case_cancel(void)
{
	char path[4096];

	path_for(path, sizeof(path), "cancel");
	int fd = write_file(path, 3 * MIB, 64 * KIB, 0);
	if (ftruncate(fd, 0) != 0)
		die("ftruncate");
	close(fd);
	unlink(path);
}

/* Small odd reads of /dev/urandom and /proc: read_char below and off the
 * 1 KiB grid. */
static void case_odd_reads(void)
{
	char buf[4096];
	int fd = open("/dev/urandom", O_RDONLY);

	if (fd < 0)
		die("opening /dev/urandom");
	for (int i = 0; i < 50; i++)
		if (read(fd, buf, 333) != 333)
			die("reading /dev/urandom");
	close(fd);
	fd = open("/proc/self/status", O_RDONLY);
	if (fd < 0)
		die("opening /proc/self/status");
	while (read(fd, buf, 77) > 0)
		;
	close(fd);
}

/* 20 MiB touched, then 50 ms on the CPU with it resident: hiwater_rss,
 * hiwater_vm, coremem, virtmem. */
static void case_memory(void)
{
	touch_memory(20 * MIB);
	spin(50);
}

/* Ten short sleeps: nvcsw. */
static void case_sleeper(void)
{
	for (int i = 0; i < 10; i++)
		sleep_ms(3);
}

/* 50 ms on the CPU while the other cases compete: nivcsw, cpu_delay. */
static void case_spinner(void)
{
	spin(50);
}

struct thread_arg {
	const char *name;
	int index;
};

/* What each worker thread does: I/O of its own, memory, CPU. */
static void thread_work(int index)
{
	char path[4096];
	char what[32];

	snprintf(what, sizeof(what), "thr%d", index);
	path_for(path, sizeof(path), what);
	int fd = write_file(path, 512 * KIB + 100 * (size_t)index, 4 * KIB, 1);
	read_all(fd, 1000);
	close(fd);
	unlink(path);
	touch_memory(2 * MIB);
	spin(20);
	sleep_ms(2);
}

static void *worker(void *p)
{
	struct thread_arg *a = p;
	char comm[16];

	snprintf(comm, sizeof(comm), "ts-w%d", a->index);
	prctl(PR_SET_NAME, comm);
	say("thread", a->name, gettid_());
	thread_work(a->index);
	return NULL;
}

/* Four threads doing I/O and spinning, joined (they exit before the main
 * thread); then the main thread works a little and the group ends with it. */
static void case_threads(void)
{
	pthread_t th[4];
	struct thread_arg args[4];

	say("thread", "threads", gettid_());
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){ .name = "threads", .index = i + 1 };
		if (pthread_create(&th[i], NULL, worker, &args[i]) != 0)
			die("pthread_create");
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	thread_work(0);
}

static pid_t leader;

/* Waits until the group's leader is a zombie (it has been through do_exit,
 * taskstats record sent), at most 10 s. */
static void wait_leader_gone(void)
{
	char path[64], buf[512];

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)leader);
	for (int i = 0; i < 10000; i++) {
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			return; /* reaped: gone for sure */
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = 0;
			char *paren = strrchr(buf, ')');
			if (paren && (paren[2] == 'Z' || paren[2] == 'X'))
				return;
		}
		sleep_ms(1);
	}
	fprintf(stderr, "taskstats_workload: the leader %d never exited\n", (int)leader);
	exit(3);
}

static void *late_worker(void *p)
{
	struct thread_arg *a = p;
	char comm[16];

	snprintf(comm, sizeof(comm), "ts-late%d", a->index);
	prctl(PR_SET_NAME, comm);
	say("thread", a->name, gettid_());
	wait_leader_gone();
	thread_work(a->index);
	return NULL;
}

/* The leader starts two threads and calls pthread_exit at once; the threads
 * wait until it is gone, work, and the last of them ends the group: the
 * group's last thread is not its leader. */
static void case_leader_first(void)
{
	static pthread_t th[2];
	static struct thread_arg args[2];

	leader = gettid_();
	say("thread", "leader_first", leader);
	for (int i = 0; i < 2; i++) {
		args[i] = (struct thread_arg){ .name = "leader_first", .index = i + 1 };
		if (pthread_create(&th[i], NULL, late_worker, &args[i]) != 0)
			die("pthread_create");
	}
	spin(5);
	pthread_exit(NULL);
}

static const struct {
	const char *name;
	const char *comm;
	void (*fn)(void);
} cases[] = {
	{ "write_fsync", "ts-write", case_write_fsync },
	{ "read_cold", "ts-read", case_read_cold },
	{ "cancel", "ts-cancel", case_cancel },
	{ "odd_reads", "ts-oddread", case_odd_reads },
	{ "memory", "ts-memory", case_memory },
	{ "sleeper", "ts-sleeper", case_sleeper },
	{ "spinner", "ts-spinner", case_spinner },
	{ "threads", "ts-threads", case_threads },
	{ "leader_first", "ts-leader", case_leader_first },
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

int main(int argc, char **argv)
{
	pid_t pids[NCASES];
	int failed = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	memset(block, 'x', sizeof(block));
	say("case", "workload", getpid());
	for (size_t i = 0; i < NCASES; i++) {
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			prctl(PR_SET_NAME, cases[i].comm);
			cases[i].fn();
			exit(0);
		}
		pids[i] = pid;
		say("case", cases[i].name, pid);
	}
	for (size_t i = 0; i < NCASES; i++) {
		int status;

		if (waitpid(pids[i], &status, 0) != pids[i])
			die("waitpid %d", (int)pids[i]);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "taskstats_workload: case %s (pid %d) ended with status %#x\n",
				cases[i].name, (int)pids[i], status);
			failed = 1;
		}
	}
	return failed;
}
