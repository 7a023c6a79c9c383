/*
 * Workload for the tracer's exit-record integration tests.
 *
 * Built at test time with:
 *     cc -O1 -pthread -o <tmpdir>/workload tests/workload.c -lutil
 *
 * It becomes a child subreaper, then creates (one at a time, waiting for each)
 * children that end in as many different ways as we can think of, each with a
 * distinct comm so that its BSD accounting record can be told apart.  For every
 * process it creates it prints one line `<pid> <label>` on stdout, where <pid>
 * is the pid in the initial pid namespace (what kernel accounting records);
 * its very first line is `<its own pid> workload`.
 *
 * Must run as root (setuid, chroot, unshare(CLONE_NEWPID)).  Exits 0 when
 * everything went as planned and it has reaped every descendant, non-zero
 * (with a message on stderr) if a case could not be set up.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int failures;

static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "workload: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	failures++;
}

/* Pid of the calling process in the initial pid namespace (our /proc is the
 * host's, so /proc/self names the global pid even inside a new pid ns). */
static pid_t global_pid(void)
{
	char buf[32];
	ssize_t n = readlink("/proc/self", buf, sizeof(buf) - 1);

	if (n <= 0)
		return getpid();
	buf[n] = '\0';
	return (pid_t)atoi(buf);
}

/* One unbuffered write per line, so forked children never duplicate output. */
static void announce(pid_t pid, const char *label)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "%d %s\n", (int)pid, label);

	if (write(STDOUT_FILENO, line, (size_t)n) != n)
		_exit(120);
}

static void set_name(const char *name)
{
	prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(int clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Spin in user space until `clock` (a CPU-time clock) has advanced by `secs`. */
static volatile uint64_t sink;
static void burn_user(int clock, double secs)
{
	double end = cpu_now(clock) + secs;
	uint64_t x = 88172645463325252ULL;

	while (cpu_now(clock) < end) {
		for (int i = 0; i < 100000; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		sink += x;
	}
}

/*
 * Wait for `pid` and check how it ended.  `want` is a wait status to expect
 * exactly, or -1 to accept anything.
 */
static void reap(pid_t pid, const char *label, int want)
{
	int status;

	while (waitpid(pid, &status, 0) == -1) {
		if (errno != EINTR) {
			fail("%s: waitpid(%d): %s", label, (int)pid, strerror(errno));
			return;
		}
	}
	if (want != -1 && status != want)
		fail("%s: wait status 0x%x, expected 0x%x", label, status, want);
}

/* fork(); in the child, name it and run fn (which must not return). */
static pid_t spawn_named(const char *label, void (*fn)(void))
{
	pid_t pid = fork();

	if (pid == -1) {
		fail("%s: fork: %s", label, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		set_name(label);
		fn();
		_exit(121);
	}
	announce(pid, label);
	return pid;
}

static void run_case(const char *label, void (*fn)(void), int want)
{
	pid_t pid = spawn_named(label, fn);

	if (pid > 0)
		reap(pid, label, want);
}

/* ---- plain exit codes ---- */

static void do_exit0(void) { exit(0); }
static void do_exit3(void) { exit(3); }
static void do_exit255(void) { exit(255); }

/* ---- killed by a signal (the child tells us when it is named and ready) ---- */

static int ready_pipe[2];

static void do_wait_for_signal(void)
{
	char c = 'r';

	close(ready_pipe[0]);
	if (write(ready_pipe[1], &c, 1) != 1)
		_exit(122);
	for (;;)
		pause();
}

static void signal_case(const char *label, int sig)
{
	char c;
	pid_t pid;

	if (pipe(ready_pipe) == -1) {
		fail("%s: pipe: %s", label, strerror(errno));
		return;
	}
	pid = spawn_named(label, do_wait_for_signal);
	close(ready_pipe[1]);
	if (pid <= 0) {
		close(ready_pipe[0]);
		return;
	}
	if (read(ready_pipe[0], &c, 1) != 1)
		fail("%s: child never became ready", label);
	close(ready_pipe[0]);
	kill(pid, sig);
	reap(pid, label, sig);
}

/* ---- core dump ---- */

static char core_dir[] = "/tmp/tracer-workload-core.XXXXXX";

static void do_core(void)
{
	struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };

	setrlimit(RLIMIT_CORE, &rl);
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	if (chdir(core_dir) == -1)
		_exit(123);
	abort();
}

static void remove_core_dir(void)
{
	DIR *d = opendir(core_dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
	rmdir(core_dir);
}

static void core_case(void)
{
	pid_t pid;
	int status;

	if (!mkdtemp(core_dir)) {
		fail("coredump: mkdtemp: %s", strerror(errno));
		return;
	}
	pid = spawn_named("coredump", do_core);
	if (pid > 0) {
		while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
			;
		/* Killed by SIGABRT; whether a core was written depends on the
		 * host's core_pattern, so WCOREDUMP is only reported. */
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
			fail("coredump: wait status 0x%x, expected SIGABRT", status);
		else if (!WCOREDUMP(status))
			fprintf(stderr, "workload: note: coredump: no core was dumped\n");
	}
	remove_core_dir();
}

/* ---- 16 threads, exit(7) from a non-leader thread ---- */

#define NTHREADS 16
static pthread_barrier_t barrier;

static void *worker(void *arg)
{
	long idx = (long)arg;

	burn_user(CLOCK_THREAD_CPUTIME_ID, 0.015);
	pthread_barrier_wait(&barrier);
	if (idx == 5) {
		/* Everybody has done work and is still alive; let the others
		 * keep spinning a little, then end the group from here. */
		sleep_ms(20);
		exit(7);
	}
	for (;;)
		burn_user(CLOCK_THREAD_CPUTIME_ID, 0.005);
	return NULL;
}

static void do_threads(void)
{
	pthread_t t;

	pthread_barrier_init(&barrier, NULL, NTHREADS);
	for (long i = 0; i < NTHREADS; i++) {
		if (pthread_create(&t, NULL, worker, (void *)i) != 0)
			_exit(124);
	}
	for (;;)
		pause();
}

/* ---- leader pthread_exit()s; its 4 threads run 200 ms, the last exits ---- */

static pthread_mutex_t left_lock = PTHREAD_MUTEX_INITIALIZER;
static int left = 4;

static void *late_worker(void *arg)
{
	(void)arg;
	sleep_ms(150);
	burn_user(CLOCK_THREAD_CPUTIME_ID, 0.005);
	sleep_ms(50);
	pthread_mutex_lock(&left_lock);
	if (--left == 0) {
		/* The last thread standing ends the process with status 6.  The
		 * kernel's ac_exitcode is the (long dead) leader's, 0. */
		exit(6);
	}
	pthread_mutex_unlock(&left_lock);
	return NULL;
}

static void do_leader_exit(void)
{
	pthread_t t;

	for (int i = 0; i < 4; i++) {
		if (pthread_create(&t, NULL, late_worker, NULL) != 0)
			_exit(125);
	}
	pthread_exit(NULL);
}

/* ---- credentials and privileges ---- */

static void do_setuid(void)
{
	if (setgid(65534) == -1 || setuid(65534) == -1)
		_exit(126);
	exit(0);
}

static void do_superuser(void)
{
	/* chroot() needs CAP_SYS_CHROOT: a successful capable() check. */
	if (chroot("/") == -1 || chdir("/") == -1)
		_exit(126);
	exit(0);
}

/* ---- controlling tty ---- */

static void tty_case(void)
{
	int master, slave;
	pid_t pid;

	if (openpty(&master, &slave, NULL, NULL, NULL) == -1) {
		fail("ttyowner: openpty: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid == -1) {
		fail("ttyowner: fork: %s", strerror(errno));
		close(master);
		close(slave);
		return;
	}
	if (pid == 0) {
		set_name("ttyowner");
		close(master);
		if (setsid() == -1 || ioctl(slave, TIOCSCTTY, 0) == -1)
			_exit(127);
		exit(0);
	}
	announce(pid, "ttyowner");
	close(slave);
	/* Keep the master open until the child is gone, so no hangup
	 * disassociates the tty before the child's record is written. */
	reap(pid, "ttyowner", 0);
	close(master);
}

/* ---- new pid namespace ---- */

static void pidns_case(void)
{
	pid_t a = fork();
	if (a == -1) {
		fail("pidns: fork: %s", strerror(errno));
		return;
	}
	if (a == 0) {
		pid_t b;
		int status;

		set_name("pidns-parent");
		if (unshare(CLONE_NEWPID) == -1) {
			dprintf(STDERR_FILENO, "workload: pidns: unshare: %s\n", strerror(errno));
			_exit(110);
		}
		b = fork();
		if (b == -1)
			_exit(111);
		if (b == 0) {
			pid_t c;

			set_name("pidns-init");
			if (getpid() != 1)
				_exit(112);
			c = fork();
			if (c == -1)
				_exit(113);
			if (c == 0) {
				set_name("pidns-child");
				announce(global_pid(), "pidns-child");
				if (getpid() != 2)
					_exit(114);
				exit(0);
			}
			if (waitpid(c, &status, 0) != c || status != 0)
				_exit(115);
			exit(0);
		}
		announce(b, "pidns-init");
		if (waitpid(b, &status, 0) != b)
			_exit(116);
		_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 117);
	}
	announce(a, "pidns-parent");
	reap(a, "pidns-parent", 0);
}

/* ---- vfork + exec, posix_spawn, fork + exec ---- */

static void vfork_case(void)
{
	pid_t pid = vfork();

	if (pid == -1) {
		fail("vfork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	announce(pid, "vfork-true");
	reap(pid, "vfork-true", 0);
}

static void spawn_case(void)
{
	pid_t pid;
	char *argv[] = { "sh", "-c", "exit 4", NULL };
	int rc = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);

	if (rc != 0) {
		fail("posix_spawn: %s", strerror(rc));
		return;
	}
	announce(pid, "spawn-sh");
	reap(pid, "spawn-sh", 4 << 8);
}

static void sleep_case(void)
{
	pid_t pid = fork();

	if (pid == -1) {
		fail("sleep: fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		execl("/bin/sleep", "sleep", "1", (char *)NULL);
		_exit(127);
	}
	announce(pid, "sleep");
	reap(pid, "sleep", 0);
}

/* ---- CPU, system time, memory ---- */

static void do_cpu(void)
{
	burn_user(CLOCK_PROCESS_CPUTIME_ID, 0.3);
	exit(0);
}

static void do_syscalls(void)
{
	static char buf[65536];
	int fd = open("/dev/zero", O_RDONLY);
	double end = now() + 0.3;

	if (fd == -1)
		_exit(126);
	while (now() < end) {
		for (int i = 0; i < 200; i++) {
			syscall(SYS_getppid);
			if (read(fd, buf, sizeof(buf)) <= 0)
				_exit(126);
		}
	}
	exit(0);
}

static void do_memory(void)
{
	size_t len = 64UL << 20;
	long page = sysconf(_SC_PAGESIZE);
	volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		_exit(126);
	for (size_t off = 0; off < len; off += (size_t)page)
		p[off] = 1;
	exit(0);
}

/* ---- double-fork daemon ---- */

static void do_daemon(void)
{
	pid_t gc = fork();

	if (gc == -1)
		_exit(126);
	if (gc == 0) {
		set_name("daemon-grandch");
		sleep_ms(100);
		exit(0);
	}
	announce(gc, "daemon-grandch");
	exit(0);
}

/* ---- fork without exec ---- */

static void do_forknoexec(void)
{
	exit(0);
}

/* ---- fork storm (`workload storm WORKERS FORKS`) ---- */

/*
 * WORKERS processes at once, each forking FORKS children one after the
 * other; every seventh child forks a grandchild first.  Many tasks forking
 * and exiting together on every CPU: where the kernel runs tracing
 * programs preemptible (7.x), this is what makes it skip one.
 */
static int storm(int workers, int forks)
{
	int status, bad = 0;

	announce(getpid(), "workload");
	for (int i = 0; i < workers; i++) {
		pid_t w = fork();

		if (w == -1)
			fail("storm: fork: %s", strerror(errno));
		if (w != 0)
			continue;
		for (int j = 0; j < forks; j++) {
			pid_t c = fork();

			if (c == 0) {
				if (j % 7 == 0) {
					pid_t g = fork();

					if (g == 0)
						_exit(2);
					if (g > 0)
						waitpid(g, &status, 0);
				}
				_exit(j & 3);
			}
			if (c > 0)
				waitpid(c, &status, 0);
		}
		_exit(0);
	}
	while (wait(&status) > 0)
		bad += status != 0;
	if (bad)
		fail("storm: %d workers failed", bad);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	double start = now();
	int status;
	pid_t pid;

	if (argc == 4 && strcmp(argv[1], "storm") == 0)
		return storm(atoi(argv[2]), atoi(argv[3]));

	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == -1) {
		fprintf(stderr, "workload: PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));
		return 2;
	}
	announce(getpid(), "workload");

	run_case("exit0", do_exit0, 0);
	run_case("exit3", do_exit3, 3 << 8);
	run_case("exit255", do_exit255, 255 << 8);
	signal_case("sigkill", SIGKILL);
	signal_case("sigterm", SIGTERM);
	core_case();
	run_case("threads16", do_threads, 7 << 8);
	run_case("leader-exit", do_leader_exit, 6 << 8);
	run_case("setuid-nobody", do_setuid, 0);
	run_case("superuser", do_superuser, 0);
	tty_case();
	pidns_case();
	vfork_case();
	spawn_case();
	sleep_case();
	run_case("cpu-burner", do_cpu, 0);
	run_case("syscalls", do_syscalls, 0);
	run_case("memory64m", do_memory, 0);
	run_case("daemon", do_daemon, 0);
	run_case("forknoexec", do_forknoexec, 0);

	/* Reap whatever was reparented to us (the daemon's grandchild). */
	for (;;) {
		pid = wait(&status);
		if (pid == -1) {
			if (errno == EINTR)
				continue;
			if (errno != ECHILD)
				fail("wait: %s", strerror(errno));
			break;
		}
		if (status != 0)
			fail("orphan %d: wait status 0x%x", (int)pid, status);
	}

	if (now() - start > 10.0)
		fprintf(stderr, "workload: note: took %.1f s\n", now() - start);
	return failures ? 1 : 0;
}
