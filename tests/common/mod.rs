//! Shared helpers for the privileged integration tests: an independent
//! `struct acct_v3` parser (deliberately NOT the tool's own, so that these
//! tests are an oracle of their own), the workload build, kernel process
//! accounting (`accton`) control and the privilege gate.
#![allow(
    dead_code,
    reason = "each test binary compiles this module and uses a different part of it"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// struct acct_v3 (include/uapi/linux/acct.h), 64 bytes, little-endian.
// ---------------------------------------------------------------------------

pub(crate) const RECORD_SIZE: usize = 64;

pub(crate) const AFORK: u8 = 0x01;
pub(crate) const ASU: u8 = 0x02;
pub(crate) const ACORE: u8 = 0x08;
pub(crate) const AXSIG: u8 = 0x10;

/// One `struct acct_v3` record, fields kept raw (comp_t undecoded).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AcctV3 {
    pub flag: u8,
    pub version: u8,
    pub tty: u16,
    pub exitcode: u32,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub btime: u32,
    pub etime: f32,
    pub utime: u16,
    pub stime: u16,
    pub mem: u16,
    pub io: u16,
    pub rw: u16,
    pub minflt: u16,
    pub majflt: u16,
    pub swaps: u16,
    pub comm: [u8; 16],
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl AcctV3 {
    pub(crate) fn parse(b: &[u8; RECORD_SIZE]) -> AcctV3 {
        let mut comm = [0u8; 16];
        comm.copy_from_slice(&b[48..64]);
        AcctV3 {
            flag: b[0],
            version: b[1],
            tty: le16(b, 2),
            exitcode: le32(b, 4),
            uid: le32(b, 8),
            gid: le32(b, 12),
            pid: le32(b, 16),
            ppid: le32(b, 20),
            btime: le32(b, 24),
            etime: f32::from_bits(le32(b, 28)),
            utime: le16(b, 32),
            stime: le16(b, 34),
            mem: le16(b, 36),
            io: le16(b, 38),
            rw: le16(b, 40),
            minflt: le16(b, 42),
            majflt: le16(b, 44),
            swaps: le16(b, 46),
            comm,
        }
    }

    /// The command name up to the first NUL, lossily decoded.
    pub(crate) fn comm_str(&self) -> String {
        let end = self.comm.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// Decodes a comp_t (3-bit base-8 exponent, 13-bit mantissa).
pub(crate) fn decode_comp(c: u16) -> u64 {
    u64::from(c & 0x1fff) << (3 * u32::from(c >> 13))
}

/// Reads a whole accounting file. Fails if its size is not a multiple of 64.
pub(crate) fn read_records(path: &Path) -> Vec<AcctV3> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        bytes.len().is_multiple_of(RECORD_SIZE),
        "{}: size {} is not a multiple of {RECORD_SIZE}",
        path.display(),
        bytes.len()
    );
    bytes
        .chunks_exact(RECORD_SIZE)
        .map(|c| AcctV3::parse(c.try_into().expect("64-byte chunk")))
        .collect()
}

/// Asserts that no pid appears twice in `records` (pid reuse inside a test
/// window is impossible in practice, so a duplicate is a duplicated record).
pub(crate) fn assert_unique_pids(records: &[AcctV3], what: &str) {
    let mut seen: HashMap<u32, &AcctV3> = HashMap::new();
    let mut dups = String::new();
    for r in records {
        if let Some(prev) = seen.insert(r.pid, r) {
            let _ = writeln!(
                dups,
                "  pid {}: {:?} and {:?}",
                r.pid,
                prev.comm_str(),
                r.comm_str()
            );
        }
    }
    assert!(dups.is_empty(), "{what}: duplicate pids:\n{dups}");
}

pub(crate) fn by_pid(records: &[AcctV3]) -> BTreeMap<u32, AcctV3> {
    records.iter().map(|r| (r.pid, *r)).collect()
}

/// The records of the process tree rooted at `root_pid`: the root is the
/// record with that pid whose comm is `root_comm`; a record belongs if its
/// ppid is a member (iterated to a fixpoint). Records that began more than a
/// second before the root cannot be its descendants (that would be an old,
/// recycled pid) and are ignored.
pub(crate) fn select_tree(
    records: &[AcctV3],
    root_pid: u32,
    root_comm: &str,
) -> BTreeMap<u32, AcctV3> {
    let Some(root) = records
        .iter()
        .find(|r| r.pid == root_pid && r.comm_str() == root_comm)
    else {
        let mut near = String::new();
        for r in records.iter().filter(|r| r.comm_str() == root_comm) {
            let _ = write!(near, " {}", r.pid);
        }
        panic!("no record with pid {root_pid} and comm {root_comm:?} (records with that comm have pids:{near})");
    };
    let mut members = BTreeSet::from([root_pid]);
    loop {
        let before = members.len();
        for r in records {
            if members.contains(&r.ppid) && r.btime.saturating_add(1) >= root.btime {
                members.insert(r.pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    records
        .iter()
        .filter(|r| members.contains(&r.pid))
        .map(|r| (r.pid, *r))
        .collect()
}

// ---------------------------------------------------------------------------
// Field-by-field comparison.
// ---------------------------------------------------------------------------

fn fmt_comp(c: u16) -> String {
    format!("{c:#06x} (={})", decode_comp(c))
}

fn fmt_comm(c: &[u8; 16]) -> String {
    let mut s = String::from("\"");
    for &b in c {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s.push('"');
    s
}

/// How many ticks (10 ms each) earlier than the kernel's our `ac_etime`
/// may be in a loaded VM: the 7.3 fentry run once found 2 (CI at 7bd6c43),
/// and 2 to 6 were seen once on 6.1 with kprobe.
const LOADED_ETIME_TICKS: f32 = 10.0;

/// vm-test's loaded run: the host's CPUs are saturated, so the VM's vCPUs
/// may be descheduled for several ticks at any point.
fn host_loaded() -> bool {
    std::env::var("TRACER_HOST_LOADED").as_deref() == Ok("1")
}

/// How many ticks later than the kernel's the `ac_etime` of a late record
/// (`"late": true`, written at its leader's free) may be: the parent's
/// wait, then an RCU grace period, in a VM that may be loaded.
const LATE_ETIME_TICKS: f32 = 300.0;

/// What our JSON line of an exit adds to its acct record, for
/// [`field_diffs`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JsonExit {
    /// `cpu_runtime_s` in µs: our exact CPU time, when we have it.
    pub(crate) runtime_us: Option<u64>,
    /// `late`: `tracer run` wrote the record when the group's leader was
    /// freed, because the kernel skipped both exit programs.
    pub(crate) late: bool,
}

/// The exit lines of our JSON file at `path`, by the number under
/// `pid_key` (`pid`, or `ns_pid` for a container's acct file).
pub(crate) fn json_exits(path: &Path, pid_key: &str) -> HashMap<u32, JsonExit> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["event"] == "exit").then_some(())?;
            let pid = u32::try_from(v[pid_key].as_u64()?).ok()?;
            Some((
                pid,
                JsonExit {
                    runtime_us: v["cpu_runtime_s"].as_f64().map(|s| (s * 1e6) as u64),
                    late: v["late"] == true,
                },
            ))
        })
        .collect()
}

/// (field, kernel value, our value) for every field that differs.
/// `json`: what our JSON line says of the process. A late record
/// ([`JsonExit::late`]) may differ where the README says it does: a
/// later exit time, no tty, the leader's comm; each is said on stderr.
pub(crate) fn field_diffs(
    k: &AcctV3,
    o: &AcctV3,
    json: JsonExit,
) -> Vec<(&'static str, String, String)> {
    let runtime_us = json.runtime_us;
    let mut d = Vec::new();
    macro_rules! exact {
        ($name:literal, $f:ident, $fmt:expr) => {
            if k.$f != o.$f {
                d.push(($name, $fmt(k.$f), $fmt(o.$f)));
            }
        };
    }
    let hex8 = |v: u8| format!("{v:#04x}");
    let hex16 = |v: u16| format!("{v:#06x}");
    let hex32 = |v: u32| format!("{v:#010x}");
    let dec = |v: u32| v.to_string();
    exact!("ac_flag", flag, hex8);
    exact!("ac_version", version, hex8);
    if json.late && k.tty != o.tty && o.tty == 0 {
        let _ = writeln!(
            std::io::stderr(),
            "note: pid {}: late record: no tty, the kernel's {:#06x}",
            o.pid,
            k.tty
        );
    } else {
        exact!("ac_tty", tty, hex16);
    }
    exact!("ac_exitcode", exitcode, hex32);
    exact!("ac_uid", uid, dec);
    exact!("ac_gid", gid, dec);
    exact!("ac_pid", pid, dec);
    exact!("ac_ppid", ppid, dec);
    if k.btime.abs_diff(o.btime) > 1 {
        d.push(("ac_btime (±1 s)", k.btime.to_string(), o.btime.to_string()));
    }
    // Ours is read a little earlier on the same path (README, "Elapsed
    // time"): one tick either way, and, in a VM whose host's CPUs are
    // saturated (`TRACER_HOST_LOADED`, vm-test's loaded run), ours earlier
    // by what a descheduled vCPU delays the dying task, said each time.
    let short = k.etime - o.etime;
    let mut etime_ok = short.abs() <= 1.0; // false if either is NaN
    if !etime_ok && json.late && short < 0.0 && -short <= LATE_ETIME_TICKS {
        etime_ok = true;
        let _ = writeln!(
            std::io::stderr(),
            "note: pid {}: late record: ac_etime {:.2} ticks, the kernel's {:.2} (at most \
             {LATE_ETIME_TICKS} ticks later)",
            o.pid,
            o.etime,
            k.etime
        );
    }
    if !etime_ok && host_loaded() && short > 0.0 && short <= LOADED_ETIME_TICKS {
        etime_ok = true;
        let _ = writeln!(
            std::io::stderr(),
            "note: pid {}: ac_etime {:.2} ticks, the kernel's {:.2}: the dying task was delayed \
             between the two reads (TRACER_HOST_LOADED: at most {LOADED_ETIME_TICKS} ticks)",
            o.pid,
            o.etime,
            k.etime
        );
    }
    if !etime_ok {
        d.push((
            "ac_etime (±1 tick)",
            format!("{:.2}", k.etime),
            format!("{:.2}", o.etime),
        ));
    }
    exact!("ac_utime", utime, fmt_comp);
    exact!("ac_stime", stime, fmt_comp);
    exact!("ac_mem", mem, fmt_comp);
    // ac_io: upstream fill_ac() leaves it 0, and so do we. This project's
    // 6.18 build (a patched kernel) stores the group's CPU time in
    // microseconds there, measured inside acct_process() after exit_mm(),
    // which no exit hook can reproduce exactly. Accept that one extension,
    // and only when the kernel's value is the CPU time we measured exactly
    // (our `cpu_runtime_s`, read just before exit_mm(), so exit_mm's own
    // work and up to a tick of scheduler staleness separate the two).
    if k.io != o.io {
        let io_us = decode_comp(k.io);
        let plausible = runtime_us.is_some_and(|rt| io_us.abs_diff(rt) <= 20_000 + rt / 10);
        if o.io != 0 || !plausible {
            d.push((
                "ac_io (kernel CPU µs vs our cpu_runtime_s)",
                fmt_comp(k.io),
                format!("{} (runtime {:?} µs)", fmt_comp(o.io), runtime_us),
            ));
        }
    }
    exact!("ac_rw", rw, fmt_comp);
    exact!("ac_minflt", minflt, fmt_comp);
    exact!("ac_majflt", majflt, fmt_comp);
    exact!("ac_swaps", swaps, fmt_comp);
    if k.comm != o.comm {
        if json.late {
            let _ = writeln!(
                std::io::stderr(),
                "note: pid {}: late record: the leader's comm {}, the kernel's (last thread's) {}",
                o.pid,
                fmt_comm(&o.comm),
                fmt_comm(&k.comm)
            );
        } else {
            d.push(("ac_comm", fmt_comm(&k.comm), fmt_comm(&o.comm)));
        }
    }
    d
}

/// Whether `diffs` are what a thread late to its group's sums makes
/// (README): a thread leaves `signal->live` just before the last one and
/// is preempted before `acct_collect()` adds its share, which then lands
/// between our read and the kernel's. Only the per-thread sums differ, all
/// the same way: ours smaller where we read first (fentry, kprobe, the
/// tracepoint from 6.16 on), larger where the kernel does (the tracepoint
/// before 6.16). CI saw it on 7.2-rt with the tracepoint hook (threads16
/// short of 3 ticks and a fault). The oracle has the same window, so it
/// is allowed for one group a run; a bug would show in more.
fn only_a_late_thread(k: &AcctV3, o: &AcctV3, diffs: &[(&'static str, String, String)]) -> bool {
    // The fields `acct_collect()` adds each thread's share to: (name,
    // kernel's, ours).
    let sums = [
        ("ac_utime", k.utime, o.utime),
        ("ac_stime", k.stime, o.stime),
        ("ac_minflt", k.minflt, o.minflt),
        ("ac_majflt", k.majflt, o.majflt),
    ];
    if !diffs
        .iter()
        .all(|(f, _, _)| sums.iter().any(|(name, _, _)| name == f))
    {
        return false;
    }
    let ordering = |&(_, kv, ov): &(&str, u16, u16)| decode_comp(ov).cmp(&decode_comp(kv));
    let smaller = sums.iter().all(|s| ordering(s).is_le());
    let larger = sums.iter().all(|s| ordering(s).is_ge());
    smaller || larger
}

/// Compares the kernel's records with ours (both keyed by pid). Prints a
/// full report on stderr and panics if the pid sets differ or any field of
/// any record does.
pub(crate) fn compare_records(
    kernel: &BTreeMap<u32, AcctV3>,
    ours: &BTreeMap<u32, AcctV3>,
    labels: &HashMap<u32, String>,
    json: &HashMap<u32, JsonExit>,
) {
    let label = |pid: u32, r: &AcctV3| {
        labels
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| format!("(unlabelled, comm {:?})", r.comm_str()))
    };
    let mut report = String::new();
    let mut problems = 0usize;

    for (pid, k) in kernel {
        if !ours.contains_key(pid) {
            problems += 1;
            let _ = writeln!(
                report,
                "MISSING from ours: pid {pid} comm {:?} label {} (ppid {}, exitcode {:#x}, flag {:#04x})",
                k.comm_str(),
                label(*pid, k),
                k.ppid,
                k.exitcode,
                k.flag
            );
        }
    }
    for (pid, o) in ours {
        if !kernel.contains_key(pid) {
            problems += 1;
            let _ = writeln!(
                report,
                "EXTRA in ours: pid {pid} comm {:?} label {} (ppid {}, exitcode {:#x}, flag {:#04x})",
                o.comm_str(),
                label(*pid, o),
                o.ppid,
                o.exitcode,
                o.flag
            );
        }
    }

    let mut table = String::new();
    let mut bad_records = 0usize;
    let mut late_thread_allowed = false;
    for (pid, k) in kernel {
        let Some(o) = ours.get(pid) else { continue };
        let diffs = field_diffs(k, o, json.get(pid).copied().unwrap_or_default());
        if diffs.is_empty() {
            continue;
        }
        if !late_thread_allowed && only_a_late_thread(k, o, &diffs) {
            late_thread_allowed = true;
            let _ = writeln!(
                std::io::stderr(),
                "note: pid {pid} ({}): a thread late to its group's sums (README, at most one \
                 group a run): {}",
                label(*pid, k),
                diffs
                    .iter()
                    .map(|(f, kv, ov)| format!("{f} kernel {kv}, ours {ov}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            continue;
        }
        bad_records += 1;
        problems += diffs.len();
        for (field, kv, ov) in diffs {
            let _ = writeln!(
                table,
                "{:>8}  {:<16} {:<20} {:<28} {:<28}",
                pid,
                label(*pid, k),
                field,
                kv,
                ov
            );
        }
    }
    if !table.is_empty() {
        let _ = writeln!(
            report,
            "{bad_records} record(s) differ:\n{:>8}  {:<16} {:<20} {:<28} {:<28}\n{table}",
            "pid", "label", "field", "kernel", "ours"
        );
    }

    if problems > 0 {
        eprintln!(
            "=== acct comparison: {} kernel records, {} of ours ===\n{report}",
            kernel.len(),
            ours.len()
        );
        panic!("our records differ from the kernel's: {problems} problem(s), see the report above");
    }
    eprintln!(
        "acct comparison: all {} records identical to the kernel's",
        kernel.len()
    );
}

/// Checks, on the KERNEL's records of the workload tree, that the workload
/// exercised every interesting case (so that the equality with our records
/// covers them), and that every process the workload announced is there.
pub(crate) fn assert_workload_coverage(
    kernel: &BTreeMap<u32, AcctV3>,
    labels: &HashMap<u32, String>,
) {
    let mut missing = Vec::new();
    let mut unannounced: Vec<_> = labels
        .iter()
        .filter(|(pid, _)| !kernel.contains_key(pid))
        .map(|(pid, l)| format!("{pid} {l}"))
        .collect();
    unannounced.sort();
    if !unannounced.is_empty() {
        missing.push(format!(
            "announced processes without a kernel record in the tree: {unannounced:?}"
        ));
    }
    let recs: Vec<&AcctV3> = kernel.values().collect();
    let mut need = |what: &str, ok: bool| {
        if !ok {
            missing.push(what.to_string());
        }
    };
    need("AFORK (0x01)", recs.iter().any(|r| r.flag & AFORK != 0));
    need("ASU (0x02)", recs.iter().any(|r| r.flag & ASU != 0));
    need("AXSIG (0x10)", recs.iter().any(|r| r.flag & AXSIG != 0));
    need("nonzero ac_tty", recs.iter().any(|r| r.tty != 0));
    need("exit code 3", recs.iter().any(|r| r.exitcode == 3 << 8));
    need("exit code 255", recs.iter().any(|r| r.exitcode == 255 << 8));
    need(
        "exit code 7 (threads)",
        recs.iter().any(|r| r.exitcode == 7 << 8),
    );
    need(
        "exit code 4 (posix_spawn sh)",
        recs.iter().any(|r| r.exitcode == 4 << 8),
    );
    need("killed by SIGKILL", recs.iter().any(|r| r.exitcode == 9));
    need("killed by SIGTERM", recs.iter().any(|r| r.exitcode == 15));
    need(
        "uid 65534",
        recs.iter().any(|r| r.uid == 65534 && r.gid == 65534),
    );
    need("nonzero ac_utime", recs.iter().any(|r| r.utime != 0));
    need("nonzero ac_stime", recs.iter().any(|r| r.stime != 0));
    need(
        "a record with ac_ppid != the workload's (pid namespace / grandchildren)",
        recs.iter()
            .filter(|r| r.comm_str() != "workload")
            .any(|r| kernel.contains_key(&r.ppid) && kernel[&r.ppid].comm_str() != "workload"),
    );
    if recs.iter().any(|r| r.flag & ACORE != 0) {
        eprintln!("coverage: the kernel recorded a core dump (ACORE)");
    } else {
        eprintln!(
            "coverage: note: no ACORE record (the host's core_pattern/limits prevented a dump)"
        );
    }
    assert!(
        missing.is_empty(),
        "the workload did not exercise (per the kernel's own records): {missing:#?}"
    );
}

// ---------------------------------------------------------------------------
// Environment: privileges, tools, temporary directories.
// ---------------------------------------------------------------------------

/// Kernel process accounting is one global switch: every test that turns it
/// on holds this lock.
static ACCT_LOCK: Mutex<()> = Mutex::new(());

/// Holds [`ACCT_LOCK`] and, across processes (other test binaries, other
/// `cargo test` runs on the machine), an flock on a well-known file.
pub(crate) struct AcctLock {
    _file: Option<std::fs::File>,
    _guard: MutexGuard<'static, ()>,
}

pub(crate) fn acct_lock() -> AcctLock {
    // A test that panicked while holding the lock left nothing shared
    // half-updated (its Accounting guard turned accounting off).
    let guard = ACCT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("tracer-tests-accton.lock"))
        .ok();
    if let Some(f) = &file {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a valid, open descriptor; released when the file
        // is closed (dropped).
        while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
    AcctLock {
        _file: file,
        _guard: guard,
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Needs {
    /// eBPF programs: BPF syscall and kernel BTF.
    pub bpf: bool,
    /// kernel process accounting through `accton`.
    pub accton: bool,
    /// a C compiler for the workload.
    pub cc: bool,
}

fn in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

pub(crate) fn accton_path() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/sbin/accton");
    if fixed.is_file() {
        return Some(fixed);
    }
    in_path("accton")
}

/// Probes the bpf(2) syscall with an invalid BPF_MAP_CREATE request: EINVAL
/// means BPF is there and we may use it.
fn bpf_problem() -> Option<String> {
    let attr = [0u8; 128];
    // SAFETY: bpf(BPF_MAP_CREATE=0, attr, size) only reads `attr`, which is a
    // valid 128-byte buffer; the all-zero request is rejected, nothing is
    // created.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    if rc >= 0 {
        // Should not happen; don't leak the fd.
        // SAFETY: rc is a file descriptor we own.
        unsafe { libc::close(rc as libc::c_int) };
        return None;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => Some("needs a kernel with the bpf() syscall".into()),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Some("needs permission to use bpf() (CAP_BPF/CAP_SYS_ADMIN)".into())
        }
        _ => None,
    }
}

/// The privilege gate. Returns true if the test can run. When something is
/// missing it panics under CI (`CI=true`: CI must never skip), otherwise it
/// prints `skipped: <test>: <reason>` on stderr and returns false.
pub(crate) fn require_privileges(test: &str, needs: Needs) -> bool {
    let mut reasons: Vec<String> = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        reasons.push(match (needs.bpf, needs.accton) {
            (true, true) => "needs root (eBPF programs and kernel accounting)".into(),
            (true, false) => "needs root (eBPF programs)".into(),
            (false, true) => "needs root (kernel accounting)".into(),
            (false, false) => "needs root".into(),
        });
    } else if needs.bpf {
        if let Some(p) = bpf_problem() {
            reasons.push(p);
        }
    }
    if needs.bpf && !Path::new("/sys/kernel/btf/vmlinux").exists() {
        reasons.push("needs kernel BTF (/sys/kernel/btf/vmlinux)".into());
    }
    if needs.accton && accton_path().is_none() {
        reasons.push("needs accton (Debian package `acct`)".into());
    }
    if needs.cc && in_path("cc").is_none() {
        reasons.push("needs a C compiler (`cc`) to build the workload".into());
    }
    if reasons.is_empty() {
        return true;
    }
    skip_or_fail(test, &reasons.join("; "));
    false
}

/// `test` cannot run here, for `reason`: it panics under CI (`CI=true`: CI
/// must never skip), otherwise it prints `skipped: <test>: <reason>` on
/// stderr; the caller then returns.
pub(crate) fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {reason} (CI=true: tests must not be skipped in CI)");
    }
    // Straight to fd 2, past libtest's output capture, so that a skip is
    // visible in a normal run.
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {reason}");
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop unless the
/// test is failing (then it is kept for inspection and its path printed).
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("tracer-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        TempDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Builds tests/workload.c into `dir`; returns the binary's path.
pub(crate) fn compile_workload(dir: &TempDir) -> PathBuf {
    compile_c(dir, "workload")
}

/// Compiles `tests/<name>.c` into `dir/<name>`.
pub(crate) fn compile_c(dir: &TempDir, name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        manifest.join(format!("../tests/{name}.c")),
        manifest.join(format!("tests/{name}.c")),
    ];
    let src = candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name}.c not found (looked at {candidates:?})"));
    let out = dir.join(name);
    let res = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-lutil")
        .output()
        .expect("running cc");
    assert!(
        res.status.success(),
        "compiling {} failed ({}):\n{}{}",
        src.display(),
        res.status,
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// Kernel process accounting, on while this guard lives (`accton FILE`),
/// turned off by [`Accounting::off`] or on drop (also when a test panics).
pub(crate) struct Accounting {
    accton: PathBuf,
    on: bool,
}

impl Accounting {
    pub(crate) fn on(file: &Path) -> Accounting {
        let accton = accton_path().expect("accton not found");
        // accton wants an existing file.
        std::fs::File::create(file).unwrap_or_else(|e| panic!("creating {}: {e}", file.display()));
        let out = Command::new(&accton)
            .arg(file)
            .output()
            .expect("running accton");
        assert!(
            out.status.success(),
            "accton {} failed ({}): {}{}",
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Accounting { accton, on: true }
    }

    fn turn_off(&mut self) -> Result<(), String> {
        if !self.on {
            return Ok(());
        }
        self.on = false;
        let out = Command::new(&self.accton)
            .arg("off")
            .output()
            .map_err(|e| format!("running accton off: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "accton off failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub(crate) fn off(mut self) {
        if let Err(e) = self.turn_off() {
            panic!("{e}");
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        if let Err(e) = self.turn_off() {
            eprintln!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes.
// ---------------------------------------------------------------------------

/// Kills and reaps the child on drop if it is still running.
pub(crate) struct ChildGuard(pub Child);

impl ChildGuard {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `timeout`; None if it is still running.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.0.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for child {}: {e}", self.0.id()),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn read_all_in_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` with stdout and stderr captured; kills it and panics if it
/// runs longer than `timeout`.
pub(crate) fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut guard = ChildGuard(child);
    let out_t = read_all_in_thread(guard.0.stdout.take().expect("stdout"));
    let err_t = read_all_in_thread(guard.0.stderr.take().expect("stderr"));
    let status = guard.wait_timeout(timeout);
    drop(guard); // kills it if it is still running
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

pub(crate) fn describe_output(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Parses the workload's `<pid> <label>` lines; returns the workload's own
/// pid (first line, label `workload`) and the pid → label map.
pub(crate) fn parse_labels(stdout: &[u8]) -> (u32, HashMap<u32, String>) {
    let text = String::from_utf8_lossy(stdout);
    let mut labels = HashMap::new();
    let mut root = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(pid), Some(label), None) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if root.is_none() && label == "workload" {
            root = Some(pid);
        }
        labels.insert(pid, label.to_string());
    }
    let root = root
        .unwrap_or_else(|| panic!("no `<pid> workload` line in the workload's output:\n{text}"));
    (root, labels)
}

/// Spawns a reader of `r` that sends each line through the returned channel
/// and also returns everything it read when joined.
pub(crate) fn line_reader<R: Read + Send + 'static>(
    r: R,
) -> (
    std::sync::mpsc::Receiver<String>,
    thread::JoinHandle<String>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = thread::spawn(move || {
        let mut all = String::new();
        let mut br = BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            match br.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    all.push_str(&line);
                    let _ = tx.send(line.trim_end().to_string());
                }
            }
        }
        all
    });
    (rx, h)
}

/// For the tests that run `tracer` on shell commands: no accounting, no
/// compiler.
pub(crate) const BPF_ONLY: Needs = Needs {
    bpf: true,
    accton: false,
    cc: false,
};

/// For the tests that build a C helper and trace it.
pub(crate) const BPF_CC: Needs = Needs {
    bpf: true,
    accton: false,
    cc: true,
};

/// The tracer binary this test build goes with.
pub(crate) fn tracer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

/// Processes dying all the time, so that outputs have something to write.
pub(crate) fn churn() -> ChildGuard {
    ChildGuard(
        Command::new("/bin/sh")
            .args(["-c", "while :; do /bin/true; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the churn"),
    )
}

/// Starts `tracer` with `args`, stderr read line by line; returns once it
/// says it is recording.
pub(crate) fn start_tracer(
    args: &[&str],
    extra: &[&Path],
) -> (
    ChildGuard,
    std::sync::mpsc::Receiver<String>,
    thread::JoinHandle<String>,
) {
    let child = tracer()
        .args(args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tracer");
    let mut guard = ChildGuard(child);
    let (lines, all) = line_reader(guard.0.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("tracer: recording") => break,
            Ok(_) => {}
            Err(_) => {
                drop(guard);
                panic!(
                    "tracer did not start recording:\n{}",
                    all.join().unwrap_or_default()
                );
            }
        }
    }
    (guard, lines, all)
}

/// Stops a tracer session with SIGTERM (30 s at most), requires a clean
/// exit, and returns its stderr.
pub(crate) fn stop_tracer(mut child: ChildGuard, all: thread::JoinHandle<String>) -> String {
    // SAFETY: kill has no memory preconditions; the child is not reaped.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, libc::SIGTERM) }, 0);
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("tracer did not stop");
    let stderr = all.join().unwrap_or_default();
    assert!(status.success(), "tracer: {status}\n{stderr}");
    stderr
}

/// Where the cgroup v2 hierarchy is mounted, if it is.
pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
    mount_where(|fstype, _| fstype == "cgroup2")
}

/// Where the memory controller's v1 hierarchy is mounted, if it is.
pub(crate) fn memory_v1_mount() -> Option<PathBuf> {
    mount_where(|fstype, options| fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
}

/// The first mount point in /proc/self/mountinfo whose file system type
/// and super options `want` accepts.
fn mount_where(want: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let options = r.nth(1).unwrap_or("");
        want(fstype, options).then(|| PathBuf::from(left.split(' ').nth(4).unwrap_or("")))
    })
}
