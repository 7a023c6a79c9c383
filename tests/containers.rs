//! Which container an exit belongs to: the cgroup path, the container id
//! and pod uid its name gives, and the pids as the process's own pid
//! namespace sees them. Cgroups are made with mkdir on the v2 hierarchy,
//! named as each container runtime names them, and a shell is moved into
//! each; one is removed the moment its shell is gone.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;
use serde_json::Value;

/// Directories made for the test, removed (deepest first) on drop.
struct Made(Vec<PathBuf>);

impl Made {
    fn dir(&mut self, path: &Path) {
        if !path.exists() {
            std::fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
            self.0.push(path.to_owned());
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(p).is_ok() || !p.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn exits(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("reading the JSON")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["event"] == "exit")
        .collect()
}

fn id(seed: char) -> String {
    std::iter::repeat_n(seed, 64).collect()
}

#[test]
fn exits_name_their_cgroup_and_container() {
    if !require_privileges("exits_name_their_cgroup_and_container", BPF_ONLY) {
        return;
    }
    let Some(v2) = cgroup2_mount() else {
        return skip_or_fail(
            "exits_name_their_cgroup_and_container",
            "no cgroup2 hierarchy is mounted",
        );
    };
    let top = format!("tracer-test-{}", std::process::id());
    let pod = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    // (path below `top`, expected container id, expected pod uid)
    let cases: Vec<(String, Option<String>, Option<&str>)> = vec![
        (format!("docker-{}.scope", id('a')), Some(id('a')), None),
        (format!("docker/{}", id('b')), Some(id('b')), None),
        (format!("cri-containerd-{}.scope", id('c')), Some(id('c')), None),
        (format!("crio-{}.scope", id('d')), Some(id('d')), None),
        (format!("libpod-{}.scope", id('e')), Some(id('e')), None),
        (format!("libpod-conmon-{}.scope", id('f')), None, None),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
                pod.replace('-', "_"),
                id('1')
            ),
            Some(id('1')),
            Some(pod),
        ),
        ("plain.slice".to_owned(), None, None),
    ];
    let mut made = Made(Vec::new());
    made.dir(&v2.join(&top));
    let mut script = String::new();
    for (i, (path, _, _)) in cases.iter().enumerate() {
        let mut dir = v2.join(&top);
        for part in path.split('/') {
            dir = dir.join(part);
            made.dir(&dir);
        }
        // A shell that moves itself in and exits with its case number;
        // the first cgroup is removed the moment its shell is gone.
        script += &format!(
            "sh -c 'echo $$ > {}/cgroup.procs; exit {}'; ",
            dir.display(),
            10 + i
        );
        if i == 0 {
            script += &format!("rmdir {}; ", dir.display());
        }
    }
    // Where the memory controller has a v1 hierarchy (hybrid and v1
    // hosts), a container only there (docker's cgroupfs driver on a v1
    // host) is found from its v1 path.
    let v1 = memory_v1_mount();
    if let Some(v1) = &v1 {
        let mut dir = v1.join(&top);
        made.dir(&dir);
        dir = dir.join(format!("docker-{}.scope", id('7')));
        made.dir(&dir);
        script += &format!(
            "sh -c 'echo $$ > {}/cgroup.procs; exit 60'; ",
            dir.display()
        );
    }
    script += "unshare --pid --fork sh -c 'echo ns $$; sh -c \"echo nschild \\$\\$ \\$PPID; exit 42\"'; true";
    let dir = TempDir::new("containers");
    let json = dir.join("exits.json");
    let out = run_with_timeout(
        tracer()
            .args(["run", "--json"])
            .arg(&json)
            .args(["--", "/bin/sh", "-c", &script]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    let exits = exits(&json);
    for (i, (path, container, pod_uid)) in cases.iter().enumerate() {
        let status = 10 + i as u64;
        let e = exits
            .iter()
            .find(|e| e["exit_status"] == status)
            .unwrap_or_else(|| panic!("no exit {status} in {exits:#?}"));
        assert_eq!(e["cgroup"], format!("/{top}/{path}"), "{e}");
        assert_eq!(e["container_id"].as_str(), container.as_deref(), "{e}");
        assert_eq!(e["pod_uid"].as_str(), *pod_uid, "{e}");
    }
    if v1.is_some() {
        let e = exits
            .iter()
            .find(|e| e["exit_status"] == 60)
            .unwrap_or_else(|| panic!("no exit 60 in {exits:#?}"));
        assert_eq!(e["container_id"].as_str(), Some(&id('7')[..]), "{e}");
        assert!(
            !e["cgroup"].as_str().unwrap_or("").contains(&id('7')),
            "{e}"
        );
    } else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "exits_name_their_cgroup_and_container: no v1 memory hierarchy here: v1 part not run"
        );
    }
    // The command itself: a host process, in no container, its pids its
    // own in the initial pid namespace.
    let root = exits
        .iter()
        .find(|e| e["comm"] == "sh" && e["exit_status"] == 0 && e["ns_pid"] == e["pid"])
        .unwrap_or_else(|| panic!("no exit of the command in {exits:#?}"));
    assert_eq!(root["container_id"], Value::Null, "{root}");
    assert_eq!(root["ns_ppid"], root["ppid"], "{root}");
    // In the new pid namespace: pid 1 and its child 2, as they saw
    // themselves, the parent outside it as 0.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ns 1\n"), "{stdout}");
    assert!(stdout.contains("nschild 2 1\n"), "{stdout}");
    // The namespace's init ends with its last command's status, 42 too:
    // the child is the one created last (records from two CPUs can reach
    // the output out of exit order).
    let child = exits
        .iter()
        .filter(|e| e["exit_status"] == 42)
        .max_by_key(|e| e["start_ns"].as_u64())
        .unwrap_or_else(|| panic!("no exit 42 in {exits:#?}"));
    assert_eq!(
        (child["ns_pid"].as_u64(), child["ns_ppid"].as_u64()),
        (Some(2), Some(1)),
        "{child}"
    );
    let init = exits
        .iter()
        .find(|e| e["pid"] == child["ppid"])
        .unwrap_or_else(|| panic!("no exit of the namespace's init in {exits:#?}"));
    assert_eq!(
        (init["ns_pid"].as_u64(), init["ns_ppid"].as_u64()),
        (Some(1), Some(0)),
        "{init}"
    );
    assert_eq!(init["pidns"], child["pidns"]);
    assert_ne!(init["pidns"], root["pidns"]);
    let own = std::fs::read_link("/proc/self/ns/pid").expect("reading /proc/self/ns/pid");
    assert_eq!(
        own.to_string_lossy(),
        format!("pid:[{}]", root["pidns"]),
        "{root}"
    );
}

/// `--acct-dir`: a container's file holds the container's own pids, equal
/// field for field to what the kernel writes with accounting switched on
/// inside that pid namespace (`unshare --pid --fork`, then `accton`).
#[test]
fn acct_dir_equals_accton_inside_the_namespace() {
    if !require_privileges(
        "acct_dir_equals_accton_inside_the_namespace",
        Needs {
            bpf: true,
            accton: true,
            cc: false,
        },
    ) {
        return;
    }
    let Some(v2) = cgroup2_mount() else {
        return skip_or_fail(
            "acct_dir_equals_accton_inside_the_namespace",
            "no cgroup2 hierarchy is mounted",
        );
    };
    let container = id('9');
    let mut made = Made(Vec::new());
    let cg = v2.join(format!("docker-{container}.scope"));
    made.dir(&cg);
    let dir = TempDir::new("acct-dir");
    let out_dir = dir.join("acct");
    std::fs::create_dir(&out_dir).expect("mkdir the acct dir");
    let kernel_file = dir.join("kernel.acct");
    std::fs::File::create(&kernel_file).expect("creating the kernel's file");
    let accton = accton_path().expect("accton");
    let json = dir.join("exits.json");
    // The namespace's init moves itself into the container's cgroup, turns
    // accounting on for its namespace, runs a workload, turns it off.
    let inner = format!(
        "echo $$ > {procs}; {accton} {kf} >/dev/null; \
         sh -c 'exit 3'; sleep 0.05; /bin/true; sh -c 'kill -TERM $$'; \
         (sleep 0.02 & wait); {accton} off >/dev/null",
        procs = cg.join("cgroup.procs").display(),
        accton = accton.display(),
        kf = kernel_file.display(),
    );
    let out = run_with_timeout(
        tracer()
            .args(["run", "--acct-dir"])
            .arg(&out_dir)
            .arg("--json")
            .arg(&json)
            .args(["--", "unshare", "--pid", "--fork", "/bin/sh", "-c", &inner]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    let mut kernel_records = read_records(&kernel_file);
    // Switching accounting off writes a record of the process doing it,
    // while it still runs (acct_pin_kill: no exit, no memory figures);
    // its real exit comes after, into no file of the kernel's.
    let off = kernel_records.pop().expect("the kernel's records");
    assert_eq!(off.comm_str(), "accton", "the last kernel record: {off:?}");
    let kernel = by_pid(&kernel_records);
    let mut ours = by_pid(&read_records(&out_dir.join(format!("{container}.acct"))));
    // The namespace's init ends after `accton off`: only we have it.
    let init = ours
        .remove(&1)
        .expect("the namespace's init in the container's file");
    assert_eq!(init.comm_str(), "sh");
    assert!(
        ours.remove(&off.pid).is_some(),
        "no exit of `accton off` ({off:?}) in ours: {ours:#?}"
    );
    assert!(kernel.len() >= 6, "the kernel's records: {kernel:#?}");
    compare_records(
        &kernel,
        &ours,
        &HashMap::new(),
        &json_exits(&json, "ns_pid"),
    );
    // The host's file has the rest (unshare, and the tracer's own command).
    let host = read_records(&out_dir.join("host.acct"));
    assert!(host.iter().any(|r| r.comm_str() == "unshare"), "{host:#?}");
}
