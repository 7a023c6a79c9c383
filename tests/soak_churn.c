/* tests/soak.rs: N children, one after the other, each vforked and ended
 * with _exit (every seventh with status 1), then reaped: the cheapest
 * process exits there are, so that a million take minutes, not hours. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    for (long i = 0; i < n; i++) {
        pid_t p = vfork();
        if (p == 0)
            _exit(i % 7 == 0 ? 1 : 0);
        if (p < 0) {
            perror("vfork");
            return 2;
        }
        int st;
        if (waitpid(p, &st, 0) != p) {
            perror("waitpid");
            return 2;
        }
    }
    return 0;
}
