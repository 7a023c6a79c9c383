//! The default output: one aligned line per exit, for people.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use super::{flag_names, Secs, Sink, Target};
use crate::event::ExitView;

pub struct Table {
    target: Target,
    out: Box<dyn Write>,
    users: HashMap<u32, String>,
    header_done: bool,
}

impl Table {
    pub fn new(target: Target, out: Box<dyn Write>) -> Self {
        Self {
            target,
            out,
            users: read_passwd(),
            header_done: false,
        }
    }
}

impl Sink for Table {
    fn exit(&mut self, ev: &ExitView<'_>) -> io::Result<()> {
        if !self.header_done {
            writeln!(
                self.out,
                "{:<8} {:<16} {:>7} {:>7} {:<8} {:<22} {:<12} {:>8} {:>9}",
                "START", "COMMAND", "PID", "PPID", "USER", "STATUS", "FLAGS", "CPU", "ELAPSED"
            )?;
            self.header_done = true;
        }
        write_line(&mut self.out, ev, &self.users)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn name(&self) -> String {
        self.target.describe()
    }
}

fn write_line(
    w: &mut dyn Write,
    ev: &ExitView<'_>,
    users: &HashMap<u32, String>,
) -> io::Result<()> {
    let a = &ev.acct;
    let comm = a.comm();
    let mut flags = String::new();
    for (i, f) in flag_names(a.ac_flag).enumerate() {
        if i > 0 {
            flags.push(',');
        }
        flags.push_str(f);
    }
    if flags.is_empty() {
        flags.push('-');
    }
    let user = users
        .get(&a.ac_uid)
        .cloned()
        .unwrap_or_else(|| a.ac_uid.to_string());
    writeln!(
        w,
        "{:<8} {:<16} {:>7} {:>7} {:<8} {:<22} {:<12} {:>8.2} {:>9.2}",
        local_hms(i64::from(a.ac_btime)),
        comm,
        a.ac_pid,
        a.ac_ppid,
        user,
        ev.status().to_string(),
        flags,
        Secs(ev.cpu_ns()),
        Secs(ev.elapsed_ns()),
    )
}

/// uid -> name from /etc/passwd, read once: a lookup per record would cost a
/// file read (or an NSS round trip) per exit.
fn read_passwd() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

fn local_hms(epoch_s: i64) -> String {
    // SAFETY: localtime_r writes only into the tm we own.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = epoch_s;
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}
