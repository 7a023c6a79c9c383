//! The in-kernel filters (`--pid`, `--uid`, `--comm`, `--cgroup`,
//! `--failed`), alone and combined, against a recording with no filter
//! over the same workload: each filtered recording holds exactly the
//! workload's exits that match, and nothing that does not match.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

fn exits(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["event"] == "exit")
        .collect()
}

/// Whether `e` is the workload's root (`root`) or one of its descendants.
fn in_workload(e: &Value, root: u64) -> bool {
    e["pid"] == root
        || e["ancestry"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["pid"] == root))
}

type Pred = Box<dyn Fn(&Value) -> bool>;

#[test]
fn filtered_recordings_are_exactly_the_matching_subset() {
    if !require_privileges(
        "filtered_recordings_are_exactly_the_matching_subset",
        BPF_ONLY,
    ) {
        return;
    }
    let Some(v2) = cgroup2_mount() else {
        return skip_or_fail(
            "filtered_recordings_are_exactly_the_matching_subset",
            "no cgroup2 hierarchy is mounted",
        );
    };
    let cgroup = format!("/tracer-filter-{}", std::process::id());
    let cg_dir = v2.join(cgroup.trim_start_matches('/'));
    std::fs::create_dir(&cg_dir).expect("mkdir the test cgroup");
    let procs = cg_dir.join("cgroup.procs");
    // A container started after the tracers: its cgroup is made by the
    // workload, and its first process exits at once.
    let ctr_id: String = std::iter::repeat_n('c', 64).collect();
    let ctr_dir = cg_dir.join(format!("docker-{ctr_id}.scope"));
    let dir = TempDir::new("filters");
    // Threads that die before their process, as nobody: `--uid` keeps
    // their figures in its record.
    let thread_io = compile_c(&dir, "thread_io");
    // Waits for a line on stdin, so that its pid is known before the
    // recordings start; then exits of every kind.
    let script = format!(
        "read go; \
         sh -c 'exit 0'; sh -c 'exit 3'; sleep 0.01; sleep 0.02 & kill -9 $!; wait; \
         setpriv --reuid 65534 --regid 65534 --clear-groups sh -c 'exit 5'; \
         setpriv --reuid 65534 --regid 65534 --clear-groups sh -c 'exit 0'; \
         setpriv --reuid 65534 --regid 65534 --clear-groups {thread_io}; \
         sh -c 'echo $$ > {procs}; sh -c \"exit 7\"; sleep 0.01; exit 0'; \
         sh -c 'echo $$ > {procs}; exit 9'; \
         mkdir {ctr}; sh -c 'echo $$ > {ctr}/cgroup.procs; sh -c \"exit 12\"; exit 0'; \
         rmdir {ctr}; true",
        procs = procs.display(),
        ctr = ctr_dir.display(),
        thread_io = thread_io.display(),
    );
    let mut workload = ChildGuard(
        Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting the workload"),
    );
    let root = u64::from(workload.pid());
    let sh_pid = root.to_string();
    // (name, arguments, what an exit must be to pass)
    let cases: Vec<(&str, Vec<String>, Pred)> = vec![
        (
            "pid",
            vec!["--pid".into(), sh_pid],
            Box::new(move |e: &Value| e["pid"] == root),
        ),
        (
            "uid",
            vec!["--uid".into(), "65534".into()],
            Box::new(|e: &Value| e["uid"] == 65534),
        ),
        (
            // Two values: looked up in the map (one is compared).
            "uid2",
            vec![
                "--uid".into(),
                "65534".into(),
                "--uid".into(),
                "4242".into(),
            ],
            Box::new(|e: &Value| e["uid"] == 65534),
        ),
        (
            "pid2",
            vec!["--pid".into(), root.to_string(), "--pid".into(), "1".into()],
            Box::new(move |e: &Value| e["pid"] == root),
        ),
        (
            "comm",
            vec!["--comm".into(), "sleep".into()],
            Box::new(|e: &Value| e["comm"] == "sleep"),
        ),
        (
            "cgroup",
            vec!["--cgroup".into(), cgroup.clone()],
            Box::new({
                let c = cgroup.clone();
                move |e: &Value| {
                    e["cgroup"]
                        .as_str()
                        .is_some_and(|p| p == c || p.starts_with(&format!("{c}/")))
                }
            }),
        ),
        (
            "failed",
            vec!["--failed".into()],
            Box::new(|e: &Value| e["exit_code"] != 0),
        ),
        (
            "container",
            vec!["--container".into(), ctr_id[..12].to_owned()],
            Box::new({
                let id = ctr_id.clone();
                move |e: &Value| e["container_id"] == id.as_str()
            }),
        ),
        (
            "container+failed",
            vec![
                "--container".into(),
                ctr_id[..20].to_owned(),
                "--failed".into(),
            ],
            Box::new({
                let id = ctr_id.clone();
                move |e: &Value| e["container_id"] == id.as_str() && e["exit_code"] != 0
            }),
        ),
        (
            "uid+failed",
            vec!["--uid".into(), "65534".into(), "--failed".into()],
            Box::new(|e: &Value| e["uid"] == 65534 && e["exit_code"] != 0),
        ),
        (
            "comm2+cgroup",
            vec![
                "--comm".into(),
                "sh".into(),
                "--comm".into(),
                "sleep".into(),
                "--cgroup".into(),
                cgroup.clone(),
            ],
            Box::new({
                let c = cgroup.clone();
                move |e: &Value| {
                    (e["comm"] == "sh" || e["comm"] == "sleep")
                        && e["cgroup"]
                            .as_str()
                            .is_some_and(|p| p == c || p.starts_with(&format!("{c}/")))
                }
            }),
        ),
    ];
    let all_json = dir.join("all.json");
    let mut sessions = vec![start_tracer(&["record", "--json"], &[all_json.as_path()])];
    let mut files = Vec::new();
    for (name, args, _) in &cases {
        let file = dir.join(&format!("{name}.json"));
        // The file goes last, as `--json`'s value.
        let mut full: Vec<&str> = vec!["record"];
        full.extend(args.iter().map(String::as_str));
        full.push("--json");
        sessions.push(start_tracer(&full, &[file.as_path()]));
        files.push(file);
    }
    workload
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .expect("starting the workload");
    let status = workload
        .wait_timeout(Duration::from_secs(60))
        .expect("the workload did not end");
    assert!(status.success(), "workload: {status}");
    for (child, _lines, all) in sessions {
        let stderr = stop_tracer(child, all);
        assert!(stderr.contains(" 0 lost"), "{stderr}");
    }
    let _ = std::fs::remove_dir(&ctr_dir);
    let _ = std::fs::remove_dir(&cg_dir);

    let all: Vec<Value> = exits(&all_json)
        .into_iter()
        .filter(|e| in_workload(e, root))
        .collect();
    // sh 0, sh 3, sleep, the killed sleep, three as nobody, three in the
    // cgroup and one more there, mkdir, two in the container, rmdir, and
    // the workload.
    assert_eq!(all.len(), 16, "the workload's exits: {all:#?}");
    // Five threads' reads: 8 + 16 + 24 + 32 KiB by the four that die
    // first, 1 KiB by the last (and what the C library reads to start).
    let threaded = all
        .iter()
        .find(|e| e["comm"] == "thread_io")
        .unwrap_or_else(|| panic!("no thread_io exit in {all:#?}"));
    let read_char = threaded["read_char"].as_u64().expect("read_char");
    assert!(
        read_char >= 81 * 1024,
        "thread_io's read_char {read_char} lacks its threads' reads: {threaded}"
    );
    let workload: BTreeSet<u64> = all.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    for ((name, _, pred), file) in cases.iter().zip(&files) {
        let got = exits(file);
        for e in &got {
            assert!(pred(e), "{name}: an exit that does not match: {e}");
            // A filter that passes a process passes its threads' figures.
            if e["pid"] == threaded["pid"] {
                for field in ["read_char", "write_char", "read_syscalls", "write_syscalls"] {
                    assert_eq!(
                        e[field], threaded[field],
                        "{name}: {field} differs from the unfiltered record's:\n{e}\n{threaded}"
                    );
                }
            }
        }
        let want: BTreeSet<u64> = all
            .iter()
            .filter(|e| pred(e))
            .map(|e| e["pid"].as_u64().unwrap())
            .collect();
        // By pid: a filtered recording has the fork events of wanted
        // processes only, so its ancestries stop at an unwanted creator.
        let got: BTreeSet<u64> = got
            .iter()
            .map(|e| e["pid"].as_u64().unwrap())
            .filter(|pid| workload.contains(pid))
            .collect();
        assert!(
            !want.is_empty(),
            "{name}: the workload has no matching exit"
        );
        assert_eq!(
            got, want,
            "{name}: filtered != the matching subset of {all:#?}"
        );
    }
}
