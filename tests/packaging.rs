//! The Debian package: `cargo deb -p tracer` (the metadata in
//! tracer/Cargo.toml) builds a package holding the binary, the man pages
//! and completions generated from the clap definitions, the systemd unit,
//! its default config and the logrotate snippet. Packs this test's build
//! of the binary (`--profile dev`), so no release build is needed here;
//! `cargo xtask deb` makes the release package the same way.
//!
//! Needs cargo-deb and dpkg-deb; without them it prints `skipped: ...` and
//! passes, except under `CI=true` (`.ci/run` installs cargo-deb).
#![expect(
    unused_crate_dependencies,
    reason = "an integration test sees every dependency of the package"
)]

mod common;

use common::skip_or_fail;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn in_path(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_deb_holds_binary_unit_man_pages_completions_and_logrotate() {
    const NAME: &str = "the_deb_holds_binary_unit_man_pages_completions_and_logrotate";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_cargo_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb {
        return skip_or_fail(NAME, "needs cargo-deb (cargo install cargo-deb --locked)");
    }
    if !in_path("dpkg-deb") {
        return skip_or_fail(NAME, "needs dpkg-deb");
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tracer"));
    let profile_dir = bin
        .parent()
        .expect("the binary is in the profile's directory");
    // Where the package metadata's target/release/generated/ points for
    // this profile.
    let generated = profile_dir.join("generated");
    let _ = std::fs::remove_dir_all(&generated);
    run(Command::new(&bin).arg("generate").arg(&generated));
    let out_dir = std::env::temp_dir().join(format!("tracer-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let made = run(Command::new(&cargo)
        .current_dir(manifest.parent().unwrap())
        .args(["deb", "-p", "tracer", "--no-build", "--profile", "dev"])
        .args(["--no-strip", "--fast", "-q", "-o"])
        .arg(&out_dir));
    let deb = PathBuf::from(made.trim().lines().last().unwrap_or_default());
    assert!(deb.is_file(), "cargo deb made no package: {made:?}");

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let mode = f.next()?;
            Some((mode, f.last()?.trim_start_matches('.')))
        })
        .collect();
    let mode_of = |path: &str| entries.iter().find(|(_, p)| *p == path).map(|(m, _)| *m);
    for (path, mode) in [
        ("/usr/bin/tracer", "-rwxr-xr-x"),
        ("/lib/systemd/system/tracer.service", "-rw-r--r--"),
        ("/etc/default/tracer", "-rw-r--r--"),
        ("/etc/logrotate.d/tracer", "-rw-r--r--"),
        ("/usr/share/man/man1/tracer.1", "-rw-r--r--"),
        ("/usr/share/man/man1/tracer-record.1", "-rw-r--r--"),
        ("/usr/share/man/man1/tracer-run.1", "-rw-r--r--"),
        ("/usr/share/man/man1/tracer-dump.1", "-rw-r--r--"),
        ("/usr/share/man/man1/tracer-tree.1", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/tracer",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_tracer", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/tracer.fish",
            "-rw-r--r--",
        ),
    ] {
        assert_eq!(
            mode_of(path),
            Some(mode),
            "{path} in the package, mode {mode}:\n{listing}"
        );
    }

    // The files themselves: the unit as written, conffiles marked, the
    // generated pages and completions know the options.
    let extracted = out_dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted));
    let read =
        |p: &str| std::fs::read_to_string(extracted.join(p.trim_start_matches('/'))).unwrap();
    let unit = read("/lib/systemd/system/tracer.service");
    for line in [
        "ExecStart=/usr/bin/tracer record $TRACER_ARGS",
        "EnvironmentFile=-/etc/default/tracer",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/log/tracer",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "unit lacks {line:?}:\n{unit}"
        );
    }
    assert!(read("/usr/share/man/man1/tracer-record.1").contains("rotate\\-size"));
    assert!(read("/usr/share/bash-completion/completions/tracer").contains("--metrics"));
    assert!(read("/usr/share/zsh/vendor-completions/_tracer").contains("--rotate-keep"));
    assert!(read("/usr/share/fish/vendor_completions.d/tracer.fish").contains("metrics"));
    assert!(read("/etc/logrotate.d/tracer").contains("HUP"));
    let control = out_dir.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/default/tracer")
            && conffiles.lines().any(|l| l == "/etc/logrotate.d/tracer"),
        "conffiles: {conffiles}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
