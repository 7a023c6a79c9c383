//! Creation events: who created which task, with the exact clone flags
//! (`task_newtask`), and the `--check-clone-args` cross-check against
//! `kernel_clone`'s arguments.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fentry, kprobe, map},
    maps::HashMap,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use tracer_common::{counter, ForkRecord, RECORD_FORK};

use crate::{
    filter::events_wanted,
    follow::wanted,
    kernel::{Btf, Kernel, Probe},
    ring::{count, emit_staged, Loss},
};

/// `--check-clone-args`: the arguments of the `kernel_clone` call each task
/// is in (flags, exit signal), by tid, for `fork_event` to compare.
#[map]
pub(crate) static CLONE_ARGS: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(1 << 12, 0);

/// `task_newtask(task, clone_flags)`: in `copy_process()`, current is the
/// creator; the flags are exactly what it asked for, on every path (fork,
/// vfork, clone, clone3, kernel threads).
#[btf_tracepoint(function = "task_newtask")]
pub(crate) fn fork_event(ctx: BtfTracePointContext) -> i32 {
    if cfg!(lineage) == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let (parent_pid, parent_tid) = ((id >> 32) as u32, id as u32);
    if !wanted(parent_pid) {
        return 0;
    }
    let child = ctx.arg::<u64>(0);
    if cfg!(check_clone_args) != 0 {
        check_clone_args(parent_tid, child, ctx.arg::<u64>(1));
    }
    if cfg!(filters) != 0 && !events_wanted::<Btf>(child, Btf::u32(child, off!(task_tgid))) {
        return 0;
    }
    emit_staged(Loss::Event, |r: *mut ForkRecord| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).kind = RECORD_FORK;
            (*r).exit_signal = Btf::u32(child, off!(task_exit_signal)) as i32;
            (*r).parent_pid = parent_pid;
            (*r).parent_tid = parent_tid;
            (*r).child_pid = Btf::u32(child, off!(task_tgid));
            (*r).child_tid = Btf::u32(child, off!(task_pid));
            (*r).clone_flags = ctx.arg::<u64>(1);
            // copy_process() stamps the child's start before this tracepoint:
            // the creation time, without another clock read.
            (*r).time_ns = Btf::u64(child, off!(task_start_time));
            // The child's comm is still the creator's.
            (*r).comm = Btf::comm(child);
            (*r).time_ns
        }
    });
    0
}

/// Compares what `task_newtask` reports with the arguments of the
/// `kernel_clone` call the creator is in (`--check-clone-args`).
#[inline(always)]
pub(crate) fn check_clone_args(tid: u32, child: u64, clone_flags: u64) {
    // SAFETY: the value is copied out at once.
    let Some(&[flags, exit_signal]) = (unsafe { CLONE_ARGS.get(tid) }) else {
        count(counter::CLONE_UNSEEN);
        log_debug!(
            "clone check: tid {} created a task without kernel_clone",
            tid
        );
        return;
    };
    let _ = CLONE_ARGS.remove(tid);
    // copy_process() gives a thread no exit signal and a CLONE_PARENT child
    // its creator's leader's; otherwise the one asked for.
    let child_signal = Btf::u32(child, off!(task_exit_signal)) as i32;
    let signal_ok = if clone_flags & CLONE_THREAD != 0 {
        child_signal == -1
    } else {
        clone_flags & CLONE_PARENT != 0 || child_signal == exit_signal as i32
    };
    if flags == clone_flags && signal_ok {
        count(counter::CLONE_AGREE);
    } else {
        count(counter::CLONE_DIFFER);
        log_warn!(
            "clone check: tid {}: task_newtask flags {:x}, exit signal {}; kernel_clone's {:x}, {}",
            tid,
            clone_flags,
            child_signal,
            flags,
            exit_signal as i32
        );
    }
}

pub(crate) const CLONE_PARENT: u64 = 0x8000;

pub(crate) const CLONE_THREAD: u64 = 0x1_0000;

/// `kernel_clone(struct kernel_clone_args *args)`, for `--check-clone-args`:
/// fork, vfork, clone, clone3 and kernel threads all pass through it.
#[fentry(function = "kernel_clone")]
pub(crate) fn clone_args_fentry(ctx: FEntryContext) -> i32 {
    save_clone_args::<Btf>(ctx.arg::<u64>(0));
    0
}

#[kprobe(function = "kernel_clone")]
pub(crate) fn clone_args_kprobe(ctx: ProbeContext) -> u32 {
    save_clone_args::<Probe>(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[inline(always)]
pub(crate) fn save_clone_args<K: Kernel>(args: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let flags = K::u64(args, off!(clone_args_flags));
    let exit_signal = i64::from(K::u32(args, off!(clone_args_exit_signal)) as i32) as u64;
    let _ = CLONE_ARGS.insert(tid, [flags, exit_signal], 0);
}
