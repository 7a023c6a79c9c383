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
//! Both copies run in the dying thread's own context, one after the other,
//! so the marks of one thread are never written concurrently.

use aya_ebpf::{macros::map, maps::LruHashMap};

use crate::kernel::Kernel;

/// The work of one dying thread done so far.
#[repr(C)]
pub(crate) struct Done {
    /// The thread's own start time: a later thread with the same tid
    /// finds another.
    start_ns: u64,
    /// The [`Work`] bits done.
    work: u64,
}

/// What a per-thread program does, one bit each.
#[derive(Clone, Copy)]
#[repr(u64)]
pub(crate) enum Work {
    /// `xacct_fentry`: the thread's figures held (and, with `--threads`,
    /// its exit sent) at `taskstats_exit`.
    TaskstatsExit = 1,
    /// `xacct_thread` or `xacct_thread_all`: the figures held at
    /// `sched_process_exit`.
    XacctThread = 2,
    /// `thread_exit_tp`: the `--threads` exit sent.
    ThreadExit = 4,
    /// The group's exit record sent (`tracer record`; `tracer run` marks
    /// its groups in `TRACKED`).
    Exit = 8,
    /// The group's `exit_mmap` stamp sent (likewise).
    Stamp = 16,
}

/// Marks by tid. An LRU: marks are never removed (the second copy may be
/// the skipped one), and a mark is looked at only for the microseconds
/// between the two copies of one hook, so the oldest can always go.
#[map]
static DONE: LruHashMap<u32, Done> = LruHashMap::with_max_entries(1 << 14, 0);

/// Whether `work` for the dying thread `task` is still to do, marking it
/// done: true for the first copy that runs, false for the second. Should
/// the mark not be stored (it always is in an LRU), both copies do the
/// work: a thread counted twice rather than lost.
#[inline(always)]
pub(crate) fn first<K: Kernel>(task: u64, work: Work) -> bool {
    let bit = work as u64;
    let tid = K::u32(task, off!(task_pid));
    let start = K::u64(task, off!(task_start_time));
    if let Some(d) = DONE.get_ptr_mut(tid) {
        // SAFETY: our map value; only this thread writes its mark.
        unsafe {
            if (*d).start_ns == start {
                if (*d).work & bit != 0 {
                    return false;
                }
                (*d).work |= bit;
                return true;
            }
        }
    }
    let _ = DONE.insert(
        tid,
        Done {
            start_ns: start,
            work: bit,
        },
        0,
    );
    true
}
