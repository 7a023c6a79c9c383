//! Outputs: where decoded exits go. Each sink buffers and writes in batches;
//! `flush` is called after every drained batch and at stop.

mod acct_file;
mod json;
mod table;

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
