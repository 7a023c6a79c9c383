/*
 * A process whose threads read before it ends: each of four threads reads
 * (i + 1) * 8 KiB of this binary and ends, joined by the main thread, which
 * then reads 1 KiB and exits 0. Its exit record's I/O counters are the sum
 * of five threads' figures, four of them left by threads that died first
 * (tests/filters.rs checks that a filter passing the process keeps them all).
 *
 * Built at test time with: cc -O1 -pthread -o <tmpdir>/thread_io tests/thread_io.c
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int fd;

static void read_bytes(long n)
{
	char buf[1024];
	long done = 0;
	while (done < n) {
		ssize_t r = pread(fd, buf, sizeof buf, done % 4096);
		if (r <= 0) {
			perror("pread");
			exit(2);
		}
		done += r;
	}
}

static void *reader(void *arg)
{
	read_bytes(((long)arg + 1) * 8192);
	return NULL;
}

int main(void)
{
	pthread_t t[4];
	fd = open("/proc/self/exe", O_RDONLY);
	if (fd < 0) {
		perror("open /proc/self/exe");
		return 2;
	}
	for (long i = 0; i < 4; i++)
		if (pthread_create(&t[i], NULL, reader, (void *)i)) {
			fprintf(stderr, "pthread_create failed\n");
			return 2;
		}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	read_bytes(1024);
	return 0;
}
