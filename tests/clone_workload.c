// Creates tasks in every way the lineage test checks, and logs for each what
// it asked the kernel for, one line per task:
//   <label> <creator_pid> <creator_tid> <child_tid> <flags_hex> <exit_signal> <exact|mask>
// "exact": the flags are what task_newtask must report; "mask": the C
// library chose the flags, and these bits must be among them.
#define _GNU_SOURCE
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void logline(const char *label, pid_t child_tid, unsigned long long flags, int sig,
                    const char *how) {
    printf("%s %d %ld %d %llx %d %s\n", label, getpid(), (long)syscall(SYS_gettid), child_tid,
           flags, sig, how);
    fflush(stdout);
}

static char stacks[4][64 * 1024] __attribute__((aligned(16)));

static int child_exit(void *arg) {
    (void)arg;
    syscall(SYS_exit, 0);
    return 0;
}

static int ns_child(void *arg) {
    (void)arg;
    // pid 1 of the new namespace: create one more process inside it.
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
    return 0;
}

static void *thread_fn(void *arg) {
    *(pid_t *)arg = syscall(SYS_gettid);
    return NULL;
}

static void on_usr1(int sig) { (void)sig; }

static void reap(pid_t pid, int wall) {
    if (waitpid(pid, NULL, wall ? __WALL : 0) < 0) perror("waitpid");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    // A child's non-SIGCHLD exit signal is delivered to us: not fatal.
    signal(SIGUSR1, on_usr1);
    printf("root %d\n", getpid());

    // fork, as a raw clone with only the exit signal.
    pid_t p = syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
    if (p == 0) _exit(0);
    logline("fork", p, 0, SIGCHLD, "exact");
    reap(p, 0);

    // vfork: the C library's vfork is the vfork system call.
    p = vfork();
    if (p == 0) _exit(0);
    logline("vfork", p, CLONE_VM | CLONE_VFORK, SIGCHLD, "exact");
    reap(p, 0);

    // A thread with explicit flags; it exits by itself (CLONE_CHILD_CLEARTID
    // is not asked for, so wait for it by polling its /proc entry).
    unsigned long tflags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
                           CLONE_SYSVSEM;
    pid_t t = clone(child_exit, stacks[0] + sizeof stacks[0], tflags, NULL);
    if (t < 0) { perror("clone thread"); return 1; }
    logline("thread", t, tflags, 0, "exact");
    for (int i = 0; i < 1000; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d", t);
        if (access(path, F_OK) != 0) break;
        usleep(1000);
    }

    // pthread_create: the C library picks the flags; a thread all the same.
    pthread_t th;
    pid_t ptid = 0;
    pthread_create(&th, NULL, thread_fn, &ptid);
    pthread_join(th, NULL);
    logline("pthread", ptid, CLONE_VM | CLONE_THREAD, 0, "mask");

    // posix_spawn: the C library uses CLONE_VM|CLONE_VFORK.
    char *argv[] = {"true", NULL};
    if (posix_spawn(&p, "/bin/true", NULL, NULL, argv, environ) != 0) { perror("spawn"); return 1; }
    logline("posix_spawn", p, CLONE_VM | CLONE_VFORK, SIGCHLD, "mask");
    reap(p, 0);

    // New pid, mount and UTS namespaces.
    unsigned long nsflags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS;
    p = clone(ns_child, stacks[1] + sizeof stacks[1], nsflags | SIGCHLD, NULL);
    if (p < 0) { perror("clone ns"); return 1; }
    logline("newns", p, nsflags, SIGCHLD, "exact");
    reap(p, 0);

    // A non-SIGCHLD exit signal.
    p = clone(child_exit, stacks[2] + sizeof stacks[2], SIGUSR1, NULL);
    if (p < 0) { perror("clone sigusr1"); return 1; }
    logline("exit-sigusr1", p, 0, SIGUSR1, "exact");
    reap(p, 1);

    // clone3 with CLONE_PIDFD.
    int pidfd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    p = syscall(SYS_clone3, &args, sizeof args);
    if (p == 0) _exit(0);
    if (p < 0) { perror("clone3"); return 1; }
    logline("clone3-pidfd", p, CLONE_PIDFD, SIGCHLD, "exact");
    reap(p, 0);
    close(pidfd);

    // CLONE_PARENT: the child's parent is our parent, but we created it.
    // It is not ours to reap; let it finish before we do.
    p = clone(child_exit, stacks[3] + sizeof stacks[3], CLONE_PARENT | SIGCHLD, NULL);
    if (p < 0) { perror("clone parent"); return 1; }
    logline("clone-parent", p, CLONE_PARENT, SIGCHLD, "exact");
    usleep(200000);
    return 0;
}
