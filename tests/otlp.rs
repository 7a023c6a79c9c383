//! Privileged tests of `--otlp`: a stand-in collector, built here from the
//! OpenTelemetry protobuf definitions (`opentelemetry-proto`), takes the
//! OTLP/HTTP requests on 127.0.0.1, gunzips and decodes them, and the
//! tests check what arrived against the workload, and what the tracer
//! counted when the collector refused or never answered.
//!
//! Need root and BPF; without them they print `skipped: ...` and pass,
//! except under `CI=true` where they fail.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    common::v1::{any_value::Value, KeyValue},
    logs::v1::LogRecord,
};
use prost::Message as _;

const LIMIT: Duration = Duration::from_secs(60);

fn tracer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracer"));
    // The tests say where records go; the environment they run in does not.
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// How the stand-in collector answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 to everything.
    Take,
    /// 429 with `Retry-After: 1` to the first request, 503 to the next
    /// `more`, then 200.
    RefuseFirst { more: usize },
    /// Reads the request and never answers.
    Hang,
}

/// One request the collector took (answered 200).
struct Taken {
    gzip: bool,
    content_type: String,
    request: ExportLogsServiceRequest,
    /// The body, gunzipped, when it was JSON.
    json: Option<Vec<u8>>,
}

struct Collector {
    port: u16,
    taken: Arc<Mutex<Vec<Taken>>>,
    /// When each request came, whatever the answer.
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, a, s) = (taken.clone(), arrivals.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let (t, a, s) = (t.clone(), a.clone(), s.clone());
                std::thread::spawn(move || serve(conn, answer, &t, &a, &s));
            }
        });
        Self {
            port,
            taken,
            arrivals,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every record taken, in order.
    fn records(&self) -> Vec<LogRecord> {
        self.taken
            .lock()
            .unwrap()
            .iter()
            .flat_map(|t| &t.request.resource_logs)
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| s.log_records.clone())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One connection: requests until it closes, answered as told.
fn serve(
    mut conn: TcpStream,
    answer: Answer,
    taken: &Mutex<Vec<Taken>>,
    arrivals: &Mutex<Vec<Instant>>,
    stop: &AtomicBool,
) {
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = Vec::new();
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !fill(&mut conn, &mut buf, stop) {
                return;
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        assert!(head.starts_with("POST /v1/logs HTTP/1.1\r\n"), "{head}");
        let length: usize = header("content-length").unwrap().parse().unwrap();
        while buf.len() < head_end + length {
            if !fill(&mut conn, &mut buf, stop) {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let n = {
            let mut a = arrivals.lock().unwrap();
            a.push(Instant::now());
            a.len()
        };
        let refuse = match answer {
            Answer::Take => None,
            Answer::RefuseFirst { .. } if n == 1 => Some("429 Too Many Requests\r\nRetry-After: 1"),
            Answer::RefuseFirst { more } if n <= 1 + more => Some("503 Service Unavailable"),
            Answer::RefuseFirst { .. } => None,
            Answer::Hang => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        };
        if let Some(status) = refuse {
            let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        let gzip = header("content-encoding").as_deref() == Some("gzip");
        let raw = if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .read_to_end(&mut out)
                .expect("a gzip body");
            out
        } else {
            body
        };
        // OTLP/HTTP's two encodings, told by the Content-Type; the answer
        // in the same one. The JSON is read with the crate's own serde
        // implementation of the OTLP JSON mapping.
        let content_type = header("content-type").unwrap_or_default();
        let (request, reply, json) = if content_type == "application/json" {
            let request: ExportLogsServiceRequest =
                serde_json::from_slice(&raw).expect("an OTLP/JSON request");
            (request, b"{}".to_vec(), Some(raw))
        } else {
            let request =
                ExportLogsServiceRequest::decode(raw.as_slice()).expect("an OTLP request");
            let reply = ExportLogsServiceResponse::default().encode_to_vec();
            (request, reply, None)
        };
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        taken.lock().unwrap().push(Taken {
            gzip,
            content_type,
            request,
            json,
        });
        let _ = conn.write_all(&reply);
    }
}

/// Reads more into `buf`; false at the end of the stream or the stop.
fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> bool {
    let mut chunk = [0u8; 65536];
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match conn.read(&mut chunk) {
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

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn int(r: &LogRecord, key: &str) -> i64 {
    match attr(&r.attributes, key) {
        Some(Value::IntValue(v)) => *v,
        other => panic!("{key}: {other:?} in {r:?}"),
    }
}

fn string<'a>(attrs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(attrs, key) {
        Some(Value::StringValue(v)) => v,
        other => panic!("{key}: {other:?}"),
    }
}

fn time(r: &LogRecord, key: &str) -> SystemTime {
    humantime::parse_rfc3339(string(&r.attributes, key))
        .unwrap_or_else(|e| panic!("{key} is not ISO 8601: {e}"))
}

/// The `output_lost` of a JSON recording's summary line.
fn output_lost(json: &std::path::Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(json).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "summary", "{text}");
    last["output_lost"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn exits_in(json: &std::path::Path) -> usize {
    std::fs::read_to_string(json)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(r#"{"event":"exit""#))
        .count()
}

#[test]
fn otlp_records_describe_the_workload() {
    records_describe_the_workload(
        "otlp_records_describe_the_workload",
        "http/protobuf",
        "application/x-protobuf",
    );
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`: the same records, in OTLP's
/// JSON mapping, which the collector reads with `opentelemetry-proto`'s
/// serde implementation.
#[test]
fn otlp_http_json_records_describe_the_workload() {
    records_describe_the_workload(
        "otlp_http_json_records_describe_the_workload",
        "http/json",
        "application/json",
    );
}

/// Parses each JSON request with the protobuf project's own JSON parser
/// (Python's `google.protobuf.json_format`, strict: an unknown field is an
/// error) into the OpenTelemetry Python package's `ExportLogsServiceRequest`
/// (`opentelemetry-proto` on PyPI, which `.ci/run` installs): a reader
/// that shares no code with the tracer's serde writer. Returns the records
/// it read; `None` (said, or a failure under CI) without Python or the
/// package.
fn records_python_reads(name: &str, bodies: &[Vec<u8>]) -> Option<usize> {
    const SCRIPT: &str = "\
import sys
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
n = 0
for path in sys.argv[1:]:
    req = logs_service_pb2.ExportLogsServiceRequest()
    json_format.Parse(open(path, 'rb').read(), req)
    n += sum(len(s.log_records) for r in req.resource_logs for s in r.scope_logs)
print(n)
";
    let missing = Command::new("python3")
        .args(["-c", "import opentelemetry.proto, google.protobuf"])
        .output()
        .map_or(true, |o| !o.status.success());
    if missing {
        skip_or_fail(
            &format!("part of {name}"),
            "needs python3 with PyPI's opentelemetry-proto to read the JSON independently",
        );
        return None;
    }
    let dir = TempDir::new("otlp-json");
    let paths: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.join(&format!("request{i}.json"));
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect();
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .args(&paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    Some(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// A workload under `tracer run --otlp` with `protocol`: every request
/// has the resource and `content_type`, and every process one record that
/// says how it ended.
fn records_describe_the_workload(name: &str, protocol: &str, content_type: &str) {
    if !require_privileges(name, BPF_ONLY) {
        return;
    }
    let collector = Collector::start(Answer::Take);
    let before = SystemTime::now() - Duration::from_secs(1);
    // The shell says its pid; exit 3 from a subshell, a shell killed by
    // SIGKILL, a clean /bin/true.
    let out = run_with_timeout(
        tracer()
            .args(["run", "--otlp", &collector.url()])
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=test%2Fotlp",
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "echo $$; /bin/true; (exit 3); /bin/sh -c 'kill -KILL $$'; exit 0",
            ]),
        LIMIT,
    );
    let after = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let root: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    let taken = collector.taken.lock().unwrap();
    assert!(
        !taken.is_empty(),
        "nothing arrived: {}",
        describe_output(&out)
    );
    for t in taken.iter() {
        assert!(t.gzip, "requests are gzipped");
        assert_eq!(t.content_type, content_type);
        let resource = t.request.resource_logs[0].resource.as_ref().unwrap();
        assert_eq!(string(&resource.attributes, "service.name"), "tracer");
        assert_eq!(
            string(&resource.attributes, "service.version"),
            env!("CARGO_PKG_VERSION")
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(string(&resource.attributes, "host.name"), host.trim());
        assert_eq!(
            string(&resource.attributes, "deployment.environment.name"),
            "test/otlp"
        );
    }
    let bodies: Vec<Vec<u8>> = taken.iter().filter_map(|t| t.json.clone()).collect();
    drop(taken);

    let records = collector.records();
    if content_type == "application/json" {
        if let Some(n) = records_python_reads(name, &bodies) {
            assert_eq!(
                n,
                records.len(),
                "Python's protobuf JSON parser read them all"
            );
        }
    }
    let mut codes: Vec<(String, i64)> = records
        .iter()
        .map(|r| {
            (
                string(&r.attributes, "process.executable.name").to_string(),
                int(r, "process.exit.code"),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            ("sh".to_string(), 0),
            ("sh".to_string(), 3),
            ("sh".to_string(), 137),
            ("true".to_string(), 0)
        ],
        "one record per process, none twice: {records:#?}"
    );
    for r in &records {
        assert_eq!(r.event_name, "process.exit");
        assert!(attr(&r.attributes, "process.command_args").is_none());
        assert_eq!(int(r, "process.real_user.id"), 0);
        let pid = int(r, "process.pid");
        if pid != root {
            assert_eq!(int(r, "process.parent_pid"), root, "{r:?}");
        }
        let (created, exited) = (
            time(r, "process.creation.time"),
            time(r, "process.exit.time"),
        );
        assert!(
            before <= created && created <= exited && exited <= after,
            "{r:?}"
        );
        let exit_ns = exited.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(u128::from(r.time_unix_nano), exit_ns.as_nanos());
        let (severity, text) = match int(r, "process.exit.code") {
            0 => (9, "INFO"),
            137 => {
                assert_eq!(string(&r.attributes, "tracer.signal"), "SIGKILL");
                assert_eq!(int(r, "tracer.exit_code"), 9);
                (17, "ERROR")
            }
            _ => {
                assert!(attr(&r.attributes, "tracer.signal").is_none());
                (13, "WARN")
            }
        };
        assert_eq!(
            (r.severity_number, r.severity_text.as_str()),
            (severity, text)
        );
        assert!(attr(&r.attributes, "tracer.elapsed_s").is_some());
        assert!(attr(&r.attributes, "tracer.cgroup_id").is_some());
    }
}

#[test]
fn otlp_retries_a_refusing_collector_and_loses_nothing() {
    const NAME: &str = "otlp_retries_a_refusing_collector_and_loses_nothing";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("otlp-retry");
    let json = dir.join("rec.json");
    let collector = Collector::start(Answer::RefuseFirst { more: 2 });
    // 429 (Retry-After: 1), 503, 503, then 200: about 1.3 s of refusals,
    // while the command runs.
    let out = run_with_timeout(
        tracer()
            .args(["run", "--otlp", &collector.url(), "--json"])
            .arg(&json)
            .env("OTEL_BLRP_SCHEDULE_DELAY", "50")
            .args([
                "--",
                "/bin/sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done; sleep 2",
            ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let arrivals = collector.arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= 4, "{arrivals:?}");
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured: {:?}",
        arrivals[1] - arrivals[0]
    );
    let records = collector.records();
    let mut pids: Vec<i64> = records.iter().map(|r| int(r, "process.pid")).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(
        (records.len(), pids.len()),
        (exits_in(&json), exits_in(&json)),
        "every exit delivered once: {}",
        describe_output(&out)
    );
    assert!(
        records.len() >= 11,
        "the shell and 10 true at least: {records:#?}"
    );
    assert!(output_lost(&json).is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retrying") && err.contains("works again"),
        "{err}"
    );
}

/// A collector that takes the connection and never answers, and a port
/// where nothing listens: the session still ends within the drain
/// deadline, and what was not delivered is counted under `otlp`.
#[test]
fn otlp_without_a_collector_counts_the_loss_and_stops_on_time() {
    const NAME: &str = "otlp_without_a_collector_counts_the_loss_and_stops_on_time";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let hanging = Collector::start(Answer::Hang);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    for (what, url, queue) in [
        ("hanging", hanging.url(), None),
        ("closed", closed.clone(), None),
        // A small queue: most are dropped while the sender waits.
        ("hanging, queue of 4", hanging.url(), Some("4")),
    ] {
        let dir = TempDir::new("otlp-gone");
        let json = dir.join("rec.json");
        let mut cmd = tracer();
        cmd.args(["run", "--otlp", &url, "--json"])
            .arg(&json)
            .env("OTEL_BLRP_SCHEDULE_DELAY", "50")
            .args([
                "--",
                "/bin/sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do /bin/true; done; sleep 0.5",
            ]);
        if let Some(q) = queue {
            cmd.env("OTEL_BLRP_MAX_QUEUE_SIZE", q);
        }
        let start = Instant::now();
        let out = run_with_timeout(&mut cmd, LIMIT);
        let took = start.elapsed();
        // The command's 0.5 s, the drain's 2 s, and room for a loaded
        // machine; the export timeout (10 s) is not waited for.
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        assert_eq!(
            out.status.code(),
            Some(125),
            "{what}: a failed output is the tracer's failure: {}",
            describe_output(&out)
        );
        let exits = exits_in(&json) as u64;
        assert_eq!(exits, 17, "{what}: sh, 15 true, sleep");
        assert_eq!(
            output_lost(&json),
            BTreeMap::from([("otlp".to_string(), exits)]),
            "{what}: every record counted lost, under otlp: {}",
            describe_output(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{exits} of {exits} records not delivered")),
            "{what}: {err}"
        );
        if queue.is_some() {
            assert!(err.contains("dropped with the queue full"), "{what}: {err}");
        }
    }
}
