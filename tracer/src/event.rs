//! Decode: ring-buffer bytes into an exit, and the view every output renders.

use tracer_common::{
    present, ExecRecord, ExitRecord, ForkRecord, MmapStamp, ThreadExitRecord, RECORD_EXEC,
    RECORD_EXIT, RECORD_FORK, RECORD_MMAP_STAMP, RECORD_THREAD_EXIT,
};

use crate::{
    acct::{decode_comp_t, AcctV3, AHZ},
    exit_status::ExitStatus,
};

/// One ring record, by kind.
#[derive(Clone, Copy, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a record lives on the stack for one dispatch; boxing would allocate per record"
)]
pub enum Record {
    Exit(ExitRecord),
    Fork(ForkRecord),
    Exec(ExecRecord),
    ThreadExit(ThreadExitRecord),
    /// The exit time for an `Exit` flagged to await it.
    MmapStamp(MmapStamp),
}

/// Reads one record out of a ring item without allocating; `None` for an
/// item of an unknown kind or size (a newer object than this loader).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match kind {
        RECORD_EXIT => read::<ExitRecord>(bytes).map(Record::Exit),
        RECORD_FORK => read::<ForkRecord>(bytes).map(Record::Fork),
        RECORD_EXEC => read::<ExecRecord>(bytes).map(Record::Exec),
        RECORD_THREAD_EXIT => read::<ThreadExitRecord>(bytes).map(Record::ThreadExit),
        RECORD_MMAP_STAMP => read::<MmapStamp>(bytes).map(Record::MmapStamp),
        _ => None,
    }
}

/// Plain-old-data records only (all of tracer_common's).
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; the record types are plain old data valid
    // for any bytes; read_unaligned needs no alignment.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Maps the kernel's CLOCK_MONOTONIC stamps (what `ktime_get_ns()` and
/// `task->start_time` use) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let ns = |id| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid clock id and a timespec we own.
            unsafe { libc::clock_gettime(id, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        let mono = ns(libc::CLOCK_MONOTONIC);
        let real = ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    /// A clock with a fixed offset, for tests that need known times.
    #[cfg(test)]
    pub(crate) fn with_offset(realtime_minus_monotonic_ns: i128) -> Self {
        Self {
            realtime_minus_monotonic_ns,
        }
    }

    /// Wall-clock ns since the epoch for a CLOCK_MONOTONIC ns stamp.
    pub fn realtime_ns(&self, monotonic_ns: u64) -> i128 {
        i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns
    }

    /// Wall-clock seconds, as the kernel's `ktime_get_real_seconds()`.
    pub fn realtime_s(&self, monotonic_ns: u64) -> i64 {
        self.realtime_ns(monotonic_ns).div_euclid(1_000_000_000) as i64
    }
}

/// One exit as the outputs see it: the acct_v3 record (what the kernel would
/// write) and, when it came from our probes rather than a file, the raw
/// record with exact figures and the extras acct drops.
#[derive(Clone, Copy, Debug)]
pub struct ExitView<'a> {
    pub acct: AcctV3,
    pub raw: Option<&'a ExitRecord>,
    /// The process table, before this exit is applied to it, when an
    /// output asked for lineage.
    pub lineage: Option<&'a crate::lineage::ProcessTable>,
}

impl<'a> ExitView<'a> {
    pub fn from_record(raw: &'a ExitRecord, clock: &Clock) -> Self {
        Self {
            acct: AcctV3::from_exit(raw, clock.realtime_s(raw.exit_ns)),
            raw: Some(raw),
            lineage: None,
        }
    }

    pub fn from_acct(acct: AcctV3) -> Self {
        Self {
            acct,
            raw: None,
            lineage: None,
        }
    }

    pub fn status(&self) -> ExitStatus {
        ExitStatus::from_code(self.acct.ac_exitcode)
    }

    /// Exact when we have the raw record, else acct's tick resolution.
    pub fn elapsed_ns(&self) -> u64 {
        match self.raw {
            Some(r) => r.exit_ns.saturating_sub(r.start_ns),
            None => (self.acct.etime_ticks() as f64 * 1e9 / AHZ as f64) as u64,
        }
    }

    pub fn utime_ns(&self) -> u64 {
        match self.raw {
            Some(r) => r.utime_ns,
            None => ticks_to_ns(decode_comp_t(self.acct.ac_utime)),
        }
    }

    pub fn stime_ns(&self) -> u64 {
        match self.raw {
            Some(r) => r.stime_ns,
            None => ticks_to_ns(decode_comp_t(self.acct.ac_stime)),
        }
    }

    /// CPU time for people: the scheduler's exact figure when the probes
    /// had it, else acct's tick-sampled user + system time.
    pub fn cpu_ns(&self) -> u64 {
        match self.raw {
            Some(r) if r.present & present::RUNTIME != 0 => r.runtime_ns,
            _ => self.utime_ns() + self.stime_ns(),
        }
    }

    pub fn mem_kb(&self) -> u64 {
        self.raw
            .map_or_else(|| decode_comp_t(self.acct.ac_mem), |r| r.mem_kb)
    }

    pub fn minflt(&self) -> u64 {
        self.raw
            .map_or_else(|| decode_comp_t(self.acct.ac_minflt), |r| r.minflt)
    }

    pub fn majflt(&self) -> u64 {
        self.raw
            .map_or_else(|| decode_comp_t(self.acct.ac_majflt), |r| r.majflt)
    }

    /// Peak RSS in KiB, when the kernel keeps it.
    pub fn maxrss_kb(&self) -> Option<u64> {
        let r = self.raw.filter(|r| r.present & present::MAXRSS != 0)?;
        Some(r.maxrss_pages * page_kb())
    }
}

fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000 / AHZ)
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024
}
