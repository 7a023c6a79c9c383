//! Which container a cgroup path belongs to, by the names container
//! runtimes give their cgroups.
//!
//! - docker: `docker-<id>.scope` (systemd driver), `/docker/<id>` (cgroupfs)
//! - containerd (CRI): `cri-containerd-<id>.scope`
//! - CRI-O: `crio-<id>.scope` (`crio-conmon-<id>.scope` is its monitor)
//! - podman: `libpod-<id>.scope`, `/libpod_parent/libpod-<id>` (the
//!   `libpod-conmon-<id>.scope` is its monitor, not the container)
//! - Kubernetes: any of those below a `kubepods` tree, whose
//!   `pod<uid>` component (`pod1234_5678...` under systemd, dashes under
//!   cgroupfs) names the pod.
//!
//! The id is the last such component: a container nested in another (a
//! Kubernetes node in docker, kind) is named by the innermost one.

/// A container, as its cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full 64-hex id.
    pub id: String,
    /// The Kubernetes pod's uid, with dashes, when the path has one.
    pub pod_uid: Option<String>,
}

/// The container `path` (a cgroup path, `/`-separated) belongs to, if any.
pub fn container_of(path: &str) -> Option<Container> {
    let mut id = None;
    let mut pod_uid = None;
    let mut in_kubepods = false;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part.starts_with("kubepods") {
            in_kubepods = true;
        }
        if in_kubepods {
            if let Some(uid) = pod_component(part) {
                pod_uid = Some(uid);
            }
        }
        if let Some(found) = id_component(part) {
            id = Some(found);
        }
    }
    let id = id?;
    Some(Container {
        id: id.to_owned(),
        pod_uid: pod_uid.filter(|_| in_kubepods),
    })
}

/// The 64-hex id a path component names, for the naming schemes above.
fn id_component(part: &str) -> Option<&str> {
    if is_id(part) {
        // cgroupfs drivers: `/docker/<id>`, `/kubepods/.../<id>`.
        return Some(part);
    }
    let stem = part.strip_suffix(".scope").unwrap_or(part);
    for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
        if let Some(rest) = stem.strip_prefix(prefix) {
            // The conmon monitors are not the container.
            if rest.starts_with("conmon-") {
                return None;
            }
            if is_id(rest) {
                return Some(rest);
            }
        }
    }
    None
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod<uid>` (`kubepods-burstable-pod<uid>.slice` under systemd, with
/// underscores for the uid's dashes; `pod<uid>` under cgroupfs).
fn pod_component(part: &str) -> Option<String> {
    let stem = part.strip_suffix(".slice").unwrap_or(part);
    let at = stem.rfind("pod")?;
    let uid = &stem[at + 3..];
    let uid = uid.replace('_', "-");
    let is_uid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    is_uid.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
    const POD: &str = "0d1b2c3a-4e5f-6789-abcd-ef0123456789";

    fn id(path: &str) -> Option<String> {
        container_of(path).map(|c| c.id)
    }

    #[test]
    fn every_runtime_naming() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/system.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/libpod_parent/libpod-{ID}"),
        ] {
            assert_eq!(id(&path).as_deref(), Some(ID), "{path}");
            assert_eq!(container_of(&path).unwrap().pod_uid, None, "{path}");
        }
    }

    #[test]
    fn monitors_and_hosts_are_not_containers() {
        for path in [
            "/",
            "/system.slice/ssh.service",
            "/user.slice/user-1000.slice/session-2.scope",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/system.slice/docker-{}.scope", &ID[..63]),
            &format!("/system.slice/docker-{}x.scope", &ID[..63]),
        ] {
            assert_eq!(container_of(path), None, "{path}");
        }
    }

    #[test]
    fn kubernetes_pods() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            POD.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{POD}/{ID}");
        for path in [systemd, cgroupfs] {
            let c = container_of(&path).unwrap();
            assert_eq!(c.id, ID, "{path}");
            assert_eq!(c.pod_uid.as_deref(), Some(POD), "{path}");
        }
        // A pod-like name outside kubepods names no pod.
        let path = format!("/system.slice/pod{POD}/docker-{ID}.scope");
        assert_eq!(container_of(&path).unwrap().pod_uid, None);
    }

    #[test]
    fn the_innermost_container_names_a_nested_one() {
        let inner = ID.replace('3', "a");
        let path = format!("/docker/{ID}/kubepods/besteffort/pod{POD}/{inner}");
        let c = container_of(&path).unwrap();
        assert_eq!(c.id, inner);
        assert_eq!(c.pod_uid.as_deref(), Some(POD));
    }
}
