//! `--pid`, `--uid`, `--comm`, `--cgroup`, `--container`, `--failed`:
//! which exits are wanted, decided in the kernel before anything reaches
//! the ring. Each option is a map (or a bit); several values of one option
//! are an OR, different options an AND. `--container` is a set of cgroups
//! that the loader keeps (the container's cgroup, once it is made).

use aya_ebpf::{macros::map, maps::HashMap};
use tracer_common::filter;

use crate::kernel::Kernel;

#[map]
pub(crate) static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);
#[map]
pub(crate) static FILTER_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);
#[map]
pub(crate) static FILTER_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);
/// v2 cgroup ids: an exit in one of them or below one of them passes.
#[map]
pub(crate) static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1 << 12, 0);

/// Cgroup levels looked at, from the task's own up.
const CGROUP_DEPTH: u32 = 16;

/// Whether the exit of `task` (group `tgid`) with exit code `exit_code`
/// passes every filter given.
#[inline(always)]
pub(crate) fn passes<K: Kernel>(task: u64, tgid: u32, exit_code: u32) -> bool {
    let on = cfg!(filters);
    if on == 0 {
        return true;
    }
    if on & filter::FAILED != 0 && exit_code == 0 {
        return false;
    }
    // SAFETY (the lookups): values are not read.
    if on & filter::PID != 0 && unsafe { FILTER_PIDS.get(tgid) }.is_none() {
        return false;
    }
    if on & filter::UID != 0 {
        let uid = K::u32(K::u64(task, off!(task_cred)), off!(cred_uid));
        if unsafe { FILTER_UIDS.get(uid) }.is_none() {
            return false;
        }
    }
    if on & filter::COMM != 0 {
        // The name acct gives the group: its last thread's.
        let comm = K::comm(task);
        if unsafe { FILTER_COMMS.get(comm) }.is_none() {
            return false;
        }
    }
    if on & filter::CGROUP != 0 && !in_cgroups::<K>(task) {
        return false;
    }
    true
}

/// The task's v2 cgroup or one of its ancestors is in `FILTER_CGROUPS`:
/// a walk up `cgroup->self.parent`, member loads only (an indexed
/// `ancestors[i]` would need a helper call per level, too many branches
/// for the verifier in a loop).
#[inline(always)]
fn in_cgroups<K: Kernel>(task: u64) -> bool {
    let css_set = K::u64(task, off!(task_cgroups));
    let mut cgrp = K::u64(css_set, off!(css_set_dfl_cgrp));
    for _ in 0..CGROUP_DEPTH {
        if cgrp == 0 {
            return false;
        }
        let id = K::u64(K::u64(cgrp, off!(cgroup_kn)), off!(kernfs_node_id));
        // SAFETY: the value is not read.
        if unsafe { FILTER_CGROUPS.get(id) }.is_some() {
            return true;
        }
        let parent_css = K::u64(cgrp, off!(cgroup_parent_css));
        cgrp = K::u64(parent_css, off!(css_cgroup));
    }
    false
}
