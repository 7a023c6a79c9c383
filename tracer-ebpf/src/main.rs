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
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf,
    },
    macros::{btf_tracepoint, fentry, kprobe, map},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use tracer_common::{
    counter, present, Config, ExecRecord, ExitRecord, ForkRecord, Offsets, ThreadExitRecord,
    ABSENT, ARGS_LEN, RECORD_EXEC, RECORD_EXIT, RECORD_FORK, RECORD_THREAD_EXIT,
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
    _pad: [0; 2],
    wakeup_bytes: 0,
};

/// Exit records. The loader sets the size (`--ring-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters, indexed by `tracer_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Records taken at `sched_process_exit` before `exit_mm()`, waiting for
/// `exit_mmap` in the same task to give them the exit time the kernel's
/// accounting uses (after the address space is torn down, which can take
/// many ticks for a large one). Keyed by tid. Whoever deletes an entry
/// (that program, or the loader for one that waited too long) sends it.
/// Groups already reported, by `signal_struct` address, valued by the
/// leader's start time (an address reused by a later group has another):
/// before 6.16, `group_dead` is derived from `signal->live` at the
/// tracepoint, which two threads exiting at once can both see as 0.
#[map]
static REPORTED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1 << 12, 0);

#[map]
static PENDING: HashMap<u32, ExitRecord> = HashMap::with_max_entries(1 << 13, 0);

/// Thread groups `tracer run` follows: the command, then every group created
/// by a tracked one (see `follow_fork`). Keyed by tgid.
#[map]
static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(1 << 16, 0);

#[inline(always)]
fn offsets() -> Offsets {
    // SAFETY: a plain read of our own global; volatile so the compiler
    // cannot fold in the placeholder values the object is built with.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
fn config() -> Config {
    // SAFETY: as in `offsets`.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// Reads a u64 at `base + off` from kernel memory: 0 when the field is
/// absent on this kernel, the base is NULL or the read faults. Not inlined:
/// one small function keeps the programs short and the verifier's job simple.
#[inline(never)]
fn read_u64(base: u64, off: u32) -> u64 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an
    // error, not a fault.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) }.unwrap_or(0)
}

/// As [`read_u64`], for 32-bit members.
#[inline(never)]
fn read_u32(base: u64, off: u32) -> u32 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: as in read_u64.
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
/// record.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let waiting = EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    if waiting >= config().wakeup_bytes {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn send(rec: &ExitRecord) {
    if EVENTS.output::<ExitRecord>(rec, wakeup_flags()).is_err() {
        count(counter::RING_FULL);
    }
}

/// Writes the record for the dying thread group of `task` (the current
/// task). `before_exit_mm`: the hook runs before `exit_mm()`, so the record
/// waits for `exit_mmap` when this group tears its address space down.
#[inline(never)]
fn emit_exit(task: u64, before_exit_mm: bool) {
    let off = offsets();
    let cfg = config();
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !wanted(tgid) {
        return;
    }
    if cfg.follow_tracked != 0 {
        // The group is gone: stop following its tgid.
        let _ = TRACKED.remove(&tgid);
    }

    if before_exit_mm && cfg.defer_to_exit_mmap != 0 {
        let mm = read_u64(task, off.task_mm);
        if mm != 0 && read_u32(mm, off.mm_users) == 1 {
            // Filled in place in its PENDING slot: a record on the stack
            // would not fit older kernels' 512-byte stack with the calls.
            let tid = id as u32;
            if PENDING.insert(&tid, &EMPTY, 0).is_ok() {
                if let Some(slot) = PENDING.get_ptr_mut(&tid) {
                    fill(slot, task, tgid);
                    return;
                }
            }
            count(counter::PENDING_FULL);
        }
    }

    let Some(mut entry) = EVENTS.reserve::<ExitRecord>(0) else {
        count(counter::RING_FULL);
        return;
    };
    fill(entry.as_mut_ptr(), task, tgid);
    entry.submit(wakeup_flags());
}

/// The source of a PENDING slot before it is filled.
static EMPTY: ExitRecord = ExitRecord::zeroed();

/// Every field of the record, read the way `fill_ac()` reads them. Split in
/// parts so that few values are live across helper calls: each part's
/// stack frame stays small.
#[inline(never)]
fn fill(r: *mut ExitRecord, task: u64, tgid: u32) {
    fill_identity(r, task, tgid);
    fill_acct(r, task);
    fill_extras(r, task);
    // SAFETY: `r` is our exclusively owned slot. `kind` goes last: the
    // loader skips a PENDING slot whose kind is not set yet.
    unsafe {
        (*r).exit_ns = bpf_ktime_get_ns();
        core::ptr::write_volatile(&raw mut (*r).kind, RECORD_EXIT);
    }
}

#[inline(never)]
fn fill_identity(r: *mut ExitRecord, task: u64, tgid: u32) {
    let off = offsets();
    let leader = read_u64(task, off.task_group_leader);
    // SAFETY: `r` is our exclusively owned slot (ring entry or map value).
    unsafe {
        (*r).pid = tgid;
        (*r).tid = read_u32(task, off.task_pid);
        (*r).ppid = read_u32(read_u64(task, off.task_real_parent), off.task_tgid);
        let cred = read_u64(task, off.task_cred);
        (*r).uid = read_u32(cred, off.cred_uid);
        (*r).gid = read_u32(cred, off.cred_gid);
        (*r).exit_signal = read_u32(leader, off.task_exit_signal) as i32;
        (*r).start_ns = read_u64(leader, off.task_start_time);
        (*r).cgroup_id = bpf_get_current_cgroup_id();
        (*r).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*r)._pad = 0;
    }
}

/// `signal->pacct`, as acct_collect() left it, and the controlling tty.
#[inline(never)]
fn fill_acct(r: *mut ExitRecord, task: u64) {
    let off = offsets();
    let signal = read_u64(task, off.task_signal);
    let pacct = member(signal, off.signal_pacct);
    // SAFETY: `r` is our exclusively owned slot.
    unsafe {
        if config().pacct_std != 0 && pacct != 0 {
            // ac_flag (int), ac_exitcode (long), ac_mem, ac_utime, ac_stime,
            // ac_minflt, ac_majflt: one read instead of seven.
            let p = bpf_probe_read_kernel(pacct as *const [u64; 7]).unwrap_or([0; 7]);
            (*r).ac_flag = p[0] as u32;
            (*r).exit_code = p[1] as u32;
            (*r).mem_kb = p[2];
            (*r).utime_ns = p[3];
            (*r).stime_ns = p[4];
            (*r).minflt = p[5];
            (*r).majflt = p[6];
        } else {
            (*r).ac_flag = read_u32(pacct, off.pacct_flag);
            // `long ac_exitcode`: the low half on a little-endian machine.
            (*r).exit_code = read_u32(pacct, off.pacct_exitcode);
            (*r).mem_kb = read_u64(pacct, off.pacct_mem);
            (*r).utime_ns = read_u64(pacct, off.pacct_utime);
            (*r).stime_ns = read_u64(pacct, off.pacct_stime);
            (*r).minflt = read_u64(pacct, off.pacct_minflt);
            (*r).majflt = read_u64(pacct, off.pacct_majflt);
        }
        // The controlling tty as dev_t, as tty_devnum() computes it.
        let tty = read_u64(signal, off.signal_tty);
        (*r).tty_dev = if tty == 0 {
            0
        } else {
            let driver = read_u64(tty, off.tty_driver);
            let major = read_u32(driver, off.driver_major);
            let minor_start = read_u32(driver, off.driver_minor_start);
            ((major << 20) | minor_start).wrapping_add(read_u32(tty, off.tty_index))
        };
    }
}

/// What acct drops: peak RSS, I/O, context switches, exact CPU time. Group
/// totals so far plus this last thread's own: other threads folded theirs
/// into signal_struct when they were released.
#[inline(never)]
fn fill_extras(r: *mut ExitRecord, task: u64) {
    let off = offsets();
    let signal = read_u64(task, off.task_signal);
    let sig_io = member(signal, off.signal_ioac);
    let task_io = member(task, off.task_ioac);
    // Presence is a property of the kernel's layout, known from the offsets.
    let mut present_bits = 0u32;
    if off.signal_maxrss != ABSENT {
        present_bits |= present::MAXRSS;
    }
    let io = sig_io != 0 && task_io != 0;
    if io && off.ioac_rchar != ABSENT && off.ioac_wchar != ABSENT {
        present_bits |= present::IO_CHARS;
    }
    if io && off.ioac_read_bytes != ABSENT && off.ioac_write_bytes != ABSENT {
        present_bits |= present::IO_BYTES;
    }
    if off.signal_nvcsw != ABSENT && off.task_nvcsw != ABSENT {
        present_bits |= present::CSW;
    }
    if off.signal_runtime != ABSENT && off.task_se_runtime != ABSENT {
        present_bits |= present::RUNTIME;
    }
    // SAFETY: `r` is our exclusively owned slot.
    unsafe {
        (*r).present = present_bits;
        (*r).maxrss_pages = read_u64(signal, off.signal_maxrss);
        if config().ioac_std != 0 && io {
            // rchar, wchar, syscr, syscw, read_bytes, write_bytes.
            let a = bpf_probe_read_kernel(sig_io as *const [u64; 6]).unwrap_or([0; 6]);
            (*r).rchar = a[0];
            (*r).wchar = a[1];
            (*r).read_bytes = a[4];
            (*r).write_bytes = a[5];
            let b = bpf_probe_read_kernel(task_io as *const [u64; 6]).unwrap_or([0; 6]);
            (*r).rchar += b[0];
            (*r).wchar += b[1];
            (*r).read_bytes += b[4];
            (*r).write_bytes += b[5];
        } else {
            (*r).rchar = read_u64(sig_io, off.ioac_rchar) + read_u64(task_io, off.ioac_rchar);
            (*r).wchar = read_u64(sig_io, off.ioac_wchar) + read_u64(task_io, off.ioac_wchar);
            (*r).read_bytes =
                read_u64(sig_io, off.ioac_read_bytes) + read_u64(task_io, off.ioac_read_bytes);
            (*r).write_bytes =
                read_u64(sig_io, off.ioac_write_bytes) + read_u64(task_io, off.ioac_write_bytes);
        }
        (*r).nvcsw = read_u64(signal, off.signal_nvcsw) + read_u64(task, off.task_nvcsw);
        (*r).nivcsw = read_u64(signal, off.signal_nivcsw) + read_u64(task, off.task_nivcsw);
        (*r).runtime_ns =
            read_u64(signal, off.signal_runtime) + read_u64(task, off.task_se_runtime);
    }
}

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`: runs for
/// every exiting thread, after `acct_collect()` has folded the thread's
/// times into `signal->pacct` (on every kernel version).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn exit_tp_btf(ctx: BtfTracePointContext) -> i32 {
    let task = ctx.arg::<u64>(0);
    if !group_is_dead(&ctx, task) {
        return 0;
    }
    // With group_dead in the prototype (>= 6.16) the tracepoint fires
    // before exit_mm(); before that it fires after acct_process(), and two
    // threads exiting together can both see the group dead.
    let before_exit_mm = config().exit_tp_has_group_dead != 0;
    if !before_exit_mm && !first_report(task, read_u64(task, offsets().task_signal)) {
        return 0;
    }
    emit_exit(task, before_exit_mm);
    0
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
    if config().exit_tp_has_group_dead != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        // Before 6.16 the tracepoint has no group_dead; do_exit() has
        // already decremented signal->live, so 0 means the group is dead.
        let signal = read_u64(task, offsets().task_signal);
        signal != 0 && read_u32(signal, offsets().signal_live) == 0
    }
}

/// Whether this dead group is reported for the first time (see `REPORTED`).
#[inline(never)]
fn first_report(task: u64, signal: u64) -> bool {
    let off = offsets();
    let start = read_u64(read_u64(task, off.task_group_leader), off.task_start_time);
    // SAFETY: a plain u64 value, copied out at once.
    if unsafe { REPORTED.get(&signal) }.is_some_and(|&s| s == start) {
        return false;
    }
    let _ = REPORTED.insert(&signal, &start, 0);
    true
}

/// A thread dying before its group (`--threads`).
#[inline(never)]
fn emit_thread_exit(task: u64) {
    let id = bpf_get_current_pid_tgid();
    let pid = (id >> 32) as u32;
    if !wanted(pid) {
        return;
    }
    let off = offsets();
    let Some(mut entry) = EVENTS.reserve::<ThreadExitRecord>(0) else {
        count(counter::RING_FULL);
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: our reserved ring slot; every field is written.
    unsafe {
        (*r).kind = RECORD_THREAD_EXIT;
        (*r).pid = pid;
        (*r).tid = id as u32;
        (*r).exit_code = read_u32(task, off.task_exit_code);
        (*r).time_ns = bpf_ktime_get_ns();
        (*r).runtime_ns = read_u64(task, off.task_se_runtime);
        (*r).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(wakeup_flags());
}

/// `acct_process()`: the kernel's own accounting hook, called exactly once per
/// dead group, with current as the last thread.
#[fentry(function = "acct_process")]
pub fn exit_fentry(_ctx: FEntryContext) -> i32 {
    // SAFETY: the helper returns current's task_struct address.
    emit_exit(unsafe { bpf_get_current_task() }, false);
    0
}

#[kprobe(function = "acct_process")]
pub fn exit_kprobe(_ctx: ProbeContext) -> u32 {
    // SAFETY: as in exit_fentry.
    emit_exit(unsafe { bpf_get_current_task() }, false);
    0
}

/// `exit_mmap(mm)`, at the end of tearing down an address space: when the
/// current task has a record waiting, this is its exit time.
#[btf_tracepoint(function = "exit_mmap")]
pub fn exit_mmap_stamp(_ctx: BtfTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(waiting) = PENDING.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: a valid map value; copied before the delete frees it.
    let mut rec = unsafe { *waiting };
    if PENDING.remove(&tid).is_err() {
        // The loader took it first (it waited too long) and sends it.
        return 0;
    }
    rec.exit_ns = unsafe { bpf_ktime_get_ns() };
    send(&rec);
    0
}

/// Whether the current thread group's events are wanted: always system-wide,
/// only for tracked groups under `tracer run`.
#[inline(always)]
fn wanted(tgid: u32) -> bool {
    // SAFETY: see `emit_exit`.
    config().follow_tracked == 0 || unsafe { TRACKED.get(&tgid) }.is_some()
}

/// `task_newtask(task, clone_flags)`: in `copy_process()`, current is the
/// creator; the flags are exactly what it asked for, on every path (fork,
/// vfork, clone, clone3, kernel threads).
#[btf_tracepoint(function = "task_newtask")]
pub fn fork_event(ctx: BtfTracePointContext) -> i32 {
    let cfg = config();
    if cfg.lineage == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let (parent_pid, parent_tid) = ((id >> 32) as u32, id as u32);
    if !wanted(parent_pid) {
        return 0;
    }
    let off = offsets();
    let child = ctx.arg::<u64>(0);
    let Some(mut entry) = EVENTS.reserve::<ForkRecord>(0) else {
        count(counter::RING_FULL);
        return 0;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: our reserved ring slot; every field is written.
    unsafe {
        (*r).kind = RECORD_FORK;
        (*r).exit_signal = read_u32(child, off.task_exit_signal) as i32;
        (*r).parent_pid = parent_pid;
        (*r).parent_tid = parent_tid;
        (*r).child_pid = read_u32(child, off.task_tgid);
        (*r).child_tid = read_u32(child, off.task_pid);
        (*r).clone_flags = ctx.arg::<u64>(1);
        (*r).time_ns = bpf_ktime_get_ns();
        (*r).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(wakeup_flags());
    0
}

/// `sched_process_exec(p, old_pid, bprm)`: after a successful exec, with
/// the new image's argv in place in the new mm.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_event(ctx: BtfTracePointContext) -> i32 {
    let cfg = config();
    if cfg.lineage == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    let pid = (id >> 32) as u32;
    if !wanted(pid) {
        return 0;
    }
    let off = offsets();
    let task = ctx.arg::<u64>(0);
    let bprm = ctx.arg::<u64>(2);
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count(counter::RING_FULL);
        return 0;
    };
    let r = entry.as_mut_ptr();
    let mm = read_u64(task, off.task_mm);
    let start = read_u64(mm, off.mm_arg_start);
    let end = read_u64(mm, off.mm_arg_end);
    let total = end.saturating_sub(start);
    let take = if total > ARGS_LEN as u64 {
        ARGS_LEN as u64
    } else {
        total
    };
    // SAFETY: our reserved ring slot; every field is written.
    unsafe {
        (*r).kind = RECORD_EXEC;
        (*r).pid = pid;
        (*r).tid = id as u32;
        (*r)._pad = 0;
        (*r).time_ns = bpf_ktime_get_ns();
        (*r).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*r).filename = [0; tracer_common::FILENAME_LEN];
        let name = read_u64(bprm, off.bprm_filename);
        if name != 0 {
            let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*r).filename);
        }
        (*r).args = [0; ARGS_LEN];
        let mut got = 0u32;
        let n = take as usize;
        if start != 0 && n > 0 && n <= ARGS_LEN {
            let args = &mut (*r).args;
            if bpf_probe_read_user_buf(start as *const u8, &mut args[..n]).is_ok() {
                got = n as u32;
            }
        }
        (*r).args_len = got;
        (*r).args_total = total as u32;
    }
    entry.submit(wakeup_flags());
    0
}

/// `sched_process_fork(parent, child)`: for `tracer run`, a group created by
/// a tracked group is tracked too. Runs before the child is first scheduled,
/// so no exit of it can be missed; creation, not parentage, decides, so
/// reparenting and CLONE_PARENT do not lose anyone.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn follow_fork(ctx: BtfTracePointContext) -> i32 {
    if config().follow_tracked == 0 {
        return 0;
    }
    let parent_tgid = current_tgid();
    // SAFETY: see `emit_exit`.
    if unsafe { TRACKED.get(&parent_tgid) }.is_none() {
        return 0;
    }
    let child = ctx.arg::<u64>(1);
    let child_tgid = read_u32(child, offsets().task_tgid);
    if child_tgid != 0 && child_tgid != parent_tgid && TRACKED.insert(&child_tgid, &1, 0).is_err() {
        count(counter::TRACK_FULL);
    }
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
