//! Input side of `tracer dump`: reading accounting files, one record at
//! a time. Rendering lives elsewhere.
//!
//! Memory does not grow with the files (accounting files grow for as long
//! as accounting is on): each record goes to the output as it is read.
//! So that a bad file is still caught before anything is printed where
//! that is cheap, every file is opened first, and a regular file whose
//! size is not a whole number of records is refused then. A record with a
//! wrong version, or a truncated pipe, is found only when reached: the
//! records before it have been printed, and the error follows.

use std::{
    fs::File,
    io::BufReader,
    path::{Path, PathBuf},
};

use crate::acct::{open_records, AcctFileError, AcctV3, RecordReader, RECORD_SIZE};

/// The files of one dump, opened and checked as far as their metadata
/// allows.
pub struct Files {
    readers: Vec<RecordReader<BufReader<File>>>,
}

/// Opens every file in order; the first failure (missing, a directory, a
/// regular file cut short) is the error, naming the file.
pub fn open(paths: &[PathBuf]) -> Result<Files, AcctFileError> {
    let readers = paths
        .iter()
        .map(|p| {
            let reader = open_records(p)?;
            check_size(p)?;
            Ok(reader)
        })
        .collect::<Result<_, _>>()?;
    Ok(Files { readers })
}

/// A regular file must be whole records; the error is the one reading it
/// to the end would give.
fn check_size(path: &Path) -> Result<(), AcctFileError> {
    let meta = std::fs::metadata(path).map_err(|source| AcctFileError::Open {
        path: path.to_owned(),
        source,
    })?;
    let len = meta.len();
    let got = (len % RECORD_SIZE as u64) as usize;
    if meta.is_file() && got != 0 {
        return Err(AcctFileError::Truncated {
            path: path.to_owned(),
            offset: len - got as u64,
            got,
        });
    }
    Ok(())
}

impl Files {
    /// Gives every record to `f`, file by file, in order. Stops at the
    /// first failure, `f`'s or the files' (a partial dump that went on past
    /// a bad record would look complete).
    pub fn each(self, mut f: impl FnMut(AcctV3) -> anyhow::Result<()>) -> anyhow::Result<()> {
        for reader in self.readers {
            for rec in reader {
                f(rec?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acct::{AcctV3, ACCT_VERSION};

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tracer-dump-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn record(pid: u32) -> AcctV3 {
        AcctV3 {
            ac_version: ACCT_VERSION,
            ac_pid: pid,
            ..AcctV3::default()
        }
    }

    fn pids(paths: &[PathBuf]) -> anyhow::Result<Vec<u32>> {
        let mut got = Vec::new();
        open(paths)?.each(|r| {
            got.push(r.ac_pid);
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn reads_in_order_and_stops_at_first_error() {
        let d = temp_dir();
        let a = d.join("a");
        let b = d.join("b");
        std::fs::write(&a, record(1).to_bytes()).unwrap();
        let mut two = record(2).to_bytes().to_vec();
        two.extend_from_slice(&record(3).to_bytes());
        std::fs::write(&b, &two).unwrap();

        assert!(pids(&[]).unwrap().is_empty());
        assert_eq!(pids(&[b.clone(), a.clone()]).unwrap(), [2, 3, 1]);

        // Found on opening, before any record is given out.
        let bad = d.join("bad");
        std::fs::write(&bad, [0u8; 10]).unwrap();
        let missing = d.join("missing");
        for (paths, culprit) in [
            (vec![a.clone(), bad.clone(), missing.clone()], &bad),
            (vec![a.clone(), missing.clone()], &missing),
            (vec![a.clone(), d.clone()], &d),
        ] {
            let e = open(&paths).err().unwrap();
            assert_eq!(e.path(), culprit);
            assert!(e
                .to_string()
                .starts_with(&format!("{}: ", culprit.display())));
        }

        // Found when reached: a record of another version.
        let mut v2 = record(4).to_bytes();
        v2[1] = 2;
        let c = d.join("c");
        std::fs::write(&c, [record(5).to_bytes(), v2].concat()).unwrap();
        let mut got = Vec::new();
        let e = open(&[a.clone(), c.clone()])
            .unwrap()
            .each(|r| {
                got.push(r.ac_pid);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(got, [1, 5]);
        let e = e.downcast::<AcctFileError>().unwrap();
        assert_eq!((e.path(), e.offset()), (c.as_path(), Some(64)));

        std::fs::remove_dir_all(&d).unwrap();
    }
}
