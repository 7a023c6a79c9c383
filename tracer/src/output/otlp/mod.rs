//! `--otlp URL`: every exit as an OpenTelemetry log record, sent over
//! OTLP/HTTP with protobuf (gzip) to `URL/v1/logs`, or in OTLP's JSON
//! mapping with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`.
//!
//! The reading loop only builds each record and queues it ([`Otlp::exit`]);
//! a thread of its own owns the network: it sends the queue in batches
//! (by count and by time), retries with backoff what the collector could
//! not take (429, 502, 503, 504, a connection that fails), honouring
//! `Retry-After`. The queue is bounded: when it is full the oldest record
//! is dropped and counted. At the end of the session what is queued is
//! sent within the drain deadline; what could not be is counted, and the
//! session names the loss under this output's name, `otlp`.

mod config;
mod encode;
mod http;

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use prost::Message as _;
use tracer_common::ThreadExitRecord;

pub use config::{parse_pairs, Config, Endpoint, Protocol};
use encode::{RecordWriter, Scratch};

use super::{flag_names, text::until_nul, Output};
use crate::{
    decode::Clock,
    exit_status::ExitStatus,
    model::{Exit, TaskStats},
    shutdown,
};

/// The name the session's summary gives this output's losses.
pub const NAME: &str = "otlp";

pub struct Otlp {
    shared: Arc<Shared>,
    /// Records back from the sender, to be filled again: each is a
    /// `LogRecord`'s protobuf encoding (see `encode`).
    spare: Vec<Vec<u8>>,
    /// Filled, not yet in the queue (see [`Otlp::push`]).
    local: Vec<Vec<u8>>,
    scratch: Scratch,
    url: String,
    argv: bool,
    batch: usize,
}

/// What the session's thread and the sender share.
struct Shared {
    state: Mutex<State>,
    /// The sender waits on it for records; `deliver` waits on it for the
    /// sender.
    wake: Condvar,
    /// The queue's bound.
    capacity: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Records the sender has sent, for the session to fill again.
    free: Vec<Vec<u8>>,
    /// When the oldest queued record was queued.
    oldest: Option<Instant>,
    /// Records the sender has taken and not yet settled.
    in_flight: usize,
    /// The session is over: send everything now.
    stopping: bool,
    /// The drain deadline passed: the sender stops.
    abandoned: bool,
    delivered: u64,
    /// Dropped, oldest first, with the queue full.
    dropped: u64,
    /// Refused by the collector (an error that retrying cannot fix, or
    /// records rejected in a partial success).
    rejected: u64,
    /// Queued or in flight when the drain deadline passed.
    unsent: u64,
    last_error: Option<String>,
    /// Said once on stderr.
    said_full: bool,
}

impl State {
    fn lost(&self) -> u64 {
        self.dropped + self.rejected + self.unsent
    }
}

impl Otlp {
    /// Starts the sender thread (nothing is connected until the first
    /// batch).
    pub fn start(config: Config) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            capacity: config.queue,
        });
        let url = config.endpoint.url.clone();
        let (argv, batch) = (config.argv, config.batch);
        let sender = Sender::new(config, Arc::clone(&shared));
        std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || sender.run())?;
        Ok(Self {
            shared,
            spare: Vec::new(),
            local: Vec::with_capacity(LOCAL),
            scratch: Scratch::default(),
            url,
            argv,
            batch,
        })
    }

    /// Queues the record `fill` makes, in a recycled one when there is.
    /// Records wait in `local` until the session flushes its outputs (after
    /// every read of the ring) or [`LOCAL`] of them are there: one lock
    /// for many records, instead of one each, which the sender's batches
    /// made contended.
    fn push(&mut self, fill: impl FnOnce(&mut Vec<u8>, &mut Scratch)) {
        if self.spare.is_empty() {
            // One lock for a batch's worth of records.
            std::mem::swap(&mut self.spare, &mut self.shared.lock().free);
        }
        let mut record = self.spare.pop().unwrap_or_default();
        fill(&mut record, &mut self.scratch);
        self.local.push(record);
        if self.local.len() >= LOCAL {
            self.publish();
        }
    }

    /// Moves the records of `local` to the sender's queue, dropping the
    /// oldest beyond its bound.
    fn publish(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        let before = st.queue.len();
        if before == 0 {
            st.oldest = Some(Instant::now());
        }
        st.queue.extend(self.local.drain(..));
        // Only the first records of a batch wake the sender (to start its
        // timer) and a full batch: a wakeup is a system call.
        if before == 0 || (before < self.batch && st.queue.len() >= self.batch) {
            self.shared.wake.notify_all();
        }
        let over = st.queue.len().saturating_sub(self.shared.capacity);
        if over > 0 {
            self.spare.extend(st.queue.drain(..over));
            st.dropped += over as u64;
            if !st.said_full {
                st.said_full = true;
                eprintln!(
                    "tracer: otlp: the queue is full ({} records): the oldest are dropped \
                     and counted",
                    st.queue.len()
                );
            }
        }
    }
}

/// Records the session fills before it hands them to the sender's queue.
const LOCAL: usize = 64;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A sender that panicked left counts that are still counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Output for Otlp {
    fn exit(&mut self, e: &Exit<'_>) -> io::Result<()> {
        let argv = self.argv;
        self.push(|r, s| fill_exit(r, s, e, argv, now_ns()));
        Ok(())
    }

    fn thread_exit(&mut self, t: &ThreadExitRecord, clock: &Clock) -> io::Result<()> {
        self.push(|r, s| fill_thread_exit(r, s, t, clock, now_ns()));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.publish();
        Ok(())
    }

    /// Sends what is queued, until everything is settled or the drain
    /// deadline (or, without one, [`shutdown::DRAIN`] from now) passes.
    fn deliver(&mut self) -> io::Result<()> {
        self.publish();
        let limit = Instant::now() + shutdown::DRAIN;
        let mut st = self.shared.lock();
        st.stopping = true;
        self.shared.wake.notify_all();
        while !st.queue.is_empty() || st.in_flight > 0 {
            let Some(ms) = shutdown::poll_timeout_ms() else {
                break;
            };
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let slice = left.min(Duration::from_millis(ms as u64));
            st = self
                .shared
                .wake
                .wait_timeout(st, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if !st.queue.is_empty() || st.in_flight > 0 {
            // Whatever the sender still holds, it may have reached the
            // collector or not: it is not known delivered.
            st.unsent += (st.queue.len() + st.in_flight) as u64;
            st.queue.clear();
            st.in_flight = 0;
            st.abandoned = true;
            self.shared.wake.notify_all();
        }
        if st.lost() == 0 {
            return Ok(());
        }
        let mut why = Vec::new();
        for (n, what) in [
            (st.dropped, "dropped with the queue full"),
            (st.rejected, "refused by the collector"),
            (st.unsent, "not sent by the end of the drain"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        let mut msg = format!(
            "{} of {} records not delivered to {} ({})",
            st.lost(),
            st.lost() + st.delivered,
            self.url,
            why.join(", ")
        );
        if let Some(e) = &st.last_error {
            msg += &format!("; last error: {e}");
        }
        Err(io::Error::other(msg))
    }

    fn lost(&self) -> u64 {
        self.shared.lock().lost()
    }

    fn name(&self) -> String {
        NAME.into()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------------------
// Records: one per exit, attributes named by the semantic conventions where
// they have a name, the project's own under `tracer.`.
// ---------------------------------------------------------------------------

/// A kernel string (NUL-padded bytes), each invalid UTF-8 sequence
/// replaced by U+FFFD; borrowed, without a copy, when it is valid (nearly
/// every kernel string).
fn kernel_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(until_nul(bytes))
}

/// [`kernel_text`] onto a string.
pub(super) fn push_text(to: &mut String, bytes: &[u8]) {
    to.push_str(&kernel_text(bytes));
}

/// [`kernel_text`] into a record's bytes.
fn put_text(to: &mut Vec<u8>, bytes: &[u8]) {
    to.extend_from_slice(kernel_text(bytes).as_bytes());
}

/// ISO 8601 (RFC 3339) in UTC with ns, as humantime's
/// `format_rfc3339_nanos` writes it (a test compares them), without its
/// formatting machinery: two of these per record were a twentieth of the
/// export's cost.
fn push_iso8601(to: &mut Vec<u8>, unix_ns: u64) {
    let secs = unix_ns / 1_000_000_000;
    let nanos = (unix_ns % 1_000_000_000) as u32;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = [0u8; 30];
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y as u64, 4);
    put(5, u64::from(m), 2);
    put(8, u64::from(d), 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    put(20, u64::from(nanos), 9);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[29] = b'Z';
    // ASCII digits and separators only.
    to.extend_from_slice(&out);
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn severity(status: ExitStatus) -> (SeverityNumber, &'static str) {
    match status {
        ExitStatus::Exited(0) => (SeverityNumber::Info, "INFO"),
        ExitStatus::Exited(_) => (SeverityNumber::Warn, "WARN"),
        ExitStatus::Signaled { .. } => (SeverityNumber::Error, "ERROR"),
    }
}

/// The event of a process's death.
pub const EXIT_EVENT: &str = "process.exit";
/// The event of a thread's death before its process (`--threads`).
pub const THREAD_EXIT_EVENT: &str = "tracer.thread.exit";

/// Starts a record: time, severity, body.
fn start_record<'a>(
    r: &'a mut Vec<u8>,
    scratch: &'a mut Scratch,
    time: u64,
    status: ExitStatus,
    body: impl FnOnce(&mut Vec<u8>),
) -> RecordWriter<'a> {
    let (number, text) = severity(status);
    RecordWriter::start(r, scratch, time, number as i32, text, body)
}

/// Record `e`, as `LogRecord` (decoded from what is sent).
#[cfg(test)]
fn exit_record(e: &Exit<'_>, argv: bool, observed_ns: u64) -> LogRecord {
    let mut r = Vec::new();
    fill_exit(&mut r, &mut Scratch::default(), e, argv, observed_ns);
    prost::Message::decode(r.as_slice()).expect("a LogRecord")
}

/// Writes the record of exit `e` into `r` (a new buffer or a recycled one).
fn fill_exit(r: &mut Vec<u8>, scratch: &mut Scratch, e: &Exit<'_>, argv: bool, observed_ns: u64) {
    use std::io::Write as _;
    let status = e.status();
    // Exact from the probes; from acct's start second and elapsed ticks
    // otherwise.
    let exited_ns = e.exit_time_ns;
    let created_ns = exited_ns.saturating_sub(e.elapsed_ns);
    let mut a = start_record(r, scratch, exited_ns, status, |s| {
        put_text(s, &e.comm);
        s.extend_from_slice(b" (");
        s.extend_from_slice(itoa::Buffer::new().format(e.pid).as_bytes());
        s.extend_from_slice(b"): ");
        // Into a Vec: cannot fail.
        let _ = write!(s, "{}", e.described());
    });
    a.int("process.pid", e.pid);
    a.int("process.parent_pid", e.ppid);
    a.text("process.executable.name", |s| put_text(s, &e.comm));
    a.int("process.exit.code", status.shell_status());
    a.text("process.exit.time", |s| push_iso8601(s, exited_ns));
    a.text("process.creation.time", |s| push_iso8601(s, created_ns));
    a.int("process.real_user.id", e.uid);
    a.int("process.real_group.id", e.gid);
    if let Some(exec) = e.lineage.and_then(|l| l.exec(e.pid)) {
        a.text("process.executable.path", |s| put_text(s, &exec.exe));
        // Only when asked for: command lines carry secrets.
        if argv {
            a.byte_strs("process.command_args", exec.args());
        }
    }
    if let Some(c) = e.cgroup {
        a.text("process.linux.cgroup", |s| {
            s.extend_from_slice(c.path.as_bytes())
        });
    }
    if let Some(container) = e.container() {
        a.text("container.id", |s| {
            s.extend_from_slice(container.id.as_bytes())
        });
        if let Some(uid) = &container.pod_uid {
            a.text("k8s.pod.uid", |s| s.extend_from_slice(uid.as_bytes()));
        }
    }
    if let Some(ns) = e.probed.and_then(|p| p.ns) {
        a.int("tracer.ns_pid", ns.pid);
        a.int("tracer.ns_ppid", ns.ppid);
        a.int("tracer.pidns", ns.pidns);
    }
    if let Some(tid) = e.tid {
        a.int("tracer.tid", tid);
    }
    a.uint("tracer.exit_code", u64::from(e.exit_code));
    if let ExitStatus::Signaled {
        signal,
        core_dumped,
    } = status
    {
        a.text("tracer.signal", |s| push_signal(s, signal));
        a.bool("tracer.core_dumped", core_dumped);
    }
    a.strs("tracer.flags", flag_names(e.flags));
    a.int("tracer.tty", e.tty);
    a.secs("tracer.elapsed_s", e.elapsed_ns);
    a.secs("tracer.utime_s", e.utime_ns);
    a.secs("tracer.stime_s", e.stime_ns);
    a.uint("tracer.mem_kb", e.mem_kb);
    a.uint("tracer.minflt", e.minflt);
    a.uint("tracer.majflt", e.majflt);
    if let Some(p) = &e.probed {
        if p.late {
            a.bool("tracer.late", true);
        }
        if let Some(sig) = u8::try_from(p.exit_signal).ok().filter(|&s| s != 0) {
            a.text("tracer.exit_signal", |s| push_signal(s, sig));
        }
        a.uint("tracer.cgroup_id", p.cgroup_id);
        a.opt_uint("tracer.maxrss_kb", p.maxrss_kb);
        a.opt_uint("tracer.rchar", p.rchar);
        a.opt_uint("tracer.wchar", p.wchar);
        a.opt_uint("tracer.read_bytes", p.read_bytes);
        a.opt_uint("tracer.write_bytes", p.write_bytes);
        if let Some(ns) = p.cpu_runtime_ns {
            a.secs("tracer.cpu_runtime_s", ns);
        }
        a.opt_uint("tracer.nvcsw", p.nvcsw);
        a.opt_uint("tracer.nivcsw", p.nivcsw);
        if let Some(t) = &p.taskstats {
            taskstats_attributes(&mut a, t);
        }
    }
    if let Some(k) = &e.killed_by {
        a.int("tracer.killed_by.pid", k.pid);
        a.int("tracer.killed_by.tid", k.tid);
        a.text("tracer.killed_by.comm", |s| put_text(s, &k.comm));
        a.int("tracer.killed_by.uid", k.uid);
        a.text("tracer.killed_by.code", |s| {
            s.extend_from_slice(k.code_name().as_bytes())
        });
    }
    if let Some(o) = e.oom_kill {
        a.text("tracer.oom_kill.cgroup", |s| {
            s.extend_from_slice(o.cgroup.as_bytes())
        });
        a.opt_uint("tracer.oom_kill.anon_rss_kb", o.anon_rss_kb);
        a.opt_uint("tracer.oom_kill.file_rss_kb", o.file_rss_kb);
        a.opt_uint("tracer.oom_kill.shmem_rss_kb", o.shmem_rss_kb);
        if let Some(adj) = o.oom_score_adj {
            a.int("tracer.oom_kill.oom_score_adj", adj);
        }
    }
    a.finish(observed_ns, EXIT_EVENT);
}

/// Writes the record of a thread's exit into `r`.
fn fill_thread_exit(
    r: &mut Vec<u8>,
    scratch: &mut Scratch,
    t: &ThreadExitRecord,
    clock: &Clock,
    observed_ns: u64,
) {
    use std::io::Write as _;
    let status = ExitStatus::from_code(t.exit_code);
    let time = clock.realtime_ns(t.time_ns).clamp(0, i128::from(u64::MAX)) as u64;
    let mut a = start_record(r, scratch, time, status, |s| {
        put_text(s, &t.comm);
        // Into a Vec: cannot fail.
        let _ = write!(s, " (thread {} of {}): {status}", t.tid, t.pid);
    });
    a.int("process.pid", t.pid);
    a.int("thread.id", t.tid);
    a.text("thread.name", |s| put_text(s, &t.comm));
    a.uint("tracer.exit_code", u64::from(t.exit_code));
    a.secs("tracer.cpu_runtime_s", t.runtime_ns);
    if let Some(ts) = TaskStats::from_xacct(&t.xacct, t.present) {
        a.uint("tracer.read_bytes", ts.read_bytes);
        a.uint("tracer.write_bytes", ts.write_bytes);
        a.uint("tracer.nvcsw", ts.nvcsw);
        a.uint("tracer.nivcsw", ts.nivcsw);
        taskstats_attributes(&mut a, &ts);
    }
    a.finish(observed_ns, THREAD_EXIT_EVENT);
}

/// taskstats' figures, under the JSON names (`tracer.` prefixed); those
/// the kernel or hook has not are absent.
fn taskstats_attributes(a: &mut RecordWriter<'_>, t: &TaskStats) {
    a.opt_uint("tracer.hiwater_rss_kb", t.hiwater_rss_kb);
    a.opt_uint("tracer.hiwater_vm_kb", t.hiwater_vm_kb);
    a.uint("tracer.coremem", t.coremem);
    a.uint("tracer.virtmem", t.virtmem);
    a.uint("tracer.read_char", t.read_char);
    a.uint("tracer.write_char", t.write_char);
    a.uint("tracer.read_syscalls", t.read_syscalls);
    a.uint("tracer.write_syscalls", t.write_syscalls);
    a.uint("tracer.cancelled_write_bytes", t.cancelled_write_bytes);
    if let Some(d) = &t.delays {
        a.uint("tracer.cpu_delay_ns", d.cpu_ns);
        a.uint("tracer.blkio_delay_ns", d.blkio_ns);
        a.uint("tracer.swapin_delay_ns", d.swapin_ns);
        a.uint("tracer.freepages_delay_ns", d.freepages_ns);
        a.uint("tracer.thrashing_delay_ns", d.thrashing_ns);
        a.uint("tracer.memory_compact_delay_ns", d.memory_compact_ns);
        a.opt_uint("tracer.irq_delay_ns", d.irq_ns);
    }
}

fn push_signal(to: &mut Vec<u8>, sig: u8) {
    use std::io::Write as _;
    // Into a Vec: cannot fail.
    let _ = match crate::exit_status::signal_label(sig) {
        Some(label) => write!(to, "{label}"),
        None => write!(to, "signal {sig}"),
    };
}

// ---------------------------------------------------------------------------
// The sender thread.
// ---------------------------------------------------------------------------

struct Sender {
    shared: Arc<Shared>,
    client: http::Client,
    resource: Resource,
    scope: InstrumentationScope,
    protocol: Protocol,
    gzip: bool,
    timeout: Duration,
    batch: usize,
    delay: Duration,
    url: String,
    /// A failure streak was reported on stderr.
    failing: bool,
    /// The request's body, the compressor and what is fed to it: kept, so
    /// that a batch does not map and fault in fresh memory.
    body: Vec<u8>,
    deflate: flate2::write::DeflateEncoder<Vec<u8>>,
    stage: Vec<u8>,
}

/// The first wait after a failed export; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is cut to it.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

impl Sender {
    fn new(config: Config, shared: Arc<Shared>) -> Self {
        let attributes = config
            .resource
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(v.clone())),
                }),
                ..Default::default()
            })
            .collect();
        Self {
            shared,
            client: http::Client::new(
                config.endpoint.clone(),
                &config.headers,
                config.protocol.content_type(),
                config.gzip,
            ),
            resource: Resource {
                attributes,
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: "tracer".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
            protocol: config.protocol,
            gzip: config.gzip,
            timeout: config.timeout,
            batch: config.batch,
            delay: config.delay,
            url: config.endpoint.url,
            failing: false,
            body: Vec::new(),
            deflate: flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast()),
            stage: Vec::with_capacity(STAGE + 4096),
        }
    }

    fn run(mut self) {
        while let Some(batch) = self.next_batch() {
            let n = batch.len();
            let (delivered, rejected) = self.send(batch);
            let mut st = self.shared.lock();
            if st.abandoned {
                return;
            }
            st.in_flight -= n;
            st.delivered += delivered;
            st.rejected += rejected;
            self.shared.wake.notify_all();
        }
    }

    /// Waits for a full batch, the oldest record's delay, or the stop.
    fn next_batch(&self) -> Option<Vec<Vec<u8>>> {
        let mut st = self.shared.lock();
        loop {
            if st.abandoned {
                return None;
            }
            let due = st
                .oldest
                .map(|t| t + self.delay)
                .filter(|_| !st.queue.is_empty());
            let now = Instant::now();
            if st.queue.len() >= self.batch
                || (!st.queue.is_empty() && (st.stopping || due.is_some_and(|d| d <= now)))
            {
                let n = st.queue.len().min(self.batch);
                let batch: Vec<_> = st.queue.drain(..n).collect();
                st.in_flight += n;
                st.oldest = if st.queue.is_empty() { None } else { Some(now) };
                return Some(batch);
            }
            let wait = due.map_or(Duration::from_secs(1), |d| d - now);
            st = self
                .shared
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends one batch until it is settled: (delivered, rejected).
    fn send(&mut self, batch: Vec<Vec<u8>>) -> (u64, u64) {
        let n = batch.len() as u64;
        self.encode(batch);
        let mut backoff = BACKOFF_FIRST;
        loop {
            let deadline = Instant::now() + self.timeout;
            let shared = Arc::clone(&self.shared);
            let abandon = move || shared.lock().abandoned;
            let outcome = self.client.post(&self.body, deadline, &abandon);
            let (error, wait) = match outcome {
                Ok(r) if (200..300).contains(&r.status) => {
                    if self.failing {
                        self.failing = false;
                        eprintln!("tracer: otlp: export to {} works again", self.url);
                    }
                    let rejected = rejected_in(self.protocol, &r.body).min(n);
                    if rejected > 0 {
                        self.shared.lock().last_error =
                            Some(format!("the collector rejected {rejected} records"));
                    }
                    return (n - rejected, rejected);
                }
                Ok(r) if matches!(r.status, 429 | 502 | 503 | 504) => (
                    format!("HTTP {}", r.status),
                    r.retry_after.map(|d| d.min(RETRY_AFTER_MAX)),
                ),
                Ok(r) => {
                    let e = format!(
                        "HTTP {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    );
                    eprintln!("tracer: otlp: {} refused {n} records: {e}", self.url);
                    self.shared.lock().last_error = Some(e);
                    return (0, n);
                }
                Err(e) => (e.to_string(), None),
            };
            if !self.failing {
                self.failing = true;
                eprintln!(
                    "tracer: otlp: export to {} failed ({error}); retrying",
                    self.url
                );
            }
            self.shared.lock().last_error = Some(error);
            let wait = wait.unwrap_or(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if !self.pause(wait) {
                return (0, 0);
            }
        }
    }

    /// Waits before a retry; false when the output was given up.
    fn pause(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let mut st = self.shared.lock();
        loop {
            if st.abandoned {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            st = self
                .shared
                .wake
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// One request, in `self.body`: the resource, the scope, the records;
    /// gzipped. The records go back to the session to be filled again.
    /// The buffers and the compressor are kept from one batch to the next,
    /// and the records are fed to the compressor through a small staging
    /// buffer rather than copied into the whole request first.
    fn encode(&mut self, log_records: Vec<Vec<u8>>) {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let json = (self.protocol == Protocol::Json)
            .then(|| json_request(&self.resource, &self.scope, &log_records));
        let (resource, scope) = (&self.resource, &self.scope);
        let write_request = |out: &mut dyn FnMut(&[u8])| match &json {
            Some(json) => out(json),
            None => write_request(resource, scope, &log_records, out),
        };
        if self.gzip {
            body.extend_from_slice(&GZIP_HEADER);
            let mut crc = flate2::Crc::new();
            let mut stage = std::mem::take(&mut self.stage);
            stage.clear();
            // Into a Vec: cannot fail.
            let _ = self.deflate.reset(body);
            let deflate = &mut self.deflate;
            write_request(&mut |b| {
                stage.extend_from_slice(b);
                if stage.len() >= STAGE {
                    crc.update(&stage);
                    let _ = io::Write::write_all(deflate, &stage);
                    stage.clear();
                }
            });
            crc.update(&stage);
            let _ = io::Write::write_all(deflate, &stage);
            let _ = deflate.try_finish();
            body = std::mem::take(deflate.get_mut());
            body.extend_from_slice(&crc.sum().to_le_bytes());
            body.extend_from_slice(&crc.amount().to_le_bytes());
            self.stage = stage;
        } else {
            write_request(&mut |b| body.extend_from_slice(b));
        }
        self.body = body;
        let mut st = self.shared.lock();
        // Enough for the session to fill until the next batch comes
        // back; a burst's extra records are freed.
        let room = (2 * self.batch).saturating_sub(st.free.len());
        st.free.extend(log_records.into_iter().take(room));
    }
}

/// How many records the collector rejected, from its answer to a request
/// it took (`partial_success`); 0 when it says nothing of it.
fn rejected_in(protocol: Protocol, body: &[u8]) -> u64 {
    match protocol {
        Protocol::Protobuf => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_log_records.max(0) as u64),
        Protocol::Json => {
            // An int64 in the JSON mapping is a string, or a number from a
            // lenient encoder: either is read.
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let n = &v["partialSuccess"]["rejectedLogRecords"];
            n.as_u64()
                .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0)
        }
    }
}

/// The request in OTLP's JSON mapping (`http/json`): the records, written
/// as protobuf, are read back into `opentelemetry-proto`'s messages, whose
/// serde implementation follows the mapping (lowerCamelCase names, 64-bit
/// integers as strings, ids in hex).
fn json_request(
    resource: &Resource,
    scope: &InstrumentationScope,
    log_records: &[Vec<u8>],
) -> Vec<u8> {
    let log_records = log_records
        .iter()
        .map(|r| LogRecord::decode(r.as_slice()).expect("a record this module wrote"))
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope.clone()),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    serde_json::to_vec(&request).expect("messages serde can write")
}

/// What is fed to the compressor at once.
const STAGE: usize = 32 << 10;

/// A gzip member's header (RFC 1952) as flate2 writes it for
/// `Compression::fast()`: deflate, no name, no time, "fastest", unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// Writes the bytes of `ExportLogsServiceRequest { resource_logs:
/// [ResourceLogs { resource, scope_logs: [ScopeLogs { scope, log_records
/// }] }] }` to `out`, in pieces, as prost encodes the request (a test
/// says so): the lengths are added up first, so that each record (already
/// encoded) is written once, where it goes. prost's `encode_to_vec`
/// measures every record again at each level of nesting above it.
fn write_request(
    resource: &Resource,
    scope: &InstrumentationScope,
    log_records: &[Vec<u8>],
    out: &mut dyn FnMut(&[u8]),
) {
    use prost::encoding::{encode_key, encoded_len_varint, message, WireType};
    // ScopeLogs: scope = 1, log_records = 2.
    let mut scope_field = Vec::with_capacity(64);
    message::encode(1, scope, &mut scope_field);
    let scope_logs_len = scope_field.len()
        + log_records
            .iter()
            .map(|r| 1 + encoded_len_varint(r.len() as u64) + r.len())
            .sum::<usize>();
    // ResourceLogs: resource = 1, scope_logs = 2.
    let mut resource_logs = Vec::with_capacity(1024);
    message::encode(1, resource, &mut resource_logs);
    encode_key(2, WireType::LengthDelimited, &mut resource_logs);
    encode::encode_varint(scope_logs_len as u64, &mut resource_logs);
    // ExportLogsServiceRequest: resource_logs = 1.
    let mut head = Vec::with_capacity(resource_logs.len() + 16 + scope_field.len());
    encode_key(1, WireType::LengthDelimited, &mut head);
    encode::encode_varint((resource_logs.len() + scope_logs_len) as u64, &mut head);
    head.extend_from_slice(&resource_logs);
    head.extend_from_slice(&scope_field);
    out(&head);
    let mut record_head = Vec::with_capacity(11);
    for r in log_records {
        record_head.clear();
        encode_key(2, WireType::LengthDelimited, &mut record_head);
        encode::encode_varint(r.len() as u64, &mut record_head);
        out(&record_head);
        out(r);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
    };

    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    };

    use super::*;
    use crate::output::fixtures::{clock, exit_bare, exit_full};

    fn config(url: &str, vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(Some(url), false, &|n| {
            vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
        .unwrap()
        .unwrap()
    }

    fn attrs(r: &LogRecord) -> Vec<(&str, &Value)> {
        r.attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    kv.value.as_ref().unwrap().value.as_ref().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn exit_attributes() {
        let clock = clock();
        let full = exit_record(&Exit::from_record(&exit_full(), &clock), false, 7);
        assert_eq!(full.event_name, "process.exit");
        assert_eq!(
            (full.severity_number, full.severity_text.as_str()),
            (13, "WARN")
        );
        assert_eq!(full.observed_time_unix_nano, 7);
        assert_eq!(full.time_unix_nano, 1_795_000_000 * 1_000_000_000);
        let a = attrs(&full);
        let get = |k: &str| a.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(get("process.pid"), Some(&Value::IntValue(4242)));
        assert_eq!(get("process.parent_pid"), Some(&Value::IntValue(4200)));
        assert_eq!(
            get("process.executable.name"),
            Some(&Value::StringValue("sh".into()))
        );
        assert_eq!(get("process.exit.code"), Some(&Value::IntValue(3)));
        assert_eq!(
            get("process.exit.time"),
            Some(&Value::StringValue("2026-11-18T11:06:40.000000000Z".into()))
        );
        assert_eq!(
            get("process.creation.time"),
            Some(&Value::StringValue("2026-11-18T11:06:38.765432110Z".into()))
        );
        // u64::MAX does not fit an int.
        assert_eq!(
            get("tracer.cgroup_id"),
            Some(&Value::StringValue(u64::MAX.to_string()))
        );
        assert_eq!(get("tracer.signal"), None);
        assert_eq!(get("tracer.late"), None, "only a late record says so");
        assert_eq!(get("process.command_args"), None);
        assert_eq!(
            get("tracer.cpu_runtime_s"),
            Some(&Value::DoubleValue(1.029999999))
        );
        // Every key once.
        let mut keys: Vec<_> = a.iter().map(|(k, _)| *k).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), a.len());

        let bare = exit_record(&Exit::from_record(&exit_bare(), &clock), false, 7);
        assert_eq!(
            (bare.severity_number, bare.severity_text.as_str()),
            (17, "ERROR")
        );
        let a = attrs(&bare);
        let get = |k: &str| a.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(get("process.exit.code"), Some(&Value::IntValue(139)));
        assert_eq!(
            get("tracer.signal"),
            Some(&Value::StringValue("SIGSEGV".into()))
        );
        assert_eq!(get("tracer.core_dumped"), Some(&Value::BoolValue(true)));
        assert_eq!(get("tracer.maxrss_kb"), None, "absent on this kernel");

        let ok = ExitRecord {
            exit_code: 0,
            ..exit_full()
        };
        let ok = exit_record(&Exit::from_record(&ok, &clock), false, 7);
        assert_eq!((ok.severity_number, ok.severity_text.as_str()), (9, "INFO"));

        let late = ExitRecord {
            flags: tracer_common::flags::AT_FREE,
            ..exit_full()
        };
        let late = exit_record(&Exit::from_record(&late, &clock), false, 7);
        let a = attrs(&late);
        let get = |k: &str| a.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert_eq!(get("tracer.late"), Some(&Value::BoolValue(true)));
    }

    use tracer_common::ExitRecord;

    #[test]
    fn iso8601_is_humantimes() {
        let mut ns: u64 = 0;
        let mut got = Vec::new();
        // Up to 2200, leap days and years, ns and second boundaries.
        for step in [
            0u64,
            1,
            999_999_999,
            86_399_999_999_999,
            31_622_400_123_456_789,
        ] {
            for _ in 0..300 {
                ns = ns.wrapping_add(step).wrapping_add(7_777_777_777_777_777)
                    % 7_258_118_400_000_000_000;
                got.clear();
                push_iso8601(&mut got, ns);
                let want = humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns));
                assert_eq!(std::str::from_utf8(&got), Ok(&*want.to_string()), "{ns}");
            }
        }
        got.clear();
        push_iso8601(&mut got, 951_782_400_000_000_000);
        assert_eq!(got, b"2000-02-29T00:00:00.000000000Z");
    }

    /// Every record is written as prost writes the `LogRecord` the
    /// crate's definitions decode from it: same fields, same order, same
    /// bytes; a recycled buffer and scratch leave nothing of the record
    /// before.
    #[test]
    fn records_are_what_prost_makes() {
        let clock = clock();
        let mut buf = Vec::new();
        let mut scratch = Scratch::default();
        let ok = ExitRecord {
            exit_code: 0,
            ..exit_full()
        };
        let mut n = 0;
        for argv in [false, true] {
            for rec in [exit_full(), exit_bare(), ok] {
                let e = Exit::from_record(&rec, &clock);
                fill_exit(&mut buf, &mut scratch, &e, argv, 7 + n);
                let decoded = LogRecord::decode(buf.as_slice()).unwrap();
                assert_eq!(decoded.encode_to_vec(), buf, "{decoded:#?}");
                let mut fresh = Vec::new();
                fill_exit(&mut fresh, &mut Scratch::default(), &e, argv, 7 + n);
                assert_eq!(fresh, buf);
                n += 1;
            }
        }
        let lineage = crate::output::fixtures::lineage();
        let e = Exit::from_record(&exit_full(), &clock).with_lineage(Some(&lineage));
        fill_exit(&mut buf, &mut scratch, &e, true, 9);
        let decoded = LogRecord::decode(buf.as_slice()).unwrap();
        assert_eq!(decoded.encode_to_vec(), buf);
        let a = attrs(&decoded);
        assert!(
            a.iter().any(|(k, _)| *k == "process.command_args"),
            "{decoded:#?}"
        );
        let t = ThreadExitRecord {
            kind: tracer_common::RECORD_THREAD_EXIT,
            pid: 4242,
            tid: 4243,
            time_ns: 5_000_000_000,
            runtime_ns: 1_500_000,
            exit_code: 9,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            present: 0,
            _pad: 0,
            xacct: tracer_common::Xacct::default(),
        };
        fill_thread_exit(&mut buf, &mut scratch, &t, &clock, 3);
        let decoded = LogRecord::decode(buf.as_slice()).unwrap();
        assert_eq!(decoded.encode_to_vec(), buf);
        assert_eq!(decoded.event_name, THREAD_EXIT_EVENT);
        assert_eq!(decoded.severity_text, "ERROR");
    }

    /// A collector that takes everything and counts the requests, and the
    /// CPU time its threads used.
    fn sink() -> (String, Arc<Mutex<u64>>, Arc<Mutex<u64>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(0u64));
        let count = Arc::clone(&requests);
        let cpu = Arc::new(Mutex::new(0u64));
        let cpu_all = Arc::clone(&cpu);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let count = Arc::clone(&count);
                let cpu = Arc::clone(&cpu_all);
                std::thread::spawn(move || {
                    let mut mine = 0;
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 1 << 16];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        while buf.len() < end + 4 + len {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + 4 + len);
                        *count.lock().unwrap() += 1;
                        let now = thread_cpu_ns();
                        *cpu.lock().unwrap() += now - mine;
                        mine = now;
                        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .unwrap();
                    }
                });
            }
        });
        (url, requests, cpu)
    }

    #[test]
    fn requests_are_what_prost_makes() {
        let clock = clock();
        let mut sender = Sender::new(
            config("http://h:1", &[("OTEL_SERVICE_NAME", "svc")]),
            Arc::new(Shared {
                state: Mutex::default(),
                wake: Condvar::new(),
                capacity: 1,
            }),
        );
        let records = [
            exit_record(&Exit::from_record(&exit_full(), &clock), false, 1),
            exit_record(&Exit::from_record(&exit_bare(), &clock), false, 2),
        ];
        let encoded: Vec<Vec<u8>> = records.iter().map(|r| r.encode_to_vec()).collect();
        for n in [0, 1, 2] {
            let want = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(sender.resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(sender.scope.clone()),
                        log_records: records[..n].to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let mut got = Vec::new();
            write_request(&sender.resource, &sender.scope, &encoded[..n], &mut |b| {
                got.extend_from_slice(b)
            });
            assert_eq!(got, want.encode_to_vec(), "{n} records");
            assert_eq!(
                ExportLogsServiceRequest::decode(got.as_slice()).unwrap(),
                want
            );
            // Gzipped, with the compressor of the batch before (twice:
            // a big batch that crosses the staging buffer, then this one).
            assert!(sender.gzip);
            for batch in [vec![encoded[0].clone(); 300], encoded[..n].to_vec()] {
                let k = batch.len();
                sender.encode(batch);
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(sender.body.as_slice())
                    .read_to_end(&mut plain)
                    .unwrap();
                let request = ExportLogsServiceRequest::decode(plain.as_slice()).unwrap();
                assert_eq!(request.resource_logs[0].scope_logs[0].log_records.len(), k);
                if k == n {
                    assert_eq!(plain, got);
                }
            }
        }
    }

    /// `http/json`: the request the collector gets is the protobuf one in
    /// OTLP's JSON mapping (read back with the crate's own serde), 64-bit
    /// integers as strings, the severity as a number; and its answer's
    /// `partialSuccess` is read.
    #[test]
    fn json_requests_say_what_protobuf_ones_say() {
        let clock = clock();
        let shared = || {
            Arc::new(Shared {
                state: Mutex::default(),
                wake: Condvar::new(),
                capacity: 1,
            })
        };
        let vars = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")];
        let mut json = Sender::new(config("http://h:1", &vars), shared());
        let mut protobuf = Sender::new(config("http://h:1", &[]), shared());
        assert_eq!(json.protocol, Protocol::Json);
        let records: Vec<Vec<u8>> = [exit_full(), exit_bare()]
            .iter()
            .map(|r| exit_record(&Exit::from_record(r, &clock), true, 7).encode_to_vec())
            .collect();
        let gunzip = |body: &[u8]| {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut plain)
                .unwrap();
            plain
        };
        json.encode(records.clone());
        protobuf.encode(records);
        let text = gunzip(&json.body);
        let from_json: ExportLogsServiceRequest = serde_json::from_slice(&text).unwrap();
        let from_protobuf =
            ExportLogsServiceRequest::decode(gunzip(&protobuf.body).as_slice()).unwrap();
        assert_eq!(from_json, from_protobuf);
        assert_eq!(
            from_json.resource_logs[0].scope_logs[0].log_records.len(),
            2
        );
        let text = String::from_utf8(text).unwrap();
        for fragment in [
            r#""resourceLogs":[{"resource":{"attributes":[{"key":"service.name","#,
            r#""timeUnixNano":"1795000000000000000""#,
            r#""observedTimeUnixNano":"7""#,
            r#""severityNumber":13,"severityText":"WARN""#,
            r#"{"key":"process.pid","value":{"intValue":"4242"}}"#,
            r#""eventName":"process.exit""#,
        ] {
            assert!(text.contains(fragment), "{fragment} not in {text}");
        }

        let answer = br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"x"}}"#;
        assert_eq!(rejected_in(Protocol::Json, answer), 3);
        let answer = br#"{"partialSuccess":{"rejectedLogRecords":2}}"#;
        assert_eq!(rejected_in(Protocol::Json, answer), 2);
        assert_eq!(rejected_in(Protocol::Json, b"{}"), 0);
        assert_eq!(rejected_in(Protocol::Json, b""), 0);
    }

    #[test]
    fn delivers_everything_in_batches() {
        let (url, requests, _) = sink();
        let mut out =
            Otlp::start(config(&url, &[("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "100")])).unwrap();
        let exit = Exit::from_record(&exit_full(), &clock());
        for _ in 0..1000 {
            out.exit(&exit).unwrap();
        }
        out.deliver().unwrap();
        assert_eq!(out.shared.lock().delivered, 1000);
        assert_eq!(out.lost(), 0);
        assert_eq!(*requests.lock().unwrap(), 10);
    }

    fn thread_cpu_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn process_cpu_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// The loader's cost of exporting: `cargo test --release -p tracer --lib
    /// otlp_cpu_per_million -- --ignored --nocapture`. The session's
    /// thread (build and queue) is timed on its own; the sender's is the
    /// process's CPU time less the session thread's and the in-process
    /// collector's (timed by its own thread).
    #[test]
    #[ignore = "a measurement, not a check: run it in release"]
    fn otlp_cpu_per_million() {
        let (url, _requests, sink_cpu) = sink();
        // Fewer under a profiler: OTLP_BENCH_EXITS=N.
        let n: u64 = std::env::var("OTLP_BENCH_EXITS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let mut out = Otlp::start(config(&url, &[])).unwrap();
        let exit = Exit::from_record(&exit_full(), &clock());
        let process0 = process_cpu_ns();
        let thread0 = thread_cpu_ns();
        for i in 0..n {
            out.exit(&exit).unwrap();
            // Stay below the queue bound, as a session at a sustainable
            // rate does: nothing may be dropped here.
            if i % 256 == 0 {
                while out.shared.lock().queue.len() > 1024 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        let session_ns = thread_cpu_ns() - thread0;
        out.deliver().unwrap();
        let total_ns = process_cpu_ns() - process0;
        assert_eq!(out.shared.lock().delivered, n);
        let sink_ns = *sink_cpu.lock().unwrap();
        let sender_ns = total_ns - session_ns - sink_ns;
        eprintln!(
            "otlp: {n} exits: session thread {:.3} CPU-s, sender {:.3} CPU-s, loader \
             total {:.3} CPU-s (collector {:.3} CPU-s, not counted)",
            session_ns as f64 / 1e9,
            sender_ns as f64 / 1e9,
            (session_ns + sender_ns) as f64 / 1e9,
            sink_ns as f64 / 1e9
        );
    }
}

#[cfg(test)]
mod long_text_tests {
    use opentelemetry_proto::tonic::logs::v1::LogRecord;

    use super::*;

    /// Values and bodies written in place are patched or moved to the
    /// lengths prost gives them, at every size around the one-byte limit.
    #[test]
    fn texts_of_every_length_are_what_prost_makes() {
        let mut buf = Vec::new();
        let mut scratch = Scratch::default();
        for n in (0..300).chain([1000, 20_000]) {
            let text = "x".repeat(n);
            let long_key = "k".repeat(1 + n % 150);
            let mut a = RecordWriter::start(&mut buf, &mut scratch, 1, 9, "INFO", |s| {
                s.extend_from_slice(text.as_bytes())
            });
            a.text("process.linux.cgroup", |s| {
                s.extend_from_slice(text.as_bytes())
            });
            a.text(&long_key, |s| s.extend_from_slice(text.as_bytes()));
            a.text("e", |_| {});
            a.uint("big", u64::MAX);
            a.finish(2, EXIT_EVENT);
            let decoded = LogRecord::decode(buf.as_slice()).unwrap();
            assert_eq!(decoded.encode_to_vec(), buf, "{n}");
            let strings: Vec<_> = decoded
                .attributes
                .iter()
                .map(
                    |kv| match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
                        Value::StringValue(s) => s.clone(),
                        v => panic!("{v:?}"),
                    },
                )
                .collect();
            assert_eq!(
                strings,
                [
                    text.clone(),
                    text.clone(),
                    String::new(),
                    u64::MAX.to_string()
                ]
            );
            assert_eq!(
                decoded.body.unwrap().value,
                Some(Value::StringValue(text.clone()))
            );
            assert_eq!(decoded.attributes[1].key, long_key);
        }
    }

    #[test]
    fn kernel_strings_replace_invalid_utf8() {
        let mut got = Vec::new();
        put_text(&mut got, b"ok\xffz\0junk");
        let mut want = String::new();
        push_text(&mut want, b"ok\xffz\0junk");
        assert_eq!(got, want.as_bytes());
        assert_eq!(want, "ok\u{FFFD}z");
    }
}
