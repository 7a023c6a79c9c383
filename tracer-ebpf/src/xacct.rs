//! Extended accounting equal to the kernel's taskstats: what a taskstats
//! listener gets for each task that exits (`bacct_add_tsk()`,
//! `xacct_add_tsk()`, `delayacct_add_tsk()`), summed over a group's
//! threads for its exit record.
//!
//! Per task, taskstats masks the I/O counters to whole KiB and divides the
//! memory integrals down to MB-usec, so a group's figures cannot be taken
//! from `signal_struct`'s exact totals: each thread adds its own figures
//! into `XACCT` when it dies, and the group's record takes the sum.
//!
//! The high-water marks need the task's address space, which taskstats
//! reads just before `exit_mm()`: the fentry and kprobe modes hook
//! `taskstats_exit()` itself; `sched_process_exit` sees it from 6.16 on,
//! not before (README, "Extended accounting").

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{macros::map, maps::LruHashMap};
use tracer_common::{present, Xacct, ABSENT};

use crate::kernel::{member, probe_u64, Kernel};

/// What the threads of a living group that died so far add up to, by tgid
/// (an LRU: a group whose exit was never seen is forgotten eventually; a
/// new group with the same tgid finds another leader start time).
#[map]
pub(crate) static XACCT: LruHashMap<u32, Xacct> = LruHashMap::with_max_entries(1 << 14, 0);

/// A zeroed entry to insert (the stack has no room for one).
static ZERO: Xacct = Xacct {
    leader_start_ns: 0,
    hiwater_rss_kb: 0,
    hiwater_vm_kb: 0,
    coremem: 0,
    virtmem: 0,
    read_char: 0,
    write_char: 0,
    read_syscalls: 0,
    write_syscalls: 0,
    read_bytes: 0,
    write_bytes: 0,
    cancelled_write_bytes: 0,
    nvcsw: 0,
    nivcsw: 0,
    cpu_delay_ns: 0,
    blkio_delay_ns: 0,
    swapin_delay_ns: 0,
    freepages_delay_ns: 0,
    thrashing_delay_ns: 0,
    compact_delay_ns: 0,
    irq_delay_ns: 0,
    delay_tasks: 0,
};

/// `bpf_map_update_elem()` flags.
const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// `KB_MASK`: taskstats reports I/O counters in whole KiB.
const KB_MASK: u64 = !1023;

/// How `dst` takes a figure: written (a record of one task) or added (an
/// entry other threads share; atomically, two threads of a group may die
/// at once).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Into {
    Write,
    Add,
}

#[inline(always)]
fn put(dst: *mut u64, v: u64, how: Into) {
    match how {
        // SAFETY: `dst` points into a ring slot or map value of ours.
        Into::Write => unsafe { *dst = v },
        Into::Add => {
            if v != 0 {
                // SAFETY: as above, 8-byte aligned. BPF's atomic add: core's
                // AtomicU64 offers no read-modify-write on this target.
                unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
            }
        }
    }
}

#[inline(always)]
fn put_max(dst: *mut u64, v: u64, how: Into) {
    // SAFETY: `dst` points into a ring slot or map value of ours. Two
    // threads of one group read the same address space: a race between
    // them writes nearly the same mark.
    unsafe {
        if how == Into::Write || v > *dst {
            *dst = v;
        }
    }
}

/// The task's own taskstats figures into `dst`; returns the [`present`]
/// bits they make.
#[inline(always)]
pub(crate) fn task_figures<K: Kernel>(dst: *mut Xacct, task: u64, how: Into) -> u32 {
    let page = cfg!(page_size);
    let mut bits = present::XACCT;
    // SAFETY (every field pointer): `dst` is ours (see `put`).
    unsafe {
        let mm = K::u64(task, off!(task_mm));
        if mm != 0 && off!(mm_hiwater_rss) != ABSENT {
            bits |= present::HIWATER;
            // get_mm_hiwater_rss(): the mark (updated only before pages
            // are freed) or the RSS now, whichever is larger; and
            // get_mm_hiwater_vm() likewise.
            let rss = K::u64(mm, off!(mm_hiwater_rss)).max(mm_rss::<K>(mm));
            let vm = K::u64(mm, off!(mm_hiwater_vm)).max(K::u64(mm, off!(mm_total_vm)));
            put_max(&raw mut (*dst).hiwater_rss_kb, rss * page / 1024, how);
            put_max(&raw mut (*dst).hiwater_vm_kb, vm * page / 1024, how);
        }
        // pages * ns / 1024 -> MB-usec, as xacct_add_tsk() divides.
        let coremem = K::u64(task, off!(task_acct_rss_mem1)) * page / (1000 * 1024);
        let virtmem = K::u64(task, off!(task_acct_vm_mem1)) * page / (1000 * 1024);
        put(&raw mut (*dst).coremem, coremem, how);
        put(&raw mut (*dst).virtmem, virtmem, how);
        let io = member(task, off!(task_ioac));
        put(
            &raw mut (*dst).read_char,
            K::u64(io, off!(ioac_rchar)) & KB_MASK,
            how,
        );
        put(
            &raw mut (*dst).write_char,
            K::u64(io, off!(ioac_wchar)) & KB_MASK,
            how,
        );
        put(
            &raw mut (*dst).read_syscalls,
            K::u64(io, off!(ioac_syscr)) & KB_MASK,
            how,
        );
        put(
            &raw mut (*dst).write_syscalls,
            K::u64(io, off!(ioac_syscw)) & KB_MASK,
            how,
        );
        put(
            &raw mut (*dst).read_bytes,
            K::u64(io, off!(ioac_read_bytes)) & KB_MASK,
            how,
        );
        put(
            &raw mut (*dst).write_bytes,
            K::u64(io, off!(ioac_write_bytes)) & KB_MASK,
            how,
        );
        put(
            &raw mut (*dst).cancelled_write_bytes,
            K::u64(io, off!(ioac_cancelled_write_bytes)) & KB_MASK,
            how,
        );
        put(&raw mut (*dst).nvcsw, K::u64(task, off!(task_nvcsw)), how);
        put(&raw mut (*dst).nivcsw, K::u64(task, off!(task_nivcsw)), how);
        // delayacct_add_tsk() gives nothing for a task without delay
        // accounting (made while it was off).
        let d = if cfg!(delayacct) != 0 {
            K::u64(task, off!(task_delays))
        } else {
            0
        };
        put(&raw mut (*dst).delay_tasks, u64::from(d != 0), how);
        if d != 0 {
            bits |= present::DELAYS;
            if off!(delay_irq) != ABSENT {
                bits |= present::DELAY_IRQ;
            }
            put(
                &raw mut (*dst).cpu_delay_ns,
                K::u64(task, off!(task_run_delay)),
                how,
            );
            put(
                &raw mut (*dst).blkio_delay_ns,
                K::u64(d, off!(delay_blkio)),
                how,
            );
            put(
                &raw mut (*dst).swapin_delay_ns,
                K::u64(d, off!(delay_swapin)),
                how,
            );
            put(
                &raw mut (*dst).freepages_delay_ns,
                K::u64(d, off!(delay_freepages)),
                how,
            );
            put(
                &raw mut (*dst).thrashing_delay_ns,
                K::u64(d, off!(delay_thrashing)),
                how,
            );
            put(
                &raw mut (*dst).compact_delay_ns,
                K::u64(d, off!(delay_compact)),
                how,
            );
            put(
                &raw mut (*dst).irq_delay_ns,
                K::u64(d, off!(delay_irq)),
                how,
            );
        }
    }
    bits
}

/// The resident pages now: file + anon + shmem counters (MM_SWAPENTS, 2,
/// is not resident), as `get_mm_rss()` adds them.
#[inline(always)]
fn mm_rss<K: Kernel>(mm: u64) -> u64 {
    let at = off!(mm_rss_stat);
    let stride = off!(rss_stride);
    if at == ABSENT || stride == ABSENT {
        return 0;
    }
    // get_mm_counter() reads a negative (per-CPU drift) as 0. Before 6.2
    // the counters are `atomic_long_t`s, which the verifier refuses a BTF
    // load from: helper reads there.
    let c = |i: u32| {
        let v = if K::DIRECT && cfg!(rss_loadable) != 0 {
            K::u64(mm, at + i * stride)
        } else {
            probe_u64(mm, at + i * stride)
        };
        (v as i64).max(0) as u64
    };
    c(0) + c(1) + c(3)
}

/// A dying thread's figures join its group's entry (every thread but the
/// last with `xacct_thread`; every thread at `taskstats_exit`).
#[inline(always)]
pub(crate) fn hold<K: Kernel>(task: u64, tgid: u32) {
    let start = K::u64(K::u64(task, off!(task_group_leader)), off!(task_start_time));
    let entry = match XACCT.get_ptr_mut(tgid) {
        // SAFETY: our map value.
        Some(e) if unsafe { (*e).leader_start_ns } == start => e,
        found => {
            // New (BPF_NOEXIST: two of its threads dying at once must not
            // replace each other's entry, and what was added to it), or
            // left by a dead group with this tgid (BPF_ANY: start over).
            let zero: &Xacct = &ZERO;
            let flags = if found.is_some() {
                BPF_ANY
            } else {
                BPF_NOEXIST
            };
            let _ = XACCT.insert(tgid, zero, flags);
            let Some(e) = XACCT.get_ptr_mut(tgid) else {
                return;
            };
            // SAFETY: our map value. Another thread of the group may be
            // writing the same start time.
            unsafe { (*e).leader_start_ns = start };
            e
        }
    };
    task_figures::<K>(entry, task, Into::Add);
}

/// Whether `task` is, and was, its group's only thread: none other is
/// unreleased (`nr_threads`) and none was ever released (which adds its
/// CPU time to `sum_sched_runtime`, under the same lock that drops
/// `nr_threads`). Then no other thread left figures in `XACCT`, and two
/// loads save the lookup for most processes.
#[inline(always)]
fn alone<K: Kernel>(task: u64) -> bool {
    if off!(signal_nr_threads) == ABSENT || off!(signal_runtime) == ABSENT {
        return false;
    }
    let signal = K::u64(task, off!(task_signal));
    K::u32(signal, off!(signal_nr_threads)) == 1 && K::u64(signal, off!(signal_runtime)) == 0
}

/// The group's figures for its exit record: what its dead threads left in
/// `XACCT` plus, with `own`, the last thread's (else the per-thread
/// program has added them already). Returns the [`present`] bits.
#[inline(always)]
pub(crate) fn group_figures<K: Kernel>(dst: *mut Xacct, task: u64, tgid: u32, own: bool) -> u32 {
    let start = K::u64(K::u64(task, off!(task_group_leader)), off!(task_start_time));
    let held = if own && alone::<K>(task) {
        None
    } else {
        XACCT.get_ptr(tgid).filter(|&e| {
            // SAFETY: our map value.
            unsafe { (*e).leader_start_ns == start }
        })
    };
    let mut bits = 0;
    if own {
        bits = task_figures::<K>(dst, task, Into::Write);
    } else {
        // SAFETY: `dst` is our ring slot.
        unsafe { *dst = ZERO };
    }
    if let Some(e) = held {
        // SAFETY: our map value and ring slot.
        unsafe {
            let e = &*e;
            bits |= present::XACCT;
            if e.hiwater_rss_kb != 0 {
                bits |= present::HIWATER;
            }
            if cfg!(delayacct) != 0 && e.delay_tasks != 0 {
                bits |= present::DELAYS;
                if off!(delay_irq) != ABSENT {
                    bits |= present::DELAY_IRQ;
                }
            }
            let d = &mut *dst;
            d.hiwater_rss_kb = d.hiwater_rss_kb.max(e.hiwater_rss_kb);
            d.hiwater_vm_kb = d.hiwater_vm_kb.max(e.hiwater_vm_kb);
            d.coremem += e.coremem;
            d.virtmem += e.virtmem;
            d.read_char += e.read_char;
            d.write_char += e.write_char;
            d.read_syscalls += e.read_syscalls;
            d.write_syscalls += e.write_syscalls;
            d.read_bytes += e.read_bytes;
            d.write_bytes += e.write_bytes;
            d.cancelled_write_bytes += e.cancelled_write_bytes;
            d.nvcsw += e.nvcsw;
            d.nivcsw += e.nivcsw;
            d.cpu_delay_ns += e.cpu_delay_ns;
            d.blkio_delay_ns += e.blkio_delay_ns;
            d.swapin_delay_ns += e.swapin_delay_ns;
            d.freepages_delay_ns += e.freepages_delay_ns;
            d.thrashing_delay_ns += e.thrashing_delay_ns;
            d.compact_delay_ns += e.compact_delay_ns;
            d.irq_delay_ns += e.irq_delay_ns;
            d.delay_tasks += e.delay_tasks;
        }
        let _ = XACCT.remove(tgid);
    }
    // SAFETY: `dst` is our ring slot.
    unsafe { (*dst).leader_start_ns = start };
    bits
}
