//! The one decoded exit every output renders: each field a user can see,
//! named as in the JSON, in plain units (ns, KiB, counts). It is made once
//! per exit, from a ring record ([`Exit::from_record`]) or from an acct
//! file ([`crate::acct::AcctV3::to_exit`]); no output looks at either.
//!
//! A new exit field goes: `tracer_common::ExitRecord` (what the programs
//! send), [`Exit::from_record`] (the decoder), a field here, and the
//! outputs that show it.

use tracer_common::{flags, present, ExitRecord, Xacct};

pub use crate::causes::{Killer, OomKill};
use crate::{
    acct::{nsec_to_ahz, old_encode_dev, AHZ},
    causes::Cause,
    cgroups::CgroupInfo,
    container::Container,
    decode::Clock,
    exit_status::{Described, ExitStatus},
    lineage::{ExecContext, ProcessTable},
};

/// One thread group's death.
#[derive(Clone, Copy, Debug)]
pub struct Exit<'a> {
    /// Process id and its parent's at exit (initial pid namespace).
    pub pid: u32,
    pub ppid: u32,
    /// The thread whose exit ended the group (not in acct files).
    pub tid: Option<u32>,
    /// Command name, NUL-padded: at most 15 bytes, as the kernel keeps it.
    pub comm: [u8; 16],
    pub uid: u32,
    pub gid: u32,
    /// Controlling terminal in the old 16-bit `dev_t` encoding acct uses;
    /// 0 for none.
    pub tty: u16,
    /// The leader's raw exit code (`status << 8`, or the signal, `| 0x80`
    /// when a core was dumped).
    pub exit_code: u32,
    /// acct's flag bits: `FORK`, `SU`, `CORE`, `XSIG` (`crate::acct::A*`).
    pub flags: u8,
    /// Start time, unix seconds, as acct computes it from the exit time.
    pub btime: u32,
    /// When it died, unix ns: exact from the probes; `btime` + elapsed
    /// from an acct file.
    pub exit_time_ns: u64,
    /// Exact from the probes; acct's tick resolution from a file.
    pub elapsed_ns: u64,
    pub utime_ns: u64,
    pub stime_ns: u64,
    /// Virtual memory size at exit.
    pub mem_kb: u64,
    pub minflt: u64,
    pub majflt: u64,
    /// What only the probes know.
    pub probed: Option<Probed>,
    /// Where the process sits in the tree of creation, when an output
    /// asked for lineage.
    pub lineage: Option<Lineage<'a>>,
    /// Who sent the signal it died of (probes only; `None` when it did not
    /// die of a signal, or the signal was sent before the tracer started).
    pub killed_by: Option<Killer>,
    /// The OOM killer's verdict, when it chose this process.
    pub oom_kill: Option<&'a OomKill>,
    /// Its v2 cgroup at exit and the container that names, when an output
    /// shows containers and the cgroup is known.
    pub cgroup: Option<&'a CgroupInfo>,
    /// Its cgroup in the memory controller's v1 hierarchy (hybrid and v1
    /// hosts), where a runtime may have put its container alone.
    pub cgroup_v1: Option<&'a CgroupInfo>,
}

/// Fields the kernel knows at exit and acct drops; each `Option` is `None`
/// on kernels without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probed {
    /// `tracer run` took the record when the group's leader was freed,
    /// because the kernel skipped both exit programs
    /// (`tracer_common::flags::AT_FREE`): the exit time is that later
    /// one, the tty 0, comm and tid the leader's, no taskstats sums.
    pub late: bool,
    /// Signal sent to the parent on death; 0 or -1 for none.
    pub exit_signal: i32,
    /// Start time, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub maxrss_kb: Option<u64>,
    pub rchar: Option<u64>,
    pub wchar: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    /// The scheduler's exact on-CPU time of the whole group.
    pub cpu_runtime_ns: Option<u64>,
    pub nvcsw: Option<u64>,
    pub nivcsw: Option<u64>,
    /// The pid and parent's pid in the process's own pid namespace, and
    /// that namespace's inode number (when an output shows containers).
    pub ns: Option<NsIds>,
    /// What taskstats reports, summed over the group's threads.
    pub taskstats: Option<TaskStats>,
}

/// The kernel's taskstats figures for a task (a thread exit) or summed over
/// a group's threads (an exit), high-water marks the largest: what a
/// taskstats listener adding up the per-task records gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskStats {
    /// Peak RSS and virtual size, KiB: `None` where no thread's address
    /// space was still there at the hook (kernels before 6.16).
    pub hiwater_rss_kb: Option<u64>,
    pub hiwater_vm_kb: Option<u64>,
    /// RSS and virtual-size integrals, MB-usec (taskstats' unit).
    pub coremem: u64,
    pub virtmem: u64,
    /// I/O, each task's counter masked to whole KiB as taskstats does.
    pub read_char: u64,
    pub write_char: u64,
    pub read_syscalls: u64,
    pub write_syscalls: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub cancelled_write_bytes: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
    /// Where delay accounting was on (`kernel.task_delayacct`).
    pub delays: Option<Delays>,
}

/// Delay accounting totals, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delays {
    pub cpu_ns: u64,
    pub blkio_ns: u64,
    pub swapin_ns: u64,
    pub freepages_ns: u64,
    pub thrashing_ns: u64,
    pub memory_compact_ns: u64,
    /// `None` where the kernel has no IRQ delay (before 6.9).
    pub irq_ns: Option<u64>,
}

impl TaskStats {
    /// From a record's figures and its [`present`] bits.
    pub fn from_xacct(x: &Xacct, present_bits: u32) -> Option<Self> {
        let has = |bit| present_bits & bit != 0;
        has(present::XACCT).then(|| Self {
            hiwater_rss_kb: has(present::HIWATER).then_some(x.hiwater_rss_kb),
            hiwater_vm_kb: has(present::HIWATER).then_some(x.hiwater_vm_kb),
            coremem: x.coremem,
            virtmem: x.virtmem,
            read_char: x.read_char,
            write_char: x.write_char,
            read_syscalls: x.read_syscalls,
            write_syscalls: x.write_syscalls,
            read_bytes: x.read_bytes,
            write_bytes: x.write_bytes,
            cancelled_write_bytes: x.cancelled_write_bytes,
            nvcsw: x.nvcsw,
            nivcsw: x.nivcsw,
            delays: has(present::DELAYS).then_some(Delays {
                cpu_ns: x.cpu_delay_ns,
                blkio_ns: x.blkio_delay_ns,
                swapin_ns: x.swapin_delay_ns,
                freepages_ns: x.freepages_delay_ns,
                thrashing_ns: x.thrashing_delay_ns,
                memory_compact_ns: x.compact_delay_ns,
                irq_ns: has(present::DELAY_IRQ).then_some(x.irq_delay_ns),
            }),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsIds {
    pub pid: u32,
    /// 0 when the parent is outside the namespace.
    pub ppid: u32,
    pub pidns: u32,
}

/// The process table at the moment of an exit (before the exit is applied
/// to it), for the exit's creator, creation flags, ancestry, and what it
/// last exec'd.
#[derive(Clone, Copy, Debug)]
pub struct Lineage<'a> {
    pub table: &'a ProcessTable,
}

impl<'a> Lineage<'a> {
    /// The executable and arguments of `pid`'s last exec (its creator's,
    /// if it never exec'd; from /proc for a process older than the tracer).
    pub fn exec(&self, pid: u32) -> Option<&'a ExecContext> {
        self.table.exec_context(pid)
    }
}

impl Exit<'_> {
    /// How it ended, from the exit code.
    pub fn status(&self) -> ExitStatus {
        ExitStatus::from_code(self.exit_code)
    }

    /// How it ended and why, for people (the table's STATUS, the tree).
    pub fn described(&self) -> Described<'_> {
        Described {
            status: self.status(),
            pid: self.pid,
            killer: self.killed_by.as_ref().map(|k| (k.pid, k.comm_bytes())),
            oom_cgroup: self.oom_kill.map(|o| o.cgroup.as_str()),
        }
    }

    /// CPU time for people: the scheduler's exact figure when the probes
    /// had it, else acct's tick-sampled user + system time.
    pub fn cpu_ns(&self) -> u64 {
        match self.probed.and_then(|p| p.cpu_runtime_ns) {
            Some(ns) => ns,
            None => self.utime_ns + self.stime_ns,
        }
    }

    /// Peak RSS in KiB: taskstats' high-water mark where the hook saw the
    /// address space, else `signal_struct`'s (the largest any thread or
    /// earlier image of the process had, as getrusage() reports).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let p = self.probed?;
        p.taskstats.and_then(|t| t.hiwater_rss_kb).or(p.maxrss_kb)
    }

    /// Bytes the process made storage read and write (taskstats' figures).
    pub fn storage_io_bytes(&self) -> Option<u64> {
        let p = self.probed?;
        Some(p.read_bytes? + p.write_bytes?)
    }

    /// The command name up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        &self.comm[..end]
    }
}

impl<'a> Exit<'a> {
    /// Decodes a record from the probes; `clock` turns its monotonic times
    /// into wall-clock ones.
    pub fn from_record(rec: &ExitRecord, clock: &Clock) -> Self {
        // strscpy() into a zeroed buffer, as fill_ac(): stop at the first
        // NUL and always leave room for a terminating one.
        let mut comm = [0u8; 16];
        for (dst, &src) in comm[..15]
            .iter_mut()
            .zip(rec.comm.iter().take_while(|&&c| c != 0))
        {
            *dst = src;
        }
        let elapsed_ns = rec.exit_ns.saturating_sub(rec.start_ns);
        // fill_ac(): the exit's wall-clock second minus the elapsed whole
        // seconds (of ticks).
        let btime = clock
            .realtime_s(rec.exit_ns)
            .saturating_sub((nsec_to_ahz(elapsed_ns) / AHZ) as i64)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let has = |bit| rec.present & bit != 0;
        let page_kb = page_kb();
        let taskstats = TaskStats::from_xacct(&rec.xacct, rec.present);
        // Storage I/O and context switches: the taskstats sums where the
        // record has them (a leader that died first is in them; in
        // `signal_struct` only once it is reaped, after the group).
        let (read_bytes, write_bytes, nvcsw, nivcsw) = match taskstats {
            Some(t) => (
                Some(t.read_bytes),
                Some(t.write_bytes),
                Some(t.nvcsw),
                Some(t.nivcsw),
            ),
            None => (
                has(present::IO_BYTES).then_some(rec.read_bytes),
                has(present::IO_BYTES).then_some(rec.write_bytes),
                has(present::CSW).then_some(rec.nvcsw),
                has(present::CSW).then_some(rec.nivcsw),
            ),
        };
        Self {
            pid: rec.pid,
            ppid: rec.ppid,
            tid: Some(rec.tid),
            comm,
            uid: rec.uid,
            gid: rec.gid,
            tty: if rec.tty_dev == 0 {
                0
            } else {
                old_encode_dev(rec.tty_dev)
            },
            exit_code: rec.exit_code,
            flags: rec.ac_flag as u8,
            btime,
            exit_time_ns: u64::try_from(clock.realtime_ns(rec.exit_ns)).unwrap_or(0),
            elapsed_ns,
            utime_ns: rec.utime_ns,
            stime_ns: rec.stime_ns,
            mem_kb: rec.mem_kb,
            minflt: rec.minflt,
            majflt: rec.majflt,
            probed: Some(Probed {
                late: rec.flags & flags::AT_FREE != 0,
                exit_signal: rec.exit_signal,
                start_ns: rec.start_ns,
                cgroup_id: rec.cgroup_id,
                maxrss_kb: has(present::MAXRSS).then(|| rec.maxrss_pages * page_kb),
                rchar: has(present::IO_CHARS).then_some(rec.rchar),
                wchar: has(present::IO_CHARS).then_some(rec.wchar),
                read_bytes,
                write_bytes,
                cpu_runtime_ns: has(present::RUNTIME).then_some(rec.runtime_ns),
                nvcsw,
                nivcsw,
                taskstats,
                ns: (rec.pidns != 0).then_some(NsIds {
                    pid: rec.ns_pid,
                    ppid: rec.ns_ppid,
                    pidns: rec.pidns,
                }),
            }),
            lineage: None,
            killed_by: None,
            oom_kill: None,
            cgroup: None,
            cgroup_v1: None,
        }
    }

    pub fn with_cgroups(mut self, v2: Option<&'a CgroupInfo>, v1: Option<&'a CgroupInfo>) -> Self {
        self.cgroup = v2;
        self.cgroup_v1 = v1;
        self
    }

    /// The container it died in: as its v2 cgroup names it, else as its
    /// v1 one does.
    pub fn container(&self) -> Option<&'a Container> {
        self.cgroup
            .and_then(|c| c.container.as_ref())
            .or_else(|| self.cgroup_v1.and_then(|c| c.container.as_ref()))
    }

    /// The first 12 characters of the container id, as `docker ps` shows it.
    pub fn short_container_id(&self) -> Option<&'a str> {
        let c = self.container()?;
        Some(&c.id[..12.min(c.id.len())])
    }

    /// Why it died, from the kill and OOM events joined with it.
    pub fn with_cause(mut self, cause: &'a Cause) -> Self {
        self.killed_by = cause.killed_by;
        self.oom_kill = cause.oom_kill.as_ref();
        self
    }

    pub fn with_lineage(mut self, table: Option<&'a ProcessTable>) -> Self {
        self.lineage = table.map(|table| Lineage { table });
        self
    }
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024
}
