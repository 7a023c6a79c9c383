//! BSD process accounting, version 3: the 64-byte records Linux appends to
//! the file named by `acct(2)` (`struct acct_v3` in
//! `include/uapi/linux/acct.h`, filled in by `fill_ac()` in `kernel/acct.c`).
//!
//! The tracer rebuilds these records from its own raw [`ExitRecord`]s, so
//! every lossy encoding here must match the kernel's bit for bit; otherwise
//! the records would not compare equal with what the kernel itself writes.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

#[cfg(test)]
use tracer_common::ExitRecord;

use crate::{exit_status::ExitStatus, model::Exit, output::text::escaped};

/// Accounting ticks per second: fixed by the file format, not the kernel's
/// `HZ`.
pub const AHZ: u64 = 100;
/// Size of one `struct acct_v3` on disk.
pub const RECORD_SIZE: usize = 64;
/// `ac_version` of the only format the kernel still writes.
pub const ACCT_VERSION: u8 = 3;
/// Set in `ac_version` by big-endian kernels (`ACCT_BYTEORDER`).
pub const ACCT_BYTEORDER_BIG: u8 = 0x80;

/// Forked but did not exec.
pub const AFORK: u8 = 0x01;
/// Used superuser privileges.
pub const ASU: u8 = 0x02;
/// Used compatibility mode (never set by Linux).
pub const ACOMPAT: u8 = 0x04;
/// Dumped core.
pub const ACORE: u8 = 0x08;
/// Killed by a signal.
pub const AXSIG: u8 = 0x10;

/// Length of `ac_comm`, including the terminating NUL.
pub const ACCT_COMM: usize = 16;

const MANTSIZE: u32 = 13;
const EXPSIZE: u32 = 3;
const MAXFRACT: u64 = (1 << MANTSIZE) - 1;
/// The exponent field is three bits wide.
const MAXEXP: u32 = 7;

/// A kernel `comm` (NUL padded, not always NUL terminated) as text.
pub fn comm_str(comm: &[u8]) -> String {
    let len = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// Encodes `value` as a `comp_t`: a 13-bit mantissa and a base-8 exponent
/// in the top three bits, as the kernel's `encode_comp_t()`.
///
/// The kernel shifts three bits at a time and rounds on the highest of the
/// last three bits shifted out, ignoring the lower ones (no sticky bit);
/// this computes the same thing from the bit length instead of looping.
pub fn encode_comp_t(value: u64) -> u16 {
    if value <= MAXFRACT {
        return value as u16;
    }
    let bits = u64::BITS - value.leading_zeros();
    // Smallest exponent that brings the value down to 13 bits.
    let mut exp = (bits - MANTSIZE).div_ceil(EXPSIZE);
    let shift = exp * EXPSIZE;
    let mut mant = value >> shift;
    // Bit 2 of the last group shifted out.
    if (value >> (shift - 1)) & 1 != 0 {
        mant += 1;
        if mant > MAXFRACT {
            mant >>= EXPSIZE;
            exp += 1;
        }
    }
    if exp > MAXEXP {
        return 0xffff;
    }
    ((exp << MANTSIZE) as u16) | mant as u16
}

/// The value a `comp_t` stands for: mantissa << (3 * exponent).
pub fn decode_comp_t(c: u16) -> u64 {
    let mant = u64::from(c) & MAXFRACT;
    let exp = u32::from(c) >> MANTSIZE;
    mant << (EXPSIZE * exp)
}

/// Encodes `value` as the bits of an IEEE-754 single, as the kernel's v3
/// `encode_float()`: normalise, then keep the 23 bits after the leading one,
/// truncating (never rounding) the rest.
pub fn encode_float(value: u64) -> u32 {
    if value == 0 {
        return 0;
    }
    // The kernel shifts left until bit 63 is set, decrementing a biased
    // exponent that starts at 127 + 63.
    let lz = value.leading_zeros();
    let normalised = value << lz;
    let exp = 190 - lz;
    let mant = ((normalised >> 40) as u32) & 0x7f_ffff;
    mant | (exp << 23)
}

/// Nanoseconds to whole accounting ticks, truncating like the kernel's
/// `nsec_to_AHZ()` (1e9 is a multiple of AHZ, so a plain division).
pub fn nsec_to_ahz(ns: u64) -> u64 {
    ns / (1_000_000_000 / AHZ)
}

/// A kernel `dev_t` (12-bit major above a 20-bit minor) in the 16-bit
/// `old_encode_dev()` form. The minor is not masked to 8 bits, so a minor
/// above 255 spills into the major byte, exactly as the kernel does.
pub fn old_encode_dev(dev: u32) -> u16 {
    let major = dev >> 20;
    let minor = dev & 0xf_ffff;
    ((major << 8) | minor) as u16
}

/// One `struct acct_v3` record. Multi-byte fields hold host values; the
/// on-disk form is little-endian (see [`AcctV3::to_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AcctV3 {
    pub ac_flag: u8,
    pub ac_version: u8,
    pub ac_tty: u16,
    pub ac_exitcode: u32,
    pub ac_uid: u32,
    pub ac_gid: u32,
    pub ac_pid: u32,
    pub ac_ppid: u32,
    pub ac_btime: u32,
    /// Bits of an `f32` count of ticks: the kernel has no floating point,
    /// so it builds the pattern by hand and so do we.
    pub ac_etime: u32,
    pub ac_utime: u16,
    pub ac_stime: u16,
    pub ac_mem: u16,
    pub ac_io: u16,
    pub ac_rw: u16,
    pub ac_minflt: u16,
    pub ac_majflt: u16,
    pub ac_swaps: u16,
    pub ac_comm: [u8; ACCT_COMM],
}

/// Reads `N` bytes at `at`; the callers' offsets are constants within the
/// 64-byte record, so this cannot go out of bounds.
fn array_at<const N: usize>(b: &[u8; RECORD_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl AcctV3 {
    /// The on-disk little-endian form.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0] = self.ac_flag;
        b[1] = self.ac_version;
        b[2..4].copy_from_slice(&self.ac_tty.to_le_bytes());
        let words = [
            self.ac_exitcode,
            self.ac_uid,
            self.ac_gid,
            self.ac_pid,
            self.ac_ppid,
            self.ac_btime,
            self.ac_etime,
        ];
        for (i, w) in words.iter().enumerate() {
            let at = 4 + 4 * i;
            b[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        let halves = [
            self.ac_utime,
            self.ac_stime,
            self.ac_mem,
            self.ac_io,
            self.ac_rw,
            self.ac_minflt,
            self.ac_majflt,
            self.ac_swaps,
        ];
        for (i, h) in halves.iter().enumerate() {
            let at = 32 + 2 * i;
            b[at..at + 2].copy_from_slice(&h.to_le_bytes());
        }
        b[48..64].copy_from_slice(&self.ac_comm);
        b
    }

    /// Parses the on-disk little-endian form. Any 64 bytes make a record;
    /// checking the version is up to the caller (see [`parse_records`]).
    pub fn from_bytes(b: &[u8; RECORD_SIZE]) -> Self {
        let u16_at = |at| u16::from_le_bytes(array_at(b, at));
        let u32_at = |at| u32::from_le_bytes(array_at(b, at));
        Self {
            ac_flag: b[0],
            ac_version: b[1],
            ac_tty: u16_at(2),
            ac_exitcode: u32_at(4),
            ac_uid: u32_at(8),
            ac_gid: u32_at(12),
            ac_pid: u32_at(16),
            ac_ppid: u32_at(20),
            ac_btime: u32_at(24),
            ac_etime: u32_at(28),
            ac_utime: u16_at(32),
            ac_stime: u16_at(34),
            ac_mem: u16_at(36),
            ac_io: u16_at(38),
            ac_rw: u16_at(40),
            ac_minflt: u16_at(42),
            ac_majflt: u16_at(44),
            ac_swaps: u16_at(46),
            ac_comm: array_at(b, 48),
        }
    }

    /// Elapsed time in ticks ([`AHZ`] per second).
    pub fn etime_ticks(&self) -> f32 {
        f32::from_bits(self.ac_etime)
    }

    /// The command name up to the first NUL, invalid UTF-8 replaced.
    pub fn comm(&self) -> String {
        comm_str(&self.ac_comm)
    }

    /// User CPU time in ticks, as far as `comp_t` kept it.
    pub fn utime_ticks(&self) -> u64 {
        decode_comp_t(self.ac_utime)
    }

    /// System CPU time in ticks, as far as `comp_t` kept it.
    pub fn stime_ticks(&self) -> u64 {
        decode_comp_t(self.ac_stime)
    }

    /// Virtual memory size in KiB, as far as `comp_t` kept it.
    pub fn mem_kb(&self) -> u64 {
        decode_comp_t(self.ac_mem)
    }

    pub fn minflt(&self) -> u64 {
        decode_comp_t(self.ac_minflt)
    }

    pub fn majflt(&self) -> u64 {
        decode_comp_t(self.ac_majflt)
    }

    /// How the process ended, from `ac_exitcode`.
    pub fn exit_status(&self) -> ExitStatus {
        ExitStatus::from_code(self.ac_exitcode)
    }

    /// The record the kernel's `fill_ac()` writes for this exit: the
    /// acct-file writer's encoding (ticks, comp_t, the v3 layout). Written
    /// by a little-endian kernel, so `ac_version` is plain 3.
    pub fn from_model(e: &Exit<'_>) -> Self {
        Self {
            ac_flag: e.flags,
            ac_version: ACCT_VERSION,
            ac_tty: e.tty,
            ac_exitcode: e.exit_code,
            ac_uid: e.uid,
            ac_gid: e.gid,
            ac_pid: e.pid,
            ac_ppid: e.ppid,
            ac_btime: e.btime,
            ac_etime: encode_float(nsec_to_ahz(e.elapsed_ns)),
            ac_utime: encode_comp_t(nsec_to_ahz(e.utime_ns)),
            ac_stime: encode_comp_t(nsec_to_ahz(e.stime_ns)),
            ac_mem: encode_comp_t(e.mem_kb),
            // fill_ac() leaves these as zeroed by its memset: Linux does not count them.
            ac_io: 0,
            ac_rw: 0,
            ac_minflt: encode_comp_t(e.minflt),
            ac_majflt: encode_comp_t(e.majflt),
            ac_swaps: 0,
            ac_comm: e.comm,
        }
    }

    /// The exit this record tells of, at acct's resolution (ticks, comp_t),
    /// with nothing that only the probes know.
    pub fn to_exit(&self) -> Exit<'static> {
        let ticks_to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / AHZ);
        let elapsed_ns = (f64::from(self.etime_ticks()) * 1e9 / AHZ as f64) as u64;
        Exit {
            pid: self.ac_pid,
            ppid: self.ac_ppid,
            tid: None,
            comm: self.ac_comm,
            uid: self.ac_uid,
            gid: self.ac_gid,
            tty: self.ac_tty,
            exit_code: self.ac_exitcode,
            flags: self.ac_flag,
            btime: self.ac_btime,
            exit_time_ns: (u64::from(self.ac_btime) * 1_000_000_000).saturating_add(elapsed_ns),
            elapsed_ns,
            utime_ns: ticks_to_ns(self.utime_ticks()),
            stime_ns: ticks_to_ns(self.stime_ticks()),
            mem_kb: self.mem_kb(),
            minflt: self.minflt(),
            majflt: self.majflt(),
            probed: None,
            lineage: None,
            killed_by: None,
            oom_kill: None,
            cgroup: None,
            cgroup_v1: None,
        }
    }

    /// `from_model` of a probe record, given the wall-clock second at its
    /// exit: what the tests compare with `fill_ac()`.
    #[cfg(test)]
    pub fn from_exit(rec: &ExitRecord, realtime_at_exit_s: i64) -> Self {
        let offset = i128::from(realtime_at_exit_s) * 1_000_000_000 - i128::from(rec.exit_ns);
        let clock = crate::decode::Clock::with_offset(offset);
        Self::from_model(&Exit::from_record(rec, &clock))
    }
}

/// Why an accounting file could not be read. Every variant names the file;
/// those about a record also give its byte offset.
#[derive(Debug)]
pub enum AcctFileError {
    Open {
        path: PathBuf,
        source: io::Error,
    },
    IsDirectory {
        path: PathBuf,
    },
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    /// The file ends `got` bytes into the record at `offset`.
    Truncated {
        path: PathBuf,
        offset: u64,
        got: usize,
    },
    /// `ac_version & 0x7f` is not 3.
    BadVersion {
        path: PathBuf,
        offset: u64,
        version: u8,
    },
    /// The version byte carries `ACCT_BYTEORDER`: written by a big-endian
    /// kernel.
    BigEndian {
        path: PathBuf,
        offset: u64,
        version: u8,
    },
}

impl AcctFileError {
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::IsDirectory { path }
            | Self::Read { path, .. }
            | Self::Truncated { path, .. }
            | Self::BadVersion { path, .. }
            | Self::BigEndian { path, .. } => path,
        }
    }

    /// Byte offset of the offending record, for errors about one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Read { offset, .. }
            | Self::Truncated { offset, .. }
            | Self::BadVersion { offset, .. }
            | Self::BigEndian { offset, .. } => Some(*offset),
            Self::Open { .. } | Self::IsDirectory { .. } => None,
        }
    }
}

impl fmt::Display for AcctFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A file name is anyone's text: escaped, it cannot drive the terminal.
        let path = escaped(self.path().as_os_str().as_bytes());
        match self {
            Self::Open { source, .. } => write!(f, "{path}: cannot open: {source}"),
            Self::IsDirectory { .. } => write!(f, "{path}: is a directory"),
            Self::Read { offset, source, .. } => {
                write!(f, "{path}: cannot read at offset {offset}: {source}")
            }
            Self::Truncated { offset, got, .. } => write!(
                f,
                "{path}: truncated record at offset {offset} ({got} of {RECORD_SIZE} bytes); \
                 the file is cut short or not an acct file"
            ),
            Self::BadVersion {
                offset, version, ..
            } => write!(
                f,
                "{path}: record at offset {offset} has version {version}, not {ACCT_VERSION} \
                 (not an acct v{ACCT_VERSION} file; only v{ACCT_VERSION} is supported)"
            ),
            Self::BigEndian {
                offset, version, ..
            } => write!(
                f,
                "{path}: record at offset {offset} has version byte {version:#04x}: \
                 a big-endian acct v{} file, written by a big-endian kernel \
                 (only little-endian acct v{ACCT_VERSION} files are supported)",
                version & !ACCT_BYTEORDER_BIG
            ),
        }
    }
}

// The io::Error text is already part of the message (the brief asks for it),
// so it is not also exposed as `source()`: error reporters that walk the
// chain would print it twice.
impl std::error::Error for AcctFileError {}

/// Checks that a record is one this module can interpret.
fn check_record(rec: &AcctV3, path: &Path, offset: u64) -> Result<(), AcctFileError> {
    if rec.ac_version & ACCT_BYTEORDER_BIG != 0 {
        return Err(AcctFileError::BigEndian {
            path: path.to_owned(),
            offset,
            version: rec.ac_version,
        });
    }
    if rec.ac_version != ACCT_VERSION {
        return Err(AcctFileError::BadVersion {
            path: path.to_owned(),
            offset,
            version: rec.ac_version,
        });
    }
    Ok(())
}

/// Parses a whole accounting file already in memory. `path` is only used
/// in error messages.
pub fn parse_records(bytes: &[u8], path: &Path) -> Result<Vec<AcctV3>, AcctFileError> {
    let mut chunks = bytes.chunks_exact(RECORD_SIZE);
    let mut out = Vec::with_capacity(bytes.len() / RECORD_SIZE);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let offset = (i * RECORD_SIZE) as u64;
        let mut raw = [0u8; RECORD_SIZE];
        raw.copy_from_slice(chunk);
        let rec = AcctV3::from_bytes(&raw);
        check_record(&rec, path, offset)?;
        out.push(rec);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        return Err(AcctFileError::Truncated {
            path: path.to_owned(),
            offset: (bytes.len() - rest.len()) as u64,
            got: rest.len(),
        });
    }
    Ok(out)
}

/// Iterates over the records of an accounting stream without holding it in
/// memory (accounting files grow for as long as accounting is on). Stops
/// after the first error.
pub struct RecordReader<R> {
    inner: R,
    path: PathBuf,
    offset: u64,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// `path` is only used in error messages.
    pub fn new(inner: R, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_owned(),
            offset: 0,
            done: false,
        }
    }

    /// Fills `buf` as far as the stream allows; returns how much it got.
    fn fill(&mut self, buf: &mut [u8; RECORD_SIZE]) -> io::Result<usize> {
        let mut got = 0;
        while got < RECORD_SIZE {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn next_record(&mut self) -> Option<Result<AcctV3, AcctFileError>> {
        let mut buf = [0u8; RECORD_SIZE];
        let offset = self.offset;
        let got = match self.fill(&mut buf) {
            Ok(got) => got,
            Err(source) => {
                return Some(Err(AcctFileError::Read {
                    path: self.path.clone(),
                    offset,
                    source,
                }))
            }
        };
        if got == 0 {
            return None;
        }
        if got < RECORD_SIZE {
            return Some(Err(AcctFileError::Truncated {
                path: self.path.clone(),
                offset,
                got,
            }));
        }
        self.offset += RECORD_SIZE as u64;
        let rec = AcctV3::from_bytes(&buf);
        Some(check_record(&rec, &self.path, offset).map(|()| rec))
    }
}

impl<R: Read> Iterator for RecordReader<R> {
    type Item = Result<AcctV3, AcctFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Opens an accounting file for [`RecordReader`]. Directories are refused
/// up front: on Linux they open fine and only fail at the first read, with
/// a less helpful message.
pub fn open_records(path: &Path) -> Result<RecordReader<io::BufReader<File>>, AcctFileError> {
    let file = File::open(path).map_err(|source| AcctFileError::Open {
        path: path.to_owned(),
        source,
    })?;
    let is_dir = file
        .metadata()
        .map_err(|source| AcctFileError::Open {
            path: path.to_owned(),
            source,
        })?
        .is_dir();
    if is_dir {
        return Err(AcctFileError::IsDirectory {
            path: path.to_owned(),
        });
    }
    Ok(RecordReader::new(io::BufReader::new(file), path))
}

/// Reads every record of an accounting file.
pub fn read_records(path: &Path) -> Result<Vec<AcctV3>, AcctFileError> {
    open_records(path)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Spread over all magnitudes, not just huge values: pick a random
        /// bit length first.
        fn wide(&mut self) -> u64 {
            let bits = self.next() % 65;
            if bits == 0 {
                0
            } else {
                self.next() >> (64 - bits)
            }
        }

        fn u16(&mut self) -> u16 {
            self.next() as u16
        }

        fn u32(&mut self) -> u32 {
            self.next() as u32
        }
    }

    /// The kernel's encode_comp_t() as written in C, kept deliberately
    /// literal (loop and all) so it checks the closed form above.
    fn reference_comp_t(mut value: u64) -> u16 {
        const MANTSIZE: u32 = 13;
        const EXPSIZE: u32 = 3;
        const MAXFRACT: u64 = (1 << MANTSIZE) - 1;
        let mut exp: i32 = 0;
        let mut rnd: u64 = 0;
        while value > MAXFRACT {
            rnd = value & (1 << (EXPSIZE - 1));
            value >>= EXPSIZE;
            exp += 1;
        }
        if rnd != 0 {
            value += 1;
            if value > MAXFRACT {
                value >>= EXPSIZE;
                exp += 1;
            }
        }
        if exp > 7 {
            return 0xffff;
        }
        let mut e = exp << MANTSIZE;
        e += value as i32;
        e as u16
    }

    fn comp(exp: u16, mant: u16) -> u16 {
        (exp << 13) | mant
    }

    #[test]
    fn comp_t_vectors() {
        let cases: &[(u64, u16)] = &[
            (0, 0),
            (1, 1),
            (8191, 8191),
            // 8192 >> 3 = 1024, bit 2 of 8192 is clear.
            (8192, comp(1, 1024)),
            (8195, comp(1, 1024)),
            // Bit 2 set: rounds up.
            (8196, comp(1, 1025)),
            (8199, comp(1, 1025)),
            (8200, comp(1, 1025)),
            // 65535 >> 3 = 8191, rounding carries out: 1024 at exp 2.
            (65535, comp(2, 1024)),
            (65528, comp(1, 8191)),
            // 65527 >> 3 = 8190, low bits 0b111: rounds to 8191.
            (65527, comp(1, 8191)),
            (65523, comp(1, 8190)),
            (65536, comp(2, 1024)),
            (65537, comp(2, 1024)),
            // 1 << 20 >> 9 = 2048; bit 8 decides the rounding.
            (1 << 20, comp(3, 2048)),
            ((1 << 20) + (1 << 8), comp(3, 2049)),
            ((1 << 20) + (1 << 8) - 1, comp(3, 2048)),
            // Largest exponent, largest mantissa.
            (8191 << 21, comp(7, 8191)),
            // Rounding carries into exponent 8: saturate.
            ((8191 << 21) + (1 << 20), 0xffff),
            ((8191 << 21) + (1 << 20) - 1, comp(7, 8191)),
            (1 << 34, 0xffff),
            ((1 << 34) - 1, 0xffff),
            (1 << 37, 0xffff),
            ((1 << 37) + 12345, 0xffff),
            (u64::MAX, 0xffff),
        ];
        for &(v, want) in cases {
            assert_eq!(encode_comp_t(v), want, "encode_comp_t({v})");
            assert_eq!(reference_comp_t(v), want, "reference_comp_t({v})");
        }
    }

    #[test]
    fn comp_t_decode_vectors() {
        assert_eq!(decode_comp_t(0), 0);
        assert_eq!(decode_comp_t(8191), 8191);
        assert_eq!(decode_comp_t(comp(1, 1025)), 8200);
        assert_eq!(decode_comp_t(comp(2, 1024)), 65536);
        assert_eq!(decode_comp_t(0xffff), 8191 << 21);
    }

    #[test]
    fn comp_t_exhaustive_small_and_boundaries() {
        // Every value up to 2^20 covers exponents 0..=3 completely.
        for v in 0..(1u64 << 20) {
            assert_eq!(encode_comp_t(v), reference_comp_t(v), "{v}");
        }
        // Around every power of two and every exponent step.
        for shift in 0..64 {
            let p = 1u64 << shift;
            for d in 0..=16u64 {
                for v in [p.wrapping_sub(d), p.wrapping_add(d)] {
                    assert_eq!(encode_comp_t(v), reference_comp_t(v), "{v}");
                }
            }
        }
        for exp in 0..=9u32 {
            let base = MAXFRACT << (3 * exp);
            for d in 0..=64u64 {
                for v in [base.wrapping_sub(d), base.wrapping_add(d)] {
                    assert_eq!(encode_comp_t(v), reference_comp_t(v), "{v}");
                }
            }
        }
    }

    #[test]
    fn comp_t_random_against_reference_with_bounded_error() {
        let saturation = (MAXFRACT << 21) + (1 << 20);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut values = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            let v = rng.wide();
            values.push(v);
            let c = encode_comp_t(v);
            assert_eq!(c, reference_comp_t(v), "encode_comp_t({v})");
            if v >= saturation {
                assert_eq!(c, 0xffff, "{v} should saturate");
                continue;
            }
            let d = decode_comp_t(c);
            // Rounding on one bit gives at most half a unit in the last
            // place; the mantissa is >= 1024 once the exponent is nonzero,
            // so the relative error stays within 2^-11. (2^-12 is not
            // achievable: 8195 decodes to 8192.)
            let exp = u32::from(c >> 13);
            let half_ulp = if exp == 0 { 0 } else { 1u64 << (3 * exp - 1) };
            assert!(d.abs_diff(v) <= half_ulp, "{v} -> {d}");
            assert!(
                (d.abs_diff(v) as f64) / (v.max(1) as f64) <= 1.0 / 2048.0,
                "{v} -> {d}"
            );
        }
        values.sort_unstable();
        for w in values.windows(2) {
            let (a, b) = (encode_comp_t(w[0]), encode_comp_t(w[1]));
            assert!(
                a <= b,
                "not monotonic: {} -> {a:#x}, {} -> {b:#x}",
                w[0],
                w[1]
            );
            assert!(decode_comp_t(a) <= decode_comp_t(b));
        }
    }

    #[test]
    fn encode_float_vectors() {
        assert_eq!(encode_float(0), 0);
        assert_eq!(encode_float(1), 1.0f32.to_bits());
        assert_eq!(encode_float(2), 2.0f32.to_bits());
        assert_eq!(encode_float(100), 100.0f32.to_bits());
        assert_eq!(encode_float(12345), 12345.0f32.to_bits());
        assert_eq!(encode_float((1 << 24) - 1), 16_777_215.0f32.to_bits());
        // Truncated where an IEEE conversion would round.
        assert_eq!(encode_float((1 << 24) + 1), 16_777_216.0f32.to_bits());
        assert_eq!(encode_float((1 << 25) - 1), 33_554_430.0f32.to_bits());
        assert_eq!(encode_float(1 << 53), 9_007_199_254_740_992.0f32.to_bits());
        // Bit 29 is below the 24 kept bits of a 2^53 value: dropped.
        assert_eq!(encode_float((1 << 53) + (1 << 29) + 1), 0x5a00_0000);
        // Bit 30 is the last kept bit.
        assert_eq!(encode_float((1 << 53) + (1 << 30)), 0x5a00_0001);
        assert_eq!(encode_float((1 << 53) + (3 << 29)), 0x5a00_0001);
        assert_eq!(
            encode_float(u64::MAX),
            f32::from_bits(0x5f7f_ffff).to_bits()
        );
        assert_eq!(encode_float(1 << 63), 0x5f00_0000);
    }

    #[test]
    fn encode_float_random() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for _ in 0..200_000 {
            let v = rng.wide();
            let bits = encode_float(v);
            let f = f32::from_bits(bits);
            if v < 1 << 24 {
                assert_eq!(bits, (v as f32).to_bits(), "{v}");
            } else {
                // Exact truncation: the next representable float is above v.
                let got = f64::from(f);
                assert!(got <= v as f64 && (got as u64) <= v, "{v} -> {f}");
                let next = f64::from(f32::from_bits(bits + 1));
                assert!((next as u128) > u128::from(v), "{v} -> {f}, next {next}");
            }
        }
    }

    #[test]
    fn nsec_to_ahz_truncates() {
        assert_eq!(nsec_to_ahz(0), 0);
        assert_eq!(nsec_to_ahz(9_999_999), 0);
        assert_eq!(nsec_to_ahz(10_000_000), 1);
        assert_eq!(nsec_to_ahz(1_999_999_999), 199);
        assert_eq!(nsec_to_ahz(u64::MAX), u64::MAX / 10_000_000);
    }

    #[test]
    fn old_encode_dev_vectors() {
        assert_eq!(old_encode_dev((136 << 20) | 3), 0x8803);
        assert_eq!(old_encode_dev((4 << 20) | 1), 0x0401);
        assert_eq!(old_encode_dev(0), 0);
        // Minor above 255 spills into the major byte, like the C.
        assert_eq!(old_encode_dev((136 << 20) | 0x1ff), 0x89ff);
        // Major above 255 is cut off by the u16.
        assert_eq!(old_encode_dev((0x1ab << 20) | 7), 0xab07);
    }

    fn random_record(rng: &mut Rng) -> AcctV3 {
        let mut ac_comm = [0u8; ACCT_COMM];
        for c in &mut ac_comm {
            *c = rng.next() as u8;
        }
        AcctV3 {
            ac_flag: rng.next() as u8,
            ac_version: rng.next() as u8,
            ac_tty: rng.u16(),
            ac_exitcode: rng.u32(),
            ac_uid: rng.u32(),
            ac_gid: rng.u32(),
            ac_pid: rng.u32(),
            ac_ppid: rng.u32(),
            ac_btime: rng.u32(),
            ac_etime: rng.u32(),
            ac_utime: rng.u16(),
            ac_stime: rng.u16(),
            ac_mem: rng.u16(),
            ac_io: rng.u16(),
            ac_rw: rng.u16(),
            ac_minflt: rng.u16(),
            ac_majflt: rng.u16(),
            ac_swaps: rng.u16(),
            ac_comm,
        }
    }

    #[test]
    fn bytes_round_trip() {
        let mut rng = Rng(42);
        for _ in 0..10_000 {
            let r = random_record(&mut rng);
            let b = r.to_bytes();
            assert_eq!(AcctV3::from_bytes(&b), r);
            assert_eq!(AcctV3::from_bytes(&b).to_bytes(), b);
        }
        for _ in 0..10_000 {
            let mut b = [0u8; RECORD_SIZE];
            for x in &mut b {
                *x = rng.next() as u8;
            }
            assert_eq!(AcctV3::from_bytes(&b).to_bytes(), b);
        }
    }

    #[test]
    fn byte_layout() {
        let r = AcctV3 {
            ac_flag: 0x01,
            ac_version: 0x02,
            ac_tty: 0x0403,
            ac_exitcode: 0x0807_0605,
            ac_uid: 0x0c0b_0a09,
            ac_gid: 0x100f_0e0d,
            ac_pid: 0x1413_1211,
            ac_ppid: 0x1817_1615,
            ac_btime: 0x1c1b_1a19,
            ac_etime: 0x201f_1e1d,
            ac_utime: 0x2221,
            ac_stime: 0x2423,
            ac_mem: 0x2625,
            ac_io: 0x2827,
            ac_rw: 0x2a29,
            ac_minflt: 0x2c2b,
            ac_majflt: 0x2e2d,
            ac_swaps: 0x302f,
            ac_comm: *b"123456789abcdef\0",
        };
        let b = r.to_bytes();
        // Fields 0..48 hold the bytes 1..=48 in order: each field sits at
        // its acct.h offset, little-endian.
        for (i, &x) in b[..48].iter().enumerate() {
            assert_eq!(x as usize, i + 1, "byte {i}");
        }
        assert_eq!(&b[48..], b"123456789abcdef\0");
        let offsets: &[(usize, &[u8])] = &[
            (0, &[0x01]),
            (1, &[0x02]),
            (2, &r.ac_tty.to_le_bytes()),
            (4, &r.ac_exitcode.to_le_bytes()),
            (8, &r.ac_uid.to_le_bytes()),
            (12, &r.ac_gid.to_le_bytes()),
            (16, &r.ac_pid.to_le_bytes()),
            (20, &r.ac_ppid.to_le_bytes()),
            (24, &r.ac_btime.to_le_bytes()),
            (28, &r.ac_etime.to_le_bytes()),
            (32, &r.ac_utime.to_le_bytes()),
            (34, &r.ac_stime.to_le_bytes()),
            (36, &r.ac_mem.to_le_bytes()),
            (38, &r.ac_io.to_le_bytes()),
            (40, &r.ac_rw.to_le_bytes()),
            (42, &r.ac_minflt.to_le_bytes()),
            (44, &r.ac_majflt.to_le_bytes()),
            (46, &r.ac_swaps.to_le_bytes()),
            (48, &r.ac_comm),
        ];
        for &(at, want) in offsets {
            assert_eq!(&b[at..at + want.len()], want, "field at {at}");
        }
        assert_eq!(r.comm(), "123456789abcdef");
    }

    #[test]
    fn comm_and_etime_accessors() {
        let mut r = AcctV3 {
            ac_comm: *b"sh\0xx\0\0\0\0\0\0\0\0\0\0\0",
            ac_etime: encode_float(250),
            ..AcctV3::default()
        };
        assert_eq!(r.comm(), "sh");
        assert_eq!(r.etime_ticks(), 250.0);
        r.ac_comm = [b'a'; 16];
        assert_eq!(r.comm(), "a".repeat(16));
        r.ac_comm = *b"\xffab\0\0\0\0\0\0\0\0\0\0\0\0\0";
        assert_eq!(r.comm(), "\u{fffd}ab");
    }

    fn exit_record() -> ExitRecord {
        let mut comm = [0u8; 16];
        comm[..9].copy_from_slice(b"make-jobs");
        ExitRecord {
            kind: tracer_common::RECORD_EXIT,
            present: 0,
            pid: 4242,
            tid: 4243,
            ppid: 1000,
            uid: 1001,
            gid: 1002,
            ac_flag: u32::from(ACORE | AXSIG),
            exit_code: 0x8b,
            exit_signal: 17,
            tty_dev: (136 << 20) | 3,
            flags: 0,
            start_ns: 5_000_000_000,
            // 12.345_678_9 s later: 1234 ticks.
            exit_ns: 17_345_678_900,
            // 1.5 s, 0.25 s.
            utime_ns: 1_500_000_000,
            stime_ns: 259_999_999,
            mem_kb: 123_456,
            minflt: 8196,
            majflt: 7,
            maxrss_pages: 99,
            rchar: 1,
            wchar: 2,
            read_bytes: 3,
            write_bytes: 4,
            nvcsw: 5,
            nivcsw: 6,
            cgroup_id: 7,
            runtime_ns: 0,
            comm,
            ns_pid: 0,
            ns_ppid: 0,
            pidns: 0,
            _pad: 0,
            cgroup_v1_id: 0,
            xacct: tracer_common::Xacct::default(),
        }
    }

    #[test]
    fn from_exit_matches_fill_ac() {
        let rec = exit_record();
        let ac = AcctV3::from_exit(&rec, 1_700_000_000);
        let mut comm = [0u8; 16];
        comm[..9].copy_from_slice(b"make-jobs");
        let want = AcctV3 {
            ac_flag: ACORE | AXSIG,
            ac_version: 3,
            ac_tty: 0x8803,
            ac_exitcode: 0x8b,
            ac_uid: 1001,
            ac_gid: 1002,
            ac_pid: 4242,
            ac_ppid: 1000,
            // 1234 ticks = 12 whole seconds.
            ac_btime: 1_700_000_000 - 12,
            ac_etime: 1234.0f32.to_bits(),
            ac_utime: 150,
            ac_stime: 25,
            // 123456 >> 6 = 1929, bit 5 of 123456 (0b1_1110_0010_0100_0000)
            // is 0: no rounding.
            ac_mem: comp(2, 1929),
            ac_io: 0,
            ac_rw: 0,
            ac_minflt: comp(1, 1025),
            ac_majflt: 7,
            ac_swaps: 0,
            ac_comm: comm,
        };
        assert_eq!(ac, want);
        assert_eq!(ac.comm(), "make-jobs");
        assert_eq!(
            ac.exit_status(),
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
    }

    #[test]
    fn from_exit_edge_cases() {
        let mut rec = exit_record();
        // A full 16-byte comm with no NUL: strscpy keeps 15 and a NUL.
        rec.comm = *b"0123456789abcdef";
        rec.tty_dev = 0;
        // Clock readings out of order: no underflow, zero elapsed.
        rec.start_ns = 10;
        rec.exit_ns = 5;
        let ac = AcctV3::from_exit(&rec, 77);
        assert_eq!(&ac.ac_comm, b"0123456789abcde\0");
        assert_eq!(ac.ac_tty, 0);
        assert_eq!(ac.ac_etime, 0);
        assert_eq!(ac.ac_btime, 77);

        // btime clamps at both ends of u32.
        rec.start_ns = 0;
        rec.exit_ns = 100_000_000_000; // 100 s
        assert_eq!(AcctV3::from_exit(&rec, 50).ac_btime, 0);
        assert_eq!(AcctV3::from_exit(&rec, i64::MIN).ac_btime, 0);
        assert_eq!(AcctV3::from_exit(&rec, i64::MAX).ac_btime, u32::MAX);
        assert_eq!(
            AcctV3::from_exit(&rec, i64::from(u32::MAX) + 100).ac_btime,
            u32::MAX
        );
        assert_eq!(AcctV3::from_exit(&rec, 1000).ac_btime, 900);

        // Huge counters saturate, and only the low byte of ac_flag is kept.
        rec.utime_ns = u64::MAX;
        rec.mem_kb = u64::MAX;
        rec.ac_flag = 0x1_02;
        rec.exit_ns = u64::MAX;
        let ac = AcctV3::from_exit(&rec, 0);
        assert_eq!(ac.ac_utime, 0xffff);
        assert_eq!(ac.ac_mem, 0xffff);
        assert_eq!(ac.ac_flag, ASU);
        assert_eq!(ac.ac_etime, encode_float(u64::MAX / 10_000_000));
    }

    fn v3_bytes(n: usize) -> Vec<u8> {
        let mut rng = Rng(7);
        let mut out = Vec::new();
        for _ in 0..n {
            let mut r = random_record(&mut rng);
            r.ac_version = ACCT_VERSION;
            out.extend_from_slice(&r.to_bytes());
        }
        out
    }

    #[test]
    fn parse_empty_and_valid() {
        let p = Path::new("/x/acct");
        assert_eq!(parse_records(&[], p).unwrap(), vec![]);
        let bytes = v3_bytes(5);
        let recs = parse_records(&bytes, p).unwrap();
        assert_eq!(recs.len(), 5);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(&r.to_bytes()[..], &bytes[i * 64..(i + 1) * 64]);
        }
        let streamed: Vec<_> = RecordReader::new(&bytes[..], p)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(streamed, recs);
    }

    #[test]
    fn parse_truncated() {
        let p = Path::new("/x/acct");
        let mut bytes = v3_bytes(3);
        bytes.truncate(128 + 40);
        let e = parse_records(&bytes, p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/acct: truncated record at offset 128 (40 of 64 bytes); \
             the file is cut short or not an acct file"
        );
        assert_eq!(e.offset(), Some(128));
        let e = RecordReader::new(&bytes[..], p)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!(e.offset(), Some(128));
        assert!(matches!(e, AcctFileError::Truncated { got: 40, .. }));

        let e = parse_records(&[3u8; 1], p).unwrap_err();
        assert!(e.to_string().contains("offset 0 (1 of 64 bytes)"), "{e}");
    }

    #[test]
    fn parse_wrong_version() {
        let p = Path::new("/x/acct");
        let mut bytes = v3_bytes(2);
        bytes[1] = 2;
        let e = parse_records(&bytes, p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/acct: record at offset 0 has version 2, not 3 \
             (not an acct v3 file; only v3 is supported)"
        );
        let mut bytes = v3_bytes(3);
        bytes[64 * 2 + 1] = 0;
        let e = parse_records(&bytes, p).unwrap_err();
        assert_eq!(e.offset(), Some(128));
        assert!(e.to_string().contains("offset 128 has version 0"), "{e}");
    }

    #[test]
    fn parse_big_endian() {
        let p = Path::new("/x/acct");
        let mut bytes = v3_bytes(1);
        bytes[1] = 0x83;
        let e = parse_records(&bytes, p).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/x/acct: record at offset 0 "), "{msg}");
        assert!(msg.contains("0x83"), "{msg}");
        assert!(msg.contains("big-endian"), "{msg}");
        assert!(msg.contains("acct v3"), "{msg}");
        assert!(matches!(e, AcctFileError::BigEndian { version: 0x83, .. }));
        // A big-endian v2 file is still reported as big-endian first.
        bytes[1] = 0x82;
        let e = parse_records(&bytes, p).unwrap_err();
        assert!(e.to_string().contains("big-endian acct v2"), "{e}");
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        let mut rng = Rng(0xdead_beef);
        let p = Path::new("g");
        for _ in 0..2000 {
            let len = (rng.next() % 400) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Make valid prefixes likely so later records get looked at too.
            for i in (0..len).step_by(64) {
                if i + 1 < len && !rng.next().is_multiple_of(4) {
                    bytes[i + 1] = 3;
                }
            }
            let a = parse_records(&bytes, p);
            let b: Result<Vec<_>, _> = RecordReader::new(&bytes[..], p).collect();
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("slice and stream disagree: {a:?} vs {b:?}"),
            }
        }
    }

    /// A reader that hands out one byte at a time and is interrupted in
    /// between, as a pipe or a signal may make it.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            if self.data.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data[0];
            self.data = &self.data[1..];
            Ok(1)
        }
    }

    #[test]
    fn reader_handles_short_reads() {
        let bytes = v3_bytes(4);
        let p = Path::new("t");
        let got: Vec<_> = RecordReader::new(
            Trickle {
                data: &bytes,
                interrupt: false,
            },
            p,
        )
        .collect::<Result<_, _>>()
        .unwrap();
        assert_eq!(got, parse_records(&bytes, p).unwrap());
    }

    #[test]
    fn reader_stops_after_error() {
        let mut bytes = v3_bytes(3);
        bytes[64 + 1] = 9;
        let mut it = RecordReader::new(&bytes[..], Path::new("t"));
        assert!(matches!(it.next(), Some(Ok(_))));
        assert!(matches!(it.next(), Some(Err(_))));
        assert!(it.next().is_none());
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tracer-acct-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn read_files() {
        let d = temp_dir("read");
        let e = read_records(&d).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: is a directory", d.display()));

        let missing = d.join("missing");
        let e = read_records(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: cannot open: No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert_eq!(e.path(), missing);

        let empty = d.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(read_records(&empty).unwrap(), vec![]);

        let good = d.join("good");
        let bytes = v3_bytes(100);
        std::fs::write(&good, &bytes).unwrap();
        assert_eq!(
            read_records(&good).unwrap(),
            parse_records(&bytes, &good).unwrap()
        );

        let cut = d.join("cut");
        std::fs::write(&cut, &bytes[..64 * 2 + 40]).unwrap();
        let e = read_records(&cut).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: truncated record at offset 128 (40 of 64 bytes); \
                 the file is cut short or not an acct file",
                cut.display()
            )
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
