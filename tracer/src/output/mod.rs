//! Outputs: where decoded exits go. Each sink buffers and writes in batches;
//! `flush` is called after every drained batch and at stop.

mod acct_file;
mod json;
mod table;
pub(crate) mod text;

use std::{
    io::{self, Write},
    path::PathBuf,
};

use anyhow::{Context as _, Result};

pub use acct_file::AcctFile;
pub use json::JsonLines;
pub use table::Table;

use tracer_common::{ExecRecord, ForkRecord, ThreadExitRecord};

use crate::event::{Clock, ExitView};

pub trait Sink {
    fn exit(&mut self, ev: &ExitView<'_>) -> io::Result<()>;
    /// Fork and exec events: only outputs that show lineage take them.
    fn fork(&mut self, _rec: &ForkRecord, _clock: &Clock) -> io::Result<()> {
        Ok(())
    }
    fn exec(&mut self, _rec: &ExecRecord, _clock: &Clock) -> io::Result<()> {
        Ok(())
    }
    fn thread_exit(&mut self, _rec: &ThreadExitRecord, _clock: &Clock) -> io::Result<()> {
        Ok(())
    }
    fn wants_lineage(&self) -> bool {
        false
    }
    /// The session is over (outputs that print a summary do it here).
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()>;
    /// Names the output in error messages.
    fn name(&self) -> String;
}

/// `-` is standard output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "-" {
            Self::Stdout
        } else {
            Self::File(s.into())
        })
    }
}

impl Target {
    pub fn open(&self) -> Result<Box<dyn Write>> {
        Ok(match self {
            Self::Stdout => Box::new(io::BufWriter::with_capacity(1 << 16, io::stdout())),
            Self::File(p) => Box::new(io::BufWriter::with_capacity(
                1 << 16,
                std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            )),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Stdout => "standard output".into(),
            Self::File(p) => p.display().to_string(),
        }
    }
}

/// An output's lines, appended straight into the batch that is written
/// out once 64 KiB have gathered (or at `flush`): no copy and no system
/// call per line.
pub(crate) struct Batched {
    out: Box<dyn Write>,
    buf: Vec<u8>,
}

impl Batched {
    const SIZE: usize = 1 << 16;

    /// `out` may be buffered too: a full batch goes past its buffer.
    pub fn new(out: Box<dyn Write>) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(Self::SIZE + 4096),
        }
    }

    /// Appends one line with `f`; writes the batch out when it is full.
    pub fn line(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        f(&mut self.buf);
        if self.buf.len() >= Self::SIZE {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        let res = self.out.write_all(&self.buf);
        self.buf.clear();
        res
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }
}

/// All outputs of one session.
#[derive(Default)]
pub struct Outputs {
    sinks: Vec<Box<dyn Sink>>,
}

impl Outputs {
    pub fn push(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Runs `f` on every output in turn; the first failure names its output.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> Result<()> {
        for s in &mut self.sinks {
            f(s.as_mut()).map_err(|e| output_error(e, s.as_ref()))?;
        }
        Ok(())
    }

    pub fn exit(&mut self, ev: &ExitView<'_>) -> Result<()> {
        self.each(|s| s.exit(ev))
    }

    pub fn fork(&mut self, rec: &ForkRecord, clock: &Clock) -> Result<()> {
        self.each(|s| s.fork(rec, clock))
    }

    pub fn exec(&mut self, rec: &ExecRecord, clock: &Clock) -> Result<()> {
        self.each(|s| s.exec(rec, clock))
    }

    pub fn thread_exit(&mut self, rec: &ThreadExitRecord, clock: &Clock) -> Result<()> {
        self.each(|s| s.thread_exit(rec, clock))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.each(|s| s.flush())
    }

    /// The session is over: flush, then let outputs print their summaries.
    pub fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.each(|s| s.finish())
    }

    pub fn wants_lineage(&self) -> bool {
        self.sinks.iter().any(|s| s.wants_lineage())
    }
}

/// A broken pipe on an output is the reader going away (`| head`): the
/// caller stops cleanly on it.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn output_error(e: io::Error, sink: &dyn Sink) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => ": the disk is full; free space or write elsewhere",
        Some(libc::EDQUOT) => ": disk quota exceeded",
        _ => "",
    };
    let name = sink.name();
    anyhow::Error::new(e).context(format!("cannot write to {name}{hint}"))
}

/// Seconds with nanosecond precision, without going through floats.
pub(crate) struct Secs(pub u64);

impl std::fmt::Display for Secs {
    /// Precision truncates (as acct's tick counts do); width pads, so a
    /// table column lines up.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        let p = f.precision().unwrap_or(9).min(9);
        let v = ns / 10u64.pow(9 - p as u32);
        let div = 10u64.pow(p as u32);
        if f.width().is_none() {
            return if p == 0 {
                write!(f, "{v}")
            } else {
                write!(f, "{}.{:0w$}", v / div, v % div, w = p)
            };
        }
        let text = if p == 0 {
            v.to_string()
        } else {
            format!("{}.{:0w$}", v / div, v % div, w = p)
        };
        f.pad_integral(true, "", &text)
    }
}

/// The acct flag bits as names, in the kernel's bit order.
pub(crate) fn flag_names(flag: u8) -> impl Iterator<Item = &'static str> {
    use crate::acct::{ACOMPAT, ACORE, AFORK, ASU, AXSIG};
    [
        (AFORK, "FORK"),
        (ASU, "SU"),
        (ACOMPAT, "COMPAT"),
        (ACORE, "CORE"),
        (AXSIG, "XSIG"),
    ]
    .into_iter()
    .filter(move |(bit, _)| flag & bit != 0)
    .map(|(_, name)| name)
}

/// Records that exercise every branch of the outputs, for their golden
/// tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::{cell::RefCell, io, rc::Rc};

    use tracer_common::{
        present, ExecRecord, ExitRecord, ForkRecord, ThreadExitRecord, ARGS_LEN, FILENAME_LEN,
        RECORD_EXEC, RECORD_EXIT, RECORD_FORK, RECORD_THREAD_EXIT,
    };

    use crate::{event::Clock, lineage::ProcessTable};

    /// A writer the test keeps a handle on.
    #[derive(Clone, Default)]
    pub struct Shared(pub Rc<RefCell<Vec<u8>>>);

    impl io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.borrow().clone()).unwrap()
        }
    }

    /// Unix time 1,795,000,000 s is monotonic 1,000 s.
    pub fn clock() -> Clock {
        Clock::with_offset(1_794_999_000 * 1_000_000_000)
    }

    pub fn comm(bytes: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..bytes.len()].copy_from_slice(bytes);
        c
    }

    /// An exit with every extra present: forked, never exec'd, su, exit 3.
    pub fn exit_full() -> ExitRecord {
        ExitRecord {
            kind: RECORD_EXIT,
            present: present::MAXRSS
                | present::IO_CHARS
                | present::IO_BYTES
                | present::CSW
                | present::RUNTIME,
            pid: 4242,
            tid: 4243,
            ppid: 4200,
            uid: 0,
            gid: 100,
            ac_flag: 0x03,
            exit_code: 3 << 8,
            exit_signal: 17,
            tty_dev: (136 << 20) | 3,
            flags: 0,
            start_ns: 1_000_000_000_000 - 1_234_567_890,
            exit_ns: 1_000_000_000_000,
            utime_ns: 20_000_000,
            stime_ns: 1_010_000_000,
            mem_kb: 123_456,
            minflt: 7_890,
            majflt: 12,
            maxrss_pages: 1_000,
            rchar: 1 << 40,
            wchar: 65_536,
            read_bytes: 4_096,
            write_bytes: 0,
            nvcsw: 5,
            nivcsw: 6,
            cgroup_id: u64::MAX,
            runtime_ns: 1_029_999_999,
            comm: comm(b"sh"),
        }
    }

    /// Killed by SIGSEGV with a core, no extras, an odd comm, no exit
    /// signal, and a start after its exit (clock readings out of order).
    pub fn exit_bare() -> ExitRecord {
        ExitRecord {
            present: 0,
            pid: 7,
            tid: 7,
            ppid: 0,
            uid: 65_534,
            gid: 65_534,
            ac_flag: 0x18,
            exit_code: 0x80 | 11,
            exit_signal: -1,
            tty_dev: 0,
            start_ns: 2_000_000_000_000,
            exit_ns: 1_999_000_000_000,
            utime_ns: 0,
            stime_ns: 0,
            mem_kb: 0,
            minflt: 0,
            majflt: 0,
            comm: comm(b"a\\\"\t\x7f\xff\xc3\xa9 \x01zzzzzz"),
            ..exit_full()
        }
    }

    /// A process table where 4242 (sh) was vforked by 4200 (bash), itself
    /// created by 1 (init), so exits have an ancestry.
    pub fn lineage() -> ProcessTable {
        let mut t = ProcessTable::default();
        t.fork(&fork(0, 1, 0, b"swapper/0"));
        t.fork(&fork(1, 4200, 0x11, b"bash"));
        t.fork(&fork(4200, 4242, 0x100 | 0x4000 | 0x11, b"sh\"q"));
        t
    }

    pub fn fork(parent: u32, child: u32, flags: u64, name: &[u8]) -> ForkRecord {
        ForkRecord {
            kind: RECORD_FORK,
            exit_signal: 17,
            parent_pid: parent,
            parent_tid: parent + 1,
            child_pid: child,
            child_tid: child,
            clone_flags: flags,
            time_ns: 1_000_000_000_001,
            comm: comm(name),
        }
    }

    /// `argv` is NUL separated as in the process; `total` its whole length.
    pub fn exec(filename: &[u8], argv: &[u8], total: u32) -> ExecRecord {
        let mut f = [0u8; FILENAME_LEN];
        f[..filename.len()].copy_from_slice(filename);
        let mut args = [0u8; ARGS_LEN];
        args[..argv.len()].copy_from_slice(argv);
        ExecRecord {
            kind: RECORD_EXEC,
            pid: 4242,
            tid: 4244,
            args_len: argv.len() as u32,
            args_total: total,
            _pad: 0,
            time_ns: 999_999_999_999,
            filename: f,
            args,
            comm: comm(b"ls"),
        }
    }

    pub fn thread_exit() -> ThreadExitRecord {
        ThreadExitRecord {
            kind: RECORD_THREAD_EXIT,
            pid: 4242,
            tid: 4245,
            exit_code: 0x100,
            time_ns: 1_000_000_000_000,
            runtime_ns: 12_345,
            comm: comm(b"worker"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secs_formats_exactly() {
        assert_eq!(Secs(1_500_000_001).to_string(), "1.500000001");
        assert_eq!(format!("{:.3}", Secs(1_500_900_001)), "1.500");
        assert_eq!(format!("{:.2}", Secs(999)), "0.00");
        assert_eq!(format!("{:.0}", Secs(2_999_999_999)), "2");
        assert_eq!(format!("{:>8.2}", Secs(1_500_000_000)), "    1.50");
    }

    #[test]
    fn flags_in_kernel_order() {
        let names: Vec<_> = flag_names(0x01 | 0x02 | 0x08 | 0x10).collect();
        assert_eq!(names, ["FORK", "SU", "CORE", "XSIG"]);
        assert_eq!(flag_names(0).count(), 0);
    }
}
