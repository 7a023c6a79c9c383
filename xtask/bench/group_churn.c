/* group churn: N times fork() a child that starts 63 threads (64 with its
 * main thread), waits until all are running, then exit_group()s: the 64
 * threads die together. The parent waits for each child. */
#include <pthread.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 64

static pthread_barrier_t started;

static void *park(void *arg)
{
	pthread_barrier_wait(&started);
	for (;;)
		pause();
	return arg;
}

static void child(void)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_barrier_init(&started, NULL, THREADS);
	for (int i = 1; i < THREADS; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, park, NULL) != 0)
			_exit(1);
	}
	pthread_barrier_wait(&started);
	_exit(0); /* exit_group: every thread dies now */
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 100;
	for (long i = 0; i < n; i++) {
		int status;
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0)
			child();
		if (waitpid(pid, &status, 0) != pid || status != 0)
			return 1;
	}
	return 0;
}
