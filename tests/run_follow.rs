//! `tracer run` follows its command's groups by tgid in the `TRACKED` map.
//! An entry can outlive its group (the leader's free unseen; or its tgid
//! taken again before that free, which comes an RCU grace period after the
//! pid is released): a later, unrelated group with that tgid, and its
//! children, must not be recorded. Each entry carries its group's leader
//! start time; this test plants entries the way such a leftover looks and
//! checks that a stranger is told apart, while an entry that matches any
//! group (the loader's own kind) still makes a stranger's child followed,
//! so that the planting is shown to work.
//!
//! Needs root and BPF; without them it prints `skipped: ...` and passes,
//! except under `CI=true` where it fails.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::*;
use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use tracer_common::{tracked, Tracked};

/// The `TRACKED` map of the one tracer running.
fn tracked_map() -> HashMap<MapData, u32, Tracked> {
    let ids: Vec<u32> = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some("TRACKED"))
        .map(|m| m.id())
        .collect();
    assert_eq!(ids.len(), 1, "one tracer's TRACKED map: {ids:?}");
    let data = MapData::from_id(ids[0]).expect("opening TRACKED");
    HashMap::try_from(Map::HashMap(data)).expect("TRACKED is a hash of Tracked")
}

/// A shell outside the command's tree that, once told, runs one child (a
/// shell that runs `/bin/echo`) and exits.
fn stranger(n: u32) -> ChildGuard {
    ChildGuard(
        Command::new("/bin/sh")
            .args([
                "-c",
                &format!("read go; /bin/sh -c '/bin/echo {n}; exit 0'; exit 0"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting a stranger"),
    )
}

#[test]
fn a_stale_tracked_pid_does_not_make_a_stranger_followed() {
    const NAME: &str = "a_stale_tracked_pid_does_not_make_a_stranger_followed";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("run-follow");
    let json = dir.join("run.json");
    let mut stale = stranger(1);
    let mut matching = stranger(2);
    // The command lives until the strangers are done.
    let gate = dir.join("done");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done",
        gate.to_str().unwrap()
    );
    let (run, _lines, all) = start_tracer(
        &[
            "run",
            "--json",
            json.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        &[],
    );

    let mut map = tracked_map();
    // Left by an earlier group with the stranger's tgid: another start time.
    let leftover = Tracked {
        start_ns: 1,
        state: tracked::FOLLOWED,
        _pad: 0,
    };
    map.insert(stale.pid(), leftover, 0).expect("planting");
    // Matches any group with that tgid, as the loader's own entry does.
    let any = Tracked {
        start_ns: 0,
        ..leftover
    };
    map.insert(matching.pid(), any, 0).expect("planting");

    for s in [&mut stale, &mut matching] {
        s.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let status = s
            .wait_timeout(Duration::from_secs(30))
            .expect("stranger did not end");
        assert!(status.success());
    }
    std::fs::write(&gate, b"").unwrap();
    let status = run_wait(run, all);

    let text = std::fs::read_to_string(&json).unwrap();
    let exits: Vec<(u32, u32)> = text
        .lines()
        .filter(|l| l.contains(r#""event":"exit""#))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["pid"].as_u64().unwrap() as u32,
                v["ppid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let of = |pid: u32| exits.iter().filter(|e| e.0 == pid || e.1 == pid).count();
    assert_eq!(
        of(stale.pid()),
        0,
        "a stranger whose tgid a leftover entry names, or its child, was recorded:\n{text}\n{status}"
    );
    assert_eq!(
        of(matching.pid()),
        2,
        "an entry for any group makes the stranger and its child followed \
         (else the planting did nothing and this test proves nothing):\n{text}\n{status}"
    );
}

/// Waits for `tracer run` to end by itself (its command ended); its stderr.
fn run_wait(mut run: ChildGuard, all: std::thread::JoinHandle<String>) -> String {
    let status = run
        .wait_timeout(Duration::from_secs(30))
        .expect("tracer run did not end");
    let stderr = all.join().unwrap_or_default();
    assert!(status.success(), "tracer run: {status}\n{stderr}");
    stderr
}
