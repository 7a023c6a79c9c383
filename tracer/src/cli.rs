//! The `tracer` command line: `record`, `run` and `dump`.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use aya::maps::{MapData, RingBuf};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    dump,
    event::ExitView,
    lineage::ProcessTable,
    output::{AcctFile, JsonLines, Outputs, Table, Target},
    probes::{AttachMode, ProbeOptions, Probes},
    session,
    tree::{Tree, TreeOutput},
};

/// Exit status for an error of the tool itself (clap uses 2 for usage).
pub const EXIT_ERROR: i32 = 1;

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
    fn open(&self) -> Result<Outputs> {
        let mut outputs = Outputs::default();
        if self.threads && self.json.is_none() {
            bail!("--threads adds events to the JSON lines: give --json too");
        }
        if self.table && self.json == Some(Target::Stdout) {
            bail!("--table and --json - would both write to standard output; pick one");
        }
        if let Some(path) = &self.acct_file {
            outputs.push(Box::new(AcctFile::open(path)?));
        }
        if let Some(target) = &self.json {
            outputs.push(Box::new(JsonLines::new(target.clone(), target.open()?)));
        }
        if self.tree {
            let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
            outputs.push(Box::new(TreeOutput::new(Target::Stdout.open()?, color)));
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
        } => runtime()?.block_on(record(duration, &outputs, &probes)),
        Command::Run {
            outputs,
            probes,
            command,
        } => runtime()?.block_on(run_command(&command, &outputs, &probes)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // One thread: the work is a single reader; a second would only contend
    // for the machine being traced.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Opens the outputs, then attaches the probes they need (fork and exec
/// events only when an output shows lineage) and takes the maps the
/// session reads.
fn start(
    out: &OutputArgs,
    args: &ProbeArgs,
    follow_tracked: bool,
) -> Result<(Outputs, Probes, RingBuf<MapData>)> {
    let outputs = out.open()?;
    let opts = args.options(follow_tracked, outputs.wants_lineage(), out.threads);
    if opts.check_clone_args && !opts.lineage {
        bail!("--check-clone-args compares fork events: give --json too");
    }
    let mut probes = attach(&opts)?;
    let ring = probes.take_ring()?;
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

fn summary(probes: &Probes, totals: session::Totals) -> Result<()> {
    let counters = probes.counters()?;
    let (ring_full, untracked) = (counters.ring_full, counters.track_full);
    let mut line = format!(
        "tracer: {} records written, {} lost",
        totals.written,
        ring_full + untracked
    );
    if ring_full > 0 {
        line += &format!(" ({ring_full} with the ring full: raise --ring-size)");
    }
    if untracked > 0 {
        line += &format!(" ({untracked} groups not followed: the tracking map was full)");
    }
    if counters.events_lost > 0 {
        line += &format!(
            "; {} fork, exec or thread events lost with the ring full",
            counters.events_lost
        );
    }
    if totals.unstamped > 0 {
        line += &format!(
            "; {} timed before their address space was freed",
            totals.unstamped
        );
    }
    if totals.unknown > 0 {
        line += &format!(", {} unknown ring items skipped", totals.unknown);
    }
    eprintln!("{line}");
    if probes.check_clone_args {
        eprintln!(
            "tracer: clone args check: {} fork events agree with kernel_clone's arguments, \
             {} differ, {} had no kernel_clone call",
            counters.clone_agree, counters.clone_differ, counters.clone_unseen
        );
    }
    Ok(())
}

async fn record(duration: Option<Duration>, out: &OutputArgs, args: &ProbeArgs) -> Result<i32> {
    let (mut outputs, probes, ring) = start(out, args, false)?;
    let lineage = outputs.wants_lineage();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    eprintln!("tracer: recording");
    let stop = async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = sighup.recv() => {}
            () = sleep => {}
        }
    };
    // Seeded after the probes are attached: a process created in between is
    // in both, which the table handles.
    let mut sink = session::Sink::new(&mut outputs, lineage.then(ProcessTable::from_proc));
    let totals = match session::pump(ring, &mut sink, stop).await {
        Ok(t) => t,
        Err(e) if crate::output::is_broken_pipe(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    sink.outputs.finish()?;
    summary(&probes, totals)?;
    if let Some(t) = &sink.table {
        eprintln!(
            "tracer: lineage table: {} processes at the end, {} at most",
            t.len(),
            t.peak()
        );
    }
    Ok(0)
}

async fn run_command(
    command: &[std::ffi::OsString],
    out: &OutputArgs,
    args: &ProbeArgs,
) -> Result<i32> {
    let (mut outputs, mut probes, ring) = start(out, args, true)?;
    let lineage = outputs.wants_lineage();

    // Track ourselves while we create the command: the fork tracker then
    // marks it tracked before it first runs, so none of its own children
    // can slip by. Then stop tracking ourselves.
    let me = std::process::id();
    probes.track(me)?;
    let spawned = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn();
    probes.untrack(me)?;
    let mut child = match spawned {
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
    let pid = child.id().context("the command exited before it started")?;

    // Ctrl-C reaches the command through the terminal; we keep reading until
    // it is gone. SIGTERM and SIGHUP sent to us are passed on to it.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut status = None;
    let stop = async {
        loop {
            tokio::select! {
                s = child.wait() => { status = Some(s); break; }
                _ = sigint.recv() => {}
                _ = sigterm.recv() => forward(pid, libc::SIGTERM),
                _ = sighup.recv() => forward(pid, libc::SIGHUP),
            }
        }
    };
    let mut table = lineage.then(ProcessTable::from_proc);
    if let Some(t) = &mut table {
        t.set_root(pid);
    }
    let mut sink = session::Sink::new(&mut outputs, table);
    let result = session::pump(ring, &mut sink, stop)
        .await
        .and_then(|totals| outputs.finish().map(|()| totals));
    let status = match status {
        Some(s) => s.context("cannot wait for the command")?,
        None => {
            // The outputs failed first: still reap the command.
            let _ = result.as_ref().map_err(|e| eprintln!("tracer: {e:#}"));
            child.wait().await?
        }
    };
    let code = shell_status(status);
    match result {
        Ok(totals) => {
            summary(&probes, totals)?;
            let alive = probes.tracked_alive().unwrap_or(0);
            if alive > 0 {
                eprintln!(
                    "tracer: {alive} descendant processes still running; their exits are not recorded"
                );
            }
        }
        Err(e) if crate::output::is_broken_pipe(&e) => {}
        Err(e) => eprintln!("tracer: {e:#}"),
    }
    Ok(code)
}

fn forward(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(pid as i32, sig) };
}

fn shell_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => EXIT_ERROR,
    }
}

fn dump_files(files: &[PathBuf], json: bool) -> Result<i32> {
    let files = dump::open(files)?;
    let mut outputs = Outputs::default();
    if json {
        outputs.push(Box::new(JsonLines::new(
            Target::Stdout,
            Target::Stdout.open()?,
        )));
    } else {
        outputs.push(Box::new(Table::new(Target::Stdout, Target::Stdout.open()?)));
    }
    // Streamed: what was read before a bad record is printed, then the error.
    let result = files.each(|rec| outputs.exit(&ExitView::from_acct(rec)));
    let result = result.and(outputs.flush());
    match result {
        Err(e) if crate::output::is_broken_pipe(&e) => Ok(0),
        Err(e) => Err(e),
        Ok(()) => Ok(0),
    }
}

fn tree_file(file: Option<&std::path::Path>) -> Result<i32> {
    use crate::output::text::escaped;
    use std::io::{BufReader, IsTerminal as _, Write as _};
    use std::os::unix::ffi::OsStrExt as _;
    let tree = match file.filter(|f| *f != std::path::Path::new("-")) {
        Some(path) => {
            let shown = escaped(path.as_os_str().as_bytes());
            let f = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
            Tree::from_json(BufReader::new(f), &shown)?
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))
}

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
        assert_eq!(crate::probes::DEFAULT_RING_BYTES, parse_size("2M").unwrap());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
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
