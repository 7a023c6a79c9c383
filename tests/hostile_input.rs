//! Input that someone else wrote: acct files and JSON recordings crafted to
//! rewrite the operator's terminal, to overflow the stack, to hide
//! processes or to exhaust memory. None of these needs root, and none
//! skips.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{tracer, TempDir};

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout (first 4 KiB)\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(4096)]),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One little-endian `struct acct_v3` record, laid out by hand here (not
/// with the tool's own encoder).
fn acct_record(pid: u32, ppid: u32, comm: &[u8]) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[1] = 3; // ac_version
    b[4..8].copy_from_slice(&(2u32 << 8).to_le_bytes()); // exit 2
    b[16..20].copy_from_slice(&pid.to_le_bytes());
    b[20..24].copy_from_slice(&ppid.to_le_bytes());
    b[24..28].copy_from_slice(&1_795_000_000u32.to_le_bytes()); // btime
    b[28..32].copy_from_slice(&100.0f32.to_bits().to_le_bytes()); // etime
    let n = comm.len().min(15);
    b[48..48 + n].copy_from_slice(&comm[..n]);
    b
}

/// Terminal-safe text: no control byte but the line ends, no DEL, no C1
/// control (U+0080..U+009F, which some terminals obey), valid UTF-8.
fn assert_terminal_safe(what: &str, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        assert!(
            b == b'\n' || (b >= 0x20 && b != 0x7f),
            "{what}: control byte {b:#04x} at {i}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e}):\n{bytes:?}"));
    if let Some(c) = text.chars().find(|c| ('\u{80}'..='\u{9f}').contains(c)) {
        panic!("{what}: C1 control {c:?} in:\n{text}");
    }
}

const HOSTILE: &[u8] = b"a\x1b]0;pwn\x07\nb\xff";
const HOSTILE_ESCAPED: &str = r"a\x1b]0;pwn\x07\nb\xff";

#[test]
fn dump_escapes_control_characters_and_invalid_utf8() {
    let dir = TempDir::new("hostile-dump");
    let file = dir.join("hostile.acct");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&acct_record(101, 1, HOSTILE));
    bytes.extend_from_slice(&acct_record(102, 1, b"ok"));
    bytes.extend_from_slice(&acct_record(103, 1, b"\r\x7f\xc2\x9b2J\t\x1b[1A"));
    std::fs::write(&file, &bytes).unwrap();

    let out = run(tracer().arg("dump").arg(&file));
    assert!(out.status.success(), "{}", describe(&out));
    assert_terminal_safe("tracer dump", &out.stdout);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 3,
        "a header and one line per record:\n{text}"
    );
    assert!(lines[1].contains(HOSTILE_ESCAPED), "{text}");
    assert!(lines[2].contains(" ok "), "{text}");
    assert!(lines[3].contains(r"\r\x7f\xc2\x9b2J\t\x1b[1A"), "{text}");

    // JSON stays JSON: one valid line per record, the comm as the kernel
    // had it (invalid UTF-8 replaced, controls escaped by JSON itself).
    let out = run(tracer().arg("dump").arg("--json").arg(&file));
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let comms: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["comm"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        comms,
        [
            "a\u{1b}]0;pwn\u{7}\nb\u{fffd}",
            "ok",
            "\r\u{7f}\u{9b}2J\t\u{1b}[1A"
        ]
    );
}

#[test]
fn errors_escape_the_file_name() {
    let dir = TempDir::new("hostile-name");
    let file = dir.join("bad\x1b]0;pwn\x07\nname");
    std::fs::write(&file, [0u8; 10]).unwrap();
    let out = run(tracer().arg("dump").arg(&file));
    assert!(!out.status.success(), "{}", describe(&out));
    assert_terminal_safe("tracer dump's error", &out.stderr);
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(r"bad\x1b]0;pwn\x07\nname"), "{err}");

    let out = run(tracer().arg("tree").arg(dir.join("missing\x1b[2J")));
    assert!(!out.status.success(), "{}", describe(&out));
    assert_terminal_safe("tracer tree's error", &out.stderr);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r"missing\x1b[2J"),
        "{}",
        describe(&out)
    );
}

fn fork_line(parent: u32, child: u32, comm: &str) -> String {
    serde_json::json!({
        "event": "fork", "time": 1.5, "parent_pid": parent, "parent_tid": parent,
        "child_pid": child, "child_tid": child, "clone_flags": [], "clone_flags_raw": 0,
        "exit_signal": "SIGCHLD", "kind": "process", "comm": comm,
    })
    .to_string()
}

fn exit_line(pid: u32, comm: &str, signal: Option<&str>) -> String {
    serde_json::json!({
        "event": "exit", "pid": pid, "ppid": 1, "tid": pid, "comm": comm,
        "exit_code": 0, "exit_status": if signal.is_some() { None } else { Some(0) },
        "signal": signal, "core_dumped": false, "elapsed_s": 0.5,
        "utime_s": 0.1, "stime_s": 0.1,
    })
    .to_string()
}

/// Runs `tracer tree` on a recording written into `dir`.
fn tree_of(dir: &TempDir, lines: &[String]) -> Output {
    let file = dir.join("recording.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    run(tracer().arg("tree").arg(&file))
}

/// The pid each line of a rendered tree is about, after the branches
/// (and the marker of levels too deep to indent).
fn line_pid(line: &str) -> u32 {
    let mut rest = line.trim_start_matches(['│', '├', '└', '─', ' ']);
    if let Some(r) = rest.strip_prefix("(+") {
        rest = r.split_once(") ").map_or(r, |p| p.1);
        rest = rest.trim_start_matches(['│', '├', '└', '─', ' ']);
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no pid at the start of {line:?}"))
}

/// Every line's pid, with how many times it appears.
fn pid_counts(text: &str) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts.entry(line_pid(line)).or_default() += 1;
    }
    counts
}

#[test]
fn tree_escapes_control_characters() {
    let dir = TempDir::new("hostile-tree");
    let evil = "a\u{1b}]0;pwn\u{7}\nb\u{9b}c";
    let lines = [
        fork_line(10, 11, evil),
        serde_json::json!({"event": "exec", "pid": 11, "tid": 11, "filename": evil,
            "argv": [evil], "comm": evil})
        .to_string(),
        exit_line(11, evil, Some("SIG\u{1b}[2J\nKILL")),
        exit_line(10, "sh", None),
    ];
    let out = tree_of(&dir, &lines);
    assert!(out.status.success(), "{}", describe(&out));
    assert_terminal_safe("tracer tree", &out.stdout);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        pid_counts(&text),
        BTreeMap::from([(10, 1), (11, 1)]),
        "{text}"
    );
    assert!(text.contains(r"a\x1b]0;pwn\x07\nb\xc2\x9bc"), "{text}");
    assert!(text.contains(r"SIG\x1b[2J\nKILL"), "{text}");
}

#[test]
fn tree_renders_a_20000_deep_chain() {
    const DEPTH: u32 = 20_000;
    let dir = TempDir::new("deep-tree");
    let mut lines = Vec::new();
    for pid in 2..=DEPTH {
        lines.push(fork_line(pid - 1, pid, "chain"));
    }
    for pid in (1..=DEPTH).rev() {
        lines.push(exit_line(pid, "chain", None));
    }
    let out = tree_of(&dir, &lines);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let counts = pid_counts(&text);
    assert_eq!(counts.len(), DEPTH as usize, "every pid of the chain");
    assert!(counts.values().all(|&n| n == 1), "each exactly once");
    // In creation order, one under the other.
    let order: Vec<u32> = text.lines().map(line_pid).collect();
    assert_eq!(order, (1..=DEPTH).collect::<Vec<_>>());
    // Deep levels are not indented without bound (the output would grow
    // with the square of the depth).
    let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(widest < 1000, "a line of {widest} characters");
}

#[test]
fn tree_shows_cycles_and_orphans() {
    let dir = TempDir::new("cycle-tree");
    let mut lines = vec![
        // An ordinary tree: 1 created 2, which created 3.
        fork_line(1, 2, "ok"),
        fork_line(2, 3, "ok"),
        // 100 and 101 created each other.
        fork_line(101, 100, "two"),
        fork_line(100, 101, "two"),
        // 200 created itself.
        fork_line(200, 200, "self"),
        // 300 -> 301 -> 302 -> 300, and 301 also created 303, which created 304.
        fork_line(302, 300, "three"),
        fork_line(300, 301, "three"),
        fork_line(301, 302, "three"),
        fork_line(301, 303, "below"),
        fork_line(303, 304, "below"),
        // 400's creator is not in the recording.
        fork_line(999, 400, "orphan"),
    ];
    let pids = [1, 2, 3, 100, 101, 200, 300, 301, 302, 303, 304, 400];
    for pid in pids {
        lines.push(exit_line(pid, "x", None));
    }
    let out = tree_of(&dir, &lines);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        pid_counts(&text),
        pids.iter().map(|&p| (p, 1)).collect::<BTreeMap<_, _>>(),
        "every pid exactly once:\n{text}"
    );
    // Each cycle is marked on one line, the one it is entered at.
    let marked: Vec<u32> = text
        .lines()
        .filter(|l| l.contains("creation cycle"))
        .map(line_pid)
        .collect();
    assert_eq!(marked, [100, 200, 300], "{text}");
    // What hangs under a cycle hangs under it in the output too.
    let order: Vec<u32> = text.lines().map(line_pid).collect();
    let at = |p| order.iter().position(|&x| x == p).unwrap();
    assert!(at(300) < at(301) && at(301) < at(302) && at(301) < at(303) && at(303) < at(304));
}

/// Peak resident memory of a child, in KiB: the high-water mark of its
/// own address space (`VmHWM`), read while it runs. Not wait4's
/// `ru_maxrss`: the standard library spawns with vfork, and exec records
/// the vforking parent's peak (this test process's, which the 256 MiB file
/// and concurrent tests inflate) as the child's.
fn peak_rss_kib(cmd: &mut Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // Before the exit is reaped, so the last reading is of the end.
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn write_valid_acct(path: &Path, bytes: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    for i in 0..bytes / 64 {
        let comm = format!("p{}", i % 1000);
        f.write_all(&acct_record(i as u32 + 1, 1, comm.as_bytes()))
            .unwrap();
    }
    f.flush().unwrap();
}

#[test]
fn dump_streams_a_256_mib_file_in_bounded_memory() {
    const LIMIT_KIB: u64 = 64 * 1024;
    let dir = TempDir::new("big-dump");
    let file = dir.join("big.acct");
    write_valid_acct(&file, 256 << 20);
    for json in [false, true] {
        let mut cmd = tracer();
        cmd.arg("dump");
        if json {
            cmd.arg("--json");
        }
        cmd.arg(&file);
        let (status, kib) = peak_rss_kib(&mut cmd);
        eprintln!("tracer dump (json: {json}) of 256 MiB: peak RSS {kib} KiB");
        assert!(status.success(), "tracer dump failed: {status}");
        assert!(
            kib < LIMIT_KIB,
            "tracer dump (json: {json}) of 256 MiB peaked at {kib} KiB"
        );
    }
}

#[test]
fn dump_reports_bad_records_clearly() {
    let dir = TempDir::new("bad-records");
    let ok = [acct_record(1, 0, b"one"), acct_record(2, 0, b"two")].concat();

    // A truncated last record: refused before anything is printed.
    let cut = dir.join("cut.acct");
    std::fs::write(&cut, &ok[..ok.len() - 1]).unwrap();
    let out = run(tracer().arg("dump").arg(&cut));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: truncated record at offset 64 (63 of 64",
            cut.display()
        )),
        "{err}"
    );

    // A wrong version byte further on: the records before it, then the
    // error naming the record, for the table and for JSON.
    for (version, what) in [(2u8, "has version 2, not 3"), (0x83, "big-endian")] {
        let mut bad = acct_record(3, 0, b"three");
        bad[1] = version;
        let file = dir.join("version.acct");
        std::fs::write(&file, [&ok[..], &bad, &ok[..64]].concat()).unwrap();
        for json in [false, true] {
            let mut cmd = tracer();
            cmd.arg("dump");
            if json {
                cmd.arg("--json");
            }
            let out = run(cmd.arg(&file));
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("record at offset 128") && err.contains(what),
                "{err}"
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let records = stdout.lines().count() - usize::from(!json);
            assert_eq!(records, 2, "the two records before it:\n{stdout}");
        }
    }
}

// ---------------------------------------------------------------------------
// Property tests: the two readers against arbitrary and mutated input. A few
// hundred cases each, a few seconds in all, so `cargo test` (and CI) runs
// them every time; a failure prints the smallest input that shows it.
// ---------------------------------------------------------------------------

mod properties {
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::io;
    use std::path::Path;
    use std::rc::Rc;

    use proptest::prelude::*;
    use serde_json::{json, Value};
    use tracer::acct::RecordReader;
    use tracer::output::{JsonLines, Output as _, Table, Target};
    use tracer::tree::Tree;

    use super::{assert_terminal_safe, line_pid};

    /// A writer the test keeps a handle on.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);

    impl io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 300,
            // A failure is printed, shrunk; nothing is written to the tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Records of random bytes, most with the version byte of v3, and
    /// perhaps a partial record at the end.
    fn acct_file() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>)> {
        let record = (
            prop::collection::vec(any::<u8>(), 64),
            prop::bool::weighted(0.9),
        )
            .prop_map(|(mut r, v3)| {
                if v3 {
                    r[1] = 3;
                }
                r
            });
        let tail = prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(any::<u8>(), 1..64),
        ];
        (prop::collection::vec(record, 0..24), tail)
    }

    proptest! {
        #![proptest_config(config())]

        /// Decoding never panics; it yields exactly the leading v3 records,
        /// then one error at the first bad one (or at a partial tail); and
        /// the table and JSON of what it yields never panic, the table
        /// stays terminal-safe and one line per record, the JSON valid.
        #[test]
        fn acct_reader_never_panics((records, tail) in acct_file()) {
            let bytes: Vec<u8> = records.iter().flatten().chain(&tail).copied().collect();
            let good = records.iter().take_while(|r| r[1] == 3).count();
            let bad_at = (good < records.len() || !tail.is_empty()).then_some(good * 64);

            let mut read = Vec::new();
            let mut error = None;
            for item in RecordReader::new(&bytes[..], Path::new("fuzz")) {
                match item {
                    Ok(rec) => read.push(rec),
                    Err(e) => {
                        prop_assert!(error.is_none(), "nothing after an error");
                        error = Some(e);
                    }
                }
            }
            prop_assert_eq!(read.len(), good);
            prop_assert_eq!(error.as_ref().and_then(|e| e.offset()), bad_at.map(|o| o as u64));
            if let Some(e) = &error {
                prop_assert!(e.to_string().starts_with("fuzz: "), "{}", e);
            }

            let table_out = Shared::default();
            let json_out = Shared::default();
            let mut table = Table::new(Target::Stdout, Box::new(table_out.clone()));
            let mut json = JsonLines::new(Target::Stdout, Box::new(json_out.clone()));
            for rec in &read {
                table.exit(&rec.to_exit()).unwrap();
                json.exit(&rec.to_exit()).unwrap();
            }
            table.flush().unwrap();
            json.flush().unwrap();
            let table_text = table_out.0.borrow().clone();
            assert_terminal_safe("table", &table_text);
            let lines = table_text.iter().filter(|&&b| b == b'\n').count();
            prop_assert_eq!(lines, if read.is_empty() { 0 } else { read.len() + 1 });
            let json_text = String::from_utf8(json_out.0.borrow().clone()).unwrap();
            prop_assert_eq!(json_text.lines().count(), read.len());
            for line in json_text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                prop_assert!(v["comm"].is_string());
            }
        }
    }

    /// A pid field: mostly a small pid (so that lines meet, and cycles
    /// form), sometimes missing, null, or not a pid at all.
    fn pid_value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            12 => (0u32..24).prop_map(|p| Some(json!(p))),
            1 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => any::<u32>().prop_map(|p| Some(json!(p))),
            1 => prop_oneof![
                Just(json!(-1)),
                Just(json!(4_294_967_296u64)),
                Just(json!(1.5)),
                Just(json!("7")),
            ]
            .prop_map(Some),
        ]
    }

    /// Text with the characters a hostile recording would use.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::char::range('a', 'z'),
                1 => prop::char::range('\0', '\u{1f}'),
                1 => prop::char::range('\u{7f}', '\u{9f}'),
                1 => any::<char>(),
            ],
            0..12,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0.0f64..10.0).prop_map(|f| json!(f)),
            any::<f64>().prop_map(|f| json!(f)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<i64>().prop_map(|n| json!(n)),
            Just(Value::Null),
        ]
    }

    /// One line of a recording, as the tracer writes them but with fields
    /// left out or replaced.
    fn event_line() -> impl Strategy<Value = Value> {
        let event = prop_oneof![
            6 => prop_oneof![Just("fork"), Just("exec"), Just("exit")].prop_map(String::from),
            1 => text(),
        ];
        let flags = prop_oneof![
            Just(Some(json!(0))),
            Just(Some(json!(0x4100))),         // vfork
            Just(Some(json!(0x10f00))),        // thread
            Just(Some(json!(0x2000_0000u64))), // CLONE_NEWPID
            any::<u64>().prop_map(|f| Some(json!(f))),
            Just(None),
        ];
        (
            event,
            (pid_value(), pid_value(), pid_value()),
            flags,
            text(),
            prop::option::of(text()),
            (number(), number(), number(), number(), number()),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(event, (a, b, c), flags, comm, signal, nums, core)| {
                let mut m = serde_json::Map::new();
                m.insert("event".into(), json!(event));
                for (k, v) in [
                    ("parent_pid", a),
                    ("child_pid", b),
                    ("pid", c),
                    ("clone_flags_raw", flags),
                ] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                m.insert("comm".into(), json!(comm));
                m.insert("signal".into(), json!(signal));
                let (status, elapsed, utime, stime, cpu) = nums;
                m.insert("exit_status".into(), status);
                m.insert("elapsed_s".into(), elapsed);
                m.insert("utime_s".into(), utime);
                m.insert("stime_s".into(), stime);
                if !cpu.is_null() {
                    m.insert("cpu_runtime_s".into(), cpu);
                }
                if let Some(core) = core {
                    m.insert("core_dumped".into(), json!(core));
                }
                Value::Object(m)
            })
    }

    /// A line's text, perhaps mutated: cut short, a byte replaced, or a
    /// byte put in (which may make it invalid JSON or invalid UTF-8).
    fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
        (
            event_line(),
            0u8..10,
            any::<prop::sample::Index>(),
            any::<u8>(),
        )
            .prop_map(|(v, how, at, byte)| {
                let mut line = v.to_string().into_bytes();
                let i = at.index(line.len() + 1);
                match how {
                    0 => line.truncate(i),
                    1 if i < line.len() => line[i] = byte,
                    2 => line.insert(i, byte),
                    _ => {}
                }
                line
            })
    }

    /// What the tree must show for a recording that reads without error:
    /// the pid each fork, exec and exit line is about.
    fn subjects(text: &str) -> (BTreeSet<u32>, bool) {
        let mut pids = BTreeSet::new();
        let mut must_read = true;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(Value::Object(v)) = serde_json::from_str::<Value>(line) else {
                must_read = false;
                continue;
            };
            let pid = |k: &str| match v.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or(()),
            };
            let (subject, others) = match v.get("event").and_then(Value::as_str) {
                Some("fork") => (pid("child_pid"), pid("parent_pid")),
                Some("exec" | "exit") => (pid("pid"), Ok(None)),
                _ => (Err(()), Ok(None)),
            };
            match (subject, others) {
                (Ok(p), Ok(_)) => pids.extend(p),
                _ => must_read = false,
            }
        }
        (pids, must_read)
    }

    proptest! {
        #![proptest_config(config())]

        /// Reading never panics; a recording of well-formed lines always
        /// reads; and what reads renders every pid that has a line exactly
        /// once, terminal-safe.
        #[test]
        fn tree_reader_never_panics_nor_drops_a_pid(
            lines in prop::collection::vec(
                prop_oneof![4 => event_line().prop_map(|v| v.to_string().into_bytes()), 1 => mutated_line()],
                0..30,
            )
        ) {
            let input = lines.join(&b'\n');
            let tree = Tree::from_json(&input[..], "fuzz");
            let expected = std::str::from_utf8(&input).ok().map(subjects);
            let tree = match (tree, &expected) {
                (Ok(tree), _) => tree,
                (Err(e), Some((_, true))) => {
                    return Err(TestCaseError::fail(format!("well-formed lines refused: {e:#}")));
                }
                (Err(e), _) => {
                    prop_assert!(e.to_string().starts_with("fuzz:"), "{:#}", e);
                    return Ok(());
                }
            };
            let mut out = Vec::new();
            tree.render(&mut out, false).unwrap();
            assert_terminal_safe("tree", &out);
            let out = String::from_utf8(out).unwrap();
            let mut shown = BTreeSet::new();
            for line in out.lines() {
                prop_assert!(shown.insert(line_pid(line)), "a pid twice:\n{}", out);
            }
            // A recording that reads has no line with a bad pid: every pid
            // shown is one a line is about, and every such pid is shown.
            if let Some((pids, _)) = expected {
                prop_assert_eq!(pids, shown, "\n{}", out);
            }
        }
    }
}
