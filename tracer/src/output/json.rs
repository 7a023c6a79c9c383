//! `--json`: one JSON object per line (NDJSON). The schema is in README.md.

use std::io::{self, Write};

#[cfg(test)]
use tracer_common::ExitRecord;
use tracer_common::{ForkRecord, ThreadExitRecord};

use super::{
    flag_names, push_signal,
    text::{push_int, push_lossy, push_secs, push_unix_time},
    Batched, Output, Summary, Target,
};
use crate::{
    decode::{Clock, Exec},
    exit_status::ExitStatus,
    lineage::{clone_flag_names, Kind},
    model::{Delays, Exit, TaskStats},
};

pub struct JsonLines {
    target: Target,
    out: Batched,
}

impl JsonLines {
    pub fn new(target: Target, out: Box<dyn Write>) -> Self {
        Self {
            target,
            out: Batched::new(out),
        }
    }

    /// `out` is the file at `path`: see [`Batched::reopens`].
    pub fn reopens(&mut self, path: &std::path::Path, rotate: Option<super::file::Rotate>) {
        self.out.reopens(path, rotate);
    }
}

impl Output for JsonLines {
    fn exit(&mut self, ev: &Exit<'_>) -> io::Result<()> {
        self.out.line(|w| write_exit(w, ev))
    }

    fn fork(&mut self, rec: &ForkRecord, clock: &Clock) -> io::Result<()> {
        self.out.line(|w| write_fork(w, rec, clock))
    }

    fn exec(&mut self, rec: &Exec, clock: &Clock) -> io::Result<()> {
        self.out.line(|w| write_exec(w, rec, clock))
    }

    fn thread_exit(&mut self, t: &ThreadExitRecord, clock: &Clock) -> io::Result<()> {
        self.out.line(|w| write_thread_exit(w, t, clock))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        self.out.line(|w| write_summary(w, summary))
    }

    fn lost(&self) -> u64 {
        self.out.lost()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.out.reopen()
    }

    fn name(&self) -> String {
        self.target.describe()
    }
}

/// The last line of a recording: what was written and what was lost, by
/// reason (the same counts as the summary on standard error).
fn write_summary(w: &mut Vec<u8>, s: &Summary) {
    w.extend_from_slice(b"{\"event\":\"summary\",\"written\":");
    push_int(w, s.written);
    w.extend_from_slice(b",\"lost\":");
    push_int(w, s.lost());
    for (name, n) in [
        ("ring_full", s.ring_full),
        ("track_full", s.track_full),
        ("events_lost", s.events_lost),
        ("stamps_lost", s.stamps_lost),
        ("unstamped", s.unstamped),
        ("late", s.late),
        ("unknown", s.unknown),
        ("exit_runs_skipped", s.exit_runs_skipped),
        ("event_runs_skipped", s.event_runs_skipped),
    ] {
        w.extend_from_slice(b",\"");
        w.extend_from_slice(name.as_bytes());
        w.extend_from_slice(b"\":");
        push_int(w, n);
    }
    w.extend_from_slice(b",\"output_lost\":{");
    for (i, (name, n)) in s.output_lost.iter().enumerate() {
        if i > 0 {
            w.push(b',');
        }
        w.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
        w.push(b':');
        push_int(w, *n);
    }
    w.extend_from_slice(b"}}\n");
}

/// A number, or `null`.
fn push_opt(w: &mut Vec<u8>, v: Option<u32>) {
    match v {
        Some(v) => push_int(w, v),
        None => w.extend_from_slice(b"null"),
    }
}

/// Seconds with ns precision, as JSON numbers.
fn push_s(w: &mut Vec<u8>, ns: u64) {
    push_secs(w, ns, 9);
}

/// `["A","B"]` from names that need no escaping.
fn write_names<'a>(w: &mut Vec<u8>, names: impl Iterator<Item = &'a str>) {
    w.push(b'[');
    for (i, name) in names.enumerate() {
        if i > 0 {
            w.push(b',');
        }
        w.push(b'"');
        w.extend_from_slice(name.as_bytes());
        w.push(b'"');
    }
    w.push(b']');
}

fn write_flag_list(w: &mut Vec<u8>, flags: u64) {
    write_names(w, clone_flag_names(flags));
}

pub(super) fn write_thread_exit(w: &mut Vec<u8>, t: &ThreadExitRecord, clock: &Clock) {
    w.extend_from_slice(br#"{"event":"thread_exit","time":"#);
    push_unix_time(w, clock.realtime_ns(t.time_ns));
    w.extend_from_slice(br#","pid":"#);
    push_int(w, t.pid);
    w.extend_from_slice(br#","tid":"#);
    push_int(w, t.tid);
    w.extend_from_slice(br#","comm":"#);
    write_str(w, &t.comm);
    w.extend_from_slice(br#","exit_code":"#);
    push_int(w, t.exit_code);
    w.extend_from_slice(br#","cpu_runtime_s":"#);
    push_s(w, t.runtime_ns);
    write_taskstats(w, TaskStats::from_xacct(&t.xacct, t.present).as_ref(), true);
    w.extend_from_slice(b"}\n");
}

/// taskstats' figures (`null` where the kernel or hook has none);
/// `all`: storage I/O and context switches too (an exit writes those with
/// the other probed fields).
fn write_taskstats(w: &mut Vec<u8>, t: Option<&TaskStats>, all: bool) {
    let field = |w: &mut Vec<u8>, key: &[u8], v: Option<u64>| {
        w.extend_from_slice(key);
        match v {
            Some(v) => push_int(w, v),
            None => w.extend_from_slice(b"null"),
        }
    };
    let get = |f: fn(&TaskStats) -> u64| t.map(f);
    field(
        w,
        br#","hiwater_rss_kb":"#,
        t.and_then(|t| t.hiwater_rss_kb),
    );
    field(w, br#","hiwater_vm_kb":"#, t.and_then(|t| t.hiwater_vm_kb));
    field(w, br#","coremem":"#, get(|t| t.coremem));
    field(w, br#","virtmem":"#, get(|t| t.virtmem));
    field(w, br#","read_char":"#, get(|t| t.read_char));
    field(w, br#","write_char":"#, get(|t| t.write_char));
    field(w, br#","read_syscalls":"#, get(|t| t.read_syscalls));
    field(w, br#","write_syscalls":"#, get(|t| t.write_syscalls));
    if all {
        field(w, br#","read_bytes":"#, get(|t| t.read_bytes));
        field(w, br#","write_bytes":"#, get(|t| t.write_bytes));
        field(w, br#","nvcsw":"#, get(|t| t.nvcsw));
        field(w, br#","nivcsw":"#, get(|t| t.nivcsw));
    }
    field(
        w,
        br#","cancelled_write_bytes":"#,
        get(|t| t.cancelled_write_bytes),
    );
    let d = t.and_then(|t| t.delays);
    let delay = |f: fn(&Delays) -> u64| d.as_ref().map(f);
    field(w, br#","cpu_delay_ns":"#, delay(|d| d.cpu_ns));
    field(w, br#","blkio_delay_ns":"#, delay(|d| d.blkio_ns));
    field(w, br#","swapin_delay_ns":"#, delay(|d| d.swapin_ns));
    field(w, br#","freepages_delay_ns":"#, delay(|d| d.freepages_ns));
    field(w, br#","thrashing_delay_ns":"#, delay(|d| d.thrashing_ns));
    field(
        w,
        br#","memory_compact_delay_ns":"#,
        delay(|d| d.memory_compact_ns),
    );
    field(w, br#","irq_delay_ns":"#, d.and_then(|d| d.irq_ns));
}

pub(super) fn write_fork(w: &mut Vec<u8>, f: &ForkRecord, clock: &Clock) {
    let kind = Kind::of(f.clone_flags);
    w.extend_from_slice(br#"{"event":"fork","time":"#);
    push_unix_time(w, clock.realtime_ns(f.time_ns));
    w.extend_from_slice(br#","parent_pid":"#);
    push_int(w, f.parent_pid);
    w.extend_from_slice(br#","parent_tid":"#);
    push_int(w, f.parent_tid);
    w.extend_from_slice(br#","child_pid":"#);
    push_int(w, f.child_pid);
    w.extend_from_slice(br#","child_tid":"#);
    push_int(w, f.child_tid);
    w.extend_from_slice(br#","clone_flags":"#);
    write_flag_list(w, f.clone_flags);
    w.extend_from_slice(br#","clone_flags_raw":"#);
    push_int(w, f.clone_flags);
    w.extend_from_slice(br#","exit_signal":"#);
    match u8::try_from(f.exit_signal).ok().filter(|&s| s != 0) {
        Some(sig) => push_signal(w, sig),
        None => w.extend_from_slice(b"null"),
    }
    w.extend_from_slice(br#","kind":""#);
    w.extend_from_slice(kind.name().as_bytes());
    w.extend_from_slice(br#"","comm":"#);
    write_str(w, &f.comm);
    w.extend_from_slice(b"}\n");
}

pub(super) fn write_exec(w: &mut Vec<u8>, e: &Exec, clock: &Clock) {
    w.extend_from_slice(br#"{"event":"exec","time":"#);
    push_unix_time(w, clock.realtime_ns(e.time_ns));
    w.extend_from_slice(br#","pid":"#);
    push_int(w, e.pid);
    w.extend_from_slice(br#","tid":"#);
    push_int(w, e.tid);
    w.extend_from_slice(br#","filename":"#);
    write_str(w, &e.filename);
    w.extend_from_slice(br#","argv":["#);
    let args = &e.args[..];
    let mut first = true;
    for arg in args.split(|&b| b == 0) {
        // The last piece after the final NUL is empty; a cut argument is kept.
        if arg.is_empty() && std::ptr::eq(arg.as_ptr(), args.as_ptr().wrapping_add(args.len())) {
            continue;
        }
        if !first {
            w.push(b',');
        }
        first = false;
        write_str(w, arg);
    }
    w.extend_from_slice(br#"],"argv_truncated":"#);
    w.extend_from_slice(if e.truncated() { b"true" } else { b"false" });
    w.extend_from_slice(br#","comm":"#);
    write_str(w, &e.comm);
    w.extend_from_slice(b"}\n");
}

pub(super) fn write_exit(w: &mut Vec<u8>, e: &Exit<'_>) {
    w.extend_from_slice(br#"{"event":"exit","pid":"#);
    push_int(w, e.pid);
    w.extend_from_slice(br#","ppid":"#);
    push_int(w, e.ppid);
    w.extend_from_slice(br#","tid":"#);
    push_opt(w, e.tid);
    w.extend_from_slice(br#","comm":"#);
    write_str(w, &e.comm);
    w.extend_from_slice(br#","uid":"#);
    push_int(w, e.uid);
    w.extend_from_slice(br#","gid":"#);
    push_int(w, e.gid);
    w.extend_from_slice(br#","tty":"#);
    push_int(w, e.tty);
    w.extend_from_slice(br#","exit_code":"#);
    push_int(w, e.exit_code);
    match e.status() {
        ExitStatus::Exited(code) => {
            w.extend_from_slice(br#","exit_status":"#);
            push_int(w, code);
            w.extend_from_slice(br#","signal":null,"core_dumped":false"#);
        }
        ExitStatus::Signaled {
            signal,
            core_dumped,
        } => {
            w.extend_from_slice(br#","exit_status":null,"signal":"#);
            push_signal(w, signal);
            w.extend_from_slice(if core_dumped {
                br#","core_dumped":true"#
            } else {
                br#","core_dumped":false"#
            });
        }
    }
    w.extend_from_slice(br#","flags":"#);
    write_names(w, flag_names(e.flags));
    w.extend_from_slice(br#","btime":"#);
    push_int(w, e.btime);
    w.extend_from_slice(br#","exit_time":"#);
    push_unix_time(w, i128::from(e.exit_time_ns));
    w.extend_from_slice(br#","elapsed_s":"#);
    push_s(w, e.elapsed_ns);
    w.extend_from_slice(br#","utime_s":"#);
    push_s(w, e.utime_ns);
    w.extend_from_slice(br#","stime_s":"#);
    push_s(w, e.stime_ns);
    w.extend_from_slice(br#","mem_kb":"#);
    push_int(w, e.mem_kb);
    w.extend_from_slice(br#","minflt":"#);
    push_int(w, e.minflt);
    w.extend_from_slice(br#","majflt":"#);
    push_int(w, e.majflt);
    if let Some(p) = &e.probed {
        w.extend_from_slice(if p.late {
            br#","late":true"#
        } else {
            br#","late":false"#
        });
        w.extend_from_slice(br#","exit_signal":"#);
        push_signal(w, u8::try_from(p.exit_signal).unwrap_or(0));
        w.extend_from_slice(br#","start_ns":"#);
        push_int(w, p.start_ns);
        w.extend_from_slice(br#","cgroup_id":"#);
        push_int(w, p.cgroup_id);
        // Present only when the running kernel has them.
        let int = |w: &mut Vec<u8>, key: &[u8], v: Option<u64>| {
            if let Some(v) = v {
                w.extend_from_slice(key);
                push_int(w, v);
            }
        };
        int(w, br#","maxrss_kb":"#, p.maxrss_kb);
        int(w, br#","rchar":"#, p.rchar);
        int(w, br#","wchar":"#, p.wchar);
        int(w, br#","read_bytes":"#, p.read_bytes);
        int(w, br#","write_bytes":"#, p.write_bytes);
        if let Some(ns) = p.cpu_runtime_ns {
            w.extend_from_slice(br#","cpu_runtime_s":"#);
            push_s(w, ns);
        }
        int(w, br#","nvcsw":"#, p.nvcsw);
        int(w, br#","nivcsw":"#, p.nivcsw);
        write_taskstats(w, p.taskstats.as_ref(), false);
        if let Some(ns) = p.ns {
            write_container(w, e, ns);
        }
        write_cause(w, e);
    }
    if let Some(lineage) = &e.lineage {
        let table = lineage.table;
        let (creator, flags) = table.creation(e.pid).unwrap_or((None, None));
        w.extend_from_slice(br#","created_by":"#);
        push_opt(w, creator);
        match flags {
            Some(flags) => {
                w.extend_from_slice(br#","kind":""#);
                w.extend_from_slice(Kind::of(flags).name().as_bytes());
                w.extend_from_slice(br#"","clone_flags":"#);
                write_flag_list(w, flags);
            }
            None => w.extend_from_slice(br#","kind":null,"clone_flags":null"#),
        }
        w.extend_from_slice(br#","ancestry":["#);
        for (i, (pid, comm)) in table.ancestors(e.pid).enumerate() {
            if i > 0 {
                w.push(b',');
            }
            w.extend_from_slice(br#"{"pid":"#);
            push_int(w, pid);
            w.extend_from_slice(br#","comm":"#);
            write_str(w, comm);
            w.push(b'}');
        }
        w.push(b']');
        match lineage.exec(e.pid) {
            Some(exec) => {
                w.extend_from_slice(br#","exe":"#);
                write_str(w, &exec.exe);
                w.extend_from_slice(br#","argv":["#);
                for (i, arg) in exec.args().enumerate() {
                    if i > 0 {
                        w.push(b',');
                    }
                    write_str(w, arg);
                }
                w.extend_from_slice(if exec.argv_truncated {
                    br#"],"argv_truncated":true"#
                } else {
                    br#"],"argv_truncated":false"#
                });
            }
            None => w.extend_from_slice(br#","exe":null,"argv":null,"argv_truncated":null"#),
        }
    }
    w.extend_from_slice(b"}\n");
}

/// A JSON string from NUL-padded bytes, lossily decoded ([`push_lossy`]);
/// escapes quotes, backslashes and control characters (a comm can hold
/// any of them).
/// The cgroup, the container it names, and the pids as the process's own
/// pid namespace sees them; `null` where not known or not applicable.
fn write_container(w: &mut Vec<u8>, e: &Exit<'_>, ns: crate::model::NsIds) {
    let opt_str = |w: &mut Vec<u8>, key: &[u8], v: Option<&str>| {
        w.extend_from_slice(key);
        match v {
            Some(v) => write_str(w, v.as_bytes()),
            None => w.extend_from_slice(b"null"),
        }
    };
    let container = e.container();
    opt_str(w, br#","cgroup":"#, e.cgroup.map(|c| c.path.as_str()));
    opt_str(w, br#","container_id":"#, container.map(|c| c.id.as_str()));
    opt_str(
        w,
        br#","pod_uid":"#,
        container.and_then(|c| c.pod_uid.as_deref()),
    );
    w.extend_from_slice(br#","ns_pid":"#);
    push_int(w, ns.pid);
    w.extend_from_slice(br#","ns_ppid":"#);
    push_int(w, ns.ppid);
    w.extend_from_slice(br#","pidns":"#);
    push_int(w, ns.pidns);
}

/// `killed_by` and `oom_kill`, `null` when they do not apply.
fn write_cause(w: &mut Vec<u8>, e: &Exit<'_>) {
    w.extend_from_slice(br#","killed_by":"#);
    match &e.killed_by {
        Some(k) => {
            w.extend_from_slice(br#"{"pid":"#);
            push_int(w, k.pid);
            w.extend_from_slice(br#","tid":"#);
            push_int(w, k.tid);
            w.extend_from_slice(br#","comm":"#);
            write_str(w, k.comm_bytes());
            w.extend_from_slice(br#","uid":"#);
            push_int(w, k.uid);
            w.extend_from_slice(br#","code":"#);
            write_str(w, k.code_name().as_bytes());
            w.push(b'}');
        }
        None => w.extend_from_slice(b"null"),
    }
    w.extend_from_slice(br#","oom_kill":"#);
    match e.oom_kill {
        Some(o) => {
            w.extend_from_slice(br#"{"cgroup":"#);
            write_str(w, o.cgroup.as_bytes());
            for (key, v) in [
                (&br#","anon_rss_kb":"#[..], o.anon_rss_kb),
                (br#","file_rss_kb":"#, o.file_rss_kb),
                (br#","shmem_rss_kb":"#, o.shmem_rss_kb),
            ] {
                w.extend_from_slice(key);
                match v {
                    Some(v) => push_int(w, v),
                    None => w.extend_from_slice(b"null"),
                }
            }
            w.extend_from_slice(br#","oom_score_adj":"#);
            match o.oom_score_adj {
                Some(v) => push_int(w, v),
                None => w.extend_from_slice(b"null"),
            }
            w.push(b'}');
        }
        None => w.extend_from_slice(b"null"),
    }
}

pub(super) fn write_str(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.push(b'"');
    let start = buf.len();
    push_lossy(buf, bytes);
    // Everything to escape is ASCII, and every byte of a multi-byte
    // character is >= 0x80, so the escapes can be found bytewise.
    if buf[start..].iter().all(|&b| !needs_escape(b)) {
        buf.push(b'"');
        return;
    }
    let end = buf.len();
    for i in start..end {
        let b = buf[i];
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b if needs_escape(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
            b => buf.push(b),
        }
    }
    // The escaped copy was built after the raw one: keep only the copy.
    buf.drain(start..end);
    buf.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{acct::AcctV3, output::fixtures::*};

    #[test]
    fn golden_lines() {
        let clock = clock();
        let table = lineage();
        let full = exit_full();
        let bare = exit_bare();
        let rt_signal = ExitRecord {
            exit_code: 40,
            exit_signal: 40,
            ..bare
        };
        let buf = Shared::default();
        let mut json = JsonLines::new(Target::Stdout, Box::new(buf.clone()));
        let with_lineage = |rec| Exit::from_record(rec, &clock).with_lineage(Some(&table));
        json.exit(&with_lineage(&full)).unwrap();
        // Not in the table: no creator, no ancestry; taken when its
        // leader was freed.
        let late = ExitRecord {
            flags: tracer_common::flags::AT_FREE,
            ..bare
        };
        json.exit(&with_lineage(&late)).unwrap();
        // Killed by a process, and by the OOM killer.
        let rt_cause = crate::causes::Cause {
            killed_by: Some(killer(40)),
            oom_kill: None,
        };
        json.exit(&Exit::from_record(&rt_signal, &clock).with_cause(&rt_cause))
            .unwrap();
        let oom_cause = crate::causes::Cause {
            killed_by: Some(killer(9)),
            oom_kill: Some(oom_kill()),
        };
        let oom = ExitRecord {
            exit_code: 9,
            ..bare
        };
        json.exit(&Exit::from_record(&oom, &clock).with_cause(&oom_cause))
            .unwrap();
        // From an acct file (`dump`): acct's resolution, no extras.
        json.exit(&AcctV3::from_model(&Exit::from_record(&full, &clock)).to_exit())
            .unwrap();
        json.fork(&fork(4200, 4242, 0x100 | 0x4000 | 0x11, b"bash"), &clock)
            .unwrap();
        let thread = ForkRecord {
            exit_signal: -1,
            ..fork(4242, 4242, 0x1_0000 | 0x100 | 0x800 | 0x3d_0f00, b"sh")
        };
        json.fork(&thread, &clock).unwrap();
        let odd = ForkRecord {
            exit_signal: 40,
            ..fork(
                1,
                99,
                0x2_0000_0000 | 0x7c02_0080 | 0x1_0000_0000,
                b"unshare",
            )
        };
        json.fork(&odd, &clock).unwrap();
        json.exec(
            &exec(b"/usr/bin/l\"s\xc3\xa9", b"ls\0-l\0\0/tmp\0", 13),
            &clock,
        )
        .unwrap();
        json.exec(&exec(b"/bin/echo", b"echo\0hel", 300), &clock)
            .unwrap();
        json.exec(&exec(b"", b"", 0), &clock).unwrap();
        json.thread_exit(&thread_exit(), &clock).unwrap();
        json.flush().unwrap();
        let got = buf.text();
        assert_eq!(got, GOLDEN);
    }

    /// What the outputs wrote when this test was added: any change is a
    /// format change.
    const GOLDEN: &str = r#"{"event":"exit","pid":4242,"ppid":4200,"tid":4243,"comm":"sh","uid":0,"gid":100,"tty":34819,"exit_code":768,"exit_status":3,"signal":null,"core_dumped":false,"flags":["FORK","SU"],"btime":1794999999,"exit_time":1795000000.000000000,"elapsed_s":1.234567890,"utime_s":0.020000000,"stime_s":1.010000000,"mem_kb":123456,"minflt":7890,"majflt":12,"late":false,"exit_signal":"SIGCHLD","start_ns":998765432110,"cgroup_id":18446744073709551615,"maxrss_kb":4000,"rchar":1099511627776,"wchar":65536,"read_bytes":4096,"write_bytes":0,"cpu_runtime_s":1.029999999,"nvcsw":5,"nivcsw":6,"hiwater_rss_kb":4000,"hiwater_vm_kb":123456,"coremem":11,"virtmem":12,"read_char":1099511627776,"write_char":65536,"read_syscalls":1024,"write_syscalls":2048,"cancelled_write_bytes":3072,"cpu_delay_ns":21,"blkio_delay_ns":22,"swapin_delay_ns":23,"freepages_delay_ns":24,"thrashing_delay_ns":25,"memory_compact_delay_ns":26,"irq_delay_ns":27,"killed_by":null,"oom_kill":null,"created_by":4200,"kind":"vfork","clone_flags":["CLONE_VM","CLONE_VFORK"],"ancestry":[{"pid":4200,"comm":"bash"},{"pid":1,"comm":"swapper/0"}],"exe":"/bin/sh","argv":["sh","-c","exit 3"],"argv_truncated":false}
{"event":"exit","pid":7,"ppid":0,"tid":7,"comm":"a\\\"\t\u007f�é \u0001zzzzz","uid":65534,"gid":65534,"tty":0,"exit_code":139,"exit_status":null,"signal":"SIGSEGV","core_dumped":true,"flags":["CORE","XSIG"],"btime":1795000999,"exit_time":1795000999.000000000,"elapsed_s":0.000000000,"utime_s":0.000000000,"stime_s":0.000000000,"mem_kb":0,"minflt":0,"majflt":0,"late":true,"exit_signal":null,"start_ns":2000000000000,"cgroup_id":18446744073709551615,"hiwater_rss_kb":null,"hiwater_vm_kb":null,"coremem":null,"virtmem":null,"read_char":null,"write_char":null,"read_syscalls":null,"write_syscalls":null,"cancelled_write_bytes":null,"cpu_delay_ns":null,"blkio_delay_ns":null,"swapin_delay_ns":null,"freepages_delay_ns":null,"thrashing_delay_ns":null,"memory_compact_delay_ns":null,"irq_delay_ns":null,"killed_by":null,"oom_kill":null,"created_by":null,"kind":null,"clone_flags":null,"ancestry":[],"exe":null,"argv":null,"argv_truncated":null}
{"event":"exit","pid":7,"ppid":0,"tid":7,"comm":"a\\\"\t\u007f�é \u0001zzzzz","uid":65534,"gid":65534,"tty":0,"exit_code":40,"exit_status":null,"signal":"SIGRTMIN+8","core_dumped":false,"flags":["CORE","XSIG"],"btime":1795000999,"exit_time":1795000999.000000000,"elapsed_s":0.000000000,"utime_s":0.000000000,"stime_s":0.000000000,"mem_kb":0,"minflt":0,"majflt":0,"late":false,"exit_signal":"SIGRTMIN+8","start_ns":2000000000000,"cgroup_id":18446744073709551615,"hiwater_rss_kb":null,"hiwater_vm_kb":null,"coremem":null,"virtmem":null,"read_char":null,"write_char":null,"read_syscalls":null,"write_syscalls":null,"cancelled_write_bytes":null,"cpu_delay_ns":null,"blkio_delay_ns":null,"swapin_delay_ns":null,"freepages_delay_ns":null,"thrashing_delay_ns":null,"memory_compact_delay_ns":null,"irq_delay_ns":null,"killed_by":{"pid":4200,"tid":4201,"comm":"sh\u001b[2J","uid":1000,"code":"SI_USER"},"oom_kill":null}
{"event":"exit","pid":7,"ppid":0,"tid":7,"comm":"a\\\"\t\u007f�é \u0001zzzzz","uid":65534,"gid":65534,"tty":0,"exit_code":9,"exit_status":null,"signal":"SIGKILL","core_dumped":false,"flags":["CORE","XSIG"],"btime":1795000999,"exit_time":1795000999.000000000,"elapsed_s":0.000000000,"utime_s":0.000000000,"stime_s":0.000000000,"mem_kb":0,"minflt":0,"majflt":0,"late":false,"exit_signal":null,"start_ns":2000000000000,"cgroup_id":18446744073709551615,"hiwater_rss_kb":null,"hiwater_vm_kb":null,"coremem":null,"virtmem":null,"read_char":null,"write_char":null,"read_syscalls":null,"write_syscalls":null,"cancelled_write_bytes":null,"cpu_delay_ns":null,"blkio_delay_ns":null,"swapin_delay_ns":null,"freepages_delay_ns":null,"thrashing_delay_ns":null,"memory_compact_delay_ns":null,"irq_delay_ns":null,"killed_by":{"pid":4200,"tid":4201,"comm":"sh\u001b[2J","uid":1000,"code":"SI_KERNEL"},"oom_kill":{"cgroup":"/system.slice/x.service","anon_rss_kb":49000,"file_rss_kb":120,"shmem_rss_kb":0,"oom_score_adj":200}}
{"event":"exit","pid":4242,"ppid":4200,"tid":null,"comm":"sh","uid":0,"gid":100,"tty":34819,"exit_code":768,"exit_status":3,"signal":null,"core_dumped":false,"flags":["FORK","SU"],"btime":1794999999,"exit_time":1795000000.230000000,"elapsed_s":1.230000000,"utime_s":0.020000000,"stime_s":1.010000000,"mem_kb":123456,"minflt":7890,"majflt":12}
{"event":"fork","time":1795000000.000000001,"parent_pid":4200,"parent_tid":4201,"child_pid":4242,"child_tid":4242,"clone_flags":["CLONE_VM","CLONE_VFORK"],"clone_flags_raw":16657,"exit_signal":"SIGCHLD","kind":"vfork","comm":"bash"}
{"event":"fork","time":1795000000.000000001,"parent_pid":4242,"parent_tid":4243,"child_pid":4242,"child_tid":4242,"clone_flags":["CLONE_VM","CLONE_FS","CLONE_FILES","CLONE_SIGHAND","CLONE_THREAD","CLONE_SYSVSEM","CLONE_SETTLS","CLONE_PARENT_SETTID","CLONE_CHILD_CLEARTID"],"clone_flags_raw":4001536,"exit_signal":null,"kind":"thread","comm":"sh"}
{"event":"fork","time":1795000000.000000001,"parent_pid":1,"parent_tid":2,"child_pid":99,"child_tid":99,"clone_flags":["CLONE_NEWTIME","CLONE_NEWNS","CLONE_NEWUTS","CLONE_NEWIPC","CLONE_NEWUSER","CLONE_NEWPID","CLONE_NEWNET","CLONE_CLEAR_SIGHAND","CLONE_INTO_CGROUP"],"clone_flags_raw":14965407872,"exit_signal":"SIGRTMIN+8","kind":"process","comm":"unshare"}
{"event":"exec","time":1794999999.999999999,"pid":4242,"tid":4244,"filename":"/usr/bin/l\"sé","argv":["ls","-l","","/tmp"],"argv_truncated":true,"comm":"ls"}
{"event":"exec","time":1794999999.999999999,"pid":4242,"tid":4244,"filename":"/bin/echo","argv":["echo","hel"],"argv_truncated":true,"comm":"ls"}
{"event":"exec","time":1794999999.999999999,"pid":4242,"tid":4244,"filename":"","argv":[],"argv_truncated":false,"comm":"ls"}
{"event":"thread_exit","time":1795000000.000000000,"pid":4242,"tid":4245,"comm":"worker","exit_code":256,"cpu_runtime_s":0.000012345,"hiwater_rss_kb":null,"hiwater_vm_kb":null,"coremem":11,"virtmem":12,"read_char":1099511627776,"write_char":65536,"read_syscalls":1024,"write_syscalls":2048,"read_bytes":4096,"write_bytes":0,"nvcsw":5,"nivcsw":6,"cancelled_write_bytes":3072,"cpu_delay_ns":null,"blkio_delay_ns":null,"swapin_delay_ns":null,"freepages_delay_ns":null,"thrashing_delay_ns":null,"memory_compact_delay_ns":null,"irq_delay_ns":null}
"#;

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, b"a\"b\\c\x01\n\0junk");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\u0001\n""#);
    }

    #[test]
    fn strings_are_escaped_after_lossy_decoding() {
        let mut out = b"x".to_vec();
        write_str(&mut out, b"q\"b\\\r\x1f\x7f\xe9\0");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "x\"q\\\"b\\\\\\r\\u001f\\u007f\u{fffd}\""
        );
    }
}
