//! Lineage: who created whom, how, and the ancestry of every exit.
//!
//! A process table seeded from `/proc` (so processes already running have
//! ancestors) and kept current by the fork, exec and exit events. Creation,
//! not parentage, places a process: the creator is known from
//! `task_newtask` and does not change when the kernel reparents.

use std::{collections::HashMap, rc::Rc};

use tracer_common::ForkRecord;

use crate::decode::Exec;

/// The CLONE_* flags by name (include/uapi/linux/sched.h), in bit order.
/// The low byte is the exit signal for clone(2) and carries no flags, but
/// for CLONE_NEWTIME, which clone3 can pass there.
const CLONE_FLAGS: [(u64, &str); 26] = [
    (0x0000_0080, "CLONE_NEWTIME"),
    (0x0000_0100, "CLONE_VM"),
    (0x0000_0200, "CLONE_FS"),
    (0x0000_0400, "CLONE_FILES"),
    (0x0000_0800, "CLONE_SIGHAND"),
    (0x0000_1000, "CLONE_PIDFD"),
    (0x0000_2000, "CLONE_PTRACE"),
    (0x0000_4000, "CLONE_VFORK"),
    (0x0000_8000, "CLONE_PARENT"),
    (0x0001_0000, "CLONE_THREAD"),
    (0x0002_0000, "CLONE_NEWNS"),
    (0x0004_0000, "CLONE_SYSVSEM"),
    (0x0008_0000, "CLONE_SETTLS"),
    (0x0010_0000, "CLONE_PARENT_SETTID"),
    (0x0020_0000, "CLONE_CHILD_CLEARTID"),
    (0x0040_0000, "CLONE_DETACHED"),
    (0x0080_0000, "CLONE_UNTRACED"),
    (0x0100_0000, "CLONE_CHILD_SETTID"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
    (0x8000_0000, "CLONE_IO"),
    (0x1_0000_0000, "CLONE_CLEAR_SIGHAND"),
];
const CLONE_INTO_CGROUP: (u64, &str) = (0x2_0000_0000, "CLONE_INTO_CGROUP");

pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_THREAD: u64 = 0x1_0000;
/// The flags that create a namespace: the tree marks such clones.
pub const CLONE_NEW_ANY: u64 = 0x80
    | 0x2_0000
    | 0x200_0000
    | 0x400_0000
    | 0x800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000;

pub fn clone_flag_names(flags: u64) -> impl Iterator<Item = &'static str> {
    CLONE_FLAGS
        .into_iter()
        .chain([CLONE_INTO_CGROUP])
        .filter(move |(bit, _)| flags & bit != 0)
        .map(|(_, name)| name)
}

/// How a task was created, from its clone flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Thread,
    Process,
    Vfork,
}

impl Kind {
    pub fn of(flags: u64) -> Self {
        if flags & CLONE_THREAD != 0 {
            Self::Thread
        } else if flags & CLONE_VFORK != 0 {
            Self::Vfork
        } else {
            Self::Process
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Thread => "thread",
            Self::Process => "process",
            Self::Vfork => "vfork",
        }
    }
}

/// What a process last exec'd: shared (an `Rc`) by every process forked
/// from it that has not exec'd since, so a fork costs a count, not a copy.
#[derive(Debug, PartialEq, Eq)]
pub struct ExecContext {
    /// The executable's path as exec was given it (the kernel's
    /// `bprm->filename`), or `/proc/PID/exe` for a process found at start.
    pub exe: Box<[u8]>,
    /// The arguments, each followed by a NUL, as the process has them.
    pub argv: Box<[u8]>,
    /// The arguments were longer than what was kept.
    pub argv_truncated: bool,
}

impl ExecContext {
    fn of_record(e: &Exec) -> Self {
        let args = &e.args[..];
        let name_len = e
            .filename
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(e.filename.len());
        Self {
            exe: e.filename[..name_len].into(),
            argv: args.into(),
            argv_truncated: e.truncated(),
        }
    }

    /// A running process, from /proc: bounded to `max_argv` bytes.
    fn of_proc(pid: u32, max_argv: usize) -> Option<Self> {
        use std::{io::Read as _, os::unix::ffi::OsStrExt as _};
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let mut argv = Vec::new();
        let mut f = std::fs::File::open(format!("/proc/{pid}/cmdline")).ok()?;
        f.by_ref()
            .take(max_argv as u64 + 1)
            .read_to_end(&mut argv)
            .ok()?;
        let argv_truncated = argv.len() > max_argv;
        argv.truncate(max_argv);
        Some(Self {
            exe: exe.as_os_str().as_bytes().into(),
            argv: argv.into(),
            argv_truncated,
        })
    }

    /// The arguments, one slice each; a cut last argument is kept.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        let end = self.argv.len();
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= end {
                return None;
            }
            let rest = &self.argv[start..];
            let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            start += len + 1;
            Some(&rest[..len])
        })
    }
}

#[derive(Clone, Debug)]
struct Proc {
    /// The creating process; for one found in /proc at start, its parent.
    creator: Option<u32>,
    comm: [u8; 16],
    /// Clone flags, when we saw the creation.
    flags: Option<u64>,
    alive: bool,
    /// Entries whose `creator` is this one and that are still in the table.
    children: u32,
    /// Its last exec, or its creator's when it has not exec'd.
    exec: Option<Rc<ExecContext>>,
    /// When its last exec event was (CLOCK_MONOTONIC ns), 0 for none.
    exec_ns: u64,
}

/// The live process table. Dead entries stay while a live descendant can
/// name them in its ancestry, and are dropped when the last one goes, so
/// the table is bounded by the processes alive plus their dead ancestors.
#[derive(Debug, Default)]
pub struct ProcessTable {
    /// foldhash rather than SipHash: pids are not chosen by an attacker
    /// who could aim at collisions, and several lookups per event made
    /// SipHash 10% of the loader's time under `--json`.
    procs: HashMap<u32, Proc, foldhash::fast::RandomState>,
    /// Ancestry stops here (the command `tracer run` started).
    root: Option<u32>,
    /// The most entries held at once.
    peak: usize,
    /// Dead and childless since the last sweep, and since the one before:
    /// a dead entry is removed only at the second sweep after its exit,
    /// because a fork it made can come after its exit (staged on another
    /// CPU; see `order`), and must find it.
    dying: Vec<u32>,
    dying_before: Vec<u32>,
    /// Execs of processes the table did not hold when they came (their
    /// fork event came later still: `order` gave up waiting for it), for
    /// that fork to find: otherwise the process would take its creator's
    /// exec, and its exit the creator's argv. Kept until the second sweep,
    /// as dead entries are, and at most [`MAX_EARLY_EXECS`].
    early_execs: HashMap<u32, EarlyExec, foldhash::fast::RandomState>,
    early_before: Vec<u32>,
}

#[derive(Debug)]
struct EarlyExec {
    comm: [u8; 16],
    exec: Rc<ExecContext>,
    exec_ns: u64,
}

/// Execs kept for a fork that has not come (see `early_execs`): more at
/// once than a drain tick's worth only when forks are lost.
const MAX_EARLY_EXECS: usize = 4096;

/// Ancestry chains stop after this many steps (a cycle can only come from
/// pid reuse racing the table, but must not hang the tracer).
const MAX_DEPTH: usize = 64;

impl ProcessTable {
    /// Seeded from `/proc`: every process running now, with its parent and
    /// its executable and arguments (at most `max_argv` bytes of them).
    pub fn from_proc(max_argv: usize) -> Self {
        let mut table = Self::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return table;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((comm, ppid)) = parse_stat(&stat) {
                table.procs.insert(
                    pid,
                    Proc {
                        creator: (ppid != 0).then_some(ppid),
                        comm,
                        flags: None,
                        alive: true,
                        children: 0,
                        exec: ExecContext::of_proc(pid, max_argv).map(Rc::new),
                        exec_ns: 0,
                    },
                );
            }
        }
        table.peak = table.procs.len();
        let creators: Vec<u32> = table.procs.values().filter_map(|p| p.creator).collect();
        for c in creators {
            if let Some(p) = table.procs.get_mut(&c) {
                p.children += 1;
            }
        }
        table
    }

    pub fn set_root(&mut self, pid: u32) {
        self.root = Some(pid);
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn fork(&mut self, f: &ForkRecord) {
        if Kind::of(f.clone_flags) == Kind::Thread {
            return;
        }
        if let Some(p) = self.procs.get_mut(&f.child_pid) {
            // The same process, known before its fork event came: seeded
            // from /proc after it was created, or it exec'd since (its
            // exec event came first; the fork was staged on another CPU).
            // The event says who made it and how; what it did stays.
            if p.alive && (p.flags.is_none() || p.exec_ns >= f.time_ns) {
                let old = p.creator.replace(f.parent_pid);
                p.flags = Some(f.clone_flags);
                if old != Some(f.parent_pid) {
                    if let Some(o) = old.and_then(|o| self.procs.get_mut(&o)) {
                        o.children = o.children.saturating_sub(1);
                    }
                    if let Some(n) = self.procs.get_mut(&f.parent_pid) {
                        n.children += 1;
                    }
                }
                return;
            }
        }
        let exec = self.procs.get_mut(&f.parent_pid).and_then(|p| {
            p.children += 1;
            p.exec.clone()
        });
        let mut proc = Proc {
            creator: Some(f.parent_pid),
            comm: f.comm,
            flags: Some(f.clone_flags),
            alive: true,
            children: 0,
            exec,
            exec_ns: 0,
        };
        // Its exec came first, and was kept (an older pid's is older than
        // this fork, and not taken).
        if let Some(early) = self.early_execs.remove(&f.child_pid) {
            if early.exec_ns >= f.time_ns {
                proc.comm = early.comm;
                proc.exec = Some(early.exec);
                proc.exec_ns = early.exec_ns;
            }
        }
        // A pid reused while a dead entry still waited for its children:
        // the new process takes the slot; the old one's children keep
        // counting against it, which only delays a removal.
        if let Some(old) = self.procs.insert(f.child_pid, proc) {
            if let Some(new) = self.procs.get_mut(&f.child_pid) {
                new.children = old.children;
            }
        }
        self.peak = self.peak.max(self.procs.len());
    }

    pub fn exec(&mut self, e: &Exec) {
        let exec = Rc::new(ExecContext::of_record(e));
        if let Some(p) = self.procs.get_mut(&e.pid) {
            p.comm = e.comm;
            p.exec = Some(exec);
            p.exec_ns = e.time_ns;
        } else if self.early_execs.len() < MAX_EARLY_EXECS {
            self.early_execs.insert(
                e.pid,
                EarlyExec {
                    comm: e.comm,
                    exec,
                    exec_ns: e.time_ns,
                },
            );
        }
    }

    /// What `pid` last exec'd (or its creator, if it never did), when known.
    pub fn exec_context(&self, pid: u32) -> Option<&ExecContext> {
        self.procs.get(&pid)?.exec.as_deref()
    }

    /// How `pid` was created, if we saw it: (creator, clone flags).
    pub fn creation(&self, pid: u32) -> Option<(Option<u32>, Option<u64>)> {
        self.procs.get(&pid).map(|p| (p.creator, p.flags))
    }

    /// The chain of creators above `pid`, nearest first, up to the root of
    /// `tracer run`, pid 1, or the first one not known.
    pub fn ancestors(&self, pid: u32) -> impl Iterator<Item = (u32, &[u8; 16])> {
        let mut next = if Some(pid) == self.root {
            None
        } else {
            self.procs.get(&pid).and_then(|p| p.creator)
        };
        let mut steps = 0;
        std::iter::from_fn(move || {
            let pid = next?;
            steps += 1;
            let p = self.procs.get(&pid)?;
            next = if steps >= MAX_DEPTH || Some(pid) == self.root || pid == 1 {
                None
            } else {
                p.creator
            };
            Some((pid, &p.comm))
        })
    }

    /// Whether `pid` is in the table and alive: what it does can be
    /// placed.
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.alive)
    }

    /// `pid` died: keep it while children may still name it, and until the
    /// second [`Self::sweep`] from now in any case.
    pub fn exit(&mut self, pid: u32) {
        match self.procs.get_mut(&pid) {
            Some(p) => p.alive = false,
            None => return,
        }
        self.dying.push(pid);
    }

    /// Called after each flush of the stages has been drained: removes the
    /// dead entries whose exit came before the previous sweep, and the dead
    /// creators that were kept only for them.
    pub fn sweep(&mut self) {
        let due = std::mem::replace(&mut self.dying_before, std::mem::take(&mut self.dying));
        for pid in due {
            self.remove_done(pid);
        }
        // Early execs kept since before the last sweep go; an entry
        // replaced since (pid reuse) goes a sweep early, which only costs
        // that later exec its wait.
        for pid in std::mem::take(&mut self.early_before) {
            self.early_execs.remove(&pid);
        }
        self.early_before = self.early_execs.keys().copied().collect();
    }

    /// Removes `pid` if it is dead and childless, then its creator if that
    /// makes it so, and so on up.
    fn remove_done(&mut self, pid: u32) {
        let mut cur = Some(pid);
        while let Some(pid) = cur {
            let Some(p) = self.procs.get(&pid) else {
                break;
            };
            if p.alive || p.children > 0 {
                break;
            }
            let creator = p.creator;
            self.procs.remove(&pid);
            cur = creator.and_then(|c| {
                let parent = self.procs.get_mut(&c)?;
                parent.children = parent.children.saturating_sub(1);
                Some(c)
            });
        }
    }
}

/// (comm, ppid) from /proc/PID/stat; the comm is between the first '(' and
/// the last ')', since it can hold both.
fn parse_stat(stat: &str) -> Option<([u8; 16], u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.as_bytes();
    let mut comm = [0u8; 16];
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name[..n]);
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fork(parent: u32, child: u32, flags: u64, comm: &[u8]) -> ForkRecord {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        ForkRecord {
            kind: tracer_common::RECORD_FORK,
            exit_signal: 17,
            parent_pid: parent,
            parent_tid: parent,
            child_pid: child,
            child_tid: child,
            clone_flags: flags,
            time_ns: 0,
            comm: c,
        }
    }

    fn chain(t: &ProcessTable, pid: u32) -> Vec<u32> {
        t.ancestors(pid).map(|(p, _)| p).collect()
    }

    #[test]
    fn names_and_kinds() {
        let names: Vec<_> = clone_flag_names(0x2000_0000 | 0x100 | 0x4000).collect();
        assert_eq!(names, ["CLONE_VM", "CLONE_VFORK", "CLONE_NEWPID"]);
        assert_eq!(Kind::of(0x1_0000 | 0x100), Kind::Thread);
        assert_eq!(Kind::of(0x4000 | 0x100), Kind::Vfork);
        assert_eq!(Kind::of(0), Kind::Process);
        assert_eq!(
            clone_flag_names(0x2_0000_0000).collect::<Vec<_>>(),
            ["CLONE_INTO_CGROUP"]
        );
    }

    #[test]
    fn ancestry_survives_reparenting_and_the_table_empties() {
        let mut t = ProcessTable::default();
        t.procs.insert(
            1,
            Proc {
                creator: None,
                comm: *b"init\0\0\0\0\0\0\0\0\0\0\0\0",
                flags: None,
                alive: true,
                children: 0,
                exec: None,
                exec_ns: 0,
            },
        );
        t.fork(&fork(1, 10, 0, b"shell"));
        t.fork(&fork(10, 11, 0, b"daemon"));
        t.fork(&fork(11, 12, 0, b"worker"));
        t.fork(&fork(12, 12, CLONE_THREAD, b"worker"));
        assert_eq!(chain(&t, 12), [11, 10, 1]);
        // The double fork: 11 dies, 12 is reparented by the kernel, but was
        // created by 11 and keeps that ancestry.
        t.exit(11);
        assert_eq!(chain(&t, 12), [11, 10, 1]);
        t.exit(10);
        t.exit(12);
        // Dead entries stay for two sweeps: a fork they made may come yet.
        t.sweep();
        assert_eq!(chain(&t, 12), [11, 10, 1]);
        assert!(!t.knows(12));
        t.sweep();
        // Everything dead and childless is gone; init stays.
        assert_eq!(t.len(), 1);
        assert!(t.knows(1));
    }

    #[test]
    fn a_fork_that_comes_after_its_process_exec_d_keeps_the_exec() {
        let mut t = ProcessTable::default();
        t.fork(&fork(1, 5, 0, b"sh"));
        // 6 was seen in /proc between its fork and its exec.
        t.procs.insert(
            6,
            Proc {
                creator: Some(1),
                comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                flags: None,
                alive: true,
                children: 0,
                exec: None,
                exec_ns: 0,
            },
        );
        let mut e = crate::output::fixtures::exec(b"/bin/ls", b"ls\0", 3);
        e.pid = 6;
        e.time_ns = 200;
        t.exec(&e);
        let mut f = fork(5, 6, 0, b"sh");
        f.time_ns = 100;
        t.fork(&f);
        assert_eq!(&*t.exec_context(6).unwrap().exe, b"/bin/ls");
        assert_eq!(t.creation(6), Some((Some(5), Some(0))));
        assert_eq!(chain(&t, 6), [5]);
        // A later process with that pid (its fork after that exec) is new.
        t.exit(6);
        let mut f = fork(5, 6, 0, b"sh");
        f.time_ns = 300;
        t.fork(&f);
        assert!(t.exec_context(6).is_none());
    }

    #[test]
    fn an_exec_that_came_before_its_fork_is_kept_for_it() {
        let mut t = ProcessTable::default();
        t.fork(&fork(1, 5, 0, b"sh"));
        let mut e = crate::output::fixtures::exec(b"/bin/echo", b"echo\0x\0", 7);
        e.pid = 6;
        e.time_ns = 200;
        // `order` gave up on 6's fork: the table does not hold 6 yet.
        t.exec(&e);
        t.sweep();
        let mut f = fork(5, 6, 0, b"sh");
        f.time_ns = 100;
        t.fork(&f);
        assert_eq!(&*t.exec_context(6).unwrap().exe, b"/bin/echo");
        assert_eq!(chain(&t, 6), [5]);

        // An exec older than the fork is another process's, not taken.
        e.pid = 7;
        t.exec(&e);
        let mut f = fork(5, 7, 0, b"sh");
        f.time_ns = 300;
        t.fork(&f);
        assert_ne!(t.exec_context(7).map(|c| &*c.exe), Some(&b"/bin/echo"[..]));

        // Kept until the second sweep only.
        e.pid = 8;
        t.exec(&e);
        t.sweep();
        t.sweep();
        let mut f = fork(5, 8, 0, b"sh");
        f.time_ns = 100;
        t.fork(&f);
        assert_ne!(t.exec_context(8).map(|c| &*c.exe), Some(&b"/bin/echo"[..]));
        assert!(t.early_execs.is_empty());
    }

    #[test]
    fn a_fork_that_comes_after_its_creators_exit_still_finds_it() {
        let mut t = ProcessTable::default();
        t.fork(&fork(1, 10, 0, b"daemon"));
        t.exit(10);
        t.sweep();
        // Staged on another CPU, the fork event comes a flush later.
        t.fork(&fork(10, 11, 0, b"worker"));
        t.sweep();
        t.sweep();
        assert_eq!(chain(&t, 11), [10]);
        t.exit(11);
        t.sweep();
        t.sweep();
        assert!(t.is_empty());
    }

    #[test]
    fn root_bounds_the_chain() {
        let mut t = ProcessTable::default();
        t.fork(&fork(1, 5, 0, b"tracer"));
        t.fork(&fork(5, 6, 0, b"cmd"));
        t.fork(&fork(6, 7, 0x2000_0000, b"ns"));
        t.set_root(6);
        assert_eq!(chain(&t, 7), [6]);
        assert!(chain(&t, 6).is_empty());
    }

    #[test]
    fn a_fork_inherits_the_last_exec_and_an_exec_replaces_it() {
        let mut t = ProcessTable::default();
        t.fork(&fork(1, 5, 0, b"sh"));
        let mut e = crate::output::fixtures::exec(b"/bin/ls", b"ls\0-l\0", 6);
        e.pid = 5;
        t.exec(&e);
        t.fork(&fork(5, 6, 0, b"ls"));
        let ctx = t.exec_context(6).unwrap();
        assert_eq!(&*ctx.exe, b"/bin/ls");
        assert_eq!(ctx.args().collect::<Vec<_>>(), [&b"ls"[..], b"-l"]);
        assert!(!ctx.argv_truncated);
        let mut e = crate::output::fixtures::exec(b"/bin/echo", b"echo\0hel", 20);
        e.pid = 6;
        t.exec(&e);
        let ctx = t.exec_context(6).unwrap();
        assert_eq!(ctx.args().collect::<Vec<_>>(), [&b"echo"[..], b"hel"]);
        assert!(ctx.argv_truncated);
        assert_eq!(&*t.exec_context(5).unwrap().exe, b"/bin/ls");
        assert!(t.exec_context(1).is_none());
    }

    #[test]
    fn running_processes_get_theirs_from_proc() {
        let me = ExecContext::of_proc(std::process::id(), 4096).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(&*me.exe, exe.as_os_str().as_encoded_bytes());
        assert!(me.args().count() >= 1);
        let cut = ExecContext::of_proc(std::process::id(), 3).unwrap();
        assert_eq!(cut.argv.len(), 3);
        assert!(cut.argv_truncated);
    }

    #[test]
    fn stat_with_parentheses_in_comm() {
        let (comm, ppid) = parse_stat("42 (a) b)) S 7 42 42 0 -1").unwrap();
        assert_eq!(&comm[..6], b"a) b)\0");
        assert_eq!(ppid, 7);
    }
}
