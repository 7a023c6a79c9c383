//! `tracer record`: every thread group that dies, system-wide, until
//! SIGINT, SIGTERM, SIGHUP or `--duration`.

use std::time::Duration;

use anyhow::Result;

use super::{child_pid_namespace, runtime, EXIT_OUTPUT_FAILED};
use crate::{output, probes::ProbeOptions, session::Session, shutdown};

pub fn record(duration: Option<Duration>, spec: &output::Spec, opts: ProbeOptions) -> Result<i32> {
    shutdown::block_signals(false)?;
    runtime()?.block_on(session(duration, spec, opts))
}

async fn session(
    duration: Option<Duration>,
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
    let mut signals = shutdown::watch_record();
    if let Some(d) = duration {
        shutdown::deadline_in(d.saturating_add(shutdown::DRAIN));
    }
    eprintln!("tracer: recording");
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
    session.seed_lineage(None);
    // A reader that went away (`| head`) ends the session cleanly.
    session.pump(stop, true).await?;
    Ok(if session.finish()? {
        0
    } else {
        EXIT_OUTPUT_FAILED
    })
}
