//! The ring buffer every record goes through, and the per-CPU counters of
//! what could not be put in it.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use tracer_common::{counter, ExitRecord, ForkRecord, Stage, RECORD_FORK, STAGE_LEN};

/// Exit records. The loader sets the size (`--ring-size`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters, indexed by `tracer_common::counter`.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(n) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and tracing programs do not nest on one CPU
        // for the same hook; a rare lost increment under nesting is the
        // worst case.
        unsafe { *n += 1 };
    }
}

/// A CPU's records waiting to go into the ring together: exit records and
/// fork events, one to a slot. `busy` is set while a
/// program fills a slot: a program that finds it set (one that preempted
/// the filler on this CPU) writes its record into the ring directly, and
/// `flush_stage`, which can interrupt the filler, leaves the stage alone
/// until the next try.
#[map]
pub(crate) static STAGE: PerCpuArray<Stage> = PerCpuArray::with_max_entries(1, 0);

/// Writes an exit record: into this CPU's stage, which goes into the ring
/// as one item when full, or (stage busy) into the ring at once.
/// `fill` as in [`emit`]. (A record that awaits its `exit_mmap` stamp may
/// then reach the loader after the stamp, which waits for it there.)
#[inline(always)]
pub(crate) fn emit_exit_record(fill: impl FnOnce(*mut ExitRecord) -> u64) {
    emit_staged(Loss::Exit, fill)
}

/// Writes a record of type `T` (no bigger than an [`ExitRecord`], whose
/// slot it takes) through this CPU's stage; see [`emit_exit_record`].
/// One ring record costs about 190 ns whatever its size, a slot a few:
/// the loader puts the kinds back in order (a fork before what its child
/// did), as records staged on different CPUs reach it out of order. A
/// small record still takes a whole slot in the ring: `exit_mmap` stamps
/// (16 bytes, one per process that frees its own address space) stay out
/// of the stage, which would have halved what a ring holds of them.
#[inline(always)]
pub(crate) fn emit_staged<T: 'static>(loss: Loss, fill: impl FnOnce(*mut T) -> u64) {
    const { assert!(size_of::<T>() <= size_of::<ExitRecord>()) };
    let Some(st) = STAGE.get_ptr_mut(0) else {
        return emit(loss, fill);
    };
    // SAFETY: this CPU's stage; volatile so that `busy` is written before
    // the slot and cleared after it, in program order (the programs that
    // can interleave with this one run on this CPU).
    unsafe {
        if read_volatile(&raw const (*st).busy) != 0 {
            return emit(loss, fill);
        }
        write_volatile(&raw mut (*st).busy, 1);
        let len = read_volatile(&raw const (*st).len) as usize;
        if len >= STAGE_LEN {
            // Cannot happen: `len` is reset when it reaches STAGE_LEN.
            write_volatile(&raw mut (*st).busy, 0);
            return emit(loss, fill);
        }
        let time_ns = fill((&raw mut (*st).records[len]).cast::<T>());
        if len + 1 == STAGE_LEN {
            if EVENTS
                .output::<[ExitRecord; STAGE_LEN]>(&(*st).records, wakeup_flags(time_ns))
                .is_err()
            {
                // No room for eight: as many as fit, one by one.
                output_each(st, STAGE_LEN);
            }
            write_volatile(&raw mut (*st).len, 0);
        } else {
            write_volatile(&raw mut (*st).len, len as u32 + 1);
        }
        write_volatile(&raw mut (*st).busy, 0);
    }
}

/// Puts what this CPU has staged into the ring. Never attached: the
/// loader runs it on each CPU (`BPF_PROG_TEST_RUN` with
/// `BPF_F_TEST_RUN_ON_CPU`) before it drains the ring. Returns 1 when a
/// program was filling the stage (it interrupted it): try again.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub(crate) fn flush_stage(_ctx: RawTracePointContext) -> i32 {
    let Some(st) = STAGE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's stage; nothing else runs on this CPU meanwhile
    // (an interrupt, or preemption off), and a filler it interrupted is
    // told by `busy`.
    unsafe {
        if read_volatile(&raw const (*st).busy) != 0 {
            return 1;
        }
        output_each(st, read_volatile(&raw const (*st).len) as usize);
        write_volatile(&raw mut (*st).len, 0);
    }
    0
}

/// Puts the first `len` records of stage `st` into the ring one by one;
/// one it has no room for is counted by its kind and named (by its own
/// ids: in `flush_stage` the current task is whichever it interrupted).
///
/// # Safety
/// `st` is this CPU's stage, which nothing else fills meanwhile.
#[inline(always)]
unsafe fn output_each(st: *mut Stage, len: usize) {
    for i in 0..STAGE_LEN {
        if i >= len {
            break;
        }
        // SAFETY: a slot of the stage, as the caller promises.
        let r = unsafe { &(*st).records[i] };
        if EVENTS
            .output::<ExitRecord>(r, u64::from(BPF_RB_NO_WAKEUP))
            .is_err()
        {
            slot_lost(r);
        }
    }
}

/// Counts and names the staged record in slot `r` that the ring had no
/// room for.
#[inline(always)]
fn slot_lost(r: &ExitRecord) {
    let (loss, tgid, tid) = if r.kind == RECORD_FORK {
        // SAFETY: the slot holds a ForkRecord (its kind says so).
        let f = unsafe { &*core::ptr::from_ref(r).cast::<ForkRecord>() };
        (Loss::Event, f.child_pid, f.child_tid)
    } else {
        (Loss::Exit, r.pid, r.tid)
    };
    count(loss.counter());
    say_lost(loss, || tgid, || tid);
}

/// Ring submit flags: wake the reader only when enough has piled up; below
/// that the loader's timer collects records, so a wakeup is not paid per
/// record. Only a sample of the records look (`Config::wakeup_check_mask`,
/// by the low bits of their nanosecond time): the query is a helper call,
/// about a tenth of a record's cost.
#[inline(always)]
pub(crate) fn wakeup_flags(time_ns: u64) -> u64 {
    if time_ns & u64::from(cfg!(wakeup_check_mask)) != 0 {
        return u64::from(BPF_RB_NO_WAKEUP);
    }
    let waiting = EVENTS.query(u64::from(aya_ebpf::bindings::BPF_RB_AVAIL_DATA));
    if waiting >= cfg!(wakeup_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// What a record counts as when the ring has no room for it.
#[derive(Clone, Copy)]
pub(crate) enum Loss {
    /// An exit record (`counter::RING_FULL`).
    Exit,
    /// An `MmapStamp` (`counter::STAMPS_LOST`).
    Stamp,
    /// A fork, exec or thread exit event (`counter::EVENTS_LOST`).
    Event,
}

impl Loss {
    /// The counter a record of this kind is counted in when lost.
    #[inline(always)]
    fn counter(self) -> u32 {
        match self {
            Loss::Exit => counter::RING_FULL,
            Loss::Stamp => counter::STAMPS_LOST,
            Loss::Event => counter::EVENTS_LOST,
        }
    }
}

/// Says which record the ring had no room for (`--bpf-log warn`): the
/// current task is the one that died (exit records, stamps, thread exits),
/// created (fork events) or exec'd.
#[inline(always)]
pub(crate) fn lost(loss: Loss) {
    say_lost(
        loss,
        || (bpf_get_current_pid_tgid() >> 32) as u32,
        || bpf_get_current_pid_tgid() as u32,
    );
}

/// [`lost`], for the record of `tgid` and `tid`: they are read inside each
/// call, which is dropped when off.
#[inline(always)]
fn say_lost(loss: Loss, tgid: impl Fn() -> u32, tid: impl Fn() -> u32) {
    match loss {
        Loss::Exit => log_warn!("ring full: exit record of tgid {} (tid {}) lost", tgid(), tid()),
        Loss::Stamp => log_warn!(
            "ring full: exit_mmap stamp of tgid {} (tid {}) lost: its record, if written, keeps the time from before exit_mm()",
            tgid(),
            tid()
        ),
        Loss::Event => log_warn!(
            "ring full: fork, exec or thread event of tgid {} (tid {}) lost",
            tgid(),
            tid()
        ),
    }
}

/// Writes one record of type `T` into the ring: `fill` writes every field
/// and returns the record's time (for [`wakeup_flags`]).
#[inline(always)]
pub(crate) fn emit<T: 'static>(loss: Loss, fill: impl FnOnce(*mut T) -> u64) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(loss.counter());
        lost(loss);
        return;
    };
    let time_ns = fill(entry.as_mut_ptr());
    entry.submit(wakeup_flags(time_ns));
}
