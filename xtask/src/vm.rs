//! `cargo xtask vm-test`: the privileged integration tests on other kernels.
//!
//! Boots Debian's 6.1, 6.12, 7.3 (trixie-backports) and 7.2 PREEMPT_RT
//! (unstable) kernels under qemu (software emulation, no KVM) with virtme-ng, over the host's own filesystem, and runs the host's
//! already-built `exit_records` test binary inside, once per attach mode
//! (`TRACER_ATTACH`), with `CI=true` so that nothing skips. The tests compare
//! the tracer's records with the kernel's own accounting (`accton`) in the
//! VM, so a pass proves equality on that kernel.
//!
//! Everything it needs is installed idempotently: Debian packages
//! (qemu-system-x86, kmod, busybox-static, acct, gcc, stress-ng), virtme-ng
//! from PyPI, and the kernel packages, downloaded and extracted into
//! `target/vm-kernels/` with their modules linked under `/lib/modules`.
//! Kernels from suites the machine's apt sources lack come through a
//! private source list under `target/vm-kernels/apt/` (the machine's own
//! sources are never changed).
//!
//! `--loaded KERNELS` adds runs with the host's CPUs saturated
//! (`stress-ng --cpu N` outside the VM) while the record-fidelity tests run
//! three times in a row. `--repeat N` runs them N times in every run, quiet
//! or loaded, to show how often a run of them fails.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{run, succeeds, workspace_root};

/// virtme-ng release this was verified with.
const VIRTME_NG: &str = "virtme-ng==1.42";
/// Debian packages the VMs and the tests need on the host (the VM runs over
/// the host's filesystem, so `accton` and `cc` come from here too).
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "kmod",
    "busybox-static",
    "acct",
    "gcc",
    "libc6-dev",
    "stress-ng",
];
const MODES: &[&str] = &["fentry", "kprobe", "tracepoint"];
/// Printed by virtme-ng's init right before it runs the command.
const SCRIPT_START: &str = "starting script";
/// Marks the lines our in-VM script prints about itself.
const MARK: &str = "VMTEST";

/// A kernel series and how to find Debian's newest package of it.
struct Series {
    name: &'static str,
    /// Regex for `apt-cache search --names-only`: the image package
    /// (`linux-image-*`, or since 7.x `linux-binary-*`, whose modules are in
    /// the `linux-modules-*` package of the same name).
    pattern: &'static str,
    /// The Debian suite, when the machine's own apt sources lack it: then a
    /// private source list is used.
    suite: Option<&'static str>,
}

const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-amd64$",
        suite: None,
    },
    Series {
        name: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
        suite: None,
    },
    Series {
        name: "7.3",
        pattern: r"^linux-binary-7\.3\.[0-9]+\+deb13-amd64$",
        suite: Some("trixie-backports"),
    },
    Series {
        name: "7.2-rt",
        pattern: r"^linux-binary-7\.2\.[0-9]+\+deb14-rt-amd64$",
        suite: Some("unstable"),
    },
];

#[derive(clap::Args)]
pub(crate) struct VmTestArgs {
    /// Kernel series to boot: 6.1, 6.12, 7.3, 7.2-rt, all or none
    /// (comma-separated list allowed).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    kernel: Vec<String>,
    /// Kernel series to boot again with the host's CPUs saturated
    /// (`stress-ng --cpu N` outside the VM) while the record-fidelity tests
    /// run three times (or --repeat times) in a row, once per attach mode.
    /// Same names as --kernel; none by default.
    #[arg(long, value_delimiter = ',')]
    loaded: Vec<String>,
    /// Attach modes for the --loaded runs (same names as --attach); by
    /// default those of --attach.
    #[arg(long, value_delimiter = ',')]
    loaded_attach: Vec<String>,
    /// Attach modes to test: fentry, kprobe, tracepoint or all
    /// (comma-separated list allowed). One VM boot per mode.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    attach: Vec<String>,
    /// Time limit for one VM run (boot and tests), in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Time limit for the whole command, in seconds: a run gets at most what
    /// is left, and runs that cannot start in time count as failed.
    #[arg(long)]
    budget: Option<u64>,
    /// Unmount tracefs and debugfs in the VM before the tests (virtme-ng
    /// mounts them), to check that the attach modes do not need them.
    #[arg(long)]
    unmount_tracefs: bool,
    /// Run the record-fidelity tests N times in a row in every VM boot,
    /// quiet or loaded, instead of every test once (quiet) or three times
    /// (loaded): losses that come and go between runs show as repeats that
    /// failed. The summary says which repeats passed.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: Option<u32>,
    /// Test binaries to run in every quiet run (exit_records, lineage,
    /// causes, taskstats), for a quicker look at one suite or a wider one
    /// at another; by default (all) each runs where `runs_binary` says.
    /// Loaded runs and --repeat run the record-fidelity tests only.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    tests: Vec<String>,
    /// Only install and download what the VMs need; boot nothing.
    #[arg(long)]
    prepare_only: bool,
}

fn select<'a>(asked: &[String], all: &[&'a str], what: &str) -> Result<Vec<&'a str>> {
    let mut out = Vec::new();
    for a in asked {
        if a == "none" {
            continue;
        }
        if a == "all" {
            out.extend_from_slice(all);
        } else if let Some(x) = all.iter().find(|x| **x == a.as_str()) {
            out.push(*x);
        } else {
            bail!(
                "unknown {what} {a:?}: expected one of {} or all",
                all.join(", ")
            );
        }
    }
    out.dedup();
    Ok(out)
}

/// One kernel, ready to boot.
struct Kernel {
    series: &'static str,
    package: String,
    version: String,
    vmlinuz: PathBuf,
}

/// The outcome of one (kernel, mode) VM run.
struct RunResult {
    series: &'static str,
    version: String,
    /// The attach mode, `+load` for a loaded run.
    mode: String,
    passed: usize,
    failed: usize,
    /// Names of failed tests, or why the run did not complete.
    failures: Vec<String>,
    secs: f64,
    log: PathBuf,
    /// The VM ended before its script started, without timing out: a boot
    /// failure, not a test result, so the run is tried once more.
    boot_failed: bool,
    /// Why the earlier boots failed, when this result is from a later one.
    earlier_boots: Option<String>,
    /// For a run that repeats the record-fidelity tests: whether each
    /// repeat passed, in order, `None` for one that did not finish (empty
    /// for a run of every test once).
    repeats: Vec<Option<bool>>,
}

/// Boots of one (kernel, mode) run before its failure to boot counts.
const BOOT_ATTEMPTS: u32 = 3;
/// A run is not started (or booted again) with less --budget left.
const MIN_RUN_SECS: u64 = 60;
/// Lines of the console kept from before the script starts, printed when a
/// boot fails so that CI's output says why.
const BOOT_TAIL: usize = 25;

pub(crate) fn vm_test(args: VmTestArgs) -> Result<()> {
    let names: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
    let series = select(&args.kernel, &names, "kernel")?;
    let loaded = select(&args.loaded, &names, "kernel")?;
    let modes = select(&args.attach, MODES, "attach mode")?;
    let named = select(&args.tests, &TEST_BINARIES, "test binary")?;
    let suites = if args.tests.iter().any(|t| t == "all") {
        Suites::Default
    } else {
        Suites::Named(&named)
    };
    if matches!(suites, Suites::Named(_)) && args.repeat.is_some() {
        bail!("--repeat runs the record-fidelity tests only: it cannot take --tests");
    }
    let loaded_modes = if args.loaded_attach.is_empty() {
        modes.clone()
    } else {
        select(&args.loaded_attach, MODES, "attach mode")?
    };
    let root = workspace_root();
    let cache = root.join("target/vm-kernels");
    fs::create_dir_all(cache.join("logs"))?;

    let started = Instant::now();
    install_tools()?;
    let mut kernels = Vec::new();
    for s in SERIES
        .iter()
        .filter(|s| series.contains(&s.name) || loaded.contains(&s.name))
    {
        kernels.push(prepare_kernel(s, &cache)?);
    }
    for k in &kernels {
        eprintln!(
            "vm-test: kernel {} = Debian package {} (version {})",
            k.series, k.package, k.version
        );
    }
    eprintln!(
        "vm-test: prepared in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.prepare_only {
        return Ok(());
    }

    let test_bins = build_tests(&root)?;
    for bin in &test_bins {
        eprintln!("vm-test: test binary {}", bin.display());
    }

    let setup = VmSetup {
        root: &root,
        cache: &cache,
        test_bins: &test_bins,
        unmount_tracefs: args.unmount_tracefs,
        repeat: args.repeat.map(|n| n as usize),
        suites,
    };
    // Seconds of --budget left, if one was given.
    let left = || {
        args.budget
            .map(|b| b.saturating_sub(started.elapsed().as_secs()))
    };
    let has_time = || left().is_none_or(|l| l >= MIN_RUN_SECS);
    let timeout = || left().map_or(args.timeout, |l| l.min(args.timeout));
    let mut results = Vec::new();
    // Mode by mode across kernels, in the order given (fentry, kprobe, then
    // tracepoint for `all`), then the loaded runs the same way: a --budget
    // cut drops the last ones first.
    let mut plan = Vec::new();
    for (kernel_names, load, modes) in [(&series, false, &modes), (&loaded, true, &loaded_modes)] {
        for &mode in modes {
            for k in kernels.iter().filter(|k| kernel_names.contains(&k.series)) {
                plan.push((k, mode, load));
            }
        }
    }
    for (k, mode, load) in plan {
        let label = run_label(mode, load);
        if !has_time() {
            println!(
                "vm-test: kernel {} --attach {label}: not run, the --budget of {} s is used up",
                k.series,
                args.budget.unwrap_or_default()
            );
            results.push(RunResult {
                series: k.series,
                version: k.version.clone(),
                mode: label,
                passed: 0,
                failed: 1,
                failures: vec!["(not run: --budget used up)".into()],
                secs: 0.0,
                log: PathBuf::new(),
                boot_failed: false,
                earlier_boots: None,
                repeats: Vec::new(),
            });
            continue;
        }
        let mut attempt = 1;
        let mut result = run_one(&setup, k, mode, load, timeout(), attempt)?;
        // qemu without KVM occasionally ends a boot early: a kernel panic
        // in its timer code at one second, before our script (CI saw two
        // in a row on 7.3 once). More boots tell a flaky VM from a kernel
        // that cannot run us.
        let mut failed_boots = Vec::new();
        while result.boot_failed && attempt < BOOT_ATTEMPTS && has_time() {
            println!(
                "vm-test: kernel {} --attach {label}: the VM ended before its script; booting it again",
                k.series
            );
            failed_boots.push(format!(
                "{} (log {})",
                result.failures.join(", "),
                result.log.display()
            ));
            attempt += 1;
            result = run_one(&setup, k, mode, load, timeout(), attempt)?;
            result.earlier_boots = Some(failed_boots.join("; then "));
        }
        results.push(result);
    }

    let total = started.elapsed().as_secs_f64();
    let summary = summarize(&results, total);
    println!("{summary}");
    let failed: usize = results.iter().map(|r| r.failed).sum();
    if failed > 0 {
        // The summary says what failed; no error chain or backtrace.
        eprintln!("vm-test: {failed} VM test(s) failed");
        std::process::exit(1);
    }
    Ok(())
}

/// How runs are named in the output and the logs: `fentry`, `fentry+load`.
fn run_label(mode: &str, load: bool) -> String {
    if load {
        format!("{mode}+load")
    } else {
        mode.to_owned()
    }
}

/// Times the record-fidelity tests run in a row in a loaded VM, unless
/// --repeat says otherwise.
const LOADED_REPEATS: usize = 3;
/// The tests a loaded run (or any with --repeat) repeats: the workload's
/// records compared with the kernel's, in run and record mode (libtest
/// names, matched exactly).
const LOADED_TESTS: &str = "run_mode_matches_kernel_acct record_mode_matches_kernel_acct --exact";

/// `stress-ng --cpu N` on the host, one worker per host CPU, for a loaded
/// run; stopped (with its process group) when dropped.
struct HostLoad(std::process::Child);

impl HostLoad {
    fn start(timeout: u64) -> Result<HostLoad> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let child = Command::new("stress-ng")
            .args(["--cpu", &cpus.to_string(), "--timeout"])
            .arg(format!("{}s", timeout + 30))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start stress-ng")?;
        println!(
            "vm-test: host load: stress-ng --cpu {cpus} (pid {})",
            child.id()
        );
        Ok(HostLoad(child))
    }
}

impl Drop for HostLoad {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

fn install_tools() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "vm-test: Debian packages present: {}",
            APT_PACKAGES.join(" ")
        );
    } else {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if succeeds(Command::new("vng").arg("--version")) {
        eprintln!("vm-test: virtme-ng present");
    } else {
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "-q",
            "--root-user-action=ignore",
            VIRTME_NG,
        ]))?;
    }
    Ok(())
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Orders package names by their numbers (`6.1.0-9` < `6.1.0-47`).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// apt for one series: the machine's own sources, or for a suite they lack
/// a private source list and package lists under `cache/apt/<suite>`.
struct Apt {
    /// `-o` options that point apt at the private list.
    opts: Vec<String>,
    lists: Option<PathBuf>,
}

impl Apt {
    fn for_series(series: &Series, cache: &Path) -> Result<Apt> {
        let Some(suite) = series.suite else {
            return Ok(Apt {
                opts: Vec::new(),
                lists: None,
            });
        };
        let dir = cache.join("apt").join(suite);
        let lists = dir.join("lists");
        fs::create_dir_all(lists.join("partial"))?;
        let list = dir.join("sources.list");
        fs::write(
            &list,
            format!("deb [trusted=yes] {} {suite} main\n", debian_mirror()),
        )?;
        Ok(Apt {
            opts: vec![
                format!("Dir::Etc::sourcelist={}", list.display()),
                "Dir::Etc::sourceparts=-".into(),
                format!("Dir::State::Lists={}", lists.display()),
            ],
            lists: Some(lists),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for o in &self.opts {
            cmd.args(["-o", o]);
        }
        cmd
    }

    fn update(&self) -> Result<()> {
        run(self.command("apt-get").args(["update", "-qq"]))
    }

    /// The newest package whose name matches `pattern`, if the lists have one.
    fn newest(&self, pattern: &str) -> Result<Option<String>> {
        let list = capture(
            self.command("apt-cache")
                .args(["search", "--names-only", pattern]),
        )?;
        Ok(list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .max_by_key(|n| version_key(n))
            .map(str::to_owned))
    }
}

/// The Debian mirror of the machine's own sources (deb822 or one-line),
/// for the private lists.
fn debian_mirror() -> String {
    let text = fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .or_else(|_| fs::read_to_string("/etc/apt/sources.list"))
        .unwrap_or_default();
    text.lines()
        .flat_map(|l| l.split_whitespace())
        .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

/// Finds the newest Debian package of the series, downloads and extracts it
/// (with its modules package, since 7.x a package of its own) into the
/// cache, once, and links its modules under /lib/modules.
fn prepare_kernel(series: &'static Series, cache: &Path) -> Result<Kernel> {
    let apt = Apt::for_series(series, cache)?;
    let fresh_private_lists = apt
        .lists
        .as_ref()
        .is_some_and(|l| fs::read_dir(l).is_ok_and(|d| d.count() <= 1));
    if fresh_private_lists {
        apt.update()?;
    }
    let package = match apt.newest(series.pattern)? {
        Some(p) => p,
        None => {
            // Empty package lists (a fresh container): fetch them once.
            apt.update()?;
            apt.newest(series.pattern)?
                .with_context(|| format!("no Debian package matches {}", series.pattern))?
        }
    };

    let dir = cache.join(&package);
    let extracted = dir.join("root");
    let done = dir.join(".extracted");
    if done.exists() {
        eprintln!("vm-test: {package} already extracted in {}", dir.display());
    } else {
        let mut packages = vec![package.clone()];
        if let Some(rest) = package.strip_prefix("linux-binary-") {
            packages.push(format!("linux-modules-{rest}"));
        }
        let download = |dir: &Path| -> Result<()> {
            let _ = fs::remove_dir_all(dir);
            fs::create_dir_all(dir)?;
            run(apt
                .command("apt-get")
                .current_dir(dir)
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
                .args(&packages))
        };
        if download(&dir).is_err() {
            // Only a suite's newest build can be downloaded: stale lists
            // name one that is gone. Fresh lists, then the newest again.
            apt.update()?;
            let newest = apt.newest(series.pattern)?;
            if newest.as_deref() != Some(package.as_str()) {
                bail!(
                    "{package} can no longer be downloaded; the lists now offer {newest:?}: run vm-test again"
                );
            }
            download(&dir).with_context(|| format!("downloading {}", packages.join(" ")))?;
        }
        let debs: Vec<PathBuf> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        if debs.len() != packages.len() {
            bail!(
                "apt-get download left {} .deb files in {}, expected {}",
                debs.len(),
                dir.display(),
                packages.len()
            );
        }
        for deb in &debs {
            run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&extracted))?;
            fs::remove_file(deb)?;
        }
        fs::write(&done, &package)?;
    }

    // Up to 6.x: lib/modules/V and boot/vmlinuz-V; since 7.x:
    // usr/lib/modules/V, with the kernel at usr/lib/modules/V/vmlinuz.
    let base = if extracted.join("usr/lib/modules").is_dir() {
        extracted.join("usr")
    } else {
        extracted.clone()
    };
    let modules = base.join("lib/modules");
    let version = fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("no kernel version under {}", modules.display()))?;
    let moddir = modules.join(&version);
    let vmlinuz = [
        extracted.join(format!("boot/vmlinuz-{version}")),
        moddir.join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no vmlinuz for {version} in {package}"))?;
    if !moddir.join("modules.dep").exists() {
        run(Command::new("depmod").arg("-b").arg(&base).arg(&version))?;
    }
    // virtme-ng finds the modules (virtio, 9p) of the kernel it boots under
    // /lib/modules of the filesystem it shares with the VM.
    let link = Path::new("/lib/modules").join(&version);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if fs::read_link(&link)? != moddir {
                fs::remove_file(&link)?;
                std::os::unix::fs::symlink(&moddir, &link)?;
            }
        }
        Ok(_) => eprintln!(
            "vm-test: {} is a real directory (kernel installed on the host); using it",
            link.display()
        ),
        Err(_) => {
            fs::create_dir_all("/lib/modules")?;
            std::os::unix::fs::symlink(&moddir, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(Kernel {
        series: series.name,
        package,
        version,
        vmlinuz,
    })
}

/// Builds the tracer and the privileged test binary on the host; returns the
/// test binary's path. The test runs `env!("CARGO_BIN_EXE_tracer")`, an
/// absolute path the VM sees too.
/// The privileged test binaries the VMs run, in order (see `runs_binary`
/// for which run runs which).
const TEST_BINARIES: [&str; 5] = ["exit_records", "lineage", "causes", "taskstats", "stages"];

/// Whether the run of `series` in `mode` runs test binary `name`. The
/// record-fidelity and lineage tests run in every run: they prove each
/// exit hook on each kernel, and `exit_records` loads every program with
/// every feature on (the filters' and containers' code included) in that
/// mode. Why it died runs in 6.1's tracepoint run: the oldest kernel, and
/// there the memory controller is on v2; the host (6.18, hybrid) runs it
/// with v1. The loader-side
/// suites (containers, filters, safety) run on the host only: under
/// emulation the 7.x runs take twice as long as the 6.x ones, and with
/// them the stage would pass CI's time (measured in CI at aa47cfc).
fn runs_binary(series: &str, mode: &str, name: &str) -> bool {
    match name {
        "causes" => mode == "tracepoint" && series == "6.1",
        "taskstats" => mode == "fentry" || series == "6.1",
        _ => true,
    }
}

/// Which test binaries the runs run.
#[derive(Clone, Copy)]
enum Suites<'a> {
    /// Those `runs_binary` gives each run.
    Default,
    /// These (`--tests`), in every run.
    Named(&'a [&'a str]),
}

impl Suites<'_> {
    fn runs(self, series: &str, mode: &str, name: &str) -> bool {
        match self {
            Suites::Default => runs_binary(series, mode, name),
            Suites::Named(names) => names.contains(&name),
        }
    }
}

/// How many of the `n` test binaries a run runs.
fn binaries_for(series: &str, mode: &str, n: usize, suites: Suites<'_>) -> usize {
    TEST_BINARIES
        .iter()
        .take(n)
        .filter(|&&name| suites.runs(series, mode, name))
        .count()
}

fn build_tests(root: &Path) -> Result<Vec<PathBuf>> {
    run(Command::new("cargo")
        .current_dir(root)
        .args(["build", "-p", "tracer"]))?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["test", "-p", "tracer", "--no-run", "--message-format=json"]);
    for name in TEST_BINARIES {
        cmd.args(["--test", name]);
    }
    eprintln!("xtask: running {cmd:?}");
    let json = capture(cmd.stderr(Stdio::inherit()))?;
    TEST_BINARIES
        .iter()
        .map(|name| {
            json.lines()
                .filter(|l| {
                    l.contains(r#""reason":"compiler-artifact""#)
                        && l.contains(&format!(r#""name":"{name}""#))
                        && l.contains(r#""test":true"#)
                })
                .find_map(|l| {
                    let rest = &l[l.find(r#""executable":""#)? + r#""executable":""#.len()..];
                    Some(PathBuf::from(&rest[..rest.find('"')?]))
                })
                .with_context(|| format!("cargo did not report the {name} test executable"))
        })
        .collect()
}

/// The script the VM runs: tracefs and debugfs (mounted, or unmounted on
/// request), then the tests, timed. `repeats`: the record-fidelity tests
/// that many times, with `TRACER_HOST_LOADED=1` when the host's CPUs are
/// saturated meanwhile (the tests then allow what that delay explains).
fn vm_script(
    root: &Path,
    mode: &str,
    test_bins: &[PathBuf],
    unmount: bool,
    (repeats, host_loaded): (Option<usize>, bool),
    series: &str,
    suites: Suites<'_>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    let _ = writeln!(s, "echo \"{MARK} kernel $(uname -r)\"");
    // Kernel messages share the console with the tests' output: keep them
    // out of the test lines (accounting switches print one each).
    let _ = writeln!(s, "dmesg -n 1");
    // virtme-ng's init mounts both; a host may not (ours does not mount
    // tracefs), so --unmount-tracefs checks that the tracer copes without.
    for (fs, dir) in [
        ("tracefs", "/sys/kernel/tracing"),
        ("debugfs", "/sys/kernel/debug"),
    ] {
        let _ = writeln!(
            s,
            "if grep -q ' {dir} {fs} ' /proc/mounts; then echo '{MARK} {fs}: mounted at boot'; \
             elif mount -t {fs} nodev {dir}; then echo '{MARK} {fs}: not mounted at boot, mounted it'; fi"
        );
    }
    if unmount {
        let _ = writeln!(
            s,
            "umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/tracing; umount /sys/kernel/debug"
        );
        let _ = writeln!(
            s,
            "grep -qE ' (tracefs|debugfs) ' /proc/mounts && echo '{MARK} could not unmount tracefs/debugfs' || echo '{MARK} tracefs and debugfs unmounted for the tests'"
        );
    }
    let _ = writeln!(
        s,
        "echo \"{MARK} btf: $(test -e /sys/kernel/btf/vmlinux && echo yes || echo no)\""
    );
    let _ = writeln!(s, "cd '{}' || exit 1", root.display());
    let _ = writeln!(s, "t0=$(date +%s.%N)");
    let _ = writeln!(s, "rc=0");
    if let Some(repeats) = repeats {
        // The first binary is exit_records: its fidelity tests, again and
        // again (while the host's CPUs are saturated, in a loaded run).
        let loaded = if host_loaded {
            "TRACER_HOST_LOADED=1 "
        } else {
            ""
        };
        for _ in 0..repeats {
            let _ = writeln!(
                s,
                "CI=true {loaded}TRACER_ATTACH={mode} RUST_BACKTRACE=0 '{}' {LOADED_TESTS} --test-threads=1 --color never 2>&1 || rc=1",
                test_bins[0].display()
            );
        }
    } else {
        for (test_bin, name) in test_bins.iter().zip(TEST_BINARIES) {
            if !suites.runs(series, mode, name) {
                continue;
            }
            let _ = writeln!(
                s,
                "CI=true TRACER_ATTACH={mode} RUST_BACKTRACE=0 '{}' --test-threads=1 --color never 2>&1 || rc=1",
                test_bin.display()
            );
        }
    }
    let _ = writeln!(s, "echo \"{MARK} done rc=$rc tests_s=$(echo \"$(date +%s.%N) $t0\" | awk '{{printf \"%.1f\", $1 - $2}}')\"");
    let _ = writeln!(s, "exit $rc");
    s
}

enum Line {
    Out(String),
    End,
}

fn pump(stream: impl Read + Send + 'static, tx: mpsc::Sender<Line>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            if tx.send(Line::Out(line)).is_err() {
                return;
            }
            buf.clear();
        }
        let _ = tx.send(Line::End);
    });
}

/// What every VM run of one `vm-test` shares.
struct VmSetup<'a> {
    root: &'a Path,
    cache: &'a Path,
    test_bins: &'a [PathBuf],
    unmount_tracefs: bool,
    /// --repeat: times every run repeats the record-fidelity tests.
    repeat: Option<usize>,
    /// --tests: the test binaries asked for.
    suites: Suites<'a>,
}

fn run_one(
    setup: &VmSetup<'_>,
    k: &Kernel,
    mode: &'static str,
    load: bool,
    timeout: u64,
    attempt: u32,
) -> Result<RunResult> {
    let label = run_label(mode, load);
    let VmSetup {
        root,
        cache,
        test_bins,
        unmount_tracefs,
        repeat,
        suites,
    } = *setup;
    let repeats = repeat.or(load.then_some(LOADED_REPEATS));
    let script_path = cache.join(format!("run-{}-{label}.sh", k.series));
    fs::write(
        &script_path,
        vm_script(
            root,
            mode,
            test_bins,
            unmount_tracefs,
            (repeats, load),
            k.series,
            suites,
        ),
    )?;
    let log_path = if attempt == 1 {
        cache.join(format!("logs/{}-{label}.log", k.version))
    } else {
        cache.join(format!("logs/{}-{label}.boot{attempt}.log", k.version))
    };
    let mut log = fs::File::create(&log_path)?;

    println!(
        "== vm-test: kernel {} ({}), --attach {label}",
        k.series, k.version
    );
    let mut cmd = Command::new("vng");
    cmd.current_dir(root)
        .arg("--run")
        .arg(&k.vmlinuz)
        .args([
            "--disable-kvm",
            "--force-9p",
            "--memory",
            "2G",
            "--cpus",
            "2",
        ])
        .args(["--verbose", "--exec"])
        .arg(format!("sh {}", script_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let _ = writeln!(log, "{cmd:?}");
    let host_load = if load {
        Some(HostLoad::start(timeout)?)
    } else {
        None
    };
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start vng")?;
    let (tx, rx) = mpsc::channel();
    pump(child.stdout.take().expect("piped"), tx.clone());
    pump(child.stderr.take().expect("piped"), tx);

    let deadline = started + Duration::from_secs(timeout);
    let mut in_script = false;
    let mut ended = 0;
    let mut timed_out = false;
    let mut tests: BTreeMap<String, bool> = BTreeMap::new();
    let mut result_sums: Option<(usize, usize)> = None;
    // Whether each test binary run passed, from its `test result:` line.
    let mut binary_runs: Vec<bool> = Vec::new();
    let mut done_line = None;
    let mut boot_tail = VecDeque::with_capacity(BOOT_TAIL);
    while ended < 2 {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Line::Out(line)) => {
                let _ = writeln!(log, "{line}");
                let line = strip_ansi(&line);
                if line.contains(SCRIPT_START) {
                    in_script = true;
                    println!(
                        "vm-test: booted in {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                    continue;
                }
                if !in_script {
                    if boot_tail.len() == BOOT_TAIL {
                        boot_tail.pop_front();
                    }
                    boot_tail.push_back(line);
                    continue;
                }
                println!("{line}");
                if let Some(rest) = line.strip_prefix("test ") {
                    if let Some((name, outcome)) = rest.split_once(" ... ") {
                        // A repeated test is named once per repeat.
                        let name = match repeats {
                            Some(_) => format!("{name} (repeat {})", binary_runs.len() + 1),
                            None => name.to_owned(),
                        };
                        match outcome.trim() {
                            "ok" => {
                                tests.insert(name, true);
                            }
                            "FAILED" => {
                                tests.insert(name, false);
                            }
                            _ => {}
                        }
                    }
                }
                if line.starts_with("test result:") {
                    binary_runs.push(!line.contains("FAILED"));
                }
                // One per test binary: the run's counts are their sums.
                if let Some((p, f)) = line
                    .starts_with("test result:")
                    .then(|| result_counts(&line))
                    .flatten()
                {
                    let (sp, sf) = result_sums.unwrap_or((0, 0));
                    result_sums = Some((sp + p, sf + f));
                }
                if line.starts_with(&format!("{MARK} done")) {
                    done_line = Some(line.clone());
                }
            }
            Ok(Line::End) => ended += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        // vng and its qemu share the process group we gave vng.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
    }
    let status = child.wait()?;
    drop(host_load);
    let secs = started.elapsed().as_secs_f64();

    let mut failures: Vec<String> = tests
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(n, _)| n.clone())
        .collect();
    // libtest's own count wins over the per-test lines we could parse.
    let counts = result_sums;
    let passed = counts.map_or_else(|| tests.values().filter(|ok| **ok).count(), |c| c.0);
    let mut failed = counts.map_or(failures.len(), |c| c.1);
    if failed > failures.len() {
        failures.push(format!(
            "{} test(s) not named above",
            failed - failures.len()
        ));
    }
    let incomplete = if timed_out {
        Some(format!("timed out after {timeout} s"))
    } else if !in_script {
        println!(
            "vm-test: the VM ended before its script; the last {} console lines:",
            boot_tail.len()
        );
        for line in &boot_tail {
            println!("  | {line}");
        }
        // The summary, at the end of CI's output, keeps the last word.
        let last = boot_tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or_else(|| "none".to_owned(), |l| l.trim().to_owned());
        Some(format!(
            "the VM did not reach its script (vng: {status}; last console line: {last})"
        ))
    } else if binary_runs.len()
        < repeats.unwrap_or_else(|| binaries_for(k.series, mode, test_bins.len(), suites))
        || done_line.is_none()
    {
        Some(format!("a test binary did not finish (vng: {status})"))
    } else if binary_runs.contains(&false) && failed == 0 {
        Some("a test binary failed".into())
    } else {
        None
    };
    if let Some(why) = incomplete {
        failures.push(format!("(run incomplete: {why})"));
        failed += 1;
    }
    println!(
        "vm-test: kernel {} --attach {label}: {passed} passed, {failed} failed in {secs:.0} s (log {})",
        k.series,
        log_path.display()
    );
    Ok(RunResult {
        series: k.series,
        version: k.version.clone(),
        mode: label,
        passed,
        failed,
        failures,
        secs,
        log: log_path,
        boot_failed: !timed_out && !in_script,
        earlier_boots: None,
        repeats: (0..repeats.unwrap_or(0))
            .map(|i| binary_runs.get(i).copied())
            .collect(),
    })
}

/// `(passed, failed)` from libtest's `test result: ... N passed; M failed; ...`.
fn result_counts(line: &str) -> Option<(usize, usize)> {
    let count = |word: &str| {
        line.split(';')
            .find(|part| part.trim_end().ends_with(word))
            .and_then(|part| part.split_whitespace().rev().nth(1)?.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

/// The line without terminal colour escapes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn summarize(results: &[RunResult], total: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== vm-test summary");
    let _ = writeln!(
        s,
        "{:<7} {:<22} {:<16} {:>6} {:>6} {:>7}",
        "kernel", "version", "attach", "passed", "failed", "seconds"
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:<7} {:<22} {:<16} {:>6} {:>6} {:>7.0}",
            r.series, r.version, r.mode, r.passed, r.failed, r.secs
        );
    }
    for r in results.iter().filter(|r| !r.failures.is_empty()) {
        let _ = writeln!(
            s,
            "FAILED on {} --attach {}: {}{}",
            r.series,
            r.mode,
            r.failures.join(", "),
            if r.log.as_os_str().is_empty() {
                String::new()
            } else {
                format!(" (log {})", r.log.display())
            }
        );
    }
    for r in results.iter().filter(|r| !r.repeats.is_empty()) {
        let outcomes: Vec<&str> = r
            .repeats
            .iter()
            .map(|ok| match ok {
                Some(true) => "ok",
                Some(false) => "FAILED",
                None => "not-run",
            })
            .collect();
        let _ = writeln!(
            s,
            "REPEATS on {} --attach {}: {} of {} passed ({})",
            r.series,
            r.mode,
            r.repeats.iter().filter(|&&ok| ok == Some(true)).count(),
            r.repeats.len(),
            outcomes.join(" ")
        );
    }
    for r in results {
        if let Some(earlier) = &r.earlier_boots {
            let _ = writeln!(
                s,
                "BOOTED AGAIN on {} --attach {}: the earlier boot(s) failed: {earlier}",
                r.series, r.mode
            );
        }
    }
    let passed: usize = results.iter().map(|r| r.passed).sum();
    let failed: usize = results.iter().map(|r| r.failed).sum();
    let _ = write!(
        s,
        "vm-test total: {passed} passed, {failed} failed in {total:.0} s"
    );
    s
}
