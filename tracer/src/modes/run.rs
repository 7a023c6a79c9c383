//! `tracer run -- CMD`: start CMD and record it and every thread group
//! descended from it; exit with CMD's status.

use std::{ffi::OsString, net::SocketAddr};

use anyhow::{bail, Result};

use super::{own_pid_namespace, runtime, EXIT_RUN_FAILED};
use crate::{exit_status::ExitStatus, output, probes::ProbeOptions, session::Session, shutdown};

/// A failure of the tracer's own is reported as 125, as timeout(1), env(1)
/// and docker run do, so that it cannot be taken for the command's status.
pub fn run(
    command: &[OsString],
    metrics: Option<SocketAddr>,
    spec: &output::Spec,
    opts: ProbeOptions,
) -> Result<i32> {
    shutdown::block_signals(true)?;
    match runtime()?.block_on(session(command, metrics, spec, opts)) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("tracer: {e:#}");
            Ok(EXIT_RUN_FAILED)
        }
    }
}

async fn session(
    command: &[OsString],
    metrics: Option<SocketAddr>,
    spec: &output::Spec,
    mut opts: ProbeOptions,
) -> Result<i32> {
    // In a pid namespace of our own (a container), our pid is not the one
    // the programs see: they find us by our namespace pid instead.
    let own_ns = own_pid_namespace();
    opts.self_ns = own_ns.map(|(dev, ino)| (dev, ino, std::process::id()));
    opts.follow_tracked = true;
    let mut session = Session::start(spec, opts)?;
    if let Some(addr) = metrics {
        session.serve_metrics(addr)?;
    }
    crate::notes::note(format_args!("recording"));

    // Track ourselves while we create the command: the fork tracker then
    // marks it tracked before it first runs, so none of its own children
    // can slip by. Then stop tracking ourselves.
    let spawned = if own_ns.is_some() {
        session.probes.find_self(true)?;
        let spawned = spawn(command);
        session.probes.find_self(false)?;
        match session.probes.self_pid()? {
            Some(me) => session.probes.untrack(me)?,
            None if spawned.is_ok() => bail!(
                "tracer run in a pid namespace: the programs did not see the tracer create \
                 the command, so it cannot be followed"
            ),
            None => {}
        }
        spawned
    } else {
        let me = std::process::id();
        session.probes.track(me)?;
        let spawned = spawn(command);
        session.probes.untrack(me)?;
        spawned
    };
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let name = output::text::escaped(command[0].as_encoded_bytes());
            eprintln!("tracer: cannot start {name}: {e}");
            // As env(1) and timeout(1): 127 not found, 126 not runnable.
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let pid = child.id() as i32;

    // Signals sent to us are passed on to the command; we keep reading
    // until it has exited (the signal thread reaps it), then drain.
    let mut events = shutdown::watch_run(pid);
    let mut wait_status = None;
    let stop = async {
        while let Some(ev) = events.recv().await {
            if let shutdown::Event::CommandExited(status) = ev {
                wait_status = Some(status);
                break;
            }
        }
    };
    // /proc shows the namespace's pids, the programs the host's: in a
    // namespace the table learns only from the events.
    if own_ns.is_none() {
        session.seed_lineage(Some(pid as u32));
    } else {
        session.start_lineage_empty();
    }
    if own_ns.is_none() {
        // (By /proc, as below.)
        session.late_records_wait = Some(std::time::Duration::from_secs(2));
    }
    session.pump(stop, false).await?;
    // A wait status is encoded as acct's exit code (status << 8, or the
    // signal | 0x80 with a core): one decoding serves both.
    let code = wait_status.map_or(EXIT_RUN_FAILED, |status| {
        ExitStatus::from_code(status as u32).shell_status()
    });
    let ok = session.finish()?;
    // (By /proc: only where it shows the programs' pids.)
    let alive = if own_ns.is_none() {
        session.probes.tracked_alive().unwrap_or(0)
    } else {
        0
    };
    if alive > 0 {
        eprintln!(
            "tracer: {alive} descendant processes still running; their exits are not recorded"
        );
    }
    Ok(if ok { code } else { EXIT_RUN_FAILED })
}

fn spawn(command: &[OsString]) -> std::io::Result<std::process::Child> {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: the closure only calls sigprocmask, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            shutdown::unblock_signals_in_child();
            Ok(())
        });
    }
    cmd.spawn()
}
