//! The `tracer` command line: its options and their values; each command
//! runs in its own module under `modes`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::{
    bpf_log::BpfLog,
    filters::Filters,
    modes, notes,
    output::{file::Rotate, Spec, Target},
    probes::{AttachMode, ProbeOptions},
};

pub use crate::modes::EXIT_ERROR;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Process-exit records equal to the kernel's BSD accounting (acct v3), from eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Say nothing on standard error but warnings, errors, and the summary
    /// line when something was lost.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Explain on standard error: why an attach point was not used, the
    /// lineage table's size.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record every thread group that dies, system-wide, until Ctrl-C,
    /// SIGTERM or --duration. SIGHUP reopens the output files (logrotate).
    Record {
        /// Stop after this long (e.g. 30s, 5m, 1h30m; a bare number is seconds).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Serve Prometheus metrics on http://ADDR/metrics (e.g.
        /// 127.0.0.1:9617, [::1]:9617).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        #[command(flatten)]
        outputs: OutputArgs,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Start CMD and record it and every thread group descended from it;
    /// exit with CMD's status (128+N when killed by signal N).
    Run {
        /// Serve Prometheus metrics on http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
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
    /// Write the man pages and the bash, zsh and fish completions into DIR
    /// (for packages; see packaging/).
    #[command(hide = true)]
    Generate {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
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
    /// Append acct v3 records to DIR/<container id>.acct for each
    /// container (with the container's own pids) and DIR/host.acct.
    #[arg(long, value_name = "DIR")]
    acct_dir: Option<PathBuf>,
    /// Print the table on standard output too (the default when no other
    /// output is given).
    #[arg(long)]
    table: bool,
    /// Print the process tree on standard output at the end.
    #[arg(long)]
    tree: bool,
    /// The table also shows each exit's command line (escaped), from its
    /// last exec or, for a process older than the tracer, /proc.
    #[arg(long)]
    wide: bool,
    /// JSON lines (and OTLP) also get an event for every thread that dies
    /// before its process.
    #[arg(long)]
    threads: bool,
    /// Rotate the --acct-file and --json files before one grows past
    /// BYTES (e.g. 100M): FILE becomes FILE.1, FILE.1 FILE.2 and so on.
    /// Whole records and lines only. For hosts without logrotate.
    #[arg(long, value_name = "BYTES", value_parser = parse_rotate_size)]
    rotate_size: Option<u64>,
    /// How many rotated files to keep (FILE.1 to FILE.N; older ones are
    /// removed).
    #[arg(long, value_name = "N", default_value_t = 5, requires = "rotate_size",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    rotate_keep: u32,
    /// Send every exit as an OpenTelemetry log record to URL/v1/logs
    /// (OTLP/HTTP, protobuf, gzip). Without it, OTEL_EXPORTER_OTLP_ENDPOINT
    /// and the other OTEL_* variables decide (README: "OTLP export").
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// Also send command lines (process.command_args) over OTLP. They
    /// carry secrets: off unless asked for.
    #[arg(long)]
    otlp_argv: bool,
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
    /// Bytes of each command line kept (exe and argv in --json, --wide,
    /// OTLP): 0 to 16K. A longer one is cut and says argv_truncated.
    #[arg(long, value_name = "BYTES", value_parser = parse_argv_bytes,
          default_value_t = tracer_common::ARGS_DEFAULT)]
    argv_bytes: u32,
    /// Only the exits of this process id (repeat for more).
    #[arg(
        long,
        value_name = "PID",
        help_heading = "Filters (in the kernel; values of one option OR, options AND)"
    )]
    pid: Vec<u32>,
    /// Only processes of this real user id (repeat for more).
    #[arg(
        long,
        value_name = "UID",
        help_heading = "Filters (in the kernel; values of one option OR, options AND)"
    )]
    uid: Vec<u32>,
    /// Only processes with this command name (as the kernel keeps it, 15
    /// bytes at most; repeat for more).
    #[arg(long, value_name = "NAME", value_parser = crate::filters::parse_comm,
          help_heading = "Filters (in the kernel; values of one option OR, options AND)")]
    comm: Vec<String>,
    /// Only processes in this v2 cgroup or below it (a path as
    /// /proc/PID/cgroup shows it; it must exist).
    #[arg(long, value_name = "PATH", value_parser = crate::filters::parse_cgroup,
          help_heading = "Filters (in the kernel; values of one option OR, options AND)")]
    cgroup: Vec<String>,
    /// Only processes in this container: at least 12 characters of its id,
    /// naming one container; containers started later count.
    #[arg(long, value_name = "ID", value_parser = crate::filters::parse_container,
          help_heading = "Filters (in the kernel; values of one option OR, options AND)")]
    container: Vec<String>,
    /// Only processes that failed: a non-zero exit status or a signal.
    #[arg(
        long,
        help_heading = "Filters (in the kernel; values of one option OR, options AND)"
    )]
    failed: bool,
    /// Cross-check: hook kernel_clone (fentry, else kprobe) and compare
    /// every fork event's clone flags and exit signal with its arguments;
    /// the summary line gives the counts. Needs --json.
    #[arg(long, hide = true)]
    check_clone_args: bool,
    /// The eBPF programs' diagnostics on standard error (`tracer: bpf
    /// ...` lines): why a record or an event was lost (warn), or written
    /// with less than it should have (debug). Off, the default, costs
    /// nothing: the log calls are dropped when the programs are loaded.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = BpfLog::Off)]
    bpf_log: BpfLog,
}

impl OutputArgs {
    /// Reads the `OTEL_*` variables too, when `--otlp` is not given.
    fn spec(&self) -> Result<Spec> {
        Ok(Spec {
            json: self.json.clone(),
            acct_file: self.acct_file.clone(),
            acct_dir: self.acct_dir.clone(),
            table: self.table,
            tree: self.tree,
            otlp: crate::output::otlp::Config::from_env(self.otlp.as_deref(), self.otlp_argv)?,
            threads: self.threads,
            wide: self.wide,
            rotate: self.rotate_size.map(|size| Rotate {
                size,
                keep: self.rotate_keep,
            }),
        })
    }
}

impl ProbeArgs {
    /// What the session itself decides (lineage, threads, following) is
    /// filled in by the session.
    fn options(&self) -> ProbeOptions {
        ProbeOptions {
            attach: self.attach,
            ring_bytes: self.ring_size,
            argv_bytes: self.argv_bytes,
            follow_tracked: false,
            lineage: false,
            threads: false,
            check_clone_args: self.check_clone_args,
            causes: false,
            taskstats: false,
            containers: false,
            filters: Filters {
                pids: self.pid.clone(),
                uids: self.uid.clone(),
                comms: self.comm.clone(),
                cgroups: self.cgroup.clone(),
                containers: self.container.clone(),
                failed: self.failed,
            },
            self_ns: None,
            bpf_log: self.bpf_log,
        }
    }
}

/// `--argv-bytes`: a size (`4096`, `4K`, `16K`) up to what an exec event
/// can carry.
fn parse_argv_bytes(s: &str) -> Result<u32, String> {
    let n = parse_bytes(s, "4K, 16K")?;
    let max = tracer_common::ARGS_MAX as u64;
    if n > max {
        return Err(format!(
            "{s:?} is more than the {max} bytes an exec event can carry"
        ));
    }
    Ok(n as u32)
}

/// Runs the command line; returns the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    notes::set_level(if cli.quiet {
        notes::Level::Quiet
    } else if cli.verbose {
        notes::Level::Verbose
    } else {
        notes::Level::Normal
    });
    match cli.command {
        Command::Generate { dir } => modes::generate::generate(&dir).map(|()| 0),
        Command::Dump { json, files } => modes::dump::dump(&files, json),
        Command::Tree { file } => modes::tree::tree(file.as_deref()),
        Command::Record {
            duration,
            metrics,
            outputs,
            probes,
        } => modes::record::record(duration, metrics, &outputs.spec()?, probes.options()),
        Command::Run {
            metrics,
            outputs,
            probes,
            command,
        } => match outputs.spec() {
            Ok(spec) => modes::run::run(&command, metrics, &spec, probes.options()),
            Err(e) => {
                // As any failure of the tracer's own in `run`.
                eprintln!("tracer: {e:#}");
                Ok(modes::EXIT_RUN_FAILED)
            }
        },
    }
}

/// `--rotate-size`: a size (K, M, G) of at least 4K, so that a file holds
/// more than a few records.
fn parse_rotate_size(s: &str) -> Result<u64, String> {
    let bytes = parse_bytes(s, "64K, 100M, 1G")?;
    if bytes < 4096 {
        return Err(format!("{s:?} is too small (at least 4K)"));
    }
    Ok(bytes)
}

/// A number of bytes with an optional unit (K, M, G: powers of 1024).
fn parse_bytes(s: &str, examples: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: {examples})"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
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
    let bytes = parse_bytes(s, "256K, 8M, 64M")?;
    if bytes > 1 << 31 {
        return Err(format!("{s:?} is too large (at most 2G)"));
    }
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
        assert_eq!(parse_argv_bytes("4K"), Ok(4096));
        assert_eq!(parse_argv_bytes("0"), Ok(0));
        assert_eq!(parse_argv_bytes("16K"), Ok(16384));
        assert!(parse_argv_bytes("17K").is_err());
        assert!(parse_argv_bytes("-1").is_err());
        assert_eq!(parse_rotate_size("100M"), Ok(100 << 20));
        assert!(parse_rotate_size("1K").is_err());
        assert!(parse_rotate_size("99999999999G").is_err());
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
        assert!(Cli::try_parse_from(["tracer", "record", "--rotate-keep", "3"]).is_err());
        assert!(Cli::try_parse_from(["tracer", "-q", "-v", "record"]).is_err());
        let cli = Cli::try_parse_from(["tracer", "record", "-q", "--metrics", "127.0.0.1:0"]);
        assert!(cli.is_ok_and(|c| c.quiet));
    }

    use clap::CommandFactory as _;
}
