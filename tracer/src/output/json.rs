//! `--json`: one JSON object per line (NDJSON). The schema is in README.md.

use std::io::{self, Write};

#[cfg(test)]
use tracer_common::ExitRecord;
use tracer_common::{ExecRecord, ForkRecord, ThreadExitRecord};

use super::{flag_names, Secs, Sink, Target};
use crate::{
    event::{Clock, ExitView},
    exit_status::{signal_name, ExitStatus},
    lineage::{clone_flag_names, Kind},
};

pub struct JsonLines {
    target: Target,
    out: Box<dyn Write>,
}

impl JsonLines {
    pub fn new(target: Target, out: Box<dyn Write>) -> Self {
        Self { target, out }
    }
}

impl Sink for JsonLines {
    fn exit(&mut self, ev: &ExitView<'_>) -> io::Result<()> {
        write_exit(&mut self.out, ev)
    }

    fn fork(&mut self, rec: &ForkRecord, clock: &Clock) -> io::Result<()> {
        write_fork(&mut self.out, rec, clock)
    }

    fn exec(&mut self, rec: &ExecRecord, clock: &Clock) -> io::Result<()> {
        write_exec(&mut self.out, rec, clock)
    }

    fn thread_exit(&mut self, t: &ThreadExitRecord, clock: &Clock) -> io::Result<()> {
        write!(
            self.out,
            r#"{{"event":"thread_exit","time":{},"pid":{},"tid":{},"comm":"#,
            UnixTime(clock.realtime_ns(t.time_ns)),
            t.pid,
            t.tid
        )?;
        write_str(&mut self.out, &t.comm)?;
        writeln!(
            self.out,
            r#","exit_code":{},"cpu_runtime_s":{}}}"#,
            t.exit_code,
            Secs(t.runtime_ns)
        )
    }

    fn wants_lineage(&self) -> bool {
        true
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn name(&self) -> String {
        self.target.describe()
    }
}

/// Unix time with ns precision for a CLOCK_MONOTONIC stamp.
struct UnixTime(i128);

impl std::fmt::Display for UnixTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0.max(0);
        write!(f, "{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
    }
}

/// A signal as a JSON string: its name, or `"SIG<n>"` for one without.
fn write_signal(w: &mut dyn Write, sig: u8) -> io::Result<()> {
    match signal_name(sig) {
        Some(name) => write!(w, r#""{name}""#),
        None => write!(w, r#""SIG{sig}""#),
    }
}

fn write_flag_list(w: &mut dyn Write, flags: u64) -> io::Result<()> {
    w.write_all(b"[")?;
    for (i, name) in clone_flag_names(flags).enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(w, r#""{name}""#)?;
    }
    w.write_all(b"]")
}

pub fn write_fork(w: &mut dyn Write, f: &ForkRecord, clock: &Clock) -> io::Result<()> {
    let kind = Kind::of(f.clone_flags);
    write!(
        w,
        r#"{{"event":"fork","time":{},"parent_pid":{},"parent_tid":{},"child_pid":{},"child_tid":{},"clone_flags":"#,
        UnixTime(clock.realtime_ns(f.time_ns)),
        f.parent_pid,
        f.parent_tid,
        f.child_pid,
        f.child_tid,
    )?;
    write_flag_list(w, f.clone_flags)?;
    write!(w, r#","clone_flags_raw":{},"exit_signal":"#, f.clone_flags)?;
    match u8::try_from(f.exit_signal).ok().filter(|&s| s != 0) {
        Some(sig) => write_signal(w, sig)?,
        None => w.write_all(b"null")?,
    }
    write!(w, r#","kind":"{}","comm":"#, kind.name())?;
    write_str(w, &f.comm)?;
    w.write_all(b"}\n")
}

pub fn write_exec(w: &mut dyn Write, e: &ExecRecord, clock: &Clock) -> io::Result<()> {
    write!(
        w,
        r#"{{"event":"exec","time":{},"pid":{},"tid":{},"filename":"#,
        UnixTime(clock.realtime_ns(e.time_ns)),
        e.pid,
        e.tid
    )?;
    write_str(w, &e.filename)?;
    w.write_all(br#","argv":["#)?;
    let args = &e.args[..(e.args_len as usize).min(e.args.len())];
    let mut first = true;
    for arg in args.split(|&b| b == 0) {
        // The last piece after the final NUL is empty; a cut argument is kept.
        if arg.is_empty() && std::ptr::eq(arg.as_ptr(), args.as_ptr().wrapping_add(args.len())) {
            continue;
        }
        if !first {
            w.write_all(b",")?;
        }
        first = false;
        write_str(w, arg)?;
    }
    write!(
        w,
        r#"],"argv_truncated":{},"comm":"#,
        e.args_total > e.args_len
    )?;
    write_str(w, &e.comm)?;
    w.write_all(b"}\n")
}

pub fn write_exit(w: &mut dyn Write, ev: &ExitView<'_>) -> io::Result<()> {
    let a = &ev.acct;
    write!(
        w,
        r#"{{"event":"exit","pid":{},"ppid":{},"tid":"#,
        a.ac_pid, a.ac_ppid
    )?;
    match ev.raw {
        Some(r) => write!(w, "{}", r.tid)?,
        None => w.write_all(b"null")?,
    }
    w.write_all(br#","comm":"#)?;
    write_str(w, &a.ac_comm)?;
    write!(
        w,
        r#","uid":{},"gid":{},"tty":{},"exit_code":{}"#,
        a.ac_uid, a.ac_gid, a.ac_tty, a.ac_exitcode
    )?;
    match ev.status() {
        ExitStatus::Exited(code) => write!(
            w,
            r#","exit_status":{code},"signal":null,"core_dumped":false"#
        )?,
        ExitStatus::Signaled {
            signal,
            core_dumped,
        } => {
            w.write_all(br#","exit_status":null,"signal":"#)?;
            write_signal(w, signal)?;
            write!(w, r#","core_dumped":{core_dumped}"#)?;
        }
    }
    w.write_all(br#","flags":["#)?;
    for (i, name) in flag_names(a.ac_flag).enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(w, r#""{name}""#)?;
    }
    write!(
        w,
        r#"],"btime":{},"elapsed_s":{},"utime_s":{},"stime_s":{},"mem_kb":{},"minflt":{},"majflt":{}"#,
        a.ac_btime,
        Secs(ev.elapsed_ns()),
        Secs(ev.utime_ns()),
        Secs(ev.stime_ns()),
        ev.mem_kb(),
        ev.minflt(),
        ev.majflt(),
    )?;
    if let Some(r) = ev.raw {
        use tracer_common::present;
        w.write_all(br#","exit_signal":"#)?;
        match u8::try_from(r.exit_signal).ok().and_then(signal_name) {
            Some(name) => write!(w, r#""{name}""#)?,
            None => w.write_all(b"null")?,
        }
        write!(
            w,
            r#","start_ns":{},"cgroup_id":{}"#,
            r.start_ns, r.cgroup_id
        )?;
        if let Some(kb) = ev.maxrss_kb() {
            write!(w, r#","maxrss_kb":{kb}"#)?;
        }
        if r.present & present::IO_CHARS != 0 {
            write!(w, r#","rchar":{},"wchar":{}"#, r.rchar, r.wchar)?;
        }
        if r.present & present::IO_BYTES != 0 {
            write!(
                w,
                r#","read_bytes":{},"write_bytes":{}"#,
                r.read_bytes, r.write_bytes
            )?;
        }
        if r.present & present::RUNTIME != 0 {
            write!(w, r#","cpu_runtime_s":{}"#, Secs(r.runtime_ns))?;
        }
        if r.present & present::CSW != 0 {
            write!(w, r#","nvcsw":{},"nivcsw":{}"#, r.nvcsw, r.nivcsw)?;
        }
    }
    if let Some(table) = ev.lineage {
        let (creator, flags) = table.creation(a.ac_pid).unwrap_or((None, None));
        w.write_all(br#","created_by":"#)?;
        match creator {
            Some(pid) => write!(w, "{pid}")?,
            None => w.write_all(b"null")?,
        }
        match flags {
            Some(flags) => {
                write!(w, r#","kind":"{}","clone_flags":"#, Kind::of(flags).name())?;
                write_flag_list(w, flags)?;
            }
            None => w.write_all(br#","kind":null,"clone_flags":null"#)?,
        }
        w.write_all(br#","ancestry":["#)?;
        for (i, (pid, comm)) in table.ancestors(a.ac_pid).enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            write!(w, r#"{{"pid":{pid},"comm":"#)?;
            write_str(w, comm)?;
            w.write_all(b"}")?;
        }
        w.write_all(b"]")?;
    }
    w.write_all(b"}\n")
}

/// A JSON string from NUL-padded bytes, lossily decoded; escapes quotes,
/// backslashes and control characters (a comm can hold any of them).
pub fn write_str(w: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let s = String::from_utf8_lossy(&bytes[..end]);
    w.write_all(b"\"")?;
    for c in s.chars() {
        match c {
            '"' => w.write_all(b"\\\"")?,
            '\\' => w.write_all(b"\\\\")?,
            '\n' => w.write_all(b"\\n")?,
            '\t' => w.write_all(b"\\t")?,
            '\r' => w.write_all(b"\\r")?,
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(w, "\\u{:04x}", c as u32)?,
            c => write!(w, "{c}")?,
        }
    }
    w.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixtures::*;

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
        let with_lineage = |rec| {
            let mut view = ExitView::from_record(rec, &clock);
            view.lineage = Some(&table);
            view
        };
        json.exit(&with_lineage(&full)).unwrap();
        // Not in the table: no creator, no ancestry.
        json.exit(&with_lineage(&bare)).unwrap();
        json.exit(&ExitView::from_record(&rt_signal, &clock))
            .unwrap();
        // From an acct file (`dump`): acct's resolution, no extras.
        json.exit(&ExitView::from_acct(
            ExitView::from_record(&full, &clock).acct,
        ))
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
    const GOLDEN: &str = r#"{"event":"exit","pid":4242,"ppid":4200,"tid":4243,"comm":"sh","uid":0,"gid":100,"tty":34819,"exit_code":768,"exit_status":3,"signal":null,"core_dumped":false,"flags":["FORK","SU"],"btime":1794999999,"elapsed_s":1.234567890,"utime_s":0.020000000,"stime_s":1.010000000,"mem_kb":123456,"minflt":7890,"majflt":12,"exit_signal":"SIGCHLD","start_ns":998765432110,"cgroup_id":18446744073709551615,"maxrss_kb":4000,"rchar":1099511627776,"wchar":65536,"read_bytes":4096,"write_bytes":0,"cpu_runtime_s":1.029999999,"nvcsw":5,"nivcsw":6,"created_by":4200,"kind":"vfork","clone_flags":["CLONE_VM","CLONE_VFORK"],"ancestry":[{"pid":4200,"comm":"bash"},{"pid":1,"comm":"swapper/0"}]}
{"event":"exit","pid":7,"ppid":0,"tid":7,"comm":"a\\\"\t\u007f�é \u0001zzzzz","uid":65534,"gid":65534,"tty":0,"exit_code":139,"exit_status":null,"signal":"SIGSEGV","core_dumped":true,"flags":["CORE","XSIG"],"btime":1795000999,"elapsed_s":0.000000000,"utime_s":0.000000000,"stime_s":0.000000000,"mem_kb":0,"minflt":0,"majflt":0,"exit_signal":null,"start_ns":2000000000000,"cgroup_id":18446744073709551615,"created_by":null,"kind":null,"clone_flags":null,"ancestry":[]}
{"event":"exit","pid":7,"ppid":0,"tid":7,"comm":"a\\\"\t\u007f�é \u0001zzzzz","uid":65534,"gid":65534,"tty":0,"exit_code":40,"exit_status":null,"signal":"SIG40","core_dumped":false,"flags":["CORE","XSIG"],"btime":1795000999,"elapsed_s":0.000000000,"utime_s":0.000000000,"stime_s":0.000000000,"mem_kb":0,"minflt":0,"majflt":0,"exit_signal":null,"start_ns":2000000000000,"cgroup_id":18446744073709551615}
{"event":"exit","pid":4242,"ppid":4200,"tid":null,"comm":"sh","uid":0,"gid":100,"tty":34819,"exit_code":768,"exit_status":3,"signal":null,"core_dumped":false,"flags":["FORK","SU"],"btime":1794999999,"elapsed_s":1.230000000,"utime_s":0.020000000,"stime_s":1.010000000,"mem_kb":123456,"minflt":7890,"majflt":12}
{"event":"fork","time":1795000000.000000001,"parent_pid":4200,"parent_tid":4201,"child_pid":4242,"child_tid":4242,"clone_flags":["CLONE_VM","CLONE_VFORK"],"clone_flags_raw":16657,"exit_signal":"SIGCHLD","kind":"vfork","comm":"bash"}
{"event":"fork","time":1795000000.000000001,"parent_pid":4242,"parent_tid":4243,"child_pid":4242,"child_tid":4242,"clone_flags":["CLONE_VM","CLONE_FS","CLONE_FILES","CLONE_SIGHAND","CLONE_THREAD","CLONE_SYSVSEM","CLONE_SETTLS","CLONE_PARENT_SETTID","CLONE_CHILD_CLEARTID"],"clone_flags_raw":4001536,"exit_signal":null,"kind":"thread","comm":"sh"}
{"event":"fork","time":1795000000.000000001,"parent_pid":1,"parent_tid":2,"child_pid":99,"child_tid":99,"clone_flags":["CLONE_NEWTIME","CLONE_NEWNS","CLONE_NEWUTS","CLONE_NEWIPC","CLONE_NEWUSER","CLONE_NEWPID","CLONE_NEWNET","CLONE_CLEAR_SIGHAND","CLONE_INTO_CGROUP"],"clone_flags_raw":14965407872,"exit_signal":"SIG40","kind":"process","comm":"unshare"}
{"event":"exec","time":1794999999.999999999,"pid":4242,"tid":4244,"filename":"/usr/bin/l\"sé","argv":["ls","-l","","/tmp"],"argv_truncated":true,"comm":"ls"}
{"event":"exec","time":1794999999.999999999,"pid":4242,"tid":4244,"filename":"/bin/echo","argv":["echo","hel"],"argv_truncated":true,"comm":"ls"}
{"event":"exec","time":1794999999.999999999,"pid":4242,"tid":4244,"filename":"","argv":[],"argv_truncated":false,"comm":"ls"}
{"event":"thread_exit","time":1795000000.000000000,"pid":4242,"tid":4245,"comm":"worker","exit_code":256,"cpu_runtime_s":0.000012345}
"#;

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, b"a\"b\\c\x01\n\0junk").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\u0001\n""#);
    }
}
