//! Exit records awaiting their `exit_mmap` stamp.
//!
//! On kernels whose `sched_process_exit` fires before `exit_mm()` (6.16+),
//! a group that frees its own address space is recorded there but timed
//! by the `MmapStamp` its dying task sends at the end of `exit_mmap()`,
//! where the kernel's accounting reads the clock. The two meet here in
//! either order: the stamp goes into the ring at once, while the record
//! may wait in its CPU's stage for the loader's next flush.

use std::collections::HashMap;

use tracer_common::{flags, ExitRecord, MmapStamp};

#[derive(Debug, Default)]
pub struct AwaitingStamps {
    /// By tid: the dying task sends the stamp. foldhash, as in the
    /// lineage table: SipHash was a tenth of the loader's time here.
    held: HashMap<u32, ExitRecord, foldhash::fast::RandomState>,
    /// Stamps that came before their record, by tid: their time.
    early: HashMap<u32, u64, foldhash::fast::RandomState>,
}

/// A record that goes out now.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// With the time of its stamp, which came first.
    Stamped(ExitRecord),
    /// Still waiting when another group's record took its tid: its stamp
    /// is lost, so it goes out with the time from before `exit_mm()`.
    Unstamped(ExitRecord),
}

impl AwaitingStamps {
    /// Whether `rec` waits for a stamp rather than going out now.
    pub fn awaits(rec: &ExitRecord) -> bool {
        rec.flags & flags::AWAITS_MMAP_STAMP != 0
    }

    /// Completes `rec` with its stamp if that came first, else holds it
    /// until the stamp comes.
    pub fn hold(&mut self, mut rec: ExitRecord) -> Option<Ready> {
        if let Some(time_ns) = self.early.remove(&rec.tid) {
            // A stamp older than the record is an earlier group's.
            if time_ns >= rec.exit_ns {
                rec.exit_ns = time_ns;
                return Some(Ready::Stamped(rec));
            }
        }
        self.held.insert(rec.tid, rec).map(Ready::Unstamped)
    }

    /// The record `stamp` completes, with its exit time; `None` when none
    /// awaits it yet (it is kept for the record to come, or for nobody: the
    /// record was lost to a full ring, or its group did not look like
    /// freeing its own address space when it was recorded).
    pub fn stamp(&mut self, stamp: &MmapStamp) -> Option<ExitRecord> {
        match self.held.get(&stamp.tid) {
            Some(rec) if rec.exit_ns <= stamp.time_ns => {
                let mut rec = self.held.remove(&stamp.tid)?;
                rec.exit_ns = stamp.time_ns;
                Some(rec)
            }
            _ => {
                self.early.insert(stamp.tid, stamp.time_ns);
                None
            }
        }
    }

    /// Takes the records that have waited `timeout_ns` or more by `now_ns`
    /// (`timeout_ns` 0: all of them), oldest first, keeping the time from
    /// before `exit_mm()`: another task freed their address space, or
    /// their stamp was lost. Stamps that waited as long for a record are
    /// dropped.
    pub fn expire(&mut self, now_ns: u64, timeout_ns: u64) -> Vec<ExitRecord> {
        let waited = |t: u64| now_ns.saturating_sub(t) >= timeout_ns;
        self.early.retain(|_, t| !waited(*t));
        let mut out = Vec::new();
        self.held.retain(|_, rec| {
            let expired = waited(rec.exit_ns);
            if expired {
                out.push(*rec);
            }
            !expired
        });
        out.sort_by_key(|rec| rec.exit_ns);
        out
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.early.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{RECORD_EXIT, RECORD_MMAP_STAMP};

    fn exit(tid: u32, exit_ns: u64) -> ExitRecord {
        // SAFETY: plain old data; all zeroes is a valid record.
        let mut rec: ExitRecord = unsafe { std::mem::zeroed() };
        rec.kind = RECORD_EXIT;
        rec.pid = tid;
        rec.tid = tid;
        rec.exit_ns = exit_ns;
        rec.flags = flags::AWAITS_MMAP_STAMP;
        rec
    }

    fn stamp(tid: u32, time_ns: u64) -> MmapStamp {
        MmapStamp {
            kind: RECORD_MMAP_STAMP,
            tid,
            time_ns,
        }
    }

    #[test]
    fn a_stamp_gives_its_record_the_exit_time() {
        let mut a = AwaitingStamps::default();
        assert!(AwaitingStamps::awaits(&exit(7, 100)));
        assert_eq!(a.hold(exit(7, 100)), None);
        assert_eq!(a.hold(exit(8, 110)), None);
        assert_eq!(a.stamp(&stamp(9, 130)), None, "nobody awaits tid 9");
        let rec = a.stamp(&stamp(7, 150)).expect("tid 7 awaits");
        assert_eq!((rec.tid, rec.exit_ns), (7, 150));
        assert_eq!(a.stamp(&stamp(7, 160)), None, "taken once");
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn a_reused_tid_passes_the_old_record_on() {
        let mut a = AwaitingStamps::default();
        a.hold(exit(7, 100));
        let Some(Ready::Unstamped(old)) = a.hold(exit(7, 200)) else {
            panic!("the first record comes back");
        };
        assert_eq!(old.exit_ns, 100);
        assert_eq!(a.stamp(&stamp(7, 250)).map(|r| r.exit_ns), Some(250));
    }

    #[test]
    fn records_that_waited_too_long_go_out_oldest_first() {
        let mut a = AwaitingStamps::default();
        for (tid, t) in [(1, 300), (2, 100), (3, 900), (4, 200)] {
            a.hold(exit(tid, t));
        }
        let out = a.expire(1000, 700);
        assert_eq!(out.iter().map(|r| r.tid).collect::<Vec<_>>(), [2, 4, 1]);
        assert_eq!(out[0].exit_ns, 100, "the time from before exit_mm");
        let out = a.expire(1000, 0);
        assert_eq!(out.iter().map(|r| r.tid).collect::<Vec<_>>(), [3]);
        assert!(a.is_empty());
    }

    /// A record staged on its CPU reaches the loader after its stamp.
    #[test]
    fn a_stamp_that_came_first_waits_for_its_record() {
        let mut a = AwaitingStamps::default();
        assert_eq!(a.stamp(&stamp(7, 150)), None);
        assert!(!a.is_empty());
        let Some(Ready::Stamped(rec)) = a.hold(exit(7, 100)) else {
            panic!("the stamp that came first completes it");
        };
        assert_eq!((rec.tid, rec.exit_ns), (7, 150));
        assert!(a.is_empty(), "the stamp is used once");
        // An earlier group's stamp is not this record's time.
        assert_eq!(a.stamp(&stamp(8, 90)), None);
        assert_eq!(a.hold(exit(8, 100)), None, "held for its own stamp");
        assert_eq!(a.stamp(&stamp(8, 120)).map(|r| r.exit_ns), Some(120));
        // A stamp no record comes for is dropped with the records.
        a.stamp(&stamp(9, 100));
        assert!(a.expire(1000, 700).is_empty());
        assert!(a.is_empty(), "expired");
    }
}
