//! How a process ended, from the code the kernel passes to `do_exit()` and
//! stores in `ac_exitcode`: `(status & 0xff) << 8` for `exit(status)`, or
//! the signal number with 0x80 added when a core was dumped.

use std::fmt;

/// Lowest real-time signal as the kernel numbers them. glibc reserves 32
/// and 33 for itself and reports SIGRTMIN as 34, but the record holds the
/// kernel's number, so the kernel convention is the one that means anything.
pub const SIGRTMIN: u8 = 32;
/// Highest signal the kernel can deliver (`_NSIG`).
pub const SIGRTMAX: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Called `exit()` (or returned from `main`) with this status.
    Exited(u8),
    /// Killed by a signal.
    Signaled { signal: u8, core_dumped: bool },
}

impl ExitStatus {
    pub fn from_code(code: u32) -> Self {
        let signal = (code & 0x7f) as u8;
        if signal != 0 {
            Self::Signaled {
                signal,
                core_dumped: code & 0x80 != 0,
            }
        } else {
            Self::Exited(((code >> 8) & 0xff) as u8)
        }
    }

    /// What `$?` would show in a shell: the status, or 128 + the signal.
    pub fn shell_status(&self) -> i32 {
        match *self {
            Self::Exited(status) => i32::from(status),
            Self::Signaled { signal, .. } => 128 + i32::from(signal),
        }
    }

    /// True for `exit 0`.
    pub fn success(&self) -> bool {
        *self == Self::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(status) => write!(f, "exit {status}"),
            Self::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "{}", SignalDisplay(signal))?;
                if core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// How a process ended and, when known, why, for people:
/// `SIGKILL by sh[4242]`, `SIGKILL (OOM, /system.slice/x.service)`,
/// `SIGSEGV (core dumped)`, `exit 3`. Names are shown escaped.
#[derive(Clone, Copy, Debug)]
pub struct Described<'a> {
    pub status: ExitStatus,
    /// The process that ended: a signal it sent itself names nobody.
    pub pid: u32,
    /// The sender of the fatal signal: pid and comm.
    pub killer: Option<(u32, &'a [u8])>,
    /// The memory cgroup whose OOM killed it.
    pub oom_cgroup: Option<&'a str>,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ExitStatus::Signaled {
            signal,
            core_dumped,
        } = self.status
        else {
            return self.status.fmt(f);
        };
        write!(f, "{}", SignalDisplay(signal))?;
        if let Some(cgroup) = self.oom_cgroup {
            write!(
                f,
                " (OOM, {})",
                crate::output::text::escaped(cgroup.as_bytes())
            )?;
        } else if let Some((pid, comm)) = self.killer.filter(|&(pid, _)| pid != self.pid) {
            write!(f, " by {}[{pid}]", crate::output::text::escaped(comm))?;
        }
        if core_dumped {
            f.write_str(" (core dumped)")?;
        }
        Ok(())
    }
}

/// Formats a signal number as its one name ([`signal_label`]), or
/// `signal n` for a number no signal has.
struct SignalDisplay(u8);

impl fmt::Display for SignalDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match signal_label(self.0) {
            Some(label) => write!(f, "{label}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// A signal's name, the same in every output: `SIGKILL`..., and the
/// real-time ones as `SIGRTMIN+n` counted from the kernel's SIGRTMIN (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalLabel {
    Standard(&'static str),
    RealTime(u8),
}

impl fmt::Display for SignalLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standard(name) => f.write_str(name),
            Self::RealTime(n) => write!(f, "SIGRTMIN+{n}"),
        }
    }
}

/// The name of signal `n`, or `None` for a number no signal has (0, >64).
pub fn signal_label(n: u8) -> Option<SignalLabel> {
    match signal_name(n) {
        Some(name) => Some(SignalLabel::Standard(name)),
        None if (SIGRTMIN..=SIGRTMAX).contains(&n) => Some(SignalLabel::RealTime(n - SIGRTMIN)),
        None => None,
    }
}

/// Names of the standard signals as numbered on Linux x86_64 (and the other
/// architectures using the generic numbering). For aliases (SIGIOT,
/// SIGPOLL) the more common name is given.
pub fn signal_name(n: u8) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(usize::from(n).checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_number_has_one_name() {
        use crate::output::push_signal;
        for n in 0..=u8::MAX {
            let table = ExitStatus::Signaled {
                signal: n,
                core_dumped: false,
            }
            .to_string();
            let mut json = Vec::new();
            push_signal(&mut json, n);
            let json = String::from_utf8(json).unwrap();
            match signal_label(n) {
                Some(label) => {
                    assert!((1..=64).contains(&n), "{n}");
                    assert_eq!(table, label.to_string(), "{n}");
                    assert_eq!(json, format!("\"{label}\""), "{n}");
                }
                None => {
                    assert!(n == 0 || n > 64, "{n}");
                    assert_eq!(table, format!("signal {n}"));
                    assert_eq!(json, "null", "{n}");
                }
            }
        }
        assert_eq!(signal_label(40).unwrap().to_string(), "SIGRTMIN+8");
        assert_eq!(signal_label(9).unwrap().to_string(), "SIGKILL");
    }

    #[test]
    fn decode_vectors() {
        assert_eq!(ExitStatus::from_code(0), ExitStatus::Exited(0));
        assert_eq!(ExitStatus::from_code(0x300), ExitStatus::Exited(3));
        assert_eq!(ExitStatus::from_code(0xff00), ExitStatus::Exited(255));
        // Bits above the status byte are not part of it.
        assert_eq!(ExitStatus::from_code(0x1_0100), ExitStatus::Exited(1));
        assert_eq!(
            ExitStatus::from_code(9),
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_code(0x8b),
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
        // The core bit alone, with no signal, is still a normal exit.
        assert_eq!(ExitStatus::from_code(0x80), ExitStatus::Exited(0));
    }

    #[test]
    fn display_vectors() {
        let show = |c| ExitStatus::from_code(c).to_string();
        assert_eq!(show(0x300), "exit 3");
        assert_eq!(show(0), "exit 0");
        assert_eq!(show(9), "SIGKILL");
        assert_eq!(show(0x8b), "SIGSEGV (core dumped)");
        assert_eq!(show(0x86), "SIGABRT (core dumped)");
        assert_eq!(show(15), "SIGTERM");
        assert_eq!(show(31), "SIGSYS");
        assert_eq!(show(32), "SIGRTMIN+0");
        assert_eq!(show(42), "SIGRTMIN+10");
        assert_eq!(show(64), "SIGRTMIN+32");
        assert_eq!(show(65), "signal 65");
        assert_eq!(show(0x7f | 0x80), "signal 127 (core dumped)");
    }

    #[test]
    fn shell_status_vectors() {
        assert_eq!(ExitStatus::from_code(0).shell_status(), 0);
        assert_eq!(ExitStatus::from_code(0x300).shell_status(), 3);
        assert_eq!(ExitStatus::from_code(0xff00).shell_status(), 255);
        assert_eq!(ExitStatus::from_code(9).shell_status(), 137);
        assert_eq!(ExitStatus::from_code(0x8b).shell_status(), 139);
        assert!(ExitStatus::from_code(0).success());
        assert!(!ExitStatus::from_code(0x100).success());
        assert!(!ExitStatus::from_code(9).success());
    }

    #[test]
    fn every_code_decodes_consistently() {
        for code in 0..=0xffffu32 {
            let s = ExitStatus::from_code(code);
            match s {
                ExitStatus::Exited(n) => {
                    assert_eq!(code & 0x7f, 0);
                    assert_eq!(u32::from(n), code >> 8);
                    assert!((0..=255).contains(&s.shell_status()));
                }
                ExitStatus::Signaled {
                    signal,
                    core_dumped,
                } => {
                    assert_eq!(u32::from(signal), code & 0x7f);
                    assert_eq!(core_dumped, code & 0x80 != 0);
                    assert!(s.shell_status() > 128);
                }
            }
            assert!(!s.to_string().is_empty());
        }
    }

    #[test]
    fn signal_names() {
        let want = [
            (1, "SIGHUP"),
            (2, "SIGINT"),
            (3, "SIGQUIT"),
            (4, "SIGILL"),
            (5, "SIGTRAP"),
            (6, "SIGABRT"),
            (7, "SIGBUS"),
            (8, "SIGFPE"),
            (9, "SIGKILL"),
            (10, "SIGUSR1"),
            (11, "SIGSEGV"),
            (12, "SIGUSR2"),
            (13, "SIGPIPE"),
            (14, "SIGALRM"),
            (15, "SIGTERM"),
            (16, "SIGSTKFLT"),
            (17, "SIGCHLD"),
            (18, "SIGCONT"),
            (19, "SIGSTOP"),
            (20, "SIGTSTP"),
            (21, "SIGTTIN"),
            (22, "SIGTTOU"),
            (23, "SIGURG"),
            (24, "SIGXCPU"),
            (25, "SIGXFSZ"),
            (26, "SIGVTALRM"),
            (27, "SIGPROF"),
            (28, "SIGWINCH"),
            (29, "SIGIO"),
            (30, "SIGPWR"),
            (31, "SIGSYS"),
        ];
        for (n, name) in want {
            assert_eq!(signal_name(n), Some(name), "{n}");
        }
        assert_eq!(signal_name(0), None);
        for n in 32..=u8::MAX {
            assert_eq!(signal_name(n), None, "{n}");
        }
    }

    #[test]
    fn names_match_libc() {
        // Cross-check against the C library's numbering on this target.
        let pairs = [
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGBUS, "SIGBUS"),
            (libc::SIGUSR1, "SIGUSR1"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGUSR2, "SIGUSR2"),
            (libc::SIGSTKFLT, "SIGSTKFLT"),
            (libc::SIGCHLD, "SIGCHLD"),
            (libc::SIGCONT, "SIGCONT"),
            (libc::SIGSTOP, "SIGSTOP"),
            (libc::SIGIO, "SIGIO"),
            (libc::SIGPOLL, "SIGIO"),
            (libc::SIGIOT, "SIGABRT"),
            (libc::SIGPWR, "SIGPWR"),
            (libc::SIGSYS, "SIGSYS"),
        ];
        for (n, name) in pairs {
            assert_eq!(signal_name(n as u8), Some(name), "{n}");
        }
    }
}
