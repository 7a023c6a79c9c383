//! Where output bytes land: files opened so that root's writes cannot be
//! turned against the host, and writes that never outlast the session.
//!
//! Every file output is opened the same way: `O_NOFOLLOW` (a planted
//! symbolic link is refused, not followed), created 0600 (the records say
//! who ran what), `O_APPEND` (an existing file is appended to and never
//! truncated; after logrotate's `copytruncate` the next write lands at the
//! new end instead of leaving a hole), and `O_NONBLOCK` (a FIFO without a
//! reader is an error at once instead of a hang).
//!
//! Writes block for as long as the reader is slow (the ring keeps counting
//! what it cannot hold) but never past the session's drain deadline
//! ([`crate::shutdown`]): a blocked pipe, FIFO or terminal then fails the
//! output with `TimedOut` and its unwritten records are counted. A write
//! that fails half way through a line (JSON) or a record (acct) on a
//! regular file is cut back, so the file only ever holds whole units.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Result};

use crate::shutdown;

/// What a file holds, so that a failed write can be cut back to whole ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// Newline-terminated lines (JSON, the table).
    Lines,
    /// Fixed-size records (acct v3: 64 bytes).
    Records(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Writes never block for long; a failed one can be cut back.
    Regular,
    /// Pipes, FIFOs, terminals, character devices: a non-blocking
    /// descriptor of our own, waited on with `poll`.
    Stream,
    /// A socket shared with whoever gave it to us: `send(MSG_DONTWAIT)`.
    Socket,
}

/// An output descriptor with the rules above.
#[derive(Debug)]
pub struct OutFile {
    file: File,
    kind: Kind,
    units: Units,
    /// Bytes of the current, unfinished unit already written.
    partial: u64,
}

impl OutFile {
    /// Opens `path` for appending, creating it 0600; refuses symbolic links
    /// and FIFOs nobody reads. `read` also opens it for reading (the acct
    /// file checks the version of the very file it appends to).
    pub fn open(path: &Path, units: Units, read: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(read)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| open_error(path, &e))?;
        // Regular files ignore O_NONBLOCK: their writes complete or fail.
        let kind = kind_of(&file)?;
        Ok(Self {
            file,
            kind,
            units,
            partial: 0,
        })
    }

    /// Standard output. A pipe or terminal gets a non-blocking descriptor of
    /// its own (through /proc/self/fd/1), so the shell's shared one keeps
    /// its flags; a socket is written with `MSG_DONTWAIT`.
    pub fn stdout(units: Units) -> Result<Self> {
        // SAFETY: dup of fd 1 gives a descriptor we own.
        let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(anyhow!(
                "cannot use standard output: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let dup = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let file = match kind_of(&dup)? {
            Kind::Stream => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open("/proc/self/fd/1")
                .unwrap_or(dup),
            _ => dup,
        };
        // Reopening can fail (no /proc): a blocking descriptor then stays
        // blocking, and `poll` before each write still bounds most waits.
        let kind = kind_of(&file)?;
        Ok(Self {
            file,
            kind,
            units,
            partial: 0,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes what the descriptor takes now, waiting for it to take more
    /// until the drain deadline.
    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let n = match self.kind {
                Kind::Socket => {
                    // SAFETY: a valid buffer and descriptor.
                    unsafe {
                        libc::send(
                            self.file.as_raw_fd(),
                            buf.as_ptr().cast(),
                            buf.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        )
                    }
                }
                // SAFETY: a valid buffer and descriptor.
                _ => unsafe { libc::write(self.file.as_raw_fd(), buf.as_ptr().cast(), buf.len()) },
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => self.wait_writable()?,
                _ => return Err(err),
            }
        }
    }

    fn wait_writable(&self) -> io::Result<()> {
        loop {
            let Some(timeout_ms) = shutdown::poll_timeout_ms() else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "its reader took nothing before the session's drain deadline",
                ));
            };
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if r > 0 {
                return Ok(());
            }
            if r < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }

    /// Keeps track of where the current unit ends in what was written.
    fn account(&mut self, written: &[u8]) {
        self.partial = match self.units {
            Units::Lines => match written.iter().rposition(|&b| b == b'\n') {
                Some(i) => (written.len() - i - 1) as u64,
                None => self.partial + written.len() as u64,
            },
            Units::Records(size) => (self.partial + written.len() as u64) % size,
        };
    }

    /// After a failed write: removes the unfinished unit from the end of a
    /// regular file, so that a reader never sees half a line or record.
    fn cut_back(&mut self) {
        if self.partial == 0 || self.kind != Kind::Regular {
            return;
        }
        if let Ok(meta) = self.file.metadata() {
            if let Some(len) = meta.len().checked_sub(self.partial) {
                if self.file.set_len(len).is_ok() {
                    self.partial = 0;
                }
            }
        }
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.write_some(buf) {
            Ok(n) => {
                self.account(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.cut_back();
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--rotate-size` and `--rotate-keep`: a file output that would grow past
/// `size` bytes is renamed FILE.1 (FILE.1 becomes FILE.2 and so on, up to
/// FILE.`keep`; the oldest is removed) and a new FILE started, with the
/// same rules as the first. Files hold whole lines or records: one is
/// larger than `size` only when a single line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotate {
    pub size: u64,
    pub keep: u32,
}

/// A file output's path, opened again on SIGHUP (after logrotate moved the
/// file away) and rotated by size.
#[derive(Debug)]
pub struct Reopen {
    path: PathBuf,
    units: Units,
    rotate: Option<Rotate>,
    /// Bytes in the file: its size when opened, plus what we wrote.
    size: u64,
}

impl Reopen {
    pub fn new(path: &Path, units: Units, rotate: Option<Rotate>) -> Self {
        Self {
            path: path.to_owned(),
            units,
            rotate,
            size: std::fs::metadata(path).map_or(0, |m| m.len()),
        }
    }

    /// Whether a unit of `added` bytes, after `pending` bytes not yet
    /// written, would take a file that holds something past the size.
    pub fn full_before(&self, pending: u64, added: u64) -> bool {
        self.rotate.is_some_and(|r| {
            let before = self.size + pending;
            before > 0 && before + added > r.size
        })
    }

    pub fn wrote(&mut self, bytes: u64) {
        self.size += bytes;
    }

    /// Opens the path again, with the rules of [`OutFile::open`].
    pub fn reopen(&mut self) -> io::Result<OutFile> {
        let file = OutFile::open(&self.path, self.units, self.units != Units::Lines)
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        self.size = file.file.metadata()?.len();
        Ok(file)
    }

    /// Shifts the numbered files and starts a new one. On an error
    /// (a directory where FILE.1 should go) the output goes on writing to
    /// the file it has, without rotating any more, and says so.
    pub fn rotate(&mut self) -> Option<OutFile> {
        let keep = self.rotate?.keep;
        match shift(&self.path, keep).and_then(|()| self.reopen()) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!(
                    "tracer: warning: cannot rotate {}: {e}; writing on to it without rotating",
                    super::text::shown(&self.path)
                );
                self.rotate = None;
                None
            }
        }
    }
}

/// FILE.n renamed FILE.n+1 for the files FILE.1, FILE.2... there are
/// (FILE.`keep` removed when they are all there), FILE renamed FILE.1.
/// Only the files that exist are touched, so a rotation costs as many
/// system calls as there are files, whatever `keep` is. Renames move links
/// and files themselves, never what a link points to.
pub fn shift(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    let mut last = 0;
    while last < keep && std::fs::symlink_metadata(numbered(last + 1)).is_ok() {
        last += 1;
    }
    if last == keep {
        std::fs::remove_file(numbered(keep))?;
        last -= 1;
    }
    for n in (1..=last).rev() {
        std::fs::rename(numbered(n), numbered(n + 1))?;
    }
    std::fs::rename(path, numbered(1))
}

fn kind_of(file: &File) -> Result<Kind> {
    let ft = file.metadata()?.file_type();
    Ok(if ft.is_file() {
        Kind::Regular
    } else if ft.is_socket() {
        Kind::Socket
    } else {
        Kind::Stream
    })
}

fn open_error(path: &Path, e: &io::Error) -> anyhow::Error {
    let p = super::text::shown(path);
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            anyhow!("{p}: is a symbolic link; refusing to follow it (give the real path)")
        }
        Some(libc::ENXIO) => anyhow!("{p}: a FIFO that no process reads; start its reader first"),
        _ => anyhow!("cannot open {p}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tracer-outfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn appends_never_truncates_and_creates_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("append");
        let path = dir.join("out.json");
        std::fs::write(&path, b"old\n").unwrap();
        let mut f = OutFile::open(&path, Units::Lines, false).unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old\nnew\n");
        let fresh = dir.join("fresh.json");
        OutFile::open(&fresh, Units::Lines, false).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_links_and_unread_fifos() {
        let dir = scratch("refuse");
        let target = dir.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = OutFile::open(&link, Units::Lines, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = OutFile::open(&fifo, Units::Lines, false).unwrap_err();
        assert!(err.to_string().contains("no process reads"), "{err}");
    }

    #[test]
    fn shift_keeps_the_newest_keep() {
        let dir = scratch("shift");
        let path = dir.join("rec.acct");
        for round in 0..4u8 {
            std::fs::write(&path, [round]).unwrap();
            shift(&path, 2).unwrap();
        }
        assert!(!path.exists());
        assert_eq!(std::fs::read(dir.join("rec.acct.1")).unwrap(), [3]);
        assert_eq!(std::fs::read(dir.join("rec.acct.2")).unwrap(), [2]);
        assert!(!dir.join("rec.acct.3").exists());
    }

    #[test]
    fn a_unit_cut_short_is_tracked() {
        let dir = scratch("units");
        let mut f = OutFile::open(&dir.join("a"), Units::Lines, false).unwrap();
        f.account(b"{\"a\":1}\n{\"b\"");
        assert_eq!(f.partial, 4);
        f.account(b":2");
        assert_eq!(f.partial, 6);
        f.account(b"}\n");
        assert_eq!(f.partial, 0);
        let mut r = OutFile::open(&dir.join("b"), Units::Records(64), false).unwrap();
        r.account(&[0; 100]);
        assert_eq!(r.partial, 36);
    }
}
