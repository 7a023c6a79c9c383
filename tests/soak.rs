//! A day of a host agent, simulated in a few minutes (issue 15): a million
//! process exits recorded by `tracer run` into an acct file that rotates
//! every 100,000 records and sent over OTLP to a collector that is down a
//! third of the time, in periods (answering 503 in one, its port closed in
//! the next). Nothing may be lost beyond what the session counts: for each
//! output, what it holds (the rotated files; what the collector took) plus
//! what it counted lost, plus what the session counted lost before the
//! outputs, is exactly the number of processes that died.
//!
//! Needs root, BPF and a C compiler; without them it prints `skipped: ...`
//! and passes, except under `CI=true` where it fails. `SOAK_EXITS=N` runs
//! it with N exits instead of 1,000,000 (rotation every N/10).
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::*;
use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;

/// One up-and-down cycle of the collector: up for its first two thirds.
const CYCLE: Duration = Duration::from_millis(3000);
const UP: Duration = Duration::from_millis(2000);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Up,
    /// Answers every request 503.
    Refusing,
    /// Nothing listens; connections that were open are closed.
    Closed,
}

struct Collector {
    addr: SocketAddr,
    start: Instant,
    stop: Arc<AtomicBool>,
    /// Records taken (answered 200).
    records: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    /// (process.pid, time_unix_nano) of every record taken: none twice.
    seen: Arc<Mutex<HashSet<(i64, u64)>>>,
    duplicates: Arc<AtomicU64>,
    /// Every 97th request decoded in full with the protobuf definitions.
    decoded: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
}

impl Collector {
    fn phase_at(start: Instant, now: Instant) -> Phase {
        let t = now.duration_since(start);
        let cycle = t.as_millis() / CYCLE.as_millis();
        if t.as_millis() % CYCLE.as_millis() < UP.as_millis() {
            Phase::Up
        } else if cycle.is_multiple_of(2) {
            Phase::Refusing
        } else {
            Phase::Closed
        }
    }

    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Collector {
            addr,
            start: Instant::now(),
            stop: Arc::default(),
            records: Arc::default(),
            requests: Arc::default(),
            refused: Arc::default(),
            seen: Arc::default(),
            duplicates: Arc::default(),
            decoded: Arc::default(),
        };
        let shared = c.shared();
        std::thread::spawn(move || shared.accept(Some(listener)));
        c
    }

    fn shared(&self) -> Shared {
        Shared {
            addr: self.addr,
            start: self.start,
            stop: self.stop.clone(),
            records: self.records.clone(),
            requests: self.requests.clone(),
            refused: self.refused.clone(),
            seen: self.seen.clone(),
            duplicates: self.duplicates.clone(),
            decoded: self.decoded.clone(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Shared {
    addr: SocketAddr,
    start: Instant,
    stop: Arc<AtomicBool>,
    records: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    seen: Arc<Mutex<HashSet<(i64, u64)>>>,
    duplicates: Arc<AtomicU64>,
    decoded: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
}

impl Shared {
    fn phase(&self) -> Phase {
        Collector::phase_at(self.start, Instant::now())
    }

    /// Accepts while the port is open; closes it in the closed phases and
    /// binds it again after.
    fn accept(self, mut listener: Option<TcpListener>) {
        while !self.stop.load(Ordering::SeqCst) {
            if self.phase() == Phase::Closed {
                listener = None;
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let l = match &listener {
                Some(l) => l,
                None => match TcpListener::bind(self.addr) {
                    Ok(l) => listener.insert(l),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                },
            };
            l.set_nonblocking(true).unwrap();
            match l.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let s = self.clone();
                    std::thread::spawn(move || s.serve(conn));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Requests on one connection, answered as the phase says.
    fn serve(self, mut conn: TcpStream) {
        conn.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if !self.fill(&mut conn, &mut buf, &mut chunk) {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            assert!(head.starts_with("post /v1/logs http/1.1\r\n"), "{head}");
            assert!(
                !head.contains("content-encoding"),
                "the soak asks for no compression: {head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            while buf.len() < head_end + len {
                if !self.fill(&mut conn, &mut buf, &mut chunk) {
                    return;
                }
            }
            let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
            let n = self.requests.fetch_add(1, Ordering::SeqCst);
            match self.phase() {
                // Gone before answering: the tracer cannot know whether
                // it arrived, and sends it again.
                Phase::Closed => return,
                Phase::Refusing => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                    if conn
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                Phase::Up => {}
            }
            self.take(&body, n);
            if conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
    }

    /// Reads more; false at the end of the stream, the stop, or a closed
    /// phase (the connection is dropped then).
    fn fill(&self, conn: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> bool {
        loop {
            if self.stop.load(Ordering::SeqCst) || self.phase() == Phase::Closed {
                return false;
            }
            match conn.read(chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return false,
            }
        }
    }

    /// Counts the records of a request taken, by walking the protobuf
    /// wire format (a full decode of a million records is minutes in a
    /// debug build); every 97th request is also decoded in full.
    fn take(&self, body: &[u8], n: u64) {
        let mut keys = Vec::new();
        for (f, rl) in fields(body) {
            assert_eq!(f, 1, "ExportLogsServiceRequest.resource_logs");
            for (f, sl) in fields(rl.bytes()) {
                if f != 2 {
                    continue; // the resource
                }
                for (f, r) in fields(sl.bytes()) {
                    if f == 2 {
                        keys.push(record_key(r.bytes()));
                    }
                }
            }
        }
        self.records.fetch_add(keys.len() as u64, Ordering::SeqCst);
        let mut seen = self.seen.lock().unwrap();
        for k in keys {
            if !seen.insert(k) {
                self.duplicates.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(seen);
        if n.is_multiple_of(97) {
            let request = ExportLogsServiceRequest::decode(body).expect("an OTLP request");
            self.decoded.lock().unwrap().push(request);
        }
    }
}

/// A field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Wire<'a> {
    fn bytes(&self) -> &'a [u8] {
        match self {
            Wire::Bytes(b) => b,
            _ => panic!("not a length-delimited field"),
        }
    }
}

fn varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = buf[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("a varint longer than 10 bytes");
}

/// The fields of a protobuf message, in order.
fn fields(buf: &[u8]) -> impl Iterator<Item = (u64, Wire<'_>)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let key = varint(buf, &mut at);
        let value = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut at)),
            1 => {
                at += 8;
                Wire::Fixed64(u64::from_le_bytes(buf[at - 8..at].try_into().unwrap()))
            }
            2 => {
                let len = varint(buf, &mut at) as usize;
                at += len;
                Wire::Bytes(&buf[at - len..at])
            }
            5 => {
                at += 4;
                Wire::Fixed32
            }
            t => panic!("wire type {t}"),
        };
        Some((key >> 3, value))
    })
}

/// (process.pid, time_unix_nano) of a LogRecord.
fn record_key(r: &[u8]) -> (i64, u64) {
    let (mut pid, mut time) = (None, None);
    for (f, v) in fields(r) {
        match (f, v) {
            // time_unix_nano
            (1, Wire::Fixed64(t)) => time = Some(t),
            // attributes: KeyValue { key = 1, value = 2: AnyValue { int_value = 3 } }
            (6, Wire::Bytes(kv)) if pid.is_none() => {
                let mut key = &b""[..];
                let mut value = None;
                for (f, v) in fields(kv) {
                    match f {
                        1 => key = v.bytes(),
                        2 => {
                            for (f, v) in fields(v.bytes()) {
                                if let (3, Wire::Varint(i)) = (f, v) {
                                    value = Some(i as i64);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if key == b"process.pid" {
                    pid = value;
                }
            }
            _ => {}
        }
    }
    (pid.expect("a process.pid attribute"), time.expect("a time"))
}

/// FILE.n ... FILE.1, FILE: oldest first, as long as they follow each other.
fn rotated(base: &Path) -> Vec<PathBuf> {
    let mut files = vec![base.to_path_buf()];
    for n in 1.. {
        let p = PathBuf::from(format!("{}.{n}", base.display()));
        if !p.exists() {
            break;
        }
        files.insert(0, p);
    }
    files
}

/// The N of `tracer: output NAME failed, N lines or records not written`.
fn output_lost(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("tracer: output {name} failed, ")))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("cannot read the loss of {name}: {rest}"))
        })
        .sum()
}

/// (written, lost) of the summary line.
fn summary(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" records written, "))
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}"));
    let rest = line.strip_prefix("tracer: ").unwrap();
    let (written, rest) = rest.split_once(" records written, ").unwrap();
    let lost = rest.split_whitespace().next().unwrap();
    (written.parse().unwrap(), lost.parse().unwrap())
}

#[test]
fn soak_a_million_exits_with_a_collector_down_a_third_of_the_time() {
    const NAME: &str = "soak_a_million_exits_with_a_collector_down_a_third_of_the_time";
    if !require_privileges(NAME, BPF_CC) {
        return;
    }
    let exits: u64 = std::env::var("SOAK_EXITS")
        .ok()
        .map_or(1_000_000, |v| v.parse().expect("SOAK_EXITS: a number"));
    // The children and the churn itself.
    let expected = exits + 1;
    let per_file = exits / 10;
    let dir = TempDir::new("soak");
    let churn = compile_c(&dir, "soak_churn");
    let acct = dir.join("soak.acct");
    let collector = Collector::start();

    let start = Instant::now();
    let mut cmd = tracer();
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    let out = run_with_timeout(
        cmd.args(["run", "--acct-file"])
            .arg(&acct)
            .args(["--rotate-size", &(per_file * 64).to_string()])
            .args(["--rotate-keep", "1000", "--otlp", &collector.url()])
            // The debug build the tests run falls behind the churn now and
            // then; with the default ring it lost exits with the ring full,
            // and then `run` took a later, unrelated process that reused the
            // pid of a child whose exit was lost for one of the tree's (a
            // `cat` of another shell): one record more than the tree has.
            .args(["--ring-size", "64M"])
            // The stand-in collector counts what it takes without a gzip
            // decoder (a debug build inflates a gigabyte slowly); gzip has
            // its own tests in tests/otlp.rs.
            .env("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
            .arg("--")
            .arg(&churn)
            .arg(exits.to_string()),
        Duration::from_secs(1200),
    );
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let what = describe_output(&out);
    eprintln!("{NAME}: {exits} exits in {took:?}\n{stderr}");

    // Only the churn's processes: no process that reused one of their
    // pids was taken for one of them.
    for f in &rotated(&acct) {
        let data = std::fs::read(f).unwrap();
        for r in data.chunks_exact(64) {
            let comm = &r[48..64];
            let comm = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(16)];
            assert_eq!(
                comm,
                b"soak_churn",
                "{}: a record of another process: pid {} ppid {}",
                f.display(),
                u32::from_le_bytes(r[16..20].try_into().unwrap()),
                u32::from_le_bytes(r[20..24].try_into().unwrap())
            );
        }
    }

    // The collector was down about a third of the session, in several
    // periods of each kind.
    let cycles = took.as_millis() / CYCLE.as_millis();
    assert!(
        exits < 1_000_000 || cycles >= 6,
        "the session lasted {took:?}: too few down periods"
    );
    let refused = collector.refused.load(Ordering::SeqCst);
    assert!(
        exits < 1_000_000 || refused > 0,
        "no request arrived while the collector refused:\n{what}"
    );

    let (written, lost) = summary(&stderr);
    let otlp_lost = output_lost(&stderr, "otlp");
    let acct_lost = output_lost(&stderr, &acct.display().to_string());
    assert_eq!(
        written + lost,
        expected,
        "every exit written or counted lost by the session:\n{what}"
    );
    // 125: an output (otlp) failed, and said how much it lost.
    let want_status = if otlp_lost + acct_lost > 0 { 125 } else { 0 };
    assert_eq!(out.status.code(), Some(want_status), "{what}");

    // The acct file: rotated every `per_file` records, exactly, and every
    // record the session wrote is in one of the files.
    let files = rotated(&acct);
    let counts: Vec<u64> = files
        .iter()
        .map(|f| {
            let len = std::fs::metadata(f).unwrap().len();
            assert_eq!(len % 64, 0, "{}: whole records only", f.display());
            len / 64
        })
        .collect();
    let in_files: u64 = counts.iter().sum();
    assert_eq!(
        in_files + acct_lost,
        written,
        "acct records in {} files ({counts:?}) + counted lost vs written\n{what}",
        files.len()
    );
    if lost == 0 && acct_lost == 0 {
        assert_eq!(
            files.len() as u64,
            expected.div_ceil(per_file),
            "{counts:?}"
        );
    }
    for (f, n) in files.iter().zip(&counts).rev().skip(1) {
        assert_eq!(*n, per_file, "{} holds {n} records", f.display());
    }

    // OTLP: what the collector took, none twice, plus what the output
    // counted lost, is what the session wrote.
    let received = collector.records.load(Ordering::SeqCst);
    let duplicates = collector.duplicates.load(Ordering::SeqCst);
    assert_eq!(duplicates, 0, "records delivered twice");
    assert_eq!(
        received + otlp_lost,
        written,
        "OTLP: {received} taken + {otlp_lost} counted lost vs {written} written\n{what}"
    );
    assert_eq!(collector.seen.lock().unwrap().len() as u64, received);
    // What was decoded in full is what an exit of the churn looks like.
    let decoded = collector.decoded.lock().unwrap();
    assert!(!decoded.is_empty());
    for r in decoded
        .iter()
        .flat_map(|q| &q.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
    {
        assert_eq!(r.event_name, "process.exit");
        let name = r
            .attributes
            .iter()
            .find(|kv| kv.key == "process.executable.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref());
        assert!(
            matches!(name, Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) if s == "soak_churn"),
            "{r:?}"
        );
    }
    eprintln!(
        "{NAME}: {expected} exits; session: {written} written, {lost} lost; acct: {in_files} in {} \
         files, {acct_lost} lost; otlp: {received} taken by the collector in {} requests \
         ({refused} refused while it was refusing), {otlp_lost} counted lost",
        files.len(),
        collector.requests.load(Ordering::SeqCst)
    );
}
