//! `--metrics ADDR`: `/metrics` in the Prometheus text format (OpenMetrics
//! flavour, which Prometheus asks for), from the `prometheus-client`
//! registry. The names, labels and meanings are in README.md ("Metrics").
//!
//! The ring reader only increments atomic counters through handles it
//! resolved beforehand (no lock, no lookup per record); the programs'
//! loss counters and the outputs' counts are copied in on the drain timer.
//! A thread of its own serves the requests, one at a time with short
//! timeouts, from those atomics, and reads the ring's fill level from the
//! ring's own position pages when asked: a scrape, slow or hostile, costs
//! the reader nothing.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::RawFd,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{exit_status::ExitStatus, model::Exit, output::Outputs, probes::Counters};

type Labels = Vec<(&'static str, String)>;

/// What is served; shared with the serving thread.
struct Shared {
    registry: Registry,
    ring_fill: Gauge,
    ring: Option<RingPositions>,
}

/// The session's side: handles to bump, and the last values of the
/// counters that are copied in.
pub struct Metrics {
    written: Vec<Counter>,
    exits: Family<Labels, Counter>,
    exits_ok: Counter,
    exits_failed: Counter,
    /// By signal number, resolved on first use.
    exits_signaled: Vec<Option<Counter>>,
    /// ring_full, not_followed.
    lost: [Counter; 2],
    events_lost: Counter,
    unwritten: Vec<Counter>,
    queue: Vec<Option<Gauge>>,
    last: Counters,
    last_unwritten: Vec<u64>,
}

impl Metrics {
    /// Registers every metric for the session's outputs and starts serving
    /// them on `listener`. `ring_fd` is the ring map's descriptor, for its
    /// fill level.
    pub fn serve(
        listener: TcpListener,
        outputs: &Outputs,
        ring_fd: Option<RawFd>,
        ring_bytes: u32,
        exit_hook: &str,
    ) -> Result<Self> {
        let mut registry = Registry::default();
        let written = Family::<Labels, Counter>::default();
        registry.register(
            "tracer_records_written",
            "Exit records handed to each output while it was taking records",
            written.clone(),
        );
        let lost = Family::<Labels, Counter>::default();
        registry.register(
            "tracer_records_lost",
            "Exit records that reached no output, by reason (ring_full, not_followed)",
            lost.clone(),
        );
        let events_lost = Counter::default();
        registry.register(
            "tracer_events_lost",
            "Fork, exec and thread exit events lost with the ring full",
            events_lost.clone(),
        );
        let unwritten = Family::<Labels, Counter>::default();
        registry.register(
            "tracer_output_unwritten",
            "Lines or records a failed output could not write",
            unwritten.clone(),
        );
        let exits = Family::<Labels, Counter>::default();
        registry.register(
            "tracer_exits",
            "Exits recorded, by result (ok, failed, signaled with the signal)",
            exits.clone(),
        );
        let ring_fill: Gauge = Gauge::default();
        registry.register(
            "tracer_ring_fill_bytes",
            "Bytes in the ring buffer not yet read, when scraped",
            ring_fill.clone(),
        );
        let ring_size: Gauge = Gauge::default();
        ring_size.set(i64::from(ring_bytes));
        registry.register(
            "tracer_ring_size_bytes",
            "Size of the ring buffer",
            ring_size,
        );
        let queue = Family::<Labels, Gauge>::default();
        registry.register(
            "tracer_output_queue_length",
            "Items waiting to be sent by outputs that queue (OTLP)",
            queue.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("exit_hook", exit_hook.to_owned()),
            ])
            .set(1);
        registry.register(
            "tracer_build_info",
            "Always 1: the tracer's version and the exit hook in use",
            build,
        );

        let names = outputs.names();
        let per_output = |family: &Family<Labels, Counter>| -> Vec<Counter> {
            names
                .iter()
                .map(|n| family.get_or_create(&vec![("output", n.clone())]).clone())
                .collect()
        };
        let written = per_output(&written);
        let unwritten = per_output(&unwritten);
        let queue = names
            .iter()
            .zip(outputs.lost_and_queued())
            .map(|(n, (_, q))| q.map(|_| queue.get_or_create(&vec![("output", n.clone())]).clone()))
            .collect();
        let lost = ["ring_full", "not_followed"].map(|reason| {
            lost.get_or_create(&vec![("reason", reason.to_owned())])
                .clone()
        });
        let exits_ok = exits
            .get_or_create(&vec![("result", "ok".to_owned())])
            .clone();
        let exits_failed = exits
            .get_or_create(&vec![("result", "failed".to_owned())])
            .clone();

        let shared = Arc::new(Shared {
            registry,
            ring_fill,
            ring: ring_fd.and_then(RingPositions::map),
        });
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&listener, &shared))
            .context("cannot start the metrics thread")?;
        Ok(Self {
            last_unwritten: vec![0; written.len()],
            written,
            exits,
            exits_ok,
            exits_failed,
            exits_signaled: vec![None; 65],
            lost,
            events_lost,
            unwritten,
            queue,
            last: Counters::default(),
        })
    }

    /// One exit, handed to the outputs that still take records.
    pub fn exit(&mut self, exit: &Exit<'_>, outputs: &Outputs) {
        for (counter, live) in self.written.iter().zip(outputs.live_flags()) {
            if live {
                counter.inc();
            }
        }
        match ExitStatus::from_code(exit.exit_code) {
            ExitStatus::Exited(0) => self.exits_ok.inc(),
            ExitStatus::Exited(_) => self.exits_failed.inc(),
            ExitStatus::Signaled { signal, .. } => {
                let slot = usize::from(signal).min(self.exits_signaled.len() - 1);
                self.exits_signaled[slot]
                    .get_or_insert_with(|| {
                        let name = crate::exit_status::signal_label(signal)
                            .map_or_else(|| signal.to_string(), |l| l.to_string());
                        self.exits
                            .get_or_create(&vec![
                                ("result", "signaled".to_owned()),
                                ("signal", name),
                            ])
                            .clone()
                    })
                    .inc()
            }
        };
    }

    /// On the drain timer: the programs' loss counters and the outputs'
    /// own counts.
    pub fn update(&mut self, counters: &Counters, outputs: &Outputs) {
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        self.lost[0].inc_by(delta(counters.ring_full, self.last.ring_full));
        self.lost[1].inc_by(delta(counters.track_full, self.last.track_full));
        self.events_lost
            .inc_by(delta(counters.events_lost, self.last.events_lost));
        self.last = *counters;
        for (i, (lost, queued)) in outputs.lost_and_queued().enumerate() {
            if let (Some(c), Some(before)) = (self.unwritten.get(i), self.last_unwritten.get_mut(i))
            {
                c.inc_by(delta(lost, *before));
                *before = lost;
            }
            if let (Some(Some(g)), Some(q)) = (self.queue.get(i), queued) {
                g.set(i64::try_from(q).unwrap_or(i64::MAX));
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Shared) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        // A client that stalls is dropped; the next one is served.
        let _ = serve_one(stream, shared);
    }
}

fn serve_one(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // The request line and headers; the body of a GET is empty.
    let mut req = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, kind, body) = match (method, path) {
        (b"GET" | b"HEAD", Some(b"/metrics")) => {
            if let Some(ring) = &shared.ring {
                shared
                    .ring_fill
                    .set(i64::try_from(ring.fill()).unwrap_or(i64::MAX));
            }
            let mut text = String::new();
            encode(&mut text, &shared.registry).map_err(std::io::Error::other)?;
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        (b"GET" | b"HEAD", Some(_)) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "tracer: metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            String::new(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if method != b"HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    Ok(())
}

/// The ring's consumer and producer positions: the first two pages of the
/// ring map, mapped read-only (the kernel allows that for any process
/// holding the map's descriptor). What is between them is not read yet.
struct RingPositions {
    base: *mut libc::c_void,
    page: usize,
}

// SAFETY: the mapping is read-only, lives as long as this value, and is
// only read with atomic loads.
unsafe impl Send for RingPositions {}
// SAFETY: as above.
unsafe impl Sync for RingPositions {}

impl RingPositions {
    fn map(fd: RawFd) -> Option<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        // SAFETY: a new shared read-only mapping of a descriptor we hold;
        // it keeps the map alive by itself.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        (base != libc::MAP_FAILED).then_some(Self { base, page })
    }

    fn fill(&self) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        // SAFETY: both positions are aligned u64s within the mapping,
        // written by the kernel (producer) and the reader (consumer).
        let (consumer, producer) = unsafe {
            (
                (*self.base.cast::<AtomicU64>()).load(Ordering::Acquire),
                (*self.base.cast::<u8>().add(self.page).cast::<AtomicU64>())
                    .load(Ordering::Acquire),
            )
        };
        producer.saturating_sub(consumer)
    }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

/// Binds the metrics address; an address in use is an error at start.
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("--metrics {addr}: cannot listen"))
}
