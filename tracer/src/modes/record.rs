//! `tracer record`: every thread group that dies, system-wide, until
//! SIGINT, SIGTERM or `--duration`; SIGHUP reopens the file outputs.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;

use super::{child_pid_namespace, runtime, EXIT_OUTPUT_FAILED};
use crate::{output, probes::ProbeOptions, session::Session, shutdown};

pub fn record(
    duration: Option<Duration>,
    metrics: Option<SocketAddr>,
    spec: &output::Spec,
    opts: ProbeOptions,
) -> Result<i32> {
    shutdown::block_signals(false)?;
    runtime()?.block_on(session(duration, metrics, spec, opts))
}

async fn session(
    duration: Option<Duration>,
    metrics: Option<SocketAddr>,
    spec: &output::Spec,
    opts: ProbeOptions,
) -> Result<i32> {
    if let Some(ns) = child_pid_namespace() {
        eprintln!(
            "tracer: warning: inside a pid namespace of its own (pid namespace {ns}): \
             every process of the host is recorded, with the host's pids"
        );
    }
    let mut session = Session::start(spec, opts)?;
    if let Some(addr) = metrics {
        session.serve_metrics(addr)?;
    }
    let (mut signals, reopen) = shutdown::watch_record();
    session.reopen_on(reopen);
    // Before saying so: a process that dies once we said "recording" has
    // its exec context from /proc (a zombie has no /proc/PID/exe).
    session.seed_lineage(None);
    crate::notes::note(format_args!("recording"));
    if let Some(d) = duration {
        shutdown::deadline_in(d.saturating_add(shutdown::DRAIN));
    }
    let stop = async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.recv() => {}
            () = sleep => {}
        }
    };
    // A reader that went away (`| head`) ends the session cleanly.
    session.pump(stop, true).await?;
    Ok(if session.finish()? {
        0
    } else {
        EXIT_OUTPUT_FAILED
    })
}
