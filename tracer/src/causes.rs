//! Why it died: the kill and OOM events of the probes, kept by process
//! until its exit, which takes the ones that explain it (`killed_by`,
//! `oom_kill`).

use std::{borrow::Cow, collections::HashMap};

use tracer_common::{oom_present, KillRecord, OomRecord, CGROUP_LEVELS};

/// Processes with a kept event at most; past it, those no longer in /proc
/// are forgotten (their exit was lost, or came before the event).
const KEPT_MAX: usize = 1 << 16;

/// Who sent the signal that ended a process: the task in whose context it
/// was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Killer {
    pub pid: u32,
    pub tid: u32,
    /// NUL padded.
    pub comm: [u8; 16],
    pub uid: u32,
    /// The siginfo's `si_code`; its name depends on the signal.
    pub code: i32,
    pub signal: u8,
}

impl Killer {
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        &self.comm[..end]
    }

    /// The `si_code` by its name in `<signal.h>` (`SI_USER`, `SEGV_MAPERR`,
    /// ...), or the number when it has none.
    pub fn code_name(&self) -> Cow<'static, str> {
        si_code_name(self.signal, self.code)
    }
}

/// The OOM killer's verdict on a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomKill {
    /// The memory cgroup whose limit was hit, in its own hierarchy (the
    /// v2 one, or v1's memory hierarchy); `/` for a system-wide OOM. A
    /// path deeper than the probes keep starts with `...`.
    pub cgroup: String,
    /// The victim's RSS at the kill, in KiB, and its `oom_score_adj`:
    /// kernels whose `mark_victim` gives the victim's task only (>= 6.8).
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub oom_score_adj: Option<i32>,
}

impl OomKill {
    pub fn from_record(rec: &OomRecord, page_kb: u64) -> Self {
        let mut cgroup = String::new();
        if rec.present & oom_present::PATH_CUT != 0 {
            cgroup.push_str("...");
        }
        let levels = (rec.levels as usize).min(CGROUP_LEVELS);
        for name in rec.path[..levels].iter().rev() {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            cgroup.push('/');
            cgroup.push_str(&String::from_utf8_lossy(&name[..end]));
        }
        if cgroup.is_empty() {
            cgroup.push('/');
        }
        let victim = rec.present & oom_present::VICTIM != 0;
        Self {
            cgroup,
            anon_rss_kb: victim.then(|| rec.anon_pages * page_kb),
            file_rss_kb: victim.then(|| rec.file_pages * page_kb),
            shmem_rss_kb: victim.then(|| rec.shmem_pages * page_kb),
            oom_score_adj: victim.then_some(rec.oom_score_adj),
        }
    }
}

/// What explains one exit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cause {
    pub killed_by: Option<Killer>,
    pub oom_kill: Option<OomKill>,
}

/// The kill and OOM events of processes still alive.
#[derive(Debug)]
pub struct Causes {
    /// By target tgid: the last signal that could kill it.
    killers: HashMap<u32, Killer>,
    /// By victim tgid (or, on kernels whose tracepoint gives only the
    /// victim's pid, that pid).
    ooms: HashMap<u32, OomKill>,
    page_kb: u64,
}

impl Default for Causes {
    fn default() -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            killers: HashMap::new(),
            ooms: HashMap::new(),
            page_kb: u64::try_from(page).unwrap_or(4096) / 1024,
        }
    }
}

impl Causes {
    /// A signal that can kill was sent: the latest one is the one that
    /// counts if the process dies of it.
    pub fn kill(&mut self, rec: &KillRecord) {
        prune(&mut self.killers);
        self.killers.insert(
            rec.target_pid,
            Killer {
                pid: rec.sender_pid,
                tid: rec.sender_tid,
                comm: rec.sender_comm,
                uid: rec.sender_uid,
                code: rec.code,
                signal: rec.signal as u8,
            },
        );
    }

    pub fn oom(&mut self, rec: &OomRecord) {
        prune(&mut self.ooms);
        let key = if rec.victim_pid != 0 {
            rec.victim_pid
        } else {
            rec.victim_tid
        };
        self.ooms
            .insert(key, OomKill::from_record(rec, self.page_kb));
    }

    /// The cause of the exit of process `pid` (whose last thread was
    /// `tid`) with `exit_code`; forgets what was kept for it either way.
    pub fn take(&mut self, pid: u32, tid: Option<u32>, exit_code: u32) -> Cause {
        let signal = (exit_code & 0x7f) as u8;
        let killer = self.killers.remove(&pid);
        let mut oom = self.ooms.remove(&pid);
        if let Some(tid) = tid.filter(|&t| t != pid) {
            oom = oom.or_else(|| self.ooms.remove(&tid));
        }
        if signal == 0 {
            return Cause::default();
        }
        Cause {
            killed_by: killer.filter(|k| k.signal == signal),
            // The OOM killer's SIGKILL.
            oom_kill: oom.filter(|_| signal == 9),
        }
    }
}

/// Keeps a map bounded: when full, forgets processes that are gone.
fn prune<V>(map: &mut HashMap<u32, V>) {
    if map.len() >= KEPT_MAX {
        map.retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

/// `si_code` names, from the kernel's uapi `asm-generic/siginfo.h`.
pub fn si_code_name(signal: u8, code: i32) -> Cow<'static, str> {
    let name = match code {
        0 => Some("SI_USER"),
        0x80 => Some("SI_KERNEL"),
        -1 => Some("SI_QUEUE"),
        -2 => Some("SI_TIMER"),
        -3 => Some("SI_MESGQ"),
        -4 => Some("SI_ASYNCIO"),
        -5 => Some("SI_SIGIO"),
        -6 => Some("SI_TKILL"),
        -7 => Some("SI_DETHREAD"),
        -60 => Some("SI_ASYNCNL"),
        c if c > 0 => {
            let i = (c - 1) as usize;
            let names: &[&str] = match signal {
                4 => &[
                    "ILL_ILLOPC",
                    "ILL_ILLOPN",
                    "ILL_ILLADR",
                    "ILL_ILLTRP",
                    "ILL_PRVOPC",
                    "ILL_PRVREG",
                    "ILL_COPROC",
                    "ILL_BADSTK",
                    "ILL_BADIADDR",
                ],
                8 => &[
                    "FPE_INTDIV",
                    "FPE_INTOVF",
                    "FPE_FLTDIV",
                    "FPE_FLTOVF",
                    "FPE_FLTUND",
                    "FPE_FLTRES",
                    "FPE_FLTINV",
                    "FPE_FLTSUB",
                    "FPE_DECOVF",
                    "FPE_DECDIV",
                    "FPE_DECERR",
                    "FPE_INVASC",
                    "FPE_INVDEC",
                    "FPE_FLTUNK",
                    "FPE_CONDTRAP",
                ],
                11 => &[
                    "SEGV_MAPERR",
                    "SEGV_ACCERR",
                    "SEGV_BNDERR",
                    "SEGV_PKUERR",
                    "SEGV_ACCADI",
                    "SEGV_ADIDERR",
                    "SEGV_ADIPERR",
                    "SEGV_MTEAERR",
                    "SEGV_MTESERR",
                    "SEGV_CPERR",
                ],
                7 => &[
                    "BUS_ADRALN",
                    "BUS_ADRERR",
                    "BUS_OBJERR",
                    "BUS_MCEERR_AR",
                    "BUS_MCEERR_AO",
                ],
                5 => &[
                    "TRAP_BRKPT",
                    "TRAP_TRACE",
                    "TRAP_BRANCH",
                    "TRAP_HWBKPT",
                    "TRAP_UNK",
                    "TRAP_PERF",
                ],
                29 => &[
                    "POLL_IN", "POLL_OUT", "POLL_MSG", "POLL_ERR", "POLL_PRI", "POLL_HUP",
                ],
                31 => &["SYS_SECCOMP", "SYS_USER_DISPATCH"],
                _ => &[],
            };
            names.get(i).copied()
        }
        _ => None,
    };
    name.map_or_else(|| Cow::Owned(code.to_string()), Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(target: u32, signal: u32, sender: u32) -> KillRecord {
        KillRecord {
            kind: tracer_common::RECORD_KILL,
            signal,
            code: 0,
            target_pid: target,
            target_tid: target,
            sender_pid: sender,
            sender_tid: sender,
            sender_uid: 0,
            time_ns: 0,
            sender_comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn the_last_signal_that_matches_the_death_names_the_killer() {
        let mut c = Causes::default();
        c.kill(&kill(10, 15, 1));
        c.kill(&kill(10, 9, 2));
        let cause = c.take(10, Some(10), 9);
        assert_eq!(cause.killed_by.map(|k| k.pid), Some(2));
        // Forgotten at the exit.
        assert_eq!(c.take(10, Some(10), 9), Cause::default());
    }

    #[test]
    fn a_handled_signal_names_nobody() {
        let mut c = Causes::default();
        c.kill(&kill(10, 15, 1));
        assert_eq!(c.take(10, Some(10), 0), Cause::default());
        c.kill(&kill(11, 15, 1));
        // Died of another signal than the one kept.
        assert_eq!(c.take(11, Some(11), 6).killed_by, None);
    }

    #[test]
    fn oom_paths_read_root_first() {
        let mut rec = OomRecord {
            kind: tracer_common::RECORD_OOM,
            present: oom_present::MEMCG | oom_present::VICTIM,
            victim_pid: 7,
            victim_tid: 7,
            oom_score_adj: -5,
            levels: 2,
            anon_pages: 10,
            file_pages: 1,
            shmem_pages: 0,
            time_ns: 0,
            path: [[0; tracer_common::CGROUP_NAME_LEN]; CGROUP_LEVELS],
        };
        rec.path[0][..4].copy_from_slice(b"leaf");
        rec.path[1][..3].copy_from_slice(b"top");
        let oom = OomKill::from_record(&rec, 4);
        assert_eq!(oom.cgroup, "/top/leaf");
        assert_eq!(oom.anon_rss_kb, Some(40));
        assert_eq!(oom.oom_score_adj, Some(-5));
        rec.levels = 0;
        rec.present = 0;
        let global = OomKill::from_record(&rec, 4);
        assert_eq!(global.cgroup, "/");
        assert_eq!(global.anon_rss_kb, None);
    }

    #[test]
    fn si_codes_are_named_per_signal() {
        assert_eq!(si_code_name(9, 0), "SI_USER");
        assert_eq!(si_code_name(9, 0x80), "SI_KERNEL");
        assert_eq!(si_code_name(6, -6), "SI_TKILL");
        assert_eq!(si_code_name(11, 1), "SEGV_MAPERR");
        assert_eq!(si_code_name(7, 2), "BUS_ADRERR");
        assert_eq!(si_code_name(15, 3), "3");
    }
}
