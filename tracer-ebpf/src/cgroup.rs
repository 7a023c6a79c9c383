//! Cgroups of the v2 hierarchy, made and removed: the path of each id, so
//! that the loader names the cgroup of an exit even when the cgroup was
//! removed before it read the exit (a container that stops at once).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use tracer_common::{
    counter, filter, CgroupRecord, CGROUP_HEADER_LEN, CGROUP_MKDIR, CGROUP_PATH_MAX, CGROUP_RMDIR,
    RECORD_CGROUP,
};

use crate::{
    filter::{PENDING_CGROUPS, PENDING_CGROUPS_V1},
    kernel::probe_u64,
    ring::{count, EVENTS},
};

#[map]
static CGROUP_SCRATCH: PerCpuArray<CgroupRecord> = PerCpuArray::with_max_entries(1, 0);

/// `cgroup_mkdir(cgrp, path)`: the path is the tracepoint's own argument,
/// made only while someone listens.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub(crate) fn cgroup_made(ctx: BtfTracePointContext) -> i32 {
    event(&ctx, CGROUP_MKDIR);
    0
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub(crate) fn cgroup_removed(ctx: BtfTracePointContext) -> i32 {
    event(&ctx, CGROUP_RMDIR);
    0
}

#[inline(always)]
fn event(ctx: &BtfTracePointContext, kind: u32) {
    let cgrp = ctx.arg::<u64>(0);
    // The v2 hierarchy (its root's hierarchy id is 0) and the memory
    // controller's v1 one: exit records carry a cgroup id of each.
    let root = probe_u64(cgrp, off!(cgroup_root));
    if root == 0 {
        return;
    }
    let hierarchy = probe_u64(root, off!(root_hierarchy_id)) as u32;
    if hierarchy != 0 && hierarchy != cfg!(v1_hierarchy) {
        return;
    }
    let Some(r) = CGROUP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let path = ctx.arg::<u64>(1);
    // SAFETY: this CPU's scratch record; the header is written, and only
    // `path_len` bytes of the path are sent.
    let len = unsafe {
        (*r).kind = RECORD_CGROUP;
        (*r).event = kind;
        (*r).hierarchy = hierarchy;
        (*r).id = probe_u64(probe_u64(cgrp, off!(cgroup_kn)), off!(kernfs_node_id));
        let n = match bpf_probe_read_kernel_str_bytes(path as *const u8, &mut (*r).path) {
            Ok(s) => s.len(),
            Err(_) => 0,
        };
        (*r).path_len = n as u32;
        n
    };
    if kind == CGROUP_MKDIR && cfg!(filters) & filter::CONTAINER != 0 {
        // Undecided until the loader has read this event (see
        // `PENDING_CGROUPS`).
        // SAFETY: written above.
        let id = unsafe { (*r).id };
        let pending = if hierarchy == 0 {
            &PENDING_CGROUPS
        } else {
            &PENDING_CGROUPS_V1
        };
        let _ = pending.insert(id, 1, 0);
    }
    send(r, len);
}

#[inline(never)]
fn send(r: *mut CgroupRecord, len: usize) {
    if len > CGROUP_PATH_MAX {
        return;
    }
    // SAFETY: the scratch record is CGROUP_HEADER_LEN + CGROUP_PATH_MAX
    // bytes long and len <= CGROUP_PATH_MAX.
    let bytes = unsafe { core::slice::from_raw_parts(r.cast::<u8>(), CGROUP_HEADER_LEN + len) };
    // Rare: always wake the reader.
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count(counter::EVENTS_LOST);
    }
}
