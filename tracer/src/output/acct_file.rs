//! `--acct-file`: acct_v3 records byte-compatible with the kernel's, so
//! `lastcomm -f`, `sa` and `dump-acct` read them.

use std::{
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use super::{
    file::{OutFile, Reopen, Rotate, Units},
    text::shown,
    write_counted, Output,
};
use crate::{
    acct::{AcctV3, ACCT_VERSION, RECORD_SIZE},
    model::Exit,
};

pub struct AcctFile {
    path: PathBuf,
    file: OutFile,
    buf: Vec<u8>,
    failed: bool,
    lost: u64,
    /// The path, for SIGHUP and `--rotate-size`.
    reopen: Reopen,
}

impl AcctFile {
    /// Opens for append with the rules of every file output (see
    /// [`super::file`]), and only a regular file that is empty or already
    /// holds whole acct v3 records: its version is read from the very
    /// descriptor the records are appended to.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OutFile::open(path, Units::Records(RECORD_SIZE as u64), true)?;
        check_acct_v3(&file, path)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            buf: Vec::with_capacity(RECORD_SIZE * 1024),
            failed: false,
            lost: 0,
            reopen: Reopen::new(path, Units::Records(RECORD_SIZE as u64), None),
        })
    }

    /// Rotates by size (`--rotate-size`).
    pub fn rotating(mut self, rotate: Option<Rotate>) -> Self {
        self.reopen = Reopen::new(&self.path, Units::Records(RECORD_SIZE as u64), rotate);
        self
    }

    /// A file opened again (SIGHUP, rotation) is taken only if it is empty
    /// or acct v3, as at the start.
    fn replace(&mut self, file: OutFile) -> io::Result<()> {
        check_acct_v3(&file, &self.path).map_err(|e| io::Error::other(format!("{e:#}")))?;
        self.file = file;
        Ok(())
    }
}

/// Refuses what is not empty or whole acct v3 records, reading the open
/// descriptor itself: a path checked apart from the descriptor written to
/// could be swapped in between.
fn check_acct_v3(file: &OutFile, path: &Path) -> Result<()> {
    let meta = file.file().metadata()?;
    if !meta.is_file() {
        bail!("{}: not a regular file", shown(path));
    }
    if !meta.len().is_multiple_of(RECORD_SIZE as u64) {
        bail!(
            "{}: its size ({} bytes) is not a whole number of 64-byte acct records; \
             refusing to append to what is not an acct v3 file",
            shown(path),
            meta.len()
        );
    }
    if meta.len() > 0 {
        let mut first = [0u8; 2];
        file.file()
            .read_exact_at(&mut first, 0)
            .with_context(|| format!("cannot read {}", shown(path)))?;
        if first[1] & 0x7f != ACCT_VERSION {
            bail!(
                "{}: not an acct v3 file (version byte {}); refusing to append",
                shown(path),
                first[1]
            );
        }
    }
    Ok(())
}

impl Output for AcctFile {
    fn exit(&mut self, exit: &Exit<'_>) -> io::Result<()> {
        if self.failed {
            self.lost += 1;
            return Ok(());
        }
        if self
            .reopen
            .full_before(self.buf.len() as u64, RECORD_SIZE as u64)
        {
            if let Err(e) = self.flush() {
                self.lost += 1;
                return Err(e);
            }
            if let Some(file) = self.reopen.rotate() {
                if let Err(e) = self.replace(file) {
                    eprintln!(
                        "tracer: warning: cannot rotate {}: {e}; writing on to {0}.1",
                        shown(&self.path)
                    );
                }
            }
        }
        self.buf
            .extend_from_slice(&AcctV3::from_model(exit).to_bytes());
        if self.buf.len() >= self.buf.capacity() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() || self.failed {
            return Ok(());
        }
        // On a failure the file has cut back the record it left half written.
        let (done, res) = write_counted(&mut self.file, &self.buf);
        if res.is_ok() {
            self.reopen.wrote(done as u64);
        } else {
            self.failed = true;
            self.lost += ((self.buf.len() - done).div_ceil(RECORD_SIZE)) as u64;
        }
        self.buf.clear();
        res
    }

    fn lost(&self) -> u64 {
        self.lost
    }

    fn reopen(&mut self) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        self.flush()?;
        let file = self.reopen.reopen()?;
        self.replace(file)
    }

    fn name(&self) -> String {
        shown(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acct::read_records;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tracer-acctfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(pid: u32, comm: &[u8]) -> AcctV3 {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        AcctV3 {
            ac_flag: 0x11,
            ac_version: 3,
            ac_tty: 0x8803,
            ac_exitcode: 0x8b,
            ac_uid: 1000,
            ac_gid: 100,
            ac_pid: pid,
            ac_ppid: 1,
            ac_btime: 1_795_000_000,
            ac_etime: crate::acct::encode_float(1234),
            ac_utime: 7,
            ac_stime: 8,
            ac_mem: 9,
            ac_minflt: 10,
            ac_majflt: 11,
            ac_comm: c,
            ..Default::default()
        }
    }

    #[test]
    fn dump_reads_back_what_we_append() {
        let dir = scratch("roundtrip");
        let path = dir.join("out.acct");
        let written: Vec<_> = (0..3000).map(|i| record(100 + i, b"worker")).collect();
        // Two sessions appending to the same file, with more records than
        // one buffer holds.
        for half in written.chunks(1500) {
            let mut sink = AcctFile::open(&path).unwrap();
            for r in half {
                sink.exit(&r.to_exit()).unwrap();
            }
            sink.flush().unwrap();
        }
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_records(&path).unwrap(), written);
    }

    /// The version is read from the descriptor the records go to: a path
    /// swapped after the open (here, a valid file renamed over it) cannot
    /// make a foreign file pass.
    #[test]
    fn checks_the_descriptor_not_the_path() {
        let dir = scratch("swap");
        let path = dir.join("rec.acct");
        std::fs::write(&path, [2u8; 64]).unwrap();
        let file = OutFile::open(&path, Units::Records(64), true).unwrap();
        let valid = dir.join("valid.acct");
        std::fs::write(&valid, record(1, b"x").to_bytes()).unwrap();
        std::fs::rename(&valid, &path).unwrap();
        let err = check_acct_v3(&file, &path).unwrap_err().to_string();
        assert!(err.contains("not an acct v3 file"), "{err}");
    }

    #[test]
    fn refuses_links_and_foreign_files() {
        let dir = scratch("refuse");
        let target = dir.join("real.acct");
        std::fs::write(&target, b"").unwrap();
        let link = dir.join("link.acct");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = AcctFile::open(&link).err().unwrap().to_string();
        assert!(err.contains("symbolic link"), "{err}");

        let odd = dir.join("odd.acct");
        std::fs::write(&odd, [3u8; 65]).unwrap();
        let err = AcctFile::open(&odd).err().unwrap().to_string();
        assert!(err.contains("65 bytes"), "{err}");

        let foreign = dir.join("foreign.acct");
        std::fs::write(&foreign, [2u8; 64]).unwrap();
        let err = AcctFile::open(&foreign).err().unwrap().to_string();
        assert!(err.contains("not an acct v3 file"), "{err}");

        let err = AcctFile::open(&dir).err().unwrap().to_string();
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }
}
