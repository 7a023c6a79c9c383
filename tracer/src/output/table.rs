//! The default output: one aligned line per exit, for people.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use super::{
    flag_names,
    text::{pad_left, pad_right, push_escaped, push_int, push_secs},
    Batched, Output, Target,
};
use crate::model::Exit;

pub struct Table {
    target: Target,
    out: Batched,
    users: HashMap<u32, String>,
    header_done: bool,
    /// The last start time rendered, and its text: consecutive exits often
    /// started in the same second.
    last_hms: Option<(i64, [u8; 8])>,
}

impl Table {
    pub fn new(target: Target, out: Box<dyn Write>) -> Self {
        Self {
            target,
            out: Batched::new(out),
            users: read_passwd(),
            header_done: false,
            last_hms: None,
        }
    }

    fn write_line(&mut self, ev: &Exit<'_>) -> io::Result<()> {
        let btime = i64::from(ev.btime);
        let hms = match self.last_hms {
            Some((t, text)) if t == btime => text,
            _ => {
                let text = local_hms(btime);
                self.last_hms = Some((btime, text));
                text
            }
        };
        let users = &self.users;
        self.out.line(|w| {
            w.extend_from_slice(&hms);
            w.push(b' ');
            column(w, 16, pad_right, |w| push_escaped(w, ev.comm_bytes()));
            column(w, 7, pad_left, |w| push_int(w, ev.pid));
            column(w, 7, pad_left, |w| push_int(w, ev.ppid));
            column(w, 8, pad_right, |w| match users.get(&ev.uid) {
                Some(name) => push_escaped(w, name.as_bytes()),
                None => push_int(w, ev.uid),
            });
            column(w, 22, pad_right, |w| {
                // Into a Vec: no allocation, and ExitStatus keeps its wording.
                let _ = write!(w, "{}", ev.status());
            });
            column(w, 12, pad_right, |w| {
                let mut any = false;
                for (i, f) in flag_names(ev.flags).enumerate() {
                    if i > 0 {
                        w.push(b',');
                    }
                    w.extend_from_slice(f.as_bytes());
                    any = true;
                }
                if !any {
                    w.push(b'-');
                }
            });
            column(w, 8, pad_left, |w| push_secs(w, ev.cpu_ns(), 2));
            let start = w.len();
            push_secs(w, ev.elapsed_ns, 2);
            pad_left(w, start, 9);
            w.push(b'\n');
        })
    }
}

/// One column: its text, padded to `width` by `pad`, and the separator.
fn column(
    w: &mut Vec<u8>,
    width: usize,
    pad: fn(&mut Vec<u8>, usize, usize),
    text: impl FnOnce(&mut Vec<u8>),
) {
    let start = w.len();
    text(w);
    pad(w, start, width);
    w.push(b' ');
}

impl Output for Table {
    fn exit(&mut self, ev: &Exit<'_>) -> io::Result<()> {
        if !self.header_done {
            self.out.line(|w| {
                let _ = writeln!(
                    w,
                    "{:<8} {:<16} {:>7} {:>7} {:<8} {:<22} {:<12} {:>8} {:>9}",
                    "START", "COMMAND", "PID", "PPID", "USER", "STATUS", "FLAGS", "CPU", "ELAPSED"
                );
            })?;
            self.header_done = true;
        }
        self.write_line(ev)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn lost(&self) -> u64 {
        self.out.lost()
    }

    fn name(&self) -> String {
        self.target.describe()
    }
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

/// `HH:MM:SS` in local time.
fn local_hms(epoch_s: i64) -> [u8; 8] {
    // SAFETY: localtime_r writes only into the tm we own.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = epoch_s;
        libc::localtime_r(&t, &mut tm);
        tm
    };
    let two = |v: libc::c_int| {
        let v = v.clamp(0, 99) as u8;
        [b'0' + v / 10, b'0' + v % 10]
    };
    let [h, m, s] = [tm.tm_hour, tm.tm_min, tm.tm_sec].map(two);
    [h[0], h[1], b':', m[0], m[1], b':', s[0], s[1]]
}

#[cfg(test)]
mod tests {
    use tracer_common::ExitRecord;

    use super::*;
    use crate::{acct::AcctV3, output::fixtures::*};

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
            table.exit(&Exit::from_record(rec, &clock)).unwrap();
        }
        table
            .exit(&AcctV3::from_model(&Exit::from_record(&full, &clock)).to_exit())
            .unwrap();
        table.flush().unwrap();
        let got = buf.text();
        // The start column is local time: fill it in as the test's time zone has it.
        let hms = |t| String::from_utf8(local_hms(t).to_vec()).unwrap();
        let expected = GOLDEN
            .replace("T1794999999", &hms(1_794_999_999))
            .replace("T1795000999", &hms(1_795_000_999))
            .replace("T1794999000", &hms(1_794_999_000));
        assert_eq!(got, expected);
    }

    /// What the table looked like when this test was added, with `T<unix
    /// time>` for the local-time start column.
    const GOLDEN: &str = concat!(
        "START    COMMAND              PID    PPID USER     STATUS                 FLAGS             CPU   ELAPSED\n",
        "T1794999999 sh                  4242    4200 root     exit 3                 FORK,SU          1.02      1.23\n",
        // Control characters and invalid UTF-8 escaped (issue 11): the
        // column overflows rather than the line breaking.
        r#"T1795000999 a\"\t\x7f\xffé \x01zzzzz       7       0 65534    SIGSEGV (core dumped)  CORE,XSIG        0.00      0.00"#,
        "\n",
        "T1794999000 fifteen-chars-x  4294967295 1234567890 averyverylongname SIGRTMIN+3 (core dumped) FORK,SU      123456.78 999999.99\n",
        "T1794999999 sh                  4242    4200 ünï      exit 255               -                1.03      1.23\n",
        "T1794999999 sh                  4242    4200 root     exit 3                 FORK,SU          1.03      1.23\n",
    );
}
