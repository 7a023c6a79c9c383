//! Decode: ring-buffer bytes into records, and the clock that dates them.
//! An exit record becomes the model's [`crate::model::Exit`].

use tracer_common::{
    ExecRecord, ExitRecord, ForkRecord, KillRecord, MmapStamp, OomRecord, ThreadExitRecord,
    RECORD_EXEC, RECORD_EXIT, RECORD_FORK, RECORD_KILL, RECORD_MMAP_STAMP, RECORD_OOM,
    RECORD_THREAD_EXIT,
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
    /// A signal that can kill was sent.
    Kill(KillRecord),
    /// The OOM killer chose a victim.
    Oom(OomRecord),
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
        RECORD_KILL => read::<KillRecord>(bytes).map(Record::Kill),
        RECORD_OOM => read::<OomRecord>(bytes).map(Record::Oom),
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
