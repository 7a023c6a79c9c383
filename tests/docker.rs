//! A real container engine: Docker runs an image built here (no registry
//! is reachable: a busybox-static rootfs, `docker import`ed), and the exit
//! records of its processes carry the id `docker` reports; `tracer run`
//! inside a container (its own pid namespace) records its command; and the
//! tracer runs in a container with CAP_SYS_ADMIN and the host's pid
//! namespace, as a DaemonSet would run it, and records a host process.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use common::*;
use serde_json::Value;

const IMAGE: &str = "tracer-test/busybox:1";

/// Whether a Docker engine answers; why not, when it does not.
fn engine() -> Result<(), String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => Err(format!("no docker command ({e}): install docker.io")),
        Ok(o) if !o.status.success() => Err(format!(
            "the Docker engine does not answer (start dockerd): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

fn docker(args: &[&str]) -> Output {
    let out = run_with_timeout(Command::new("docker").args(args), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        describe_output(&out)
    );
    out
}

/// The busybox image, built once: `/bin/busybox` and its applets, plus
/// the tracer binary and the libraries it links.
fn image(dir: &TempDir) {
    let rootfs = dir.join("rootfs");
    for d in [
        "bin",
        "lib64",
        "lib/x86_64-linux-gnu",
        "out",
        "sys",
        "proc",
        "tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir in the rootfs");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copying busybox");
    let out = run_with_timeout(
        Command::new("chroot")
            .arg(&rootfs)
            .args(["/bin/busybox", "--install", "-s", "/bin"]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "busybox --install: {}",
        describe_output(&out)
    );
    let tracer = PathBuf::from(env!("CARGO_BIN_EXE_tracer"));
    std::fs::copy(&tracer, rootfs.join("bin/tracer")).expect("copying the tracer");
    let ldd = run_with_timeout(Command::new("ldd").arg(&tracer), Duration::from_secs(30));
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = rootfs.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).expect("mkdir for a library");
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
    let out = run_with_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -c . | docker import - {IMAGE}",
            rootfs.display()
        )),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "docker import: {}",
        describe_output(&out)
    );
}

fn read_exits(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["event"] == "exit")
        .collect()
}

#[test]
fn docker_containers_are_named_and_the_tracer_runs_in_one() {
    if !require_privileges(
        "docker_containers_are_named_and_the_tracer_runs_in_one",
        BPF_ONLY,
    ) {
        return;
    }
    if let Err(why) = engine() {
        return skip_or_fail(
            "docker_containers_are_named_and_the_tracer_runs_in_one",
            &format!("{why} (CI installs and starts it)"),
        );
    }
    let dir = TempDir::new("docker");
    image(&dir);

    // 1. Containers, traced from the host.
    let json = dir.join("host.json");
    let (tracer, _lines, all) = start_tracer(&["record", "--json"], &[json.as_path()]);
    let cid_exit = dir.join("exit.cid");
    let cid_kill = dir.join("kill.cid");
    let run = |cidfile: &Path, script: &str| {
        let cid = cidfile.to_str().unwrap();
        run_with_timeout(
            Command::new("docker").args([
                "run",
                "--rm",
                "--cidfile",
                cid,
                IMAGE,
                "sh",
                "-c",
                script,
            ]),
            Duration::from_secs(120),
        )
    };
    let out = run(&cid_exit, "sleep 0.1; exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    let out = run(&cid_kill, "sleep 30 & kill -9 $!; wait; exit 0");
    assert!(out.status.success(), "{}", describe_output(&out));
    stop_tracer(tracer, all);
    let id_exit = std::fs::read_to_string(&cid_exit).expect("the cidfile");
    let id_kill = std::fs::read_to_string(&cid_kill).expect("the cidfile");
    assert_eq!(id_exit.len(), 64, "{id_exit:?}");
    let exits = read_exits(&json);
    let of = |id: &str| -> Vec<&Value> {
        exits
            .iter()
            .filter(|e| e["container_id"] == id.trim())
            .collect()
    };
    let in_exit = of(&id_exit);
    let sh = in_exit
        .iter()
        .find(|e| e["comm"] == "sh" && e["exit_status"] == 3)
        .unwrap_or_else(|| panic!("no `exit 3` of the container {id_exit} in {in_exit:#?}"));
    // The container's init: pid 1 in its namespace, its parent outside.
    assert_eq!(
        (sh["ns_pid"].as_u64(), sh["ns_ppid"].as_u64()),
        (Some(1), Some(0)),
        "{sh}"
    );
    assert!(
        sh["cgroup"]
            .as_str()
            .is_some_and(|c| c.contains(id_exit.trim())),
        "{sh}"
    );
    let in_kill = of(&id_kill);
    // busybox runs `sleep` in the forked shell (and the kill may come
    // before it does): the victim is the one that died of SIGKILL.
    let victim = in_kill
        .iter()
        .find(|e| e["signal"] == "SIGKILL")
        .unwrap_or_else(|| panic!("no SIGKILL in the container {id_kill}: {in_kill:#?}"));
    let shell = in_kill
        .iter()
        .find(|e| e["exit_status"] == 0 && e["ns_pid"] == 1)
        .unwrap_or_else(|| panic!("no init of the container {id_kill}: {in_kill:#?}"));
    assert_eq!(victim["killed_by"]["pid"], shell["pid"], "{victim}");
    assert_eq!(victim["killed_by"]["comm"], "sh", "{victim}");
    // No host process is said to be in a container.
    assert!(exits.iter().any(|e| e["container_id"].is_null()));

    // 2. `tracer run` inside a container, in its own pid namespace.
    let cid_run = dir.join("run.cid");
    let out = run_with_timeout(
        Command::new("docker").args([
            "run",
            "--rm",
            "--cidfile",
            cid_run.to_str().unwrap(),
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            "/sys/kernel/btf:/sys/kernel/btf:ro",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            IMAGE,
            "/bin/tracer",
            "run",
            "--json",
            "-",
            "--",
            "sh",
            "-c",
            "sh -c 'exit 6'; exit 5",
        ]),
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe_output(&out));
    let id_run = std::fs::read_to_string(&cid_run).expect("the cidfile");
    let inside: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "exit")
        .collect();
    let command = inside
        .iter()
        .find(|e| e["exit_status"] == 5)
        .unwrap_or_else(|| panic!("no exit of the command in {inside:#?}"));
    assert_eq!(command["container_id"], id_run.trim(), "{command}");
    assert!(inside.iter().any(|e| e["exit_status"] == 6), "{inside:#?}");

    // 3. The tracer in a container with the host's pid namespace,
    // recording a host process.
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).expect("mkdir out");
    let name = format!("tracer-test-{}", std::process::id());
    let vol = format!("{}:/out", out_dir.display());
    // What loading needs: CAP_SYS_ADMIN (docker 20.10 knows no CAP_BPF)
    // and the bpf() syscall past docker's seccomp profile. Not
    // --privileged: that asks for every capability, and this machine's
    // bounding set lacks CAP_SYS_RESOURCE.
    docker(&[
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--pid=host",
        "-v",
        "/sys/kernel/btf:/sys/kernel/btf:ro",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "-v",
        &vol,
        IMAGE,
        "/bin/tracer",
        "record",
        "--json",
        "/out/exits.json",
    ]);
    let recorded = out_dir.join("exits.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let found = loop {
        // A host process with an exit status of its own, again until the
        // tracer in the container has started and records it.
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exit 77"])
            .spawn()
            .expect("starting a host process");
        let host_pid = child.id();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(300));
        if recorded.exists() {
            if let Some(e) = read_exits(&recorded)
                .into_iter()
                .find(|e| e["pid"] == host_pid)
            {
                break e;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tracer in the container recorded no exit of {host_pid}: {}",
            String::from_utf8_lossy(&docker(&["logs", &name]).stderr)
        );
    };
    let _ = run_with_timeout(
        Command::new("docker").args(["stop", &name]),
        Duration::from_secs(60),
    );
    assert_eq!(found["exit_status"], 77, "{found}");
    assert_eq!(found["container_id"], Value::Null, "{found}");
}
