//! The reading loop: ring buffer -> decode -> outputs, until told to stop.

use std::{future::Future, time::Duration};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::{ExitRecord, STAMP_TIMEOUT_NS};

use crate::{
    event::{decode, Clock, ExitView, Record},
    lineage::ProcessTable,
    output::Outputs,
    stamps::AwaitingStamps,
};

/// How often the ring is drained when no wakeup came: the programs wake us
/// only when the ring is a quarter full, so this bounds the latency.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub written: u64,
    /// Ring items this loader does not understand (a newer eBPF object).
    pub unknown: u64,
    /// Records written with the time from before `exit_mm()`: their
    /// `exit_mmap` stamp did not come.
    pub unstamped: u64,
}

/// Drains the ring into the outputs until `stop` resolves (or, with
/// `until_outputs_gone`, until no output takes records any more), then
/// drains what is left within the drain deadline.
pub async fn pump(
    ring: RingBuf<MapData>,
    sink: &mut Sink<'_>,
    stop: impl Future<Output = ()>,
    until_outputs_gone: bool,
) -> Result<Totals> {
    // SAFETY: the ring owns its fd for as long as the AsyncFd owns the ring.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
    let mut totals = Totals::default();
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        if until_outputs_gone && sink.outputs.live() == 0 {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), sink, &mut totals)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                drain(ring.get_mut(), sink, &mut totals)?;
                sink.expire(STAMP_TIMEOUT_NS, &mut totals)?;
            }
        }
    }
    // Whatever ended the session, what is left must be written within the
    // drain deadline; an output that blocks past it is given up.
    crate::shutdown::deadline_in(crate::shutdown::DRAIN);
    drain(ring.get_mut(), sink, &mut totals)?;
    sink.expire(0, &mut totals)?;
    Ok(totals)
}

/// Where decoded records go: the outputs, and the process table when an
/// output wants lineage.
pub struct Sink<'a> {
    pub outputs: &'a mut Outputs,
    pub table: Option<ProcessTable>,
    awaiting: AwaitingStamps,
}

impl<'a> Sink<'a> {
    pub fn new(outputs: &'a mut Outputs, table: Option<ProcessTable>) -> Self {
        Self {
            outputs,
            table,
            awaiting: AwaitingStamps::default(),
        }
    }

    fn record(&mut self, rec: &Record, clock: &Clock, totals: &mut Totals) -> Result<()> {
        match rec {
            Record::Exit(exit) if AwaitingStamps::awaits(exit) => {
                if let Some(unstamped) = self.awaiting.hold(*exit) {
                    totals.unstamped += 1;
                    self.exit(&unstamped, clock, totals)?;
                }
            }
            Record::Exit(exit) => self.exit(exit, clock, totals)?,
            Record::MmapStamp(stamp) => {
                if let Some(exit) = self.awaiting.stamp(stamp) {
                    self.exit(&exit, clock, totals)?;
                }
            }
            Record::Fork(fork) => {
                if let Some(t) = &mut self.table {
                    t.fork(fork);
                }
                self.outputs.fork(fork, clock)?;
            }
            Record::ThreadExit(t) => self.outputs.thread_exit(t, clock)?,
            Record::Exec(exec) => {
                if let Some(t) = &mut self.table {
                    t.exec(exec);
                }
                self.outputs.exec(exec, clock)?;
            }
        }
        Ok(())
    }

    fn exit(&mut self, exit: &ExitRecord, clock: &Clock, totals: &mut Totals) -> Result<()> {
        let mut view = ExitView::from_record(exit, clock);
        view.lineage = self.table.as_ref();
        self.outputs.exit(&view)?;
        if let Some(t) = &mut self.table {
            t.exit(exit.pid);
        }
        totals.written += 1;
        Ok(())
    }

    /// Writes the records that awaited their stamp `timeout_ns` or more
    /// (all of them with 0, at the end).
    fn expire(&mut self, timeout_ns: u64, totals: &mut Totals) -> Result<()> {
        if self.awaiting.is_empty() {
            return Ok(());
        }
        let clock = Clock::now();
        for exit in self
            .awaiting
            .expire(crate::shutdown::monotonic_ns(), timeout_ns)
        {
            totals.unstamped += 1;
            self.exit(&exit, &clock, totals)?;
        }
        self.outputs.flush()
    }
}

pub fn drain(ring: &mut RingBuf<MapData>, sink: &mut Sink<'_>, totals: &mut Totals) -> Result<()> {
    // One clock reading per batch: the realtime/monotonic offset only moves
    // when the wall clock is stepped.
    let clock = Clock::now();
    let mut any = false;
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(rec) => {
                drop(item);
                sink.record(&rec, &clock, totals)?;
                any = true;
            }
            None => totals.unknown += 1,
        }
    }
    if any {
        sink.outputs.flush()?;
    }
    Ok(())
}
