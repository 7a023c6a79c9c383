//! Why it died: `killed_by`, `oom_kill`, `exit_time`, `exe` and `argv` on
//! the exit records, against what the test itself did to the processes:
//! killed by a shell, by itself (a real NULL dereference, `abort()`), by
//! `timeout(1)`, by the OOM killer in a memory cgroup (v1 and v2, where
//! each is mounted), and dated by the wall clock.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::*;
use serde_json::Value;

/// `tracer run --json FILE [extra] -- sh -c SCRIPT`; the exit records and
/// the run's stdout.
fn run_sh(dir: &TempDir, script: &str, extra: &[&str]) -> (Vec<Value>, String) {
    let json = dir.join("exits.json");
    let _ = std::fs::remove_file(&json);
    let out = run_with_timeout(
        tracer()
            .args(["run", "--json"])
            .arg(&json)
            .args(extra)
            .args(["--", "/bin/sh", "-c", script]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    (
        exits(&std::fs::read_to_string(&json).expect("reading the JSON")),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn exits(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["event"] == "exit")
        .collect()
}

/// The one exit of `pid`.
fn exit_of(exits: &[Value], pid: u64) -> &Value {
    let found: Vec<_> = exits.iter().filter(|v| v["pid"] == pid).collect();
    assert_eq!(found.len(), 1, "exits of {pid} in {exits:#?}");
    found[0]
}

/// `label pid` lines the script printed.
fn label(stdout: &str, name: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name} PID` line in {stdout:?}"))
}

#[test]
fn killed_by_another_process_names_it() {
    if !require_privileges("killed_by_another_process_names_it", BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("killed");
    let (exits, stdout) = run_sh(
        &dir,
        "echo sh $$; sleep 30 & echo k $!; kill -KILL $!; wait; \
         sleep 30 & echo t $!; kill -TERM $!; wait; true",
        &["--table"],
    );
    let sh = label(&stdout, "sh");
    for (name, signal) in [("k", "SIGKILL"), ("t", "SIGTERM")] {
        let victim = exit_of(&exits, label(&stdout, name));
        assert_eq!(victim["signal"], signal, "{victim}");
        let by = &victim["killed_by"];
        assert_eq!(by["pid"], sh, "{victim}");
        assert_eq!(by["tid"], sh, "{victim}");
        assert_eq!(by["comm"], "sh", "{victim}");
        assert_eq!(by["uid"], 0, "{victim}");
        assert_eq!(by["code"], "SI_USER", "{victim}");
        assert_eq!(victim["oom_kill"], Value::Null, "{victim}");
        // The table says it too.
        let status = format!("{signal} by sh[{sh}]");
        assert!(stdout.contains(&status), "no `{status}` in\n{stdout}");
    }
    // Not killed: nobody named.
    let shell = exit_of(&exits, sh);
    assert_eq!(shell["killed_by"], Value::Null, "{shell}");
}

#[test]
fn a_process_that_kills_itself_names_itself() {
    if !require_privileges("a_process_that_kills_itself_names_itself", BPF_CC) {
        return;
    }
    let dir = TempDir::new("itself");
    let die = compile_c(&dir, "die");
    let script = format!(
        "{d} segv & echo segv $!; wait; {d} abort & echo abort $!; wait; true",
        d = die.display()
    );
    let (exits, stdout) = run_sh(&dir, &script, &[]);
    for (name, signal, code) in [
        ("segv", "SIGSEGV", "SEGV_MAPERR"),
        ("abort", "SIGABRT", "SI_TKILL"),
    ] {
        let pid = label(&stdout, name);
        let victim = exit_of(&exits, pid);
        assert_eq!(victim["signal"], signal, "{victim}");
        assert_eq!(victim["killed_by"]["pid"], pid, "{victim}");
        assert_eq!(victim["killed_by"]["comm"], "die", "{victim}");
        assert_eq!(victim["killed_by"]["code"], code, "{victim}");
    }
}

#[test]
fn timeout_is_named_as_the_killer() {
    if !require_privileges("timeout_is_named_as_the_killer", BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("timeout");
    let (exits, _) = run_sh(&dir, "timeout -s TERM 0.3 sleep 30; true", &[]);
    let timeout = exits
        .iter()
        .find(|v| v["comm"] == "timeout")
        .unwrap_or_else(|| panic!("no exit of timeout in {exits:#?}"));
    let sleep = exits
        .iter()
        .find(|v| v["comm"] == "sleep")
        .unwrap_or_else(|| panic!("no exit of sleep in {exits:#?}"));
    assert_eq!(sleep["signal"], "SIGTERM", "{sleep}");
    assert_eq!(sleep["killed_by"]["pid"], timeout["pid"], "{sleep}");
    assert_eq!(sleep["killed_by"]["comm"], "timeout", "{sleep}");
    assert_eq!(sleep["killed_by"]["code"], "SI_USER", "{sleep}");
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
fn exit_time_is_the_wall_clock() {
    if !require_privileges("exit_time_is_the_wall_clock", BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("exit-time");
    let before = unix_now();
    let (exits, stdout) = run_sh(&dir, "sleep 0.5 & echo s $!; wait", &[]);
    let after = unix_now();
    let sleep = exit_of(&exits, label(&stdout, "s"));
    let t = sleep["exit_time"].as_f64().expect("exit_time is a number");
    // It died between half a second after `before` and `after`: the
    // record must say so within a second.
    assert!(
        t >= before + 0.5 - 1.0 && t <= after + 1.0,
        "exit_time {t} more than a second outside [{before} + 0.5, {after}]"
    );
}

#[test]
fn exe_and_argv_come_from_the_last_exec() {
    if !require_privileges("exe_and_argv_come_from_the_last_exec", BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("argv");
    let script = "/bin/echo hello 'two words' >/dev/null & echo e $!; wait; \
                  (exit 4) & echo f $!; wait; true";
    let (exits, stdout) = run_sh(&dir, script, &[]);
    let echo = exit_of(&exits, label(&stdout, "e"));
    assert_eq!(echo["exe"], "/bin/echo", "{echo}");
    assert_eq!(
        echo["argv"],
        serde_json::json!(["/bin/echo", "hello", "two words"]),
        "{echo}"
    );
    assert_eq!(echo["argv_truncated"], false, "{echo}");
    // A forked shell that never exec'd: its creator's.
    let forked = exit_of(&exits, label(&stdout, "f"));
    assert_eq!(forked["exit_status"], 4, "{forked}");
    assert_eq!(forked["exe"], "/bin/sh", "{forked}");
    assert_eq!(
        forked["argv"],
        serde_json::json!(["/bin/sh", "-c", script]),
        "{forked}"
    );
}

/// Bytes of an exit's argv, each argument with its NUL.
fn argv_bytes(exit: &Value) -> usize {
    exit["argv"]
        .as_array()
        .unwrap_or_else(|| panic!("no argv: {exit}"))
        .iter()
        .map(|a| a.as_str().unwrap().len() + 1)
        .sum()
}

#[test]
fn argv_is_kept_up_to_argv_bytes() {
    if !require_privileges("argv_is_kept_up_to_argv_bytes", BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("argv-bytes");
    let long = "x".repeat(6000);
    let script = format!("/bin/echo {long} >/dev/null & echo e $!; wait");
    // By default 4 KiB: cut, and said so.
    let (exits, stdout) = run_sh(&dir, &script, &[]);
    let echo = exit_of(&exits, label(&stdout, "e"));
    assert_eq!(echo["argv_truncated"], true, "{echo}");
    assert_eq!(echo["argv"][0], "/bin/echo", "{echo}");
    // "/bin/echo\0" and 4086 of the x's, with no NUL after them.
    assert_eq!(argv_bytes(echo), 4096 + 1, "{echo}");
    // With room for it, whole.
    let (exits, stdout) = run_sh(&dir, &script, &["--argv-bytes", "16K"]);
    let echo = exit_of(&exits, label(&stdout, "e"));
    assert_eq!(echo["argv_truncated"], false, "{echo}");
    assert_eq!(echo["argv"][1], long.as_str(), "{echo}");
}

#[test]
fn a_process_older_than_the_tracer_has_its_argv_from_proc() {
    if !require_privileges(
        "a_process_older_than_the_tracer_has_its_argv_from_proc",
        BPF_ONLY,
    ) {
        return;
    }
    let dir = TempDir::new("older");
    let mut old = ChildGuard(
        std::process::Command::new("/bin/sleep")
            // Long enough to outlive a tracer start in an emulated VM
            // (tens of seconds): it must die by our kill, after that.
            .arg("600.25")
            .spawn()
            .expect("starting sleep"),
    );
    let json = dir.join("exits.json");
    let (tracer, _lines, all) = start_tracer(&["record", "--json"], &[json.as_path()]);
    let pid = old.pid();
    // SAFETY: kill has no memory preconditions; the child is not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    old.wait_timeout(Duration::from_secs(10))
        .expect("sleep did not die");
    let found = wait_for_exit(&json, pid);
    let stderr = stop_tracer(tracer, all);
    let found = found.unwrap_or_else(|e| panic!("{e}\ntracer's stderr:\n{stderr}"));
    // From /proc/PID/exe: the path with its links resolved.
    let sleep = std::fs::canonicalize("/bin/sleep").expect("resolving /bin/sleep");
    assert_eq!(found["exe"], sleep.to_str().unwrap(), "{found}");
    assert_eq!(found["argv"], serde_json::json!(["/bin/sleep", "600.25"]));
    // This test sent the SIGKILL.
    assert_eq!(found["killed_by"]["pid"], std::process::id(), "{found}");
}

/// Waits (up to 30 s) until the JSON file holds the exit of `pid`.
fn wait_for_exit(json: &Path, pid: u32) -> Result<Value, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(json).unwrap_or_default();
        // Whole lines only: the tracer may be writing the last one.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if let Some(v) = exits(whole).into_iter().find(|v| v["pid"] == pid) {
            return Ok(v);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "no exit of {pid} in {} after 30 s; its last lines:\n{}",
                json.display(),
                whole.lines().rev().take(5).collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A memory cgroup of this test, limited to 48 MiB, removed on drop.
struct MemCgroup {
    path: PathBuf,
    /// Its path as the kernel names it in that hierarchy.
    name: String,
}

impl MemCgroup {
    fn new(root: &Path, limit_file: &str, tag: &str) -> MemCgroup {
        let name = format!("tracer-oom-{}-{tag}", std::process::id());
        let path = root.join(&name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let cg = MemCgroup {
            path,
            name: format!("/{name}"),
        };
        let limit = cg.path.join(limit_file);
        std::fs::write(&limit, (48u64 << 20).to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", limit.display()));
        // No swap to escape into.
        let _ = std::fs::write(cg.path.join("memory.swap.max"), "0");
        let _ = std::fs::write(
            cg.path.join("memory.memsw.limit_in_bytes"),
            (48u64 << 20).to_string(),
        );
        cg
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Mount points of the memory controller: v1's `memory` hierarchy and a v2
/// hierarchy that has `memory` among its controllers.
fn memory_hierarchies() -> (Option<PathBuf>, Option<PathBuf>) {
    let v2 = cgroup2_mount().filter(|mount| {
        std::fs::read_to_string(mount.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    });
    if let Some(mount) = &v2 {
        // Children get the controller only if the root hands it down.
        let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+memory");
    }
    (memory_v1_mount(), v2)
}

/// A process allocating 200 MiB in a 48 MiB memory cgroup is killed by the
/// OOM killer, and its exit says so: the cgroup, its RSS, its
/// oom_score_adj (kernels whose `mark_victim` gives the task), and the
/// kernel as the sender of the SIGKILL.
fn oom_in(root: &Path, limit_file: &str, tag: &str) {
    let dir = TempDir::new(&format!("oom-{tag}"));
    let die = compile_c(&dir, "die");
    let cg = MemCgroup::new(root, limit_file, tag);
    let procs = cg.path.join("cgroup.procs");
    let script = format!(
        "echo 250 > /proc/self/oom_score_adj; echo $$ > {procs}; {die} hog 200 & echo h $!; wait; true",
        procs = procs.display(),
        die = die.display()
    );
    let (exits, stdout) = run_sh(&dir, &script, &["--table"]);
    let hog = exit_of(&exits, label(&stdout, "h"));
    assert_eq!(hog["signal"], "SIGKILL", "{hog}");
    assert_eq!(hog["killed_by"]["code"], "SI_KERNEL", "{hog}");
    let oom = &hog["oom_kill"];
    assert_eq!(oom["cgroup"], cg.name.as_str(), "{hog}");
    if oom["anon_rss_kb"] != Value::Null {
        // The cgroup's 48 MiB, nearly all of it anonymous.
        let anon = oom["anon_rss_kb"].as_u64().unwrap();
        assert!((30_000..=49_152).contains(&anon), "{hog}");
        assert_eq!(oom["oom_score_adj"], 250, "{hog}");
    } else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "{tag}: this kernel's mark_victim gives only the victim's pid: no RSS"
        );
    }
    let status = format!("SIGKILL (OOM, {})", cg.name);
    assert!(stdout.contains(&status), "no `{status}` in\n{stdout}");
}

#[test]
fn oom_kill_names_the_memory_cgroup() {
    if !require_privileges("oom_kill_names_the_memory_cgroup", BPF_CC) {
        return;
    }
    let (v1, v2) = memory_hierarchies();
    if v1.is_none() && v2.is_none() {
        return skip_or_fail(
            "oom_kill_names_the_memory_cgroup",
            "no memory cgroup hierarchy is mounted (neither v1 nor v2)",
        );
    }
    // Straight to fd 2, past the capture: which hierarchies were tested.
    let say = |text: String| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "oom_kill_names_the_memory_cgroup: {text}"
        );
    };
    say(format!("memory hierarchies: v1 {v1:?}, v2 {v2:?}"));
    match &v1 {
        Some(root) => oom_in(root, "memory.limit_in_bytes", "v1"),
        None => say("v1: no v1 memory hierarchy here".into()),
    }
    match &v2 {
        Some(root) => oom_in(root, "memory.max", "v2"),
        // On hybrid hosts the memory controller is bound to v1.
        None => say("v2: the memory controller is not on a v2 hierarchy here (v1 holds it)".into()),
    }
}
