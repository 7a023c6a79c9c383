//! `--bpf-log`: the eBPF programs' diagnostics (why one gave up on a
//! record, an event or a field; `tracer-ebpf/src/diag.rs`), through
//! aya-log, on standard error as `tracer: bpf LEVEL: ...` lines.
//!
//! Off by default, and then free: the level is aya-log's read-only global
//! `AYA_LOG_LEVEL`, set before load, so the verifier drops every log call
//! the level turns off; and the log ring is cut to one page, never mapped
//! nor read.

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// How much the programs say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BpfLog {
    /// Nothing: the log calls are dropped at load time.
    #[default]
    Off,
    /// Records and events lost (the summary counts them too), and why.
    Warn,
    /// Also records written with less than they should have (a kernel read
    /// failed, an exit time from before `exit_mm()`) and dropped duplicates.
    Debug,
}

/// aya-log's level global in the eBPF object.
pub const LEVEL_GLOBAL: &str = aya_log::LEVEL;

/// aya-log's ring in the eBPF object.
pub const RING: &str = "AYA_LOGS";

/// The log ring's size when on: aya-log's own, room for about a thousand
/// lines while the loader does not read.
const RING_BYTES: u32 = 128 << 10;

impl BpfLog {
    /// The value of [`LEVEL_GLOBAL`]: the highest aya-log level that is on.
    pub fn level(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Warn => aya_log::Level::Warn as u8,
            Self::Debug => aya_log::Level::Debug as u8,
        }
    }

    /// The size of [`RING`]: the smallest the kernel takes when off.
    pub fn ring_bytes(self) -> u32 {
        if self == Self::Off {
            // SAFETY: sysconf has no preconditions.
            (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u32
        } else {
            RING_BYTES
        }
    }
}

/// The log ring of loaded programs, when `--bpf-log` is on.
pub struct Logger(EbpfLogger<Stderr>);

impl Logger {
    /// Takes the log ring out of `ebpf`; `None` when off (the ring is then
    /// left alone).
    pub fn start(ebpf: &mut Ebpf, log: BpfLog) -> Result<Option<Self>> {
        if log == BpfLog::Off {
            return Ok(None);
        }
        let logger = EbpfLogger::init_with_logger(ebpf, Stderr)
            .context("--bpf-log: cannot open the programs' log ring")?;
        Ok(Some(Self(logger)))
    }
}

/// Writes what the programs logged while a session drains its ring.
pub struct Forward(Option<AsyncFd<EbpfLogger<Stderr>>>);

impl Forward {
    /// Needs the session's runtime.
    pub fn new(logger: Option<Logger>) -> Result<Self> {
        let Some(Logger(logger)) = logger else {
            return Ok(Self(None));
        };
        // SAFETY: the logger owns its ring's fd for as long as the AsyncFd
        // owns the logger.
        let fd = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self(Some(fd)))
    }

    /// Waits until the programs logged something and writes it; never
    /// resolves when off.
    pub async fn ready(&mut self) -> Result<()> {
        let Some(fd) = &mut self.0 else {
            return std::future::pending().await;
        };
        let mut guard = fd.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
        Ok(())
    }

    /// Writes whatever the programs logged (at the end of a session).
    pub fn flush(&mut self) {
        if let Some(fd) = &mut self.0 {
            fd.get_mut().flush();
        }
    }
}

/// One line on standard error per log record, whatever `-q` says: it was
/// asked for.
pub struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        eprintln!("tracer: bpf {level}: {}", record.args());
    }

    fn flush(&self) {}
}
