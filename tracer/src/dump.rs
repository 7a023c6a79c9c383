//! Input side of `tracer dump`: loading accounting files. Rendering lives
//! elsewhere.

use std::path::PathBuf;

use crate::acct::{read_records, AcctFileError, AcctV3};

/// Reads every file in order. Stops at the first failure rather than
/// skipping the file: a partial dump would look complete. The error names
/// the file.
pub fn load(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<AcctV3>)>, AcctFileError> {
    paths
        .iter()
        .map(|p| Ok((p.clone(), read_records(p)?)))
        .collect()
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

    #[test]
    fn loads_in_order_and_stops_at_first_error() {
        let d = temp_dir();
        let a = d.join("a");
        let b = d.join("b");
        std::fs::write(&a, record(1).to_bytes()).unwrap();
        let mut two = record(2).to_bytes().to_vec();
        two.extend_from_slice(&record(3).to_bytes());
        std::fs::write(&b, &two).unwrap();

        assert!(load(&[]).unwrap().is_empty());

        let got = load(&[b.clone(), a.clone()]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, b);
        assert_eq!(
            got[0].1.iter().map(|r| r.ac_pid).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(got[1].0, a);
        assert_eq!(got[1].1, vec![record(1)]);

        let bad = d.join("bad");
        std::fs::write(&bad, [0u8; 10]).unwrap();
        let missing = d.join("missing");
        let e = load(&[a.clone(), bad.clone(), missing]).unwrap_err();
        assert_eq!(e.path(), bad);
        assert!(e.to_string().starts_with(&format!("{}: ", bad.display())));

        std::fs::remove_dir_all(&d).unwrap();
    }
}
