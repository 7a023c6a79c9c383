//! Why it died: who sent a signal that can end a process
//! (`signal_generate`), and the OOM killer's verdict (`oom:mark_victim`).
//! Each is an event of its own, sent when it happens (rarely); the loader
//! joins it with the exit that follows, so the exit path pays nothing.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use tracer_common::{
    oom_present, KillRecord, OomRecord, ABSENT, CGROUP_LEVELS, CGROUP_NAME_LEN, RECORD_KILL,
    RECORD_OOM,
};

use crate::{
    filter::events_wanted,
    follow::wanted,
    kernel::{probe_u32, probe_u64, Btf, Kernel},
    ring::{emit, Loss},
};

/// Signals whose default action is not to end the process (SIGCHLD,
/// SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH): a
/// SIGCHLD goes with nearly every exit, so this test comes first.
const CANNOT_KILL: u64 =
    1 << 17 | 1 << 18 | 1 << 19 | 1 << 20 | 1 << 21 | 1 << 22 | 1 << 23 | 1 << 28;

/// `enum trace_signal_result`: the signal was queued (with or without its
/// siginfo); the others mean it was ignored or already pending.
const TRACE_SIGNAL_DELIVERED: u64 = 0;
const TRACE_SIGNAL_LOSE_INFO: u64 = 4;

/// `SEND_SIG_NOINFO` and `SEND_SIG_PRIV` are the pointers 0 and 1, meaning
/// `SI_USER` and `SI_KERNEL` (as the tracepoint's own fast-assign says).
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;

/// `signal_generate(sig, info, task, group, result)`, in
/// `__send_signal_locked()`: every signal any task or the kernel sends,
/// in the sender's context.
#[btf_tracepoint(function = "signal_generate")]
pub(crate) fn kill_event(ctx: BtfTracePointContext) -> i32 {
    let sig = ctx.arg::<u64>(0) & 0xffff_ffff;
    if sig == 0 || sig > 64 || (CANNOT_KILL >> sig) & 1 != 0 {
        return 0;
    }
    let result = ctx.arg::<u64>(4) & 0xffff_ffff;
    if result != TRACE_SIGNAL_DELIVERED && result != TRACE_SIGNAL_LOSE_INFO {
        return 0;
    }
    let task = ctx.arg::<u64>(2);
    let target_pid = Btf::u32(task, off!(task_tgid));
    if !wanted(target_pid) || (cfg!(filters) != 0 && !events_wanted::<Btf>(task, target_pid)) {
        return 0;
    }
    let info = ctx.arg::<u64>(1);
    // A helper read: newer verifiers (7.x) take `info` for a scalar, as
    // it may encode SEND_SIG_NOINFO or SEND_SIG_PRIV.
    let code = match info {
        0 => SI_USER,
        1 => SI_KERNEL,
        p => probe_u32(p, off!(siginfo_code)) as i32,
    };
    let sender = bpf_get_current_pid_tgid();
    emit(Loss::Event, |r: *mut KillRecord| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).kind = RECORD_KILL;
            (*r).signal = sig as u32;
            (*r).code = code;
            (*r).target_pid = target_pid;
            (*r).target_tid = Btf::u32(task, off!(task_pid));
            (*r).sender_pid = (sender >> 32) as u32;
            (*r).sender_tid = sender as u32;
            (*r).sender_uid = bpf_get_current_uid_gid() as u32;
            (*r).time_ns = bpf_ktime_get_ns();
            (*r).sender_comm = bpf_get_current_comm().unwrap_or([0; 16]);
            (*r).time_ns
        }
    });
    0
}

/// A page counter at most this many pages under its limit is the one the
/// charge failed against: a charge that ends in an OOM kill is of at most
/// `1 << PAGE_ALLOC_COSTLY_ORDER` pages, and reclaim ran before.
const AT_LIMIT_PAGES: u64 = 64;

/// Limits from here on mean "max" (PAGE_COUNTER_MAX is LONG_MAX / PAGE_SIZE).
const NO_LIMIT_PAGES: u64 = 1 << 50;

/// Memory cgroups looked at, from the victim's upwards.
const MEMCG_DEPTH: usize = 16;

/// `mark_victim(task, uid)` (>= 6.8; `mark_victim(pid)` before): the OOM
/// killer chose its victim, in the context of the task that ran out of
/// memory (or wrote the lower limit).
#[btf_tracepoint(function = "mark_victim")]
pub(crate) fn oom_event(ctx: BtfTracePointContext) -> i32 {
    let (victim, victim_pid, victim_tid) = if cfg!(oom_victim_task) != 0 {
        let task = ctx.arg::<u64>(0);
        (
            task,
            Btf::u32(task, off!(task_tgid)),
            Btf::u32(task, off!(task_pid)),
        )
    } else {
        (0, 0, ctx.arg::<u64>(0) as u32)
    };
    if victim != 0 && !wanted(victim_pid) {
        return 0;
    }
    // The victim is below the cgroup whose limit was hit; without it, the
    // task that ran out of memory is (or wrote that cgroup's limit).
    let from = if victim != 0 {
        victim
    } else {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_current_task_btf() as u64 }
    };
    let counter = counter_at_limit(from);
    emit(Loss::Event, |r: *mut OomRecord| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).kind = RECORD_OOM;
            (*r).victim_pid = victim_pid;
            (*r).victim_tid = victim_tid;
            (*r).time_ns = bpf_ktime_get_ns();
            let mut present = 0;
            (*r).oom_score_adj = 0;
            (*r).anon_pages = 0;
            (*r).file_pages = 0;
            (*r).shmem_pages = 0;
            if victim != 0 {
                present |= oom_present::VICTIM;
                let signal = Btf::u64(victim, off!(task_signal));
                (*r).oom_score_adj = read_i16(signal, off!(signal_oom_score_adj));
                let mm = Btf::u64(victim, off!(task_mm));
                (*r).file_pages = rss(mm, 0);
                (*r).anon_pages = rss(mm, 1);
                (*r).shmem_pages = rss(mm, 3);
            }
            (*r).levels = 0;
            (*r).path = [[0; CGROUP_NAME_LEN]; CGROUP_LEVELS];
            if counter != 0 {
                present |= oom_present::MEMCG;
                let memcg = counter - u64::from(off!(memcg_memory));
                let cgroup = probe_u64(memcg, off!(css_cgroup));
                let (levels, cut) = cgroup_path(probe_u64(cgroup, off!(cgroup_kn)), r);
                (*r).levels = levels;
                if cut {
                    present |= oom_present::PATH_CUT;
                }
            }
            (*r).present = present;
            (*r).time_ns
        }
    });
    0
}

/// The deepest memory page counter, from `task`'s memory cgroup upwards,
/// that is at its limit; 0 if none is (a system-wide OOM).
#[inline(always)]
fn counter_at_limit(task: u64) -> u64 {
    if off!(css_set_memcg) == ABSENT || off!(memcg_memory) == ABSENT {
        return 0;
    }
    let css_set = Btf::u64(task, off!(task_cgroups));
    // `mem_cgroup.css` is its first member: the css is the memcg.
    let memcg = probe_u64(css_set, off!(css_set_memcg));
    if memcg == 0 {
        return 0;
    }
    let mut counter = memcg + u64::from(off!(memcg_memory));
    for _ in 0..MEMCG_DEPTH {
        if counter == 0 {
            return 0;
        }
        let max = probe_u64(counter, off!(counter_max));
        let usage = probe_u64(counter, off!(counter_usage));
        if max < NO_LIMIT_PAGES && usage.saturating_add(AT_LIMIT_PAGES) >= max {
            return counter;
        }
        counter = probe_u64(counter, off!(counter_parent));
    }
    0
}

/// Names from `kn` up to (not including) its hierarchy's root, leaf first;
/// whether levels were left out.
#[inline(always)]
unsafe fn cgroup_path(mut kn: u64, r: *mut OomRecord) -> (u32, bool) {
    let mut levels = 0;
    for level in 0..CGROUP_LEVELS {
        let parent = probe_u64(kn, off!(kernfs_node_parent));
        if parent == 0 {
            return (levels, false);
        }
        let name = probe_u64(kn, off!(kernfs_node_name));
        if name != 0 {
            // SAFETY: a slot of our ring record; the helper bounds the copy.
            let _ = unsafe {
                bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*r).path[level])
            };
        }
        levels += 1;
        kn = parent;
    }
    (levels, probe_u64(kn, off!(kernfs_node_parent)) != 0)
}

/// RSS counter `index` of `mm`, in pages, as the kernel's OOM report reads
/// it (`get_mm_counter()`: negative reads as 0).
#[inline(always)]
fn rss(mm: u64, index: u32) -> u64 {
    if off!(mm_rss_stat) == ABSENT || off!(rss_stride) == ABSENT {
        return 0;
    }
    let at = off!(mm_rss_stat) + index * off!(rss_stride);
    (probe_u64(mm, at) as i64).max(0) as u64
}

#[inline(always)]
fn read_i16(base: u64, off: u32) -> i32 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: the helper checks the address.
    i32::from(unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const i16) }.unwrap_or(0))
}
