//! The commands, one module each: what they start, how they end, what
//! they exit with. Exit statuses are documented in README.md ("Exit
//! codes").

pub mod dump;
pub mod generate;
pub mod record;
pub mod run;
pub mod tree;

/// The tool cannot do its job: it cannot start (no root, no BTF, no attach
/// point, an output it cannot open) or a file cannot be read. Usage errors
/// exit with 2 (clap).
pub const EXIT_ERROR: i32 = 1;
/// `record`: the session ran, but an output failed (a full disk, a reader
/// that stopped reading): what it could not write is counted on stderr.
pub const EXIT_OUTPUT_FAILED: i32 = 3;
/// `run`: the tracer failed (it could not start, or an output failed); used
/// instead of the command's status, as timeout(1) and docker run use 125.
pub const EXIT_RUN_FAILED: i32 = 125;

/// Both modes run on one thread: the work is a single reader; a second
/// would only contend for the machine being traced.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `tracer run` and `record` are for the initial pid namespace: the
/// programs see the kernel's pids, which a process in a child namespace
/// (`docker run --privileged` without `--pid=host`) can neither name nor
/// follow. Returns the namespace's inode number when it is another one.
/// The pid namespace of our own, when we are in one: its device and inode
/// (`/proc/self/ns/pid`), as `bpf_get_ns_current_pid_tgid()` takes them.
fn own_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata("/proc/self/ns/pid").ok()?;
    child_pid_namespace().map(|_| (meta.dev(), meta.ino()))
}

fn child_pid_namespace() -> Option<u64> {
    // PROC_PID_INIT_INO in include/linux/proc_ns.h: the initial pid
    // namespace's inode number, the same on every kernel.
    const INIT_PID_NS: u64 = 0xEFFF_FFFC;
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    (ino != INIT_PID_NS).then_some(ino)
}
