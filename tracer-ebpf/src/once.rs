//! Exit work done once by two copies of a program, per dying thread.
//!
//! The kernel may skip a tracing program: where fentry and tp_btf programs
//! run preemptible (fentry always, tp_btf on 7.x), a task preempted inside
//! one makes the per-program recursion guard turn away the next task that
//! enters it on that CPU. A thread whose taskstats figures or `--threads`
//! exit were skipped so is missing from its group's sums, silently but for
//! the program's `recursion_misses` (CI saw one on 7.3 with fentry: a
//! thread's I/O missing from its group's record; and on 7.2-rt an exit
//! record missing under `tracer record`). So each exit program but the
//! kprobes is attached twice, each copy with a guard of its own; whichever
//! runs first for a thread does the work, the other finds it done here.
//! Both copies run in the dying thread's own context, one after the other.
//! Where the kernel cannot preempt a program (`preempt=none`, `voluntary`),
//! the loader attaches one copy and says so in `CONFIG.twice`: nothing is
//! marked then.
//!
//! The mark is a slot of an array, picked by tid and work, that holds the
//! thread's tag while the first copy has run and the second not yet: the
//! first claims the empty slot (compare-and-swap), the second finds its
//! tag and empties it. Two loads, a swap and a store on the common path; a
//! hash map's insert measured 700 ns a thread on our host (LRU eviction
//! on every exit). A slot held by another thread (same index, at the same
//! moment; or left by a thread whose second copy was skipped) sends both
//! copies to the LRU of marks, `DONE`; `PENDING` counts the marks there
//! that their second copy has not seen, so that a copy finding an empty
//! slot looks there only when one may be its own.

use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap},
};

use crate::kernel::Kernel;

/// What a per-thread program does, one slot each.
#[derive(Clone, Copy)]
#[repr(u32)]
pub(crate) enum Work {
    /// `xacct_fentry`: the thread's figures held (and, with `--threads`,
    /// its exit sent) at `taskstats_exit`.
    TaskstatsExit = 0,
    /// `xacct_thread` or `xacct_thread_all`: the figures held at
    /// `sched_process_exit`.
    XacctThread = 1,
    /// `thread_exit_tp`: the `--threads` exit sent.
    ThreadExit = 2,
    /// The group's exit record sent (`tracer record`; `tracer run` marks
    /// its groups in `TRACKED`).
    Exit = 3,
    /// The group's `exit_mmap` stamp sent (likewise).
    Stamp = 4,
}

/// Slots per work kind (a power of two): threads dying at the same moment
/// with tids equal modulo this share one.
const SLOTS_LOG2: u32 = 15;

/// Tags by `work << SLOTS_LOG2 | tid % slots`; 0 is empty.
#[map]
static SLOTS: Array<u64> = Array::with_max_entries(5 << SLOTS_LOG2, 0);

/// The marks of threads whose slot was held by another: the thread's start
/// time and the bits of the work done. An LRU: a mark is looked at only
/// between the two copies of one hook.
#[repr(C)]
struct Done {
    start_ns: u64,
    work: u64,
}

#[map]
static DONE: LruHashMap<u32, Done> = LruHashMap::with_max_entries(1 << 12, 0);

/// Slot 0: marks in `DONE` whose second copy has not come (yet, or ever:
/// a skipped second copy leaves it raised, and copies then look in
/// `DONE` when they find their slot empty: slower, still exact).
#[map]
static PENDING: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (wrapping) to `PENDING`.
#[inline(always)]
fn pending_add(delta: u64) {
    if let Some(p) = PENDING.get_ptr_mut(0) {
        // SAFETY: our array slot, 8-byte aligned.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
    }
}

#[inline(always)]
fn pending() -> u64 {
    // SAFETY: a plain value, read at once.
    PENDING
        .get(0)
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}

/// Whether `work` for the dying thread `task` is still to do, marking it
/// done: true for the first copy that runs, false for the second. Should a
/// mark not be stored (it always is in an LRU), both copies do the work: a
/// thread counted twice rather than lost.
#[inline(always)]
pub(crate) fn first<K: Kernel>(task: u64, work: Work) -> bool {
    if cfg!(twice) == 0 {
        // One copy: nothing to tell apart.
        return true;
    }
    let tid = K::u32(task, off!(task_pid));
    let start = K::u64(task, off!(task_start_time));
    // tid (at most 22 bits, PID_MAX_LIMIT) and the low 40 bits of the
    // start time (18 minutes), which tell a reused tid apart; never 0,
    // as tid 0 (the idle task) does not exit.
    let tag = (u64::from(tid) << 40) | (start & ((1 << 40) - 1));
    let index = ((work as u32) << SLOTS_LOG2) | (tid & ((1 << SLOTS_LOG2) - 1));
    let Some(slot) = SLOTS.get_ptr_mut(index) else {
        return true;
    };
    // SAFETY: an array slot of ours; other threads change it only by
    // compare-and-swap from 0.
    let held = unsafe { core::ptr::read_volatile(slot) };
    if held == tag {
        // The second copy: the first has done it.
        // SAFETY: as above; the slot is ours until emptied.
        unsafe { core::ptr::write_volatile(slot, 0) };
        return false;
    }
    if held == 0 && (pending() == 0 || !in_done(tid, start, work)) {
        // SAFETY: as above.
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                slot, 0, tag,
            )
        };
        if swapped {
            return true;
        }
    }
    first_by_map(tid, start, work)
}

/// Whether `DONE` marks `work` done for the thread (the first copy found
/// the slot held, and it has been emptied since).
#[inline(always)]
fn in_done(tid: u32, start: u64, work: Work) -> bool {
    // SAFETY: a plain value, read at once.
    unsafe { DONE.get(tid) }.is_some_and(|d| d.start_ns == start && d.work & bit(work) != 0)
}

#[inline(always)]
fn bit(work: Work) -> u64 {
    1 << (work as u32)
}

/// [`first`] through `DONE`, for a thread whose slot another holds.
#[inline(always)]
fn first_by_map(tid: u32, start: u64, work: Work) -> bool {
    let bit = bit(work);
    if let Some(d) = DONE.get_ptr_mut(tid) {
        // SAFETY: our map value; only this thread writes its mark.
        unsafe {
            if (*d).start_ns == start {
                if (*d).work & bit != 0 {
                    // The second copy: the mark is no longer pending.
                    pending_add(u64::MAX);
                    return false;
                }
                (*d).work |= bit;
                pending_add(1);
                return true;
            }
        }
    }
    if DONE
        .insert(
            tid,
            Done {
                start_ns: start,
                work: bit,
            },
            0,
        )
        .is_ok()
    {
        pending_add(1);
    }
    true
}
