//! `exit_mmap` stamps: the exit time acct takes after `exit_mm()`, for a
//! record sent before it (6.16 and later, see `exit.rs`).

use aya_ebpf::{
    helpers::{bpf_get_current_task_btf, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{MmapStamp, RECORD_MMAP_STAMP};

use crate::{
    exit::live_threads_gone,
    filter::{group_verdict, Verdict},
    follow::{leader_start, set_state, state, REPORTED_AWAITING_STAMP, REPORTED_DONE},
    kernel::{Btf, Kernel},
    once::{first, Work},
    ring::{emit, Loss},
};

/// `exit_mmap(mm)`, at the end of tearing down an address space: in a
/// dying task whose group is dead, this is the exit time acct uses for the
/// record sent at `sched_process_exit` (flagged to await it). The checks
/// are plain loads, so the address spaces `exec` drops cost next to nothing.
#[btf_tracepoint(function = "exit_mmap")]
pub(crate) fn exit_mmap_stamp(_ctx: BtfTracePointContext) -> i32 {
    mmap_stamp()
}

/// A second copy of [`exit_mmap_stamp`] (see `once`): the first copy that
/// runs sends the stamp; under `tracer run` it stops following the group,
/// so the other finds nothing to do.
#[btf_tracepoint(function = "exit_mmap")]
pub(crate) fn exit_mmap_stamp_again(_ctx: BtfTracePointContext) -> i32 {
    mmap_stamp()
}

#[inline(always)]
pub(crate) fn mmap_stamp() -> i32 {
    // SAFETY: the helper returns current's task_struct, typed for the
    // verifier.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    // exit_mm() has cleared task->mm before dropping it; exec has not.
    if Btf::u64(task, off!(task_mm)) != 0 {
        return 0;
    }
    if !live_threads_gone(task) {
        return 0;
    }
    let tgid = Btf::u32(task, off!(task_tgid));
    if cfg!(filters) != 0 {
        // Its exit record was filtered out: no stamp to send.
        if group_verdict::<Btf>(task, tgid) == Verdict::Fail {
            return 0;
        }
    }
    if cfg!(follow_tracked) != 0 {
        // Its exit record marked it as awaiting this stamp; once sent, it
        // is marked reported, and another copy finds nothing to do.
        let start = leader_start::<Btf>(task);
        if state(tgid, start) != Some(REPORTED_AWAITING_STAMP) {
            return 0;
        }
        let _ = set_state(tgid, start, REPORTED_DONE);
    } else if !first::<Btf>(task, Work::Stamp) {
        return 0;
    }
    let tid = Btf::u32(task, off!(task_pid));
    emit(Loss::Stamp, |r: *mut MmapStamp| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).kind = RECORD_MMAP_STAMP;
            (*r).tid = tid;
            (*r).time_ns = bpf_ktime_get_ns();
            (*r).time_ns
        }
    });
    0
}
