//! Outputs: where decoded exits go. Each one buffers and writes in batches;
//! `flush` is called after every drained batch and at stop.

mod acct_dir;
mod acct_file;
pub mod file;
mod json;
pub mod otlp;
mod table;
pub(crate) mod text;

use std::{
    io::{self, Write},
    path::PathBuf,
};

use anyhow::Result;

pub use acct_dir::AcctDir;
pub use acct_file::AcctFile;
pub use json::JsonLines;
pub use table::Table;

use tracer_common::{ForkRecord, ThreadExitRecord};

use crate::{
    decode::{Clock, Exec},
    model::Exit,
};

pub trait Output {
    fn exit(&mut self, exit: &Exit<'_>) -> io::Result<()>;
    /// Fork and exec events: only outputs that show lineage take them.
    fn fork(&mut self, _rec: &ForkRecord, _clock: &Clock) -> io::Result<()> {
        Ok(())
    }
    fn exec(&mut self, _rec: &Exec, _clock: &Clock) -> io::Result<()> {
        Ok(())
    }
    fn thread_exit(&mut self, _rec: &ThreadExitRecord, _clock: &Clock) -> io::Result<()> {
        Ok(())
    }
    /// The session is over: an output that delivers in the background
    /// (OTLP) delivers what it holds, within the drain deadline, and
    /// fails with what it could not deliver. Called before the summary is
    /// made, so that the summary counts it.
    fn deliver(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The session is over (outputs that print a summary do it here).
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()>;
    /// Names the output in error messages.
    fn name(&self) -> String;
    /// The end-of-session counts, for outputs that record them (JSON).
    fn summary(&mut self, _summary: &Summary) -> io::Result<()> {
        Ok(())
    }
    /// Lines or records this output could not write: the unwritten part of
    /// the batch that failed, and everything offered after it.
    fn lost(&self) -> u64 {
        0
    }
    /// SIGHUP: write out what is buffered and open the file's path again
    /// (logrotate moved it away). On an error the output keeps writing to
    /// the file it has open, and says so.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Items waiting to be sent, for outputs that queue (OTLP); `None` for
    /// the others. Shown as `tracer_output_queue_length`.
    fn queue_len(&self) -> Option<u64> {
        None
    }
}

/// The outputs a session was asked for.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub json: Option<Target>,
    pub acct_file: Option<PathBuf>,
    /// `--acct-dir`: an acct file per container and one for the host.
    pub acct_dir: Option<PathBuf>,
    pub table: bool,
    pub tree: bool,
    /// OpenTelemetry log records over OTLP/HTTP (`--otlp`, `OTEL_*`).
    pub otlp: Option<otlp::Config>,
    /// JSON lines and OTLP also get an event for every thread.
    pub threads: bool,
    /// The table shows each exit's command line.
    pub wide: bool,
    /// `--rotate-size`: file outputs rotate themselves.
    pub rotate: Option<file::Rotate>,
}

impl Spec {
    /// Checks what can be checked without touching a file.
    pub fn check(&self) -> Result<()> {
        if self.threads && self.json.is_none() && self.otlp.is_none() {
            anyhow::bail!(
                "--threads adds events to the JSON lines or OTLP: give --json or --otlp too"
            );
        }
        if self.rotate.is_some() && self.acct_file.is_none() && !self.json_is_file() {
            anyhow::bail!("--rotate-size rotates --acct-file and --json files: give one");
        }
        if self.table && self.json == Some(Target::Stdout) {
            anyhow::bail!("--table and --json - would both write to standard output; pick one");
        }
        Ok(())
    }

    fn json_is_file(&self) -> bool {
        matches!(self.json, Some(Target::File(_)))
    }

    /// Whether an output shows lineage (needs fork and exec events): known
    /// before any output is opened, so the programs attach first.
    pub fn wants_lineage(&self) -> bool {
        // OTLP names the executable (process.executable.path).
        self.json.is_some() || self.tree || self.wide || self.otlp.is_some()
    }

    /// Whether an output shows why a process died (killed_by, oom_kill):
    /// every one but the acct file, whose format has no room for it.
    pub fn wants_causes(&self) -> bool {
        self.json.is_some()
            || self.tree
            || self.otlp.is_some()
            || self.table
            || (self.acct_file.is_none() && self.acct_dir.is_none())
    }

    /// Whether an output shows taskstats' figures: the same ones (the
    /// table's MAXRSS and IO columns among them).
    pub fn wants_taskstats(&self) -> bool {
        self.wants_causes()
    }

    /// Whether an output shows containers or their pids.
    pub fn wants_containers(&self) -> bool {
        self.wants_causes() || self.acct_dir.is_some()
    }

    /// Opens the outputs (the table when no other is given).
    pub fn open(&self) -> Result<Outputs> {
        let mut outputs = Outputs::default();
        if let Some(path) = &self.acct_file {
            outputs.push(Box::new(AcctFile::open(path)?.rotating(self.rotate)));
        }
        if let Some(dir) = &self.acct_dir {
            outputs.push(Box::new(AcctDir::open(dir)?));
        }
        if let Some(target) = &self.json {
            let mut json = JsonLines::new(target.clone(), target.open()?);
            if let Target::File(path) = target {
                json.reopens(path, self.rotate);
            }
            outputs.push(Box::new(json));
        }
        if let Some(config) = &self.otlp {
            // A note: `-q` silences it.
            crate::notes::note(format_args!(
                "sending OpenTelemetry log records to {} (from {}, {})",
                config.endpoint.url,
                config.source,
                config.protocol.name()
            ));
            outputs.push(Box::new(otlp::Otlp::start(config.clone())?));
        }
        if self.tree {
            let color = crate::notes::color(io::IsTerminal::is_terminal(&io::stdout()));
            let out = io::BufWriter::new(Target::Stdout.open()?);
            outputs.push(Box::new(crate::tree::TreeOutput::new(Box::new(out), color)));
        }
        if self.table || outputs.is_empty() {
            let table = Table::new(Target::Stdout, Target::Stdout.open()?).containers();
            outputs.push(Box::new(if self.wide { table.wide() } else { table }));
        }
        Ok(outputs)
    }
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
    /// Opens for lines of text, with the rules of [`file`]: a file is
    /// appended to (created 0600, never truncated, links refused).
    pub fn open(&self) -> Result<Box<dyn Write>> {
        Ok(Box::new(match self {
            Self::Stdout => file::OutFile::stdout(file::Units::Lines)?,
            Self::File(p) => file::OutFile::open(p, file::Units::Lines, false)?,
        }))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Stdout => "standard output".into(),
            Self::File(p) => text::shown(p),
        }
    }
}

/// Writes `buf` until `out` has taken all of it or a write fails: how many
/// bytes it took, and how it ended. An output that fails part way needs the
/// count to know which lines or records it lost.
pub(crate) fn write_counted(out: &mut dyn Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// An output's lines, appended straight into the batch that is written
/// out once 64 KiB have gathered (or at `flush`): no copy and no system
/// call per line. After a failed write the output is done: it reports the
/// error once, then only counts the lines it could not write.
pub(crate) struct Batched {
    out: Box<dyn Write>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    failed: bool,
    lost: u64,
    /// The file behind `out`, when it is one: reopened on SIGHUP and
    /// rotated by size.
    file: Option<file::Reopen>,
}

impl Batched {
    const SIZE: usize = 1 << 16;

    pub(crate) fn new(out: Box<dyn Write>) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(Self::SIZE + 4096),
            lines: 0,
            failed: false,
            lost: 0,
            file: None,
        }
    }

    /// `out` is the file at `path`: SIGHUP opens the path again, and with
    /// `rotate` the file is rotated before a line would take it past the
    /// size.
    pub(crate) fn reopens(&mut self, path: &std::path::Path, rotate: Option<file::Rotate>) {
        self.file = Some(file::Reopen::new(path, file::Units::Lines, rotate));
    }

    /// Appends one line with `f`; writes the batch out when it is full.
    pub(crate) fn line(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        if self.failed {
            self.lost += 1;
            return Ok(());
        }
        let start = self.buf.len();
        f(&mut self.buf);
        self.lines += 1;
        let added = (self.buf.len() - start) as u64;
        if self
            .file
            .as_ref()
            .is_some_and(|r| r.full_before(start as u64, added))
        {
            // Whole lines only: what came before this line ends the file.
            let line = self.buf.split_off(start);
            self.lines -= 1;
            if let Err(e) = self.write_out() {
                self.lost += 1;
                return Err(e);
            }
            if let Some(out) = self.file.as_mut().and_then(file::Reopen::rotate) {
                self.out = Box::new(out);
            }
            self.buf.extend_from_slice(&line);
            self.lines += 1;
        }
        if self.buf.len() >= Self::SIZE {
            self.write_out()?;
        }
        Ok(())
    }

    /// SIGHUP: the batch to the file it was meant for, then the path
    /// opened again.
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        if self.failed || self.file.is_none() {
            return Ok(());
        }
        self.write_out()?;
        if let Some(r) = &mut self.file {
            self.out = Box::new(r.reopen()?);
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        let (done, res) = write_counted(&mut *self.out, &self.buf);
        let res = res.and_then(|()| self.out.flush());
        if let Some(r) = &mut self.file {
            r.wrote(done as u64);
        }
        if res.is_err() {
            // The writer cut a line it left half written; count it too.
            let whole = self.buf[..done].iter().filter(|&&b| b == b'\n').count() as u64;
            self.lost += self.lines - whole.min(self.lines);
            self.failed = true;
        }
        self.buf.clear();
        self.lines = 0;
        res
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        self.write_out()
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }
}

/// All outputs of one session. An output that fails is not written to
/// again (it counts what it could not write) and the others go on; the
/// session reports each failure, by name, at its end.
#[derive(Default)]
pub struct Outputs {
    slots: Vec<Slot>,
}

struct Slot {
    output: Box<dyn Output>,
    failure: Option<anyhow::Error>,
}

/// An output that stopped taking records.
pub struct Failure {
    pub name: String,
    /// The reader went away (a broken pipe, as with `| head`): not an error.
    pub closed: bool,
    pub error: String,
    /// Lines or records it could not write.
    pub lost: u64,
}

impl Outputs {
    pub fn push(&mut self, output: Box<dyn Output>) {
        self.slots.push(Slot {
            output,
            failure: None,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Runs `f` on every output in turn; a failure is kept with its output
    /// (the first one only) and does not stop the others.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Output) -> io::Result<()>) {
        for slot in &mut self.slots {
            if let Err(e) = f(slot.output.as_mut()) {
                if slot.failure.is_none() {
                    slot.failure = Some(output_error(e, slot.output.as_ref()));
                }
            }
        }
    }

    pub fn exit(&mut self, exit: &Exit<'_>) {
        self.each(|s| s.exit(exit))
    }

    pub fn fork(&mut self, rec: &ForkRecord, clock: &Clock) {
        self.each(|s| s.fork(rec, clock))
    }

    pub fn exec(&mut self, rec: &Exec, clock: &Clock) {
        self.each(|s| s.exec(rec, clock))
    }

    pub fn thread_exit(&mut self, rec: &ThreadExitRecord, clock: &Clock) {
        self.each(|s| s.thread_exit(rec, clock))
    }

    pub fn flush(&mut self) {
        self.each(|s| s.flush())
    }

    /// The outputs that deliver in the background deliver what they hold
    /// (bounded by the drain deadline).
    pub fn deliver(&mut self) {
        self.each(|s| s.deliver())
    }

    /// The session is over: the summary to the outputs that keep one, a
    /// flush, then the outputs that print at the end (the tree).
    pub fn finish(&mut self, summary: &Summary) {
        self.each(|s| s.summary(summary));
        self.flush();
        self.each(|s| s.finish());
    }

    /// SIGHUP: every file output opens its path again. One that cannot
    /// keeps the file it has, and a warning says why.
    pub fn reopen(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.failure.is_none()) {
            if let Err(e) = slot.output.reopen() {
                eprintln!(
                    "tracer: warning: cannot reopen {}: {e}; still writing to the file it had open",
                    slot.output.name()
                );
            }
        }
    }

    /// The outputs' names, in the order they were given.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.output.name()).collect()
    }

    /// For each output in that order: whether it still takes records.
    pub fn live_flags(&self) -> impl Iterator<Item = bool> + '_ {
        self.slots.iter().map(|s| s.failure.is_none())
    }

    /// For each output in that order: what [`Output::lost`] and
    /// [`Output::queue_len`] say.
    pub fn lost_and_queued(&self) -> impl Iterator<Item = (u64, Option<u64>)> + '_ {
        self.slots
            .iter()
            .map(|s| (s.output.lost(), s.output.queue_len()))
    }

    /// Outputs still taking records.
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.failure.is_none()).count()
    }

    /// The outputs that stopped, in the order they were given.
    pub fn failures(&self) -> Vec<Failure> {
        self.slots
            .iter()
            .filter_map(|s| {
                let e = s.failure.as_ref()?;
                Some(Failure {
                    name: s.output.name(),
                    closed: is_broken_pipe(e),
                    error: format!("{e:#}"),
                    lost: s.output.lost(),
                })
            })
            .collect()
    }
}

/// What a session delivered and what it could not, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Exit records taken from the ring and handed to the outputs.
    pub written: u64,
    /// Exit records the programs could not put in the ring (it was full).
    pub ring_full: u64,
    /// Thread groups `tracer run` could not follow (the tracking map was
    /// full): their exits are lost.
    pub track_full: u64,
    /// Fork, exec and thread exit events lost with the ring full.
    pub events_lost: u64,
    /// `exit_mmap` stamps lost with the ring full (their records went out
    /// with the time from before `exit_mm()`).
    pub stamps_lost: u64,
    /// Records written with the time from before `exit_mm()`.
    pub unstamped: u64,
    /// `run`: records taken when the group's leader was freed, because
    /// the kernel skipped both exit programs (`late` in the JSON).
    pub late: u64,
    /// Ring items this loader does not understand (a newer eBPF object).
    pub unknown: u64,
    /// `record`: runs of the exit programs the kernel skipped (its
    /// recursion guard); each may be a missing record.
    pub exit_runs_skipped: u64,
    /// Runs of the event and per-thread taskstats programs the kernel
    /// skipped (its recursion guard): each may be an event not sent or a
    /// thread's figures missing from its group's sums.
    pub event_runs_skipped: u64,
    /// Lines or records each failed output could not write, by its name.
    pub output_lost: Vec<(String, u64)>,
}

impl Summary {
    /// Exit records that reached no output at all or never left the kernel.
    pub fn lost(&self) -> u64 {
        self.ring_full + self.track_full
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

fn output_error(e: io::Error, output: &dyn Output) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => ": the disk is full; free space or write elsewhere",
        Some(libc::EDQUOT) => ": disk quota exceeded",
        _ => "",
    };
    let name = output.name();
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

/// A signal as JSON: its one name ([`crate::exit_status::signal_label`]) as
/// a string, or `null` for a number no signal has.
pub(crate) fn push_signal(w: &mut Vec<u8>, sig: u8) {
    match crate::exit_status::signal_label(sig) {
        Some(label) => {
            w.push(b'"');
            // Into a Vec: cannot fail.
            let _ = write!(w, "{label}");
            w.push(b'"');
        }
        None => w.extend_from_slice(b"null"),
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
/// A byte count for people: `512`, `1.5K`, `12M`, `3.2G` (binary units,
/// one decimal below 10).
pub(crate) struct Size(pub u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [char; 5] = ['K', 'M', 'G', 'T', 'P'];
        if self.0 < 1024 {
            return write!(f, "{}", self.0);
        }
        let mut unit = 0;
        let mut scaled = self.0 as f64 / 1024.0;
        while scaled >= 1023.95 && unit < UNITS.len() - 1 {
            scaled /= 1024.0;
            unit += 1;
        }
        if scaled < 9.95 {
            write!(f, "{scaled:.1}{}", UNITS[unit])
        } else {
            write!(f, "{scaled:.0}{}", UNITS[unit])
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::{cell::RefCell, io, rc::Rc};

    use tracer_common::{
        present, ExitRecord, ForkRecord, ThreadExitRecord, Xacct, FILENAME_LEN, RECORD_EXIT,
        RECORD_FORK, RECORD_THREAD_EXIT,
    };

    use crate::{decode::Clock, lineage::ProcessTable};

    /// A writer the test keeps a handle on.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub Rc<RefCell<Vec<u8>>>);

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
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.borrow().clone()).unwrap()
        }
    }

    /// Unix time 1,795,000,000 s is monotonic 1,000 s.
    pub(crate) fn clock() -> Clock {
        Clock::with_offset(1_794_999_000 * 1_000_000_000)
    }

    pub(crate) fn comm(bytes: &[u8]) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..bytes.len()].copy_from_slice(bytes);
        c
    }

    /// An exit with every extra present: forked, never exec'd, su, exit 3.
    pub(crate) fn exit_full() -> ExitRecord {
        ExitRecord {
            kind: RECORD_EXIT,
            present: present::MAXRSS
                | present::IO_CHARS
                | present::IO_BYTES
                | present::CSW
                | present::RUNTIME
                | present::XACCT
                | present::HIWATER
                | present::DELAYS
                | present::DELAY_IRQ,
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
            ns_pid: 0,
            ns_ppid: 0,
            pidns: 0,
            _pad: 0,
            cgroup_v1_id: 0,
            xacct: xacct_full(),
        }
    }

    /// taskstats' figures, each field its own value.
    pub(crate) fn xacct_full() -> Xacct {
        Xacct {
            leader_start_ns: 1_000_000_000_000 - 1_234_567_890,
            hiwater_rss_kb: 4_000,
            hiwater_vm_kb: 123_456,
            coremem: 11,
            virtmem: 12,
            read_char: 1 << 40,
            write_char: 65_536,
            read_syscalls: 1_024,
            write_syscalls: 2_048,
            read_bytes: 4_096,
            write_bytes: 0,
            cancelled_write_bytes: 3_072,
            nvcsw: 5,
            nivcsw: 6,
            cpu_delay_ns: 21,
            blkio_delay_ns: 22,
            swapin_delay_ns: 23,
            freepages_delay_ns: 24,
            thrashing_delay_ns: 25,
            compact_delay_ns: 26,
            irq_delay_ns: 27,
            delay_tasks: 1,
        }
    }

    /// A shell that sent `signal` with kill(2).
    pub(crate) fn killer(signal: u8) -> crate::causes::Killer {
        crate::causes::Killer {
            pid: 4200,
            tid: 4201,
            comm: *b"sh\x1b[2J\0\0\0\0\0\0\0\0\0\0",
            uid: 1000,
            code: if signal == 9 { 0x80 } else { 0 },
            signal,
        }
    }

    /// A cgroup OOM, as a 6.8 or later kernel reports it.
    pub(crate) fn oom_kill() -> crate::causes::OomKill {
        crate::causes::OomKill {
            cgroup: "/system.slice/x.service".into(),
            anon_rss_kb: Some(49_000),
            file_rss_kb: Some(120),
            shmem_rss_kb: Some(0),
            oom_score_adj: Some(200),
        }
    }

    /// Killed by SIGSEGV with a core, no extras, an odd comm, no exit
    /// signal, and a start after its exit (clock readings out of order).
    pub(crate) fn exit_bare() -> ExitRecord {
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
    pub(crate) fn lineage() -> ProcessTable {
        let mut t = ProcessTable::default();
        t.fork(&fork(0, 1, 0, b"swapper/0"));
        t.fork(&fork(1, 4200, 0x11, b"bash"));
        t.fork(&fork(4200, 4242, 0x100 | 0x4000 | 0x11, b"sh\"q"));
        t.exec(&exec(b"/bin/sh", b"sh\0-c\0exit 3\0", 13));
        t
    }

    pub(crate) fn fork(parent: u32, child: u32, flags: u64, name: &[u8]) -> ForkRecord {
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
    pub(crate) fn exec(filename: &[u8], argv: &[u8], total: u32) -> crate::decode::Exec {
        let mut f = [0u8; FILENAME_LEN];
        f[..filename.len()].copy_from_slice(filename);
        crate::decode::Exec {
            pid: 4242,
            tid: 4244,
            args_total: total,
            time_ns: 999_999_999_999,
            filename: f,
            args: argv.to_vec(),
            comm: comm(b"ls"),
        }
    }

    pub(crate) fn thread_exit() -> ThreadExitRecord {
        ThreadExitRecord {
            kind: RECORD_THREAD_EXIT,
            pid: 4242,
            tid: 4245,
            exit_code: 0x100,
            time_ns: 1_000_000_000_000,
            runtime_ns: 12_345,
            comm: comm(b"worker"),
            present: present::XACCT,
            _pad: 0,
            xacct: Xacct {
                leader_start_ns: 0,
                ..xacct_full()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        for (bytes, text) in [
            (0, "0"),
            (1023, "1023"),
            (1024, "1.0K"),
            (1536, "1.5K"),
            (10 * 1024 - 1, "10K"),
            (1024 * 1024 - 1, "1.0M"),
            (12 << 20, "12M"),
            (3_435_973_837, "3.2G"),
            (u64::MAX, "16384P"),
        ] {
            assert_eq!(Size(bytes).to_string(), text, "{bytes}");
        }
    }

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
