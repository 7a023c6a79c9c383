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
    /// Records of the workload's processes (pid or ppid is the workload).
    pub(super) found: u64,
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

/// The top-level objects of a JSON array (bpftool's output), as text.
fn json_objects(text: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start, mut in_str, mut esc) = (Vec::new(), 0, 0, false, false);
    for (i, c) in text.char_indices() {
        if in_str {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    out.push(&text[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

/// The first number after `"key":` in `obj`.
fn json_u64(obj: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = obj[obj.find(&pat)? + pat.len()..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn json_str<'a>(obj: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let rest = &obj[obj.find(&pat)? + pat.len()..];
    Some(&rest[..rest.find('"')?])
}

/// (id, name, run_time_ns, run_cnt) of the programs `ids`, from
/// `bpftool prog show --json`.
pub(super) fn bpf_stats(ids: &[u32]) -> Result<BTreeMap<u32, (String, u64, u64)>> {
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
    let text = String::from_utf8_lossy(&out.stdout);
    let mut progs = BTreeMap::new();
    for obj in json_objects(&text) {
        let Some(id) = json_u64(obj, "id") else {
            continue;
        };
        if ids.contains(&(id as u32)) {
            progs.insert(
                id as u32,
                (
                    json_str(obj, "name").unwrap_or("?").to_string(),
                    json_u64(obj, "run_time_ns").unwrap_or(0),
                    json_u64(obj, "run_cnt").unwrap_or(0),
                ),
            );
        }
    }
    Ok(progs)
}

pub(super) fn prog_deltas(
    before: &BTreeMap<u32, (String, u64, u64)>,
    after: &BTreeMap<u32, (String, u64, u64)>,
) -> Vec<ProgDelta> {
    after
        .iter()
        .map(|(id, (name, t, c))| {
            let (t0, c0) = before.get(id).map_or((0, 0), |b| (b.1, b.2));
            ProgDelta {
                name: name.clone(),
                run_time_ns: t.saturating_sub(t0),
                run_cnt: c.saturating_sub(c0),
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
    let text = fs::read_to_string(path).unwrap_or_default();
    let (mut all, mut found) = (0, 0);
    // Exit records only: with --json the tracer also writes fork and exec
    // events (lineage).
    for line in text.lines().filter(|l| l.contains("\"event\":\"exit\"")) {
        all += 1;
        let p = json_u64(line, "pid");
        let pp = json_u64(line, "ppid");
        if p == Some(pid as u64) || pp == Some(pid as u64) {
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
