//! The reading loop: ring buffer -> decode -> outputs, until told to stop.

use std::{future::Future, time::Duration};

use anyhow::Result;
use aya::maps::{HashMap, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::{ExitRecord, PENDING_TIMEOUT_NS};

use crate::{
    event::{decode, Clock, ExitView, Record},
    lineage::ProcessTable,
    output::Outputs,
};

/// How often the ring is drained when no wakeup came: the programs wake us
/// only when the ring is a quarter full, so this bounds the latency.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub written: u64,
    /// Ring items this loader does not understand (a newer eBPF object).
    pub unknown: u64,
    /// Records the loader took from `PENDING` after they waited too long.
    pub swept: u64,
}

/// Drains the ring into the outputs until `stop` resolves, then drains what
/// is left. Errors from the outputs end the loop.
pub async fn pump(
    ring: RingBuf<MapData>,
    mut pending: Pending,
    sink: &mut Sink<'_>,
    stop: impl Future<Output = ()>,
) -> Result<Totals> {
    // SAFETY: the ring owns its fd for as long as the AsyncFd owns the ring.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
    let mut totals = Totals::default();
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
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
                pending.sweep(PENDING_TIMEOUT_NS, sink, &mut totals)?;
            }
        }
    }
    drain(ring.get_mut(), sink, &mut totals)?;
    pending.sweep(0, sink, &mut totals)?;
    Ok(totals)
}

/// Where decoded records go: the outputs, and the process table when an
/// output wants lineage.
pub struct Sink<'a> {
    pub outputs: &'a mut Outputs,
    pub table: Option<ProcessTable>,
}

impl Sink<'_> {
    fn record(&mut self, rec: &Record, clock: &Clock, totals: &mut Totals) -> Result<()> {
        match rec {
            Record::Exit(exit) => {
                let mut view = ExitView::from_record(exit, clock);
                view.lineage = self.table.as_ref();
                self.outputs.exit(&view)?;
                if let Some(t) = &mut self.table {
                    t.exit(exit.pid);
                }
                totals.written += 1;
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

/// Records waiting in the kernel for their `exit_mmap` timestamp. One that
/// waited too long had its address space freed by another task (or is
/// still tearing it down at stop): take it as it is, with the time from
/// `sched_process_exit`, rather than lose it.
pub struct Pending(pub HashMap<MapData, u32, ExitRecord>);

impl Pending {
    fn sweep(
        &mut self,
        older_than_ns: u64,
        sink: &mut Sink<'_>,
        totals: &mut Totals,
    ) -> Result<()> {
        let map = &mut self.0;
        let now = monotonic_ns();
        let stale: Vec<(u32, ExitRecord)> = map
            .iter()
            .filter_map(Result::ok)
            // A slot the program is still filling has no kind yet.
            .filter(|(_, rec)| rec.kind == tracer_common::RECORD_EXIT)
            .filter(|(_, rec)| now.saturating_sub(rec.exit_ns) >= older_than_ns)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let clock = Clock::now();
        for (tid, rec) in stale {
            // Whoever deletes the entry sends it: the program may have
            // just taken it.
            if map.remove(&tid).is_ok() {
                sink.record(&Record::Exit(rec), &clock, totals)?;
                totals.swept += 1;
            }
        }
        sink.outputs.flush()
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
