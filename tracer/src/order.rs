//! Order: the records a process's life leaves, put back in the order it
//! lived them.
//!
//! The programs stage exit records and fork events on each CPU and put a
//! CPU's stage into the ring when it is full or when the loader flushes
//! it (`tracer-ebpf/src/ring.rs`). What one CPU staged
//! can therefore reach the loader after what another staged later: a
//! child's exec, exit or own forks before the fork event that made it.
//!
//! The process table needs a process's fork before anything the process
//! did. A record about a process the table does not hold alive waits here,
//! in the order it came, until the fork of that process comes, or until a
//! flush of every CPU's stage that began after the record came has been
//! drained: whatever it waited for is in the ring by then, or never comes
//! (filtered out, lost with the ring full, or older than the session).
//! A flush counts only when it emptied every stage it tried (a program
//! filling one makes it wait for a later flush) and the drain after it
//! read past every record it put in the ring: a record that another
//! program is still writing stops the reader, and a fork behind it would
//! otherwise come after the records it explains were given up on
//! (`ring_positions`). A fork can still come later than that (seen in an
//! emulated 6.1 VM): the table keeps an exec it could not place for it
//! (`lineage`).

use std::collections::{HashMap, VecDeque};

use crate::{decode::Record, lineage::Kind};

/// The records that wait for their process's fork.
#[derive(Debug, Default)]
pub struct Waiting {
    held: VecDeque<Held>,
    /// How many of `held` are about each pid.
    by_pid: HashMap<u32, u32, foldhash::fast::RandomState>,
    /// How many of `held` are forks that create each pid: those release
    /// the records about it.
    creating: HashMap<u32, u32, foldhash::fast::RandomState>,
    /// Flushes of the stages begun so far.
    flushes: u64,
    /// The most records held at once.
    peak: usize,
}

#[derive(Debug)]
struct Held {
    pid: u32,
    /// `flushes` when it came: it is due once a later flush was drained.
    flush: u64,
    record: Record,
}

/// Flushes after which a due record whose fork is held too goes on
/// anyway (a cycle, which only pid reuse could make, must not hold it
/// forever).
const PATIENCE: u64 = 3;

impl Waiting {
    /// The process a record is about, which the table must hold first;
    /// `None` for the kinds the table does not place. A thread's creation
    /// and death are not: they change nothing in the table, and holding
    /// every thread a new process makes until its own fork event came
    /// cost megabytes on thread churn.
    pub fn subject(record: &Record) -> Option<u32> {
        match record {
            Record::Exit(e) => Some(e.pid),
            Record::Fork(f) if Kind::of(f.clone_flags) != Kind::Thread => Some(f.parent_pid),
            Record::Exec(e) => Some(e.pid),
            Record::Fork(_)
            | Record::ThreadExit(_)
            | Record::MmapStamp(_)
            | Record::Kill(_)
            | Record::Oom(_)
            | Record::Cgroup(_) => None,
        }
    }

    /// Records about `pid` wait: a later one waits behind them.
    pub fn waits_for(&self, pid: u32) -> bool {
        !self.by_pid.is_empty() && self.by_pid.contains_key(&pid)
    }

    pub fn hold(&mut self, pid: u32, record: Record) {
        *self.by_pid.entry(pid).or_default() += 1;
        if let Some(child) = created(&record) {
            *self.creating.entry(child).or_default() += 1;
        }
        self.held.push_back(Held {
            pid,
            flush: self.flushes,
            record,
        });
        self.peak = self.peak.max(self.held.len());
    }

    /// A flush of every CPU's stage begins.
    pub fn flush_begun(&mut self) {
        self.flushes += 1;
    }

    /// The records about `pid`, in the order they came (its fork came).
    pub fn take_for(&mut self, pid: u32) -> Vec<Record> {
        if !self.waits_for(pid) {
            return Vec::new();
        }
        let (mine, rest): (VecDeque<Held>, VecDeque<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.pid == pid);
        self.held = rest;
        mine.into_iter().map(|h| self.forget(h)).collect()
    }

    /// The records that came before the last flush began, in the order
    /// they came; call once that flush's records were drained. Those about
    /// a process whose fork is held too stay: applying that fork takes
    /// them ([`Self::take_for`]).
    pub fn take_due(&mut self) -> Vec<Record> {
        let flushes = self.flushes;
        self.take_where(|h, creating| {
            h.flush < flushes && (!creating.contains_key(&h.pid) || h.flush + PATIENCE <= flushes)
        })
    }

    /// Every record still held (the end), in the order they came, but
    /// those whose fork is held too, which that fork takes; the second
    /// call takes whatever a cycle left.
    pub fn take_all(&mut self) -> Vec<Record> {
        let first = self.take_where(|h, creating| !creating.contains_key(&h.pid));
        if !first.is_empty() {
            return first;
        }
        self.take_where(|_, _| true)
    }

    fn take_where(
        &mut self,
        take: impl Fn(&Held, &HashMap<u32, u32, foldhash::fast::RandomState>) -> bool,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(h) = self.held.pop_front() {
            if take(&h, &self.creating) {
                out.push(self.forget(h));
            } else {
                kept.push_back(h);
            }
        }
        self.held = kept;
        out
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    fn forget(&mut self, h: Held) -> Record {
        for (map, pid) in [
            (&mut self.by_pid, Some(h.pid)),
            (&mut self.creating, created(&h.record)),
        ] {
            let Some(pid) = pid else { continue };
            if let Some(n) = map.get_mut(&pid) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&pid);
                }
            }
        }
        h.record
    }
}

/// The process a fork event creates (not a thread: that is its creator's).
fn created(record: &Record) -> Option<u32> {
    match record {
        Record::Fork(f) if Kind::of(f.clone_flags) != Kind::Thread => Some(f.child_pid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures;

    fn exit(pid: u32) -> Record {
        Record::Exit(tracer_common::ExitRecord {
            pid,
            ..fixtures::exit_bare()
        })
    }

    fn fork(parent: u32, child: u32) -> Record {
        Record::Fork(fixtures::fork(parent, child, 0, b"sh"))
    }

    fn pids(records: &[Record]) -> Vec<(u32, &'static str)> {
        records
            .iter()
            .map(|r| match r {
                Record::Exit(e) => (e.pid, "exit"),
                Record::Fork(f) => (f.child_pid, "fork"),
                _ => (0, "other"),
            })
            .collect()
    }

    #[test]
    fn the_subject_is_the_process_that_must_be_known() {
        assert_eq!(Waiting::subject(&exit(7)), Some(7));
        assert_eq!(Waiting::subject(&fork(7, 8)), Some(7));
        let thread = Record::Fork(fixtures::fork(7, 7, crate::lineage::CLONE_THREAD, b"sh"));
        assert_eq!(Waiting::subject(&thread), None);
    }

    #[test]
    fn a_fork_releases_what_its_child_did_in_order() {
        let mut w = Waiting::default();
        w.hold(8, fork(8, 9));
        w.hold(5, exit(5));
        w.hold(8, exit(8));
        assert!(w.waits_for(8));
        assert_eq!(pids(&w.take_for(8)), [(9, "fork"), (8, "exit")]);
        assert!(!w.waits_for(8));
        assert!(w.waits_for(5));
        assert_eq!(w.len(), 1);
        assert!(w.take_for(8).is_empty());
    }

    #[test]
    fn records_are_due_once_a_flush_begun_after_them_was_drained() {
        let mut w = Waiting::default();
        w.hold(5, exit(5));
        assert!(w.take_due().is_empty(), "no flush began since it came");
        w.flush_begun();
        w.hold(6, exit(6));
        assert_eq!(pids(&w.take_due()), [(5, "exit")]);
        assert!(!w.waits_for(5));
        assert!(w.waits_for(6));
        w.flush_begun();
        assert_eq!(pids(&w.take_due()), [(6, "exit")]);
        assert!(w.is_empty());
        assert_eq!(w.peak(), 2);
    }

    #[test]
    fn a_due_record_waits_for_a_fork_of_its_process_that_is_held_too() {
        let mut w = Waiting::default();
        // The exec came first; the fork that made 8 came next, held for
        // its own creator (say, the tracer itself, which the table lacks).
        w.hold(8, exit(8));
        w.hold(1, fork(1, 8));
        w.flush_begun();
        assert_eq!(pids(&w.take_due()), [(8, "fork")]);
        // Applying that fork takes the rest.
        assert_eq!(pids(&w.take_for(8)), [(8, "exit")]);
        assert!(w.is_empty());
        // A cycle (pid reuse) does not hold forever.
        w.hold(8, fork(8, 9));
        w.hold(9, fork(9, 8));
        assert!(w.take_due().is_empty());
        for _ in 0..PATIENCE {
            w.flush_begun();
        }
        assert_eq!(w.take_due().len(), 2);
        // At the end too: what a cycle holds goes in one call.
        w.hold(8, fork(8, 9));
        w.hold(9, fork(9, 8));
        assert_eq!(w.take_all().len(), 2);
        assert!(w.is_empty());
    }

    #[test]
    fn the_end_takes_everything_in_order() {
        let mut w = Waiting::default();
        w.hold(5, exit(5));
        w.hold(6, exit(6));
        w.hold(5, fork(5, 7));
        assert_eq!(pids(&w.take_all()), [(5, "exit"), (6, "exit"), (7, "fork")]);
        assert!(!w.waits_for(5));
        assert!(w.is_empty());
    }
}
