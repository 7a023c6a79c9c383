//! `--json`: one JSON object per line (NDJSON). The schema is in README.md.

use std::io::{self, Write};

use super::{flag_names, Secs, Sink, Target};
use crate::{
    event::ExitView,
    exit_status::{signal_name, ExitStatus},
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

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn name(&self) -> String {
        self.target.describe()
    }
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
            match signal_name(signal) {
                Some(name) => write!(w, r#""{name}""#)?,
                None => write!(w, r#""SIG{signal}""#)?,
            }
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

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, b"a\"b\\c\x01\n\0junk").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\u0001\n""#);
    }
}
