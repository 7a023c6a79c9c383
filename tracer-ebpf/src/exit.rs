//! Exit records: one per thread group death, read where the kernel's
//! `fill_ac()` reads (`signal->pacct`), from whichever hook this kernel
//! allows (see the table in `main.rs`), and `--threads`' thread exits.

use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, fentry, kprobe, map},
    maps::LruHashMap,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use tracer_common::{
    flags, present, ExitRecord, ThreadExitRecord, ABSENT, INIT_PID_NS, RECORD_EXIT,
    RECORD_THREAD_EXIT,
};

use crate::{
    diag::read_failed,
    filter::{figures_wanted, group_verdict, passes, Verdict},
    follow::{leader_start, set_state, unreported, wanted, REPORTED_AWAITING_STAMP, REPORTED_DONE},
    kernel::{member, probe_u32, probe_u64, Btf, Kernel, Probe},
    once::{first, Work},
    ring::{emit, emit_exit_record, Loss},
    xacct::{group_figures, hold, task_figures, Into},
};

/// Pid namespaces nest at most 32 deep (MAX_PID_NS_LEVEL).
const MAX_PID_LEVEL: u32 = 32;

/// Groups already reported, by `signal_struct` address, valued by the
/// leader's start time (an address reused by a later group has another)
/// and the thread that reported it: before 6.16, `group_dead` is derived
/// from `signal->live` at the tracepoint, which two threads exiting at
/// once can both see as 0.
#[map]
pub(crate) static REPORTED: LruHashMap<u64, Reported> = LruHashMap::with_max_entries(1 << 12, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Reported {
    start: u64,
    tid: u32,
    _pad: u32,
}

/// Writes the record for the dying thread group of `task` (the current
/// task). `before_exit_mm`: the hook runs before `exit_mm()`, so a group
/// that tears its address space down itself gets its exit time from
/// `exit_mmap` (see [`MmapStamp`]). `last`: where the last thread's
/// taskstats figures are. `mark`: the program has a second copy
/// that only a `once` mark keeps from reporting the group again (not the
/// kprobe, which has none, nor the tracepoint before 6.16, whose copies
/// `first_report` already tells apart: a mark its second copy never
/// looks at would hold its slot for good).
#[inline(always)]
pub(crate) fn emit_exit<K: Kernel>(task: u64, before_exit_mm: bool, last: LastThread, mark: bool) {
    let tgid = K::u32(task, off!(task_tgid));
    let start = if cfg!(follow_tracked) != 0 {
        leader_start::<K>(task)
    } else {
        0
    };
    if cfg!(follow_tracked) != 0 && !unreported::<K>(task, tgid, start) {
        return;
    }
    let mut record_flags = 0;
    if cfg!(filters) != 0 {
        match group_verdict::<K>(task, tgid) {
            Verdict::Pass => {}
            Verdict::Undecided => record_flags |= flags::CONTAINER_UNDECIDED,
            Verdict::Fail => {
                if cfg!(follow_tracked) != 0 {
                    // Not wanted, not lost: `track_free` must not count it.
                    let _ = set_state(tgid, start, REPORTED_DONE);
                }
                return;
            }
        }
    }
    // After the filters: a group they turn away costs no mark (both
    // copies turn it away).
    if cfg!(follow_tracked) == 0 && mark && !first::<K>(task, Work::Exit) {
        // The other copy sent it.
        return;
    }
    if before_exit_mm && cfg!(defer_to_exit_mmap) != 0 {
        let mm = K::u64(task, off!(task_mm));
        if mm != 0 && K::u32(mm, off!(mm_users)) == 1 {
            record_flags |= flags::AWAITS_MMAP_STAMP;
        }
    }
    if cfg!(follow_tracked) != 0 {
        // Marked, so that another copy of the exit program does not report
        // the group again; `track_free` forgets it.
        let state = if record_flags & flags::AWAITS_MMAP_STAMP == 0 {
            REPORTED_DONE
        } else {
            REPORTED_AWAITING_STAMP
        };
        let _ = set_state(tgid, start, state);
    }
    emit_exit_record(|r: *mut ExitRecord| {
        fill::<K>(r, task, tgid, last);
        // SAFETY: our reserved ring slot.
        unsafe {
            (*r).flags = record_flags;
            (*r).exit_ns
        }
    });
}

/// `tracer run`: the record of a followed group whose exit both exit
/// programs missed (the kernel skips a program on a CPU where another run
/// of it was preempted), written when its leader `task` is freed. What
/// acct takes from `signal->pacct` is complete by then, and the
/// `signal_struct` sums hold every thread but the leader, whose own the
/// task still has. Not the same: the exit time (this later one), the
/// controlling tty (dropped when the group was released), comm and tid
/// (the leader's, not the last thread's), and no taskstats sums (the
/// last thread's figures went with the skipped program). The record says
/// so ([`flags::AT_FREE`]).
#[inline(always)]
pub(crate) fn emit_exit_at_free(task: u64, tgid: u32) {
    let mut record_flags = flags::AT_FREE;
    if cfg!(filters) != 0 {
        match group_verdict::<Btf>(task, tgid) {
            Verdict::Pass => {}
            Verdict::Undecided => record_flags |= flags::CONTAINER_UNDECIDED,
            Verdict::Fail => return,
        }
    }
    emit_exit_record(|r: *mut ExitRecord| {
        fill::<Btf>(r, task, tgid, LastThread::Gone);
        // SAFETY: our reserved ring slot.
        unsafe {
            (*r).flags = record_flags;
            (*r).exit_ns
        }
    });
}

/// Where the last thread's taskstats figures are, for [`fill`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastThread {
    /// In the dying thread: read here.
    Own,
    /// Added to the group's already (`xacct_thread`).
    Held,
    /// Gone with the exit programs the kernel skipped (a record written
    /// at the leader's free): no taskstats sums at all.
    Gone,
}

/// Every field of the record, read the way `fill_ac()` reads them.
#[inline(always)]
pub(crate) fn fill<K: Kernel>(r: *mut ExitRecord, task: u64, tgid: u32, last: LastThread) {
    fill_identity::<K>(r, task, tgid);
    fill_acct::<K>(r, task);
    fill_extras::<K>(r, task);
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        if cfg!(xacct) != 0 && last != LastThread::Gone {
            let own = last == LastThread::Own;
            (*r).present |= group_figures::<K>(&raw mut (*r).xacct, task, tgid, own);
        }
        (*r).exit_ns = bpf_ktime_get_ns();
        (*r).kind = RECORD_EXIT;
    }
}

#[inline(always)]
pub(crate) fn fill_identity<K: Kernel>(r: *mut ExitRecord, task: u64, tgid: u32) {
    let leader = K::u64(task, off!(task_group_leader));
    let cred = K::u64(task, off!(task_cred));
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        (*r).pid = tgid;
        (*r).tid = K::u32(task, off!(task_pid));
        (*r).ppid = K::u32(K::u64(task, off!(task_real_parent)), off!(task_tgid));
        (*r).uid = K::u32(cred, off!(cred_uid));
        (*r).gid = K::u32(cred, off!(cred_gid));
        (*r).exit_signal = K::u32(leader, off!(task_exit_signal)) as i32;
        (*r).start_ns = K::u64(leader, off!(task_start_time));
        (*r).cgroup_id = K::cgroup_id(task);
        (*r).comm = K::comm(task);
        (*r).ns_pid = 0;
        (*r).ns_ppid = 0;
        (*r).pidns = 0;
        (*r)._pad = 0;
        (*r).cgroup_v1_id = 0;
    }
    if cfg!(ns_ids) != 0 {
        // The memory controller's cgroup: `css_set.subsys[memory]->cgroup`.
        let css = K::u64(K::u64(task, off!(task_cgroups)), off!(css_set_memcg));
        let kn = K::u64(K::u64(css, off!(css_cgroup)), off!(cgroup_kn));
        // SAFETY: `r` is our reserved ring slot.
        unsafe { (*r).cgroup_v1_id = K::u64(kn, off!(kernfs_node_id)) };
        let parent = K::u64(task, off!(task_real_parent));
        fill_ns_ids::<K>(r, leader, parent, tgid);
    }
}

/// The pid and parent's pid in the process's own pid namespace, as acct
/// in that namespace writes them (`task_tgid_nr_ns()`; 0 for a parent
/// outside it). In the initial namespace, two loads: the ids are the
/// record's own.
#[inline(always)]
fn fill_ns_ids<K: Kernel>(r: *mut ExitRecord, leader: u64, parent: u64, tgid: u32) {
    let pid = K::u64(leader, off!(task_thread_pid));
    let level = K::u32(pid, off!(pid_level));
    if level == 0 || off!(pid_numbers) == ABSENT || off!(upid_size) == ABSENT {
        // SAFETY: `r` is our reserved ring slot.
        unsafe {
            (*r).ns_pid = tgid;
            (*r).ns_ppid = (*r).ppid;
            (*r).pidns = INIT_PID_NS;
        }
        return;
    }
    // `numbers[level]`: a variable index, so helper reads.
    let level = level.min(MAX_PID_LEVEL);
    let upid = member(pid, off!(pid_numbers)) + u64::from(level * off!(upid_size));
    let ns = probe_u64(upid, off!(upid_ns));
    let parent_pid = K::u64(
        K::u64(parent, off!(task_group_leader)),
        off!(task_thread_pid),
    );
    let mut ppid = 0;
    if K::u32(parent_pid, off!(pid_level)) >= level {
        let pupid = member(parent_pid, off!(pid_numbers)) + u64::from(level * off!(upid_size));
        if probe_u64(pupid, off!(upid_ns)) == ns {
            ppid = probe_u32(pupid, 0);
        }
    }
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        (*r).ns_pid = probe_u32(upid, 0);
        (*r).ns_ppid = ppid;
        (*r).pidns = probe_u32(ns, off!(pidns_inum));
    }
}

/// `signal->pacct`, as acct_collect() left it, and the controlling tty.
#[inline(always)]
pub(crate) fn fill_acct<K: Kernel>(r: *mut ExitRecord, task: u64) {
    let signal = K::u64(task, off!(task_signal));
    let pacct = member(signal, off!(signal_pacct));
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        if !K::DIRECT && cfg!(pacct_std) != 0 && pacct != 0 {
            // ac_flag (int), ac_exitcode (long), ac_mem, ac_utime, ac_stime,
            // ac_minflt, ac_majflt: one helper call instead of seven.
            let p = bpf_probe_read_kernel(pacct as *const [u64; 7]).unwrap_or_else(|err| {
                read_failed("signal->pacct", pacct, err);
                [0; 7]
            });
            (*r).ac_flag = p[0] as u32;
            (*r).exit_code = p[1] as u32;
            (*r).mem_kb = p[2];
            (*r).utime_ns = p[3];
            (*r).stime_ns = p[4];
            (*r).minflt = p[5];
            (*r).majflt = p[6];
        } else {
            (*r).ac_flag = K::u32(pacct, off!(pacct_flag));
            // `long ac_exitcode`: the low half on a little-endian machine.
            (*r).exit_code = K::u32(pacct, off!(pacct_exitcode));
            (*r).mem_kb = K::u64(pacct, off!(pacct_mem));
            (*r).utime_ns = K::u64(pacct, off!(pacct_utime));
            (*r).stime_ns = K::u64(pacct, off!(pacct_stime));
            (*r).minflt = K::u64(pacct, off!(pacct_minflt));
            (*r).majflt = K::u64(pacct, off!(pacct_majflt));
        }
        // The controlling tty as dev_t, as tty_devnum() computes it.
        let tty = K::u64(signal, off!(signal_tty));
        (*r).tty_dev = if tty == 0 {
            0
        } else {
            let driver = K::u64(tty, off!(tty_driver));
            let major = K::u32(driver, off!(driver_major));
            let minor_start = K::u32(driver, off!(driver_minor_start));
            ((major << 20) | minor_start).wrapping_add(K::u32(tty, off!(tty_index)))
        };
    }
}

/// What acct drops: peak RSS, I/O, context switches, exact CPU time. Group
/// totals so far plus this last thread's own: other threads folded theirs
/// into signal_struct when they were released.
#[inline(always)]
pub(crate) fn fill_extras<K: Kernel>(r: *mut ExitRecord, task: u64) {
    let signal = K::u64(task, off!(task_signal));
    let sig_io = member(signal, off!(signal_ioac));
    let task_io = member(task, off!(task_ioac));
    // Presence is a property of the kernel's layout, known from the offsets.
    let mut present_bits = 0u32;
    if off!(signal_maxrss) != ABSENT {
        present_bits |= present::MAXRSS;
    }
    let io = sig_io != 0 && task_io != 0;
    if io && off!(ioac_rchar) != ABSENT && off!(ioac_wchar) != ABSENT {
        present_bits |= present::IO_CHARS;
    }
    if io && off!(ioac_read_bytes) != ABSENT && off!(ioac_write_bytes) != ABSENT {
        present_bits |= present::IO_BYTES;
    }
    if off!(signal_nvcsw) != ABSENT && off!(task_nvcsw) != ABSENT {
        present_bits |= present::CSW;
    }
    if off!(signal_runtime) != ABSENT && off!(task_se_runtime) != ABSENT {
        present_bits |= present::RUNTIME;
    }
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        (*r).present = present_bits;
        (*r).maxrss_pages = K::u64(signal, off!(signal_maxrss));
        if !K::DIRECT && cfg!(ioac_std) != 0 && io {
            // rchar, wchar, syscr, syscw, read_bytes, write_bytes.
            let a = bpf_probe_read_kernel(sig_io as *const [u64; 6]).unwrap_or_else(|err| {
                read_failed("signal->ioac", sig_io, err);
                [0; 6]
            });
            let b = bpf_probe_read_kernel(task_io as *const [u64; 6]).unwrap_or_else(|err| {
                read_failed("task->ioac", task_io, err);
                [0; 6]
            });
            (*r).rchar = a[0] + b[0];
            (*r).wchar = a[1] + b[1];
            (*r).read_bytes = a[4] + b[4];
            (*r).write_bytes = a[5] + b[5];
        } else {
            (*r).rchar = K::u64(sig_io, off!(ioac_rchar)) + K::u64(task_io, off!(ioac_rchar));
            (*r).wchar = K::u64(sig_io, off!(ioac_wchar)) + K::u64(task_io, off!(ioac_wchar));
            (*r).read_bytes =
                K::u64(sig_io, off!(ioac_read_bytes)) + K::u64(task_io, off!(ioac_read_bytes));
            (*r).write_bytes =
                K::u64(sig_io, off!(ioac_write_bytes)) + K::u64(task_io, off!(ioac_write_bytes));
        }
        (*r).nvcsw = K::u64(signal, off!(signal_nvcsw)) + K::u64(task, off!(task_nvcsw));
        (*r).nivcsw = K::u64(signal, off!(signal_nivcsw)) + K::u64(task, off!(task_nivcsw));
        (*r).runtime_ns =
            K::u64(signal, off!(signal_runtime)) + K::u64(task, off!(task_se_runtime));
    }
}

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`: runs for
/// every exiting thread, after `acct_collect()` has folded the thread's
/// times into `signal->pacct` (on every kernel version).
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn exit_tp_btf(ctx: BtfTracePointContext) -> i32 {
    exit_tp(&ctx)
}

#[inline(always)]
pub(crate) fn exit_tp(ctx: &BtfTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0);
    // A thread that is not its group's last leaves its taskstats figures
    // for the group's record, and nothing else. (Here rather than in a
    // program of its own: one fewer program run per thread. A program
    // preempted while it runs makes the kernel skip its next run on that
    // CPU; the other copy, with a guard of its own, then does the work.)
    if !group_is_dead(ctx, task) {
        if cfg!(xacct) != 0 {
            thread_figures::<Btf>(task);
        }
        return 0;
    }
    // With group_dead in the prototype (>= 6.16) the tracepoint fires
    // before exit_mm(); before that it fires after acct_process(), and two
    // threads exiting together can both see the group dead.
    let before_exit_mm = cfg!(exit_tp_has_group_dead) != 0;
    if !before_exit_mm && !first_report(task) {
        log_debug!(
            "group {} already reported: another of its threads saw it dead too",
            Btf::u32(task, off!(task_tgid))
        );
        return 0;
    }
    emit_exit::<Btf>(task, before_exit_mm, LastThread::Own, before_exit_mm);
    0
}

/// A second copy of [`exit_tp_btf`]: see `once` (and [`follow_fork`]) for
/// why; the first copy to run reports the group, the other finds it
/// reported (`TRACKED` under `tracer run`, else `once`).
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn exit_tp_btf_again(ctx: BtfTracePointContext) -> i32 {
    exit_tp(&ctx)
}

/// Each thread's taskstats figures, kept for its group's record, but the
/// last thread's, which the exit program reads itself: with fentry/kprobe
/// on `acct_process` before 6.16 where the kernel has no `taskstats_exit`
/// to hook. (The tracepoint exit program takes them itself.)
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn xacct_thread(ctx: BtfTracePointContext) -> i32 {
    xacct_thread_tp(&ctx)
}

/// A second copy of [`xacct_thread`]: see `once` for why.
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn xacct_thread_again(ctx: BtfTracePointContext) -> i32 {
    xacct_thread_tp(&ctx)
}

#[inline(always)]
fn xacct_thread_tp(ctx: &BtfTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0);
    if !group_is_dead(ctx, task) {
        thread_figures::<Btf>(task);
    }
    0
}

/// A thread's figures join its group's entry, once for the two copies of
/// the program that takes them, and not for a group the filters turn away
/// whatever its last thread (see `figures_wanted`).
#[inline(always)]
fn thread_figures<K: Kernel>(task: u64) {
    let tgid = K::u32(task, off!(task_tgid));
    if figures_wanted::<K>(task, tgid) && first::<K>(task, Work::XacctThread) {
        hold::<K>(task, tgid);
    }
}

/// Every thread's taskstats figures, the last one's included: with
/// fentry/kprobe on `acct_process` from 6.16 on where the kernel has no
/// `taskstats_exit` (the tracepoint fires before `exit_mm()` and ahead of
/// `acct_process` there).
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn xacct_thread_all(ctx: BtfTracePointContext) -> i32 {
    xacct_thread_all_tp(&ctx)
}

/// A second copy of [`xacct_thread_all`]: see `once` for why.
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn xacct_thread_all_again(ctx: BtfTracePointContext) -> i32 {
    xacct_thread_all_tp(&ctx)
}

#[inline(always)]
fn xacct_thread_all_tp(ctx: &BtfTracePointContext) -> i32 {
    thread_figures::<Btf>(ctx.arg::<u64>(0));
    0
}

/// The same tracepoint for `--threads`: a thread dying before its group.
/// A program of its own, so it can join any exit hook.
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn thread_exit_tp(ctx: BtfTracePointContext) -> i32 {
    thread_exit_at_tp(&ctx)
}

/// A second copy of [`thread_exit_tp`]: see `once` for why.
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn thread_exit_tp_again(ctx: BtfTracePointContext) -> i32 {
    thread_exit_at_tp(&ctx)
}

#[inline(always)]
fn thread_exit_at_tp(ctx: &BtfTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0);
    let dead = group_is_dead(ctx, task);
    // A thread late to the tracepoint (before 6.16) is not its group's
    // last: it has a line of its own. (This program is attached after
    // the exit program, which has reported the group by then.)
    let late = dead && cfg!(exit_tp_has_group_dead) == 0 && reported_by_another(task);
    if (!dead || late) && first::<Btf>(task, Work::ThreadExit) {
        emit_thread_exit::<Btf>(task);
    }
    0
}

/// Whether this exit at `sched_process_exit` ends the thread group.
#[inline(always)]
pub(crate) fn group_is_dead(ctx: &BtfTracePointContext, task: u64) -> bool {
    if cfg!(exit_tp_has_group_dead) != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        // Before 6.16 the tracepoint has no group_dead.
        live_threads_gone(task)
    }
}

/// Whether the task's group has no live thread left: do_exit() decrements
/// `signal->live` before both `sched_process_exit` and `exit_mm()`, so 0
/// means this is the group's last thread on its way out.
#[inline(always)]
pub(crate) fn live_threads_gone(task: u64) -> bool {
    let signal = Btf::u64(task, off!(task_signal));
    signal != 0 && Btf::u32(signal, off!(signal_live)) == 0
}

/// `task`'s group as `REPORTED` keys and values it: its `signal_struct`
/// address, the leader's start time, and `task`'s tid; with the tid of
/// the thread that reported this group, if one did.
#[inline(always)]
fn reported(task: u64) -> (u64, Reported, Option<u32>) {
    let signal = Btf::u64(task, off!(task_signal));
    let this = Reported {
        start: leader_start::<Btf>(task),
        tid: Btf::u32(task, off!(task_pid)),
        _pad: 0,
    };
    // SAFETY: a plain value, copied out at once.
    let by = unsafe { REPORTED.get(signal) }
        .filter(|r| r.start == this.start)
        .map(|r| r.tid);
    (signal, this, by)
}

/// Whether this dead group is reported for the first time (see `REPORTED`).
#[inline(always)]
pub(crate) fn first_report(task: u64) -> bool {
    let (signal, this, by) = reported(task);
    if by.is_some() {
        return false;
    }
    let _ = REPORTED.insert(signal, this, 0);
    true
}

/// Before 6.16: whether another thread of `task`'s dead group reported it
/// already. Either `task` left `signal->live` before that thread but
/// reached the tracepoint after it (preempted, or on a slower CPU), or
/// `task` took it to 0 and that thread, which left just before, reached
/// the tracepoint first (README, "A thread can be late to its group's
/// sums"). Either way `task`'s figures are not in the group's record.
#[inline(always)]
fn reported_by_another(task: u64) -> bool {
    let (_, this, by) = reported(task);
    by.is_some_and(|tid| tid != this.tid)
}

/// A thread dying before its group (`--threads`), with its own taskstats
/// figures.
#[inline(always)]
pub(crate) fn emit_thread_exit<K: Kernel>(task: u64) {
    let pid = K::u32(task, off!(task_tgid));
    if !wanted(pid) || !passes::<K>(task, pid, K::u32(task, off!(task_exit_code))) {
        return;
    }
    emit(Loss::Event, |r: *mut ThreadExitRecord| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).kind = RECORD_THREAD_EXIT;
            (*r).pid = pid;
            (*r).tid = K::u32(task, off!(task_pid));
            (*r).exit_code = K::u32(task, off!(task_exit_code));
            (*r).time_ns = bpf_ktime_get_ns();
            (*r).runtime_ns = K::u64(task, off!(task_se_runtime));
            (*r).comm = K::comm(task);
            (*r)._pad = 0;
            (*r).present = if cfg!(xacct) != 0 {
                task_figures::<K>(&raw mut (*r).xacct, task, Into::Write)
            } else {
                0
            };
            (*r).xacct.leader_start_ns = 0;
            (*r).time_ns
        }
    });
}

/// `acct_process()`: the kernel's own accounting hook, called exactly once per
/// dead group, with current as the last thread.
#[fentry(function = "acct_process")]
pub(crate) fn exit_fentry(_ctx: FEntryContext) -> i32 {
    exit_current()
}

#[inline(always)]
pub(crate) fn exit_current() -> i32 {
    // SAFETY: the helper returns current's task_struct, typed for the
    // verifier.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    emit_exit::<Btf>(task, false, last_thread_at_acct_process(), true);
    0
}

/// Where `acct_process` finds the last thread's taskstats figures: in the
/// thread itself, unless `xacct_fentry`/`xacct_kprobe` took them at
/// `taskstats_exit`, or `xacct_thread_all` did (6.16 on); before 6.16
/// `xacct_thread` runs after it (see there).
#[inline(always)]
fn last_thread_at_acct_process() -> LastThread {
    if cfg!(xacct_at_taskstats_exit) == 0 && cfg!(exit_tp_has_group_dead) == 0 {
        LastThread::Own
    } else {
        LastThread::Held
    }
}

/// `taskstats_exit(tsk, group_dead)`, for every thread, current: where
/// taskstats takes its per-task record, before `exit_mm()`, so the
/// address space's high-water marks are there on every kernel. With the
/// fentry exit hook; with `--threads` it sends the thread exits too, as
/// the kernel says which thread ends the group (before 6.16 the
/// tracepoint can only guess it from `signal->live`).
#[fentry(function = "taskstats_exit")]
pub(crate) fn xacct_fentry(ctx: FEntryContext) -> i32 {
    xacct_at_taskstats_exit(&ctx)
}

/// A second copy of [`xacct_fentry`]: see `once` for why. (Kprobes run
/// with preemption off and share one guard: a copy would not help.)
#[fentry(function = "taskstats_exit")]
pub(crate) fn xacct_fentry_again(ctx: FEntryContext) -> i32 {
    xacct_at_taskstats_exit(&ctx)
}

#[inline(always)]
fn xacct_at_taskstats_exit(ctx: &FEntryContext) -> i32 {
    // SAFETY: the helper returns current's task_struct, typed for the
    // verifier.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    if first::<Btf>(task, Work::TaskstatsExit) {
        at_taskstats_exit::<Btf>(task, ctx.arg::<u64>(1) & 0xffff_ffff != 0);
    }
    0
}

/// [`xacct_fentry`] with the kprobe exit hook.
#[kprobe(function = "taskstats_exit")]
pub(crate) fn xacct_kprobe(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper returns current's task_struct address.
    let task = unsafe { bpf_get_current_task() };
    at_taskstats_exit::<Probe>(task, ctx.arg::<u64>(1).unwrap_or(1) & 0xffff_ffff != 0);
    0
}

/// What both hooks on `taskstats_exit(task, group_dead)` do: the thread's
/// figures join its group's, and with `--threads` a thread that does not
/// end its group (the kernel says which) is sent.
#[inline(always)]
fn at_taskstats_exit<K: Kernel>(task: u64, group_dead: bool) {
    let tgid = K::u32(task, off!(task_tgid));
    if figures_wanted::<K>(task, tgid) {
        hold::<K>(task, tgid);
    }
    if cfg!(threads) != 0 && !group_dead {
        emit_thread_exit::<K>(task);
    }
}

/// A second copy of [`exit_fentry`] (see [`exit_tp_btf_again`]).
#[fentry(function = "acct_process")]
pub(crate) fn exit_fentry_again(_ctx: FEntryContext) -> i32 {
    exit_current()
}

#[kprobe(function = "acct_process")]
pub(crate) fn exit_kprobe(_ctx: ProbeContext) -> u32 {
    // SAFETY: the helper returns current's task_struct address.
    emit_exit::<Probe>(
        unsafe { bpf_get_current_task() },
        false,
        last_thread_at_acct_process(),
        false,
    );
    0
}
