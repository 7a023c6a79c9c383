//! The probes: one record per thread group death, in the ring buffer, plus
//! the creation, exec and stamp events the loader joins with it. One module
//! per hook family; this file only wires them:
//!
//! - `exit`: exit records (and `--threads`' thread exits);
//! - `stamp`: `exit_mmap` stamps, the exit time of records sent before
//!   `exit_mm()`;
//! - `filter`: which exits are wanted (`--pid`, `--uid`, `--failed`...);
//! - `follow`: the groups `tracer run` follows;
//! - `lineage`: creation events with their clone flags;
//! - `exec`: exec events with file name and arguments;
//! - `xacct`: taskstats' figures, per thread and summed per group;
//! - `once`: per-thread work done once by two copies of a program;
//! - `signal`: who sent a signal that can kill, and the OOM killer's verdicts;
//! - `cgroup`: the v2 cgroups made and removed, with their paths;
//! - `ring`: the ring buffer and the loss counters;
//! - `kernel`: how a program reads a kernel struct member;
//! - `diag`: why a program gave up on something (`--bpf-log`).
//!
//! Which attach point serves which kernel (the loader picks, in this order,
//! the first that loads; `--attach` forces one):
//!
//! | family | program | attach point | kernels | why |
//! |---|---|---|---|---|
//! | exit | `exit_fentry` | fentry `acct_process` | where fentry is allowed (Debian 6.1, 6.12, 7.x; not our 6.18 hosts, whose BPF LSM refuses it) | the kernel's own accounting hook: once per dead group, after `exit_mm()`, with `signal->pacct` complete |
//! | exit | `exit_kprobe` | kprobe `acct_process` | kernels with CONFIG_KPROBES | the same hook where fentry is refused; a helper call per member |
//! | exit | `exit_tp_btf` | tp_btf `sched_process_exit` | every kernel with BTF | needs only BTF; fires per thread: group death from its `group_dead` argument (>= 6.16) or `signal->live` (before), before `exit_mm()` on >= 6.16 |
//! | stamp | `exit_mmap_stamp` | tp_btf `exit_mmap` | >= 6.16 with the tracepoint exit hook | acct reads the clock after `exit_mm()`; the tracepoint fires before it there |
//! | xacct | `xacct_fentry`, `xacct_kprobe` | fentry/kprobe `taskstats_exit` | with the fentry and kprobe exit hooks | each thread's taskstats figures where taskstats takes them (before `exit_mm()`, on every kernel), summed for the group's record (`exit_tp_btf` takes them itself: every thread's but the last's as it dies, the last's in the record) |
//! | xacct | `xacct_thread` | tp_btf `sched_process_exit` | fentry/kprobe before 6.16 without `taskstats_exit` | every thread's figures but the last's, which the exit program reads |
//! | xacct | `xacct_thread_all` | tp_btf `sched_process_exit` | fentry/kprobe from 6.16 on without `taskstats_exit` | every thread's figures, before `exit_mm()` |
//! | follow | `follow_fork`, `follow_newtask` | tp_btf `sched_process_fork`, `task_newtask` | every kernel | `tracer run`: two hooks, because the kernel may skip one (recursion guard, preemptible programs on 7.x) |
//! | follow | `track_free` | tp_btf `sched_process_free` | every kernel | forgets a group, counts one that died unreported |
//! | exit, stamp, xacct, threads | `*_again` | the same hooks again | wherever the first copy is attached (not kprobes: they run with preemption off and share one guard) | a second guard of their own; the first copy to run for a thread does its work (`TRACKED` under `tracer run`, else `once`) |
//! | lineage | `fork_event` | tp_btf `task_newtask` | every kernel | the exact clone flags, on every creation path |
//! | lineage | `clone_args_fentry`, `clone_args_kprobe` | fentry/kprobe `kernel_clone` | `--check-clone-args` only | the cross-check of `task_newtask`'s flags |
//! | exec | `exec_event` | tp_btf `sched_process_exec` | every kernel | after a successful exec, argv in the new mm |
//! | cgroup | `cgroup_made`, `cgroup_removed` | tp_btf `cgroup_mkdir`, `cgroup_rmdir` | every kernel | the path of each v2 cgroup id, taken when it is made, so an exit names a cgroup removed since |
//! | signal | `kill_event` | tp_btf `signal_generate` | every kernel | every signal sent, in the sender's context, with its siginfo: the `killed_by` of the exit |
//! | signal | `oom_event` | tp_btf `mark_victim` | every kernel; the victim's task (RSS, `oom_score_adj`) from 6.8, only its pid before | the OOM killer's own verdict, where fentry and kprobes are refused too |
//!
//! Kernel struct offsets come from the `OFFSETS` global that the loader
//! fills in from BTF: this object carries nothing specific to one kernel
//! build.
#![no_std]
#![no_main]
// `atomic_xadd` (xacct.rs): the BPF target's atomics have no `fetch_add`.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics, for BPF's atomic add")]

use tracer_common::{Config, Offsets};

/// One member offset from `OFFSETS`, read on its own: the verifier then
/// knows it as a constant (the global is a frozen read-only map), so an
/// absent member's branch is dropped at load time and a plain load at
/// `base + offset` can be checked against the kernel's BTF.
macro_rules! off {
    ($field:ident) => {
        $crate::kernel::global(&raw const $crate::OFFSETS.$field)
    };
}

/// One `CONFIG` field, known to the verifier as a constant (see `off!`):
/// code for what is switched off is not even verified.
macro_rules! cfg {
    ($field:ident) => {
        $crate::kernel::global(&raw const $crate::CONFIG.$field)
    };
}

// First: the logging macros are used by the modules after it.
#[macro_use]
mod diag;

mod cgroup;
mod exec;
mod exit;
mod filter;
mod follow;
mod kernel;
mod lineage;
mod once;
mod ring;
mod signal;
mod stamp;
mod xacct;

/// Filled in by the loader before load (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: Offsets = Offsets::absent();
#[no_mangle]
static CONFIG: Config = Config {
    exit_tp_has_group_dead: 0,
    follow_tracked: 0,
    defer_to_exit_mmap: 0,
    lineage: 0,
    pacct_std: 0,
    ioac_std: 0,
    check_clone_args: 0,
    wakeup_check_mask: 0,
    wakeup_bytes: 0,
    oom_victim_task: 0,
    argv_bytes: 0,
    ns_ids: 0,
    filters: 0,
    self_ns_dev: 0,
    self_ns_ino: 0,
    self_ns_tgid: 0,
    v1_hierarchy: 0,
    delayacct: 0,
    rss_loadable: 0,
    xacct_at_taskstats_exit: 0,
    threads: 0,
    xacct: 0,
    twice: 1,
    filter_single: 0,
    filter_pid: 0,
    filter_uid: 0,
    _pad: 0,
    page_size: 4096,
};

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
