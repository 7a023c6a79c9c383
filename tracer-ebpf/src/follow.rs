//! `tracer run`: the thread groups it follows, from the command down, by
//! creation; every step twice, because the kernel may skip a program.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, generated::bpf_get_ns_current_pid_tgid,
    },
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap},
    programs::BtfTracePointContext,
};
pub(crate) use tracer_common::tracked::{FOLLOWED, REPORTED_AWAITING_STAMP, REPORTED_DONE};
use tracer_common::{counter, Tracked};

use crate::{
    exit::emit_exit_at_free,
    kernel::{Btf, Kernel},
    ring::count,
};

/// Thread groups `tracer run` follows: the command, then every group created
/// by a tracked one (see `follow_fork`). Keyed by tgid, valued by the
/// group's leader start time and its state ([`FOLLOWED`],
/// [`REPORTED_AWAITING_STAMP`] or [`REPORTED_DONE`]); a group stays until
/// its leader is freed ([`track_free`]), so that a second copy of an exit
/// program, or a later look at its ancestry, finds it reported.
///
/// Lookups go through [`state`], which compares the start time: an entry
/// can outlive its group (its leader's free unseen, its tgid taken again
/// before the free, which comes an RCU grace period after the pid is
/// released), and must then not make a stranger with that tgid, or the
/// stranger's children, look followed.
#[map]
pub(crate) static TRACKED: HashMap<u32, Tracked> = HashMap::with_max_entries(1 << 16, 0);

/// The start time of `task`'s group leader: what tells a group from a later
/// one with the same tgid.
#[inline(always)]
pub(crate) fn leader_start<K: Kernel>(task: u64) -> u64 {
    K::u64(K::u64(task, off!(task_group_leader)), off!(task_start_time))
}

/// The `TRACKED` state of group `tgid`, whose leader started at `start`;
/// `None` when it is not tracked (an entry of an earlier group with that
/// tgid included).
#[inline(always)]
pub(crate) fn state(tgid: u32, start: u64) -> Option<u32> {
    // SAFETY: a plain value, copied out at once.
    let t = unsafe { TRACKED.get(tgid) }?;
    (t.start_ns == start || t.start_ns == 0).then_some(t.state)
}

/// Sets the `TRACKED` state of group `tgid`; false when the map is full.
#[inline(always)]
pub(crate) fn set_state(tgid: u32, start: u64, state: u32) -> bool {
    let t = Tracked {
        start_ns: start,
        state,
        _pad: 0,
    };
    TRACKED.insert(tgid, t, 0).is_ok()
}

/// Ancestors `emit_exit` looks at for a group no follow program saw created.
pub(crate) const ANCESTORS: usize = 4;

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// `tracer run`: whether the dying group `tgid` is one we follow and its
/// exit has not been reported yet. A group no follow program saw created
/// (both skipped by the kernel, see `follow_fork`) is still ours when a
/// tracked group is among its nearest ancestors: only the command's
/// descendants have one (orphans go to the nearest subreaper or init).
#[inline(always)]
pub(crate) fn unreported<K: Kernel>(task: u64, tgid: u32, start: u64) -> bool {
    match state(tgid, start) {
        Some(FOLLOWED) => return true,
        Some(_) => return false,
        None => {}
    }
    let mut t = task;
    for _ in 0..ANCESTORS {
        t = K::u64(t, off!(task_real_parent));
        let pid = K::u32(t, off!(task_tgid));
        if pid == 0 {
            return false;
        }
        if state(pid, leader_start::<K>(t)).is_some() {
            return true;
        }
    }
    false
}

/// Whether the current thread group's events are wanted: always system-wide,
/// only for tracked groups under `tracer run`.
#[inline(always)]
pub(crate) fn wanted(tgid: u32) -> bool {
    // SAFETY: a lookup whose value is not used.
    cfg!(follow_tracked) == 0 || unsafe { TRACKED.get(tgid) }.is_some()
}

/// `sched_process_fork(parent, child)`: for `tracer run`, a group created by
/// a tracked group is tracked too. Runs before the child is first scheduled,
/// so no exit of it can be missed; creation, not parentage, decides, so
/// reparenting and CLONE_PARENT do not lose anyone.
///
/// The kernel may skip a tracing program: it runs each with a per-CPU
/// guard against recursion, and where tracing programs run preemptible
/// (fentry always; tp_btf too on 7.x, preempt=full or lazy by default) a
/// task preempted inside the program makes the guard turn away the next
/// task on that CPU, silently but for the program's `recursion_misses`.
/// So every step `tracer run` depends on has two programs of its own, on
/// different hooks or as two copies on one, each with its own guard: the
/// fork here and in [`follow_newtask`], the exit and the stamp in their
/// `_again` copies. What both miss is recovered (`unreported`) or counted
/// ([`track_free`]).
#[btf_tracepoint(function = "sched_process_fork")]
pub(crate) fn follow_fork(ctx: BtfTracePointContext) -> i32 {
    follow(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

/// `task_newtask(task, clone_flags)`, the second follow program (see
/// [`follow_fork`]): in `copy_process()`, current is the creator.
#[btf_tracepoint(function = "task_newtask")]
pub(crate) fn follow_newtask(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: the helper returns current's task_struct, typed for the
    // verifier.
    let creator = unsafe { bpf_get_current_task_btf() } as u64;
    follow(creator, ctx.arg::<u64>(0));
    0
}

/// `tracer run` in a pid namespace of its own: slot 0 is set by the loader
/// while it creates the command, slot 1 is where the follow programs put
/// the tracer's pid as the kernel knows it, when they see it fork.
#[map]
pub(crate) static SELF_IN_NS: Array<u32> = Array::with_max_entries(2, 0);

/// Whether the current task is the tracer, creating its command from a pid
/// namespace of its own: then it is tracked, as the loader tracks itself
/// by pid outside one.
#[inline(always)]
fn track_self(tgid: u32, start: u64) {
    if cfg!(self_ns_ino) == 0 || SELF_IN_NS.get(0).copied() != Some(1) {
        return;
    }
    let mut ns = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `ns` is ours and its size is given.
    let ret = unsafe {
        bpf_get_ns_current_pid_tgid(
            cfg!(self_ns_dev),
            cfg!(self_ns_ino),
            &raw mut ns,
            size_of::<bpf_pidns_info>() as u32,
        )
    };
    if ret == 0 && ns.tgid == cfg!(self_ns_tgid) {
        let _ = set_state(tgid, start, FOLLOWED);
        if let Some(slot) = SELF_IN_NS.get_ptr_mut(1) {
            // SAFETY: an array slot of ours.
            unsafe { *slot = tgid };
        }
    }
}

/// Tracks `child` when its creator's group (the current one) is tracked.
#[inline(always)]
pub(crate) fn follow(creator: u64, child: u64) {
    if cfg!(follow_tracked) == 0 {
        return;
    }
    let parent_tgid = current_tgid();
    let parent_start = leader_start::<Btf>(creator);
    track_self(parent_tgid, parent_start);
    if state(parent_tgid, parent_start).is_none() {
        return;
    }
    let child_tgid = Btf::u32(child, off!(task_tgid));
    // A new group's leader is the child itself.
    if child_tgid != 0
        && child_tgid != parent_tgid
        && !set_state(child_tgid, Btf::u64(child, off!(task_start_time)), FOLLOWED)
    {
        count(counter::TRACK_FULL);
        log_warn!(
            "tracking map full: group {} (created by {}) not followed, its exit is lost",
            child_tgid,
            parent_tgid
        );
    }
}

/// `sched_process_free(task)`: a reaped task is freed, and with its leader
/// a tracked group stops being followed. One still marked [`FOLLOWED`]
/// died without a record (the kernel skipped both exit programs): its
/// record is written now, flagged late (see `emit_exit_at_free`); counted
/// as lost only if the ring has no room for it.
#[btf_tracepoint(function = "sched_process_free")]
pub(crate) fn track_free(ctx: BtfTracePointContext) -> i32 {
    if cfg!(follow_tracked) == 0 {
        return 0;
    }
    let task = ctx.arg::<u64>(0);
    let tgid = Btf::u32(task, off!(task_tgid));
    if Btf::u32(task, off!(task_pid)) != tgid {
        return 0;
    }
    // Another group's entry when a later group took the tgid before this
    // free: that one stays.
    let Some(state) = state(tgid, Btf::u64(task, off!(task_start_time))) else {
        return 0;
    };
    if state == FOLLOWED {
        log_warn!(
            "group {} freed unreported: the kernel skipped both exit programs; \
             recorded late",
            tgid
        );
        emit_exit_at_free(task, tgid);
    }
    let _ = TRACKED.remove(tgid);
    0
}
