//! `cargo xtask bench [--quick]`: what tracing costs the traced.
//!
//! Compiles the workloads in `xtask/bench/*.c`, runs each one untraced,
//! under `tracer record --acct-file`, under `tracer record --json`, under
//! libbpf-tools' `exitsnoop` and with the kernel's own accounting on
//! (`accton`), interleaved round by round, and measures the workload's CPU
//! time (wait4 rusage, children included), the BPF time the programs spend
//! per task (`kernel.bpf_stats_enabled`), the loader's CPU time and peak RSS,
//! and whether every process was recorded. Then `tracer run` with the tracer
//! stopped for half a second in the middle shows that records are either
//! written or counted as lost, never dropped silently.
//!
//! Writes `bench/results/latest.{md,json,svg}`. Needs root.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace_root;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer rounds and smaller workloads, for development (the numbers are
    /// not worth reporting).
    #[arg(long)]
    quick: bool,
    /// Rounds of every configuration (default 7, or 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Longest wait, in seconds, for a quiet machine at the start (a third
    /// of it between rounds); then the bench goes on and notes it.
    #[arg(long, default_value_t = 900)]
    max_wait: u64,
}

// ---------------------------------------------------------------------------
// A few libc calls std does not offer (std links libc anyway).

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

#[repr(C)]
#[derive(Default)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` on 64-bit Linux: two timevals and 14 longs.
#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    _rest: [i64; 13],
}

extern "C" {
    fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGTERM: i32 = 15;
const SIGHUP: i32 = 1;

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_sig: i32) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGINT, SIGTERM and SIGHUP end the bench after the current run, so that
/// what it changed on the machine is restored.
fn catch_stop_signals() {
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal(sig, on_stop) };
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Waits for the child `pid`; returns its wait status and its CPU time
/// (user + system, its waited-for descendants included) in seconds.
fn wait_child(pid: u32) -> Result<(i32, f64)> {
    let mut status = 0;
    let mut ru = Rusage::default();
    loop {
        // SAFETY: plain syscall wrapper; both pointers are valid for writes.
        let r = unsafe { wait4(pid as i32, &mut status, 0, &mut ru) };
        if r == pid as i32 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context(format!("wait4({pid})"));
        }
    }
    let cpu = ru.utime.sec as f64
        + ru.utime.usec as f64 / 1e6
        + ru.stime.sec as f64
        + ru.stime.usec as f64 / 1e6;
    Ok((status, cpu))
}

fn send_signal(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: plain syscall wrapper.
    if unsafe { kill(pid as i32, sig) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("kill({pid}, {sig})"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Workloads and configurations.

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// One child process per iteration (fork, vfork, exec).
    Process,
    /// One thread per iteration, all in the workload's own group.
    Thread,
    /// One child process of 64 threads per iteration.
    Group64,
}

struct Workload {
    name: &'static str,
    what: &'static str,
    n: u64,
    n_quick: u64,
    shape: Shape,
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "fork_churn",
        what: "fork + _exit + wait",
        n: 12_000,
        n_quick: 2_000,
        shape: Shape::Process,
    },
    Workload {
        name: "vfork_churn",
        what: "vfork + _exit + wait",
        n: 40_000,
        n_quick: 6_000,
        shape: Shape::Process,
    },
    Workload {
        name: "thread_churn",
        what: "pthread_create + join",
        n: 35_000,
        n_quick: 6_000,
        shape: Shape::Thread,
    },
    Workload {
        name: "group_churn",
        what: "fork a group of 64 threads that die together (exit_group) + wait",
        n: 500,
        n_quick: 80,
        shape: Shape::Group64,
    },
    Workload {
        name: "exec_churn",
        what: "fork + exec /bin/true + wait",
        n: 2_600,
        n_quick: 400,
        shape: Shape::Process,
    },
];

impl Workload {
    /// Tasks the workload creates and ends, itself included.
    fn tasks(&self, n: u64) -> u64 {
        match self.shape {
            Shape::Process | Shape::Thread => n + 1,
            Shape::Group64 => 64 * n + 1,
        }
    }

    /// Thread groups that die: the records every exit tracer must write.
    fn processes(&self, n: u64) -> u64 {
        match self.shape {
            Shape::Process | Shape::Group64 => n + 1,
            Shape::Thread => 1,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Config {
    Untraced,
    TracerAcct,
    TracerJson,
    Exitsnoop,
    Accton,
}

const CONFIGS: [Config; 5] = [
    Config::Untraced,
    Config::TracerAcct,
    Config::TracerJson,
    Config::Exitsnoop,
    Config::Accton,
];

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::TracerAcct => "tracer record --acct-file",
            Config::TracerJson => "tracer record --json",
            Config::Exitsnoop => "exitsnoop (libbpf-tools)",
            Config::Accton => "accton (kernel acct)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::TracerAcct => "tracer_acct",
            Config::TracerJson => "tracer_json",
            Config::Exitsnoop => "exitsnoop",
            Config::Accton => "accton",
        }
    }

    fn is_tracer(self) -> bool {
        matches!(self, Config::TracerAcct | Config::TracerJson)
    }
}

// ---------------------------------------------------------------------------
// What one run measured.

struct ProgDelta {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

struct Loader {
    /// On-CPU time from attach to the end (sum of /proc/PID/task/*/schedstat).
    cpu_steady_s: f64,
    /// utime + stime from /proc/PID/stat just before stopping (whole life,
    /// clock ticks).
    cpu_stat_s: f64,
    /// Whole life, final drain included (wait4 rusage after it exited).
    cpu_total_s: f64,
    hwm_kib: u64,
    /// VmRSS just before stopping.
    rss_kib: u64,
}

struct Records {
    /// Records the tool wrote (tracer: its summary; exitsnoop: lines;
    /// accton: file records). System-wide: other processes' too.
    written: u64,
    lost: u64,
    /// Records of the workload's processes (pid or ppid is the workload).
    found: u64,
    expected: u64,
}

struct Run {
    round: usize,
    workload: usize,
    config: Config,
    n: u64,
    cpu_s: f64,
    wall_s: f64,
    /// Busy fraction of the machine (all CPUs) in the 0.25 s before the run,
    /// while the bench itself was idle.
    busy_before: f64,
    bpf: Vec<ProgDelta>,
    loader: Option<Loader>,
    records: Option<Records>,
}

impl Run {
    fn bpf_ns(&self) -> u64 {
        self.bpf.iter().map(|p| p.run_time_ns).sum()
    }

    /// Tasks that ended system-wide while the tool was measured: the runs of
    /// its exit program (it fires for every task, thread or process, that
    /// ends; the other programs fire at most once per task).
    fn tasks_ended(&self) -> u64 {
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
fn busy_fraction(d: Duration) -> f64 {
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

fn qemu_running() -> bool {
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
struct Check {
    /// The round it preceded or interrupted (None: before or after them).
    round: Option<usize>,
    at_s: f64,
    qemu: bool,
    busy: f64,
    loadavg: String,
    waited_s: f64,
}

/// Waits (up to `max`) until no qemu runs and the machine is idle while we
/// are; returns what it saw last.
fn wait_quiet(start: Instant, max: Duration) -> Check {
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

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs a Debian package when `path` is missing (idempotent).
fn ensure_tool(path: &str, package: &str) -> Result<()> {
    if Path::new(path).exists() {
        return Ok(());
    }
    eprintln!("bench: {path} missing: installing Debian package {package}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
        if !install() {
            bail!("cannot install {package} (for {path})");
        }
    }
    if !Path::new(path).exists() {
        bail!("{package} is installed but {path} is still missing");
    }
    Ok(())
}

/// Restores `kernel.bpf_stats_enabled`, unmounts tracefs if we mounted it,
/// and turns accounting off if a run left it on.
struct Restore {
    bpf_stats: String,
    unmount_tracefs: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.bpf_stats);
        if self.unmount_tracefs && !succeeds(Command::new("umount").arg("/sys/kernel/tracing")) {
            eprintln!("bench: could not unmount /sys/kernel/tracing (mounted for exitsnoop)");
        }
    }
}

// ---------------------------------------------------------------------------
// Processes under observation.

/// Ids of the BPF programs process `pid` holds (from its fds' fdinfo).
fn prog_ids(pid: u32) -> Vec<u32> {
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
fn bpf_stats(ids: &[u32]) -> Result<BTreeMap<u32, (String, u64, u64)>> {
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

fn prog_deltas(
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

fn bpf_stats_on() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// On-CPU ns of all live threads of `pid`.
fn schedstat_ns(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of `pid` in seconds (/proc/PID/stat, 100 Hz ticks).
fn stat_cpu_s(pid: u32) -> f64 {
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

fn vm_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A running tracer: its pid and the lines of its standard error.
struct Tracer {
    pid: u32,
    lines: mpsc::Receiver<String>,
    reader: thread::JoinHandle<Vec<String>>,
}

impl Tracer {
    fn spawn(bin: &Path, args: &[&str]) -> Result<Tracer> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line.clone());
                all.push(line);
            }
            all
        });
        Ok(Tracer {
            pid: child.id(),
            lines: rx,
            reader,
        })
    }

    /// Waits for `tracer: recording`.
    fn ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == "tracer: recording" => return Ok(()),
                Ok(_) => {}
                Err(e) => bail!("tracer did not start recording ({e})"),
            }
        }
    }

    /// Signals it, waits for it; returns its CPU time (rusage), its exit
    /// status and its standard error.
    fn stop(self, sig: Option<i32>) -> Result<(f64, i32, Vec<String>)> {
        if let Some(sig) = sig {
            send_signal(self.pid, sig)?;
        }
        let (status, cpu) = wait_child(self.pid)?;
        let lines = self.reader.join().unwrap_or_default();
        Ok((cpu, status, lines))
    }
}

/// `N records written, M lost` from the tracer's summary line.
fn tracer_summary(lines: &[String]) -> Option<(u64, u64)> {
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
fn acct_records(path: &Path, pid: u32) -> (u64, u64) {
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
fn json_records(path: &Path, pid: u32) -> (u64, u64) {
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
fn exitsnoop_records(out: &Path, err: &Path, pid: u32) -> (u64, u64, u64) {
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
// One run.

struct Ctx {
    work: PathBuf,
    tracer: PathBuf,
}

impl Ctx {
    fn workload_bin(&self, w: &Workload) -> PathBuf {
        self.work.join(w.name)
    }
}

/// Runs the workload; returns (pid, wall s, CPU s). `started` is called with
/// the pid right after it is created.
fn run_workload(ctx: &Ctx, w: &Workload, n: u64) -> Result<(u32, f64, f64)> {
    let t0 = Instant::now();
    let child = Command::new(ctx.workload_bin(w))
        .arg(n.to_string())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", w.name))?;
    let pid = child.id();
    let (status, cpu) = wait_child(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    if status != 0 {
        bail!("{} {n} failed: wait status {status:#x}", w.name);
    }
    Ok((pid, wall, cpu))
}

/// Gives the tool's timer (the tracer drains every 200 ms) time to deliver
/// the last records before we read its counters.
const SETTLE: Duration = Duration::from_millis(450);

fn run_once(
    ctx: &Ctx,
    wi: usize,
    n: u64,
    config: Config,
    round: usize,
    busy_before: f64,
) -> Result<Run> {
    let w = &WORKLOADS[wi];
    let mut run = Run {
        round,
        workload: wi,
        config,
        n,
        cpu_s: 0.0,
        wall_s: 0.0,
        busy_before,
        bpf: Vec::new(),
        loader: None,
        records: None,
    };
    let expected = w.processes(n);
    // Others on the machine may turn the sysctl off while we run: set it
    // before every run and drop the BPF numbers of a run where it was off.
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    match config {
        Config::Untraced => {
            let (_, wall, cpu) = run_workload(ctx, w, n)?;
            (run.wall_s, run.cpu_s) = (wall, cpu);
        }
        Config::TracerAcct | Config::TracerJson => {
            let out = ctx.work.join(if config == Config::TracerAcct {
                "run.acct"
            } else {
                "run.json"
            });
            let _ = fs::remove_file(&out);
            let flag = if config == Config::TracerAcct {
                "--acct-file"
            } else {
                "--json"
            };
            let out_s = out.to_str().context("work dir path is not UTF-8")?;
            let tracer = Tracer::spawn(&ctx.tracer, &["record", flag, out_s])?;
            if let Err(e) = tracer.ready() {
                let pid = tracer.pid;
                let _ = send_signal(pid, SIGKILL);
                let (_, _, lines) = tracer.stop(None)?;
                bail!("{e}: {}", lines.join("\n"));
            }
            let ids = prog_ids(tracer.pid);
            let before = bpf_stats(&ids)?;
            let cpu0 = schedstat_ns(tracer.pid);
            let res = run_workload(ctx, w, n);
            thread::sleep(SETTLE);
            let after = bpf_stats(&ids)?;
            let cpu1 = schedstat_ns(tracer.pid);
            let cpu_stat_s = stat_cpu_s(tracer.pid);
            let hwm_kib = vm_kib(tracer.pid, "VmHWM:");
            let rss_kib = vm_kib(tracer.pid, "VmRSS:");
            let (cpu_total_s, status, lines) = tracer.stop(Some(SIGINT))?;
            let (pid, wall, cpu) = res?;
            if status != 0 {
                bail!(
                    "tracer exited with status {status:#x}: {}",
                    lines.join("\n")
                );
            }
            let (written, lost) = tracer_summary(&lines)
                .with_context(|| format!("no summary line from the tracer: {lines:?}"))?;
            let (_, found) = if config == Config::TracerAcct {
                acct_records(&out, pid)
            } else {
                json_records(&out, pid)
            };
            let _ = fs::remove_file(&out);
            (run.wall_s, run.cpu_s) = (wall, cpu);
            run.bpf = prog_deltas(&before, &after);
            if !bpf_stats_on() {
                eprintln!("bench: kernel.bpf_stats_enabled was turned off during the run");
                run.bpf.clear();
            }
            run.loader = Some(Loader {
                cpu_steady_s: cpu1.saturating_sub(cpu0) as f64 / 1e9,
                cpu_stat_s,
                cpu_total_s,
                hwm_kib,
                rss_kib,
            });
            run.records = Some(Records {
                written,
                lost,
                found,
                expected,
            });
        }
        Config::Exitsnoop => {
            let out = ctx.work.join("exitsnoop.out");
            let err = ctx.work.join("exitsnoop.err");
            // Line-buffered, as when piped: the header is then on disk once
            // the programs are attached (it is printed after attaching).
            let child = Command::new("stdbuf")
                .args(["-oL", "/usr/sbin/exitsnoop"])
                .stdin(Stdio::null())
                .stdout(fs::File::create(&out)?)
                .stderr(fs::File::create(&err)?)
                .spawn()
                .context("cannot start exitsnoop")?;
            let spid = child.id();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !fs::read_to_string(&out).is_ok_and(|s| s.contains("PCOMM")) {
                if Instant::now() > deadline {
                    let _ = send_signal(spid, SIGKILL);
                    let _ = wait_child(spid);
                    bail!(
                        "exitsnoop did not start: {}",
                        fs::read_to_string(&err).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
            let ids = prog_ids(spid);
            let before = bpf_stats(&ids)?;
            let cpu0 = schedstat_ns(spid);
            let res = run_workload(ctx, w, n);
            thread::sleep(SETTLE);
            let after = bpf_stats(&ids)?;
            let cpu1 = schedstat_ns(spid);
            let cpu_stat_s = stat_cpu_s(spid);
            let hwm_kib = vm_kib(spid, "VmHWM:");
            let rss_kib = vm_kib(spid, "VmRSS:");
            send_signal(spid, SIGINT)?;
            let (_, cpu_total_s) = wait_child(spid)?;
            let (pid, wall, cpu) = res?;
            let (written, found, lost) = exitsnoop_records(&out, &err, pid);
            (run.wall_s, run.cpu_s) = (wall, cpu);
            run.bpf = prog_deltas(&before, &after);
            if !bpf_stats_on() {
                eprintln!("bench: kernel.bpf_stats_enabled was turned off during the run");
                run.bpf.clear();
            }
            run.loader = Some(Loader {
                cpu_steady_s: cpu1.saturating_sub(cpu0) as f64 / 1e9,
                cpu_stat_s,
                cpu_total_s,
                hwm_kib,
                rss_kib,
            });
            run.records = Some(Records {
                written,
                lost,
                found,
                expected,
            });
        }
        Config::Accton => {
            let file = ctx.work.join("kernel.acct");
            fs::write(&file, b"")?;
            crate::run(Command::new("accton").arg(&file).stdout(Stdio::null()))?;
            let res = run_workload(ctx, w, n);
            let off = crate::run(Command::new("accton").arg("off").stdout(Stdio::null()));
            let (pid, wall, cpu) = res?;
            off?;
            let (written, found) = acct_records(&file, pid);
            let _ = fs::remove_file(&file);
            (run.wall_s, run.cpu_s) = (wall, cpu);
            run.records = Some(Records {
                written,
                lost: 0,
                found,
                expected,
            });
        }
    }
    Ok(run)
}

// ---------------------------------------------------------------------------
// The "no lost records" scenario.

struct StopRun {
    ring: &'static str,
    n: u64,
    in_file: u64,
    written: u64,
    lost: u64,
    stopped_at_records: u64,
    status: i32,
    wall_s: f64,
    summary: String,
}

/// `tracer run --acct-file F [--ring-size R] -- fork_churn N`, with the
/// tracer stopped (SIGSTOP) for 0.5 s once a third of the records are on
/// disk.
fn stop_run(ctx: &Ctx, ring: &'static str, n: u64) -> Result<StopRun> {
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
    send_signal(tracer.pid, SIGSTOP)?;
    thread::sleep(Duration::from_millis(500));
    send_signal(tracer.pid, SIGCONT)?;
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

// ---------------------------------------------------------------------------
// Statistics.

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

struct Summary {
    median: f64,
    min: f64,
    max: f64,
    q1: f64,
    q3: f64,
}

fn summarize(values: impl IntoIterator<Item = f64>) -> Summary {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    Summary {
        median: quantile(&v, 0.5),
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
        q1: quantile(&v, 0.25),
        q3: quantile(&v, 0.75),
    }
}

/// Everything the tables say about one workload under one configuration.
struct Cell {
    cpu: Summary,
    wall: Summary,
    cpu_ratio: f64,
    wall_ratio: f64,
    /// BPF ns per task ended system-wide (median over runs), and per
    /// program (ns per task, ns per program run).
    bpf_ns_task: Option<f64>,
    bpf_by_prog: Vec<(String, f64, f64)>,
    /// The programs' time in each run over the untraced median CPU time:
    /// the overhead the tracer puts into the workload's own tasks (the
    /// exit, stamp and fork programs run in them), measured exactly
    /// rather than as the difference of two noisy totals.
    bpf_share: Option<Summary>,
    loader_s_per_m: Option<f64>,
    loader_hwm_mib: Option<f64>,
    loader_rss_mib: Option<f64>,
    startup_s: Option<f64>,
    written: Option<f64>,
    lost_total: u64,
    complete_runs: usize,
    runs: usize,
    found_min: u64,
    expected: u64,
}

fn cell(runs: &[&Run], untraced: Option<(f64, f64)>, w: &Workload) -> Cell {
    let cpu = summarize(runs.iter().map(|r| r.cpu_s));
    let wall = summarize(runs.iter().map(|r| r.wall_s));
    let (cpu_ratio, wall_ratio) = untraced.map_or((f64::NAN, f64::NAN), |(c, w)| {
        (cpu.median / c, wall.median / w)
    });
    // Runs without BPF numbers (the sysctl was turned off) do not count.
    let runs_bpf: Vec<&Run> = runs.iter().copied().filter(|r| !r.bpf.is_empty()).collect();
    let has_bpf = !runs_bpf.is_empty();
    let per_task = |r: &Run, ns: f64| ns / r.tasks_ended().max(1) as f64;
    let bpf_ns_task =
        has_bpf.then(|| summarize(runs_bpf.iter().map(|r| per_task(r, r.bpf_ns() as f64))).median);
    let bpf_share = untraced
        .filter(|_| has_bpf)
        .map(|(c, _)| summarize(runs_bpf.iter().map(|r| r.bpf_ns() as f64 / 1e9 / c)));
    let mut names: Vec<String> = runs
        .iter()
        .flat_map(|r| r.bpf.iter().map(|p| p.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    let bpf_by_prog = names
        .into_iter()
        .map(|name| {
            let by_task = summarize(runs_bpf.iter().map(|r| {
                per_task(
                    r,
                    r.bpf
                        .iter()
                        .filter(|p| p.name == name)
                        .map(|p| p.run_time_ns as f64)
                        .sum::<f64>(),
                )
            }))
            .median;
            let per_run = summarize(runs_bpf.iter().filter_map(|r| {
                let (t, c) = r
                    .bpf
                    .iter()
                    .filter(|p| p.name == name)
                    .fold((0, 0), |(t, c), p| (t + p.run_time_ns, c + p.run_cnt));
                (c > 0).then(|| t as f64 / c as f64)
            }))
            .median;
            (name, by_task, per_run)
        })
        .collect();
    let loaders: Vec<(&Run, &Loader)> = runs
        .iter()
        .filter_map(|r| r.loader.as_ref().map(|l| (*r, l)))
        .collect();
    let loader_s_per_m = (!loaders.is_empty()).then(|| {
        summarize(
            loaders
                .iter()
                .map(|(r, l)| l.cpu_steady_s / r.tasks_ended().max(w.tasks(r.n)) as f64 * 1e6),
        )
        .median
    });
    let loader_hwm_mib = (!loaders.is_empty())
        .then(|| loaders.iter().map(|(_, l)| l.hwm_kib).max().unwrap_or(0) as f64 / 1024.0);
    let loader_rss_mib = (!loaders.is_empty())
        .then(|| loaders.iter().map(|(_, l)| l.rss_kib).max().unwrap_or(0) as f64 / 1024.0);
    let startup_s = (!loaders.is_empty()).then(|| {
        summarize(
            loaders
                .iter()
                .map(|(_, l)| (l.cpu_total_s - l.cpu_steady_s).max(0.0)),
        )
        .median
    });
    let recs: Vec<&Records> = runs.iter().filter_map(|r| r.records.as_ref()).collect();
    Cell {
        cpu,
        wall,
        cpu_ratio,
        wall_ratio,
        bpf_ns_task,
        bpf_by_prog,
        bpf_share,
        loader_s_per_m,
        loader_hwm_mib,
        loader_rss_mib,
        startup_s,
        written: (!recs.is_empty())
            .then(|| summarize(recs.iter().map(|r| r.written as f64)).median),
        lost_total: recs.iter().map(|r| r.lost).sum(),
        // More than expected: a pid reused by an unrelated process in the
        // window matched too.
        complete_runs: recs.iter().filter(|r| r.found >= r.expected).count(),
        runs: recs.len(),
        found_min: recs.iter().map(|r| r.found).min().unwrap_or(0),
        expected: recs.first().map_or(0, |r| r.expected),
    }
}

// ---------------------------------------------------------------------------
// The command.

pub fn bench(args: BenchArgs) -> Result<()> {
    let root = workspace_root();
    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 2 } else { 7 });
    let start = Instant::now();

    ensure_tool("/usr/bin/cc", "gcc")?;
    ensure_tool("/usr/sbin/exitsnoop", "libbpf-tools")?;
    ensure_tool("/usr/sbin/accton", "acct")?;
    ensure_tool("/usr/sbin/bpftool", "bpftool")?;

    let work = root.join("target/bench");
    fs::create_dir_all(&work)?;
    for w in &WORKLOADS {
        crate::run(
            Command::new("cc")
                .args(["-O2", "-pthread", "-o"])
                .arg(work.join(w.name))
                .arg(root.join(format!("xtask/bench/{}.c", w.name))),
        )?;
    }
    crate::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "tracer",
    ]))?;
    // A copy: others may rebuild target/release/tracer while we measure.
    let tracer = work.join("tracer");
    fs::copy(root.join("target/release/tracer"), &tracer).context("copying the tracer")?;
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "tracer",
        "tracer-ebpf",
        "tracer-common",
    ]);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();

    catch_stop_signals();
    let mut restore = Restore {
        bpf_stats: fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .context("reading kernel.bpf_stats_enabled (root needed)")?,
        unmount_tracefs: false,
    };
    fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("enabling kernel.bpf_stats_enabled")?;
    // exitsnoop attaches a classic tracepoint: it needs tracefs.
    if !Path::new("/sys/kernel/tracing/events/sched").exists() {
        crate::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
        restore.unmount_tracefs = true;
    }

    let ctx = Ctx { work, tracer };
    let max_wait = Duration::from_secs(args.max_wait);
    let mut checks = vec![wait_quiet(start, max_wait)];
    let mut runs: Vec<Run> = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            let mut c = wait_quiet(start, max_wait / 3);
            c.round = Some(round);
            checks.push(c);
        }
        for (wi, w) in WORKLOADS.iter().enumerate() {
            let n = if quick { w.n_quick } else { w.n };
            for k in 0..CONFIGS.len() {
                let config = CONFIGS[(round + wi + k) % CONFIGS.len()];
                // Before every run: wait (up to 2 min) while others load the
                // machine.
                let mut busy = busy_fraction(Duration::from_millis(250));
                if busy > 0.25 || qemu_running() {
                    // Once a wait has run out, do not wait again before
                    // every run (only check), until the machine is quiet.
                    let last_quiet = checks.last().is_none_or(|c| !c.qemu && c.busy < 0.15);
                    let c = wait_quiet(
                        start,
                        if last_quiet {
                            max_wait / 6
                        } else {
                            Duration::ZERO
                        },
                    );
                    busy = c.busy;
                    checks.push(Check {
                        round: Some(round),
                        ..c
                    });
                }
                check_stop()?;
                let r = run_once(&ctx, wi, n, config, round, busy)
                    .with_context(|| format!("{} under {}", w.name, config.label()))?;
                eprintln!(
                    "bench: round {}/{rounds} {:<13} {:<26} cpu {:.3} s wall {:.3} s bpf {} ns{}",
                    round + 1,
                    w.name,
                    config.label(),
                    r.cpu_s,
                    r.wall_s,
                    r.bpf_ns(),
                    r.records.as_ref().map_or(String::new(), |x| format!(
                        " records {} lost {} workload {}/{}",
                        x.written, x.lost, x.found, x.expected
                    ))
                );
                runs.push(r);
            }
        }
    }

    checks.push(wait_quiet(start, max_wait / 3));
    let stop_n = if quick { 6_000 } else { 30_000 };
    let mut stops = Vec::new();
    for _ in 0..if quick { 1 } else { 2 } {
        for ring in ["", "256K"] {
            check_stop()?;
            let s = stop_run(&ctx, ring, stop_n)?;
            eprintln!("bench: stopped tracer, ring {}: {}", s.ring, s.summary);
            stops.push(s);
        }
    }
    checks.push(wait_quiet(start, Duration::ZERO));
    drop(restore);

    let report = Report {
        quick,
        max_wait_s: args.max_wait,
        rounds,
        commit,
        dirty,
        kernel,
        checks,
        runs,
        stops,
        duration_s: start.elapsed().as_secs_f64(),
    };
    let dir = root.join("bench/results");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("latest.md"), report.markdown())?;
    fs::write(dir.join("latest.json"), report.json())?;
    fs::write(dir.join("latest.svg"), report.svg())?;
    eprintln!("bench: wrote bench/results/latest.md, latest.json, latest.svg");
    Ok(())
}

// ---------------------------------------------------------------------------
// Reports.

struct Report {
    quick: bool,
    max_wait_s: u64,
    rounds: usize,
    commit: String,
    dirty: String,
    kernel: String,
    checks: Vec<Check>,
    runs: Vec<Run>,
    stops: Vec<StopRun>,
    duration_s: f64,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Target: BPF ns per task on these workloads.
const BPF_TARGET_NS: f64 = 300.0;
const LOADER_TARGET_S_PER_M: f64 = 0.3;
const RSS_TARGET_MIB: f64 = 16.0;
const CPU_TARGET_RATIO: f64 = 1.01;

impl Report {
    fn cells(&self, wi: usize) -> Vec<(Config, Cell)> {
        let w = &WORKLOADS[wi];
        let of = |c: Config| -> Vec<&Run> {
            self.runs
                .iter()
                .filter(|r| r.workload == wi && r.config == c)
                .collect()
        };
        let base = of(Config::Untraced);
        let untraced = (!base.is_empty()).then(|| {
            (
                summarize(base.iter().map(|r| r.cpu_s)).median,
                summarize(base.iter().map(|r| r.wall_s)).median,
            )
        });
        CONFIGS
            .iter()
            .map(|&c| (c, cell(&of(c), untraced, w)))
            .filter(|(_, cell)| cell.cpu.median.is_finite())
            .collect()
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# tracer: benchmark results\n");
        let _ = writeln!(
            s,
            "`cargo xtask bench{}`: {} interleaved rounds (every configuration once per round, in rotating order), \
             kernel {}, tracer at {}{}; {:.0} s in all.\n",
            if self.quick { " --quick" } else { "" },
            self.rounds,
            self.kernel,
            self.commit,
            if self.dirty.is_empty() {
                String::new()
            } else {
                format!(
                    " plus uncommitted changes to {} files under tracer*/",
                    self.dirty.lines().count()
                )
            },
            self.duration_s
        );
        if self.quick {
            let _ = writeln!(
                s,
                "**--quick: small workloads, few rounds; not for reporting.**\n"
            );
        }
        let _ = writeln!(
            s,
            "Workload CPU = user + system time of the workload process and its children \
             (wait4 rusage; the exit programs run in the exiting task, so their cost is in it). \
             Spread = min–max over the rounds. Ratio = median / untraced median. \
             BPF ns/task = run_time_ns of the tool's programs (kernel.bpf_stats_enabled=1, \
             from `bpftool prog show` before and after the workload) over the tasks that ended \
             meanwhile, system-wide (the runs of the exit program, which fires once for every \
             thread or process that ends: the workload's tasks plus the few of the rest of the \
             machine); per program in brackets, with ns per program run after the @. \
             BPF share = that run time over the untraced median CPU time (median, spread): \
             the CPU the programs add to the workload's own tasks, which is where the exit \
             and fork programs run. \
             Loader CPU = on-CPU time of the tool's process from attach to the end \
             (/proc/PID/task/*/schedstat, exact; /proc/PID/stat ticks are in latest.json), \
             per million tasks ended (same count, at least the workload's); its start-up \
             cost (BTF, loading) is separate. \
             Peak RSS = VmHWM just before stopping, worst run (VmRSS then in brackets). \
             Records = median written per run (system-wide: other processes too) / lost in all runs; \
             then in how many runs every process of the workload (pid or ppid = the workload) was found.\n"
        );
        for (wi, w) in WORKLOADS.iter().enumerate() {
            let cells = self.cells(wi);
            let Some(n) = self.runs.iter().find(|r| r.workload == wi).map(|r| r.n) else {
                continue;
            };
            let _ = writeln!(
                s,
                "## {} ({}, N = {}: {} tasks, {} processes)\n",
                w.name,
                w.what,
                thousands(n),
                thousands(w.tasks(n)),
                thousands(w.processes(n))
            );
            let _ = writeln!(
                s,
                "| configuration | CPU s (median) | spread min–max (IQR) | CPU ratio | wall s | wall ratio | BPF ns/task | BPF share of untraced CPU | loader CPU s / M tasks | loader start-up CPU s | loader peak RSS MiB (RSS at end) | records / lost | all processes recorded |"
            );
            let _ = writeln!(
                s,
                "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"
            );
            for (c, x) in &cells {
                let bpf = match x.bpf_ns_task {
                    None => "–".to_string(),
                    Some(t) => {
                        let parts: Vec<String> = x
                            .bpf_by_prog
                            .iter()
                            .map(|(name, per_task, per_run)| {
                                format!("{name} {per_task:.0} @{per_run:.0}")
                            })
                            .collect();
                        format!("**{t:.0}** ({})", parts.join(", "))
                    }
                };
                let records = match x.written {
                    None => "–".into(),
                    Some(wr) => format!("{} / {}", thousands(wr as u64), thousands(x.lost_total)),
                };
                let complete = if x.runs == 0 {
                    "–".into()
                } else if x.complete_runs == x.runs {
                    format!("yes, {}/{} runs", x.complete_runs, x.runs)
                } else {
                    format!(
                        "**no**: {}/{} runs complete, worst {}/{}",
                        x.complete_runs,
                        x.runs,
                        thousands(x.found_min),
                        thousands(x.expected)
                    )
                };
                let _ = writeln!(
                    s,
                    "| {} | {:.3} | {:.3}–{:.3} ({:.3}–{:.3}) | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                    c.label(),
                    x.cpu.median,
                    x.cpu.min,
                    x.cpu.max,
                    x.cpu.q1,
                    x.cpu.q3,
                    x.cpu_ratio,
                    x.wall.median,
                    x.wall_ratio,
                    bpf,
                    x.bpf_share.as_ref().map_or("–".into(), |b| format!(
                        "{:.2}% ({:.2}–{:.2})",
                        b.median * 100.0,
                        b.min * 100.0,
                        b.max * 100.0
                    )),
                    opt(x.loader_s_per_m, 3),
                    opt(x.startup_s, 2),
                    opt(x.loader_hwm_mib, 1),
                    opt(x.loader_rss_mib, 1),
                    records,
                    complete
                );
            }
            let _ = writeln!(s);
        }

        let _ = writeln!(
            s,
            "## No lost records: `tracer run` with the tracer stopped\n"
        );
        let _ = writeln!(
            s,
            "`tracer run --acct-file F [--ring-size R] -- fork_churn N`; once a third of the records \
             were in F, the tracer was stopped (SIGSTOP) for 0.5 s and resumed (SIGCONT). \
             Expected: N + 1 records (the children and fork_churn itself), and written + lost = N + 1.\n"
        );
        let _ = writeln!(
            s,
            "| ring | N | stopped at | records in F (size / 64) | reported written | reported lost | written + lost | exact | exit status |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|---:|");
        for x in &self.stops {
            let exact = x.in_file == x.written && x.written + x.lost == x.n + 1;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                x.ring,
                thousands(x.n),
                thousands(x.stopped_at_records),
                thousands(x.in_file),
                thousands(x.written),
                thousands(x.lost),
                thousands(x.written + x.lost),
                if exact { "yes" } else { "**no**" },
                x.status >> 8
            );
        }
        let _ = writeln!(s);

        let _ = writeln!(s, "## Targets\n");
        let _ = writeln!(s, "| target | measured | met |");
        let _ = writeln!(s, "|---|---|---|");
        for (what, measured, met) in self.targets() {
            let _ = writeln!(
                s,
                "| {what} | {measured} | {} |",
                if met { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(s);

        let _ = writeln!(s, "## Conditions\n");
        let _ = writeln!(
            s,
            "2-core machine shared with other engineers. Quiet check before every round \
             (no `qemu-system` process, machine busy < 15% over 1 s while the bench is idle; \
             wait up to {} s at the start, {} s between rounds, then go on and note it), \
             and before every run (when the 0.25 s before it were more than 25% busy or qemu runs, \
             the same check, up to {} s): every check that waited or found the machine busy is listed. \
             kernel.bpf_stats_enabled was 1 for every configuration (it adds two clock reads \
             to every BPF program run, other programs on the machine included) and was restored after. \
             exitsnoop runs under `stdbuf -oL` with its output in a file; tracefs was mounted for it if it was not.\n",
            self.max_wait_s,
            self.max_wait_s / 3,
            self.max_wait_s / 6
        );
        let _ = writeln!(
            s,
            "| at s | qemu running | busy | load average | waited s |"
        );
        let _ = writeln!(s, "|---:|---|---:|---|---:|");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {:.0} | {} | {:.0}% | {} | {:.0} |",
                c.at_s,
                if c.qemu { "**yes**" } else { "no" },
                c.busy * 100.0,
                c.loadavg,
                c.waited_s
            );
        }
        let _ = writeln!(
            s,
            "\n| round | runs | machine busy before its runs: median | max | checks that saw qemu |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|");
        for round in 0..self.rounds {
            let runs: Vec<&Run> = self.runs.iter().filter(|r| r.round == round).collect();
            let b = summarize(runs.iter().map(|r| r.busy_before));
            let _ = writeln!(
                s,
                "| {} | {} | {:.0}% | {:.0}% | {} |",
                round + 1,
                runs.len(),
                b.median * 100.0,
                b.max * 100.0,
                self.checks
                    .iter()
                    .filter(|c| c.qemu && c.round == Some(round))
                    .count()
            );
        }
        let busy = summarize(self.runs.iter().map(|r| r.busy_before));
        let _ = writeln!(
            s,
            "\nBusy fraction of the machine in the 0.25 s before each run (bench idle): median {:.0}%, max {:.0}%.",
            busy.median * 100.0,
            busy.max * 100.0
        );
        s
    }

    /// (target, measured, met).
    fn targets(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        let tracer_cells: Vec<(usize, Config, Cell)> = (0..WORKLOADS.len())
            .flat_map(|wi| {
                self.cells(wi)
                    .into_iter()
                    .filter(|(c, _)| c.is_tracer())
                    .map(move |(c, x)| (wi, c, x))
            })
            .collect();
        for name in ["vfork_churn", "thread_churn"] {
            let vals: Vec<String> = tracer_cells
                .iter()
                .filter(|(wi, _, _)| WORKLOADS[*wi].name == name)
                .map(|(_, c, x)| format!("{}: {} ns", c.key(), opt(x.bpf_ns_task, 0)))
                .collect();
            let met = tracer_cells
                .iter()
                .filter(|(wi, _, _)| WORKLOADS[*wi].name == name)
                .all(|(_, _, x)| x.bpf_ns_task.is_some_and(|v| v <= BPF_TARGET_NS));
            out.push((
                format!("BPF time <= {BPF_TARGET_NS:.0} ns per task on {name}"),
                vals.join(", "),
                met,
            ));
        }
        let worst = |f: &dyn Fn(&Cell) -> Option<f64>| {
            tracer_cells
                .iter()
                .filter_map(|(wi, c, x)| f(x).map(|v| (v, *wi, *c)))
                .max_by(|a, b| a.0.total_cmp(&b.0))
        };
        if let Some((v, wi, c)) = worst(&|x| x.loader_s_per_m) {
            out.push((
                format!("loader CPU <= {LOADER_TARGET_S_PER_M} CPU-s per million tasks"),
                format!("worst {v:.3} ({}, {})", WORKLOADS[wi].name, c.key()),
                v <= LOADER_TARGET_S_PER_M,
            ));
        }
        if let Some((v, wi, c)) = worst(&|x| x.loader_hwm_mib) {
            out.push((
                format!("loader peak RSS <= {RSS_TARGET_MIB:.0} MiB"),
                format!("worst {v:.1} MiB ({}, {})", WORKLOADS[wi].name, c.key()),
                v <= RSS_TARGET_MIB,
            ));
        }
        let ratios: Vec<String> = tracer_cells
            .iter()
            .map(|(wi, c, x)| format!("{} {}: {:.3}", WORKLOADS[*wi].name, c.key(), x.cpu_ratio))
            .collect();
        out.push((
            "workload CPU within 1% of untraced (median ratio <= 1.01)".into(),
            ratios.join("; "),
            tracer_cells
                .iter()
                .all(|(_, _, x)| x.cpu_ratio <= CPU_TARGET_RATIO),
        ));
        if let Some((v, wi, c)) = worst(&|x| x.bpf_share.as_ref().map(|b| b.median)) {
            out.push((
                "BPF time within 1% of the untraced workload CPU (what the programs add to \
                 the workload's tasks; not the end-to-end target above)"
                    .into(),
                format!(
                    "worst median {:.2}% ({}, {})",
                    v * 100.0,
                    WORKLOADS[wi].name,
                    c.key()
                ),
                v <= CPU_TARGET_RATIO - 1.0,
            ));
        }
        let lost: u64 = tracer_cells.iter().map(|(_, _, x)| x.lost_total).sum();
        let incomplete: usize = tracer_cells
            .iter()
            .map(|(_, _, x)| x.runs - x.complete_runs)
            .sum();
        let default_ring: Vec<&StopRun> = self
            .stops
            .iter()
            .filter(|s| s.ring.starts_with("2M"))
            .collect();
        let stop_ok = default_ring
            .iter()
            .all(|s| s.in_file == s.n + 1 && s.lost == 0);
        let small_exact = self
            .stops
            .iter()
            .all(|s| s.in_file == s.written && s.written + s.lost == s.n + 1);
        out.push((
            "no lost records".into(),
            format!(
                "record runs: {lost} lost, {incomplete} runs missing a workload process; \
                 stopped tracer, default ring: {}; every stopped run counted exactly: {}",
                default_ring
                    .iter()
                    .map(|s| format!("{}/{} in file, {} lost", s.in_file, s.n + 1, s.lost))
                    .collect::<Vec<_>>()
                    .join(", "),
                if small_exact { "yes" } else { "no" }
            ),
            lost == 0 && incomplete == 0 && stop_ok && small_exact,
        ));
        out
    }

    fn json(&self) -> String {
        let mut s = String::new();
        let esc = |t: &str| {
            t.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                "null".into()
            }
        };
        let _ = write!(
            s,
            "{{\"quick\":{},\"rounds\":{},\"commit\":\"{}\",\"dirty\":\"{}\",\"kernel\":\"{}\",\"duration_s\":{},",
            self.quick,
            self.rounds,
            esc(&self.commit),
            esc(&self.dirty),
            esc(&self.kernel),
            num(self.duration_s)
        );
        let _ = write!(s, "\"workloads\":[");
        for (i, w) in WORKLOADS.iter().enumerate() {
            let n = if self.quick { w.n_quick } else { w.n };
            let _ = write!(
                s,
                "{}{{\"name\":\"{}\",\"what\":\"{}\",\"n\":{},\"tasks\":{},\"processes\":{}}}",
                if i > 0 { "," } else { "" },
                w.name,
                esc(w.what),
                n,
                w.tasks(n),
                w.processes(n)
            );
        }
        let _ = write!(s, "],\"checks\":[");
        for (i, c) in self.checks.iter().enumerate() {
            let _ = write!(
                s,
                "{}{{\"at_s\":{},\"qemu\":{},\"busy\":{},\"loadavg\":\"{}\",\"waited_s\":{}}}",
                if i > 0 { "," } else { "" },
                num(c.at_s),
                c.qemu,
                num(c.busy),
                c.loadavg,
                num(c.waited_s)
            );
        }
        let _ = write!(s, "],\"runs\":[");
        for (i, r) in self.runs.iter().enumerate() {
            let _ = write!(
                s,
                "{}\n{{\"round\":{},\"workload\":\"{}\",\"config\":\"{}\",\"n\":{},\"tasks\":{},\"tasks_ended_system_wide\":{},\"cpu_s\":{},\"wall_s\":{},\"busy_before\":{},\"bpf\":[",
                if i > 0 { "," } else { "" },
                r.round,
                WORKLOADS[r.workload].name,
                r.config.key(),
                r.n,
                WORKLOADS[r.workload].tasks(r.n),
                r.tasks_ended(),
                num(r.cpu_s),
                num(r.wall_s),
                num(r.busy_before)
            );
            for (j, p) in r.bpf.iter().enumerate() {
                let _ = write!(
                    s,
                    "{}{{\"name\":\"{}\",\"run_time_ns\":{},\"run_cnt\":{}}}",
                    if j > 0 { "," } else { "" },
                    esc(&p.name),
                    p.run_time_ns,
                    p.run_cnt
                );
            }
            let _ = write!(s, "],\"loader\":");
            match &r.loader {
                None => s.push_str("null"),
                Some(l) => {
                    let _ = write!(
                        s,
                        "{{\"cpu_steady_s\":{},\"cpu_stat_s\":{},\"cpu_total_s\":{},\"vm_hwm_kib\":{},\"vm_rss_kib\":{}}}",
                        num(l.cpu_steady_s),
                        num(l.cpu_stat_s),
                        num(l.cpu_total_s),
                        l.hwm_kib,
                        l.rss_kib
                    );
                }
            }
            let _ = write!(s, ",\"records\":");
            match &r.records {
                None => s.push_str("null"),
                Some(x) => {
                    let _ = write!(
                        s,
                        "{{\"written\":{},\"lost\":{},\"found\":{},\"expected\":{}}}",
                        x.written, x.lost, x.found, x.expected
                    );
                }
            }
            s.push('}');
        }
        let _ = write!(s, "],\n\"stopped_tracer\":[");
        for (i, x) in self.stops.iter().enumerate() {
            let _ = write!(
                s,
                "{}\n{{\"ring\":\"{}\",\"n\":{},\"expected\":{},\"stopped_at_records\":{},\"in_file\":{},\"written\":{},\"lost\":{},\"exit_status\":{},\"wall_s\":{},\"summary\":\"{}\"}}",
                if i > 0 { "," } else { "" },
                x.ring,
                x.n,
                x.n + 1,
                x.stopped_at_records,
                x.in_file,
                x.written,
                x.lost,
                x.status >> 8,
                num(x.wall_s),
                esc(&x.summary)
            );
        }
        s.push_str("]}\n");
        s
    }

    /// Bars of the workload-CPU overhead (median ratio - 1, in percent) per
    /// workload and configuration.
    fn svg(&self) -> String {
        let shown = [
            (Config::TracerAcct, "#1f77b4"),
            (Config::TracerJson, "#6baed6"),
            (Config::Exitsnoop, "#d62728"),
            (Config::Accton, "#7f7f7f"),
        ];
        let groups: Vec<(&str, Vec<f64>)> = (0..WORKLOADS.len())
            .filter_map(|wi| {
                let cells = self.cells(wi);
                if cells.is_empty() {
                    return None;
                }
                let vals = shown
                    .iter()
                    .map(|(c, _)| {
                        cells
                            .iter()
                            .find(|(cc, _)| cc == c)
                            .map_or(f64::NAN, |(_, x)| (x.cpu_ratio - 1.0) * 100.0)
                    })
                    .collect();
                Some((WORKLOADS[wi].name, vals))
            })
            .collect();
        let finite = groups
            .iter()
            .flat_map(|g| g.1.iter())
            .filter(|v| v.is_finite());
        let hi = finite.clone().fold(2.0f64, |a, &b| a.max(b));
        let lo = finite.fold(-1.0f64, |a, &b| a.min(b));
        // Grid lines at a round step (1, 2, 5, 10, 20, 50... %).
        let raw = (hi - lo) / 8.0;
        let step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
            .into_iter()
            .find(|&s| s >= raw)
            .unwrap_or(1000.0);
        let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let (width, height) = (160 * groups.len().max(1) + 120, 420.0);
        let (top, bottom, left) = (50.0, 340.0, 70.0);
        let y = |v: f64| top + (hi - v) / (hi - lo) * (bottom - top);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"{left}\" y=\"24\" font-size=\"15\">Workload CPU time overhead vs untraced (median of {} rounds, %)</text>",
            self.rounds
        );
        let mut t = lo;
        while t <= hi + 1e-9 {
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t:+.0}%</text>",
                width - 20,
                y(t),
                y(t),
                left - 6.0,
                y(t) + 4.0
            );
            t += step;
        }
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
            width - 20,
            y(0.0),
            y(0.0)
        );
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"green\" stroke-dasharray=\"5,4\"/><text x=\"{}\" y=\"{:.1}\" fill=\"green\" text-anchor=\"end\">target +1%</text>",
            width - 20,
            y(1.0),
            y(1.0),
            width - 22,
            y(1.0) - 4.0
        );
        for (gi, (name, vals)) in groups.iter().enumerate() {
            let x0 = left + 20.0 + gi as f64 * 160.0;
            for (bi, v) in vals.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let x = x0 + bi as f64 * 30.0;
                let (y0, y1) = (y(0.0).min(y(*v)), y(0.0).max(y(*v)));
                let _ = writeln!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{y0:.1}\" width=\"26\" height=\"{:.1}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{v:+.1}</text>",
                    (y1 - y0).max(0.5),
                    shown[bi].1,
                    x + 13.0,
                    if *v >= 0.0 { y0 - 3.0 } else { y1 + 11.0 }
                );
            }
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
                x0 + 58.0,
                bottom + 22.0
            );
        }
        for (i, (c, color)) in shown.iter().enumerate() {
            let x = left + i as f64 * 190.0;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                bottom + 45.0,
                x + 16.0,
                bottom + 56.0,
                c.label()
            );
        }
        s.push_str("</svg>\n");
        s
    }
}
