//! `--acct-dir DIR`: one acct v3 file per container (`DIR/<id>.acct`) and
//! one for the host (`DIR/host.acct`), each as `--acct-file` writes it. The
//! kernel keeps one accounting file per pid namespace, with pids as that
//! namespace sees them; a container's file here has the container's pids,
//! as `accton` run inside the container would have written them.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::{text::shown, AcctFile, Output};
use crate::model::Exit;

/// Files kept open at most; past it the one written longest ago is closed
/// (and opened again, appending, when its container has another exit).
const OPEN_MAX: usize = 128;

pub struct AcctDir {
    dir: PathBuf,
    /// By file stem (`host` or a container id), with the exit count when
    /// it was last written, to close the oldest.
    files: HashMap<String, (AcctFile, u64)>,
    written: u64,
    /// What files closed for good (`OPEN_MAX`) or failed could not write.
    lost_closed: u64,
}

impl AcctDir {
    /// The directory must exist: it is not made (a typo must not create a
    /// tree somewhere as root).
    pub fn open(dir: &Path) -> Result<Self> {
        let meta = std::fs::metadata(dir).with_context(|| format!("--acct-dir {}", shown(dir)))?;
        if !meta.is_dir() {
            anyhow::bail!("--acct-dir {}: not a directory", shown(dir));
        }
        Ok(Self {
            dir: dir.to_owned(),
            files: HashMap::new(),
            written: 0,
            lost_closed: 0,
        })
    }

    fn file(&mut self, stem: &str) -> io::Result<&mut AcctFile> {
        if !self.files.contains_key(stem) {
            if self.files.len() >= OPEN_MAX {
                self.close_oldest()?;
            }
            let path = self.dir.join(format!("{stem}.acct"));
            let file = AcctFile::open(&path).map_err(|e| io::Error::other(format!("{e:#}")))?;
            self.files.insert(stem.to_owned(), (file, self.written));
        }
        let entry = self.files.get_mut(stem).expect("inserted above");
        entry.1 = self.written;
        Ok(&mut entry.0)
    }

    fn close_oldest(&mut self) -> io::Result<()> {
        let Some(stem) = self
            .files
            .iter()
            .min_by_key(|(_, (_, at))| *at)
            .map(|(s, _)| s.clone())
        else {
            return Ok(());
        };
        if let Some((mut file, _)) = self.files.remove(&stem) {
            let res = file.flush();
            self.lost_closed += file.lost();
            res?;
        }
        Ok(())
    }
}

impl Output for AcctDir {
    fn exit(&mut self, exit: &Exit<'_>) -> io::Result<()> {
        self.written += 1;
        let container = exit.container();
        let ns = exit.probed.and_then(|p| p.ns);
        match (container, ns) {
            (Some(c), Some(ns)) => {
                let id = c.id.clone();
                let own = Exit {
                    pid: ns.pid,
                    ppid: ns.ppid,
                    ..*exit
                };
                self.file(&id)?.exit(&own)
            }
            _ => self.file("host")?.exit(exit),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut first_error = None;
        for (file, _) in self.files.values_mut() {
            if let Err(e) = file.flush() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let mut first_error = None;
        for (file, _) in self.files.values_mut() {
            if let Err(e) = file.reopen() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn lost(&self) -> u64 {
        self.lost_closed + self.files.values().map(|(f, _)| f.lost()).sum::<u64>()
    }

    fn name(&self) -> String {
        format!("{}/", shown(&self.dir))
    }
}
