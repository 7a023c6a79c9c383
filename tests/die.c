/* Ways to die, for tests/causes.rs: `die segv` dereferences NULL, `die
 * abort` calls abort(), `die hog MIB` allocates and touches MIB MiB (in a
 * memory cgroup with a lower limit, the OOM killer ends it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "segv") == 0) {
		volatile int *p = NULL;
		return *p;
	}
	if (argc >= 2 && strcmp(argv[1], "abort") == 0)
		abort();
	if (argc >= 3 && strcmp(argv[1], "hog") == 0) {
		long mib = atol(argv[2]);
		for (long i = 0; i < mib; i++) {
			char *p = malloc(1 << 20);
			if (!p)
				return 3;
			memset(p, 1, 1 << 20);
		}
		return 0;
	}
	fprintf(stderr, "usage: die segv|abort|hog MIB\n");
	return 2;
}
