//! Exec events: the new image's file name and arguments, sent once per
//! exec (the loader keeps them for the exits that follow).

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, generated},
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use tracer_common::{counter, ExecRecord, ARGS_MAX, EXEC_HEADER_LEN, RECORD_EXEC};

use crate::{
    filter::events_wanted,
    follow::wanted,
    kernel::{Btf, Kernel},
    ring::{count, wakeup_flags, EVENTS},
};

/// Where an exec event is put together: it is sent with as many argument
/// bytes as it has (`--argv-bytes` at most), not a fixed 16 KiB.
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

/// `sched_process_exec(p, old_pid, bprm)`: after a successful exec, with
/// the new image's argv in place in the new mm.
#[btf_tracepoint(function = "sched_process_exec")]
pub(crate) fn exec_event(ctx: BtfTracePointContext) -> i32 {
    if cfg!(lineage) == 0 {
        return 0;
    }
    let task = ctx.arg::<u64>(0);
    let pid = Btf::u32(task, off!(task_tgid));
    if !wanted(pid) || (cfg!(filters) != 0 && !events_wanted::<Btf>(task, pid)) {
        return 0;
    }
    let Some(r) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let bprm = ctx.arg::<u64>(2);
    let mm = Btf::u64(task, off!(task_mm));
    let start = Btf::u64(mm, off!(mm_arg_start));
    let total = Btf::u64(mm, off!(mm_arg_end)).saturating_sub(start);
    let want = total.min(u64::from(cfg!(argv_bytes)));
    // SAFETY: this CPU's scratch record; every header field is written,
    // and only `args_len` bytes of `args` are sent.
    let len = unsafe {
        (*r).args_len = read_args(&raw mut (*r).args, start, want);
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
            // Not logged when it fails: looking at the result would cost
            // every exec a branch, with the log off too.
            let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*r).filename);
        }
        (*r).args_len as usize
    };
    send(r, len);
    0
}

/// Sends the header and `len` argument bytes of the scratch record.
#[inline(never)]
fn send(r: *mut ExecRecord, len: usize) {
    if len > ARGS_MAX {
        return;
    }
    // SAFETY: the scratch record is ARGS_MAX + EXEC_HEADER_LEN bytes long
    // and len <= ARGS_MAX.
    let bytes = unsafe { core::slice::from_raw_parts(r.cast::<u8>(), EXEC_HEADER_LEN + len) };
    // SAFETY: written just before.
    let time_ns = unsafe { (*r).time_ns };
    let flags = wakeup_flags(time_ns);
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        count(counter::EVENTS_LOST);
    }
}

/// Copies the first `len` bytes of argv (at most `ARGS_MAX`) from user
/// memory at `src`; returns how many it got. A function of its own so the
/// bound is checked on the register the helper gets: older verifiers lose
/// a length's bounds when the compiler parks it on the stack.
#[inline(never)]
pub(crate) fn read_args(dst: *mut [u8; ARGS_MAX], src: u64, len: u64) -> u32 {
    let n = if len < ARGS_MAX as u64 {
        len as u32
    } else {
        ARGS_MAX as u32
    };
    if src == 0 || n == 0 || n > ARGS_MAX as u32 {
        return 0;
    }
    // SAFETY: `dst` holds ARGS_MAX bytes and n <= ARGS_MAX; the helper
    // checks the user address.
    let ret = unsafe { generated::bpf_probe_read_user(dst.cast(), n, src as *const c_void) };
    if ret == 0 {
        n
    } else {
        log_debug!(
            "argv unreadable at {:x} ({}); exec event without it",
            src,
            ret
        );
        0
    }
}
