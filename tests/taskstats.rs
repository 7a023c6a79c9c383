//! The kernel's taskstats as the oracle for the extended accounting fields
//! of the exit records (`hiwater_rss_kb` ... `irq_delay_ns`).
//!
//! A listener of our own (generic netlink, family `TASKSTATS`, a cpumask of
//! every possible CPU registered) receives the kernel's per-task `struct
//! taskstats` for every thread that exits while it listens. The workload
//! (`tests/taskstats_workload.c`) runs one case per child: I/O with fsync,
//! cold reads, cancelled writes, odd-sized reads, 20 MiB of memory, sleeps,
//! spinning, a group whose threads exit before its leader and one whose
//! leader exits first; it prints every case's pid and every thread's tid.
//! Then, for the workload's pids only:
//! - a single-threaded process: each field of its `exit` line equals its
//!   per-task record;
//! - a thread group: the counters equal the sum over its threads' per-task
//!   records, `hiwater_rss_kb`/`hiwater_vm_kb` their largest;
//! - with `--threads`, each `thread_exit` line equals that tid's record.
//!
//! One allowance, named in the report each time it is used: `coremem` and
//! `virtmem` may be larger by one scheduler tick of the task's memory (the
//! tracer reads them a moment after `taskstats_exit()`; see `tick_slack`).
//! The counters that keep running on the way out (context switches, CPU
//! delay, memory integrals) may be larger with the tracepoint hook, which
//! fires after `exit_mm()` before 6.16 and right after `taskstats_exit()`
//! from 6.16 on, and smaller with fentry and kprobe, which read them as
//! `taskstats_exit()` starts; the high-water marks of a group whose other
//! threads still run move the same way (they allocate meanwhile). Each is
//! reported; the rest must be equal.
//!
//! Four tracer sessions: `tracer run` and `tracer record` (the test then
//! starts the workload), each with delay accounting off (the delays must
//! then be `null`) and with `kernel.task_delayacct=1` (put back afterwards,
//! on a panic too), where the delays are compared as well.
//!
//! A field the tracer gives as `null` is named and not counted as compared;
//! under `CI=true` that is a failure, but for what the README documents:
//! the delays with delay accounting off, and the high-water marks with the
//! tracepoint hook before 6.16 (`uname -r`, `TRACER_ATTACH`). `TASKSTATS_DEBUG=1` prints the workload's
//! per-task records. Needs root (skips with a reason otherwise, fails under
//! `CI=true`).
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// The taskstats netlink client (include/uapi/linux/taskstats.h,
// include/uapi/linux/genetlink.h), by hand on libc.
// ---------------------------------------------------------------------------

mod netlink {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread;
    use std::time::{Duration, Instant};

    const NLMSG_HDRLEN: usize = 16;
    const GENL_HDRLEN: usize = 4;
    const NLMSG_NOOP: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLA_TYPE_MASK: u16 = 0x3fff;

    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;

    const TASKSTATS_GENL_VERSION: u8 = 1;
    const TASKSTATS_CMD_GET: u8 = 1;
    const TASKSTATS_CMD_NEW: u8 = 2;
    const TASKSTATS_TYPE_PID: u16 = 1;
    const TASKSTATS_TYPE_STATS: u16 = 3;
    const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
    const TASKSTATS_CMD_ATTR_REGISTER_CPUMASK: u16 = 3;
    const TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK: u16 = 4;

    /// `ac_flag` bit: this task's exit ended its group (since version 12).
    pub(crate) const AGROUP: u8 = 0x20;

    /// What we ask of the kernel for the receive buffer (SO_RCVBUFFORCE).
    const RCVBUF: libc::c_int = 32 << 20;

    fn align4(n: usize) -> usize {
        (n + 3) & !3
    }

    fn le16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    /// One `struct taskstats` from a `TASKSTATS_TYPE_AGGR_PID` message: one
    /// task (thread) that exited.
    #[derive(Clone, Debug)]
    pub(crate) struct Task {
        /// `TASKSTATS_TYPE_PID`: the task's id (a tid) in the initial pid
        /// namespace.
        pub tid: u32,
        /// The struct's `version` field.
        pub version: u16,
        /// The struct as received; fields past its end are absent.
        pub raw: Vec<u8>,
    }

    impl Task {
        /// Where a field of the version-16 layout (the same as every version
        /// before 15) is in this record. Version 15 had min/max fields after
        /// each delay total, since moved to the end (v16, "taskstats: fix
        /// struct taskstats breaks backward compatibility since version
        /// 15").
        fn offset(&self, v16: usize) -> usize {
            if self.version != 15 {
                return v16;
            }
            // The end of each v16 total that v15 followed with max and min.
            let shifted_after = [32, 48, 64, 328, 344, 368, 416];
            v16 + 16 * shifted_after.iter().filter(|&&end| v16 >= end).count()
        }

        /// The u64 at `v16` (an offset in the v16 layout), if the record is
        /// long enough to have it.
        pub(crate) fn u64_at(&self, v16: usize) -> Option<u64> {
            let at = self.offset(v16);
            let b = self.raw.get(at..at + 8)?;
            Some(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        }

        fn u32_at(&self, v16: usize) -> Option<u32> {
            let at = self.offset(v16);
            let b = self.raw.get(at..at + 4)?;
            Some(u32::from_le_bytes(b.try_into().expect("4 bytes")))
        }

        pub(crate) fn flag(&self) -> u8 {
            self.raw.get(8).copied().unwrap_or(0)
        }

        pub(crate) fn exitcode(&self) -> u32 {
            self.u32_at(4).unwrap_or(0)
        }

        pub(crate) fn comm(&self) -> String {
            let at = self.offset(80);
            let c = self.raw.get(at..at + 32).unwrap_or(&[]);
            let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
            String::from_utf8_lossy(&c[..end]).into_owned()
        }

        /// `ac_pid`: the task's own id again.
        pub(crate) fn ac_pid(&self) -> Option<u32> {
            self.u32_at(128)
        }

        /// `ac_tgid` (version 12 and later).
        pub(crate) fn tgid(&self) -> Option<u32> {
            if self.version < 12 {
                return None;
            }
            self.u32_at(368)
        }
    }

    #[derive(Default)]
    struct State {
        tasks: Vec<Task>,
        /// Errors the reader met (ENOBUFS: records lost).
        errors: Vec<String>,
        /// Acknowledgements by sequence number: 0 or a negative errno.
        acks: HashMap<u32, i32>,
    }

    struct Shared {
        stop: AtomicBool,
        state: Mutex<State>,
        cond: Condvar,
    }

    /// A registered taskstats listener, with a thread reading its socket.
    /// Deregisters and stops on drop.
    pub(crate) struct Listener {
        fd: Arc<OwnedFd>,
        family: u16,
        mask: String,
        shared: Arc<Shared>,
        reader: Option<thread::JoinHandle<()>>,
    }

    /// Why there is no listener: the kernel cannot give one (a reason to
    /// skip outside CI), or something went wrong (a failure).
    #[derive(Debug)]
    pub(crate) enum StartError {
        Unavailable(String),
        Failed(String),
    }

    fn os_err(what: &str) -> String {
        format!("{what}: {}", std::io::Error::last_os_error())
    }

    /// A generic netlink request: nlmsghdr, genlmsghdr, attributes.
    fn genl_request(
        family: u16,
        flags: u16,
        seq: u32,
        cmd: u8,
        version: u8,
        attrs: &[(u16, &[u8])],
    ) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(&[cmd, version, 0, 0]);
        for (ty, payload) in attrs {
            let len = u16::try_from(4 + payload.len()).expect("small attribute");
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(&ty.to_le_bytes());
            m.extend_from_slice(payload);
            m.resize(align4(m.len()), 0);
        }
        let len = u32::try_from(m.len()).expect("small message");
        m[0..4].copy_from_slice(&len.to_le_bytes());
        m[4..6].copy_from_slice(&family.to_le_bytes());
        m[6..8].copy_from_slice(&flags.to_le_bytes());
        m[8..12].copy_from_slice(&seq.to_le_bytes());
        m
    }

    fn kernel_addr() -> libc::sockaddr_nl {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        a
    }

    fn send_to_kernel(fd: &OwnedFd, msg: &[u8]) -> Result<(), String> {
        let addr = kernel_addr();
        // SAFETY: msg and addr are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_err("sendto(netlink)"));
        }
        Ok(())
    }

    /// The attributes in `b`: (type without the flag bits, payload).
    fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + 4 <= b.len() {
            let len = usize::from(le16(b, off));
            let ty = le16(b, off + 2) & NLA_TYPE_MASK;
            if len < 4 || off + len > b.len() {
                break;
            }
            out.push((ty, &b[off + 4..off + len]));
            off += align4(len);
        }
        out
    }

    /// The netlink messages in a datagram: (type, flags, seq, payload).
    fn messages(b: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + NLMSG_HDRLEN <= b.len() {
            let len = le32(b, off) as usize;
            if len < NLMSG_HDRLEN || off + len > b.len() {
                break;
            }
            out.push((
                le16(b, off + 4),
                le16(b, off + 6),
                le32(b, off + 8),
                &b[off + NLMSG_HDRLEN..off + len],
            ));
            off += align4(len);
        }
        out
    }

    fn set_int_opt(fd: &OwnedFd, opt: libc::c_int, v: libc::c_int) -> bool {
        // SAFETY: v is a valid c_int for the length given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&v).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }

    /// The CPUs the kernel may run anything on, as a cpulist ("0-1").
    fn possible_cpus() -> String {
        if let Ok(s) = std::fs::read_to_string("/sys/devices/system/cpu/possible") {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1);
        format!("0-{}", n - 1)
    }

    /// Receives one datagram into `buf`: its length, or the errno.
    fn recv(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(n as usize)
    }

    impl Listener {
        /// Opens the socket, resolves the family, starts the reader and
        /// registers every possible CPU; records arrive from then on.
        pub(crate) fn start() -> Result<Listener, StartError> {
            use StartError::{Failed, Unavailable};
            // SAFETY: plain socket(2).
            let raw = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_GENERIC,
                )
            };
            if raw < 0 {
                return Err(Unavailable(os_err("socket(AF_NETLINK, NETLINK_GENERIC)")));
            }
            // SAFETY: raw is a descriptor we just opened and own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // A large buffer: the reader drains it continuously, but a burst
            // of exits elsewhere on the host must not overrun it.
            if !set_int_opt(&fd, libc::SO_RCVBUFFORCE, RCVBUF)
                && !set_int_opt(&fd, libc::SO_RCVBUF, RCVBUF)
            {
                return Err(Failed(os_err("SO_RCVBUF")));
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: tv is a valid timeval for the length given.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::from_ref(&tv).cast(),
                    size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(Failed(os_err("SO_RCVTIMEO")));
            }
            // nl_pid 0: the kernel picks our port id.
            let addr = kernel_addr();
            // SAFETY: addr is valid for the length given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(Failed(os_err("bind(netlink)")));
            }

            let family = resolve_family(&fd)?;
            let fd = Arc::new(fd);
            let shared = Arc::new(Shared {
                stop: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
            });
            let reader = {
                let fd = Arc::clone(&fd);
                let shared = Arc::clone(&shared);
                thread::spawn(move || read_loop(&fd, family, &shared))
            };
            let mut listener = Listener {
                fd,
                family,
                mask: possible_cpus(),
                shared,
                reader: Some(reader),
            };
            let mut mask = listener.mask.clone().into_bytes();
            mask.push(0);
            let seq = 2;
            let msg = genl_request(
                family,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                TASKSTATS_CMD_GET,
                TASKSTATS_GENL_VERSION,
                &[(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, &mask)],
            );
            send_to_kernel(&listener.fd, &msg).map_err(Failed)?;
            match listener.wait_ack(seq, Duration::from_secs(10)) {
                Some(0) => Ok(listener),
                Some(e) => {
                    let why = format!(
                        "registering cpumask {:?} with TASKSTATS: {}",
                        listener.mask,
                        std::io::Error::from_raw_os_error(-e)
                    );
                    listener.mask.clear(); // nothing to deregister
                    Err(if -e == libc::EPERM || -e == libc::EINVAL {
                        // EINVAL: not in the initial user and pid namespaces.
                        Unavailable(why)
                    } else {
                        Failed(why)
                    })
                }
                None => {
                    listener.mask.clear();
                    Err(Failed(
                        "no answer from the kernel to the cpumask registration".into(),
                    ))
                }
            }
        }

        fn wait_ack(&self, seq: u32, timeout: Duration) -> Option<i32> {
            let deadline = Instant::now() + timeout;
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(&e) = st.acks.get(&seq) {
                    return Some(e);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                st = self
                    .shared
                    .cond
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }

        /// Errors the reader met so far (an ENOBUFS: the kernel dropped
        /// records).
        pub(crate) fn errors(&self) -> Vec<String> {
            self.shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .errors
                .clone()
        }

        /// Waits (at most `timeout`, and no longer once the reader met an
        /// error) until every tid in `want` has a record that `accept`
        /// takes. Returns all the records `accept` takes, by tid (a tid
        /// seen twice keeps the later record and is counted in the second
        /// map), and the tids still missing.
        pub(crate) fn wait_for(
            &self,
            want: &BTreeSet<u32>,
            accept: impl Fn(&Task) -> bool,
            timeout: Duration,
        ) -> (BTreeMap<u32, Task>, BTreeMap<u32, usize>, BTreeSet<u32>) {
            let deadline = Instant::now() + timeout;
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let mut got = BTreeMap::new();
                let mut dups = BTreeMap::new();
                for t in st.tasks.iter().filter(|t| accept(t)) {
                    if got.insert(t.tid, t.clone()).is_some() {
                        *dups.entry(t.tid).or_insert(1) += 1;
                    }
                }
                let missing: BTreeSet<u32> = want
                    .iter()
                    .filter(|t| !got.contains_key(t))
                    .copied()
                    .collect();
                let left = deadline.saturating_duration_since(Instant::now());
                // Lost records (ENOBUFS) will not come: no use waiting.
                if missing.is_empty() || left.is_zero() || !st.errors.is_empty() {
                    return (got, dups, missing);
                }
                st = self
                    .shared
                    .cond
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }

        /// Every record received so far.
        pub(crate) fn all(&self) -> Vec<Task> {
            self.shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .tasks
                .clone()
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            if !self.mask.is_empty() {
                let mut mask = self.mask.clone().into_bytes();
                mask.push(0);
                let msg = genl_request(
                    self.family,
                    NLM_F_REQUEST,
                    3,
                    TASKSTATS_CMD_GET,
                    TASKSTATS_GENL_VERSION,
                    &[(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, &mask)],
                );
                let _ = send_to_kernel(&self.fd, &msg);
            }
            self.shared.stop.store(true, Ordering::SeqCst);
            if let Some(h) = self.reader.take() {
                let _ = h.join();
            }
        }
    }

    /// CTRL_CMD_GETFAMILY "TASKSTATS": the family's id.
    fn resolve_family(fd: &OwnedFd) -> Result<u16, StartError> {
        use StartError::{Failed, Unavailable};
        let seq = 1;
        let msg = genl_request(
            GENL_ID_CTRL,
            NLM_F_REQUEST,
            seq,
            CTRL_CMD_GETFAMILY,
            1,
            &[(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")],
        );
        send_to_kernel(fd, &msg).map_err(Failed)?;
        let mut buf = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let n = match recv(fd, &mut buf) {
                Ok(n) => n,
                Err(e) if e == libc::EAGAIN || e == libc::EINTR => continue,
                Err(e) => {
                    return Err(Failed(format!(
                        "recv(netlink): {}",
                        std::io::Error::from_raw_os_error(e)
                    )))
                }
            };
            for (ty, _, mseq, payload) in messages(&buf[..n]) {
                if mseq != seq {
                    continue;
                }
                if ty == NLMSG_ERROR && payload.len() >= 4 {
                    let e = -(le32(payload, 0) as i32);
                    return Err(if e == libc::ENOENT {
                        Unavailable("the kernel has no TASKSTATS netlink family".into())
                    } else {
                        Failed(format!(
                            "CTRL_CMD_GETFAMILY TASKSTATS: {}",
                            std::io::Error::from_raw_os_error(e)
                        ))
                    });
                }
                if ty == GENL_ID_CTRL && payload.len() >= GENL_HDRLEN {
                    if let Some((_, id)) = attrs(&payload[GENL_HDRLEN..])
                        .into_iter()
                        .find(|(t, p)| *t == CTRL_ATTR_FAMILY_ID && p.len() >= 2)
                    {
                        return Ok(le16(id, 0));
                    }
                }
            }
        }
        Err(Failed("no answer to CTRL_CMD_GETFAMILY TASKSTATS".into()))
    }

    fn read_loop(fd: &OwnedFd, family: u16, shared: &Shared) {
        let mut buf = vec![0u8; 256 << 10];
        while !shared.stop.load(Ordering::SeqCst) {
            let n = match recv(fd, &mut buf) {
                Ok(n) => n,
                Err(e) if e == libc::EAGAIN || e == libc::EINTR => continue,
                Err(e) => {
                    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.errors.push(if e == libc::ENOBUFS {
                        "ENOBUFS: the taskstats socket's receive buffer overflowed and the \
                         kernel dropped exit records; the comparison cannot be trusted"
                            .to_string()
                    } else {
                        format!("recv(netlink): {}", std::io::Error::from_raw_os_error(e))
                    });
                    shared.cond.notify_all();
                    if e == libc::ENOBUFS {
                        continue; // the socket goes on; the test fails anyway
                    }
                    return;
                }
            };
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            for (ty, _flags, seq, payload) in messages(&buf[..n]) {
                match ty {
                    NLMSG_ERROR if payload.len() >= 4 => {
                        st.acks.insert(seq, le32(payload, 0) as i32);
                    }
                    NLMSG_NOOP | NLMSG_DONE => {}
                    t if t == family && payload.len() >= GENL_HDRLEN => {
                        if payload[0] != TASKSTATS_CMD_NEW {
                            continue;
                        }
                        // AGGR_PID: one task. AGGR_TGID (a group's total,
                        // sent with its last thread's record) is not used.
                        for (aty, nested) in attrs(&payload[GENL_HDRLEN..]) {
                            if aty != TASKSTATS_TYPE_AGGR_PID {
                                continue;
                            }
                            let mut tid = None;
                            let mut stats = None;
                            for (nty, p) in attrs(nested) {
                                match nty {
                                    TASKSTATS_TYPE_PID if p.len() >= 4 => tid = Some(le32(p, 0)),
                                    TASKSTATS_TYPE_STATS if p.len() >= 2 => stats = Some(p),
                                    _ => {}
                                }
                            }
                            if let (Some(tid), Some(stats)) = (tid, stats) {
                                st.tasks.push(Task {
                                    tid,
                                    version: le16(stats, 0),
                                    raw: stats.to_vec(),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
            shared.cond.notify_all();
        }
    }
}

use netlink::{Listener, StartError, Task, AGROUP};

// ---------------------------------------------------------------------------
// The fields compared, where taskstats has them.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Agg {
    /// A group's value is the sum over its threads.
    Sum,
    /// A group's value is the largest of its threads'.
    Max,
}

struct Field {
    /// The JSON name on `exit` and `thread_exit` lines.
    json: &'static str,
    /// The `struct taskstats` member.
    kernel: &'static str,
    /// Its offset in the version-16 layout.
    off: usize,
    agg: Agg,
    /// A delay: `null` while delay accounting is off.
    delay: bool,
}

const fn f(json: &'static str, kernel: &'static str, off: usize, agg: Agg, delay: bool) -> Field {
    Field {
        json,
        kernel,
        off,
        agg,
        delay,
    }
}

/// Offsets checked against `offsetof()` on the uapi header (v13) and the
/// v14 (irq) and v16 additions at its end.
const FIELDS: &[Field] = &[
    f("hiwater_rss_kb", "hiwater_rss", 200, Agg::Max, false),
    f("hiwater_vm_kb", "hiwater_vm", 208, Agg::Max, false),
    f("coremem", "coremem", 184, Agg::Sum, false),
    f("virtmem", "virtmem", 192, Agg::Sum, false),
    f("read_char", "read_char", 216, Agg::Sum, false),
    f("write_char", "write_char", 224, Agg::Sum, false),
    f("read_syscalls", "read_syscalls", 232, Agg::Sum, false),
    f("write_syscalls", "write_syscalls", 240, Agg::Sum, false),
    f("read_bytes", "read_bytes", 248, Agg::Sum, false),
    f("write_bytes", "write_bytes", 256, Agg::Sum, false),
    f(
        "cancelled_write_bytes",
        "cancelled_write_bytes",
        264,
        Agg::Sum,
        false,
    ),
    f("nvcsw", "nvcsw", 272, Agg::Sum, false),
    f("nivcsw", "nivcsw", 280, Agg::Sum, false),
    f("cpu_delay_ns", "cpu_delay_total", 24, Agg::Sum, true),
    f("blkio_delay_ns", "blkio_delay_total", 40, Agg::Sum, true),
    f("swapin_delay_ns", "swapin_delay_total", 56, Agg::Sum, true),
    f(
        "freepages_delay_ns",
        "freepages_delay_total",
        320,
        Agg::Sum,
        true,
    ),
    f(
        "thrashing_delay_ns",
        "thrashing_delay_total",
        336,
        Agg::Sum,
        true,
    ),
    f(
        "memory_compact_delay_ns",
        "compact_delay_total",
        360,
        Agg::Sum,
        true,
    ),
    f("irq_delay_ns", "irq_delay_total", 424, Agg::Sum, true),
];

// ---------------------------------------------------------------------------
// The workload.
// ---------------------------------------------------------------------------

/// What the workload said it made.
#[derive(Debug, Default)]
struct Workload {
    /// Case pid → name (the workload itself is `workload`).
    cases: BTreeMap<u32, String>,
    /// Case pid → its threads' tids (main thread included), for the
    /// multi-threaded cases; a case without an entry is single-threaded.
    threads: BTreeMap<u32, BTreeSet<u32>>,
}

impl Workload {
    fn parse(stdout: &str) -> Workload {
        let mut w = Workload::default();
        let mut by_name = BTreeMap::new();
        let mut pending = Vec::new();
        for line in stdout.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [kind, name, id] = parts[..] else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else { continue };
            match kind {
                "case" => {
                    w.cases.insert(id, name.to_string());
                    by_name.insert(name.to_string(), id);
                }
                "thread" => pending.push((name.to_string(), id)),
                _ => {}
            }
        }
        for (name, tid) in pending {
            let pid = *by_name
                .get(&name)
                .unwrap_or_else(|| panic!("thread {tid} of unknown case {name}:\n{stdout}"));
            w.threads.entry(pid).or_default().insert(tid);
        }
        assert!(
            w.cases.values().any(|n| n == "workload") && w.cases.len() >= 10,
            "the workload did not announce its cases:\n{stdout}"
        );
        for (pid, tids) in &w.threads {
            assert!(
                tids.contains(pid),
                "case {pid}: its main thread was not announced"
            );
        }
        w
    }

    /// The tids of a case's group.
    fn group(&self, pid: u32) -> BTreeSet<u32> {
        self.threads
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| BTreeSet::from([pid]))
    }

    /// Every task the workload made, itself included.
    fn all_tids(&self) -> BTreeSet<u32> {
        self.cases.keys().flat_map(|&p| self.group(p)).collect()
    }

    fn case_of_tid(&self, tid: u32) -> Option<(u32, &str)> {
        self.cases
            .iter()
            .find(|(&p, _)| self.group(p).contains(&tid))
            .map(|(&p, n)| (p, n.as_str()))
    }
}

/// The comms the workload gives its tasks (`taskstats_workload`, cut to 15
/// bytes, and its cases' `ts-...`).
fn is_workload_comm(c: &str) -> bool {
    c.starts_with("ts-") || c == "taskstats_workl"
}

/// A record of one of the workload's tasks.
fn workload_comm(t: &Task) -> bool {
    is_workload_comm(&t.comm())
}

/// The workload's per-task records, once every task's has come (10 s at
/// most after the workload ended). Panics on a missing, duplicated or
/// inconsistent record, or a reader error (ENOBUFS).
fn collect_records(listener: &Listener, w: &Workload, what: &str) -> BTreeMap<u32, Task> {
    let want = w.all_tids();
    let (got, dups, missing) = listener.wait_for(&want, workload_comm, Duration::from_secs(10));
    let errors = listener.errors();
    assert!(errors.is_empty(), "{what}: taskstats listener: {errors:?}");
    let mut problems = Vec::new();
    for tid in &missing {
        let (pid, case) = w.case_of_tid(*tid).unwrap_or((0, "?"));
        problems.push(format!(
            "no taskstats record for tid {tid} (case {case}, pid {pid})"
        ));
    }
    for (tid, n) in dups.iter().filter(|(t, _)| want.contains(t)) {
        problems.push(format!("{n} taskstats records for tid {tid}"));
    }
    let records: BTreeMap<u32, Task> = got
        .into_iter()
        .filter(|(tid, _)| want.contains(tid))
        .collect();
    for (tid, t) in &records {
        if t.ac_pid() != Some(*tid) {
            problems.push(format!(
                "tid {tid}: ac_pid is {:?} (a parse error?)",
                t.ac_pid()
            ));
        }
        let (pid, _) = w.case_of_tid(*tid).expect("an announced tid");
        if let Some(tgid) = t.tgid() {
            if tgid != pid {
                problems.push(format!("tid {tid}: ac_tgid {tgid}, announced in {pid}"));
            }
        }
    }
    // Every thread of the workload's groups was announced (else the sums
    // would miss it).
    for t in listener.all() {
        if let Some(tgid) = t.tgid() {
            if w.cases.contains_key(&tgid) && !want.contains(&t.tid) && workload_comm(&t) {
                problems.push(format!(
                    "tid {} of group {tgid} ({}) was not announced",
                    t.tid,
                    t.comm()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: taskstats records:\n{}",
        problems.join("\n")
    );
    records
}

/// What the records must show whatever the tracer does: the parser reads
/// the right offsets (exact syscall counts, the memory the case touched)
/// and every group has its last thread marked.
fn check_oracle(w: &Workload, records: &BTreeMap<u32, Task>, what: &str) {
    let mut problems = Vec::new();
    let by_name: BTreeMap<&str, u32> = w.cases.iter().map(|(&p, n)| (n.as_str(), p)).collect();
    let val = |case: &str, off: usize| records[&by_name[case]].u64_at(off);
    // 1024 write(2)s, masked to whole KiB by the kernel: 1024.
    if val("write_fsync", 240) != Some(1024) {
        problems.push(format!(
            "write_fsync: write_syscalls {:?}, expected 1024",
            val("write_fsync", 240)
        ));
    }
    // 2097 full reads, one short, one at EOF (counted too): 2099, masked
    // to 2048.
    if val("read_cold", 232) != Some(2048) {
        problems.push(format!(
            "read_cold: read_syscalls {:?}, expected 2048",
            val("read_cold", 232)
        ));
    }
    for off in [200, 208] {
        if val("memory", off).is_none_or(|kb| kb < 20 * 1024) {
            problems.push(format!(
                "memory: high-water mark at offset {off} is {:?}, expected at least 20 MiB",
                val("memory", off)
            ));
        }
    }
    for (&pid, name) in &w.cases {
        let group = w.group(pid);
        let last: Vec<u32> = group
            .iter()
            .filter(|t| records.get(t).is_some_and(|r| r.flag() & AGROUP != 0))
            .copied()
            .collect();
        let version = records.get(&pid).map_or(0, |r| r.version);
        if version >= 12 && last.len() != 1 {
            problems.push(format!(
                "case {name} (pid {pid}): {} records with AGROUP ({last:?}), expected 1",
                last.len()
            ));
        }
        if name == "leader_first" && last.contains(&pid) {
            problems.push(format!(
                "leader_first (pid {pid}): the leader ended the group"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: the taskstats records are not what the workload did:\n{}",
        problems.join("\n")
    );
}

/// With TASKSTATS_DEBUG=1: the workload's per-task records.
fn debug_print(w: &Workload, records: &BTreeMap<u32, Task>, what: &str) {
    if std::env::var_os("TASKSTATS_DEBUG").is_none() {
        return;
    }
    let mut s = format!("=== {what}: the workload's per-task taskstats records ===\n");
    for (tid, t) in records {
        let (pid, case) = w.case_of_tid(*tid).unwrap_or((0, "?"));
        let _ = write!(
            s,
            "tid {tid} pid {pid} case {case} comm {:?} v{} {} bytes flag {:#04x} exitcode {:#x}",
            t.comm(),
            t.version,
            t.raw.len(),
            t.flag(),
            t.exitcode()
        );
        for fld in FIELDS {
            match t.u64_at(fld.off) {
                Some(v) => {
                    let _ = write!(s, " {}={v}", fld.kernel);
                }
                None => {
                    let _ = write!(s, " {}=absent", fld.kernel);
                }
            }
        }
        s.push('\n');
    }
    eprint!("{s}");
}

fn compile_workload(dir: &TempDir) -> PathBuf {
    compile_c(dir, "taskstats_workload")
}

/// A directory on a disk-backed file system for the I/O cases (tmpfs has
/// no read_bytes/write_bytes to count).
fn io_dir(dir: &TempDir) -> PathBuf {
    let d = dir.join("io");
    std::fs::create_dir_all(&d).expect("mkdir io");
    d
}

// ---------------------------------------------------------------------------
// Environment.
// ---------------------------------------------------------------------------

/// One workload at a time in this binary: the tests share the delay
/// accounting switch and the CPUs whose contention the delays measure.
static SERIAL: Mutex<()> = Mutex::new(());

const NEEDS_ROOT_CC: Needs = Needs {
    bpf: false,
    accton: false,
    cc: true,
};

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `uname -r`.
fn kernel_release() -> String {
    let out = Command::new("uname")
        .arg("-r")
        .output()
        .expect("running uname -r");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the high-water marks may be `null` here: with the tracepoint
/// exit hook before 6.16, which fires after `exit_mm()` (README,
/// "Extended accounting"). Every other field, and these with the fentry
/// and kprobe hooks or from 6.16 on, must be there: under CI a `null`
/// fails.
fn hiwater_may_be_null() -> bool {
    let mode = std::env::var("TRACER_ATTACH").unwrap_or_else(|_| "auto".into());
    let release = kernel_release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    matches!(mode.as_str(), "tracepoint" | "auto") && (major, minor) < (6, 16)
}

/// The tracepoint exit hook (`TRACER_ATTACH` tracepoint, or auto, which
/// is that on our hosts) on 6.16 or later, where `sched_process_exit`
/// fires right after `taskstats_exit()`.
fn tracepoint_from_6_16() -> bool {
    let mode = std::env::var("TRACER_ATTACH").unwrap_or_else(|_| "auto".into());
    matches!(mode.as_str(), "tracepoint" | "auto") && !hiwater_may_be_null()
}

fn nulls_fail() -> bool {
    ci()
}

fn skip(test: &str, why: &str) {
    assert!(!ci(), "{test}: {why} (CI=true: must not skip)");
    eprintln!("skipped: {test}: {why}");
}

fn start_listener(test: &str) -> Option<Listener> {
    match Listener::start() {
        Ok(l) => Some(l),
        Err(StartError::Unavailable(why)) => {
            skip(test, &format!("no taskstats: {why}"));
            None
        }
        Err(StartError::Failed(why)) => panic!("{test}: taskstats listener: {why}"),
    }
}

const DELAYACCT: &str = "/proc/sys/kernel/task_delayacct";

/// `kernel.task_delayacct` set while this lives; the old value is written
/// back on drop (a panicking test too).
struct DelayAcct {
    old: String,
}

impl DelayAcct {
    /// None when the kernel has no delay accounting switch.
    fn set(on: bool) -> Option<DelayAcct> {
        let old = std::fs::read_to_string(DELAYACCT).ok()?.trim().to_string();
        let guard = DelayAcct { old };
        std::fs::write(DELAYACCT, if on { "1" } else { "0" })
            .unwrap_or_else(|e| panic!("writing {DELAYACCT}: {e}"));
        Some(guard)
    }
}

impl Drop for DelayAcct {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(DELAYACCT, &self.old) {
            eprintln!("putting {DELAYACCT} back to {}: {e}", self.old);
        }
    }
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// The oracle on its own (no tracer, no BPF): every task of the workload,
/// every thread included, has its per-task record, and the records say what
/// the workload did.
#[test]
fn taskstats_records_every_workload_task() {
    const NAME: &str = "taskstats_records_every_workload_task";
    if !require_privileges(NAME, NEEDS_ROOT_CC) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let dir = TempDir::new("taskstats-oracle");
    let workload = compile_workload(&dir);
    let Some(listener) = start_listener(NAME) else {
        return;
    };
    let out = run_with_timeout(
        Command::new(&workload).arg(io_dir(&dir)),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    let w = Workload::parse(&String::from_utf8_lossy(&out.stdout));
    let records = collect_records(&listener, &w, NAME);
    drop(listener);
    debug_print(&w, &records, NAME);
    check_oracle(&w, &records, NAME);
    eprintln!(
        "{NAME}: {} per-task records for {} cases ({:?})",
        records.len(),
        w.cases.len(),
        t0.elapsed()
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `tracer run --threads --json FILE -- workload`.
    Run,
    /// `tracer record --threads --json FILE`, the test starting the
    /// workload.
    Record,
}

/// What one tracer session compared and found.
#[derive(Default)]
struct Outcome {
    /// Fields equal to taskstats.
    equal: usize,
    /// Fields null as documented (delays with delay accounting off,
    /// high-water marks where [`hiwater_may_be_null`]).
    null_as_documented: usize,
    /// Fields absent from both (the kernel's taskstats lacks them).
    absent_in_both: usize,
    /// (what, field) the tracer gave as null where taskstats has a value.
    nulls: Vec<String>,
    /// The high-water marks may be `null`, and the running counters larger
    /// (see [`hiwater_may_be_null`], [`RUNNING_COUNTERS`]).
    hiwater_may_be_null: bool,
    /// The tracepoint hook from 6.16 on fires just after
    /// `taskstats_exit()`: the running counters may be larger, and so may
    /// a high-water mark of a group whose other threads still run.
    read_after_taskstats_exit: bool,
    /// Running counters larger than taskstats', read after `exit_mm()` or
    /// after `taskstats_exit()`.
    read_later: Vec<String>,
    /// The fentry and kprobe hooks read the figures as `taskstats_exit()`
    /// starts; taskstats reads them once it has made room for its record,
    /// so the running counters may be smaller, and so may a high-water
    /// mark of a group whose other threads still run.
    read_at_taskstats_exit: bool,
    /// Running counters smaller than taskstats', read at its start.
    read_earlier: Vec<String>,
    /// `coremem`/`virtmem` read one scheduler tick after taskstats read
    /// them (see [`tick_slack`]).
    tick_later: Vec<String>,
    /// Group exit lines that left out threads late to the group's record
    /// (see [`without_late_threads`]).
    late: Vec<String>,
    /// The tracepoint hook before 6.16 guesses group death from
    /// `signal->live` (README, "A thread can be late to its group's
    /// sums"): when the thread that takes it to 0 is preempted before its
    /// exit accounting, the thread that left just before it finds the group
    /// dead first and writes the exit line, without the late thread's
    /// figures, which its own `thread_exit` line carries. Allowed here
    /// whenever the figures say exactly that, as the hook's known guess
    /// (the two threads of `leader_first` end together: CI saw it twice on
    /// 6.1, in that case).
    group_death_guessed: bool,
    /// Exit lines written by the thread before the kernel's last.
    guessed: Vec<String>,
    /// Threads the kernel's recursion guard kept from both copies of a
    /// per-thread program (neither in their group's sums nor with a
    /// `thread_exit` line, or without the line alone where another
    /// program takes the figures): allowed up to the session's
    /// `event_runs_skipped`, the tracer's own count of such skips.
    skipped: Vec<String>,
    /// Rows of the failure table.
    failures: Vec<String>,
    notes: Vec<String>,
}

/// Compares one JSON line with the expected values (`tasks`: the per-task
/// records it stands for, one or the group's).
#[expect(
    clippy::too_many_arguments,
    reason = "a row of context for the messages"
)]
fn compare_line(
    o: &mut Outcome,
    scenario: &str,
    case: &str,
    kind: &str,
    pid: u32,
    tid: u32,
    (line, raw): (&Value, &str),
    tasks: &[&Task],
    delayacct: bool,
) {
    let how = if tasks.len() == 1 {
        "its record".to_string()
    } else {
        format!("over {} threads", tasks.len())
    };
    for fld in FIELDS {
        let expected: Option<u64> = tasks
            .iter()
            .map(|t| t.u64_at(fld.off))
            .collect::<Option<Vec<u64>>>()
            .map(|v| match fld.agg {
                Agg::Sum => v.iter().fold(0u64, |a, b| a.wrapping_add(*b)),
                Agg::Max => v.iter().copied().max().unwrap_or(0),
            });
        let agg = match (fld.agg, tasks.len()) {
            (_, 1) => "",
            (Agg::Sum, _) => "sum ",
            (Agg::Max, _) => "max ",
        };
        let exp_s = match expected {
            Some(v) => format!("{agg}{v}"),
            None => "absent".into(),
        };
        let mut fail = |got: String, why: &str| {
            o.failures.push(format!(
                "{scenario:<14} {case:<13} {pid:>7} {tid:>7} {kind:<11} {:<24} {exp_s:>22} {got:>22}  {why}",
                fld.json
            ));
        };
        let Some(got) = line.get(fld.json) else {
            fail("(no such key)".into(), &format!("{how}; the line: {line}"));
            continue;
        };
        // A key written twice would be read as its last value only.
        let times = raw.matches(&format!("\"{}\":", fld.json)).count();
        if times != 1 {
            fail(
                format!("{got}"),
                &format!("the key is {times} times in the line: {raw}"),
            );
            continue;
        }
        if got.is_null() {
            if fld.delay && !delayacct {
                o.null_as_documented += 1;
            } else if expected.is_none() {
                o.absent_in_both += 1;
            } else if fld.json.starts_with("hiwater_") && o.hiwater_may_be_null {
                o.null_as_documented += 1;
            } else {
                o.nulls.push(format!(
                    "{scenario} case {case} pid {pid} tid {tid} {kind}: {} is null (taskstats {}: {exp_s})",
                    fld.json, fld.kernel
                ));
            }
            continue;
        }
        let Some(got) = got.as_u64() else {
            fail(format!("{got}"), "not an unsigned integer");
            continue;
        };
        if fld.delay && !delayacct {
            fail(got.to_string(), "delay accounting was off: expected null");
            continue;
        }
        match expected {
            None => fail(
                got.to_string(),
                &format!(
                    "taskstats v{} ({} bytes) has no {}",
                    tasks[0].version,
                    tasks[0].raw.len(),
                    fld.kernel
                ),
            ),
            Some(e) if e != got => {
                let slack = tick_slack(fld.json, tasks);
                let shared_mm =
                    fld.json.starts_with("hiwater_") && (kind == "thread_exit" || tasks.len() > 1);
                let running = RUNNING_COUNTERS.contains(&fld.json);
                let later = (running && o.hiwater_may_be_null)
                    || ((running || shared_mm) && o.read_after_taskstats_exit);
                if later && got > e {
                    o.read_later.push(format!(
                        "{scenario} case {case} pid {pid} tid {tid} {kind}: {} {e} -> {got}",
                        fld.json
                    ));
                } else if (running || shared_mm) && o.read_at_taskstats_exit && got < e {
                    o.read_earlier.push(format!(
                        "{scenario} case {case} pid {pid} tid {tid} {kind}: {} {e} -> {got}",
                        fld.json
                    ));
                } else if got > e && got - e <= slack {
                    o.tick_later.push(format!(
                        "{scenario} case {case} pid {pid} tid {tid} {kind}: {} {e} -> {got} \
                         (+{}, at most {slack})",
                        fld.json,
                        got - e
                    ));
                } else {
                    fail(got.to_string(), &how)
                }
            }
            Some(_) => o.equal += 1,
        }
    }
}

/// What keeps counting while a task is on its way out, even inside
/// `taskstats_exit()` while it makes a listener's record (preempted, its
/// context switches, CPU delay and memory integrals go on): with the
/// tracepoint exit hook, which fires after `exit_mm()` and
/// `acct_process()` before 6.16 and right after `taskstats_exit()` from
/// 6.16 on, these may be larger than taskstats'; with fentry and kprobe,
/// which read them as `taskstats_exit()` starts, smaller (README,
/// "Extended accounting"). Every other field must still be equal.
const RUNNING_COUNTERS: [&str; 5] = ["nvcsw", "nivcsw", "cpu_delay_ns", "coremem", "virtmem"];

/// The longest scheduler tick (HZ=100), ns.
const MAX_TICK_NS: u64 = 10_000_000;

/// How much larger than taskstats' `coremem`/`virtmem` the tracer's may be:
/// the kernel adds to these integrals at each tick while the task still
/// has its address space (`__acct_update_integrals()`), and the
/// tracepoint the tracer reads them at comes a moment after
/// `taskstats_exit()` (longer while a listener is registered: the kernel
/// builds and sends the record in between). A tick in between adds one
/// tick of CPU time times the task's memory: `tick_ns * KiB / 1_024_000`
/// in MB-usec, at most once per task; bounded here by the peak memory
/// and the longest tick. 0 for every other field: those must be equal.
fn tick_slack(field: &str, tasks: &[&Task]) -> u64 {
    let peak_kb_at = match field {
        "coremem" => 200,
        "virtmem" => 208,
        _ => return 0,
    };
    tasks
        .iter()
        .map(|t| (MAX_TICK_NS * t.u64_at(peak_kb_at).unwrap_or(0)).div_ceil(1_024_000))
        .sum()
}

fn compare_session(
    o: &mut Outcome,
    scenario: &str,
    w: &Workload,
    records: &BTreeMap<u32, Task>,
    json: &str,
    delayacct: bool,
) {
    let raw_lines: Vec<&str> = json.lines().collect();
    let lines: Vec<Value> = raw_lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let raw_of = |v: &Value| -> &str {
        let i = lines
            .iter()
            .position(|x| std::ptr::eq(x, v))
            .expect("a line of ours");
        raw_lines[i]
    };
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    // Skips the tracer counted, which may explain missing threads.
    let mut skips_left = 0;
    if let Some(summary) = lines.iter().find(|v| v["event"] == "summary") {
        let count = |k: &str| summary[k].as_u64().unwrap_or(0);
        // With the tracepoint hook the exit pair takes the other threads'
        // figures: `record` counts its skips as exit runs.
        skips_left = count("event_runs_skipped")
            + if o.read_at_taskstats_exit {
                0
            } else {
                count("exit_runs_skipped")
            };
        if summary["lost"].as_u64() != Some(0) {
            o.failures
                .push(format!("{scenario}: the tracer lost records: {summary}"));
        }
        // Not a failure by itself (the second copies take what the first
        // skipped), but what to look at first when a line is missing.
        for k in ["exit_runs_skipped", "event_runs_skipped"] {
            if summary[k].as_u64().is_some_and(|n| n > 0) {
                o.notes.push(format!("{scenario}: {k} {}", summary[k]));
            }
        }
    } else {
        o.failures
            .push(format!("{scenario}: no summary line in the JSON"));
    }
    let mut thread_lines: BTreeMap<u32, Vec<&Value>> = BTreeMap::new();
    for v in lines.iter().filter(|v| v["event"] == "thread_exit") {
        if let (Some(pid), Some(tid)) = (num(v, "pid"), num(v, "tid")) {
            if w.cases.contains_key(&pid) {
                thread_lines.entry(tid).or_default().push(v);
            }
        }
    }
    for (&pid, case) in &w.cases {
        let group = w.group(pid);
        let tasks: Vec<&Task> = group.iter().filter_map(|t| records.get(t)).collect();
        let last = tasks.iter().find(|t| t.flag() & AGROUP != 0).map(|t| t.tid);
        // (By comm too: `record` sees the whole host, and a pid may have
        // been someone else's earlier.)
        let exits: Vec<&Value> = lines
            .iter()
            .filter(|v| v["event"] == "exit" && num(v, "pid") == Some(pid))
            .filter(|v| v["comm"].as_str().is_some_and(is_workload_comm))
            .collect();
        let [exit] = exits[..] else {
            o.failures.push(format!(
                "{scenario}: case {case} pid {pid}: {} exit lines, expected 1: {exits:?}",
                exits.len()
            ));
            continue;
        };
        if exit["late"] == true {
            // `tracer run` wrote it at the leader's free: the kernel
            // skipped both exit programs, and the last thread's figures
            // with them, so the record has none (README, "What lost
            // counts"); it must not have wrong ones.
            eprintln!("{scenario}: case {case} pid {pid}: a late record, its figures not compared");
            if !exit["read_char"].is_null() {
                o.failures.push(format!(
                    "{scenario}: case {case} pid {pid}: a late record with taskstats figures: {exit}"
                ));
            }
            continue;
        }
        let tid = num(exit, "tid").unwrap_or(0);
        let (tasks, late) = without_late_threads(
            o,
            (scenario, case, pid, tid),
            (exit, raw_of(exit)),
            tasks,
            delayacct,
        );
        let list = |tids: &[u32]| {
            tids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let late_list = || list(&late);
        let mut late_to_report = false;
        match last {
            Some(last) if tid != last && o.group_death_guessed && late.contains(&last) => {
                o.guessed.push(format!(
                    "{scenario} case {case} pid {pid}: tid {tid} found the group's live count \
                     at 0 first and wrote the exit line; the kernel's last thread {last} came \
                     later (the line equals the sum without tid {})",
                    late_list()
                ));
            }
            Some(last) if tid != last => o.failures.push(format!(
                "{scenario}: case {case} pid {pid}: exit line's tid {tid}, but taskstats \
                 says {last} ended the group (AGROUP)"
            )),
            _ if !late.is_empty() => late_to_report = true,
            _ => {}
        }
        compare_line(
            o,
            scenario,
            case,
            "exit",
            pid,
            tid,
            (exit, raw_of(exit)),
            &tasks,
            delayacct,
        );
        // --threads: every thread but the one that wrote the exit line (the
        // group's last, or the one that found it dead first, above) has a
        // thread_exit line equal to its own record, unless both copies of
        // the program that sends it were skipped (see `Outcome::skipped`).
        let mut skipped = Vec::new();
        for &t in group.iter().filter(|_| group.len() > 1) {
            let Some(rec) = records.get(&t) else { continue };
            let found = thread_lines.remove(&t).unwrap_or_default();
            if t == tid {
                if !found.is_empty() {
                    o.notes.push(format!(
                        "{scenario}: case {case}: the exit line's thread {t} also has a \
                         thread_exit line"
                    ));
                }
                continue;
            }
            // With fentry and kprobe one run at taskstats_exit() takes a
            // thread's figures and sends its line; with the tracepoint
            // hook, two programs do, each attached twice.
            let cost = match (late.contains(&t), o.read_at_taskstats_exit) {
                (true, true) | (false, false) => 1,
                (true, false) => 2,
                (false, true) => u64::MAX,
            };
            if found.is_empty() && cost <= skips_left {
                skips_left -= cost;
                skipped.push(t);
                o.skipped.push(format!(
                    "{scenario} case {case} pid {pid} tid {t}: no thread_exit line{}",
                    if late.contains(&t) {
                        ", and not in the exit line's sums"
                    } else {
                        ""
                    }
                ));
                continue;
            }
            let [line] = found[..] else {
                o.failures.push(format!(
                    "{scenario}: case {case} pid {pid}: {} thread_exit lines for tid {t}, \
                     expected 1: {found:?}",
                    found.len()
                ));
                continue;
            };
            compare_line(
                o,
                scenario,
                case,
                "thread_exit",
                pid,
                t,
                (line, raw_of(line)),
                &[rec],
                delayacct,
            );
        }
        // Threads left out of the sums that were skipped are not late.
        let late: Vec<u32> = late.into_iter().filter(|t| !skipped.contains(t)).collect();
        if late_to_report && !late.is_empty() {
            o.late.push(format!(
                "{scenario} case {case} pid {pid}: the exit line (tid {tid}) equals the sum \
                 without tid {}",
                list(&late)
            ));
        }
    }
    for (tid, ls) in thread_lines {
        o.notes.push(format!(
            "{scenario}: thread_exit line(s) for tid {tid} the workload did not announce: {ls:?}"
        ));
    }
}

/// A group's threads as its exit line sums them. A thread that leaves the
/// group's live count (`signal->live`) just before the last one, and is
/// preempted before it reaches `taskstats_exit()`, adds its figures after
/// the last thread wrote the group's record (the kernel's own acct record
/// has the same window: `acct_collect()` follows the same decrement).
/// Seen once in CI, on 7.2-rt with fentry. So when the line differs from
/// the sum over every thread but equals, field for field, the sum without
/// one or two threads other than the line's own, those threads are left
/// out: returned with the threads kept, for the caller's report. It is a
/// rare race: more than [`MAX_LATE_GROUPS`] such groups in one test run
/// fail it (a thread left out by a bug would be left out in every
/// session). Every other difference stays a failure, and the late
/// threads' own `thread_exit` lines are still compared with their records.
/// (With the tracepoint hook before 6.16 the late thread can be the
/// kernel's last one: see [`Outcome::group_death_guessed`].)
const MAX_LATE_GROUPS: usize = 1;

fn without_late_threads<'a>(
    o: &Outcome,
    (scenario, case, pid, tid): (&str, &str, u32, u32),
    line: (&Value, &str),
    tasks: Vec<&'a Task>,
    delayacct: bool,
) -> (Vec<&'a Task>, Vec<u32>) {
    let fits = |subset: &[&Task]| {
        let mut scratch = Outcome {
            hiwater_may_be_null: o.hiwater_may_be_null,
            read_after_taskstats_exit: o.read_after_taskstats_exit,
            read_at_taskstats_exit: o.read_at_taskstats_exit,
            ..Outcome::default()
        };
        compare_line(
            &mut scratch,
            scenario,
            case,
            "exit",
            pid,
            tid,
            line,
            subset,
            delayacct,
        );
        scratch.failures.is_empty()
    };
    if tasks.len() < 2 || fits(&tasks) {
        return (tasks, Vec::new());
    }
    let others: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].tid != tid).collect();
    let mut candidates: Vec<Vec<usize>> = others.iter().map(|&i| vec![i]).collect();
    for (n, &i) in others.iter().enumerate() {
        candidates.extend(others[n + 1..].iter().map(|&j| vec![i, j]));
    }
    for out in candidates {
        let kept: Vec<&Task> = (0..tasks.len())
            .filter(|i| !out.contains(i))
            .map(|i| tasks[i])
            .collect();
        if fits(&kept) {
            return (kept, out.iter().map(|&i| tasks[i].tid).collect());
        }
    }
    (tasks, Vec::new())
}

/// One tracer session around the workload, with the listener registered
/// before the workload starts. Returns the workload's records and the JSON.
fn session(
    dir: &TempDir,
    workload: &Path,
    mode: Mode,
    tag: &str,
) -> Option<(Workload, BTreeMap<u32, Task>, String)> {
    const NAME: &str = "extended_fields_equal_taskstats";
    let json = dir.join(&format!("{tag}.json"));
    let io = io_dir(dir);
    let listener = start_listener(NAME)?;
    let (w, records) = match mode {
        Mode::Run => {
            let out = run_with_timeout(
                tracer()
                    .args(["run", "--threads", "--json"])
                    .arg(&json)
                    .arg("--")
                    .arg(workload)
                    .arg(&io),
                Duration::from_secs(120),
            );
            assert!(out.status.success(), "{tag}: {}", describe_output(&out));
            let w = Workload::parse(&String::from_utf8_lossy(&out.stdout));
            let records = collect_records(&listener, &w, tag);
            (w, records)
        }
        Mode::Record => {
            let (child, _lines, all) = start_tracer(&["record", "--threads", "--json"], &[&json]);
            let out = run_with_timeout(Command::new(workload).arg(&io), Duration::from_secs(60));
            assert!(out.status.success(), "{tag}: {}", describe_output(&out));
            let w = Workload::parse(&String::from_utf8_lossy(&out.stdout));
            let records = collect_records(&listener, &w, tag);
            stop_tracer(child, all);
            (w, records)
        }
    };
    drop(listener);
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("reading {}: {e}", json.display()));
    Some((w, records, text))
}

/// The extended fields of `exit` and `thread_exit` lines against the
/// kernel's per-task taskstats records, in `run` and `record` mode, with
/// delay accounting off and on.
#[test]
fn extended_fields_equal_taskstats() {
    const NAME: &str = "extended_fields_equal_taskstats";
    if !require_privileges(NAME, BPF_CC) {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let dir = TempDir::new("taskstats");
    let workload = compile_workload(&dir);
    let strict = nulls_fail();
    let mut o = Outcome {
        hiwater_may_be_null: hiwater_may_be_null(),
        read_at_taskstats_exit: matches!(
            std::env::var("TRACER_ATTACH").as_deref(),
            Ok("fentry" | "kprobe")
        ),
        read_after_taskstats_exit: tracepoint_from_6_16(),
        group_death_guessed: hiwater_may_be_null(),
        ..Outcome::default()
    };
    let mut timings = Vec::new();
    for (mode, delayacct, tag) in [
        (Mode::Run, false, "run-delayacct0"),
        (Mode::Record, true, "record-delayacct1"),
        (Mode::Run, true, "run-delayacct1"),
        (Mode::Record, false, "record-delayacct0"),
    ] {
        let t = Instant::now();
        let Some(guard) = DelayAcct::set(delayacct) else {
            o.nulls.push(format!(
                "{tag}: not run: no {DELAYACCT} (a kernel without delay accounting)"
            ));
            continue;
        };
        let Some((w, records, json)) = session(&dir, &workload, mode, tag) else {
            return; // skipped (said why)
        };
        drop(guard);
        debug_print(&w, &records, tag);
        check_oracle(&w, &records, tag);
        compare_session(&mut o, tag, &w, &records, &json, delayacct);
        timings.push(format!("{tag} {:.1} s", t.elapsed().as_secs_f64()));
    }

    let mut report = format!(
        "{NAME} ({}, CI={}, nulls {}): {} fields equal to taskstats, {} null as documented \
         (delays with delay accounting off; high-water marks with the tracepoint hook \
         before 6.16), {} absent from both; {} null, {} different; {}; \
         total {:.1} s\n",
        kernel_release(),
        ci(),
        if strict { "fail" } else { "reported" },
        o.equal,
        o.null_as_documented,
        o.absent_in_both,
        o.nulls.len(),
        o.failures.len(),
        timings.join(", "),
        t0.elapsed().as_secs_f64()
    );
    for n in &o.notes {
        let _ = writeln!(report, "note: {n}");
    }
    if !o.read_later.is_empty() {
        let _ = writeln!(
            report,
            "larger than taskstats', read after it (allowed with the tracepoint hook: \
             after exit_mm() before 6.16, right after taskstats_exit() from 6.16 on, where a \
             group's other threads may also raise its high-water marks; see \
             RUNNING_COUNTERS): {}",
            o.read_later.len()
        );
        for n in &o.read_later {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.read_earlier.is_empty() {
        let _ = writeln!(
            report,
            "smaller than taskstats', read as taskstats_exit() starts (allowed with fentry \
             and kprobe, where a group's other threads may also raise its high-water marks \
             meanwhile; see RUNNING_COUNTERS): {}",
            o.read_earlier.len()
        );
        for n in &o.read_earlier {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.late.is_empty() {
        let _ = writeln!(
            report,
            "threads late to their group's record (allowed in at most {MAX_LATE_GROUPS} \
             group(s) a run: they reached taskstats_exit() after the group's last thread \
             wrote it; see without_late_threads): {}",
            o.late.len()
        );
        for n in &o.late {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.guessed.is_empty() {
        let _ = writeln!(
            report,
            "exit lines written by the thread just before the kernel's last (allowed with \
             the tracepoint hook before 6.16, which reads group death from signal->live; see \
             Outcome::group_death_guessed): {}",
            o.guessed.len()
        );
        for n in &o.guessed {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.skipped.is_empty() {
        let _ = writeln!(
            report,
            "threads both copies of a program skipped (allowed up to the session's \
             event_runs_skipped, the tracer's count of the kernel's recursion-guard skips; \
             see Outcome::skipped): {}",
            o.skipped.len()
        );
        for n in &o.skipped {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.tick_later.is_empty() {
        let _ = writeln!(
            report,
            "coremem/virtmem taken one scheduler tick after taskstats (allowed, see tick_slack):"
        );
        for n in &o.tick_later {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.nulls.is_empty() {
        let _ = writeln!(
            report,
            "null in the tracer's JSON (not compared{}):",
            if strict {
                "; a failure under CI on the 6.18 host"
            } else {
                ""
            }
        );
        for n in &o.nulls {
            let _ = writeln!(report, "  {n}");
        }
    }
    if !o.failures.is_empty() {
        let _ = writeln!(
            report,
            "{:<14} {:<13} {:>7} {:>7} {:<11} {:<24} {:>22} {:>22}  how\n{}",
            "session",
            "case",
            "pid",
            "tid",
            "line",
            "field",
            "expected(taskstats)",
            "got(tracer)",
            o.failures.join("\n")
        );
    }
    eprint!("{report}");
    assert!(
        o.late.len() <= MAX_LATE_GROUPS,
        "{NAME}: {} groups left threads out of their exit lines, more than a rare race \
         explains; see the report above",
        o.late.len()
    );
    assert!(
        o.failures.is_empty() && (o.nulls.is_empty() || !strict),
        "{NAME}: {} field(s) differ from taskstats, {} null; see the report above",
        o.failures.len(),
        o.nulls.len()
    );
}

/// A made-up taskstats record for the tests that need no root: each
/// field not a delay is `io` plus its offset, the high-water marks 4096.
fn made_up_task(tid: u32, io: u64, flag: u8) -> Task {
    let mut raw = vec![0u8; 440];
    raw[0..2].copy_from_slice(&16u16.to_le_bytes());
    raw[8] = flag;
    for fld in FIELDS.iter().filter(|f| !f.delay) {
        let v = if fld.json.starts_with("hiwater_") {
            4096
        } else {
            io + fld.off as u64
        };
        raw[fld.off..fld.off + 8].copy_from_slice(&v.to_le_bytes());
    }
    Task {
        tid,
        version: 16,
        raw,
    }
}

/// The extended fields of a line over `tasks`, summed (or the largest) as
/// the tracer does; the delays null.
fn fields_over(tasks: &[&Task]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for fld in FIELDS {
        let v = if fld.delay {
            Value::Null
        } else {
            let vals = tasks
                .iter()
                .map(|t| t.u64_at(fld.off).expect("in the record"));
            Value::from(match fld.agg {
                Agg::Sum => vals.sum::<u64>(),
                Agg::Max => vals.max().unwrap_or(0),
            })
        };
        m.insert(fld.json.into(), v);
    }
    m
}

/// [`without_late_threads`] leaves a thread out only when the line equals
/// the sums without it, never the line's own thread, and never to explain
/// any other difference. Needs no root: made-up records.
#[test]
fn late_threads_are_left_out_only_when_the_sums_say_so() {
    let task = |tid: u32, io: u64| made_up_task(tid, io, 0);
    let (leader, worker, last) = (task(100, 8192), task(101, 524_288), task(102, 1_048_576));
    let line_over = |tasks: &[&Task]| {
        let v = Value::Object(fields_over(tasks));
        let raw = v.to_string();
        (v, raw)
    };
    let all = vec![&leader, &worker, &last];
    let o = Outcome::default();
    let keep = |(v, raw): &(Value, String)| {
        let (kept, late) =
            without_late_threads(&o, ("s", "c", 100, 102), (v, raw), all.clone(), false);
        (kept.iter().map(|t| t.tid).collect::<Vec<u32>>(), late)
    };

    assert_eq!(keep(&line_over(&all)), (vec![100, 101, 102], vec![]));
    assert_eq!(
        keep(&line_over(&[&leader, &last])),
        (vec![100, 102], vec![101])
    );

    // Without the line's own thread: not a late thread, all are kept (and
    // the comparison then fails).
    assert_eq!(
        keep(&line_over(&[&leader, &worker])),
        (vec![100, 101, 102], vec![])
    );

    // Half a thread missing: no subset explains it.
    let (mut v, _) = line_over(&all);
    v["read_char"] = Value::from(v["read_char"].as_u64().expect("a number") - 4096);
    let raw = v.to_string();
    assert_eq!(keep(&(v, raw)), (vec![100, 101, 102], vec![]));
    let mut failing = Outcome::default();
    compare_line(
        &mut failing,
        "s",
        "c",
        "exit",
        100,
        102,
        (&line_over(&[&leader]).0, &line_over(&[&leader]).1),
        &all,
        false,
    );
    assert!(!failing.failures.is_empty());
}

/// A thread with neither its figures in its group's exit line nor a
/// `thread_exit` line passes only when the session's summary counted a
/// skip for it (`Outcome::skipped`), and is then not taken for a late
/// thread. Needs no root: made-up records.
#[test]
fn a_skipped_thread_is_allowed_only_when_the_summary_counts_it() {
    let task = made_up_task;
    let line = |event: &str, tid: u32, tasks: &[&Task]| {
        let mut m = fields_over(tasks);
        for (k, v) in [
            ("event", Value::from(event)),
            ("pid", Value::from(100)),
            ("tid", Value::from(tid)),
            ("comm", Value::from("ts-threads")),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m).to_string()
    };
    let (leader, skipped, last) = (
        task(100, 8192, 0),
        task(101, 524_288, 0),
        task(102, 1_048_576, AGROUP),
    );
    let records = BTreeMap::from([(100, leader.clone()), (101, skipped), (102, last.clone())]);
    let w = Workload {
        cases: BTreeMap::from([(100, "threads".to_string())]),
        threads: BTreeMap::from([(100, BTreeSet::from([100, 101, 102]))]),
    };
    let json = |event_runs_skipped: u64| {
        [
            line("thread_exit", 100, &[&leader]),
            line("exit", 102, &[&leader, &last]),
            serde_json::json!({"event": "summary", "lost": 0, "event_runs_skipped": event_runs_skipped})
                .to_string(),
        ]
        .join("\n")
    };
    let outcome = |event_runs_skipped: u64| {
        let mut o = Outcome {
            read_at_taskstats_exit: true,
            ..Outcome::default()
        };
        compare_session(&mut o, "s", &w, &records, &json(event_runs_skipped), false);
        o
    };
    let counted = outcome(1);
    assert!(counted.failures.is_empty(), "{:?}", counted.failures);
    assert_eq!(counted.skipped.len(), 1, "{:?}", counted.skipped);
    assert!(counted.late.is_empty(), "{:?}", counted.late);
    let uncounted = outcome(0);
    assert!(
        uncounted
            .failures
            .iter()
            .any(|f| f.contains("0 thread_exit lines for tid 101")),
        "{:?}",
        uncounted.failures
    );
    assert!(uncounted.skipped.is_empty(), "{:?}", uncounted.skipped);
}
