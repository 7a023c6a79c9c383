//! The per-CPU stages of records at the end of a session. A CPU that goes
//! offline keeps what it had staged (nothing runs there to flush it): at
//! the end the loader reads it from the map and writes it.
//!
//! Its own test binary: it takes a CPU offline for a moment, which the
//! tests of another binary, run in parallel threads, must not see. Needs
//! root, BPF and a second CPU that can go offline; under `CI=true` a
//! missing one fails the test.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::*;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A CPU taken offline, brought back online when dropped (a failing test
/// included).
struct Offline(PathBuf);

impl Offline {
    fn take(cpu: u32) -> std::io::Result<Offline> {
        let ctl = PathBuf::from(format!("/sys/devices/system/cpu/cpu{cpu}/online"));
        std::fs::write(&ctl, "0")?;
        Ok(Offline(ctl))
    }
}

impl Drop for Offline {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.0, "1") {
            eprintln!("cannot bring {} back online: {e}", self.0.display());
        }
    }
}

/// Why CPU 1 cannot be taken offline here, if it cannot.
fn no_cpu_to_take() -> Option<String> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() == "0" {
        return Some("needs a second CPU (only CPU 0 is online)".into());
    }
    let ctl = Path::new("/sys/devices/system/cpu/cpu1/online");
    if !ctl.exists() {
        return Some(format!(
            "needs CPU hotplug ({} is missing: no CPU 1, or a kernel without CONFIG_HOTPLUG_CPU)",
            ctl.display()
        ));
    }
    None
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

/// The tracer is stopped, so that no flush runs; a process pinned to CPU 1
/// exits there, its record staged on CPU 1; CPU 1 goes offline; the tracer
/// goes on and is told to stop. Its record must be in the JSON, and the
/// tracer must say it took it from an offline CPU's stage.
#[test]
fn an_offline_cpus_stage_is_written_at_the_end() {
    const NAME: &str = "an_offline_cpus_stage_is_written_at_the_end";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    if let Some(why) = no_cpu_to_take() {
        return skip_or_fail(NAME, &why);
    }
    let dir = TempDir::new("stages");
    let json = dir.join("ours.json");
    let comm = dir.join("offline_exit");
    std::os::unix::fs::symlink("/bin/sh", &comm).expect("symlink to /bin/sh");
    // --comm keeps the machine's other exits out of CPU 1's stage, which
    // they could fill (a full stage goes into the ring by itself).
    let (mut tracer_proc, _lines, stderr_thread) = start_tracer(
        &["record", "--comm", "offline_exit", "--json"],
        &[json.as_path()],
    );
    let tracer_pid = tracer_proc.pid();
    signal(tracer_pid, libc::SIGSTOP);

    let mut cmd = Command::new(&comm);
    cmd.args(["-c", "exit 5"]);
    // SAFETY: sched_setaffinity on the child itself, between fork and
    // exec: async-signal-safe, no allocation.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(1, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut sh = cmd.spawn().expect("starting sh on CPU 1");
    let pid = sh.id();
    assert_eq!(sh.wait().expect("waiting for sh").code(), Some(5));

    let offline = match Offline::take(1) {
        Ok(o) => o,
        Err(e) => {
            signal(tracer_pid, libc::SIGCONT);
            panic!("{NAME}: cannot take CPU 1 offline: {e}");
        }
    };
    signal(tracer_pid, libc::SIGCONT);
    signal(tracer_pid, libc::SIGINT);
    let status = tracer_proc.wait_timeout(Duration::from_secs(60));
    drop(offline);
    drop(tracer_proc);
    let stderr = stderr_thread.join().unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");

    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"{"event":"exit""#) && l.contains(&format!(r#""pid":{pid},"#)))
        .unwrap_or_else(|| {
            panic!("no exit line for pid {pid}, staged on CPU 1:\n{text}\nstderr:\n{stderr}")
        });
    assert!(line.contains(r#""exit_status":5"#), "{line}");
    assert!(
        stderr.contains("CPU 1 is offline: 1 record(s) staged there taken from the map"),
        "{stderr}"
    );
}
