//! `cargo xtask bench [--quick]`: what tracing costs the traced.
//!
//! Compiles the workloads in `xtask/bench/*.c`, runs each one untraced,
//! under `tracer record --acct-file`, under `tracer record --json` (and
//! with a filter that passes nothing), under `tracer record --otlp` to a
//! receiver of the bench's own (`receiver`), under
//! libbpf-tools' `exitsnoop` and with the kernel's own accounting on
//! (`accton`), interleaved round by round, and measures the workload's CPU
//! time (wait4 rusage, children included), the BPF time the programs spend
//! per task (`kernel.bpf_stats_enabled`), the loader's CPU time and peak RSS,
//! and whether every process was recorded. Then `tracer run` with the tracer
//! stopped for half a second in the middle shows that records are either
//! written or counted as lost, never dropped silently.
//!
//! Writes `bench/results/latest.{md,json,svg}`. Needs root.

//!
//! The parts: `workloads` (what runs, and how each configuration runs it),
//! `measure` (what is read from the kernel and from the tools' output),
//! `report` (statistics and the files written). This module only wires
//! them together: setup, the rounds, restoring the machine.

mod measure;
mod receiver;
mod report;
mod workloads;

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace_root;
use measure::{busy_fraction, qemu_running, stop_run, wait_quiet, Check, Run};
use report::Report;
use workloads::{ensure_tool, run_once, Ctx, CONFIGS, WORKLOADS};

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
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

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_sig: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// SIGINT, SIGTERM and SIGHUP end the bench after the current run, so that
/// what it changed on the machine is restored.
fn catch_stop_signals() {
    // libc takes the handler as an address.
    let handler: extern "C" fn(libc::c_int) = on_stop;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
// The command.

pub(crate) fn bench(args: BenchArgs) -> Result<()> {
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
    workloads::compile(&root, &work)?;
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

    let ctx = Ctx {
        work,
        tracer,
        receiver: receiver::Receiver::start()?,
    };
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
                        x.written,
                        x.lost,
                        x.found.map_or("?".into(), |f| f.to_string()),
                        x.expected
                    )) + &r.loader.as_ref().map_or(String::new(), |l| format!(
                        " loader {:.3} CPU-s",
                        l.cpu_steady_s
                    )) + &r.received.map_or(String::new(), |(n, b)| format!(
                        " otlp {n} requests {b} bytes"
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
    fs::write(dir.join("latest.json"), report.json()?)?;
    fs::write(dir.join("latest.svg"), report.svg())?;
    eprintln!("bench: wrote bench/results/latest.md, latest.json, latest.svg");
    Ok(())
}
