//! Whether the running kernel can preempt a BPF program while it runs.
//!
//! Where it can (`preempt=full` or `lazy`, PREEMPT_RT), a task preempted
//! inside a tracing program makes the program's per-CPU recursion guard
//! turn away the next task that enters it on that CPU, so the exit
//! programs are attached twice, each copy with a guard of its own (see
//! `once` in the eBPF crate). Where it cannot (`preempt=none` or
//! `voluntary`: a program has no point where it would give up the CPU,
//! and none of our hooks fires in an interrupt), the guard never turns a
//! task away and one copy does the work at half the cost.
//!
//! Read, in this order: the mode in force (`/sys/kernel/debug/sched/preempt`,
//! when debugfs is mounted), the kernel's version string (`PREEMPT_RT`,
//! `PREEMPT_DYNAMIC`, `PREEMPT`), the `preempt=` boot parameter, and the
//! kernel's configuration (`/proc/config.gz`, `/boot/config-<release>`).
//! What cannot be told counts as preemptible: two copies cost more, one
//! where two are needed loses records.

use std::io::Read as _;

/// The answer, and what it was read from (`-v` says it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preemption {
    pub preempts_programs: bool,
    pub why: String,
}

impl Preemption {
    pub fn of_running_kernel() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        decide(&Sources {
            debugfs: read("/sys/kernel/debug/sched/preempt").as_deref(),
            version: &read("/proc/sys/kernel/version").unwrap_or_default(),
            cmdline: &read("/proc/cmdline").unwrap_or_default(),
            config: kernel_config().as_deref(),
        })
    }
}

/// The running kernel's build configuration, from `/proc/config.gz` or
/// `/boot/config-<release>`; `None` when neither can be read.
pub(crate) fn kernel_config() -> Option<String> {
    if let Ok(f) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
}

struct Sources<'a> {
    /// `sched/preempt` in debugfs: the modes, the one in force in brackets.
    debugfs: Option<&'a str>,
    /// `uname -v`.
    version: &'a str,
    cmdline: &'a str,
    config: Option<&'a str>,
}

fn decide(s: &Sources<'_>) -> Preemption {
    let answer = |preempts_programs: bool, why: String| Preemption {
        preempts_programs,
        why,
    };
    let words: Vec<&str> = s.version.split_whitespace().collect();
    if words.contains(&"PREEMPT_RT") {
        return answer(true, "PREEMPT_RT".into());
    }
    if let Some(mode) = s.debugfs.and_then(mode_in_force) {
        return answer(
            preempts_in_mode(mode).unwrap_or(true),
            format!("preempt={mode} (debugfs sched/preempt)"),
        );
    }
    if words.contains(&"PREEMPT_DYNAMIC") {
        let boot = s
            .cmdline
            .split_whitespace()
            .filter_map(|p| p.strip_prefix("preempt="))
            .next_back();
        if let Some(mode) = boot.filter(|m| preempts_in_mode(m).is_some()) {
            return answer(
                preempts_in_mode(mode).unwrap_or(true),
                format!("preempt={mode} (boot parameter)"),
            );
        }
        return match s.config.and_then(configured_mode) {
            Some(mode) => answer(
                preempts_in_mode(mode).unwrap_or(true),
                format!("preempt={mode} (PREEMPT_DYNAMIC, the configured default)"),
            ),
            None => answer(
                true,
                "PREEMPT_DYNAMIC, mode unknown (no debugfs, no kernel config)".into(),
            ),
        };
    }
    // A fixed model: the version string names the preemptible ones.
    if words.iter().any(|w| w.starts_with("PREEMPT")) {
        return answer(true, "a preemptible kernel (uname -v)".into());
    }
    if s.version.trim().is_empty() {
        return answer(true, "unknown (no kernel version string)".into());
    }
    answer(
        false,
        "a kernel built without preemption (no PREEMPT in uname -v)".into(),
    )
}

/// The bracketed mode of `none voluntary (full) lazy`.
fn mode_in_force(text: &str) -> Option<&str> {
    let start = text.find('(')? + 1;
    let len = text[start..].find(')')?;
    Some(text[start..start + len].trim())
}

/// Whether a preemption mode lets the scheduler take the CPU from a
/// running BPF program; `None` for a mode we do not know.
fn preempts_in_mode(mode: &str) -> Option<bool> {
    match mode {
        "none" | "voluntary" => Some(false),
        "full" | "lazy" | "rt" => Some(true),
        _ => None,
    }
}

/// The default mode that a PREEMPT_DYNAMIC kernel's config picks.
fn configured_mode(config: &str) -> Option<&'static str> {
    let set = |name: &str| config.lines().any(|l| l.trim() == format!("{name}=y"));
    if set("CONFIG_PREEMPT_NONE") {
        Some("none")
    } else if set("CONFIG_PREEMPT_VOLUNTARY") {
        Some("voluntary")
    } else if set("CONFIG_PREEMPT_LAZY") {
        Some("lazy")
    } else if set("CONFIG_PREEMPT") {
        Some("full")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(debugfs: Option<&str>, version: &str, cmdline: &str, config: Option<&str>) -> bool {
        decide(&Sources {
            debugfs,
            version,
            cmdline,
            config,
        })
        .preempts_programs
    }

    const DYNAMIC: &str = "#1 SMP PREEMPT_DYNAMIC @0";

    #[test]
    fn debugfs_says_the_mode_in_force() {
        assert!(!of(Some("(none) voluntary full lazy\n"), DYNAMIC, "", None));
        assert!(!of(Some("none (voluntary) full\n"), DYNAMIC, "", None));
        assert!(of(Some("none voluntary (full) lazy\n"), DYNAMIC, "", None));
        assert!(of(Some("none voluntary full (lazy)\n"), "", "", None));
        // An unknown mode counts as preemptible.
        assert!(of(Some("(turbo)\n"), DYNAMIC, "", None));
    }

    #[test]
    fn dynamic_kernels_take_the_boot_parameter_then_the_config() {
        let none = Some("CONFIG_PREEMPT_NONE=y\nCONFIG_PREEMPT_DYNAMIC=y\n");
        let voluntary = Some("# CONFIG_PREEMPT_NONE is not set\nCONFIG_PREEMPT_VOLUNTARY=y\n");
        let lazy = Some("CONFIG_PREEMPT_LAZY=y\nCONFIG_PREEMPT_BUILD=y\n");
        assert!(!of(None, DYNAMIC, "quiet", none));
        assert!(!of(None, DYNAMIC, "quiet", voluntary));
        assert!(of(None, DYNAMIC, "quiet", lazy));
        assert!(of(None, DYNAMIC, "quiet preempt=full", none));
        assert!(!of(None, DYNAMIC, "preempt=full preempt=none", lazy));
        // Neither: preemptible.
        assert!(of(None, DYNAMIC, "", None));
        assert!(of(None, DYNAMIC, "preempt=bogus", None));
    }

    #[test]
    fn fixed_models_are_read_from_the_version_string() {
        assert!(of(None, "#1 SMP PREEMPT_RT Debian 7.2.13", "", None));
        assert!(of(
            Some("(none) voluntary full\n"),
            "#1 SMP PREEMPT_RT",
            "",
            None
        ));
        assert!(of(None, "#1 SMP PREEMPT Tue Jan 1", "", None));
        assert!(of(None, "#1 SMP PREEMPT_LAZY", "", None));
        assert!(!of(None, "#1 SMP Debian 6.1.0", "", None));
        assert!(of(None, "", "", None));
    }

    #[test]
    fn the_running_kernel_gives_an_answer_with_its_source() {
        let p = Preemption::of_running_kernel();
        assert!(!p.why.is_empty(), "{p:?}");
    }
}
