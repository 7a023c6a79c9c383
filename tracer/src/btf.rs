//! Kernel struct offsets and tracepoint shapes, read from the running
//! kernel's BTF. Rust eBPF gets no CO-RE relocations, so this is where the
//! eBPF programs learn the layout of the kernel they run on.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use btf_rs::{Btf, Type};
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
    /// `pacct_struct` and `task_io_accounting` have their usual layouts
    /// and can each be read in one call.
    pub pacct_std: bool,
    pub ioac_std: bool,
}

impl KernelLayout {
    pub fn from_running_kernel() -> Result<Self> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            bail!(
                "{VMLINUX_BTF} not found: this kernel was built without BTF \
                 (CONFIG_DEBUG_INFO_BTF), which tracer needs to read kernel structures; \
                 use a kernel with BTF (every major distribution ships one)"
            );
        }
        let btf = Btf::from_file(path).with_context(|| format!("cannot parse {VMLINUX_BTF}"))?;
        Self::from_btf(&btf)
    }

    pub fn from_btf(btf: &Btf) -> Result<Self> {
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
            bprm_filename: Struct::named(btf, "linux_binprm")
                .map(|b| b.optional("filename"))
                .unwrap_or(ABSENT),
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
            clone_args_flags: clone_args.as_ref().map_or(ABSENT, |c| c.optional("flags")),
            clone_args_exit_signal: clone_args
                .as_ref()
                .map_or(ABSENT, |c| c.optional("exit_signal")),
        };
        let exit_args = tracepoint_arg_count(btf, "sched_process_exit")?;
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
            && pacct.ty.size() >= 56;
        let ioac_std = [
            o.ioac_rchar,
            o.ioac_wchar,
            o.ioac_read_bytes,
            o.ioac_write_bytes,
        ] == [0, 8, 32, 40]
            && ioac.ty.size() >= 48;
        Ok(Self {
            offsets,
            pacct_std,
            ioac_std,
            exit_tp_has_group_dead: exit_args >= 2,
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
pub fn tracepoint_arg_count(btf: &Btf, name: &str) -> Result<usize> {
    let typedef = format!("btf_trace_{name}");
    let ty = btf
        .resolve_types_by_name(&typedef)
        .ok()
        .and_then(|tys| tys.into_iter().next())
        .with_context(|| format!("kernel BTF has no tracepoint {name} ({typedef})"))?;
    let mut ty = ty;
    for _ in 0..8 {
        ty = match ty {
            Type::FuncProto(proto) => return Ok(proto.parameters.len().saturating_sub(1)),
            Type::Typedef(ref t) => btf.resolve_chained_type(t)?,
            Type::Ptr(ref p) => btf.resolve_chained_type(p)?,
            other => bail!(
                "{typedef} is a {}, not a tracepoint prototype",
                other.name()
            ),
        };
    }
    bail!("{typedef}: type chain too long")
}

/// A struct type, with member lookup that looks through anonymous unions
/// and structs (as C does) and reports byte offsets.
struct Struct<'a> {
    btf: &'a Btf,
    name: &'static str,
    ty: btf_rs::Struct,
}

impl<'a> Struct<'a> {
    fn named(btf: &'a Btf, name: &'static str) -> Result<Self> {
        let types = btf
            .resolve_types_by_name(name)
            .with_context(|| format!("kernel BTF has no type {name}"))?;
        // A name can also be a forward declaration; take the full definition.
        let ty = types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .with_context(|| format!("kernel BTF has no struct {name}"))?;
        Ok(Self { btf, name, ty })
    }

    fn required(&self, member: &str) -> Result<u32> {
        match find_member(self.btf, &self.ty, member, 0)? {
            Some(off) => Ok(off),
            None => bail!(
                "kernel BTF: struct {} has no member {member}; this kernel's layout is not \
                 supported, please report it with `uname -r`",
                self.name
            ),
        }
    }

    fn optional(&self, member: &str) -> u32 {
        find_member(self.btf, &self.ty, member, 0)
            .ok()
            .flatten()
            .unwrap_or(ABSENT)
    }
}

fn find_member(btf: &Btf, st: &btf_rs::Struct, want: &str, base_bits: u32) -> Result<Option<u32>> {
    for m in &st.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits + m.bit_offset();
        if name == want {
            if m.bitfield_size().is_some_and(|b| b != 0) || !bits.is_multiple_of(8) {
                bail!("member {want} is a bitfield; cannot read it");
            }
            return Ok(Some(bits / 8));
        }
        if name.is_empty() {
            let mut ty = btf.resolve_chained_type(m)?;
            // Anonymous members can be wrapped in qualifiers.
            while let Type::Const(_) | Type::Volatile(_) | Type::Typedef(_) = ty {
                ty = match &ty {
                    Type::Const(t) => btf.resolve_chained_type(t)?,
                    Type::Volatile(t) => btf.resolve_chained_type(t)?,
                    Type::Typedef(t) => btf.resolve_chained_type(t)?,
                    _ => unreachable!(),
                };
            }
            if let Type::Struct(inner) | Type::Union(inner) = ty {
                if let Some(off) = find_member(btf, &inner, want, bits)? {
                    return Ok(Some(off));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
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
