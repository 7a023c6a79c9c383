//! `--bpf-log`: the programs say why they lost a record, one line per
//! record, and say nothing by default; the losses are counted either way.
//!
//! Needs root and BPF; without them it prints `skipped: ...` and passes,
//! except under `CI=true` where it fails.
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// Processes the command runs while the tracer is stopped: a 4K ring holds
/// about 20 records, and the log ring (128K) holds the two lines each lost
/// one gives (its record and its stamp).
const N: u64 = 100;

/// `tracer run --ring-size 4K` over N processes that die while the tracer
/// is stopped, with `extra` flags: the status, stderr, the pids written to
/// the acct file, and the summary's written and lost counts.
fn lossy_run(dir: &TempDir, extra: &[&str]) -> (String, BTreeSet<u32>, u64, u64) {
    let file = dir.join(&format!("ours{}.acct", extra.len()));
    let script = format!(
        "kill -STOP $PPID; i=0; while [ $i -lt {N} ]; do /bin/true; i=$((i + 1)); done; \
         kill -CONT $PPID"
    );
    let out = run_with_timeout(
        tracer()
            .arg("run")
            .args(extra)
            .args(["--ring-size", "4K", "--acct-file"])
            .arg(&file)
            .args(["--", "/bin/sh", "-c", &script]),
        Duration::from_secs(180),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stderr
        .lines()
        .find(|l| l.contains(" records written, "))
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (written, lost) = (numbers[0], numbers[1]);
    let pids: BTreeSet<u32> = read_records(&file).iter().map(|r| r.pid).collect();
    assert_eq!(pids.len() as u64, written, "{stderr}");
    assert!(lost > 0, "a 4K ring cannot hold {N} exits:\n{stderr}");
    assert_eq!(
        written + lost,
        N + 1,
        "{N} processes and the shell: each written or counted lost:\n{stderr}"
    );
    (stderr, pids, written, lost)
}

#[test]
fn bpf_log_names_each_lost_record() {
    const NAME: &str = "bpf_log_names_each_lost_record";
    if !require_privileges(NAME, BPF_ONLY) {
        return;
    }
    let dir = TempDir::new("bpf-log");

    let (stderr, written_pids, _, lost) = lossy_run(&dir, &["--bpf-log", "debug"]);
    const PREFIX: &str = "tracer: bpf warn: ring full: exit record of tgid ";
    let named: Vec<u32> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(PREFIX))
        .map(|rest| {
            rest.split(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no tgid in {rest:?}"))
        })
        .collect();
    assert_eq!(
        named.len() as u64,
        lost,
        "one line per lost exit record:\n{stderr}"
    );
    let named: BTreeSet<u32> = named.into_iter().collect();
    assert_eq!(named.len() as u64, lost, "each named once:\n{stderr}");
    assert!(
        named.is_disjoint(&written_pids),
        "a record named lost was written:\n{stderr}"
    );

    // The default: the same losses, counted, and not a word from the
    // programs.
    let (stderr, _, _, _) = lossy_run(&dir, &[]);
    assert!(
        !stderr.contains("tracer: bpf"),
        "--bpf-log is off by default:\n{stderr}"
    );
}
