//! The probes: one record per thread group death, in the ring buffer.
//!
//! Every exit path (tp_btf `sched_process_exit`, fentry or kprobe on
//! `acct_process`) ends in [`emit_exit`], which reads the same `signal->pacct`
//! the kernel's `fill_ac()` reads. Kernel struct offsets come from the
//! `OFFSETS` global that the loader fills in from BTF: this object carries
//! nothing specific to one kernel build.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated,
    },
    macros::{btf_tracepoint, fentry, kprobe, map},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use tracer_common::{
    counter, flags, present, Config, ExecRecord, ExitRecord, ForkRecord, MmapStamp, Offsets,
    ThreadExitRecord, ABSENT, ARGS_LEN, RECORD_EXEC, RECORD_EXIT, RECORD_FORK, RECORD_MMAP_STAMP,
    RECORD_THREAD_EXIT,
};

/// Filled in by the loader before load (`EbpfLoader::set_global`).
#[no_mangle]
static OFFSETS: Offsets = Offsets::absent();
#[no_mangle]
static CONFIG: Config = Config {
    exit_tp_has_group_dead: 0,
    follow_tracked: 0,
    defer_to_exit_mmap: 0,
    lineage: 0,
    pacct_std: 0,
    ioac_std: 0,
    check_clone_args: 0,
    wakeup_check_mask: 0,
    wakeup_bytes: 0,
};

/// Exit records. The loader sets the size (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters, indexed by `tracer_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Groups already reported, by `signal_struct` address, valued by the
/// leader's start time (an address reused by a later group has another):
/// before 6.16, `group_dead` is derived from `signal->live` at the
/// tracepoint, which two threads exiting at once can both see as 0.
#[map]
static REPORTED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1 << 12, 0);

/// Thread groups `tracer run` follows: the command, then every group created
/// by a tracked one (see `follow_fork`). Keyed by tgid, valued by
/// [`FOLLOWED`], [`REPORTED_AWAITING_STAMP`] or [`REPORTED_DONE`]; a group stays
/// until its leader is freed ([`track_free`]), so that a second copy of an
/// exit program, or a later look at its ancestry, finds it reported.
#[map]
static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(1 << 16, 0);

/// A `TRACKED` group whose exit has not been reported yet.
const FOLLOWED: u8 = 1;
/// A `TRACKED` group whose exit record went out and waits for its
/// `exit_mmap` stamp: a second copy of the exit program must not send it
/// again.
const REPORTED_AWAITING_STAMP: u8 = 2;
/// A `TRACKED` group whose exit record (and stamp) went out.
const REPORTED_DONE: u8 = 3;

/// Ancestors `emit_exit` looks at for a group no follow program saw created.
const ANCESTORS: usize = 4;

/// One member offset from `OFFSETS`, read on its own: the verifier then
/// knows it as a constant (the global is a frozen read-only map), so an
/// absent member's branch is dropped at load time and a plain load at
/// `base + offset` can be checked against the kernel's BTF.
macro_rules! off {
    ($field:ident) => {
        global(&raw const OFFSETS.$field)
    };
}

/// One `CONFIG` field, known to the verifier as a constant (see `off!`):
/// code for what is switched off is not even verified.
macro_rules! cfg {
    ($field:ident) => {
        global(&raw const CONFIG.$field)
    };
}

/// Reads a field of one of our globals.
#[inline(always)]
fn global<T: Copy>(field: *const T) -> T {
    // SAFETY: a field of a static; volatile so the compiler cannot fold in
    // the placeholder value the object is built with.
    unsafe { core::ptr::read_volatile(field) }
}

/// How a program reads kernel memory.
///
/// [`Btf`]: tp_btf and fentry programs hold pointers whose BTF type the
/// verifier knows (a tracepoint argument, `bpf_get_current_task_btf()`, and
/// every pointer member loaded through them), so a member is one load
/// instruction, checked against the kernel's BTF at load time and guarded
/// against faults by the JIT. [`Probe`]: kprobe programs have no typed
/// pointers and pay a `bpf_probe_read_kernel` call per member, which costs
/// far more (tens of ns each with retpolines and return thunks).
///
/// Both read 0 for a member absent on this kernel or a NULL base.
trait Kernel {
    /// Plain loads (no helper call per member).
    const DIRECT: bool;
    fn u64(base: u64, off: u32) -> u64;
    fn u32(base: u64, off: u32) -> u32;
    /// `task->comm` of the current task.
    fn comm(task: u64) -> [u8; 16];
    /// The cgroup v2 id of the current task.
    fn cgroup_id(task: u64) -> u64;
}

struct Btf;

impl Kernel for Btf {
    const DIRECT: bool = true;

    #[inline(always)]
    fn u64(base: u64, off: u32) -> u64 {
        if off == ABSENT || base == 0 {
            return 0;
        }
        // SAFETY: the verifier accepts this load only if `base + off` is an
        // 8-byte member of `base`'s BTF type; a faulting address reads 0.
        unsafe { core::ptr::read_volatile((base + off as u64) as *const u64) }
    }

    #[inline(always)]
    fn u32(base: u64, off: u32) -> u32 {
        if off == ABSENT || base == 0 {
            return 0;
        }
        // SAFETY: as in `u64`.
        unsafe { core::ptr::read_volatile((base + off as u64) as *const u32) }
    }

    #[inline(always)]
    fn comm(task: u64) -> [u8; 16] {
        // `char comm[16]`: two loads within the array (the verifier allows
        // any load inside an array of scalars).
        let lo = Self::u64(task, off!(task_comm));
        let hi = Self::u64(task, off!(task_comm).wrapping_add(8));
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(&lo.to_le_bytes());
        comm[8..].copy_from_slice(&hi.to_le_bytes());
        comm
    }

    #[inline(always)]
    fn cgroup_id(task: u64) -> u64 {
        if off!(task_cgroups) == ABSENT
            || off!(css_set_dfl_cgrp) == ABSENT
            || off!(cgroup_kn) == ABSENT
            || off!(kernfs_node_id) == ABSENT
        {
            // SAFETY: a helper without arguments.
            return unsafe { bpf_get_current_cgroup_id() };
        }
        // What the helper reads, without the call: the task's css_set
        // cannot change while it exits.
        let css_set = Self::u64(task, off!(task_cgroups));
        let cgroup = Self::u64(css_set, off!(css_set_dfl_cgrp));
        Self::u64(Self::u64(cgroup, off!(cgroup_kn)), off!(kernfs_node_id))
    }
}

struct Probe;

impl Kernel for Probe {
    const DIRECT: bool = false;

    #[inline(always)]
    fn u64(base: u64, off: u32) -> u64 {
        probe_u64(base, off)
    }

    #[inline(always)]
    fn u32(base: u64, off: u32) -> u32 {
        probe_u32(base, off)
    }

    #[inline(always)]
    fn comm(_task: u64) -> [u8; 16] {
        bpf_get_current_comm().unwrap_or([0; 16])
    }

    #[inline(always)]
    fn cgroup_id(_task: u64) -> u64 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_current_cgroup_id() }
    }
}

/// Not inlined: one small function keeps the kprobe program short.
#[inline(never)]
fn probe_u64(base: u64, off: u32) -> u64 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an
    // error, not a fault.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) }.unwrap_or(0)
}

#[inline(never)]
fn probe_u32(base: u64, off: u32) -> u32 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: as in probe_u64.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u32) }.unwrap_or(0)
}

/// Address of a member (for nested structs), 0 when absent.
#[inline(always)]
fn member(base: u64, off: u32) -> u64 {
    if off == ABSENT || base == 0 {
        0
    } else {
        base + off as u64
    }
}

/// `--check-clone-args`: the arguments of the `kernel_clone` call each task
/// is in (flags, exit signal), by tid, for `fork_event` to compare.
#[map]
static CLONE_ARGS: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(1 << 12, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(n) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and tracing programs do not nest on one CPU
        // for the same hook; a rare lost increment under nesting is the
        // worst case.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Ring submit flags: wake the reader only when enough has piled up; below
/// that the loader's timer collects records, so a wakeup is not paid per
/// record. Only a sample of the records look (`Config::wakeup_check_mask`,
/// by the low bits of their nanosecond time): the query is a helper call,
/// about a tenth of a record's cost.
#[inline(always)]
fn wakeup_flags(time_ns: u64) -> u64 {
    if time_ns & u64::from(cfg!(wakeup_check_mask)) != 0 {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let waiting = EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    if waiting >= cfg!(wakeup_bytes) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// What a record counts as when the ring has no room for it.
#[derive(Clone, Copy)]
enum Loss {
    /// An exit record (`counter::RING_FULL`).
    Exit,
    /// An `MmapStamp` (`counter::STAMPS_LOST`).
    Stamp,
    /// A fork, exec or thread exit event (`counter::EVENTS_LOST`).
    Event,
}

/// Writes one record of type `T` into the ring: `fill` writes every field
/// and returns the record's time (for [`wakeup_flags`]).
#[inline(always)]
fn emit<T: 'static>(loss: Loss, fill: impl FnOnce(*mut T) -> u64) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(match loss {
            Loss::Exit => counter::RING_FULL,
            Loss::Stamp => counter::STAMPS_LOST,
            Loss::Event => counter::EVENTS_LOST,
        });
        return;
    };
    let time_ns = fill(entry.as_mut_ptr());
    entry.submit(wakeup_flags(time_ns));
}

/// Writes the record for the dying thread group of `task` (the current
/// task). `before_exit_mm`: the hook runs before `exit_mm()`, so a group
/// that tears its address space down itself gets its exit time from
/// `exit_mmap` (see [`MmapStamp`]).
#[inline(always)]
fn emit_exit<K: Kernel>(task: u64, before_exit_mm: bool) {
    let tgid = K::u32(task, off!(task_tgid));
    if cfg!(follow_tracked) != 0 && !unreported::<K>(task, tgid) {
        return;
    }
    let mut record_flags = 0;
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
        let _ = TRACKED.insert(&tgid, &state, 0);
    }
    emit(Loss::Exit, |r: *mut ExitRecord| {
        fill::<K>(r, task, tgid);
        // SAFETY: our reserved ring slot.
        unsafe {
            (*r).flags = record_flags;
            (*r).exit_ns
        }
    });
}

/// `tracer run`: whether the dying group `tgid` is one we follow and its
/// exit has not been reported yet. A group no follow program saw created
/// (both skipped by the kernel, see `follow_fork`) is still ours when a
/// tracked group is among its nearest ancestors: only the command's
/// descendants have one (orphans go to the nearest subreaper or init).
#[inline(always)]
fn unreported<K: Kernel>(task: u64, tgid: u32) -> bool {
    // SAFETY: a u8 value, copied out at once.
    match unsafe { TRACKED.get(&tgid) } {
        Some(&FOLLOWED) => return true,
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
        // SAFETY: a lookup whose value is not used.
        if unsafe { TRACKED.get(&pid) }.is_some() {
            return true;
        }
    }
    false
}

/// Every field of the record, read the way `fill_ac()` reads them.
#[inline(always)]
fn fill<K: Kernel>(r: *mut ExitRecord, task: u64, tgid: u32) {
    fill_identity::<K>(r, task, tgid);
    fill_acct::<K>(r, task);
    fill_extras::<K>(r, task);
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        (*r).exit_ns = bpf_ktime_get_ns();
        (*r).kind = RECORD_EXIT;
    }
}

#[inline(always)]
fn fill_identity<K: Kernel>(r: *mut ExitRecord, task: u64, tgid: u32) {
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
    }
}

/// `signal->pacct`, as acct_collect() left it, and the controlling tty.
#[inline(always)]
fn fill_acct<K: Kernel>(r: *mut ExitRecord, task: u64) {
    let signal = K::u64(task, off!(task_signal));
    let pacct = member(signal, off!(signal_pacct));
    // SAFETY: `r` is our reserved ring slot.
    unsafe {
        if !K::DIRECT && cfg!(pacct_std) != 0 && pacct != 0 {
            // ac_flag (int), ac_exitcode (long), ac_mem, ac_utime, ac_stime,
            // ac_minflt, ac_majflt: one helper call instead of seven.
            let p = bpf_probe_read_kernel(pacct as *const [u64; 7]).unwrap_or([0; 7]);
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
fn fill_extras<K: Kernel>(r: *mut ExitRecord, task: u64) {
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
            let a = bpf_probe_read_kernel(sig_io as *const [u64; 6]).unwrap_or([0; 6]);
            let b = bpf_probe_read_kernel(task_io as *const [u64; 6]).unwrap_or([0; 6]);
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
pub fn exit_tp_btf(ctx: BtfTracePointContext) -> i32 {
    exit_tp(&ctx)
}

#[inline(always)]
fn exit_tp(ctx: &BtfTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0);
    if !group_is_dead(ctx, task) {
        return 0;
    }
    // With group_dead in the prototype (>= 6.16) the tracepoint fires
    // before exit_mm(); before that it fires after acct_process(), and two
    // threads exiting together can both see the group dead.
    let before_exit_mm = cfg!(exit_tp_has_group_dead) != 0;
    if !before_exit_mm && !first_report(task) {
        return 0;
    }
    emit_exit::<Btf>(task, before_exit_mm);
    0
}

/// A second copy of [`exit_tp_btf`] for `tracer run`: see [`follow_fork`]
/// for why; the first copy to run reports the group, the other finds it
/// reported (`TRACKED`).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_tp_btf_again(ctx: BtfTracePointContext) -> i32 {
    exit_tp(&ctx)
}

/// The same tracepoint for `--threads`: a thread dying before its group.
/// A program of its own, so it can join any exit hook.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn thread_exit_tp(ctx: BtfTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0);
    if !group_is_dead(&ctx, task) {
        emit_thread_exit(task);
    }
    0
}

/// Whether this exit at `sched_process_exit` ends the thread group.
#[inline(always)]
fn group_is_dead(ctx: &BtfTracePointContext, task: u64) -> bool {
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
fn live_threads_gone(task: u64) -> bool {
    let signal = Btf::u64(task, off!(task_signal));
    signal != 0 && Btf::u32(signal, off!(signal_live)) == 0
}

/// Whether this dead group is reported for the first time (see `REPORTED`).
#[inline(always)]
fn first_report(task: u64) -> bool {
    let signal = Btf::u64(task, off!(task_signal));
    let leader = Btf::u64(task, off!(task_group_leader));
    let start = Btf::u64(leader, off!(task_start_time));
    // SAFETY: a plain u64 value, copied out at once.
    if unsafe { REPORTED.get(&signal) }.is_some_and(|&s| s == start) {
        return false;
    }
    let _ = REPORTED.insert(&signal, &start, 0);
    true
}

/// A thread dying before its group (`--threads`).
#[inline(always)]
fn emit_thread_exit(task: u64) {
    let pid = Btf::u32(task, off!(task_tgid));
    if !wanted(pid) {
        return;
    }
    emit(Loss::Event, |r: *mut ThreadExitRecord| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).kind = RECORD_THREAD_EXIT;
            (*r).pid = pid;
            (*r).tid = Btf::u32(task, off!(task_pid));
            (*r).exit_code = Btf::u32(task, off!(task_exit_code));
            (*r).time_ns = bpf_ktime_get_ns();
            (*r).runtime_ns = Btf::u64(task, off!(task_se_runtime));
            (*r).comm = Btf::comm(task);
            (*r).time_ns
        }
    });
}

/// `acct_process()`: the kernel's own accounting hook, called exactly once per
/// dead group, with current as the last thread.
#[fentry(function = "acct_process")]
pub fn exit_fentry(_ctx: FEntryContext) -> i32 {
    exit_current()
}

#[inline(always)]
fn exit_current() -> i32 {
    // SAFETY: the helper returns current's task_struct, typed for the
    // verifier.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    emit_exit::<Btf>(task, false);
    0
}

/// A second copy of [`exit_fentry`] for `tracer run` (see
/// [`exit_tp_btf_again`]).
#[fentry(function = "acct_process")]
pub fn exit_fentry_again(_ctx: FEntryContext) -> i32 {
    exit_current()
}

#[kprobe(function = "acct_process")]
pub fn exit_kprobe(_ctx: ProbeContext) -> u32 {
    // SAFETY: the helper returns current's task_struct address.
    emit_exit::<Probe>(unsafe { bpf_get_current_task() }, false);
    0
}

/// `exit_mmap(mm)`, at the end of tearing down an address space: in a
/// dying task whose group is dead, this is the exit time acct uses for the
/// record sent at `sched_process_exit` (flagged to await it). The checks
/// are plain loads, so the address spaces `exec` drops cost next to nothing.
#[btf_tracepoint(function = "exit_mmap")]
pub fn exit_mmap_stamp(_ctx: BtfTracePointContext) -> i32 {
    mmap_stamp()
}

/// A second copy of [`exit_mmap_stamp`] for `tracer run` (see
/// [`exit_tp_btf_again`]): the first copy that runs sends the stamp and
/// stops following the group, so the other finds nothing to do.
#[btf_tracepoint(function = "exit_mmap")]
pub fn exit_mmap_stamp_again(_ctx: BtfTracePointContext) -> i32 {
    mmap_stamp()
}

#[inline(always)]
fn mmap_stamp() -> i32 {
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
    if cfg!(follow_tracked) != 0 {
        // Its exit record marked it as awaiting this stamp; once sent, it
        // is marked reported, and another copy finds nothing to do.
        // SAFETY: a u8 value, copied out at once.
        if unsafe { TRACKED.get(&tgid) } != Some(&REPORTED_AWAITING_STAMP) {
            return 0;
        }
        let _ = TRACKED.insert(&tgid, &REPORTED_DONE, 0);
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

/// Whether the current thread group's events are wanted: always system-wide,
/// only for tracked groups under `tracer run`.
#[inline(always)]
fn wanted(tgid: u32) -> bool {
    // SAFETY: a lookup whose value is not used.
    cfg!(follow_tracked) == 0 || unsafe { TRACKED.get(&tgid) }.is_some()
}

/// `task_newtask(task, clone_flags)`: in `copy_process()`, current is the
/// creator; the flags are exactly what it asked for, on every path (fork,
/// vfork, clone, clone3, kernel threads).
#[btf_tracepoint(function = "task_newtask")]
pub fn fork_event(ctx: BtfTracePointContext) -> i32 {
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
    emit(Loss::Event, |r: *mut ForkRecord| {
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
fn check_clone_args(tid: u32, child: u64, clone_flags: u64) {
    // SAFETY: the value is copied out at once.
    let Some(&[flags, exit_signal]) = (unsafe { CLONE_ARGS.get(&tid) }) else {
        count(counter::CLONE_UNSEEN);
        return;
    };
    let _ = CLONE_ARGS.remove(&tid);
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
    }
}

const CLONE_PARENT: u64 = 0x8000;
const CLONE_THREAD: u64 = 0x1_0000;

/// `kernel_clone(struct kernel_clone_args *args)`, for `--check-clone-args`:
/// fork, vfork, clone, clone3 and kernel threads all pass through it.
#[fentry(function = "kernel_clone")]
pub fn clone_args_fentry(ctx: FEntryContext) -> i32 {
    save_clone_args::<Btf>(ctx.arg::<u64>(0));
    0
}

#[kprobe(function = "kernel_clone")]
pub fn clone_args_kprobe(ctx: ProbeContext) -> u32 {
    save_clone_args::<Probe>(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[inline(always)]
fn save_clone_args<K: Kernel>(args: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let flags = K::u64(args, off!(clone_args_flags));
    let exit_signal = K::u32(args, off!(clone_args_exit_signal)) as i32 as i64 as u64;
    let _ = CLONE_ARGS.insert(&tid, &[flags, exit_signal], 0);
}

/// `sched_process_exec(p, old_pid, bprm)`: after a successful exec, with
/// the new image's argv in place in the new mm.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_event(ctx: BtfTracePointContext) -> i32 {
    if cfg!(lineage) == 0 {
        return 0;
    }
    let task = ctx.arg::<u64>(0);
    let pid = Btf::u32(task, off!(task_tgid));
    if !wanted(pid) {
        return 0;
    }
    let bprm = ctx.arg::<u64>(2);
    let mm = Btf::u64(task, off!(task_mm));
    let start = Btf::u64(mm, off!(mm_arg_start));
    let total = Btf::u64(mm, off!(mm_arg_end)).saturating_sub(start);
    emit(Loss::Event, |r: *mut ExecRecord| {
        // SAFETY: our reserved ring slot; every field is written.
        unsafe {
            (*r).args = [0; ARGS_LEN];
            (*r).args_len = read_args(&raw mut (*r).args, start, total);
            (*r).args_total = total as u32;
            (*r).kind = RECORD_EXEC;
            (*r).pid = pid;
            (*r).tid = Btf::u32(task, off!(task_pid));
            (*r)._pad = 0;
            (*r).time_ns = bpf_ktime_get_ns();
            (*r).comm = Btf::comm(task);
            (*r).filename = [0; tracer_common::FILENAME_LEN];
            let name = Btf::u64(bprm, off!(bprm_filename));
            if name != 0 {
                let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*r).filename);
            }
            (*r).time_ns
        }
    });
    0
}

/// Copies the first `len` bytes of argv (at most `ARGS_LEN`) from user
/// memory at `src`; returns how many it got. A function of its own so the
/// bound is checked on the register the helper gets: older verifiers lose
/// a length's bounds when the compiler parks it on the stack.
#[inline(never)]
fn read_args(dst: *mut [u8; ARGS_LEN], src: u64, len: u64) -> u32 {
    let n = if len < ARGS_LEN as u64 {
        len as u32
    } else {
        ARGS_LEN as u32
    };
    if src == 0 || n == 0 || n > ARGS_LEN as u32 {
        return 0;
    }
    // SAFETY: `dst` holds ARGS_LEN bytes and n <= ARGS_LEN; the helper
    // checks the user address.
    let ret = unsafe { generated::bpf_probe_read_user(dst.cast(), n, src as *const c_void) };
    if ret == 0 {
        n
    } else {
        0
    }
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
pub fn follow_fork(ctx: BtfTracePointContext) -> i32 {
    follow(ctx.arg::<u64>(1));
    0
}

/// `task_newtask(task, clone_flags)`, the second follow program (see
/// [`follow_fork`]): in `copy_process()`, current is the creator.
#[btf_tracepoint(function = "task_newtask")]
pub fn follow_newtask(ctx: BtfTracePointContext) -> i32 {
    follow(ctx.arg::<u64>(0));
    0
}

/// Tracks `child` when the current (creating) group is tracked.
#[inline(always)]
fn follow(child: u64) {
    if cfg!(follow_tracked) == 0 {
        return;
    }
    let parent_tgid = current_tgid();
    // SAFETY: a lookup whose value is not used.
    if unsafe { TRACKED.get(&parent_tgid) }.is_none() {
        return;
    }
    let child_tgid = Btf::u32(child, off!(task_tgid));
    if child_tgid != 0
        && child_tgid != parent_tgid
        && TRACKED.insert(&child_tgid, &FOLLOWED, 0).is_err()
    {
        count(counter::TRACK_FULL);
    }
}

/// `sched_process_free(task)`: a reaped task is freed, and with its leader
/// a tracked group stops being followed. One still marked [`FOLLOWED`]
/// died without a record (both exit programs skipped): counted as lost, so
/// that the summary's count stays true.
#[btf_tracepoint(function = "sched_process_free")]
pub fn track_free(ctx: BtfTracePointContext) -> i32 {
    if cfg!(follow_tracked) == 0 {
        return 0;
    }
    let task = ctx.arg::<u64>(0);
    let tgid = Btf::u32(task, off!(task_tgid));
    if Btf::u32(task, off!(task_pid)) != tgid {
        return 0;
    }
    // SAFETY: a u8 value, copied out at once.
    let Some(&state) = (unsafe { TRACKED.get(&tgid) }) else {
        return 0;
    };
    if state == FOLLOWED {
        count(counter::TRACK_FULL);
    }
    let _ = TRACKED.remove(&tgid);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
