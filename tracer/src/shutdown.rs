//! How a session ends: the signals it takes, the command it waits for, and
//! the deadline that bounds its drain.
//!
//! The signals a session cares about are blocked in every thread and taken
//! by one thread with `sigwaitinfo`, as `tini` does. That thread can act
//! while the reading loop is stuck in a write to a reader that went away:
//! it sets the drain deadline, which every blocked output write checks
//! (`output::file`), so `--duration`, SIGINT and SIGTERM end a session
//! within [`DRAIN`] whatever its outputs do.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Result;
use tokio::sync::mpsc;

/// How long the drain after the end of a session may take before blocked
/// outputs are given up (and what they did not take is counted).
pub const DRAIN: Duration = Duration::from_secs(2);

/// CLOCK_MONOTONIC ns after which blocked writes fail; `u64::MAX`: none yet.
static DEADLINE_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Moves the drain deadline to `after` from now, unless it is sooner.
pub fn deadline_in(after: Duration) {
    let at = monotonic_ns().saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX));
    DEADLINE_NS.fetch_min(at, Ordering::SeqCst);
}

/// How long a blocked write may wait in one `poll` before it looks at the
/// deadline again; `None` once the deadline has passed.
pub fn poll_timeout_ms() -> Option<i32> {
    let deadline = DEADLINE_NS.load(Ordering::SeqCst);
    let now = monotonic_ns();
    if now >= deadline {
        return None;
    }
    Some(((deadline - now) / 1_000_000).clamp(1, 100) as i32)
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the signal thread reports to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `record`: SIGINT or SIGTERM: stop.
    Stop(i32),
    /// `run`: the command exited; its raw wait status.
    CommandExited(i32),
}

/// Signals `record` takes: it stops on SIGINT and SIGTERM and reopens its
/// files on SIGHUP.
const RECORD_SIGNALS: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Signals `tracer run` passes on to its command, as `tini` and `dumb-init`
/// do; the terminal's own (SIGINT, SIGQUIT, SIGWINCH and a hangup's SIGHUP)
/// reached the command already when they came from the terminal.
pub const FORWARDED: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; the signals are valid.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn run_signals() -> Vec<i32> {
    let mut all = FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    all
}

/// Blocks the session's signals in this thread and every thread it starts
/// from now on. Call before the runtime starts its threads. A child
/// inherits the mask: the command gets an empty one back from
/// [`unblock_signals_in_child`].
pub fn block_signals(run: bool) -> Result<()> {
    let set = if run {
        sigset(&run_signals())
    } else {
        sigset(RECORD_SIGNALS)
    };
    // SAFETY: a valid set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        anyhow::bail!(
            "cannot block signals: {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// In a child between fork and exec: the command starts with no signal
/// blocked, as it would without us.
pub fn unblock_signals_in_child() {
    // SAFETY: an empty set we own; sigprocmask is async-signal-safe.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `record`: the first SIGINT or SIGTERM stops the session (its drain
/// deadline starts then); each SIGHUP is a request to reopen the file
/// outputs, on the second receiver (logrotate's `create` mode).
pub fn watch_record() -> (mpsc::UnboundedReceiver<Event>, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (reopen_tx, reopen_rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let set = sigset(RECORD_SIGNALS);
        loop {
            let sig = wait(&set).signo;
            if sig == libc::SIGHUP {
                // Nobody left to reopen for once the session is over.
                let _ = reopen_tx.send(());
                continue;
            }
            deadline_in(DRAIN);
            if tx.send(Event::Stop(sig)).is_err() {
                return;
            }
        }
    });
    (rx, reopen_rx)
}

/// `run`: passes signals on to the command `pid` and reports its exit,
/// which starts the drain deadline. A SIGINT or SIGTERM after the command
/// has exited cuts the drain short.
pub fn watch_run(pid: i32) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let set = sigset(&run_signals());
        let mut exited = false;
        loop {
            let info = wait(&set);
            if info.signo == libc::SIGCHLD {
                if !exited {
                    if let Some(status) = reap(pid) {
                        exited = true;
                        deadline_in(DRAIN);
                        let _ = tx.send(Event::CommandExited(status));
                    }
                }
                continue;
            }
            if exited {
                if matches!(info.signo, libc::SIGINT | libc::SIGTERM) {
                    deadline_in(Duration::ZERO);
                }
                continue;
            }
            if !from_terminal(info.signo, info.code) {
                // SAFETY: kill has no memory preconditions; `pid` is our
                // child, not yet reaped, so the pid cannot be reused.
                unsafe { libc::kill(pid, info.signo) };
            }
        }
    });
    rx
}

/// A terminal's signals come from the kernel (`SI_KERNEL`) and were sent
/// to the whole foreground process group, the command included.
fn from_terminal(signo: i32, code: i32) -> bool {
    code == libc::SI_KERNEL
        && matches!(
            signo,
            libc::SIGINT | libc::SIGQUIT | libc::SIGWINCH | libc::SIGHUP
        )
}

struct Caught {
    signo: i32,
    code: i32,
}

fn wait(set: &libc::sigset_t) -> Caught {
    loop {
        // SAFETY: a valid set and a siginfo we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
        if sig > 0 {
            return Caught {
                signo: sig,
                code: info.si_code,
            };
        }
    }
}

/// The command's wait status once it has exited (it is reaped then).
fn reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: a status we own; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_signals_are_told_apart() {
        assert!(from_terminal(libc::SIGINT, libc::SI_KERNEL));
        assert!(!from_terminal(libc::SIGINT, libc::SI_USER));
        assert!(!from_terminal(libc::SIGTERM, libc::SI_KERNEL));
        assert!(!from_terminal(libc::SIGUSR1, libc::SI_QUEUE));
    }
}
