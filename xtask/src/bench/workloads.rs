//! The workloads (`xtask/bench/*.c`) and the configurations they run
//! under: untraced, under the tracer, exitsnoop or kernel accounting. How a
//! workload is built, started and waited for, how each tool is started and
//! stopped around it; what is read meanwhile is in `measure`.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::measure::{
    acct_records, bpf_stats, bpf_stats_on, exitsnoop_records, json_records, prog_deltas, prog_ids,
    schedstat_ns, stat_cpu_s, tracer_summary, vm_kib, Loader, Records, Run,
};
use super::receiver::Receiver;

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

pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) what: &'static str,
    pub(super) n: u64,
    pub(super) n_quick: u64,
    shape: Shape,
}

pub(super) const WORKLOADS: [Workload; 5] = [
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
    pub(super) fn tasks(&self, n: u64) -> u64 {
        match self.shape {
            Shape::Process | Shape::Thread => n + 1,
            Shape::Group64 => 64 * n + 1,
        }
    }

    /// Thread groups that die: the records every exit tracer must write.
    pub(super) fn processes(&self, n: u64) -> u64 {
        match self.shape {
            Shape::Process | Shape::Group64 => n + 1,
            Shape::Thread => 1,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Config {
    Untraced,
    TracerAcct,
    TracerJson,
    /// `--json` with a filter no exit passes: what a filtered-out process
    /// costs.
    TracerFiltered,
    /// `--otlp` to the bench's own receiver (`receiver`), which answers 200
    /// and discards: what exporting costs the loader.
    TracerOtlp,
    Exitsnoop,
    Accton,
}

pub(super) const CONFIGS: [Config; 7] = [
    Config::Untraced,
    Config::TracerAcct,
    Config::TracerJson,
    Config::TracerFiltered,
    Config::TracerOtlp,
    Config::Exitsnoop,
    Config::Accton,
];

/// A uid no process has, for `Config::TracerFiltered`.
const NOBODY_UID: &str = "4294967200";

impl Config {
    pub(super) fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::TracerAcct => "tracer record --acct-file",
            Config::TracerJson => "tracer record --json",
            Config::TracerFiltered => "tracer record --json, all filtered out",
            Config::TracerOtlp => "tracer record --otlp (local receiver)",
            Config::Exitsnoop => "exitsnoop (libbpf-tools)",
            Config::Accton => "accton (kernel acct)",
        }
    }

    pub(super) fn key(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::TracerAcct => "tracer_acct",
            Config::TracerJson => "tracer_json",
            Config::TracerFiltered => "tracer_filtered",
            Config::TracerOtlp => "tracer_otlp",
            Config::Exitsnoop => "exitsnoop",
            Config::Accton => "accton",
        }
    }

    pub(super) fn is_tracer(self) -> bool {
        matches!(
            self,
            Config::TracerAcct | Config::TracerJson | Config::TracerFiltered | Config::TracerOtlp
        )
    }
}

/// Compiles every workload's C program into `work`.
pub(super) fn compile(root: &Path, work: &Path) -> Result<()> {
    for w in &WORKLOADS {
        crate::run(
            Command::new("cc")
                .args(["-O2", "-pthread", "-o"])
                .arg(work.join(w.name))
                .arg(root.join(format!("xtask/bench/{}.c", w.name))),
        )?;
    }
    Ok(())
}

/// Installs a Debian package when `path` is missing (idempotent).
pub(super) fn ensure_tool(path: &str, package: &str) -> Result<()> {
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

// ---------------------------------------------------------------------------
// Processes: waiting for them (with their CPU time) and signalling them.

/// Waits for the child `pid`; returns its wait status and its CPU time
/// (user + system, its waited-for descendants included) in seconds.
fn wait_child(pid: u32) -> Result<(i32, f64)> {
    let mut status = 0;
    // SAFETY: `rusage` is plain integers (timevals and longs): all zeroes
    // is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: plain syscall wrapper; both pointers are valid for writes.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context(format!("wait4({pid})"));
        }
    }
    let cpu = ru.ru_utime.tv_sec as f64
        + ru.ru_utime.tv_usec as f64 / 1e6
        + ru.ru_stime.tv_sec as f64
        + ru.ru_stime.tv_usec as f64 / 1e6;
    Ok((status, cpu))
}

pub(super) fn send_signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: plain syscall wrapper.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("kill({pid}, {sig})"));
    }
    Ok(())
}

/// A running tracer: its pid and the lines of its standard error.
pub(super) struct Tracer {
    pub(super) pid: u32,
    lines: mpsc::Receiver<String>,
    reader: thread::JoinHandle<Vec<String>>,
}

impl Tracer {
    pub(super) fn spawn(bin: &Path, args: &[&str]) -> Result<Tracer> {
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
    pub(super) fn stop(self, sig: Option<libc::c_int>) -> Result<(f64, i32, Vec<String>)> {
        if let Some(sig) = sig {
            send_signal(self.pid, sig)?;
        }
        let (status, cpu) = wait_child(self.pid)?;
        let lines = self.reader.join().unwrap_or_default();
        Ok((cpu, status, lines))
    }
}

// ---------------------------------------------------------------------------
// One run.

pub(super) struct Ctx {
    pub(super) work: PathBuf,
    pub(super) tracer: PathBuf,
    /// Where `Config::TracerOtlp` sends.
    pub(super) receiver: Receiver,
}

impl Ctx {
    pub(super) fn workload_bin(&self, w: &Workload) -> PathBuf {
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

pub(super) fn run_once(
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
        received: None,
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
        Config::TracerAcct | Config::TracerJson | Config::TracerFiltered | Config::TracerOtlp => {
            let out = ctx.work.join(if config == Config::TracerAcct {
                "run.acct"
            } else {
                "run.json"
            });
            let _ = fs::remove_file(&out);
            let (flag, target) = match config {
                Config::TracerAcct => ("--acct-file", out.to_str()),
                Config::TracerOtlp => ("--otlp", Some(ctx.receiver.url.as_str())),
                _ => ("--json", out.to_str()),
            };
            let target = target.context("work dir path is not UTF-8")?;
            let mut args = vec!["record", flag, target];
            if config == Config::TracerFiltered {
                args.extend(["--uid", NOBODY_UID]);
            }
            let received0 = ctx.receiver.counts();
            let tracer = Tracer::spawn(&ctx.tracer, &args)?;
            if let Err(e) = tracer.ready() {
                let pid = tracer.pid;
                let _ = send_signal(pid, libc::SIGKILL);
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
            let (cpu_total_s, status, lines) = tracer.stop(Some(libc::SIGINT))?;
            let (pid, wall, cpu) = res?;
            if status != 0 {
                bail!(
                    "tracer exited with status {status:#x}: {}",
                    lines.join("\n")
                );
            }
            let (written, lost) = tracer_summary(&lines)
                .with_context(|| format!("no summary line from the tracer: {lines:?}"))?;
            // The receiver does not decode: that the tracer exited 0 says
            // that every record it took reached it (a loss under `otlp`
            // is exit status 3).
            let found = match config {
                Config::TracerAcct => Some(acct_records(&out, pid).1),
                Config::TracerOtlp => None,
                _ => Some(json_records(&out, pid).1),
            };
            let _ = fs::remove_file(&out);
            if config == Config::TracerOtlp {
                let (r0, b0) = received0;
                let (r1, b1) = ctx.receiver.counts();
                run.received = Some((r1 - r0, b1 - b0));
            }
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
            // Filtered out, every one: nothing to find.
            run.records = (config != Config::TracerFiltered).then_some(Records {
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
                    let _ = send_signal(spid, libc::SIGKILL);
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
            send_signal(spid, libc::SIGINT)?;
            let (_, cpu_total_s) = wait_child(spid)?;
            let (pid, wall, cpu) = res?;
            let (written, found, lost) = exitsnoop_records(&out, &err, pid);
            let found = Some(found);
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
            // Filtered out, every one: nothing to find.
            run.records = (config != Config::TracerFiltered).then_some(Records {
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
            let found = Some(found);
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
