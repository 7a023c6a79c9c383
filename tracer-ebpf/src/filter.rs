//! `--pid`, `--uid`, `--comm`, `--cgroup`, `--container`, `--failed`:
//! which exits are wanted, decided in the kernel before anything reaches
//! the ring. Each option is a map (or a bit); several values of one option
//! are an OR, different options an AND. `--container` is a set of cgroups
//! that the loader keeps (the container's cgroups, v2 and v1, once made).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap},
};
use tracer_common::filter;

use crate::kernel::{member, Kernel};

#[map]
pub(crate) static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);
#[map]
pub(crate) static FILTER_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);
#[map]
pub(crate) static FILTER_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);
/// v2 cgroup ids (`--cgroup`): an exit in one of them or below one of
/// them passes.
#[map]
pub(crate) static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1 << 10, 0);
/// The same for `--container`: the containers' v2 cgroups, and their
/// cgroups in the memory controller's v1 hierarchy (ids of another kernfs
/// root, so a map of their own).
#[map]
pub(crate) static FILTER_CONTAINERS: HashMap<u64, u8> = HashMap::with_max_entries(1 << 12, 0);
#[map]
pub(crate) static FILTER_CONTAINERS_V1: HashMap<u64, u8> = HashMap::with_max_entries(1 << 12, 0);

/// `--container`: cgroups made since the loader last looked (`cgroup.rs`
/// adds them, the loader removes each once it has read its path and put
/// it in `FILTER_CONTAINERS*` if it is a wanted container's). An exit in
/// one of them is sent undecided, so a container started after the tracer
/// loses none of its first exits to the loader's delay.
#[map]
pub(crate) static PENDING_CGROUPS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(1 << 10, 0);
#[map]
pub(crate) static PENDING_CGROUPS_V1: LruHashMap<u64, u8> =
    LruHashMap::with_max_entries(1 << 10, 0);

/// What the filters say of an exit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Fail,
    /// Every filter passed but `--container`, which the loader decides.
    Undecided,
}

/// Cgroup levels looked at, from the task's own up.
const CGROUP_DEPTH: u32 = 16;

/// Whether the exit of `task` (group `tgid`) with exit code `exit_code`
/// passes every filter given.
#[inline(always)]
pub(crate) fn passes<K: Kernel>(task: u64, tgid: u32, exit_code: u32) -> bool {
    verdict::<K>(task, tgid, exit_code) != Verdict::Fail
}

#[inline(always)]
pub(crate) fn verdict<K: Kernel>(task: u64, tgid: u32, exit_code: u32) -> Verdict {
    if check::<K>(task, tgid, exit_code) {
        return Verdict::Pass;
    }
    if cfg!(filters) & filter::CONTAINER != 0
        && in_pending::<K>(task)
        && check_but_container::<K>(task, tgid, exit_code)
    {
        return Verdict::Undecided;
    }
    Verdict::Fail
}

/// The verdict on the exit of group `tgid`, whose task `task` is dying:
/// its exit code is the one acct keeps (`signal->pacct`), complete once
/// `acct_collect()` has run, at every exit hook and at the leader's free.
#[inline(always)]
pub(crate) fn group_verdict<K: Kernel>(task: u64, tgid: u32) -> Verdict {
    let pacct = member(K::u64(task, off!(task_signal)), off!(signal_pacct));
    verdict::<K>(task, tgid, K::u32(pacct, off!(pacct_exitcode)))
}

/// Whether the fork, exec and kill events of `task` (group `tgid`) are
/// wanted: the filters apply to every output, so these pass the same
/// filters as its exit, but `--failed` (not known before it dies); a
/// cgroup too new for the loader to have decided on passes.
#[inline(always)]
pub(crate) fn events_wanted<K: Kernel>(task: u64, tgid: u32) -> bool {
    let on = cfg!(filters) & !filter::FAILED;
    if on == 0 {
        return true;
    }
    check_with::<K>(task, tgid, 1, on)
        || (on & filter::CONTAINER != 0
            && in_pending::<K>(task)
            && check_with::<K>(task, tgid, 1, on & !filter::CONTAINER))
}

/// Whether a thread dying before its group leaves its taskstats figures
/// for the group's record: not when it fails `--pid` or `--uid`, which
/// the group's exit, decided on its last thread, fails too (a group's
/// threads share its tgid, and its uid: the C library's `setuid()` sets
/// every thread's). `--comm`, `--cgroup` and `--container` do not count
/// here: threads are often named apart, and v1 hierarchies place each on
/// its own; nor does `--failed`, not known yet.
#[inline(always)]
pub(crate) fn figures_wanted<K: Kernel>(task: u64, tgid: u32) -> bool {
    let on = cfg!(filters) & (filter::PID | filter::UID);
    on == 0 || check_with::<K>(task, tgid, 1, on)
}

/// Whether the task's own cgroup (v2, or the memory controller's) was made
/// too recently for the loader to have decided on it.
#[inline(always)]
fn in_pending<K: Kernel>(task: u64) -> bool {
    let css_set = K::u64(task, off!(task_cgroups));
    let v2 = K::u64(css_set, off!(css_set_dfl_cgrp));
    let v1 = K::u64(K::u64(css_set, off!(css_set_memcg)), off!(css_cgroup));
    let id = |cgrp: u64| K::u64(K::u64(cgrp, off!(cgroup_kn)), off!(kernfs_node_id));
    // SAFETY (the lookups): values are not read.
    unsafe { PENDING_CGROUPS.get(id(v2)) }.is_some()
        || unsafe { PENDING_CGROUPS_V1.get(id(v1)) }.is_some()
}

/// Every filter but `--container`.
#[inline(always)]
fn check_but_container<K: Kernel>(task: u64, tgid: u32, exit_code: u32) -> bool {
    check_with::<K>(task, tgid, exit_code, cfg!(filters) & !filter::CONTAINER)
}

#[inline(always)]
fn check<K: Kernel>(task: u64, tgid: u32, exit_code: u32) -> bool {
    check_with::<K>(task, tgid, exit_code, cfg!(filters))
}

#[inline(always)]
fn check_with<K: Kernel>(task: u64, tgid: u32, exit_code: u32, on: u32) -> bool {
    if on == 0 {
        return true;
    }
    if on & filter::FAILED != 0 && exit_code == 0 {
        return false;
    }
    // One value: a compare, not a lookup.
    let single = cfg!(filter_single);
    // SAFETY (the lookups): values are not read.
    if on & filter::PID != 0
        && !if single & filter::PID != 0 {
            tgid == cfg!(filter_pid)
        } else {
            unsafe { FILTER_PIDS.get(tgid) }.is_some()
        }
    {
        return false;
    }
    if on & filter::UID != 0 {
        let uid = K::u32(K::u64(task, off!(task_cred)), off!(cred_uid));
        let hit = if single & filter::UID != 0 {
            uid == cfg!(filter_uid)
        } else {
            unsafe { FILTER_UIDS.get(uid) }.is_some()
        };
        if !hit {
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
    if on & filter::CGROUP != 0 && !in_cgroups::<K>(task, &FILTER_CGROUPS, false) {
        return false;
    }
    if on & filter::CONTAINER != 0
        && !in_cgroups::<K>(task, &FILTER_CONTAINERS, false)
        && !in_cgroups::<K>(task, &FILTER_CONTAINERS_V1, true)
    {
        return false;
    }
    true
}

/// The task's v2 cgroup or one of its ancestors is in `FILTER_CGROUPS`:
/// a walk up `cgroup->self.parent`, member loads only (an indexed
/// `ancestors[i]` would need a helper call per level, too many branches
/// for the verifier in a loop).
#[inline(always)]
fn in_cgroups<K: Kernel>(task: u64, map: &HashMap<u64, u8>, v1: bool) -> bool {
    let css_set = K::u64(task, off!(task_cgroups));
    let mut cgrp = if v1 {
        // The memory controller's cgroup (a v1 one on v1 and hybrid hosts).
        K::u64(K::u64(css_set, off!(css_set_memcg)), off!(css_cgroup))
    } else {
        K::u64(css_set, off!(css_set_dfl_cgrp))
    };
    for _ in 0..CGROUP_DEPTH {
        if cgrp == 0 {
            return false;
        }
        let id = K::u64(K::u64(cgrp, off!(cgroup_kn)), off!(kernfs_node_id));
        // SAFETY: the value is not read.
        if unsafe { map.get(id) }.is_some() {
            return true;
        }
        let parent_css = K::u64(cgrp, off!(cgroup_parent_css));
        cgrp = K::u64(parent_css, off!(css_cgroup));
    }
    false
}
