//! `--pid`, `--uid`, `--comm`, `--cgroup`, `--container`, `--failed`: the
//! exits wanted, checked in the kernel (`tracer-ebpf/src/filter.rs`) before
//! anything reaches the ring. Several values of one option are an OR,
//! different options an AND; they apply to every output and to `--threads`.

use std::{os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::{bail, Context as _, Result};
use tracer_common::filter;

use crate::{cgroups::Cgroups, output::text::escaped};

/// The filters given on the command line, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub pids: Vec<u32>,
    pub uids: Vec<u32>,
    /// At most 15 bytes each, as the kernel keeps a name.
    pub comms: Vec<String>,
    /// v2 cgroup paths (`/system.slice/x.service`): each with everything
    /// below it.
    pub cgroups: Vec<String>,
    /// Container id prefixes, lower-case hex, at least 12 characters.
    pub containers: Vec<String>,
    pub failed: bool,
}

impl Filters {
    /// The `Config::filters` bits.
    pub fn bits(&self) -> u32 {
        let mut bits = 0;
        if !self.pids.is_empty() {
            bits |= filter::PID;
        }
        if !self.uids.is_empty() {
            bits |= filter::UID;
        }
        if !self.comms.is_empty() {
            bits |= filter::COMM;
        }
        if !self.cgroups.is_empty() {
            bits |= filter::CGROUP;
        }
        if !self.containers.is_empty() {
            bits |= filter::CONTAINER;
        }
        if self.failed {
            bits |= filter::FAILED;
        }
        bits
    }

    /// The `Config::filter_single` bits: `--pid` and `--uid` given one
    /// value each, which the programs compare instead of looking it up.
    pub fn single_bits(&self) -> u32 {
        let mut bits = 0;
        if self.pids.len() == 1 {
            bits |= filter::PID;
        }
        if self.uids.len() == 1 {
            bits |= filter::UID;
        }
        bits
    }

    /// Whether a container's cgroup is one `--container` asks for.
    pub fn wants_container(&self, id: &str) -> bool {
        self.containers.iter().any(|p| id.starts_with(p.as_str()))
    }

    /// The v2 cgroup ids `--cgroup` names: each path must exist (a filter
    /// that can never match is an error).
    pub fn cgroup_ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        if self.cgroups.is_empty() {
            return Ok(ids);
        }
        let mount = crate::cgroups::cgroup2_mount()
            .context("--cgroup: no cgroup v2 hierarchy is mounted")?;
        for path in &self.cgroups {
            let dir = mount.0.join(path.trim_start_matches('/'));
            let meta = std::fs::metadata(&dir).with_context(|| {
                format!(
                    "--cgroup {}: no such cgroup ({})",
                    escaped(path.as_bytes()),
                    escaped(dir.as_os_str().as_encoded_bytes())
                )
            })?;
            ids.push(meta.ino());
        }
        Ok(ids)
    }

    /// The cgroups of the running containers `--container` names, v2 ids
    /// and v1 ids apart: a prefix that names two containers is an error;
    /// one that names none waits for a container started later.
    pub fn container_ids(&self, table: &Cgroups) -> Result<(Vec<u64>, Vec<u64>)> {
        let (mut v2, mut v1) = (Vec::new(), Vec::new());
        for prefix in &self.containers {
            let mut named: Vec<&str> = table
                .iter()
                .filter_map(|(_, c)| c.container.as_ref())
                .map(|c| c.id.as_str())
                .filter(|id| id.starts_with(prefix.as_str()))
                .collect();
            named.sort_unstable();
            named.dedup();
            if named.len() > 1 {
                bail!(
                    "--container {prefix}: names {} running containers ({}); give more of the id",
                    named.len(),
                    named.join(", ")
                );
            }
            let wanted = |c: &crate::cgroups::CgroupInfo| {
                c.container
                    .as_ref()
                    .is_some_and(|c| c.id.starts_with(prefix.as_str()))
            };
            v2.extend(table.iter_v2().filter(|(_, c)| wanted(c)).map(|(id, _)| id));
            v1.extend(table.iter_v1().filter(|(_, c)| wanted(c)).map(|(id, _)| id));
        }
        Ok((v2, v1))
    }
}

/// `--comm NAME`: as the kernel keeps it, 15 bytes at most.
pub fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "{:?} is not a command name the kernel keeps (1 to 15 bytes)",
            s
        ));
    }
    Ok(s.to_owned())
}

/// `--container ID`: at least 12 hex characters of a container id.
pub fn parse_container(s: &str) -> Result<String, String> {
    let id = s.to_ascii_lowercase();
    if id.len() < 12 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a container id: give 12 to 64 hex characters"
        ));
    }
    Ok(id)
}

/// `--cgroup PATH`: a path in the v2 hierarchy, from its root.
pub fn parse_cgroup(s: &str) -> Result<String, String> {
    let p = PathBuf::from(s);
    if !s.starts_with('/') || p.components().any(|c| c.as_os_str() == "..") {
        return Err(format!(
            "{s:?} is not a cgroup path: give it from the v2 hierarchy's root, as \
             /proc/PID/cgroup shows it (/system.slice/x.service)"
        ));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert!(parse_comm("sleep").is_ok());
        assert!(parse_comm("a-very-long-name").is_err());
        assert!(parse_comm("").is_err());
        assert_eq!(
            parse_container("ABCDEF012345").as_deref(),
            Ok("abcdef012345")
        );
        assert!(parse_container("abcdef01234").is_err());
        assert!(parse_container("zzzzzzzzzzzz").is_err());
        assert_eq!(parse_cgroup("/a/b/").as_deref(), Ok("/a/b"));
        assert!(parse_cgroup("a/b").is_err());
        assert!(parse_cgroup("/a/../b").is_err());
    }

    #[test]
    fn bits_say_which_filters_apply() {
        assert_eq!(Filters::default().bits(), 0);
        let f = Filters {
            uids: vec![0],
            failed: true,
            containers: vec!["abcdef012345".into()],
            ..Filters::default()
        };
        assert_eq!(f.bits(), filter::UID | filter::FAILED | filter::CONTAINER);
        assert!(f.wants_container(&"abcdef012345".repeat(5)));
        assert!(!f.wants_container(&"0".repeat(64)));
    }
}
