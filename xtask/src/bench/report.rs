//! What the runs say: per-cell statistics (median, spread, ratios to
//! untraced), the targets, and the three files written to `bench/results/`:
//! the markdown tables, the JSON of every run, the SVG bar chart.

use std::{fmt::Write as _, io};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{
    measure::{Check, Loader, Records, Run, StopRun},
    workloads::{Config, Workload, CONFIGS, WORKLOADS},
};

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
    // The runs whose output was read back for the workload's processes.
    let found: Vec<(u64, u64)> = recs
        .iter()
        .filter_map(|r| r.found.map(|f| (f, r.expected)))
        .collect();
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
        complete_runs: found.iter().filter(|(f, e)| f >= e).count(),
        runs: found.len(),
        found_min: found.iter().map(|(f, _)| *f).min().unwrap_or(0),
        expected: recs.first().map_or(0, |r| r.expected),
    }
}

// ---------------------------------------------------------------------------
// Reports.

pub(super) struct Report {
    pub(super) quick: bool,
    pub(super) max_wait_s: u64,
    pub(super) rounds: usize,
    pub(super) commit: String,
    pub(super) dirty: String,
    pub(super) kernel: String,
    pub(super) checks: Vec<Check>,
    pub(super) runs: Vec<Run>,
    pub(super) stops: Vec<StopRun>,
    pub(super) duration_s: f64,
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
/// Issue 15: loader CPU-s per million exits exported over OTLP.
const OTLP_TARGET_S_PER_M: f64 = 2.0;
/// The workloads the OTLP budget is judged on: process churns with
/// thousands of exits, where the per-exit cost is not drowned by the fixed
/// cost of the timers (thread_churn and group_churn have few exits).
const OTLP_TARGET_WORKLOADS: [&str; 2] = ["fork_churn", "vfork_churn"];

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

    pub(super) fn markdown(&self) -> String {
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
             then in how many runs every process of the workload (pid or ppid = the workload) was found. \
             `--otlp` sends to a receiver run by the bench on 127.0.0.1, which answers 200 to every \
             POST and discards the body: its records are not read back (\"–\"), the tracer's exit \
             status 0 says none was lost under `otlp`; the OTLP target counts loader CPU per \
             record written (exported).\n"
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
        // The "why did it die" budgets (killer and OOM probes attached with
        // every output but the acct file), and what a filtered-out process
        // may cost.
        let bpf = |name: &str, c: Config| {
            tracer_cells
                .iter()
                .find(|(wi, cc, _)| WORKLOADS[*wi].name == name && *cc == c)
                .and_then(|(_, _, x)| x.bpf_ns_task)
        };
        for (name, config, budget) in [
            ("vfork_churn", Config::TracerAcct, 400.0),
            ("vfork_churn", Config::TracerJson, 550.0),
            ("thread_churn", Config::TracerAcct, 90.0),
            ("thread_churn", Config::TracerJson, 90.0),
        ] {
            if let Some(v) = bpf(name, config) {
                out.push((
                    format!(
                        "BPF time <= {budget:.0} ns per task on {name}, {}",
                        config.key()
                    ),
                    format!("{v:.0} ns"),
                    v <= budget,
                ));
            }
        }
        for w in &WORKLOADS {
            let name = w.name;
            if let (Some(f), Some(j)) = (
                bpf(name, Config::TracerFiltered),
                bpf(name, Config::TracerJson),
            ) {
                out.push((
                    format!("a filtered-out process costs <= half a recorded one ({name})"),
                    format!("{f:.0} ns filtered, {j:.0} ns recorded (--json)"),
                    f <= j / 2.0,
                ));
            }
        }
        if let Some(row) = self.otlp_target() {
            out.push(row);
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

    /// Loader CPU-s per million exits exported (the tracer's summary count
    /// of records written; it exited 0, so none was lost under `otlp`),
    /// median per workload over its `--otlp` runs.
    fn otlp_per_m(&self, wi: usize) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.workload == wi && r.config == Config::TracerOtlp)
            .filter_map(|r| {
                let (l, x) = (r.loader.as_ref()?, r.records.as_ref()?);
                (x.written > 0).then(|| l.cpu_steady_s / x.written as f64 * 1e6)
            })
            .collect();
        (!v.is_empty()).then(|| summarize(v).median)
    }

    fn otlp_target(&self) -> Option<(String, String, bool)> {
        let per_w: Vec<(&str, f64)> = WORKLOADS
            .iter()
            .enumerate()
            .filter(|(_, w)| OTLP_TARGET_WORKLOADS.contains(&w.name))
            .filter_map(|(wi, w)| Some((w.name, self.otlp_per_m(wi)?)))
            .collect();
        if per_w.is_empty() {
            return None;
        }
        let others: Vec<String> = WORKLOADS
            .iter()
            .enumerate()
            .filter(|(_, w)| !OTLP_TARGET_WORKLOADS.contains(&w.name))
            .filter_map(|(wi, w)| Some(format!("{} {:.3}", w.name, self.otlp_per_m(wi)?)))
            .collect();
        Some((
            format!(
                "OTLP loader CPU <= {OTLP_TARGET_S_PER_M:.0} CPU-s per million exits exported \
                 (`record --otlp` to a local receiver that answers 200; on {})",
                OTLP_TARGET_WORKLOADS.join(" and ")
            ),
            format!(
                "{}{}",
                per_w
                    .iter()
                    .map(|(n, v)| format!("{n}: {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" (not judged, few exits: {})", others.join(", "))
                }
            ),
            per_w.iter().all(|(_, v)| *v <= OTLP_TARGET_S_PER_M),
        ))
    }

    /// `latest.json`: every run, for what the tables do not show.
    pub(super) fn json(&self) -> Result<String> {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut out, LinePerEntry { depth: 0 });
        self.results().serialize(&mut ser)?;
        out.push(b'\n');
        Ok(String::from_utf8(out)?)
    }

    fn results(&self) -> ResultsFile {
        ResultsFile {
            quick: self.quick,
            rounds: self.rounds,
            commit: self.commit.clone(),
            dirty: self.dirty.clone(),
            kernel: self.kernel.clone(),
            duration_s: finite(self.duration_s),
            workloads: WORKLOADS
                .iter()
                .map(|w| {
                    let n = if self.quick { w.n_quick } else { w.n };
                    WorkloadEntry {
                        name: w.name.into(),
                        what: w.what.into(),
                        n,
                        tasks: w.tasks(n),
                        processes: w.processes(n),
                    }
                })
                .collect(),
            checks: self
                .checks
                .iter()
                .map(|c| CheckEntry {
                    at_s: finite(c.at_s),
                    qemu: c.qemu,
                    busy: finite(c.busy),
                    loadavg: c.loadavg.clone(),
                    waited_s: finite(c.waited_s),
                })
                .collect(),
            runs: self
                .runs
                .iter()
                .map(|r| RunEntry {
                    round: r.round,
                    workload: WORKLOADS[r.workload].name.into(),
                    config: r.config.key().into(),
                    n: r.n,
                    tasks: WORKLOADS[r.workload].tasks(r.n),
                    tasks_ended_system_wide: r.tasks_ended(),
                    cpu_s: finite(r.cpu_s),
                    wall_s: finite(r.wall_s),
                    busy_before: finite(r.busy_before),
                    bpf: r
                        .bpf
                        .iter()
                        .map(|p| ProgEntry {
                            name: p.name.clone(),
                            run_time_ns: p.run_time_ns,
                            run_cnt: p.run_cnt,
                        })
                        .collect(),
                    loader: r.loader.as_ref().map(|l| LoaderEntry {
                        cpu_steady_s: finite(l.cpu_steady_s),
                        cpu_stat_s: finite(l.cpu_stat_s),
                        cpu_total_s: finite(l.cpu_total_s),
                        vm_hwm_kib: l.hwm_kib,
                        vm_rss_kib: l.rss_kib,
                    }),
                    records: r.records.as_ref().map(|x| RecordsEntry {
                        written: x.written,
                        lost: x.lost,
                        found: x.found,
                        expected: x.expected,
                    }),
                    otlp_received: r.received.map(|(requests, body_bytes)| ReceivedEntry {
                        requests,
                        body_bytes,
                    }),
                })
                .collect(),
            stopped_tracer: self
                .stops
                .iter()
                .map(|x| StopEntry {
                    ring: x.ring.into(),
                    n: x.n,
                    expected: x.n + 1,
                    stopped_at_records: x.stopped_at_records,
                    in_file: x.in_file,
                    written: x.written,
                    lost: x.lost,
                    exit_status: x.status >> 8,
                    wall_s: finite(x.wall_s),
                    summary: x.summary.clone(),
                })
                .collect(),
        }
    }

    /// Bars of the workload-CPU overhead (median ratio - 1, in percent) per
    /// workload and configuration.
    pub(super) fn svg(&self) -> String {
        let shown = [
            (Config::TracerAcct, "#1f77b4"),
            (Config::TracerJson, "#6baed6"),
            (Config::TracerFiltered, "#9ecae1"),
            (Config::TracerOtlp, "#2ca02c"),
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

// ---------------------------------------------------------------------------
// The results file, latest.json. Its keys are what analyses of past results
// read: keep them. Numbers that are not finite are written as null.

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ResultsFile {
    quick: bool,
    rounds: usize,
    commit: String,
    dirty: String,
    kernel: String,
    duration_s: Option<f64>,
    workloads: Vec<WorkloadEntry>,
    checks: Vec<CheckEntry>,
    runs: Vec<RunEntry>,
    stopped_tracer: Vec<StopEntry>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct WorkloadEntry {
    name: String,
    what: String,
    n: u64,
    tasks: u64,
    processes: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct CheckEntry {
    at_s: Option<f64>,
    qemu: bool,
    busy: Option<f64>,
    loadavg: String,
    waited_s: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct RunEntry {
    round: usize,
    workload: String,
    config: String,
    n: u64,
    tasks: u64,
    tasks_ended_system_wide: u64,
    cpu_s: Option<f64>,
    wall_s: Option<f64>,
    busy_before: Option<f64>,
    bpf: Vec<ProgEntry>,
    loader: Option<LoaderEntry>,
    records: Option<RecordsEntry>,
    /// `tracer_otlp` runs: what the bench's receiver took.
    otlp_received: Option<ReceivedEntry>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ReceivedEntry {
    requests: u64,
    body_bytes: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ProgEntry {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct LoaderEntry {
    cpu_steady_s: Option<f64>,
    cpu_stat_s: Option<f64>,
    cpu_total_s: Option<f64>,
    vm_hwm_kib: u64,
    vm_rss_kib: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct RecordsEntry {
    written: u64,
    lost: u64,
    found: Option<u64>,
    expected: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct StopEntry {
    ring: String,
    n: u64,
    expected: u64,
    stopped_at_records: u64,
    in_file: u64,
    written: u64,
    lost: u64,
    exit_status: i32,
    wall_s: Option<f64>,
    summary: String,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Compact JSON with each element of the top-level arrays (a workload, a
/// check, a run, a stopped-tracer run) on a line of its own, so that a
/// diff of latest.json shows which runs changed.
struct LinePerEntry {
    depth: usize,
}

impl serde_json::ser::Formatter for LinePerEntry {
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        w.write_all(b"}")
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        w.write_all(b"]")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        // Depth 1 is the top-level object, 2 an array in it.
        if self.depth == 2 {
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::ProgDelta;

    fn sample_report() -> Report {
        let run = |round, config, bpf: Vec<ProgDelta>, traced: bool| Run {
            round,
            workload: 0,
            config,
            n: 2000,
            cpu_s: 0.41 + round as f64 / 100.0,
            wall_s: 0.52,
            busy_before: 0.02,
            bpf,
            loader: traced.then_some(Loader {
                cpu_steady_s: 0.004,
                cpu_stat_s: 0.03,
                cpu_total_s: 0.031,
                hwm_kib: 9120,
                rss_kib: 8800,
            }),
            received: None,
            records: traced.then_some(Records {
                written: 2003,
                lost: 0,
                found: Some(2001),
                expected: 2001,
            }),
        };
        let prog = |name: &str, run_time_ns, run_cnt| ProgDelta {
            name: name.into(),
            run_time_ns,
            run_cnt,
        };
        Report {
            quick: true,
            max_wait_s: 900,
            rounds: 1,
            commit: "09057bc".into(),
            dirty: " M tracer/src/main.rs\n".into(),
            kernel: "6.12.48+deb13-amd64".into(),
            checks: vec![
                Check {
                    round: None,
                    at_s: 1.0,
                    qemu: false,
                    busy: 0.0,
                    loadavg: "0.97 1.15 1.01".into(),
                    waited_s: 1.0,
                },
                Check {
                    round: Some(0),
                    at_s: 31.5,
                    qemu: true,
                    busy: f64::NAN,
                    loadavg: "2.10 1.40 1.10".into(),
                    waited_s: 0.0,
                },
            ],
            runs: vec![
                run(0, Config::Untraced, vec![], false),
                run(
                    0,
                    Config::TracerAcct,
                    vec![
                        prog("exit_tp_btf", 600_000, 2003),
                        prog("fork_tp_btf", 90_000, 2000),
                    ],
                    true,
                ),
            ],
            stops: vec![StopRun {
                ring: "2M (default)",
                n: 6000,
                in_file: 6001,
                written: 6001,
                lost: 0,
                stopped_at_records: 2100,
                status: 0,
                wall_s: 2.5,
                summary: "tracer: 6001 records written, 0 lost".into(),
            }],
            duration_s: 40.0,
        }
    }

    #[test]
    fn results_json_round_trips() {
        let report = sample_report();
        let text = report.json().unwrap();
        let back: ResultsFile = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report.results());
        // Not finite: null, read back as such.
        assert_eq!(back.checks[1].busy, None);
        assert!(text.contains(r#""busy":null"#));
        // One line for the header, then one per workload, check, run and
        // stopped-tracer run.
        assert_eq!(text.lines().count(), 1 + WORKLOADS.len() + 2 + 2 + 1);
        assert!(text.ends_with("]}\n"));
    }

    /// The keys analyses of earlier results files read.
    #[test]
    fn results_json_keeps_its_keys() {
        let v: serde_json::Value = serde_json::from_str(&sample_report().json().unwrap()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        fn sorted(mut k: Vec<&str>) -> Vec<String> {
            k.sort_unstable();
            k.into_iter().map(String::from).collect()
        }
        assert_eq!(
            keys(&v),
            sorted(vec![
                "quick",
                "rounds",
                "commit",
                "dirty",
                "kernel",
                "duration_s",
                "workloads",
                "checks",
                "runs",
                "stopped_tracer"
            ])
        );
        assert_eq!(
            keys(&v["workloads"][0]),
            sorted(vec!["name", "what", "n", "tasks", "processes"])
        );
        assert_eq!(
            keys(&v["checks"][0]),
            sorted(vec!["at_s", "qemu", "busy", "loadavg", "waited_s"])
        );
        let run = &v["runs"][1];
        assert_eq!(
            keys(run),
            sorted(vec![
                "round",
                "workload",
                "config",
                "n",
                "tasks",
                "tasks_ended_system_wide",
                "cpu_s",
                "wall_s",
                "busy_before",
                "bpf",
                "loader",
                "records",
                "otlp_received"
            ])
        );
        assert_eq!(
            keys(&run["bpf"][0]),
            sorted(vec!["name", "run_time_ns", "run_cnt"])
        );
        assert_eq!(
            keys(&run["loader"]),
            sorted(vec![
                "cpu_steady_s",
                "cpu_stat_s",
                "cpu_total_s",
                "vm_hwm_kib",
                "vm_rss_kib"
            ])
        );
        assert_eq!(
            keys(&run["records"]),
            sorted(vec!["written", "lost", "found", "expected"])
        );
        assert_eq!(v["runs"][0]["loader"], serde_json::Value::Null);
        assert_eq!(run["workload"], "fork_churn");
        assert_eq!(run["config"], "tracer_acct");
        assert_eq!(run["tasks_ended_system_wide"], 2003);
        assert_eq!(
            keys(&v["stopped_tracer"][0]),
            sorted(vec![
                "ring",
                "n",
                "expected",
                "stopped_at_records",
                "in_file",
                "written",
                "lost",
                "exit_status",
                "wall_s",
                "summary"
            ])
        );
    }
}
