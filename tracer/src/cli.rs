//! The `tracer` command line: `record`, `run` and `dump`.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use aya::maps::{MapData, RingBuf};
use clap::{Args, Parser, Subcommand};

use crate::{
    dump,
    event::ExitView,
    lineage::ProcessTable,
    output::{AcctFile, JsonLines, Outputs, Summary, Table, Target},
    probes::{AttachMode, ProbeOptions, Probes},
    session, shutdown,
    tree::{Tree, TreeOutput},
};

/// Exit status when the tool cannot do its job: it cannot start (no root,
/// no BTF, no attach point, an output it cannot open) or a file cannot be
/// read. Usage errors exit with 2 (clap).
pub const EXIT_ERROR: i32 = 1;
/// `record`: the session ran, but an output failed (a full disk, a reader
/// that stopped reading): what it could not write is counted on stderr.
pub const EXIT_OUTPUT_FAILED: i32 = 3;
/// `run`: the tracer failed (it could not start, or an output failed); used
/// instead of the command's status, as timeout(1) and docker run use 125.
pub const EXIT_RUN_FAILED: i32 = 125;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Process-exit records equal to the kernel's BSD accounting (acct v3), from eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record every thread group that dies, system-wide, until Ctrl-C,
    /// SIGTERM or --duration.
    Record {
        /// Stop after this long (e.g. 30s, 5m, 1h30m; a bare number is seconds).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Start CMD and record it and every thread group descended from it;
    /// exit with CMD's status (128+N when killed by signal N).
    Run {
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        probes: ProbeArgs,
        /// The command and its arguments.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Render the process tree of a JSON recording (`--json`): one line per
    /// process, under the process that created it.
    Tree {
        /// The recording ('-' or nothing for standard input).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Decode acct v3 files (the kernel's or ours) as a table or JSON lines.
    Dump {
        /// NDJSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Write JSON lines to PATH ('-' for standard output).
    #[arg(long, value_name = "PATH")]
    json: Option<Target>,
    /// Append acct v3 records to PATH (read by lastcomm -f, sa, dump-acct).
    #[arg(long, value_name = "PATH")]
    acct_file: Option<PathBuf>,
    /// Print the table on standard output too (the default when no other
    /// output is given).
    #[arg(long)]
    table: bool,
    /// Print the process tree on standard output at the end.
    #[arg(long)]
    tree: bool,
    /// JSON lines also get a `thread_exit` event for every thread that dies
    /// before its process.
    #[arg(long)]
    threads: bool,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Where to take the exit record.
    #[arg(long, value_enum, env = "TRACER_ATTACH", default_value_t = AttachMode::Auto)]
    attach: AttachMode,
    /// Ring buffer size (power of two: 256K, 2M, 64M...). The default
    /// holds about 10,000 exits: a reader stalled for half a second while
    /// 5,000 processes a second die loses none. Raise it for faster churn
    /// or longer stalls; it costs twice its size in memory.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, default_value = "2M")]
    ring_size: u32,
    /// Cross-check: hook kernel_clone (fentry, else kprobe) and compare
    /// every fork event's clone flags and exit signal with its arguments;
    /// the summary line gives the counts. Needs --json.
    #[arg(long, hide = true)]
    check_clone_args: bool,
}

impl OutputArgs {
    /// Whether an output shows lineage (needs fork and exec events): known
    /// from the arguments alone, so the probes attach before any output is
    /// opened.
    fn wants_lineage(&self) -> bool {
        self.json.is_some() || self.tree
    }

    /// Checks what can be checked without touching a file.
    fn check(&self) -> Result<()> {
        if self.threads && self.json.is_none() {
            bail!("--threads adds events to the JSON lines: give --json too");
        }
        if self.table && self.json == Some(Target::Stdout) {
            bail!("--table and --json - would both write to standard output; pick one");
        }
        Ok(())
    }

    /// Opens the outputs: only once the programs are attached, so that a
    /// session that cannot start creates, truncates and writes nothing.
    fn open(&self) -> Result<Outputs> {
        let mut outputs = Outputs::default();
        if let Some(path) = &self.acct_file {
            outputs.push(Box::new(AcctFile::open(path)?));
        }
        if let Some(target) = &self.json {
            outputs.push(Box::new(JsonLines::new(target.clone(), target.open()?)));
        }
        if self.tree {
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let out = std::io::BufWriter::new(Target::Stdout.open()?);
            outputs.push(Box::new(TreeOutput::new(Box::new(out), color)));
        }
        if self.table || outputs.is_empty() {
            outputs.push(Box::new(Table::new(Target::Stdout, Target::Stdout.open()?)));
        }
        Ok(outputs)
    }
}

impl ProbeArgs {
    fn options(&self, follow_tracked: bool, lineage: bool, threads: bool) -> ProbeOptions {
        ProbeOptions {
            attach: self.attach,
            ring_bytes: self.ring_size,
            follow_tracked,
            lineage,
            threads,
            check_clone_args: self.check_clone_args,
        }
    }
}

/// Runs the command line; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Dump { json, files } => dump_files(&files, json),
        Command::Tree { file } => tree_file(file.as_deref()),
        Command::Record {
            duration,
            outputs,
            probes,
        } => {
            shutdown::block_signals(false)?;
            runtime()?.block_on(record(duration, &outputs, &probes))
        }
        Command::Run {
            outputs,
            probes,
            command,
        } => {
            shutdown::block_signals(true)?;
            runtime()?.block_on(run_command(&command, &outputs, &probes))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // One thread: the work is a single reader; a second would only contend
    // for the machine being traced.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Attaches the probes the outputs need (fork and exec events only when an
/// output shows lineage), then opens the outputs, and takes the ring.
fn start(
    out: &OutputArgs,
    args: &ProbeArgs,
    follow_tracked: bool,
) -> Result<(Outputs, Probes, RingBuf<MapData>)> {
    out.check()?;
    let opts = args.options(follow_tracked, out.wants_lineage(), out.threads);
    if opts.check_clone_args && !opts.lineage {
        bail!("--check-clone-args compares fork events: give --json too");
    }
    let mut probes = attach(&opts)?;
    let ring = probes.take_ring()?;
    let outputs = out.open()?;
    Ok((outputs, probes, ring))
}

fn attach(opts: &ProbeOptions) -> Result<Probes> {
    let probes = Probes::load(opts)?;
    for (mode, why) in &probes.fallbacks {
        eprintln!("tracer: {mode} not available: {why}");
    }
    eprintln!("tracer: exit records from {}", probes.exit_hook);
    Ok(probes)
}

/// The counts of the whole session, the programs' and the loader's.
fn summarize(probes: &Probes, totals: session::Totals, outputs: &Outputs) -> Result<Summary> {
    let counters = probes.counters()?;
    Ok(Summary {
        written: totals.written,
        ring_full: counters.ring_full,
        track_full: counters.track_full,
        events_lost: counters.events_lost,
        stamps_lost: counters.stamps_lost,
        unstamped: totals.unstamped,
        unknown: totals.unknown,
        output_lost: outputs
            .failures()
            .into_iter()
            .filter(|f| !f.closed)
            .map(|f| (f.name, f.lost))
            .collect(),
    })
}

/// Prints the summary line, and a line for every output that failed.
/// Returns whether every output took everything it was given.
fn report(probes: &Probes, s: &Summary, outputs: &Outputs) -> bool {
    let mut line = format!("tracer: {} records written, {} lost", s.written, s.lost());
    if s.ring_full > 0 {
        line += &format!(" ({} with the ring full: raise --ring-size)", s.ring_full);
    }
    if s.track_full > 0 {
        line += &format!(
            " ({} groups not followed: the tracking map was full)",
            s.track_full
        );
    }
    if s.events_lost > 0 {
        line += &format!(
            "; {} fork, exec or thread events lost with the ring full",
            s.events_lost
        );
    }
    if s.unstamped > 0 {
        line += &format!(
            "; {} timed before their address space was freed",
            s.unstamped
        );
        if s.stamps_lost > 0 {
            line += &format!(
                " ({} of their stamps lost with the ring full)",
                s.stamps_lost
            );
        }
    }
    if s.unknown > 0 {
        line += &format!(", {} unknown ring items skipped", s.unknown);
    }
    eprintln!("{line}");
    let mut ok = true;
    for f in outputs.failures() {
        if f.closed {
            continue;
        }
        ok = false;
        eprintln!(
            "tracer: output {} failed, {} lines or records not written: {}",
            f.name, f.lost, f.error
        );
    }
    if probes.check_clone_args {
        if let Ok(c) = probes.counters() {
            eprintln!(
                "tracer: clone args check: {} fork events agree with kernel_clone's arguments, \
                 {} differ, {} had no kernel_clone call",
                c.clone_agree, c.clone_differ, c.clone_unseen
            );
        }
    }
    ok
}

/// Ends a session: final counts to the outputs and to standard error.
/// Returns whether every output took everything.
fn finish(probes: &Probes, totals: session::Totals, outputs: &mut Outputs) -> Result<bool> {
    let summary = summarize(probes, totals, outputs)?;
    outputs.finish(&summary)?;
    // The summary line written to an output that then failed is counted in
    // the failure; the line on standard error says so.
    let summary = Summary {
        output_lost: summarize(probes, totals, outputs)?.output_lost,
        ..summary
    };
    Ok(report(probes, &summary, outputs))
}

/// `tracer run` and `record` are for the initial pid namespace: the
/// programs see the kernel's pids, which a process in a child namespace
/// (`docker run --privileged` without `--pid=host`) can neither name nor
/// follow. Checked before anything is loaded.
fn pid_namespace_check(mode: &str) -> Result<()> {
    // PROC_PID_INIT_INO in include/linux/proc_ns.h: the initial pid
    // namespace's inode number, the same on every kernel.
    const INIT_PID_NS: u64 = 0xEFFF_FFFC;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata("/proc/self/ns/pid") else {
        return Ok(());
    };
    if meta.ino() == INIT_PID_NS {
        return Ok(());
    }
    match mode {
        "run" => bail!(
            "tracer run is inside a pid namespace of its own (pid namespace {}): the programs \
             see the host's pids and cannot follow the command from here, so nothing would be \
             recorded. Run it in the host's pid namespace (docker run --pid=host, or outside \
             unshare --pid)",
            meta.ino()
        ),
        _ => {
            eprintln!(
                "tracer: warning: inside a pid namespace of its own (pid namespace {}): \
                 every process of the host is recorded, with the host's pids",
                meta.ino()
            );
            Ok(())
        }
    }
}

async fn record(duration: Option<Duration>, out: &OutputArgs, args: &ProbeArgs) -> Result<i32> {
    pid_namespace_check("record")?;
    let (mut outputs, probes, ring) = start(out, args, false)?;
    let lineage = outputs.wants_lineage();
    let mut signals = shutdown::watch_record();
    if let Some(d) = duration {
        shutdown::deadline_in(d.saturating_add(shutdown::DRAIN));
    }
    eprintln!("tracer: recording");
    let stop = async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.recv() => {}
            () = sleep => {}
        }
    };
    // Seeded after the probes are attached: a process created in between is
    // in both, which the table handles.
    let mut sink = session::Sink::new(&mut outputs, lineage.then(ProcessTable::from_proc));
    let totals = session::pump(ring, &mut sink, stop, true).await?;
    if let Some(t) = &sink.table {
        eprintln!(
            "tracer: lineage table: {} processes at the end, {} at most",
            t.len(),
            t.peak()
        );
    }
    let ok = finish(&probes, totals, &mut outputs)?;
    Ok(if ok { 0 } else { EXIT_OUTPUT_FAILED })
}

/// `tracer run`: a failure of the tracer's own is reported as 125, as
/// timeout(1), env(1) and docker run do, so that it cannot be taken for the
/// command's status.
async fn run_command(
    command: &[std::ffi::OsString],
    out: &OutputArgs,
    args: &ProbeArgs,
) -> Result<i32> {
    match run_session(command, out, args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("tracer: {e:#}");
            Ok(EXIT_RUN_FAILED)
        }
    }
}

async fn run_session(
    command: &[std::ffi::OsString],
    out: &OutputArgs,
    args: &ProbeArgs,
) -> Result<i32> {
    pid_namespace_check("run")?;
    let (mut outputs, mut probes, ring) = start(out, args, true)?;
    let lineage = outputs.wants_lineage();

    // Track ourselves while we create the command: the fork tracker then
    // marks it tracked before it first runs, so none of its own children
    // can slip by. Then stop tracking ourselves.
    let me = std::process::id();
    probes.track(me)?;
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: the closure only calls sigprocmask, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            shutdown::unblock_signals_in_child();
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    probes.untrack(me)?;
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("tracer: cannot start {}: {e}", command[0].to_string_lossy());
            // As env(1) and timeout(1): 127 not found, 126 not runnable.
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let pid = child.id() as i32;

    // Signals sent to us are passed on to the command; we keep reading
    // until it has exited (the signal thread reaps it), then drain.
    let mut events = shutdown::watch_run(pid);
    let mut wait_status = None;
    let stop = async {
        while let Some(ev) = events.recv().await {
            if let shutdown::Event::CommandExited(status) = ev {
                wait_status = Some(status);
                break;
            }
        }
    };
    let mut table = lineage.then(ProcessTable::from_proc);
    if let Some(t) = &mut table {
        t.set_root(pid as u32);
    }
    let mut sink = session::Sink::new(&mut outputs, table);
    let totals = session::pump(ring, &mut sink, stop, false).await?;
    let code = wait_status.map_or(EXIT_RUN_FAILED, shell_status);
    let ok = finish(&probes, totals, &mut outputs)?;
    let alive = probes.tracked_alive().unwrap_or(0);
    if alive > 0 {
        eprintln!(
            "tracer: {alive} descendant processes still running; their exits are not recorded"
        );
    }
    Ok(if ok { code } else { EXIT_RUN_FAILED })
}

/// A wait status as a shell reports it: the exit status, or 128+N when
/// killed by signal N.
fn shell_status(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        EXIT_RUN_FAILED
    }
}

fn dump_files(files: &[PathBuf], json: bool) -> Result<i32> {
    let loaded = dump::load(files)?;
    let mut outputs = Outputs::default();
    if json {
        outputs.push(Box::new(JsonLines::new(
            Target::Stdout,
            Target::Stdout.open()?,
        )));
    } else {
        outputs.push(Box::new(Table::new(Target::Stdout, Target::Stdout.open()?)));
    }
    let result = (|| -> Result<()> {
        for (_, records) in &loaded {
            for rec in records {
                outputs.exit(&ExitView::from_acct(*rec))?;
            }
        }
        outputs.flush()
    })();
    match result {
        Err(e) if crate::output::is_broken_pipe(&e) => Ok(0),
        Err(e) => Err(e),
        Ok(()) => Ok(0),
    }
}

fn tree_file(file: Option<&std::path::Path>) -> Result<i32> {
    use std::io::{BufReader, IsTerminal as _, Write as _};
    let tree = match file.filter(|f| *f != std::path::Path::new("-")) {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Tree::from_json(BufReader::new(f), &path.display().to_string())?
        }
        None => Tree::from_json(std::io::stdin().lock(), "standard input")?,
    };
    let stdout = std::io::stdout();
    let color = stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match tree.render(&mut out, color).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(0),
    }
}

/// The longest `--duration`: ten years is "until stopped" for any session,
/// and keeps every deadline computed from it far from overflowing.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_nan() || secs < 0.0 => {
            return Err(format!("{s:?} is not a duration: it must be 0 or more"))
        }
        Ok(secs) => Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))?
        }
    };
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too long (at most 10 years)"));
    }
    Ok(d)
}

/// A ring size: a power of two from one page (4K) to 2G, as the kernel's
/// BPF ring buffer takes.
fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 256K, 8M, 64M)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    let bytes = n
        .checked_mul(mult)
        .filter(|&b| b <= 1 << 31)
        .ok_or_else(|| format!("{s:?} is too large (at most 2G)"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "{s:?} is not a power of two of at least 4K (examples: 256K, 2M, 64M)"
        ));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("256k"), Ok(256 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("4G").is_err());
        assert!(parse_size("3M").is_err());
        assert!(parse_size("2048").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_size("2G"), Ok(1 << 31));
        assert_eq!(crate::probes::DEFAULT_RING_BYTES, parse_size("2M").unwrap());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("2e19").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("inf").is_err());
        assert!(parse_duration("20000000000000000000s").is_err());
        assert!(parse_duration("11years").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any text given to a numeric option is a value or a usage error,
        /// never a panic, and a value is within its bounds.
        #[test]
        fn numeric_options_never_panic(text in "\\PC{0,24}", digits in "[0-9.eE+-]{1,24}[a-zA-Z]{0,4}") {
            for s in [&text, &digits] {
                if let Ok(d) = parse_duration(s) {
                    proptest::prop_assert!(d <= MAX_DURATION);
                }
                if let Ok(b) = parse_size(s) {
                    proptest::prop_assert!(b.is_power_of_two() && b >= 4096);
                }
                for opt in ["--duration", "--ring-size"] {
                    let _ = Cli::try_parse_from(["tracer", "record", opt, s.as_str()]);
                }
            }
        }
    }

    #[test]
    fn command_line_shapes() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["tracer", "run", "--json", "-", "--", "ls", "-l"]).unwrap();
        assert!(matches!(cli.command, Command::Run { ref command, .. } if command.len() == 2));
        assert!(Cli::try_parse_from(["tracer", "record", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["tracer", "record", "--attach", "uprobe"]).is_err());
        assert!(Cli::try_parse_from(["tracer", "dump"]).is_err());
    }

    use clap::CommandFactory as _;
}
