//! Developer tasks: `cargo xtask setup`, `cargo xtask build-ebpf [--check]`,
//! `cargo xtask vm-test`, `cargo xtask deb`.
//!
//! The eBPF object is built with nightly, build-std and bpf-linker, then
//! committed into the tracer crate, so users and CI build the tool itself
//! with stable Rust only.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod vm;

/// LLVM whose libraries bpf-linker links against; it must match the LLVM of
/// the nightly compiler (22 for nightly 1.97).
const LLVM_MAJOR: u32 = 22;
const EBPF_TARGET: &str = "bpfel-unknown-none";
/// Where the committed object lives, relative to the workspace root.
const COMMITTED_OBJECT: &str = "tracer/ebpf/tracer.bpf.o";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF object needs (idempotent): nightly's
    /// rust-src, LLVM development packages and bpf-linker.
    Setup,
    /// Build the eBPF object and place it where the tracer embeds it.
    BuildEbpf {
        /// Do not replace the committed object: fail if it differs from a
        /// fresh build (it is stale).
        #[arg(long)]
        check: bool,
    },
    /// Run the privileged tests in VMs booting Debian's 6.1 and 6.12 kernels,
    /// once per attach mode (installs what it needs).
    VmTest(vm::VmTestArgs),
    /// Measure what tracing costs: workloads untraced, under the tracer,
    /// exitsnoop and kernel accounting (root; writes bench/results/).
    Bench(bench::BenchArgs),
    /// Build the Debian package (target/debian/tracer_*.deb): release
    /// binary, man pages and completions generated from the clap
    /// definitions, systemd unit, default config, logrotate snippet. Needs
    /// cargo-deb (`cargo install cargo-deb --locked`).
    Deb,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::BuildEbpf { check } => build_ebpf(check),
        Task::VmTest(args) => vm::vm_test(args),
        Task::Bench(args) => bench::bench(args),
        Task::Deb => deb(),
    }
}

fn deb() -> Result<()> {
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "tracer",
    ]))?;
    run(Command::new(target.join("release/tracer"))
        .arg("generate")
        .arg(target.join("release/generated")))?;
    run(Command::new("cargo").current_dir(&root).args([
        "deb",
        "-p",
        "tracer",
        "--no-build",
        "--locked",
    ]))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn setup() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;

    let llvm = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let packages = [
        format!("llvm-{LLVM_MAJOR}-dev"),
        format!("libpolly-{LLVM_MAJOR}-dev"),
        "libzstd-dev".into(),
        "zlib1g-dev".into(),
    ];
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| !succeeds(Command::new("dpkg").args(["-s", p.as_str()])))
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    if succeeds(Command::new("bpf-linker").arg("--version")) {
        eprintln!("xtask: bpf-linker already installed");
    } else {
        // Without LLVM_PREFIX the build finds an older LLVM and fails to link.
        let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
        run(Command::new("cargo")
            .args(["install", "bpf-linker", "--no-default-features"])
            .args(["--features", &format!("llvm-{LLVM_MAJOR}")])
            .env("LLVM_PREFIX", &llvm)
            .env("PATH", path))?;
    }
    Ok(())
}

fn build_ebpf(check: bool) -> Result<()> {
    let root = workspace_root();
    let crate_dir = root.join("tracer-ebpf");
    // No debug info and no path-dependent flags: the program sections are
    // then the same wherever the checkout lives (see program_difference).
    run(Command::new("cargo")
        .current_dir(&crate_dir)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["+nightly", "build", "--release", "--locked"])
        .args(["-Z", "build-std=core", "--target", EBPF_TARGET]))
    .context("building the eBPF object failed; `cargo xtask setup` installs what it needs")?;

    let built = crate_dir.join(format!("target/{EBPF_TARGET}/release/tracer"));
    let fresh =
        std::fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    let committed_path = root.join(COMMITTED_OBJECT);
    if check {
        let committed = std::fs::read(&committed_path)
            .with_context(|| format!("cannot read {}", committed_path.display()))?;
        if let Some(diff) = program_difference(&committed, &fresh)? {
            bail!(
                "{COMMITTED_OBJECT} is stale: {diff} differs from a fresh build of \
                 tracer-ebpf; run `cargo xtask build-ebpf` and commit the result"
            );
        }
        eprintln!("xtask: {COMMITTED_OBJECT} matches a fresh build");
    } else {
        std::fs::write(&committed_path, &fresh)
            .with_context(|| format!("cannot write {}", committed_path.display()))?;
        eprintln!("xtask: wrote {COMMITTED_OBJECT} ({} bytes)", fresh.len());
    }
    Ok(())
}

/// The first section whose contents differ between two eBPF objects, or
/// `None` when they carry the same programs. Only the symbol names may
/// differ: rustc's symbol hashes include where the checkout lives.
fn program_difference(a: &[u8], b: &[u8]) -> Result<Option<String>> {
    use object::{Object as _, ObjectSection as _};
    let sections = |data| -> Result<Vec<(String, Vec<u8>)>> {
        let file = object::File::parse(data).context("not an ELF object")?;
        file.sections()
            .filter(|s| !matches!(s.name(), Ok(".strtab" | ".symtab")))
            .map(|s| Ok((s.name()?.to_owned(), s.data()?.to_vec())))
            .collect()
    };
    let (a, b) = (sections(a)?, sections(b)?);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(&a) != names(&b) {
        return Ok(Some("the list of sections".into()));
    }
    Ok(a.into_iter()
        .zip(b)
        .find(|(x, y)| x.1 != y.1)
        .map(|(x, _)| format!("section {}", x.0)))
}
