//! What is measured, and how: the BPF programs' run time and counts
//! (`bpftool prog show`, with `kernel.bpf_stats_enabled`), a tool's CPU
//! time and memory (/proc), how busy the machine is, the records each tool
//! wrote, and the "no lost records" run with the tracer stopped.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use super::{
    workloads::{send_signal, Config, Ctx, Tracer, WORKLOADS},
    STOP,
};

// ---------------------------------------------------------------------------
// What one run measured.

pub(super) struct ProgDelta {
    pub(super) name: String,
    pub(super) run_time_ns: u64,
    pub(super) run_cnt: u64,
}

pub(super) struct Loader {
    /// On-CPU time from attach to the end (sum of /proc/PID/task/*/schedstat).
    pub(super) cpu_steady_s: f64,
    /// utime + stime from /proc/PID/stat just before stopping (whole life,
    /// clock ticks).
    pub(super) cpu_stat_s: f64,
    /// Whole life, final drain included (wait4 rusage after it exited).
    pub(super) cpu_total_s: f64,
    pub(super) hwm_kib: u64,
    /// VmRSS just before stopping.
    pub(super) rss_kib: u64,
}

pub(super) struct Records {
    /// Records the tool wrote (tracer: its summary; exitsnoop: lines;
    /// accton: file records). System-wide: other processes' too.
    pub(super) written: u64,
    pub(super) lost: u64,
    /// Records of the workload's processes (pid or ppid is the workload);
    /// None where the output is not read back (OTLP: the receiver does
    /// not decode).
    pub(super) found: Option<u64>,
    pub(super) expected: u64,
}

pub(super) struct Run {
    pub(super) round: usize,
    pub(super) workload: usize,
    pub(super) config: Config,
    pub(super) n: u64,
    pub(super) cpu_s: f64,
    pub(super) wall_s: f64,
    /// Busy fraction of the machine (all CPUs) in the 0.25 s before the run,
    /// while the bench itself was idle.
    pub(super) busy_before: f64,
    pub(super) bpf: Vec<ProgDelta>,
    pub(super) loader: Option<Loader>,
    pub(super) records: Option<Records>,
    /// What the bench's OTLP receiver took during the run: (requests,
    /// body bytes).
    pub(super) received: Option<(u64, u64)>,
}

impl Run {
    pub(super) fn bpf_ns(&self) -> u64 {
        self.bpf.iter().map(|p| p.run_time_ns).sum()
    }

    /// Tasks that ended system-wide while the tool was measured: the runs of
    /// its exit program (it fires for every task, thread or process, that
    /// ends; the other programs fire at most once per task).
    pub(super) fn tasks_ended(&self) -> u64 {
        let exit = self
            .bpf
            .iter()
            .filter(|p| p.name == "exit_tp_btf" || p.name == "sched_process_exit")
            .map(|p| p.run_cnt)
            .sum::<u64>();
        if exit > 0 {
            exit
        } else {
            self.bpf.iter().map(|p| p.run_cnt).max().unwrap_or(0)
        }
    }
}

// ---------------------------------------------------------------------------
// The machine.

/// Busy fraction of all CPUs over `d`, from /proc/stat.
pub(super) fn busy_fraction(d: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3)? + v.get(4)?;
        Some((total, idle))
    }
    let a = sample();
    thread::sleep(d);
    match (a, sample()) {
        (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => 1.0 - (i1 - i0) as f64 / (t1 - t0) as f64,
        _ => 0.0,
    }
}

pub(super) fn qemu_running() -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .map(|c| c.windows(11).any(|w| w == b"qemu-system"))
            .unwrap_or(false)
    })
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// What the machine was doing at a check point.
pub(super) struct Check {
    /// The round it preceded or interrupted (None: before or after them).
    pub(super) round: Option<usize>,
    pub(super) at_s: f64,
    pub(super) qemu: bool,
    pub(super) busy: f64,
    pub(super) loadavg: String,
    pub(super) waited_s: f64,
}

/// Waits (up to `max`) until no qemu runs and the machine is idle while we
/// are; returns what it saw last.
pub(super) fn wait_quiet(start: Instant, max: Duration) -> Check {
    let t0 = Instant::now();
    loop {
        let qemu = qemu_running();
        let busy = busy_fraction(Duration::from_secs(1));
        let quiet = !qemu && busy < 0.15;
        if quiet || t0.elapsed() >= max || STOP.load(std::sync::atomic::Ordering::Relaxed) {
            if !quiet {
                eprintln!(
                    "bench: machine still busy after {:.0} s (qemu: {qemu}, busy {:.0}%): going on, noted",
                    t0.elapsed().as_secs_f64(),
                    busy * 100.0
                );
            }
            return Check {
                round: None,
                at_s: start.elapsed().as_secs_f64(),
                qemu,
                busy,
                loadavg: loadavg(),
                waited_s: t0.elapsed().as_secs_f64(),
            };
        }
        eprintln!(
            "bench: waiting for a quiet machine (qemu: {qemu}, busy {:.0}%, load {})",
            busy * 100.0,
            loadavg()
        );
        thread::sleep(Duration::from_secs(10));
    }
}

// ---------------------------------------------------------------------------
// Processes under observation.

/// Ids of the BPF programs process `pid` holds (from its fds' fdinfo).
pub(super) fn prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.flatten() {
        let Ok(info) = fs::read_to_string(e.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("prog_id:") {
                if let Ok(id) = v.trim().parse() {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
    }
    ids.sort_unstable();
    ids
}

/// A program's entry in `bpftool prog show --json`: the fields the bench
/// reads. bpftool leaves out run_time_ns and run_cnt while they are zero
/// (kernel.bpf_stats_enabled off, or the program has not run since), and
/// the name of an unnamed program.
#[derive(Deserialize, Debug, PartialEq)]
pub(super) struct ProgCounters {
    id: u32,
    #[serde(default = "unnamed")]
    name: String,
    #[serde(default)]
    run_time_ns: u64,
    #[serde(default)]
    run_cnt: u64,
}

fn unnamed() -> String {
    "?".into()
}

/// The counters of the programs `ids`, by id, from `bpftool prog show
/// --json`.
pub(super) fn bpf_stats(ids: &[u32]) -> Result<BTreeMap<u32, ProgCounters>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("cannot run bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_prog_show(&out.stdout, ids)
}

/// The entries of `ids` in bpftool's `prog show --json` output (an array
/// of every program loaded on the machine).
fn parse_prog_show(json: &[u8], ids: &[u32]) -> Result<BTreeMap<u32, ProgCounters>> {
    let progs: Vec<ProgCounters> =
        serde_json::from_slice(json).context("parsing bpftool prog show --json")?;
    Ok(progs
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .map(|p| (p.id, p))
        .collect())
}

pub(super) fn prog_deltas(
    before: &BTreeMap<u32, ProgCounters>,
    after: &BTreeMap<u32, ProgCounters>,
) -> Vec<ProgDelta> {
    after
        .iter()
        .map(|(id, p)| {
            let (t0, c0) = before
                .get(id)
                .map_or((0, 0), |b| (b.run_time_ns, b.run_cnt));
            ProgDelta {
                name: p.name.clone(),
                run_time_ns: p.run_time_ns.saturating_sub(t0),
                run_cnt: p.run_cnt.saturating_sub(c0),
            }
        })
        .collect()
}

pub(super) fn bpf_stats_on() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// On-CPU ns of all live threads of `pid`.
pub(super) fn schedstat_ns(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of `pid` in seconds (/proc/PID/stat, 100 Hz ticks).
pub(super) fn stat_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub(super) fn vm_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `N records written, M lost` from the tracer's summary line.
pub(super) fn tracer_summary(lines: &[String]) -> Option<(u64, u64)> {
    let line = lines.iter().rev().find(|l| l.contains("records written"))?;
    let rest = line.strip_prefix("tracer: ")?;
    let written = rest.split_whitespace().next()?.parse().ok()?;
    let lost = rest
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((written, lost))
}

/// (records, records of `pid` or its children) of an acct v3 file.
pub(super) fn acct_records(path: &Path, pid: u32) -> (u64, u64) {
    let data = fs::read(path).unwrap_or_default();
    let mut found = 0;
    for r in data.chunks_exact(64) {
        let p = u32::from_le_bytes(r[16..20].try_into().expect("4 bytes"));
        let pp = u32::from_le_bytes(r[20..24].try_into().expect("4 bytes"));
        if p == pid || pp == pid {
            found += 1;
        }
    }
    ((data.len() / 64) as u64, found)
}

/// (exit records, exit records of `pid` or its children) of a JSON lines
/// file.
pub(super) fn json_records(path: &Path, pid: u32) -> (u64, u64) {
    count_exit_events(&fs::read_to_string(path).unwrap_or_default(), pid)
}

/// What the bench reads of a line of `tracer record --json`.
#[derive(Deserialize)]
struct JsonEvent {
    event: String,
    pid: Option<u64>,
    ppid: Option<u64>,
}

fn count_exit_events(text: &str, pid: u32) -> (u64, u64) {
    let (mut all, mut found) = (0, 0);
    // Exit records only: with --json the tracer also writes fork and exec
    // events (lineage), and thread_exit ones with --threads.
    for e in text
        .lines()
        .filter_map(|l| serde_json::from_str::<JsonEvent>(l).ok())
        .filter(|e| e.event == "exit")
    {
        all += 1;
        if e.pid == Some(pid.into()) || e.ppid == Some(pid.into()) {
            found += 1;
        }
    }
    (all, found)
}

/// (lines, lines of `pid` or its children, lost) of exitsnoop's output.
pub(super) fn exitsnoop_records(out: &Path, err: &Path, pid: u32) -> (u64, u64, u64) {
    let text = fs::read_to_string(out).unwrap_or_default();
    let (mut all, mut found) = (0, 0);
    for line in text.lines().skip(1) {
        all += 1;
        let f: Vec<&str> = line.split_whitespace().collect();
        let is = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok()) == Some(pid);
        if is(1) || is(2) {
            found += 1;
        }
    }
    // libbpf-tools: "Lost N events on CPU #C!"
    let lost = fs::read_to_string(err)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split("Lost ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (all, found, lost)
}

// ---------------------------------------------------------------------------
// The "no lost records" scenario.

pub(super) struct StopRun {
    pub(super) ring: &'static str,
    pub(super) n: u64,
    pub(super) in_file: u64,
    pub(super) written: u64,
    pub(super) lost: u64,
    pub(super) stopped_at_records: u64,
    pub(super) status: i32,
    pub(super) wall_s: f64,
    pub(super) summary: String,
}

/// `tracer run --acct-file F [--ring-size R] -- fork_churn N`, with the
/// tracer stopped (SIGSTOP) for 0.5 s once a third of the records are on
/// disk.
pub(super) fn stop_run(ctx: &Ctx, ring: &'static str, n: u64) -> Result<StopRun> {
    let file = ctx.work.join("stop.acct");
    let _ = fs::remove_file(&file);
    let bin = ctx.workload_bin(&WORKLOADS[0]);
    let (file_s, bin_s) = (
        file.to_str().context("path is not UTF-8")?,
        bin.to_str().context("path is not UTF-8")?,
    );
    let n_s = n.to_string();
    let mut args = vec!["run", "--acct-file", file_s];
    if !ring.is_empty() {
        args.extend(["--ring-size", ring]);
    }
    args.extend(["--", bin_s, &n_s]);
    let t0 = Instant::now();
    let tracer = Tracer::spawn(&ctx.tracer, &args)?;
    let third = n / 3 * 64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut size = 0;
    while size < third {
        size = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        if Instant::now() > deadline {
            bail!("the acct file stays at {size} bytes");
        }
        thread::sleep(Duration::from_millis(5));
    }
    send_signal(tracer.pid, libc::SIGSTOP)?;
    thread::sleep(Duration::from_millis(500));
    send_signal(tracer.pid, libc::SIGCONT)?;
    let (_, status, lines) = tracer.stop(None)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let (written, lost) = tracer_summary(&lines)
        .with_context(|| format!("no summary line from the tracer: {lines:?}"))?;
    let in_file = fs::metadata(&file).map(|m| m.len()).unwrap_or(0) / 64;
    let _ = fs::remove_file(&file);
    Ok(StopRun {
        ring: if ring.is_empty() {
            "2M (default)"
        } else {
            ring
        },
        n,
        in_file,
        written,
        lost,
        stopped_at_records: size / 64,
        status,
        wall_s,
        summary: lines
            .iter()
            .rev()
            .find(|l| l.contains("records written"))
            .cloned()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bpftool prog show --json` (bpftool 7) with bpf_stats on: a program
    /// of someone else's, one of ours that ran, one of ours that did not
    /// (no counters) and one without a name. Nested objects (`pids`) and
    /// arrays (`map_ids`) must not be taken for programs.
    const PROG_SHOW: &str = r#"[{"id":11,"type":"cgroup_skb","tag":"6deef7357e7b4530","gpl_compatible":true,"run_time_ns":90211,"run_cnt":310,"loaded_at":1764547200,"uid":0,"orphaned":false,"bytes_xlated":64,"jited":true,"bytes_jited":63,"bytes_memlock":4096,"map_ids":[]},{"id":57,"type":"tracing","name":"exit_tp_btf","tag":"a04f5eef06a7f555","gpl_compatible":true,"run_time_ns":1834211,"run_cnt":12002,"recursion_misses":0,"loaded_at":1764547321,"uid":0,"orphaned":false,"bytes_xlated":1520,"jited":true,"bytes_jited":912,"bytes_memlock":4096,"map_ids":[12,13,14],"btf_id":88,"pids":[{"pid":4242,"comm":"tracer"}]},{"id":58,"type":"tracing","name":"fork_tp_btf","tag":"1c2b7e6f0d9a8b37","gpl_compatible":true,"loaded_at":1764547321,"uid":0,"orphaned":false,"bytes_xlated":408,"jited":true,"bytes_jited":252,"bytes_memlock":4096,"map_ids":[12],"btf_id":88,"pids":[{"pid":4242,"comm":"tracer"}]},{"id":59,"type":"kprobe","tag":"b1f3c9a2e4d5f607","gpl_compatible":true,"run_time_ns":77,"run_cnt":2,"loaded_at":1764547321,"uid":0,"orphaned":false,"bytes_xlated":96,"jited":true,"bytes_jited":80,"bytes_memlock":4096,"map_ids":[]}]"#;

    #[test]
    fn parses_bpftool_prog_show() {
        let progs = parse_prog_show(PROG_SHOW.as_bytes(), &[57, 58, 59, 60]).unwrap();
        let got: Vec<_> = progs.into_values().collect();
        let prog = |id, name: &str, run_time_ns, run_cnt| ProgCounters {
            id,
            name: name.into(),
            run_time_ns,
            run_cnt,
        };
        assert_eq!(
            got,
            [
                prog(57, "exit_tp_btf", 1834211, 12002),
                prog(58, "fork_tp_btf", 0, 0),
                prog(59, "?", 77, 2),
            ]
        );
    }

    #[test]
    fn bpftool_output_that_is_not_json_is_an_error() {
        assert!(parse_prog_show(b"Error: can't get next program", &[1]).is_err());
    }

    #[test]
    fn deltas_count_from_zero_for_programs_loaded_meanwhile() {
        let before = parse_prog_show(PROG_SHOW.as_bytes(), &[57]).unwrap();
        let after = parse_prog_show(
            PROG_SHOW
                .replace(
                    "\"run_time_ns\":1834211,\"run_cnt\":12002",
                    "\"run_time_ns\":1900000,\"run_cnt\":12100",
                )
                .as_bytes(),
            &[57, 59],
        )
        .unwrap();
        let d = prog_deltas(&before, &after);
        let d: Vec<_> = d
            .iter()
            .map(|p| (p.name.as_str(), p.run_time_ns, p.run_cnt))
            .collect();
        assert_eq!(d, [("exit_tp_btf", 65789, 98), ("?", 77, 2)]);
    }

    #[test]
    fn counts_exit_events_of_the_workload() {
        let text = r#"{"event":"fork","time":1764547321.500000000,"parent_pid":100,"parent_tid":100,"child_pid":101}
{"event":"exit","pid":101,"ppid":100,"comm":"fork_churn","ancestry":[{"pid":100,"comm":"fork_churn"}]}
{"event":"thread_exit","time":1764547321.600000000,"pid":100,"tid":102,"comm":"fork_churn","exit_code":0,"cpu_runtime_s":0.000100000}
{"event":"exit","pid":100,"ppid":1,"comm":"fork_churn"}
{"event":"exit","pid":7,"ppid":1,"comm":"cron"}
{"event":"exit","pid":1"#;
        // The truncated last line is not a record.
        assert_eq!(count_exit_events(text, 100), (3, 2));
    }
}
