//! Types shared by the eBPF programs and the loader.
//!
//! Everything here is `#[repr(C)]` and plain old data: the eBPF side writes
//! these bytes into the ring buffer (or reads them from a global), the loader
//! reads them back on the same machine, so layout is the only contract.
#![no_std]

/// Marker for an absent kernel struct member in [`Offsets`]: the running
/// kernel's BTF has no such field (a config option is off, or the field was
/// renamed), so the eBPF side must not read it and the record marks it absent.
pub const ABSENT: u32 = u32::MAX;

/// Byte offsets of the kernel struct members the probes read, resolved from
/// `/sys/kernel/btf/vmlinux` by the loader at run time and handed to the eBPF
/// programs as the `OFFSETS` global. Nothing kernel-specific is compiled into
/// the eBPF object.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_time: u32,
    pub task_signal: u32,
    pub task_cred: u32,
    pub task_exit_signal: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    /// `task_struct.ioac` (CONFIG_TASK_XACCT); ABSENT when missing.
    pub task_ioac: u32,
    /// `task_struct.mm` and `mm_struct.mm_users`: whether the dying group
    /// frees its address space itself (then `exit_mmap` runs in it).
    pub task_mm: u32,
    pub mm_users: u32,
    /// `task_struct.se` plus `sched_entity.sum_exec_runtime`: the thread's
    /// exact on-CPU time.
    pub task_se_runtime: u32,
    /// `mm_struct.arg_start`/`arg_end` (the new image's argv, for exec
    /// events) and `linux_binprm.filename`.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub bprm_filename: u32,
    /// `task_struct.exit_code`: a thread's own exit code.
    pub task_exit_code: u32,
    // struct signal_struct
    pub signal_live: u32,
    pub signal_tty: u32,
    pub signal_maxrss: u32,
    pub signal_nvcsw: u32,
    pub signal_nivcsw: u32,
    pub signal_ioac: u32,
    /// `signal_struct.sum_sched_runtime`: exact on-CPU time of the group's
    /// threads that are gone.
    pub signal_runtime: u32,
    /// `signal_struct.pacct` plus the member offsets inside `pacct_struct`.
    pub signal_pacct: u32,
    pub pacct_flag: u32,
    pub pacct_exitcode: u32,
    pub pacct_mem: u32,
    pub pacct_utime: u32,
    pub pacct_stime: u32,
    pub pacct_minflt: u32,
    pub pacct_majflt: u32,
    // struct task_io_accounting (members may be absent without TASK_XACCT /
    // TASK_IO_ACCOUNTING)
    pub ioac_rchar: u32,
    pub ioac_wchar: u32,
    pub ioac_read_bytes: u32,
    pub ioac_write_bytes: u32,
    // struct cred: kuid_t/kgid_t are `{ u32 val }`, so the member offset is
    // the value's offset.
    pub cred_uid: u32,
    pub cred_gid: u32,
    // struct tty_struct / struct tty_driver, for the tty's dev_t
    pub tty_driver: u32,
    pub tty_index: u32,
    pub driver_major: u32,
    pub driver_minor_start: u32,
    /// `task->cgroups->dfl_cgrp->kn->id`: the cgroup v2 id, as
    /// `bpf_get_current_cgroup_id()` computes it, in four loads (ABSENT:
    /// the programs call that helper instead).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    // struct kernel_clone_args, for `--check-clone-args` only (ABSENT
    // without that struct)
    pub clone_args_flags: u32,
    pub clone_args_exit_signal: u32,
    // Why it died (`signal.rs`): the signal's si_code, and what the OOM
    // killer's verdict reads.
    /// `kernel_siginfo.si_code`.
    pub siginfo_code: u32,
    /// `signal_struct.oom_score_adj` (a `short`).
    pub signal_oom_score_adj: u32,
    /// `css_set.subsys[memory_cgrp_id]`: the task's memory cgroup state
    /// (ABSENT without CONFIG_MEMCG).
    pub css_set_memcg: u32,
    /// `cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `mem_cgroup.memory` (a `page_counter`), when `mem_cgroup.css` is its
    /// first member; and the counter's usage, limit and parent.
    pub memcg_memory: u32,
    pub counter_usage: u32,
    pub counter_max: u32,
    pub counter_parent: u32,
    /// `kernfs_node.name` and its parent (`parent`, `__parent` from 6.15).
    pub kernfs_node_name: u32,
    pub kernfs_node_parent: u32,
    /// `mm_struct.rss_stat`: the count of RSS counter `i` (MM_FILEPAGES 0,
    /// MM_ANONPAGES 1, MM_SHMEMPAGES 3) is at `mm_rss_stat + i *
    /// rss_stride` (an `atomic_long_t` before 6.2, a `percpu_counter`'s
    /// `count` since, which is what the kernel's own OOM report reads).
    pub mm_rss_stat: u32,
    pub rss_stride: u32,
    // Pids as the process's own pid namespace sees them.
    /// `task_struct.thread_pid`, `pid.level`, `pid.numbers` (an array of
    /// `struct upid { int nr; struct pid_namespace *ns; }`), `upid.ns`,
    /// `sizeof(struct upid)`, `pid_namespace.ns.inum`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_ns: u32,
    pub upid_size: u32,
    pub pidns_inum: u32,
    /// `cgroup.root` and `cgroup_root.hierarchy_id` (0: the v2 hierarchy).
    pub cgroup_root: u32,
    pub root_hierarchy_id: u32,
    /// `cgroup.self.parent`: the parent's css (for `--cgroup`), whose
    /// `cgroup` is the parent cgroup.
    pub cgroup_parent_css: u32,
    // Extended accounting as taskstats gives it (`xacct.rs`).
    /// `task_struct.acct_rss_mem1`/`acct_vm_mem1` (CONFIG_TASK_XACCT).
    pub task_acct_rss_mem1: u32,
    pub task_acct_vm_mem1: u32,
    /// `mm_struct.hiwater_rss`, `hiwater_vm`, `total_vm`.
    pub mm_hiwater_rss: u32,
    pub mm_hiwater_vm: u32,
    pub mm_total_vm: u32,
    /// `task_io_accounting.syscr`, `syscw`, `cancelled_write_bytes`.
    pub ioac_syscr: u32,
    pub ioac_syscw: u32,
    pub ioac_cancelled_write_bytes: u32,
    /// `task_struct.sched_info` plus `sched_info.run_delay`.
    pub task_run_delay: u32,
    /// `task_struct.delays` and the `task_delay_info` totals.
    pub task_delays: u32,
    pub delay_blkio: u32,
    pub delay_swapin: u32,
    pub delay_freepages: u32,
    pub delay_thrashing: u32,
    pub delay_compact: u32,
    pub delay_irq: u32,
    /// `signal_struct.nr_threads`: threads not yet released.
    pub signal_nr_threads: u32,
}

impl Offsets {
    /// All offsets absent: what the eBPF object carries until the loader
    /// fills it in.
    pub const fn absent() -> Self {
        Self {
            task_pid: ABSENT,
            task_tgid: ABSENT,
            task_comm: ABSENT,
            task_real_parent: ABSENT,
            task_group_leader: ABSENT,
            task_start_time: ABSENT,
            task_signal: ABSENT,
            task_cred: ABSENT,
            task_exit_signal: ABSENT,
            task_nvcsw: ABSENT,
            task_nivcsw: ABSENT,
            task_ioac: ABSENT,
            task_mm: ABSENT,
            mm_users: ABSENT,
            task_se_runtime: ABSENT,
            mm_arg_start: ABSENT,
            mm_arg_end: ABSENT,
            bprm_filename: ABSENT,
            task_exit_code: ABSENT,
            signal_live: ABSENT,
            signal_tty: ABSENT,
            signal_maxrss: ABSENT,
            signal_nvcsw: ABSENT,
            signal_nivcsw: ABSENT,
            signal_ioac: ABSENT,
            signal_runtime: ABSENT,
            signal_pacct: ABSENT,
            pacct_flag: ABSENT,
            pacct_exitcode: ABSENT,
            pacct_mem: ABSENT,
            pacct_utime: ABSENT,
            pacct_stime: ABSENT,
            pacct_minflt: ABSENT,
            pacct_majflt: ABSENT,
            ioac_rchar: ABSENT,
            ioac_wchar: ABSENT,
            ioac_read_bytes: ABSENT,
            ioac_write_bytes: ABSENT,
            cred_uid: ABSENT,
            cred_gid: ABSENT,
            tty_driver: ABSENT,
            tty_index: ABSENT,
            driver_major: ABSENT,
            driver_minor_start: ABSENT,
            task_cgroups: ABSENT,
            css_set_dfl_cgrp: ABSENT,
            cgroup_kn: ABSENT,
            kernfs_node_id: ABSENT,
            clone_args_flags: ABSENT,
            clone_args_exit_signal: ABSENT,
            siginfo_code: ABSENT,
            signal_oom_score_adj: ABSENT,
            css_set_memcg: ABSENT,
            css_cgroup: ABSENT,
            memcg_memory: ABSENT,
            counter_usage: ABSENT,
            counter_max: ABSENT,
            counter_parent: ABSENT,
            kernfs_node_name: ABSENT,
            kernfs_node_parent: ABSENT,
            mm_rss_stat: ABSENT,
            rss_stride: ABSENT,
            task_thread_pid: ABSENT,
            pid_level: ABSENT,
            pid_numbers: ABSENT,
            upid_ns: ABSENT,
            upid_size: ABSENT,
            pidns_inum: ABSENT,
            cgroup_root: ABSENT,
            root_hierarchy_id: ABSENT,
            cgroup_parent_css: ABSENT,
            task_acct_rss_mem1: ABSENT,
            task_acct_vm_mem1: ABSENT,
            mm_hiwater_rss: ABSENT,
            mm_hiwater_vm: ABSENT,
            mm_total_vm: ABSENT,
            ioac_syscr: ABSENT,
            ioac_syscw: ABSENT,
            ioac_cancelled_write_bytes: ABSENT,
            task_run_delay: ABSENT,
            task_delays: ABSENT,
            delay_blkio: ABSENT,
            delay_swapin: ABSENT,
            delay_freepages: ABSENT,
            delay_thrashing: ABSENT,
            delay_compact: ABSENT,
            delay_irq: ABSENT,
            signal_nr_threads: ABSENT,
        }
    }
}

/// Run-time settings for the eBPF programs, the `CONFIG` global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// 1: the `sched_process_exit` tracepoint passes `group_dead` as its
    /// second argument (kernels >= 6.16); 0: derive it from `signal->live`.
    pub exit_tp_has_group_dead: u32,
    /// 1: emit only thread groups in the `TRACKED` map (`tracer run`).
    pub follow_tracked: u32,
    /// 1: `tp_btf/exit_mmap` is attached, so a record taken before
    /// `exit_mm()` may await its final timestamp in an [`MmapStamp`].
    pub defer_to_exit_mmap: u32,
    /// 1: send fork and exec events (an output wants lineage).
    pub lineage: u32,
    /// 1: `pacct_struct` has its usual layout (seven 8-byte slots in
    /// declaration order), so it is read in one call.
    pub pacct_std: u32,
    /// 1: `task_io_accounting` starts with rchar, wchar, syscr, syscw,
    /// read_bytes, write_bytes (8 bytes each): read in one call.
    pub ioac_std: u32,
    /// 1: `kernel_clone` is hooked too, and every fork event is compared
    /// with the arguments it got (`--check-clone-args`, a cross-check).
    pub check_clone_args: u32,
    /// Only a record whose nanosecond time has these bits clear asks how
    /// full the ring is, to decide on a wakeup (the low bits are as good
    /// as random); 0: every record asks (small rings).
    pub wakeup_check_mask: u32,
    /// Wake the reader only once this many bytes wait in the ring; below
    /// it, records are submitted without a wakeup and the loader's timer
    /// collects them.
    pub wakeup_bytes: u64,
    /// 1: `oom:mark_victim` passes the victim's task (kernels >= 6.8); 0:
    /// only its pid.
    pub oom_victim_task: u32,
    /// Bytes of argv an exec event carries at most (<= [`ARGS_MAX`]).
    pub argv_bytes: u32,
    /// 1: exit records carry the pids of the process's own pid namespace.
    pub ns_ids: u32,
    /// [`filter`] bits: the filters given.
    pub filters: u32,
    /// `tracer run` inside a pid namespace of its own: that namespace
    /// (`/proc/self/ns/pid`'s device and inode) and the tracer's pid in it,
    /// so the follow programs can tell the tracer's own forks (the loader
    /// knows only its namespace pid); 0: not in one.
    pub self_ns_dev: u64,
    pub self_ns_ino: u64,
    pub self_ns_tgid: u32,
    /// The v1 hierarchy of the memory controller, whose cgroup events are
    /// sent too (0: memory is on v2, or absent).
    pub v1_hierarchy: u32,
    /// 1: delay accounting was on (`kernel.task_delayacct`) when the
    /// tracer started: the records carry the delays.
    pub delayacct: u32,
    /// 1: the RSS counters (`Offsets::mm_rss_stat`) are `percpu_counter`s
    /// (6.2 on), whose counts a BTF program may load; 0: the verifier
    /// refuses those loads (`atomic_long_t`).
    pub rss_loadable: u32,
    /// 1: with the fentry and kprobe exit hooks, each thread's taskstats
    /// figures are taken at `taskstats_exit()` (the last thread's too, before
    /// `acct_process`); 0: at `sched_process_exit` (no CONFIG_TASKSTATS).
    pub xacct_at_taskstats_exit: u32,
    /// 1: `--threads`: thread exits are sent (from `taskstats_exit` with
    /// the fentry and kprobe hooks, else from `sched_process_exit`).
    pub threads: u32,
    /// 1: records carry taskstats' figures (an output shows them: all but
    /// the acct files).
    pub xacct: u32,
    /// 1: the exit programs are attached twice (the kernel can preempt a
    /// program, and its recursion guard then skips a task), and the first
    /// copy to run for a thread marks its work done for the other; 0:
    /// once, and nothing is marked.
    pub twice: u32,
    /// `filter` bits of the options given exactly one value, which the
    /// programs compare with `filter_pid`/`filter_uid` instead of looking
    /// it up in the option's map (a hash lookup, 40-70 ns a run).
    pub filter_single: u32,
    pub filter_pid: u32,
    pub filter_uid: u32,
    /// Keeps `page_size` 8-byte aligned.
    pub _pad: u32,
    /// `PAGE_SIZE`, for taskstats' KiB and MB-usec units.
    pub page_size: u64,
}

/// A `TRACKED` entry (`tracer run`): the group's leader start time, which
/// tells the group from a later one that took its tgid, and its state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// CLOCK_MONOTONIC ns, as `task_struct.start_time`; 0 matches any
    /// group (the loader's own entry: it knows only its pid).
    pub start_ns: u64,
    /// `tracked::FOLLOWED`, `REPORTED_AWAITING_STAMP` or `REPORTED_DONE`.
    pub state: u32,
    pub _pad: u32,
}

/// States of a [`Tracked`] group.
pub mod tracked {
    /// Its exit has not been reported yet.
    pub const FOLLOWED: u32 = 1;
    /// Its exit record went out and waits for its `exit_mmap` stamp: a
    /// second copy of the exit program must not send it again.
    pub const REPORTED_AWAITING_STAMP: u32 = 2;
    /// Its exit record (and stamp) went out.
    pub const REPORTED_DONE: u32 = 3;
}

/// Bits of [`Config::filters`]: which filter maps (or tests) apply.
pub mod filter {
    pub const PID: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const COMM: u32 = 1 << 2;
    pub const CGROUP: u32 = 1 << 3;
    pub const FAILED: u32 = 1 << 4;
    pub const CONTAINER: u32 = 1 << 5;
}

/// Bits of [`ExitRecord::present`]: which optional fields the kernel had.
pub mod present {
    pub const MAXRSS: u32 = 1 << 0;
    pub const IO_CHARS: u32 = 1 << 1;
    pub const IO_BYTES: u32 = 1 << 2;
    pub const CSW: u32 = 1 << 3;
    pub const RUNTIME: u32 = 1 << 4;
    /// [`Xacct`](super::Xacct)'s high-water marks (`hiwater_rss_kb`,
    /// `hiwater_vm_kb`): some thread's address space was still there when
    /// its figures were taken.
    pub const HIWATER: u32 = 1 << 5;
    /// [`Xacct`](super::Xacct)'s delays (`Config::delayacct`).
    pub const DELAYS: u32 = 1 << 6;
    /// [`Xacct`](super::Xacct)'s counters.
    pub const XACCT: u32 = 1 << 7;
    /// `irq_delay_ns`: the kernel's `task_delay_info` has `irq_delay`
    /// (6.9 on; taskstats v14).
    pub const DELAY_IRQ: u32 = 1 << 8;
}

/// Extended accounting, the way taskstats reports a task at exit
/// (`xacct_add_tsk()`, `bacct_add_tsk()`, `delayacct_add_tsk()` in the
/// kernel): per task, I/O counters masked to whole KiB and the memory
/// integrals in MB-usec. A group's record holds the sums over its threads
/// (the high-water marks: the largest), as a taskstats listener adding up
/// the per-task records would.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Xacct {
    /// The start time of the group's leader: tells a `XACCT` entry of this
    /// group from one a dead group with the same tgid left behind.
    pub leader_start_ns: u64,
    pub hiwater_rss_kb: u64,
    pub hiwater_vm_kb: u64,
    pub coremem: u64,
    pub virtmem: u64,
    pub read_char: u64,
    pub write_char: u64,
    pub read_syscalls: u64,
    pub write_syscalls: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub cancelled_write_bytes: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
    pub cpu_delay_ns: u64,
    pub blkio_delay_ns: u64,
    pub swapin_delay_ns: u64,
    pub freepages_delay_ns: u64,
    pub thrashing_delay_ns: u64,
    pub compact_delay_ns: u64,
    pub irq_delay_ns: u64,
    /// How many of the tasks summed had delay accounting: the delays of a
    /// group's entry are present when it is not 0, even when they add up
    /// to 0 (a task that never waited to run).
    pub delay_tasks: u64,
}

/// The `kind` that starts every ring record and says which type it is.
pub const RECORD_EXIT: u32 = 1;
pub const RECORD_FORK: u32 = 2;
pub const RECORD_EXEC: u32 = 3;
pub const RECORD_THREAD_EXIT: u32 = 4;
pub const RECORD_MMAP_STAMP: u32 = 5;
pub const RECORD_KILL: u32 = 6;
pub const RECORD_OOM: u32 = 7;
pub const RECORD_CGROUP: u32 = 8;

/// A signal that can end a process, delivered (`signal_generate`): who
/// sent it, for the `killed_by` of the exit that follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillRecord {
    /// [`RECORD_KILL`].
    pub kind: u32,
    pub signal: u32,
    /// The siginfo's `si_code` (`SI_USER`, `SI_KERNEL`, `SEGV_MAPERR`...).
    pub code: i32,
    /// The target: its tgid and the thread the signal went to.
    pub target_pid: u32,
    pub target_tid: u32,
    /// The task in whose context the signal was sent.
    pub sender_pid: u32,
    pub sender_tid: u32,
    pub sender_uid: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    pub sender_comm: [u8; 16],
}

/// Levels of a cgroup path an [`OomRecord`] carries, and bytes per name.
pub const CGROUP_LEVELS: usize = 10;
pub const CGROUP_NAME_LEN: usize = 80;

/// Bits of [`OomRecord::present`].
pub mod oom_present {
    /// `anon_pages`, `file_pages`, `shmem_pages` and `oom_score_adj` (the
    /// tracepoint gave the victim's task).
    pub const VICTIM: u32 = 1 << 0;
    /// A memory cgroup at its limit was found: `path` holds it. Otherwise
    /// the OOM was system-wide (or no memcg is compiled in).
    pub const MEMCG: u32 = 1 << 1;
    /// The path has more levels than [`CGROUP_LEVELS`](super::CGROUP_LEVELS):
    /// the top ones are missing.
    pub const PATH_CUT: u32 = 1 << 2;
}

/// The OOM killer chose a victim (`oom:mark_victim`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomRecord {
    /// [`RECORD_OOM`].
    pub kind: u32,
    /// [`oom_present`] bits.
    pub present: u32,
    /// The victim: tgid (0 when the tracepoint gave only a pid) and pid.
    pub victim_pid: u32,
    pub victim_tid: u32,
    pub oom_score_adj: i32,
    /// Names filled in `path`, the cgroup's own first.
    pub levels: u32,
    /// The victim's RSS counters, in pages.
    pub anon_pages: u64,
    pub file_pages: u64,
    pub shmem_pages: u64,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// The memory cgroup whose limit was hit, leaf first, each name NUL
    /// terminated (root excluded).
    pub path: [[u8; CGROUP_NAME_LEN]; CGROUP_LEVELS],
}

/// Bits of [`ExitRecord::flags`].
pub mod flags {
    /// Taken before `exit_mm()` from a group that frees its own address
    /// space: its exit time comes in the [`MmapStamp`](super::MmapStamp)
    /// with the same tid that follows it in the ring (when `exit_mmap`
    /// runs in that task, as it almost always does).
    pub const AWAITS_MMAP_STAMP: u32 = 1 << 0;
    /// `--container`: the process's cgroup was made so recently that the
    /// loader has not yet said whether it is a wanted container's; the
    /// loader decides, from the cgroup's path (it has it: the cgroup's
    /// event came first).
    pub const CONTAINER_UNDECIDED: u32 = 1 << 1;
    /// `tracer run`: the kernel skipped both exit programs for this group
    /// (another run of each was preempted on the CPU), and the record was
    /// taken when its leader was freed, after the parent reaped it: the
    /// exit time is that of the free, the tty 0, comm and tid the
    /// leader's, and no taskstats sums are present. The rest is the
    /// kernel's, as at exit.
    pub const AT_FREE: u32 = 1 << 2;
}

/// The end of `exit_mmap()` in a dying task whose group is dead: the exit
/// time the kernel's accounting uses (it reads the clock after
/// `exit_mm()`), for the record of the same tid flagged
/// [`flags::AWAITS_MMAP_STAMP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmapStamp {
    /// [`RECORD_MMAP_STAMP`].
    pub kind: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
}

/// A thread that died while its group lives on (`--threads`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadExitRecord {
    /// [`RECORD_THREAD_EXIT`].
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// The thread's `exit_code` (as ac_exitcode's encoding).
    pub exit_code: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// The thread's exact on-CPU time.
    pub runtime_ns: u64,
    pub comm: [u8; 16],
    /// [`present`] bits of `xacct`.
    pub present: u32,
    pub _pad: u32,
    /// The thread's own taskstats figures.
    pub xacct: Xacct,
}

/// A task created (`task_newtask`): every thread and process, kernel
/// threads included, with the clone flags exactly as the kernel got them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkRecord {
    /// [`RECORD_FORK`].
    pub kind: u32,
    /// The child's `exit_signal` (SIGCHLD for most processes, -1 for
    /// threads).
    pub exit_signal: i32,
    /// The creating task (current): its tgid and tid.
    pub parent_pid: u32,
    pub parent_tid: u32,
    pub child_pid: u32,
    pub child_tid: u32,
    pub clone_flags: u64,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// The child's comm at creation (the creator's).
    pub comm: [u8; 16],
}

/// Bytes of the exec'd file name kept (NUL terminated when shorter).
pub const FILENAME_LEN: usize = 128;
/// Bytes of the new image's argv an exec event can carry (NUL separated, as
/// in the process): `--argv-bytes` up to this; a per-CPU map value holds
/// a whole record, and those stop at 32 KiB.
pub const ARGS_MAX: usize = 16384;
/// What `--argv-bytes` is by default: 4 KiB of arguments.
pub const ARGS_DEFAULT: u32 = 4096;

/// A successful exec (`sched_process_exec`). Variable length in the ring:
/// the header ([`EXEC_HEADER_LEN`] bytes) and `args_len` bytes of `args`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    /// [`RECORD_EXEC`].
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// Bytes of `args` filled; `args_total` is the whole argv's length.
    pub args_len: u32,
    pub args_total: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    pub filename: [u8; FILENAME_LEN],
    pub comm: [u8; 16],
    pub args: [u8; ARGS_MAX],
}

/// Bytes of an [`ExecRecord`] before its `args`.
pub const EXEC_HEADER_LEN: usize = core::mem::offset_of!(ExecRecord, args);

/// A record awaiting its [`MmapStamp`] longer than this is written with the
/// time from before `exit_mm()`: its `exit_mmap` ran in another task (which
/// held the mm a moment longer) or the stamp was lost to a full ring.
pub const STAMP_TIMEOUT_NS: u64 = 500_000_000;

/// Per-CPU counters in the `COUNTERS` map, by index.
pub mod counter {
    /// Exit records lost: the ring was full.
    pub const RING_FULL: u32 = 0;
    /// Groups `tracer run` could not follow because `TRACKED` was full:
    /// their exits are lost.
    pub const TRACK_FULL: u32 = 1;
    /// `--check-clone-args`: fork events whose clone flags and exit signal
    /// agree with `kernel_clone`'s arguments, those that differ, and those
    /// with no `kernel_clone` call before them (io_uring workers and idle
    /// tasks are created without one).
    pub const CLONE_AGREE: u32 = 2;
    pub const CLONE_DIFFER: u32 = 3;
    pub const CLONE_UNSEEN: u32 = 4;
    /// Fork, exec and thread exit events lost: the ring was full.
    pub const EVENTS_LOST: u32 = 5;
    /// `MmapStamp`s lost to a full ring: their records are not lost, they
    /// go out with the time from before `exit_mm()`.
    pub const STAMPS_LOST: u32 = 6;
    pub const COUNT: u32 = 7;
}

/// One thread group's death: every input of the kernel's `fill_ac()` (kernel
/// acct.c) taken at the same point of `do_exit()`, kept raw so userspace can
/// both reproduce acct_v3 exactly and give exact figures.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    /// [`RECORD_EXIT`].
    pub kind: u32,
    /// [`present`] bits.
    pub present: u32,
    /// Thread group id (the process id) in the initial pid namespace.
    pub pid: u32,
    /// Id of the thread whose exit ended the group.
    pub tid: u32,
    /// `real_parent`'s tgid at exit time, as the kernel's ac_ppid.
    pub ppid: u32,
    /// Real uid and gid (`cred->uid`, `cred->gid`).
    pub uid: u32,
    pub gid: u32,
    /// `signal->pacct.ac_flag`: AFORK, ASU, ACORE, AXSIG.
    pub ac_flag: u32,
    /// `signal->pacct.ac_exitcode`: the leader's `do_exit()` code
    /// (status << 8 | 0x80 core | signal).
    pub exit_code: u32,
    /// Signal the group leader sends its parent on death (`exit_signal`),
    /// -1 when none.
    pub exit_signal: i32,
    /// Controlling tty as the kernel's `dev_t` (MKDEV(major, minor)), 0 none.
    pub tty_dev: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// `group_leader->start_time`: CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns when the record was taken.
    pub exit_ns: u64,
    /// Group CPU time in ns (`pacct.ac_utime`, `ac_stime`).
    pub utime_ns: u64,
    pub stime_ns: u64,
    /// Virtual memory size in KiB at group death (`pacct.ac_mem`).
    pub mem_kb: u64,
    pub minflt: u64,
    pub majflt: u64,
    /// `signal->maxrss` in pages (high-water RSS).
    pub maxrss_pages: u64,
    /// `ioac.rchar`/`wchar` (bytes passed to read/write-like syscalls) and
    /// `read_bytes`/`write_bytes` (storage I/O): group totals so far plus
    /// the last thread's own.
    pub rchar: u64,
    pub wchar: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Voluntary and involuntary context switches, group plus last thread.
    pub nvcsw: u64,
    pub nivcsw: u64,
    /// cgroup v2 id of the last thread.
    pub cgroup_id: u64,
    /// Exact on-CPU time of the whole group in ns, from the scheduler
    /// (`utime_ns`/`stime_ns` are tick-sampled, as acct reports them).
    pub runtime_ns: u64,
    /// `comm` of the last thread, NUL padded.
    pub comm: [u8; 16],
    /// With `Config::ns_ids`: the pid and parent's pid as the process's
    /// own pid namespace sees them (0 for a parent outside it), and that
    /// namespace's inode number ([`INIT_PID_NS`] for the initial one).
    pub ns_pid: u32,
    pub ns_ppid: u32,
    pub pidns: u32,
    pub _pad: u32,
    /// With `Config::ns_ids`: the id of the process's cgroup in the v1
    /// hierarchy of the memory controller (where a runtime on a v1 or
    /// hybrid host puts its containers); its v2 one where memory is on v2.
    pub cgroup_v1_id: u64,
    /// The group's taskstats figures (bits [`present::HIWATER`],
    /// [`present::DELAYS`], [`present::XACCT`]).
    pub xacct: Xacct,
}

/// Records a CPU stages before it puts them into the ring as one item
/// (`STAGE`): the ring's own cost, a few hundred ns a record on our
/// machines, is then paid once for all of them.
pub const STAGE_LEN: usize = 8;

/// A CPU's staged records (`STAGE`): exit records, and
/// fork events each in the first bytes of a slot.
/// `busy` is set while a program fills a slot; `len` records are waiting.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    pub busy: u32,
    pub len: u32,
    pub records: [ExitRecord; STAGE_LEN],
}

/// The initial pid namespace's inode number (`PROC_PID_INIT_INO`).
pub const INIT_PID_NS: u32 = 0xEFFF_FFFC;

/// Bytes of a cgroup path a [`CgroupRecord`] carries.
pub const CGROUP_PATH_MAX: usize = 1024;

/// Kinds of [`CgroupRecord`].
pub const CGROUP_MKDIR: u32 = 1;
pub const CGROUP_RMDIR: u32 = 2;

/// A cgroup of the v2 hierarchy made or removed (`cgroup:cgroup_mkdir`,
/// `cgroup_rmdir`): its id, as exit records carry it, and its path, so
/// that an exit names its cgroup even when the cgroup is gone by the time
/// the loader reads the exit. Variable length in the ring: the header
/// ([`CGROUP_HEADER_LEN`] bytes) and `path_len` bytes of `path`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupRecord {
    /// [`RECORD_CGROUP`].
    pub kind: u32,
    /// [`CGROUP_MKDIR`] or [`CGROUP_RMDIR`].
    pub event: u32,
    /// Bytes of `path` filled, without a NUL.
    pub path_len: u32,
    /// The hierarchy: 0 for v2, else the v1 one of the memory controller.
    pub hierarchy: u32,
    /// The kernfs node id (what `bpf_get_current_cgroup_id()` gives).
    pub id: u64,
    /// From the hierarchy's root, `/` separated.
    pub path: [u8; CGROUP_PATH_MAX],
}

/// Bytes of a [`CgroupRecord`] before its `path`.
pub const CGROUP_HEADER_LEN: usize = core::mem::offset_of!(CgroupRecord, path);

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are #[repr(C)] with only integer fields and no padding
    // the compiler inserts (explicit `_pad`), so any bit pattern is valid.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ExitRecord {}
    unsafe impl aya::Pod for super::Stage {}
    unsafe impl aya::Pod for super::ForkRecord {}
    unsafe impl aya::Pod for super::ExecRecord {}
    unsafe impl aya::Pod for super::ThreadExitRecord {}
    unsafe impl aya::Pod for super::MmapStamp {}
    unsafe impl aya::Pod for super::KillRecord {}
    unsafe impl aya::Pod for super::OomRecord {}
    unsafe impl aya::Pod for super::CgroupRecord {}
    unsafe impl aya::Pod for super::Xacct {}
    unsafe impl aya::Pod for super::Tracked {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Xacct>(), 22 * 8);
        assert_eq!(size_of::<Tracked>(), 16);
        assert_eq!(
            size_of::<ExitRecord>(),
            12 * 4 + 16 * 8 + 16 + 16 + 8 + size_of::<Xacct>()
        );
        assert_eq!(size_of::<ExitRecord>() % 8, 0);
        assert_eq!(size_of::<Offsets>(), 88 * 4);
        assert_eq!(size_of::<Config>(), 128);
        assert_eq!(CGROUP_HEADER_LEN, 24);
        assert_eq!(size_of::<KillRecord>(), 56);
        assert_eq!(size_of::<OomRecord>(), 56 + CGROUP_LEVELS * CGROUP_NAME_LEN);
        assert_eq!(size_of::<ForkRecord>(), 56);
        assert_eq!(size_of::<ThreadExitRecord>(), 56 + size_of::<Xacct>());
        assert_eq!(size_of::<MmapStamp>(), 16);
        assert_eq!(size_of::<Stage>(), 8 + STAGE_LEN * size_of::<ExitRecord>());
        assert_eq!(size_of::<ExecRecord>(), 32 + FILENAME_LEN + 16 + ARGS_MAX);
        assert_eq!(EXEC_HEADER_LEN, 32 + FILENAME_LEN + 16);
    }
}
