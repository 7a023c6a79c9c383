//! Kernel struct offsets and tracepoint shapes, read from the running
//! kernel's BTF. Rust eBPF gets no CO-RE relocations, so this is where the
//! eBPF programs learn the layout of the kernel they run on.
//!
//! The BTF is read here, by a small reader over the raw bytes, and nowhere
//! else: a general BTF library builds an object per type (the kernel has
//! about 127,000), which cost 51 MiB (btf-rs) or 18 MiB (aya) of peak RSS
//! for the few dozen members we read. aya is handed a stand-in with only
//! the type it looks up ([`AttachTargets::stand_in`]).

use anyhow::{bail, Context as _, Result};
use tracer_common::{Offsets, ABSENT};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What the programs need to know about this kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelLayout {
    pub offsets: Offsets,
    /// `sched_process_exit` passes `group_dead` (kernels >= 6.16).
    pub exit_tp_has_group_dead: bool,
    /// That tracepoint fires before `exit_mm()`, and `exit_mmap` can give a
    /// record the exit time acct uses, after the address space is gone.
    pub exit_mmap_stamp: bool,
    /// `mm_struct.rss_stat` is an array of `percpu_counter`s (6.2 on), whose
    /// counts a BTF program may load; before, an `atomic_long_t` array the
    /// verifier refuses a load from.
    pub rss_loadable: bool,
    /// The kernel has `taskstats_exit()` (CONFIG_TASKSTATS): the fentry and
    /// kprobe modes take each thread's taskstats figures there, where
    /// taskstats itself does (before `exit_mm()`, on every kernel).
    pub has_taskstats_exit: bool,
    /// `pacct_struct` and `task_io_accounting` have their usual layouts
    /// and can each be read in one call.
    pub pacct_std: bool,
    pub ioac_std: bool,
    /// `oom:mark_victim` passes the victim's task (>= 6.8), not its pid.
    pub oom_victim_task: bool,
}

/// `css_set.subsys[memory_cgrp_id]`: the memory controller's slot, its
/// index taken from the kernel's own `enum cgroup_subsys_id`.
fn css_set_memcg(btf: &KernelBtf) -> u32 {
    let Ok(css_set) = Struct::named(btf, "css_set") else {
        return ABSENT;
    };
    match (css_set.optional("subsys"), btf.enumerator("memory_cgrp_id")) {
        (ABSENT, _) | (_, None) => ABSENT,
        (subsys, Some(index)) => u32::try_from(index)
            .ok()
            .and_then(|i| subsys.checked_add(i.checked_mul(8)?))
            .unwrap_or(ABSENT),
    }
}

/// Where the count of `mm_struct`'s first RSS counter is and how far apart
/// the counters are: `struct percpu_counter rss_stat[]` (>= 6.2, `count`
/// inside each) or `struct mm_rss_stat { atomic_long_t count[]; }`.
fn rss_counters(btf: &KernelBtf, mm: &Struct<'_>) -> Option<(u32, u32, bool)> {
    let (at, ty) = find_member_typed(btf, mm.id, "rss_stat").ok()??;
    let id = btf.resolve(ty)?;
    let ty = btf.ty(id).ok()?;
    match ty.kind {
        kind::ARRAY => {
            let elem = btf.resolve(read_u32(ty.rest, 0)?)?;
            let count = find_member(btf, elem, "count", 0).ok()??;
            Some((at + count, btf.ty(elem).ok()?.size_or_type, true))
        }
        kind::STRUCT => {
            let count = find_member(btf, id, "count", 0).ok()??;
            Some((at + count, 8, false))
        }
        _ => None,
    }
}

/// Whether a BTF tracepoint's first argument is a pointer (`mark_victim`:
/// the victim's task from 6.8, its pid before).
fn tracepoint_first_arg_is_pointer(btf: &KernelBtf, name: &str) -> bool {
    let Some(mut id) = btf.find(&format!("btf_trace_{name}"), |_| true) else {
        return false;
    };
    for _ in 0..8 {
        let Ok(ty) = btf.ty(id) else { return false };
        id = match ty.kind {
            kind::FUNC_PROTO => {
                // Parameters are (name_off, type) pairs; the first is the
                // probe's `void *` data.
                return read_u32(ty.rest, 12)
                    .and_then(|t| btf.resolve(t))
                    .and_then(|t| btf.ty(t).ok())
                    .is_some_and(|t| t.kind == kind::PTR);
            }
            kind::TYPEDEF | kind::PTR => ty.size_or_type,
            _ => return false,
        };
    }
    false
}

impl KernelLayout {
    pub fn from_running_kernel() -> Result<Self> {
        Self::from_btf(&KernelBtf::from_running_kernel()?)
    }

    pub fn from_btf(btf: &KernelBtf) -> Result<Self> {
        let task = Struct::named(btf, "task_struct")?;
        let signal = Struct::named(btf, "signal_struct")?;
        let pacct = Struct::named(btf, "pacct_struct")?;
        let ioac = Struct::named(btf, "task_io_accounting")?;
        let cred = Struct::named(btf, "cred")?;
        let tty = Struct::named(btf, "tty_struct")?;
        let driver = Struct::named(btf, "tty_driver")?;
        let mm = Struct::named(btf, "mm_struct")?;
        let se = Struct::named(btf, "sched_entity")?;
        let clone_args = Struct::named(btf, "kernel_clone_args").ok();
        let optional = |ty: &'static str, member: &str| {
            Struct::named(btf, ty).map_or(ABSENT, |s| s.optional(member))
        };

        let offsets = Offsets {
            task_pid: task.required("pid")?,
            task_tgid: task.required("tgid")?,
            task_comm: task.required("comm")?,
            task_real_parent: task.required("real_parent")?,
            task_group_leader: task.required("group_leader")?,
            task_start_time: task.required("start_time")?,
            task_signal: task.required("signal")?,
            task_cred: task.required("cred")?,
            task_exit_signal: task.required("exit_signal")?,
            task_nvcsw: task.optional("nvcsw"),
            task_nivcsw: task.optional("nivcsw"),
            task_ioac: task.optional("ioac"),
            task_mm: task.optional("mm"),
            mm_users: mm.optional("mm_users"),
            mm_arg_start: mm.optional("arg_start"),
            mm_arg_end: mm.optional("arg_end"),
            bprm_filename: optional("linux_binprm", "filename"),
            task_exit_code: task.optional("exit_code"),
            task_se_runtime: match (task.optional("se"), se.optional("sum_exec_runtime")) {
                (ABSENT, _) | (_, ABSENT) => ABSENT,
                (a, b) => a + b,
            },
            signal_live: signal.required("live")?,
            signal_tty: signal.required("tty")?,
            signal_maxrss: signal.optional("maxrss"),
            signal_nvcsw: signal.optional("nvcsw"),
            signal_nivcsw: signal.optional("nivcsw"),
            signal_ioac: signal.optional("ioac"),
            signal_runtime: signal.optional("sum_sched_runtime"),
            signal_pacct: signal
                .required("pacct")
                .context("the kernel has no process accounting (CONFIG_BSD_PROCESS_ACCT is off)")?,
            pacct_flag: pacct.required("ac_flag")?,
            pacct_exitcode: pacct.required("ac_exitcode")?,
            pacct_mem: pacct.required("ac_mem")?,
            pacct_utime: pacct.required("ac_utime")?,
            pacct_stime: pacct.required("ac_stime")?,
            pacct_minflt: pacct.required("ac_minflt")?,
            pacct_majflt: pacct.required("ac_majflt")?,
            ioac_rchar: ioac.optional("rchar"),
            ioac_wchar: ioac.optional("wchar"),
            ioac_read_bytes: ioac.optional("read_bytes"),
            ioac_write_bytes: ioac.optional("write_bytes"),
            cred_uid: cred.required("uid")?,
            cred_gid: cred.required("gid")?,
            tty_driver: tty.required("driver")?,
            tty_index: tty.required("index")?,
            driver_major: driver.required("major")?,
            driver_minor_start: driver.required("minor_start")?,
            task_cgroups: task.optional("cgroups"),
            css_set_dfl_cgrp: optional("css_set", "dfl_cgrp"),
            cgroup_kn: optional("cgroup", "kn"),
            kernfs_node_id: optional("kernfs_node", "id"),
            clone_args_flags: clone_args.as_ref().map_or(ABSENT, |c| c.optional("flags")),
            clone_args_exit_signal: clone_args
                .as_ref()
                .map_or(ABSENT, |c| c.optional("exit_signal")),
            siginfo_code: optional("kernel_siginfo", "si_code"),
            signal_oom_score_adj: signal.optional("oom_score_adj"),
            css_set_memcg: css_set_memcg(btf),
            css_cgroup: optional("cgroup_subsys_state", "cgroup"),
            memcg_memory: match Struct::named(btf, "mem_cgroup") {
                // The programs take the css for the memcg.
                Ok(m) if m.optional("css") == 0 => m.optional("memory"),
                _ => ABSENT,
            },
            counter_usage: optional("page_counter", "usage"),
            counter_max: optional("page_counter", "max"),
            counter_parent: optional("page_counter", "parent"),
            kernfs_node_name: optional("kernfs_node", "name"),
            kernfs_node_parent: match optional("kernfs_node", "parent") {
                ABSENT => optional("kernfs_node", "__parent"),
                off => off,
            },
            mm_rss_stat: ABSENT,
            rss_stride: ABSENT,
            task_thread_pid: task.optional("thread_pid"),
            pid_level: optional("pid", "level"),
            pid_numbers: optional("pid", "numbers"),
            upid_ns: optional("upid", "ns"),
            upid_size: Struct::named(btf, "upid").map_or(ABSENT, |u| u.size),
            pidns_inum: match (
                optional("pid_namespace", "ns"),
                optional("ns_common", "inum"),
            ) {
                (ABSENT, _) | (_, ABSENT) => ABSENT,
                (a, b) => a + b,
            },
            cgroup_root: optional("cgroup", "root"),
            root_hierarchy_id: optional("cgroup_root", "hierarchy_id"),
            cgroup_parent_css: match (
                optional("cgroup", "self"),
                optional("cgroup_subsys_state", "parent"),
            ) {
                (ABSENT, _) | (_, ABSENT) => ABSENT,
                (a, b) => a + b,
            },
            task_acct_rss_mem1: task.optional("acct_rss_mem1"),
            task_acct_vm_mem1: task.optional("acct_vm_mem1"),
            mm_hiwater_rss: mm.optional("hiwater_rss"),
            mm_hiwater_vm: mm.optional("hiwater_vm"),
            mm_total_vm: mm.optional("total_vm"),
            ioac_syscr: ioac.optional("syscr"),
            ioac_syscw: ioac.optional("syscw"),
            ioac_cancelled_write_bytes: ioac.optional("cancelled_write_bytes"),
            task_run_delay: match (
                task.optional("sched_info"),
                optional("sched_info", "run_delay"),
            ) {
                (ABSENT, _) | (_, ABSENT) => ABSENT,
                (a, b) => a + b,
            },
            task_delays: task.optional("delays"),
            delay_blkio: optional("task_delay_info", "blkio_delay"),
            delay_swapin: optional("task_delay_info", "swapin_delay"),
            delay_freepages: optional("task_delay_info", "freepages_delay"),
            delay_thrashing: optional("task_delay_info", "thrashing_delay"),
            delay_compact: optional("task_delay_info", "compact_delay"),
            delay_irq: optional("task_delay_info", "irq_delay"),
            signal_nr_threads: signal.optional("nr_threads"),
        };
        let mut offsets = offsets;
        let mut rss_loadable = false;
        if let Some((at, stride, array)) = rss_counters(btf, &mm) {
            offsets.mm_rss_stat = at;
            offsets.rss_stride = stride;
            rss_loadable = array;
        }
        let exit_args = tracepoint_arg_count(btf, "sched_process_exit")?;
        let oom_victim_task = tracepoint_first_arg_is_pointer(btf, "mark_victim");
        let has_exit_mmap = tracepoint_arg_count(btf, "exit_mmap").is_ok();
        let o = &offsets;
        let pacct_std = [
            o.pacct_flag,
            o.pacct_exitcode,
            o.pacct_mem,
            o.pacct_utime,
            o.pacct_stime,
            o.pacct_minflt,
            o.pacct_majflt,
        ] == [0, 8, 16, 24, 32, 40, 48]
            && pacct.size >= 56;
        let ioac_std = [
            o.ioac_rchar,
            o.ioac_wchar,
            o.ioac_read_bytes,
            o.ioac_write_bytes,
        ] == [0, 8, 32, 40]
            && ioac.size >= 48;
        Ok(Self {
            offsets,
            oom_victim_task,
            pacct_std,
            ioac_std,
            exit_tp_has_group_dead: exit_args >= 2,
            rss_loadable,
            has_taskstats_exit: btf
                .find("taskstats_exit", |t| t.kind == kind::FUNC)
                .is_some(),
            exit_mmap_stamp: exit_args >= 2
                && has_exit_mmap
                && offsets.task_mm != ABSENT
                && offsets.mm_users != ABSENT,
        })
    }
}

/// Number of arguments of a BTF tracepoint, from its `btf_trace_<name>`
/// typedef (a pointer to a prototype whose first parameter is the probe's
/// private `void *` data, not a tracepoint argument).
pub fn tracepoint_arg_count(btf: &KernelBtf, name: &str) -> Result<usize> {
    let typedef = format!("btf_trace_{name}");
    let mut id = btf
        .find(&typedef, |_| true)
        .with_context(|| format!("kernel BTF has no tracepoint {name} ({typedef})"))?;
    for _ in 0..8 {
        let ty = btf.ty(id)?;
        id = match ty.kind {
            kind::FUNC_PROTO => return Ok(usize::from(ty.vlen).saturating_sub(1)),
            kind::TYPEDEF | kind::PTR => ty.size_or_type,
            other => bail!(
                "{typedef} is a {}, not a tracepoint prototype",
                kind::name(other)
            ),
        };
    }
    bail!("{typedef}: type chain too long")
}

/// The BTF kinds (include/uapi/linux/btf.h) and what follows each one's
/// 12-byte header.
mod kind {
    pub(super) const INT: u32 = 1;
    pub(super) const PTR: u32 = 2;
    pub(super) const ARRAY: u32 = 3;
    pub(super) const STRUCT: u32 = 4;
    pub(super) const UNION: u32 = 5;
    pub(super) const ENUM: u32 = 6;
    pub(super) const FWD: u32 = 7;
    pub(super) const TYPEDEF: u32 = 8;
    pub(super) const VOLATILE: u32 = 9;
    pub(super) const CONST: u32 = 10;
    pub(super) const RESTRICT: u32 = 11;
    pub(super) const FUNC: u32 = 12;
    pub(super) const FUNC_PROTO: u32 = 13;
    pub(super) const VAR: u32 = 14;
    pub(super) const DATASEC: u32 = 15;
    pub(super) const FLOAT: u32 = 16;
    pub(super) const DECL_TAG: u32 = 17;
    pub(super) const TYPE_TAG: u32 = 18;
    pub(super) const ENUM64: u32 = 19;

    /// Bytes after the header, or `None` for a kind this reader does not know.
    pub(super) fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
        Some(match kind {
            INT | VAR | DECL_TAG => 4,
            ARRAY => 12,
            STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
            ENUM | FUNC_PROTO => 8 * vlen,
            PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
            _ => return None,
        })
    }

    pub(super) fn name(kind: u32) -> &'static str {
        match kind {
            INT => "int",
            PTR => "pointer",
            ARRAY => "array",
            STRUCT => "struct",
            UNION => "union",
            ENUM | ENUM64 => "enum",
            FWD => "forward declaration",
            TYPEDEF => "typedef",
            VOLATILE => "volatile",
            CONST => "const",
            RESTRICT => "restrict",
            FUNC => "function",
            FUNC_PROTO => "function prototype",
            VAR => "variable",
            DATASEC => "data section",
            FLOAT => "float",
            DECL_TAG => "declaration tag",
            TYPE_TAG => "type tag",
            _ => "type of an unknown kind",
        }
    }
}

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;

/// The kernel's BTF as read from sysfs: the raw bytes and where each type
/// starts; a type is decoded when it is looked at.
pub struct KernelBtf {
    data: Vec<u8>,
    /// Where type `id` starts in `data`, at index `id - 1` (id 0 is void).
    starts: Vec<u32>,
    strings: std::ops::Range<usize>,
}

impl KernelBtf {
    pub fn from_running_kernel() -> Result<Self> {
        let data = match std::fs::read(VMLINUX_BTF) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{VMLINUX_BTF} not found: this kernel was built without BTF \
                 (CONFIG_DEBUG_INFO_BTF), which tracer needs to read kernel structures; \
                 use a kernel with BTF (every major distribution ships one)"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {VMLINUX_BTF}")),
        };
        Self::parse(data).with_context(|| format!("cannot parse {VMLINUX_BTF}"))
    }

    /// Checks the header and indexes the types of a native-endian BTF blob.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        if data.len() < HEADER_LEN {
            bail!("{} bytes: shorter than a BTF header", data.len());
        }
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            if magic.swap_bytes() == BTF_MAGIC {
                bail!("the BTF is not in this machine's byte order");
            }
            bail!("not BTF (magic {magic:#06x})");
        }
        let field = |i: usize| read_u32(&data, 4 * i).map(|v| v as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) = (
            field(1).unwrap_or(0),
            field(2).unwrap_or(0),
            field(3).unwrap_or(0),
            field(4).unwrap_or(0),
            field(5).unwrap_or(0),
        );
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            let end = start.checked_add(len)?;
            (end <= data.len()).then_some(start..end)
        };
        let types = section(type_off, type_len).context("type section out of bounds")?;
        let strings = section(str_off, str_len).context("string section out of bounds")?;

        // About 25 bytes a type in vmlinux: reserve once rather than double.
        let mut starts = Vec::with_capacity(type_len / 24);
        let mut pos = types.start;
        while pos < types.end {
            let info = read_u32(&data[..types.end], pos + 4)
                .with_context(|| format!("type {} is cut short", starts.len() + 1))?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = kind::extra_len(kind, vlen)
                .with_context(|| format!("type {} has unknown kind {kind}", starts.len() + 1))?;
            starts.push(u32::try_from(pos).context("BTF larger than 4 GiB")?);
            pos += TYPE_HEADER_LEN + extra;
        }
        if pos != types.end {
            bail!("the last type runs past the type section");
        }
        Ok(Self {
            data,
            starts,
            strings,
        })
    }

    /// Type `id`; an error for void (0) or an id past the last type.
    fn ty(&self, id: u32) -> Result<Type<'_>> {
        let start = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.starts.get(i))
            .with_context(|| format!("kernel BTF has no type id {id}"))?;
        let start = *start as usize;
        let word = |i: usize| read_u32(&self.data, start + 4 * i).unwrap_or(0);
        let info = word(1);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as u16);
        let rest_start = start + TYPE_HEADER_LEN;
        let rest_len = kind::extra_len(kind, usize::from(vlen)).unwrap_or(0);
        Ok(Type {
            name_off: word(0),
            info,
            kind,
            vlen,
            kind_flag: info & (1 << 31) != 0,
            size_or_type: word(2),
            rest: &self.data[rest_start..rest_start + rest_len],
        })
    }

    /// The name at `offset` in the string section; empty when out of bounds.
    fn name(&self, offset: u32) -> &[u8] {
        let strings = &self.data[self.strings.clone()];
        let Some(tail) = strings.get(offset as usize..) else {
            return &[];
        };
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..end]
    }

    /// `id` with typedefs and qualifiers taken off.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let ty = self.ty(id).ok()?;
            if !matches!(
                ty.kind,
                kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG
            ) {
                return Some(id);
            }
            id = ty.size_or_type;
        }
        None
    }

    /// The value of the enumerator `name`, in whichever enum holds it.
    fn enumerator(&self, name: &str) -> Option<i64> {
        (1..=self.starts.len() as u32).find_map(|id| {
            let ty = self.ty(id).ok()?;
            let size = match ty.kind {
                kind::ENUM => 8,
                kind::ENUM64 => 12,
                _ => return None,
            };
            ty.rest.chunks_exact(size).find_map(|e| {
                (self.name(read_u32(e, 0)?) == name.as_bytes()).then(|| {
                    let lo = read_u32(e, 4).unwrap_or(0);
                    if size == 8 {
                        i64::from(lo as i32)
                    } else {
                        i64::from(lo) | i64::from(read_u32(e, 8).unwrap_or(0)) << 32
                    }
                })
            })
        })
    }

    /// The first type (lowest id) named `name` that `filter` accepts.
    fn find(&self, name: &str, filter: impl Fn(&Type<'_>) -> bool) -> Option<u32> {
        (1..=self.starts.len() as u32).find(|&id| {
            self.ty(id)
                .is_ok_and(|t| self.name(t.name_off) == name.as_bytes() && filter(&t))
        })
    }

    /// The types aya looks up when it loads the programs: `funcs` for
    /// fentry, `btf_trace_<name>` typedefs for each of `tracepoints`. A
    /// missing one is left out, and aya says so if that program is loaded.
    pub fn attach_targets(&self, funcs: &[&str], tracepoints: &[&str]) -> AttachTargets {
        let funcs = funcs.iter().map(|&f| (f.to_owned(), kind::FUNC));
        let typedefs = tracepoints
            .iter()
            .map(|tp| (format!("btf_trace_{tp}"), kind::TYPEDEF));
        AttachTargets(
            funcs
                .chain(typedefs)
                .filter_map(|(name, want)| {
                    let id = self.find(&name, |t| t.kind == want)?;
                    let info = self.ty(id).ok()?.info;
                    Some(AttachTarget { id, info, name })
                })
                .collect(),
        )
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// One BTF type: its header, decoded, and the bytes that follow it.
#[derive(Clone, Copy)]
struct Type<'a> {
    name_off: u32,
    info: u32,
    kind: u32,
    vlen: u16,
    kind_flag: bool,
    /// The size for structs, unions, ints...; the referred type for
    /// pointers, typedefs, qualifiers and functions.
    size_or_type: u32,
    rest: &'a [u8],
}

/// A struct or union member.
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// 0 when the member is not a bitfield.
    bitfield_bits: u32,
}

impl Type<'_> {
    /// Members of a struct or union; none for other kinds.
    fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let is_aggregate = matches!(self.kind, kind::STRUCT | kind::UNION);
        let kind_flag = self.kind_flag;
        self.rest
            .chunks_exact(12)
            .filter(move |_| is_aggregate)
            .map(move |m| {
                let word = |i: usize| read_u32(m, 4 * i).unwrap_or(0);
                let offset = word(2);
                // With kind_flag, the offset word packs the bitfield size.
                let (bit_offset, bitfield_bits) = if kind_flag {
                    (offset & 0xff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                Member {
                    name_off: word(0),
                    type_id: word(1),
                    bit_offset,
                    bitfield_bits,
                }
            })
    }
}

/// A type aya looks up by name and kind to load a tracing program, with
/// its id and header word in the kernel's BTF.
struct AttachTarget {
    id: u32,
    info: u32,
    name: String,
}

/// See [`KernelBtf::attach_targets`].
pub struct AttachTargets(Vec<AttachTarget>);

impl AttachTargets {
    /// A stand-in for the kernel's BTF for aya's loading of a program that
    /// attaches to the type `name` (a function, or a tracepoint's
    /// `btf_trace_*` typedef): aya only finds a type's id by name and kind
    /// and hands the id to the kernel. The type at its kernel id, and a
    /// nameless pointer to void at every id before it; with no such
    /// target, none, and aya says the type is missing.
    ///
    /// aya keeps 72 bytes a type, so the stand-in costs about 70 bytes per
    /// id up to the target's (8 MiB for `taskstats_exit` at id 113,000 on
    /// 6.18, 1 MiB for the tracepoints, all below 17,000): one per load,
    /// only as long as the target needs, dropped before the next is built,
    /// so the largest is paid for once and never adds to another.
    pub fn stand_in(&self, name: &str) -> Result<aya::Btf> {
        let target = self.0.iter().find(|t| t.name == name);
        let last = target.map_or(0, |t| t.id) as usize;
        let type_len = last * TYPE_HEADER_LEN;
        let strings_len = 1 + target.map_or(0, |t| t.name.len() + 1);
        let mut blob = Vec::with_capacity(HEADER_LEN + type_len + strings_len);
        blob.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        blob.extend_from_slice(&[1, 0]); // version 1, no flags
        for w in [HEADER_LEN, 0, type_len, type_len, strings_len] {
            blob.extend_from_slice(&(w as u32).to_ne_bytes());
        }
        let placeholder = [0, kind::PTR << 24, 0];
        for id in 1..=last as u32 {
            let words = match target {
                // The name is the first string, after the empty one.
                Some(t) if t.id == id => [1, t.info, 0],
                _ => placeholder,
            };
            for w in words {
                blob.extend_from_slice(&w.to_ne_bytes());
            }
        }
        blob.push(0);
        if let Some(t) = target {
            blob.extend_from_slice(t.name.as_bytes());
            blob.push(0);
        }
        aya::Btf::parse(&blob, aya::Endianness::default())
            .with_context(|| format!("cannot build the BTF stand-in for the loader ({name})"))
    }
}

/// A struct type, with member lookup that looks through anonymous unions
/// and structs (as C does) and reports byte offsets.
struct Struct<'a> {
    btf: &'a KernelBtf,
    name: &'static str,
    id: u32,
    /// In bytes.
    size: u32,
}

impl<'a> Struct<'a> {
    fn named(btf: &'a KernelBtf, name: &'static str) -> Result<Self> {
        // A name can also be a forward declaration; take the full definition.
        let Some(id) = btf.find(name, |t| t.kind == kind::STRUCT && t.vlen > 0) else {
            if btf.find(name, |_| true).is_none() {
                bail!("kernel BTF has no type {name}");
            }
            bail!("kernel BTF has no struct {name}");
        };
        let size = btf.ty(id)?.size_or_type;
        Ok(Self {
            btf,
            name,
            id,
            size,
        })
    }

    fn required(&self, member: &str) -> Result<u32> {
        match find_member(self.btf, self.id, member, 0)? {
            Some(off) => Ok(off),
            None => bail!(
                "kernel BTF: struct {} has no member {member}; this kernel's layout is not \
                 supported, please report it with `uname -r`",
                self.name
            ),
        }
    }

    fn optional(&self, member: &str) -> u32 {
        find_member(self.btf, self.id, member, 0)
            .ok()
            .flatten()
            .unwrap_or(ABSENT)
    }
}

fn find_member(btf: &KernelBtf, id: u32, want: &str, base_bits: u32) -> Result<Option<u32>> {
    Ok(find_member_in(btf, id, want, base_bits)?.map(|(off, _)| off))
}

/// A member's byte offset and its type id.
fn find_member_typed(btf: &KernelBtf, id: u32, want: &str) -> Result<Option<(u32, u32)>> {
    find_member_in(btf, id, want, 0)
}

fn find_member_in(
    btf: &KernelBtf,
    id: u32,
    want: &str,
    base_bits: u32,
) -> Result<Option<(u32, u32)>> {
    for m in btf.ty(id)?.members() {
        let name = btf.name(m.name_off);
        let bits = base_bits + m.bit_offset;
        if name == want.as_bytes() {
            if m.bitfield_bits != 0 || !bits.is_multiple_of(8) {
                bail!("member {want} is a bitfield; cannot read it");
            }
            return Ok(Some((bits / 8, m.type_id)));
        }
        if name.is_empty() {
            // Anonymous members can be wrapped in qualifiers.
            let mut inner_id = m.type_id;
            let mut inner = btf.ty(inner_id)?;
            for _ in 0..8 {
                if !matches!(inner.kind, kind::CONST | kind::VOLATILE | kind::TYPEDEF) {
                    break;
                }
                inner_id = inner.size_or_type;
                inner = btf.ty(inner_id)?;
            }
            if matches!(inner.kind, kind::STRUCT | kind::UNION) {
                if let Some(found) = find_member_in(btf, inner_id, want, bits)? {
                    return Ok(Some(found));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Resolves against the machine's own BTF when it has one: the offsets
    /// must be distinct and inside their structs; skipped (with a reason)
    /// on a kernel without BTF.
    #[test]
    fn resolves_the_running_kernel() {
        if !Path::new(VMLINUX_BTF).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI needs {VMLINUX_BTF}");
            }
            eprintln!("skipped: resolves_the_running_kernel: no {VMLINUX_BTF}");
            return;
        }
        let layout = KernelLayout::from_running_kernel().unwrap();
        let o = layout.offsets;
        let task_fields = [
            o.task_pid,
            o.task_tgid,
            o.task_comm,
            o.task_real_parent,
            o.task_group_leader,
            o.task_start_time,
            o.task_signal,
            o.task_cred,
            o.task_exit_signal,
        ];
        let mut sorted = task_fields;
        sorted.sort();
        sorted
            .windows(2)
            .for_each(|w| assert_ne!(w[0], w[1], "{o:?}"));
        assert!(task_fields.iter().all(|&f| f != ABSENT && f < 16384));
        // pid and tgid are adjacent pid_t members in every kernel.
        assert_eq!(o.task_tgid, o.task_pid + 4);
        assert_eq!(o.cred_gid, o.cred_uid + 4);
        // The uname release tells which prototype to expect.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        assert_eq!(layout.exit_tp_has_group_dead, (major, minor) >= (6, 16));
    }
}
