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
    /// END carries the date when it is not today (`dump` of older files):
    /// a wider column.
    dated: bool,
    /// Today's local date, for `dated`.
    today: [u8; 10],
    /// An ARGS column with the command line (`--wide`).
    wide: bool,
    /// A CONTAINER column (short ids): live sessions, not acct files.
    containers: bool,
}

impl Table {
    pub fn new(target: Target, out: Box<dyn Write>) -> Self {
        Self {
            target,
            out: Batched::new(out),
            users: read_passwd(),
            header_done: false,
            last_hms: None,
            dated: false,
            today: local_time(now_s()).0,
            wide: false,
            containers: false,
        }
    }

    /// A table with the short id of each exit's container (`-` for none).
    pub fn containers(mut self) -> Self {
        self.containers = true;
        self
    }

    /// A table with the command line of each exit in a last column.
    pub fn wide(mut self) -> Self {
        self.wide = true;
        self
    }

    /// A table whose END column gives the date of exits not from today.
    pub fn dated(mut self) -> Self {
        self.dated = true;
        self
    }

    fn end_width(&self) -> usize {
        if self.dated {
            19
        } else {
            8
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
        let (date, end_hms) = local_time((ev.exit_time_ns / 1_000_000_000) as i64);
        let show_date = self.dated && date != self.today;
        let end_width = self.end_width();
        let wide = self.wide;
        let containers = self.containers;
        let users = &self.users;
        self.out.line(|w| {
            w.extend_from_slice(&hms);
            w.push(b' ');
            column(w, end_width, pad_right, |w| {
                if show_date {
                    w.extend_from_slice(&date);
                    w.push(b' ');
                }
                w.extend_from_slice(&end_hms);
            });
            column(w, 16, pad_right, |w| push_escaped(w, ev.comm_bytes()));
            column(w, 7, pad_left, |w| push_int(w, ev.pid));
            column(w, 7, pad_left, |w| push_int(w, ev.ppid));
            column(w, 8, pad_right, |w| match users.get(&ev.uid) {
                Some(name) => push_escaped(w, name.as_bytes()),
                None => push_int(w, ev.uid),
            });
            column(w, 22, pad_right, |w| {
                // Into a Vec: no allocation, and ExitStatus keeps its wording.
                let _ = write!(w, "{}", ev.described());
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
            column(w, 9, pad_left, |w| push_secs(w, ev.elapsed_ns, 2));
            column(w, 7, pad_left, |w| match ev.peak_rss_kb() {
                Some(kb) => push_size(w, kb * 1024),
                None => w.push(b'-'),
            });
            let start = w.len();
            match ev.storage_io_bytes() {
                Some(bytes) => push_size(w, bytes),
                None => w.push(b'-'),
            }
            pad_left(w, start, 7);
            if containers {
                w.push(b' ');
                let start = w.len();
                w.extend_from_slice(ev.short_container_id().unwrap_or("-").as_bytes());
                if wide {
                    pad_right(w, start, 12);
                }
            }
            if wide {
                w.push(b' ');
                match ev.lineage.and_then(|l| l.exec(ev.pid)) {
                    Some(exec) => {
                        for (i, arg) in exec.args().enumerate() {
                            if i > 0 {
                                w.push(b' ');
                            }
                            push_escaped(w, arg);
                        }
                        if exec.argv_truncated {
                            w.extend_from_slice(" …".as_bytes());
                        }
                    }
                    None => w.push(b'-'),
                }
            }
            w.push(b'\n');
        })
    }
}

/// A byte count for people, into the line.
fn push_size(w: &mut Vec<u8>, bytes: u64) {
    let _ = write!(w, "{}", super::Size(bytes));
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
            let end_width = self.end_width();
            let wide = self.wide;
            let containers = self.containers;
            self.out.line(|w| {
                let _ = writeln!(
                    w,
                    "{:<8} {:<end_width$} {:<16} {:>7} {:>7} {:<8} {:<22} {:<12} {:>8} {:>9} {:>7} {:>7} {:<12}",
                    "START",
                    "END",
                    "COMMAND",
                    "PID",
                    "PPID",
                    "USER",
                    "STATUS",
                    "FLAGS",
                    "CPU",
                    "ELAPSED",
                    "MAXRSS",
                    "IO",
                    if containers { "CONTAINER" } else { "" }
                );
                w.pop();
                while w.last() == Some(&b' ') {
                    w.pop();
                }
                if wide {
                    w.extend_from_slice(b" ARGS");
                }
                w.push(b'\n');
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
    local_time(epoch_s).1
}

/// `YYYY-MM-DD` and `HH:MM:SS` in local time.
fn local_time(epoch_s: i64) -> ([u8; 10], [u8; 8]) {
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
    let year = (1900 + tm.tm_year).clamp(0, 9999);
    let [y1, y2] = [year / 100, year % 100].map(two);
    let [mo, d] = [tm.tm_mon + 1, tm.tm_mday].map(two);
    (
        [
            y1[0], y1[1], y2[0], y2[1], b'-', mo[0], mo[1], b'-', d[0], d[1],
        ],
        [h[0], h[1], b':', m[0], m[1], b':', s[0], s[1]],
    )
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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
            .replace("E1795000000", &hms(1_795_000_000))
            .replace("E1795000999", &hms(1_795_000_999))
            .replace("E1795998999", &hms(1_795_998_999))
            .replace("T1794999999", &hms(1_794_999_999))
            .replace("T1795000999", &hms(1_795_000_999))
            .replace("T1794999000", &hms(1_794_999_000));
        assert_eq!(got, expected);
    }

    #[test]
    fn wide_shows_the_command_line_and_dated_the_day() {
        let clock = clock();
        let table_of = |t: Table, lineage| {
            let buf = Shared::default();
            let mut t = Table {
                out: Batched::new(Box::new(buf.clone())),
                ..t
            };
            t.exit(&Exit::from_record(&exit_full(), &clock).with_lineage(lineage))
                .unwrap();
            t.flush().unwrap();
            buf.text()
        };
        let lineage = lineage();
        let wide = table_of(
            Table::new(Target::Stdout, Box::new(io::sink())).wide(),
            Some(&lineage),
        );
        let mut lines = wide.lines();
        assert!(lines
            .next()
            .unwrap()
            .ends_with(" ELAPSED  MAXRSS      IO ARGS"));
        assert!(
            lines
                .next()
                .unwrap()
                .ends_with(" 1.23    3.9M    4.0K sh -c exit 3"),
            "{wide}"
        );
        let unknown = table_of(
            Table::new(Target::Stdout, Box::new(io::sink())).wide(),
            None,
        );
        assert!(
            unknown.lines().nth(1).unwrap().ends_with(" 4.0K -"),
            "{unknown}"
        );

        // An exit from another day (the fixtures are in 2026-11) shows its
        // date, in a column as wide for every line.
        let dated = table_of(
            Table::new(Target::Stdout, Box::new(io::sink())).dated(),
            None,
        );
        let (date, hms) = local_time(1_795_000_000);
        let end = format!(
            "{} {}",
            String::from_utf8_lossy(&date),
            String::from_utf8_lossy(&hms)
        );
        let line = dated.lines().nth(1).unwrap();
        assert_eq!(&line[9..9 + 19], end, "{dated}");
        assert!(
            dated.starts_with("START    END                 COMMAND"),
            "{dated}"
        );
    }

    /// What the table looked like when this test was added, with `T<unix
    /// time>` and `E<unix time>` for the local-time start and end columns.
    const GOLDEN: &str = concat!(
        "START    END      COMMAND              PID    PPID USER     STATUS                 FLAGS             CPU   ELAPSED  MAXRSS      IO\n",
        "T1794999999 E1795000000 sh                  4242    4200 root     exit 3                 FORK,SU          1.02      1.23    3.9M    4.0K\n",
        // Control characters and invalid UTF-8 escaped (issue 11): the
        // column overflows rather than the line breaking.
        r#"T1795000999 E1795000999 a\"\t\x7f\xffé \x01zzzzz       7       0 65534    SIGSEGV (core dumped)  CORE,XSIG        0.00      0.00       -       -"#,
        "\n",
        "T1794999000 E1795998999 fifteen-chars-x  4294967295 1234567890 averyverylongname SIGRTMIN+3 (core dumped) FORK,SU      123456.78 999999.99    3.9M    4.0K\n",
        "T1794999999 E1795000000 sh                  4242    4200 ünï      exit 255               -                1.03      1.23       -       -\n",
        "T1794999999 E1795000000 sh                  4242    4200 root     exit 3                 FORK,SU          1.03      1.23       -       -\n",
    );
}
