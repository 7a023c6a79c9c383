//! `--acct-file`: acct_v3 records byte-compatible with the kernel's, so
//! `lastcomm -f`, `sa` and `dump-acct` read them.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use super::Sink;
use crate::{
    acct::{ACCT_VERSION, RECORD_SIZE},
    event::ExitView,
};

pub struct AcctFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl AcctFile {
    /// Opens for append; a new file is created 0600 (accounting records
    /// say who ran what), and a symlink is never followed, so a planted
    /// link cannot redirect root's writes.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    anyhow::anyhow!(
                        "{}: is a symbolic link; refusing to follow it (give the real path)",
                        path.display()
                    )
                } else {
                    anyhow::Error::new(e).context(format!("cannot open {}", path.display()))
                }
            })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            bail!("{}: not a regular file", path.display());
        }
        if !meta.len().is_multiple_of(RECORD_SIZE as u64) {
            bail!(
                "{}: its size ({} bytes) is not a whole number of 64-byte acct records; \
                 refusing to append to what is not an acct v3 file",
                path.display(),
                meta.len()
            );
        }
        if meta.len() > 0 {
            let mut first = [0u8; 2];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut first, 0)
                .or_else(|_| {
                    // Opened write-only: read the version through a second handle.
                    File::open(path)
                        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut first, 0))
                })
                .with_context(|| format!("cannot read {}", path.display()))?;
            if first[1] & 0x7f != ACCT_VERSION {
                bail!(
                    "{}: not an acct v3 file (version byte {}); refusing to append",
                    path.display(),
                    first[1]
                );
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            buf: Vec::with_capacity(RECORD_SIZE * 1024),
        })
    }

    /// After a failed write, cut any partial record so the file stays a
    /// whole number of records.
    fn trim_partial(&self) {
        if let Ok(meta) = self.file.metadata() {
            let extra = meta.len() % RECORD_SIZE as u64;
            if extra != 0 {
                let _ = self.file.set_len(meta.len() - extra);
            }
        }
    }
}

impl Sink for AcctFile {
    fn exit(&mut self, ev: &ExitView<'_>) -> io::Result<()> {
        self.buf.extend_from_slice(&ev.acct.to_bytes());
        if self.buf.len() >= self.buf.capacity() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.file.write_all(&self.buf);
        if res.is_err() {
            self.trim_partial();
        }
        self.buf.clear();
        res
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{acct::read_records, event::ExitView};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tracer-acctfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(pid: u32, comm: &[u8]) -> crate::acct::AcctV3 {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm);
        crate::acct::AcctV3 {
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
                sink.exit(&ExitView::from_acct(*r)).unwrap();
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
