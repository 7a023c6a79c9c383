//! Decode: ring-buffer bytes into records, and the clock that dates them.
//! An exit record becomes the model's [`crate::model::Exit`].

use tracer_common::{
    CgroupRecord, ExecRecord, ExitRecord, ForkRecord, KillRecord, MmapStamp, OomRecord,
    ThreadExitRecord, CGROUP_HEADER_LEN, EXEC_HEADER_LEN, FILENAME_LEN, RECORD_CGROUP, RECORD_EXEC,
    RECORD_EXIT, RECORD_FORK, RECORD_KILL, RECORD_MMAP_STAMP, RECORD_OOM, RECORD_THREAD_EXIT,
};

use crate::cgroups::CgroupEvent;

/// One ring record, by kind.
#[derive(Clone, Debug)]
pub enum Record {
    Exit(ExitRecord),
    Fork(ForkRecord),
    Exec(Exec),
    ThreadExit(ThreadExitRecord),
    /// The exit time for an `Exit` flagged to await it.
    MmapStamp(MmapStamp),
    /// A signal that can kill was sent.
    Kill(KillRecord),
    /// The OOM killer chose a victim (rare, and the biggest record: boxed,
    /// so that every other record moves and waits in half the bytes).
    Oom(Box<OomRecord>),
    /// A v2 cgroup made or removed.
    Cgroup(CgroupEvent),
}

/// The records of one ring item: exit records and fork events staged on
/// a CPU come [`tracer_common::STAGE_LEN`] to an item, each in
/// a slot the size of an exit record; every other kind comes one to an
/// item.
pub fn records(item: &[u8]) -> impl Iterator<Item = &[u8]> {
    let size = size_of::<ExitRecord>();
    let staged = item.len() > size
        && item.len().is_multiple_of(size)
        && matches!(
            item.get(..4)
                .map(|k| u32::from_ne_bytes([k[0], k[1], k[2], k[3]])),
            Some(RECORD_EXIT | RECORD_FORK)
        );
    item.chunks(if staged { size } else { item.len().max(1) })
}

/// Reads one record out of a ring item without allocating; `None` for an
/// item of an unknown kind or size (a newer object than this loader).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    // An exec event is variable length: the only kind not read whole.
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match kind {
        RECORD_EXIT => read::<ExitRecord>(bytes).map(Record::Exit),
        RECORD_FORK => read::<ForkRecord>(bytes).map(Record::Fork),
        RECORD_EXEC => Exec::decode(bytes).map(Record::Exec),
        RECORD_THREAD_EXIT => read::<ThreadExitRecord>(bytes).map(Record::ThreadExit),
        RECORD_MMAP_STAMP => read::<MmapStamp>(bytes).map(Record::MmapStamp),
        RECORD_KILL => read::<KillRecord>(bytes).map(Record::Kill),
        RECORD_OOM => read::<OomRecord>(bytes).map(|o| Record::Oom(Box::new(o))),
        RECORD_CGROUP => cgroup_event(bytes).map(Record::Cgroup),
        _ => None,
    }
}

/// An exec event: the header of its [`ExecRecord`] and the argument bytes
/// it carried (as many as the process had, up to `--argv-bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub pid: u32,
    pub tid: u32,
    /// The whole argv's length in the process.
    pub args_total: u32,
    /// CLOCK_MONOTONIC ns.
    pub time_ns: u64,
    /// NUL padded.
    pub filename: [u8; FILENAME_LEN],
    pub comm: [u8; 16],
    /// NUL separated, as in the process.
    pub args: Vec<u8>,
}

impl Exec {
    fn decode(bytes: &[u8]) -> Option<Self> {
        use core::mem::offset_of;
        let header = bytes.get(..EXEC_HEADER_LEN)?;
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(header.get(at..at + 4)?.try_into().ok()?))
        };
        let array = |at: usize, len: usize| header.get(at..at + len);
        let args_len = u32_at(offset_of!(ExecRecord, args_len))? as usize;
        Some(Self {
            pid: u32_at(offset_of!(ExecRecord, pid))?,
            tid: u32_at(offset_of!(ExecRecord, tid))?,
            args_total: u32_at(offset_of!(ExecRecord, args_total))?,
            time_ns: u64::from_ne_bytes(
                array(offset_of!(ExecRecord, time_ns), 8)?.try_into().ok()?,
            ),
            filename: array(offset_of!(ExecRecord, filename), FILENAME_LEN)?
                .try_into()
                .ok()?,
            comm: array(offset_of!(ExecRecord, comm), 16)?.try_into().ok()?,
            args: bytes
                .get(EXEC_HEADER_LEN..EXEC_HEADER_LEN.checked_add(args_len)?)?
                .to_vec(),
        })
    }

    /// The process's arguments were longer than what was kept.
    pub fn truncated(&self) -> bool {
        self.args_total as usize > self.args.len()
    }

    /// An event as the probes would send it, for tests.
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; EXEC_HEADER_LEN];
        let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        use core::mem::offset_of;
        put(&mut b, 0, &RECORD_EXEC.to_ne_bytes());
        put(&mut b, offset_of!(ExecRecord, pid), &self.pid.to_ne_bytes());
        put(&mut b, offset_of!(ExecRecord, tid), &self.tid.to_ne_bytes());
        put(
            &mut b,
            offset_of!(ExecRecord, args_len),
            &(self.args.len() as u32).to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ExecRecord, args_total),
            &self.args_total.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ExecRecord, time_ns),
            &self.time_ns.to_ne_bytes(),
        );
        put(&mut b, offset_of!(ExecRecord, filename), &self.filename);
        put(&mut b, offset_of!(ExecRecord, comm), &self.comm);
        b.extend_from_slice(&self.args);
        b
    }
}

/// A cgroup event: its header and `path_len` bytes of path.
fn cgroup_event(bytes: &[u8]) -> Option<CgroupEvent> {
    use core::mem::offset_of;
    let header = bytes.get(..CGROUP_HEADER_LEN)?;
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(header.get(at..at + 4)?.try_into().ok()?))
    };
    let len = u32_at(offset_of!(CgroupRecord, path_len))? as usize;
    let id_at = offset_of!(CgroupRecord, id);
    Some(CgroupEvent {
        event: u32_at(offset_of!(CgroupRecord, event))?,
        hierarchy: u32_at(offset_of!(CgroupRecord, hierarchy))?,
        id: u64::from_ne_bytes(header.get(id_at..id_at + 8)?.try_into().ok()?),
        path: String::from_utf8_lossy(
            bytes.get(CGROUP_HEADER_LEN..CGROUP_HEADER_LEN.checked_add(len)?)?,
        )
        .into_owned(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An exec event is its header and as many argument bytes as it says:
    /// decoded back whole, and refused when cut short.
    #[test]
    fn exec_events_have_their_length() {
        let exec = Exec {
            pid: 1,
            tid: 2,
            args_total: 9000,
            time_ns: 3,
            filename: [b'f'; FILENAME_LEN],
            comm: [b'c'; 16],
            args: b"ls\0-l\0".to_vec(),
        };
        let bytes = exec.encode();
        assert_eq!(bytes.len(), EXEC_HEADER_LEN + 6);
        let Some(Record::Exec(back)) = decode(&bytes) else {
            panic!("not decoded as an exec event");
        };
        assert_eq!(back, exec);
        assert!(back.truncated());
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&bytes[..EXEC_HEADER_LEN - 1]).is_none());
    }
}

#[cfg(test)]
mod staging_tests {
    use super::*;

    fn exit_bytes(pid: u32) -> Vec<u8> {
        // SAFETY: plain old data; all zeroes is a valid record.
        let mut rec: ExitRecord = unsafe { std::mem::zeroed() };
        rec.kind = RECORD_EXIT;
        rec.pid = pid;
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe {
            std::slice::from_raw_parts((&raw const rec).cast::<u8>(), size_of::<ExitRecord>())
        }
        .to_vec()
    }

    fn pids(item: &[u8]) -> Vec<Option<u32>> {
        records(item)
            .map(|b| match decode(b) {
                Some(Record::Exit(e)) => Some(e.pid),
                _ => None,
            })
            .collect()
    }

    /// A CPU's staged exits come as one item, every one of them read; any
    /// other item is one record, however long.
    #[test]
    fn staged_exits_are_split_and_other_items_are_not() {
        assert_eq!(pids(&exit_bytes(7)), [Some(7)]);
        let staged: Vec<u8> = (1..=tracer_common::STAGE_LEN as u32)
            .flat_map(exit_bytes)
            .collect();
        assert_eq!(
            pids(&staged),
            (1..=tracer_common::STAGE_LEN as u32)
                .map(Some)
                .collect::<Vec<_>>()
        );
        let mut long_exec = Exec {
            pid: 1,
            tid: 1,
            args_total: 0,
            time_ns: 0,
            filename: [0; FILENAME_LEN],
            comm: [0; 16],
            args: Vec::new(),
        }
        .encode();
        long_exec.resize(2 * size_of::<ExitRecord>(), b'x');
        assert_eq!(
            records(&long_exec).count(),
            1,
            "an exec event is one record"
        );
        // Not a whole number of exit records: read as one, as before.
        let cut = &staged[..staged.len() - 8];
        assert_eq!(records(cut).count(), 1);
        assert_eq!(records(&[]).count(), 0);
    }
}
