//! Privileged tests of how `tracer record` and `tracer run` behave as root
//! next to hostile users, logrotate, full disks, readers that stop reading
//! and signals: the output files cannot be turned against the host, a
//! session always ends in bounded time, failures exit non-zero and name
//! what they lost, and the counts in the summary are the truth.
//!
//! Need root and BPF; without them they print `skipped: ...` and pass,
//! except under `CI=true` where they fail.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::*;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hang is a failure; no test here comes near this.
const LIMIT: Duration = Duration::from_secs(60);

/// Every line of a JSON recording: parsed, and none cut short.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        !bytes.contains(&0),
        "{} holds NUL bytes (a hole left by a write at a stale offset)",
        path.display()
    );
    if !bytes.is_empty() {
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "{} ends with a partial line",
            path.display()
        );
    }
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?} in {}", path.display()))
        })
        .collect()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn json_output_follows_no_link_and_truncates_nothing() {
    const NAME: &str = "json_output_follows_no_link_and_truncates_nothing";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("links");
    // A hostile user plants a link where root will write its recording.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let link = dir.join("rec.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = run_with_timeout(
        tracer()
            .args(["run", "--json"])
            .arg(&link)
            .args(["--", "/bin/true"]),
        LIMIT,
    );
    assert_ne!(out.status.code(), Some(0), "{}", describe_output(&out));
    assert!(
        stderr_of(&out).contains("symbolic link"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");

    // A new recording is created 0600; an existing one is appended to.
    let fresh = dir.join("fresh.json");
    for round in 1..=2 {
        let out = run_with_timeout(
            tracer()
                .args(["run", "--json"])
                .arg(&fresh)
                .args(["--", "/bin/sh", "-c", "exit 5"]),
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(5), "{}", describe_output(&out));
        let exits = json_lines(&fresh)
            .iter()
            .filter(|v| v["event"] == "exit")
            .count();
        assert_eq!(exits, round, "round {round}: one exit per run, none lost");
    }
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "a new recording is 0600");
}

#[test]
fn a_session_that_cannot_start_touches_no_output() {
    const NAME: &str = "a_session_that_cannot_start_touches_no_output";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("nostart");
    let json = dir.join("rec.json");
    std::fs::write(&json, b"{\"event\":\"exit\",\"pid\":1}\n").unwrap();
    let fresh = dir.join("never.json");
    // A ring size the kernel cannot take: a usage error, before anything.
    let out = run_with_timeout(
        tracer()
            .args(["record", "--ring-size", "3M", "--duration", "1", "--json"])
            .arg(&json),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert_eq!(
        std::fs::read(&json).unwrap(),
        b"{\"event\":\"exit\",\"pid\":1}\n"
    );
    // Every attach mode, whether this kernel has it or not: a mode that
    // fails creates no file; one that works appends.
    for mode in ["fentry", "kprobe", "tracepoint"] {
        let out = run_with_timeout(
            tracer()
                .args(["record", "--duration", "0.2", "--attach", mode, "--json"])
                .arg(&fresh),
            LIMIT,
        );
        match out.status.code() {
            Some(0) => assert!(fresh.exists(), "{mode}: {}", describe_output(&out)),
            Some(1) => assert!(
                !fresh.exists(),
                "--attach {mode} failed to start and still created {}",
                fresh.display()
            ),
            _ => panic!("--attach {mode}: {}", describe_output(&out)),
        }
        let _ = std::fs::remove_file(&fresh);
    }
}

/// A `record` session in the background, ended by a signal when the test
/// has seen what it waits for: no fixed duration, so a slow machine (a VM
/// without KVM) only makes it longer.
fn background_record(args: &[&std::ffi::OsStr], stdout: Stdio) -> ChildGuard {
    ChildGuard(
        tracer()
            .arg("record")
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Ends a session with SIGINT; its status and standard error.
fn interrupt(mut session: ChildGuard) -> (std::process::ExitStatus, String) {
    // SAFETY: our child.
    unsafe { libc::kill(session.pid() as i32, libc::SIGINT) };
    let status = session
        .wait_timeout(LIMIT)
        .expect("the session did not end");
    let mut err = String::new();
    session
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn copytruncate_leaves_no_hole() {
    const NAME: &str = "copytruncate_leaves_no_hole";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("rotate");
    let json = dir.join("rec.json");
    let acct = dir.join("rec.acct");
    let _churn = churn();
    let session = background_record(
        &[
            "--json".as_ref(),
            json.as_os_str(),
            "--acct-file".as_ref(),
            acct.as_os_str(),
        ],
        Stdio::null(),
    );
    wait_for("the files to grow", || {
        size(&json) > 8192 && size(&acct) > 64 * 10
    });
    // What logrotate's copytruncate does.
    for path in [&json, &acct] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    // Writes at a stale offset would leave the files as large as before.
    wait_for("writes after the truncation", || {
        size(&json) > 0 && size(&acct) > 0
    });
    let (status, err) = interrupt(session);
    assert!(status.success(), "{status}\n{err}");
    let lines = json_lines(&json);
    assert!(
        lines.iter().any(|v| v["event"] == "summary"),
        "the rotated file goes on with the rest of the session"
    );
    let bytes = std::fs::read(&acct).unwrap();
    assert_eq!(bytes.len() % 64, 0);
    assert!(
        bytes.chunks(64).all(|r| r[1] == 3),
        "every record after the rotation is an acct v3 record, none a hole"
    );
}

/// A tmpfs of `kib` KiB at `dir`, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, kib: u32) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tracer-test"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs at {}", dir.display());
        SmallDisk(dir.to_owned())
    }

    /// Fills the disk but for `pages` pages.
    fn fill_leaving(&self, pages: u64) {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = [b'x'; 4096];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        let len = std::fs::metadata(&filler).unwrap().len();
        f.set_len(len.saturating_sub(pages * 4096)).unwrap();
    }

    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs writes into the struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid path and struct.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_whole_lines_and_says_what_was_lost() {
    const NAME: &str = "a_full_disk_keeps_whole_lines_and_says_what_was_lost";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("full");
    let disk = SmallDisk::mount(&dir.join("disk"), 1024);
    // Two pages left: the outputs fill them, then every write fails, one
    // of them part way through a line or a record.
    disk.fill_leaving(2);
    let json = disk.0.join("rec.json");
    let acct = disk.0.join("rec.acct");
    let _churn = churn();
    let session = background_record(
        &[
            "--json".as_ref(),
            json.as_os_str(),
            "--acct-file".as_ref(),
            acct.as_os_str(),
        ],
        Stdio::null(),
    );
    wait_for("the disk to fill", || disk.free_bytes() == 0);
    // The writes that find it full.
    std::thread::sleep(Duration::from_secs(1));
    let (status, err) = interrupt(session);
    assert_eq!(status.code(), Some(3), "{status}\n{err}");
    json_lines(&json);
    assert_eq!(std::fs::metadata(&acct).unwrap().len() % 64, 0);
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("failed,") && l.contains("not written"))
        .collect();
    assert!(!failed.is_empty(), "the failed output is named:\n{err}");
    for line in &failed {
        let lost: u64 = line
            .split("failed, ")
            .nth(1)
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(lost > 0, "the loss is counted: {line}\n{err}");
    }
    drop(disk);
}

#[test]
fn a_failed_output_fails_run() {
    const NAME: &str = "a_failed_output_fails_run";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let out = run_with_timeout(
        tracer().args([
            "run",
            "--json",
            "/dev/full",
            "--",
            "/bin/sh",
            "-c",
            "exit 0",
        ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(125), "{}", describe_output(&out));
    assert!(
        stderr_of(&out).contains("output /dev/full failed"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn blocked_outputs_cannot_hold_a_session() {
    const NAME: &str = "blocked_outputs_cannot_hold_a_session";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("blocked");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    // No reader: an acct file must be a regular file, and no output waits
    // for a reader that may never come.
    for flag in ["--acct-file", "--json"] {
        let out = run_with_timeout(
            tracer()
                .args(["record", "--duration", "2", flag])
                .arg(&fifo),
            LIMIT,
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{flag}: {}",
            describe_output(&out)
        );
    }

    // A reader that never reads, its pipe already full (the test fills
    // it), so the tracer's first write blocks however few processes die:
    // --duration, SIGTERM and SIGINT end the session all the same.
    let _churn = churn();
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    fill_pipe(filler.as_raw_fd());
    let out = run_with_timeout(
        tracer()
            .args(["record", "--duration", "2", "--json"])
            .arg(&fifo),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert!(
        stderr_of(&out).contains("not written"),
        "{}",
        describe_output(&out)
    );

    for sig in [libc::SIGTERM, libc::SIGINT] {
        // Standard output into a full pipe nobody reads.
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors from pipe2.
        let (read_end, write_end) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        // SAFETY: fcntl on our descriptor; blocking again once full.
        unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        fill_pipe(write_end.as_raw_fd());
        // SAFETY: as above.
        unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETFL, 0) };
        let mut session = background_record(&[], Stdio::from(write_end));
        // Once it records (attaching takes seconds in a VM without KVM), let
        // it find a record to write, and block on it.
        let (lines, _all) = line_reader(session.0.stderr.take().unwrap());
        loop {
            match lines.recv_timeout(LIMIT) {
                Ok(line) if line == "tracer: recording" => break,
                Ok(_) => {}
                Err(e) => panic!("signal {sig}: the session never started recording: {e}"),
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: our child.
        unsafe { libc::kill(session.pid() as i32, sig) };
        let status = session
            .wait_timeout(LIMIT)
            .unwrap_or_else(|| panic!("signal {sig} did not end a blocked session"));
        drop(read_end);
        assert_eq!(status.code(), Some(3), "signal {sig}: {status}");
    }
}

/// Writes into the pipe (its descriptor non-blocking) until it is full.
fn fill_pipe(fd: i32) {
    let chunk = [b'x'; 4096];
    loop {
        // SAFETY: a valid buffer and descriptor.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n <= 0 {
            break;
        }
    }
    // A pipe takes a partial page too: fill it to the byte.
    loop {
        // SAFETY: as above.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), 1) };
        if n <= 0 {
            break;
        }
    }
}

#[test]
fn numbers_out_of_range_are_usage_errors() {
    const NAME: &str = "numbers_out_of_range_are_usage_errors";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    for args in [
        &["record", "--duration", "2e19"][..],
        &["record", "--duration", "-1"],
        &["record", "--ring-size", "99999999999999999999"],
        &["record", "--ring-size", "0"],
        &["run", "--ring-size", "3000", "--", "true"],
    ] {
        let out = run_with_timeout(tracer().args(args), LIMIT);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `tracer run` from a pid namespace of its own (what a container gives):
/// the programs find the tracer by its namespace pid and follow the
/// command, whose records carry the host's pids and the namespace's.
#[test]
fn run_in_a_pid_namespace_records_the_command() {
    const NAME: &str = "run_in_a_pid_namespace_records_the_command";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let out = run_with_timeout(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_tracer"))
            .args([
                "run",
                "--json",
                "-",
                "--",
                "/bin/sh",
                "-c",
                "true; sh -c 'exit 3'; exit 4",
            ]),
        LIMIT,
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{}", describe_output(&out));
    assert!(err.contains("2 records written, 0 lost"), "{err}");
    let exits: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "exit")
        .collect();
    // The tracer is 1 in the namespace, the command 2, its child 3 or more.
    let command = exits
        .iter()
        .find(|e| e["exit_status"] == 4)
        .unwrap_or_else(|| panic!("no exit of the command: {exits:#?}"));
    assert_eq!(command["ns_pid"], 2, "{command}");
    assert_ne!(command["pid"], command["ns_pid"], "{command}");
    let child = exits
        .iter()
        .find(|e| e["exit_status"] == 3)
        .unwrap_or_else(|| panic!("no exit of the command's child: {exits:#?}"));
    assert_eq!(child["ns_ppid"], 2, "{child}");
    assert_eq!(child["ppid"], command["pid"], "{child}");
}

#[test]
fn json_summary_tells_the_same_counts() {
    const NAME: &str = "json_summary_tells_the_same_counts";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("summary");
    let json = dir.join("rec.json");
    let out = run_with_timeout(
        tracer().args(["run", "--json"]).arg(&json).args([
            "--",
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done",
        ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let lines = json_lines(&json);
    let exits = lines.iter().filter(|v| v["event"] == "exit").count() as u64;
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary", "the last line is the summary");
    assert_eq!(summary["written"], exits, "{summary}");
    assert_eq!(exits, 11, "ten /bin/true and the shell");
    assert_eq!(summary["lost"], 0, "{summary}");
    let err = stderr_of(&out);
    assert!(err.contains("11 records written, 0 lost"), "{err}");
}

/// `tracer run` passes signals sent to it on to the command, and keeps
/// recording until the command has exited.
#[test]
fn signals_to_run_reach_the_command() {
    const NAME: &str = "signals_to_run_reach_the_command";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("signals");
    for (sig, name) in [
        (libc::SIGINT, "INT"),
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
    ] {
        let ready = dir.join(&format!("ready-{name}"));
        let json = dir.join(&format!("{name}.json"));
        // The command says how it learnt of the signal in its exit status.
        let script = format!(
            "trap 'exit {code}' {name}; touch '{ready}'; while :; do sleep 0.05; done",
            code = 40 + sig,
            ready = ready.display()
        );
        let mut session = ChildGuard(
            tracer()
                .args(["run", "--json"])
                .arg(&json)
                .args(["--", "/bin/sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < LIMIT,
                "SIG{name}: the command never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: our child.
        unsafe { libc::kill(session.pid() as i32, sig) };
        let status = session
            .wait_timeout(LIMIT)
            .unwrap_or_else(|| panic!("SIG{name}: the session did not end"));
        let mut err = String::new();
        let _ = session.0.stderr.take().unwrap().read_to_string(&mut err);
        assert_eq!(
            status.code(),
            Some(40 + sig),
            "SIG{name} must reach the command, whose status is the session's\n{err}"
        );
        let shell_exit = json_lines(&json)
            .into_iter()
            .any(|v| v["event"] == "exit" && v["comm"] == "sh" && v["exit_status"] == 40 + sig);
        assert!(
            shell_exit,
            "SIG{name}: the command's exit is recorded\n{err}"
        );
    }
}

#[test]
fn a_foreign_acct_file_is_refused_untouched() {
    const NAME: &str = "a_foreign_acct_file_is_refused_untouched";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    // A file that is not acct v3 is refused, and left as it was (that the
    // check reads the descriptor written to, not the path again, is the
    // unit test `checks_the_descriptor_not_the_path`).
    let dir = TempDir::new("version");
    let foreign = dir.join("foreign.acct");
    std::fs::write(&foreign, [2u8; 64]).unwrap();
    let out = run_with_timeout(
        tracer()
            .args(["run", "--acct-file"])
            .arg(&foreign)
            .args(["--", "/bin/true"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(125), "{}", describe_output(&out));
    assert!(stderr_of(&out).contains("not an acct v3 file"));
    assert_eq!(std::fs::read(&foreign).unwrap(), [2u8; 64]);
}
