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

#[cfg(test)]
mod tests {
    use tracer_common::ExitRecord;

    use super::*;
    use crate::output::fixtures::*;

    #[test]
    fn golden_lines() {
        let clock = clock();
        let full = exit_full();
        let bare = exit_bare();
        let long = ExitRecord {
            pid: u32::MAX,
            ppid: 1_234_567_890,
            uid: 100,
            exit_code: 0x80 | 35,
            runtime_ns: 123_456_789_999_999,
            start_ns: 0,
            exit_ns: 999_999_999_999_999,
            comm: comm(b"fifteen-chars-x"),
            ..full
        };
        let exited_255 = ExitRecord {
            exit_code: 0xff00,
            present: 0,
            ac_flag: 0,
            uid: 1000,
            ..full
        };
        let buf = Shared::default();
        let mut table = Table::new(Target::Stdout, Box::new(buf.clone()));
        table.users = [(0, "root"), (100, "averyverylongname"), (1000, "ünï")]
            .into_iter()
            .map(|(uid, name)| (uid, name.to_owned()))
            .collect();
        for rec in [&full, &bare, &long, &exited_255] {
            table.exit(&ExitView::from_record(rec, &clock)).unwrap();
        }
        table
            .exit(&ExitView::from_acct(
                ExitView::from_record(&full, &clock).acct,
            ))
            .unwrap();
        table.flush().unwrap();
        let got = buf.text();
        // The start column is local time: fill it in as the test's time zone has it.
        let expected = GOLDEN
            .replace("T1794999999", &local_hms(1_794_999_999))
            .replace("T1795000999", &local_hms(1_795_000_999))
            .replace("T1794999000", &local_hms(1_794_999_000));
        assert_eq!(got, expected);
    }

    /// What the table looked like when this test was added, with `T<unix
    /// time>` for the local-time start column.
    const GOLDEN: &str = concat!(
        "START    COMMAND              PID    PPID USER     STATUS                 FLAGS             CPU   ELAPSED\n",
        "T1794999999 sh                  4242    4200 root     exit 3                 FORK,SU          1.02      1.23\n",
        "T1795000999 a\\\"\t\u{7f}�é \u{1}zzzzz         7       0 65534    SIGSEGV (core dumped)  CORE,XSIG        0.00      0.00\n",
        "T1794999000 fifteen-chars-x  4294967295 1234567890 averyverylongname SIGRTMIN+3 (core dumped) FORK,SU      123456.78 999999.99\n",
        "T1794999999 sh                  4242    4200 ünï      exit 255               -                1.03      1.23\n",
        "T1794999999 sh                  4242    4200 root     exit 3                 FORK,SU          1.03      1.23\n",
    );
}
