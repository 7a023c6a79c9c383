//! The ring buffer every record goes through, and the per-CPU counters of
//! what could not be put in it.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::counter;

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

/// Says which record the ring had no room for (`--bpf-log warn`): the
/// current task is the one that died (exit records, stamps, thread exits),
/// created (fork events) or exec'd.
#[inline(always)]
pub(crate) fn lost(loss: Loss) {
    // The ids are read inside each call, which is dropped when off.
    let tgid = || (bpf_get_current_pid_tgid() >> 32) as u32;
    let tid = || bpf_get_current_pid_tgid() as u32;
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
        count(match loss {
            Loss::Exit => counter::RING_FULL,
            Loss::Stamp => counter::STAMPS_LOST,
            Loss::Event => counter::EVENTS_LOST,
        });
        lost(loss);
        return;
    };
    let time_ns = fill(entry.as_mut_ptr());
    entry.submit(wakeup_flags(time_ns));
}
