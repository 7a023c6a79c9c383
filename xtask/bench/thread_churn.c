/* thread churn: N times pthread_create() a thread that returns at once, and
 * join it. One thread group; N threads die. */
#include <pthread.h>
#include <stdlib.h>

static void *noop(void *arg)
{
	return arg;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	for (long i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, noop, NULL) != 0)
			return 1;
		if (pthread_join(t, NULL) != 0)
			return 1;
	}
	return 0;
}
