//! Reading kernel memory: member offsets from the loader's `OFFSETS`
//! (taken from the running kernel's BTF), and the two ways a program reads
//! a member ([`Btf`] loads, [`Probe`] helper calls).

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_probe_read_kernel};
use tracer_common::ABSENT;

use crate::diag::read_failed;

/// Reads a field of one of our globals.
#[inline(always)]
pub(crate) fn global<T: Copy>(field: *const T) -> T {
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
pub(crate) trait Kernel {
    /// Plain loads (no helper call per member).
    const DIRECT: bool;
    fn u64(base: u64, off: u32) -> u64;
    fn u32(base: u64, off: u32) -> u32;
    /// `task->comm` of the current task.
    fn comm(task: u64) -> [u8; 16];
    /// The cgroup v2 id of the current task.
    fn cgroup_id(task: u64) -> u64;
}

pub(crate) struct Btf;

impl Kernel for Btf {
    const DIRECT: bool = true;

    #[inline(always)]
    fn u64(base: u64, off: u32) -> u64 {
        if off == ABSENT || base == 0 {
            return 0;
        }
        // SAFETY: the verifier accepts this load only if `base + off` is an
        // 8-byte member of `base`'s BTF type; a faulting address reads 0.
        unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const u64) }
    }

    #[inline(always)]
    fn u32(base: u64, off: u32) -> u32 {
        if off == ABSENT || base == 0 {
            return 0;
        }
        // SAFETY: as in `u64`.
        unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const u32) }
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

pub(crate) struct Probe;

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
        bpf_get_current_comm().unwrap_or_else(|err| {
            log_debug!("comm unreadable ({}); written empty", err);
            [0; 16]
        })
    }

    #[inline(always)]
    fn cgroup_id(_task: u64) -> u64 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_get_current_cgroup_id() }
    }
}

/// Not inlined: one small function keeps the kprobe program short.
#[inline(never)]
pub(crate) fn probe_u64(base: u64, off: u32) -> u64 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an
    // error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u64) }.unwrap_or_else(|err| {
        read_failed("a member", base + u64::from(off), err);
        0
    })
}

#[inline(never)]
pub(crate) fn probe_u32(base: u64, off: u32) -> u32 {
    if off == ABSENT || base == 0 {
        return 0;
    }
    // SAFETY: as in probe_u64.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u32) }.unwrap_or_else(|err| {
        read_failed("a member", base + u64::from(off), err);
        0
    })
}

/// Address of a member (for nested structs), 0 when absent.
#[inline(always)]
pub(crate) fn member(base: u64, off: u32) -> u64 {
    if off == ABSENT || base == 0 {
        0
    } else {
        base + u64::from(off)
    }
}
