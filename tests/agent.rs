//! Privileged tests of `tracer record` as a host agent: files that live for
//! months (SIGHUP reopens them after logrotate moved them; `--rotate-size`
//! rotates them itself) lose no record and hold only whole ones, and
//! `--metrics` tells a real Prometheus server the same counts the session
//! wrote; atop reads a `--acct-file` as it reads the kernel's.
//!
//! Need root and BPF (and Debian's `prometheus` for the metrics test, the
//! `atop` binary for atop's);
//! without them they print `skipped: ...` and pass, except under `CI=true`
//! where they fail.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::{start_tracer as start, *};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn signal(child: &ChildGuard, sig: i32) {
    // SAFETY: kill has no memory preconditions; the child is not reaped.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, sig) }, 0);
}

/// Stops `tracer record` with SIGTERM; returns its stderr and the number
/// of records its summary line says it wrote.
fn stop(mut child: ChildGuard, all: std::thread::JoinHandle<String>) -> (String, u64) {
    signal(&child, libc::SIGTERM);
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("tracer did not stop");
    let stderr = all.join().unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let written = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("tracer: ")?
                .split_once(" records written")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}"));
    (stderr, written)
}

/// Whole acct v3 records in `path` (the size must be a multiple of 64).
fn acct_records(path: &Path) -> u64 {
    let recs = read_records(path);
    assert!(
        recs.iter().all(|r| r.version == 3),
        "{}: not all v3",
        path.display()
    );
    recs.len() as u64
}

/// `exit` lines of a JSON recording, every line whole and parsed.
fn json_exits(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a partial line",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?} in {}", path.display()))
        })
        .filter(|v| v["event"] == "exit")
        .count() as u64
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sighup_reopens_files_moved_away_and_loses_nothing() {
    const NAME: &str = "sighup_reopens_files_moved_away_and_loses_nothing";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("sighup");
    let acct = dir.join("rec.acct");
    let json = dir.join("rec.json");
    let _churn = churn();
    let (child, _lines, all) = start(
        &[
            "record",
            "--acct-file",
            acct.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(800));
    // logrotate's create mode: move the files away, then SIGHUP.
    let (acct_old, json_old) = (dir.join("rec.acct.1"), dir.join("rec.json.1"));
    std::fs::rename(&acct, &acct_old).unwrap();
    std::fs::rename(&json, &json_old).unwrap();
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(800));
    let (stderr, written) = stop(child, all);

    assert!(
        acct.exists() && json.exists(),
        "SIGHUP made no new files:\n{stderr}"
    );
    assert_eq!((mode_of(&acct), mode_of(&json)), (0o600, 0o600));
    let (a_old, a_new) = (acct_records(&acct_old), acct_records(&acct));
    let (j_old, j_new) = (json_exits(&json_old), json_exits(&json));
    assert!(
        a_old > 0 && a_new > 0,
        "records before and after SIGHUP: {a_old}, {a_new}"
    );
    assert!(
        j_old > 0 && j_new > 0,
        "exits before and after SIGHUP: {j_old}, {j_new}"
    );
    assert_eq!(
        a_old + a_new,
        written,
        "acct records in both files vs the summary\n{stderr}"
    );
    assert_eq!(
        j_old + j_new,
        written,
        "JSON exits in both files vs the summary\n{stderr}"
    );
    // The summary line of the JSON output went to the new file.
    let last = std::fs::read_to_string(&json).unwrap();
    assert!(last
        .lines()
        .last()
        .unwrap()
        .contains("\"event\":\"summary\""));
}

/// FILE, FILE.1, FILE.2... as long as they follow each other.
fn numbered(base: &Path) -> Vec<PathBuf> {
    let mut files = vec![base.to_path_buf()];
    for n in 1.. {
        let p = PathBuf::from(format!("{}.{n}", base.display()));
        if !p.exists() {
            break;
        }
        files.push(p);
    }
    files
}

/// `tracer record` with `args` and `file` for a while, with processes
/// dying; the files it made, each at most `size` bytes, and the summary.
fn rotating_session(args: &[&str], file: &Path, size: u64) -> (Vec<PathBuf>, String, u64) {
    let _churn = churn();
    let (child, _lines, all) = start(args, &[file]);
    std::thread::sleep(Duration::from_millis(1500));
    let (stderr, written) = stop(child, all);
    let files = numbered(file);
    assert!(
        files.len() >= 3,
        "{written} records made only {} files:\n{stderr}",
        files.len()
    );
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= size, "{} is {len} bytes, over {size}", f.display());
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
    }
    (files, stderr, written)
}

#[test]
fn rotate_size_keeps_whole_records_and_every_one() {
    const NAME: &str = "rotate_size_keeps_whole_records_and_every_one";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("rotate");
    let acct = dir.join("rec.acct");
    let (files, stderr, written) = rotating_session(
        &[
            "record",
            "--rotate-size",
            "4K",
            "--rotate-keep",
            "1000",
            "--acct-file",
        ],
        &acct,
        4 << 10,
    );
    let total: u64 = files.iter().map(|f| acct_records(f)).sum();
    assert_eq!(
        total, written,
        "acct records in all files vs the summary\n{stderr}"
    );

    let json = dir.join("rec.json");
    let (files, stderr, written) = rotating_session(
        &[
            "record",
            "--rotate-size",
            "64K",
            "--rotate-keep",
            "1000",
            "--json",
        ],
        &json,
        64 << 10,
    );
    let total: u64 = files.iter().map(|f| json_exits(f)).sum();
    assert_eq!(
        total, written,
        "JSON exits in all files vs the summary\n{stderr}"
    );

    // --rotate-keep 2: FILE, FILE.1 and FILE.2 only, the oldest removed.
    let kept = dir.join("kept.acct");
    let (files, _, _) = rotating_session(
        &[
            "record",
            "--rotate-size",
            "4K",
            "--rotate-keep",
            "2",
            "--acct-file",
        ],
        &kept,
        4 << 10,
    );
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(!dir.join("kept.acct.3").exists());
}

// ---------------------------------------------------------------------------
// Prometheus.
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET on 127.0.0.1:`port`; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

fn url_encoded(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query with one result, through Prometheus's
/// HTTP API; `None` while it has none.
fn query(port: u16, q: &str) -> Option<f64> {
    let body = http_get(port, &format!("/api/v1/query?query={}", url_encoded(q)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `/usr/bin/<name>`, or `/usr/local/bin/<name>` where `.ci/run` puts a
/// binary it takes out of its package.
fn installed(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/local/bin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

#[test]
fn prometheus_scrapes_the_counts_the_session_wrote() {
    const NAME: &str = "prometheus_scrapes_the_counts_the_session_wrote";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let Some(prometheus) = installed("prometheus") else {
        return skip_or_fail(NAME, "needs prometheus (Debian package `prometheus`)");
    };
    let dir = TempDir::new("prometheus");
    let acct = dir.join("run.acct");
    let metrics_port = free_port();
    // `tracer run` records only the command's tree: once the command
    // waits on its standard input, the counts stand still.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done; (exit 3); \
                  /bin/sh -c 'kill -KILL $$'; read line";
    let child = tracer()
        .args([
            "run",
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
            "--acct-file",
        ])
        .arg(&acct)
        .args(["--", "/bin/sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tracer run");
    let mut tracer_run = ChildGuard(child);
    let mut stdin = tracer_run.0.stdin.take().unwrap();
    let (_lines, stderr) = line_reader(tracer_run.0.stderr.take().unwrap());

    let prom_port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: tracer\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let prom = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("starting prometheus");
    let _prom = ChildGuard(prom);

    wait_for(
        "the tracer target to be up in prometheus",
        Duration::from_secs(60),
        || query(prom_port, "up{job=\"tracer\"}") == Some(1.0),
    );
    // The command's exits are in the file once it waits on its input; the
    // scraped counter must come to the same number.
    let mut in_file = 0;
    let written_q = format!(
        "tracer_records_written_total{{output=\"{}\"}}",
        acct.display()
    );
    wait_for(
        "prometheus to see every record in the file",
        Duration::from_secs(30),
        || {
            in_file = acct_records(&acct);
            in_file >= 12 && query(prom_port, &written_q) == Some(in_file as f64)
        },
    );
    let total_exits = query(prom_port, "sum(tracer_exits_total)");
    assert_eq!(
        total_exits,
        Some(in_file as f64),
        "exits by result add up to the records written"
    );
    let killed = query(
        prom_port,
        "tracer_exits_total{result=\"signaled\",signal=\"SIGKILL\"}",
    );
    assert_eq!(killed, Some(1.0), "the one process killed by SIGKILL");
    let failed = query(prom_port, "tracer_exits_total{result=\"failed\"}");
    assert_eq!(failed, Some(1.0), "the one (exit 3)");
    let lost = query(prom_port, "sum(tracer_records_lost_total)");
    assert_eq!(lost, Some(0.0));
    assert_eq!(query(prom_port, "tracer_build_info"), Some(1.0));
    assert_eq!(
        query(prom_port, "tracer_ring_size_bytes"),
        Some(f64::from(2u32 << 20))
    );
    assert!(query(prom_port, "tracer_ring_fill_bytes").is_some_and(|f| f < f64::from(2u32 << 20)));

    // Let the command end: the summary counts one more (the shell).
    writeln!(stdin).unwrap();
    drop(stdin);
    let status = tracer_run
        .wait_timeout(Duration::from_secs(30))
        .expect("tracer run did not end");
    let stderr = stderr.join().unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("tracer: {} records written, 0 lost", in_file + 1)),
        "{stderr}"
    );
    assert_eq!(acct_records(&acct), in_file + 1);
}

#[test]
fn notes_one_line_by_default_none_with_q_reasons_with_v() {
    const NAME: &str = "notes_one_line_by_default_none_with_q_reasons_with_v";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let stderr_of = |flags: &[&str]| -> Vec<String> {
        let out = run_with_timeout(
            tracer()
                .args(flags)
                .args(["run", "--attach", "auto", "--", "/bin/true"]),
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let default = stderr_of(&[]);
    assert_eq!(
        default.len(),
        2,
        "a start note and the summary: {default:#?}"
    );
    assert_eq!(default[0], "tracer: recording", "{default:#?}");
    assert!(
        default[1].contains("records written, 0 lost"),
        "{default:#?}"
    );
    let quiet = stderr_of(&["-q"]);
    assert!(
        quiet.is_empty(),
        "-q with nothing lost says nothing: {quiet:#?}"
    );
    let verbose = stderr_of(&["-v"]);
    // Every attach point tried before the one in use says why it was not.
    let tried = [
        "fentry/acct_process",
        "kprobe/acct_process",
        "tp_btf/sched_process_exit",
    ];
    let used = tried
        .iter()
        .position(|t| {
            verbose
                .iter()
                .any(|l| *l == format!("tracer: exit records from {t}"))
        })
        .expect("-v names the exit hook");
    for refused in &tried[..used] {
        assert!(
            verbose
                .iter()
                .any(|l| l.starts_with(&format!("tracer: {refused} not available: "))),
            "-v says why not {refused}: {verbose:#?}"
        );
    }
}

/// `ATOPACCT=<file> atop` reads a `--acct-file` as it reads the kernel's
/// accounting file: a process that ends while atop samples shows in its
/// parseable output as exited (`E`), with its name, exit code and parent.
/// atop reads only records written after it starts, and needs one record
/// in the file to tell its format: the test waits for both. `.ci/run`
/// puts atop's binary (not the package, whose atopacctd would take the
/// kernel's accounting over from the tests that switch it) in
/// /usr/local/bin.
#[test]
fn atop_shows_the_processes_of_an_acct_file() {
    const NAME: &str = "atop_shows_the_processes_of_an_acct_file";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let Some(atop) = installed("atop") else {
        return skip_or_fail(NAME, "needs atop (the binary of Debian's `atop`)");
    };
    let dir = TempDir::new("atop");
    let acct = dir.join("tracer.acct");
    let probe = dir.join("atop_probe");
    std::os::unix::fs::symlink("/bin/sh", &probe).expect("symlink to /bin/sh");
    let (child, _lines, all) = start(&["record", "--acct-file"], &[acct.as_path()]);
    // One record for atop to read the format from.
    let status = Command::new("/bin/true").status().expect("/bin/true");
    assert!(status.success());
    wait_for("a first record", Duration::from_secs(10), || {
        acct_records(&acct) > 0
    });

    let mut sampler = Command::new(&atop)
        .env("ATOPACCT", &acct)
        .args(["-P", "PRG", "1", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting atop");
    let (lines, all_out) = line_reader(sampler.stdout.take().expect("piped"));
    // After atop's first sample: it reads what is written from then on.
    let first = Instant::now() + Duration::from_secs(20);
    loop {
        let left = first.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l == "SEP" => break,
            Ok(_) => {}
            Err(e) => panic!("atop printed no first sample: {e}"),
        }
    }
    let out = Command::new(&probe)
        .args(["-c", "exit 7"])
        .status()
        .expect("running the probe");
    assert_eq!(out.code(), Some(7));
    let status = sampler.wait().expect("waiting for atop");
    let stdout = all_out.join().unwrap_or_default();
    let mut stderr = String::new();
    let _ = sampler
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    let (tracer_stderr, _) = stop(child, all);
    assert!(status.success(), "atop: {status}\n{stderr}");

    // PRG host epoch date time interval pid (name) state ruid rgid tgid
    // nthr exitcode starttime (cmdline) ppid ...
    let me = std::process::id().to_string();
    let exited: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("PRG ") && l.contains(" (atop_probe) E "))
        .collect();
    let [line] = exited[..] else {
        panic!(
            "atop showed {} exited atop_probe processes, expected 1:\n{stdout}\natop: \
             {stderr}\ntracer: {tracer_stderr}",
            exited.len()
        );
    };
    let after = line.split(" (atop_probe) E ").nth(1).expect("the state");
    let fields: Vec<&str> = after.split_whitespace().collect();
    assert_eq!(fields.get(4), Some(&"7"), "exit code 7: {line}");
    assert!(after.contains(&format!(") {me} ")), "parent {me}: {line}");
}
