//! The reading loop: ring buffer -> decode -> outputs, until told to stop.

use std::{future::Future, time::Duration};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{
    event::{decode, Clock, ExitView},
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
}

/// Drains the ring into the outputs until `stop` resolves, then drains what
/// is left. Errors from the outputs end the loop.
pub async fn pump(
    ring: RingBuf<MapData>,
    outputs: &mut Outputs,
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
                drain(guard.get_inner_mut(), outputs, &mut totals)?;
                guard.clear_ready();
            }
            _ = tick.tick() => drain(ring.get_mut(), outputs, &mut totals)?,
        }
    }
    drain(ring.get_mut(), outputs, &mut totals)?;
    Ok(totals)
}

pub fn drain(
    ring: &mut RingBuf<MapData>,
    outputs: &mut Outputs,
    totals: &mut Totals,
) -> Result<()> {
    // One clock reading per batch: the realtime/monotonic offset only moves
    // when the wall clock is stepped.
    let clock = Clock::now();
    let mut any = false;
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(rec) => {
                drop(item);
                outputs.exit(&ExitView::from_record(&rec, &clock))?;
                totals.written += 1;
                any = true;
            }
            None => totals.unknown += 1,
        }
    }
    if any {
        outputs.flush()?;
    }
    Ok(())
}
