//! The v2 cgroups by id, with their paths and the container each names:
//! read from the cgroup2 mount when a session starts, then kept by the
//! probes' mkdir and rmdir events, so that an exit names its cgroup even
//! when the cgroup was removed before the exit was read (a container that
//! stops at once).

use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use tracer_common::{CGROUP_MKDIR, CGROUP_RMDIR};

use crate::container::{container_of, Container};

/// A removed cgroup is kept this long: exits read after its removal (the
/// loader holds some for their `exit_mmap` stamp, up to half a second)
/// still name it.
const KEEP_REMOVED: Duration = Duration::from_secs(5);

/// Directories read from the mount at most (a bound against a hostile or
/// enormous tree; the events keep the table from then on).
const SEED_MAX: usize = 1 << 16;

/// One cgroup: its path in the v2 hierarchy and the container it names.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    pub path: String,
    pub container: Option<Container>,
}

impl CgroupInfo {
    fn new(path: String) -> Self {
        Self {
            container: container_of(&path),
            path,
        }
    }
}

/// A cgroup made or removed, from the probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupEvent {
    /// `CGROUP_MKDIR` or `CGROUP_RMDIR`.
    pub event: u32,
    /// 0: the v2 hierarchy; else the memory controller's v1 one.
    pub hierarchy: u32,
    pub id: u64,
    pub path: String,
}

/// The v2 hierarchy, and the v1 one of the memory controller (where a
/// runtime on a v1 or hybrid host puts its containers).
#[derive(Debug, Default)]
pub struct Cgroups {
    v2: Hierarchy,
    v1: Hierarchy,
}

#[derive(Debug, Default)]
struct Hierarchy {
    by_id: HashMap<u64, Rc<CgroupInfo>>,
    removed: VecDeque<(Instant, u64)>,
}

impl Cgroups {
    /// Every cgroup of the v2 hierarchy mounted here (the first cgroup2
    /// mount: `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
    /// hosts), and of the memory controller's v1 hierarchy where it has
    /// one. A kernfs directory's inode number is its cgroup id.
    pub fn from_mount() -> Self {
        Self {
            v2: cgroup2_mount().map_or_else(Hierarchy::default, Hierarchy::read),
            v1: memory_v1_mount().map_or_else(Hierarchy::default, Hierarchy::read),
        }
    }

    pub fn event(&mut self, e: &CgroupEvent) {
        if e.hierarchy == 0 {
            self.v2.event(e);
        } else {
            self.v1.event(e);
        }
    }

    /// The v2 cgroup of this id.
    pub fn get(&self, id: u64) -> Option<&CgroupInfo> {
        self.v2.by_id.get(&id).map(|c| &**c)
    }

    /// The cgroup of this id in the memory controller's v1 hierarchy.
    pub fn get_v1(&self, id: u64) -> Option<&CgroupInfo> {
        self.v1.by_id.get(&id).map(|c| &**c)
    }

    /// The v2 cgroups, by id.
    pub fn iter_v2(&self) -> impl Iterator<Item = (u64, &CgroupInfo)> {
        self.v2.by_id.iter().map(|(&id, c)| (id, &**c))
    }

    /// The memory controller's v1 cgroups, by id.
    pub fn iter_v1(&self) -> impl Iterator<Item = (u64, &CgroupInfo)> {
        self.v1.by_id.iter().map(|(&id, c)| (id, &**c))
    }

    /// Every v2 and v1 cgroup known, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &CgroupInfo)> {
        self.v2
            .by_id
            .iter()
            .chain(&self.v1.by_id)
            .map(|(&id, c)| (id, &**c))
    }

    pub fn len(&self) -> usize {
        self.v2.by_id.len() + self.v1.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Hierarchy {
    fn read((mount, root): (PathBuf, String)) -> Self {
        let mut table = Self::default();
        let mut stack = vec![(mount, root)];
        let mut seen = 0;
        while let Some((dir, path)) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            table
                .by_id
                .insert(meta.ino(), Rc::new(CgroupInfo::new(path.clone())));
            seen += 1;
            if seen >= SEED_MAX {
                break;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if path == "/" {
                        format!("/{name}")
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        table
    }

    fn event(&mut self, e: &CgroupEvent) {
        self.forget_removed();
        match e.event {
            CGROUP_MKDIR => {
                let path = if e.path.starts_with('/') {
                    e.path.clone()
                } else {
                    format!("/{}", e.path)
                };
                self.by_id.insert(e.id, Rc::new(CgroupInfo::new(path)));
            }
            CGROUP_RMDIR => self.removed.push_back((Instant::now(), e.id)),
            _ => {}
        }
    }

    fn forget_removed(&mut self) {
        while let Some(&(at, id)) = self.removed.front() {
            if at.elapsed() < KEEP_REMOVED {
                break;
            }
            self.removed.pop_front();
            self.by_id.remove(&id);
        }
    }
}

/// The first cgroup2 mount: where it is, and the path in the hierarchy
/// its root is (not `/` inside a cgroup namespace).
pub fn cgroup2_mount() -> Option<(PathBuf, String)> {
    mount_where(|fstype, _| fstype == "cgroup2")
}

/// The memory controller's v1 hierarchy, where one is mounted (hybrid and
/// v1 hosts): where, and the path its root is.
pub fn memory_v1_mount() -> Option<(PathBuf, String)> {
    mount_where(|fstype, options| fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
}

/// The first mount whose file system type and super options `want`
/// accepts: where it is, and the path in its hierarchy its root is.
fn mount_where(want: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        if !want(fstype, r.nth(1).unwrap_or("")) {
            return None;
        }
        let mut f = left.split(' ');
        let root = unescape(f.nth(3)?);
        let mount = PathBuf::from(unescape(f.next()?));
        Path::new(&mount).is_dir().then_some((mount, root))
    })
}

/// The memory controller's v1 hierarchy id, from /proc/cgroups (0 when
/// memory is on v2 or absent).
pub fn memory_v1_hierarchy() -> u32 {
    let text = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "memory").then(|| f.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_the_table() {
        let mut t = Cgroups::default();
        let id = "0123456789abcdef".repeat(4);
        t.event(&CgroupEvent {
            event: CGROUP_MKDIR,
            hierarchy: 0,
            id: 77,
            path: format!("/docker/{id}"),
        });
        let c = t.get(77).expect("made");
        assert_eq!(c.path, format!("/docker/{id}"));
        assert_eq!(c.container.as_ref().map(|c| c.id.as_str()), Some(&id[..]));
        // Removed: still named for a while.
        t.event(&CgroupEvent {
            event: CGROUP_RMDIR,
            hierarchy: 0,
            id: 77,
            path: String::new(),
        });
        assert!(t.get(77).is_some());
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\\b"), r"/a\\b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    /// The running machine's v2 hierarchy: its root is id 1, `/`.
    #[test]
    fn the_mount_is_read() {
        if cgroup2_mount().is_none() {
            let why = "no cgroup2 mount here";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
            eprintln!("skipped: the_mount_is_read: {why}");
            return;
        }
        let t = Cgroups::from_mount();
        assert!(!t.is_empty());
        assert!(
            t.v2.by_id.values().any(|c| c.path == "/"),
            "{:?}",
            t.v2.by_id
        );
    }
}
