//! One tracing session, in the order it must happen: attach the programs,
//! open the outputs, drain the ring into them until told to stop, drain
//! what is left within the deadline, then count and report.

use std::{future::Future, os::fd::AsFd as _, time::Duration};

use anyhow::{bail, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracer_common::{ExitRecord, STAMP_TIMEOUT_NS};

use crate::{
    bpf_log,
    causes::Causes,
    cgroups::{CgroupEvent, Cgroups},
    decode::{decode, Clock, Record},
    filters::Filters,
    lineage::ProcessTable,
    metrics::{self, Metrics},
    model::Exit,
    notes,
    order::Waiting,
    output::{self, Outputs, Summary},
    probes::{ProbeOptions, Probes},
    ring_positions::RingPositions,
    shutdown,
    stamps::{AwaitingStamps, Ready},
};

/// How often the ring is drained when no wakeup came: the programs wake us
/// only when the ring is a quarter full, so this bounds the latency.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(200);
/// How long a flush of the staged records retries a CPU whose stage a
/// program is filling (microseconds, unless the program was preempted):
/// in a session, where the next flush tries again, and at its end.
const STAGE_PATIENCE: Duration = Duration::from_millis(1);
const STAGE_PATIENCE_AT_END: Duration = Duration::from_millis(500);
/// Drain ticks in a row whose flush proved nothing after which the
/// records waiting for a fork are due anyway (one second).
const MAX_INCOMPLETE_FLUSHES: u32 = 5;

/// What the loader itself counted while draining.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub written: u64,
    /// Ring items this loader does not understand (a newer eBPF object).
    pub unknown: u64,
    /// Records written with the time from before `exit_mm()`: their
    /// `exit_mmap` stamp did not come.
    pub unstamped: u64,
    /// Records `tracer run` took when the group's leader was freed
    /// (`flags::AT_FREE`).
    pub late: u64,
    /// `tracer run`: groups whose exit both exit programs missed and whose
    /// leader was not freed before the end (see `await_late_records`).
    pub unfreed: u64,
}

pub struct Session {
    pub probes: Probes,
    ring: Option<RingBuf<MapData>>,
    /// Where the ring's reader and writers are: whether a drain read
    /// everything a flush put in the ring.
    ring_positions: RingPositions,
    /// The producer position once the last flush of the stages was done,
    /// `None` when it left a stage unflushed: the records that waited for
    /// it are due once the reader got past it (see `flushed`).
    flush_end: Option<usize>,
    /// Flushes in a row that proved nothing (see `flushed`).
    incomplete_flushes: u32,
    outputs: Outputs,
    /// An output shows lineage: the programs send fork and exec events.
    lineage: bool,
    /// `tracer run`: only the command's tree is followed.
    follows: bool,
    /// `tracer run` where /proc shows the programs' pids: how long the end
    /// waits for late records (see `await_late_records`).
    pub late_records_wait: Option<Duration>,
    /// The process table, when an output shows lineage.
    table: Option<ProcessTable>,
    /// What a process did, until the table holds the process (its fork
    /// event can come later: see `order`).
    waiting: Waiting,
    awaiting: AwaitingStamps,
    /// Kill and OOM events, until the exits they explain.
    causes: Causes,
    /// The v2 cgroups by id, when an output shows containers.
    cgroups: Option<Cgroups>,
    /// The exits wanted (`--container` grows as containers start).
    filters: Filters,
    totals: Totals,
    /// A flush of the staged exit records failed (said once).
    stage_flush_failed: bool,
    /// SIGHUP: reopen the file outputs (`record`).
    reopen: Option<mpsc::UnboundedReceiver<()>>,
    /// `--metrics`.
    metrics: Option<Metrics>,
    ring_bytes: u32,
    /// `--argv-bytes`, for processes older than the session too.
    argv_bytes: u32,
}

impl Session {
    /// Attaches the programs the outputs need (fork and exec events only
    /// when an output shows lineage), then opens the outputs: a session
    /// that cannot start creates, truncates and writes nothing.
    pub fn start(spec: &output::Spec, mut opts: ProbeOptions) -> Result<Self> {
        spec.check()?;
        opts.lineage = spec.wants_lineage();
        opts.causes = spec.wants_causes();
        opts.taskstats = spec.wants_taskstats();
        // The same outputs show the container; --container needs the
        // cgroup events whatever the outputs.
        opts.containers = spec.wants_containers() || !opts.filters.containers.is_empty();
        opts.threads = spec.threads;
        if opts.check_clone_args && !opts.lineage {
            bail!("--check-clone-args compares fork events: give --json too");
        }
        let mut probes = Probes::load(&opts)?;
        probes.set_filters(&opts.filters)?;
        // The attach choice with -v: by default a session says one line
        // at start, `tracer: recording` (which `cargo xtask bench` and the
        // tests wait for), from its mode.
        for (mode, why) in &probes.fallbacks {
            notes::detail(format_args!("{mode} not available: {why}"));
        }
        notes::detail(format_args!("exit records from {}", probes.exit_hook));
        notes::detail(format_args!(
            "exit programs attached {}: {}",
            if probes.preemption.preempts_programs {
                "twice (this kernel can preempt a program, and its guard then skips a task)"
            } else {
                "once (this kernel does not preempt a program)"
            },
            probes.preemption.why
        ));
        let ring = probes.take_ring()?;
        let ring_positions = RingPositions::map(ring.as_fd())?;
        // After the programs are attached: a cgroup made in between is in
        // both.
        let cgroups = opts.containers.then(Cgroups::from_mount);
        for id in opts.filters.cgroup_ids()? {
            probes.add_filter_cgroup(id)?;
        }
        if let Some(table) = &cgroups {
            let (v2, v1) = opts.filters.container_ids(table)?;
            for id in v2 {
                probes.add_filter_container(id, false)?;
            }
            for id in v1 {
                probes.add_filter_container(id, true)?;
            }
        }
        let outputs = spec.open()?;
        Ok(Self {
            probes,
            ring: Some(ring),
            ring_positions,
            flush_end: None,
            incomplete_flushes: 0,
            outputs,
            lineage: opts.lineage,
            follows: opts.follow_tracked,
            late_records_wait: None,
            table: None,
            waiting: Waiting::default(),
            awaiting: AwaitingStamps::default(),
            causes: Causes::default(),
            // After the programs are attached: a cgroup made in between is
            // in both.
            cgroups,
            filters: opts.filters.clone(),
            totals: Totals::default(),
            stage_flush_failed: false,
            reopen: None,
            metrics: None,
            ring_bytes: opts.ring_bytes,
            argv_bytes: opts.argv_bytes,
        })
    }

    /// Seeds the process table from /proc when an output shows lineage,
    /// after the programs are attached: a process created in between is in
    /// both, which the table handles. `root` bounds every ancestry (the
    /// command of `tracer run`).
    pub fn seed_lineage(&mut self, root: Option<u32>) {
        if !self.lineage {
            return;
        }
        let mut table = ProcessTable::from_proc(self.argv_bytes as usize);
        if let Some(root) = root {
            table.set_root(root);
        }
        self.table = Some(table);
    }

    /// An empty process table when an output shows lineage, fed by the
    /// events only (`/proc` does not show the programs' pids).
    pub fn start_lineage_empty(&mut self) {
        if self.lineage {
            self.table = Some(ProcessTable::default());
        }
    }

    /// Serves `/metrics` on `addr` from now on (a thread of its own).
    pub fn serve_metrics(&mut self, addr: std::net::SocketAddr) -> Result<()> {
        use std::os::fd::AsRawFd;
        let listener = metrics::bind(addr)?;
        let hook = self.probes.exit_hook.to_string();
        let ring_fd = self.ring.as_ref().map(AsRawFd::as_raw_fd);
        self.metrics = Some(Metrics::serve(
            listener,
            &self.outputs,
            ring_fd,
            self.ring_bytes,
            &hook,
        )?);
        Ok(())
    }

    /// Each message on `reopen` makes the file outputs open their paths
    /// again, after what is in the ring was written to the old files.
    pub fn reopen_on(&mut self, reopen: mpsc::UnboundedReceiver<()>) {
        self.reopen = Some(reopen);
    }

    /// Drains the ring into the outputs until `stop` resolves (or, with
    /// `until_outputs_gone`, until no output takes records any more), then
    /// drains what is left within the drain deadline.
    pub async fn pump(
        &mut self,
        stop: impl Future<Output = ()>,
        until_outputs_gone: bool,
    ) -> Result<()> {
        let ring = self.ring.take().expect("a session is pumped once");
        // SAFETY: the ring owns its fd for as long as the AsyncFd owns it.
        let mut ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        let mut bpf_log = bpf_log::Forward::new(self.probes.logger.take())?;
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        let mut reopen = self.reopen.take();
        loop {
            if until_outputs_gone && self.outputs.live() == 0 {
                break;
            }
            tokio::select! {
                biased;
                () = &mut stop => break,
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                Some(()) = async {
                    match &mut reopen {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.flush_stages();
                    self.drain(ring.get_mut());
                    self.flushed();
                    self.outputs.reopen();
                }
                r = bpf_log.ready() => r?,
                _ = tick.tick() => {
                    self.flush_stages();
                    self.drain(ring.get_mut());
                    self.flushed();
                    self.expire(STAMP_TIMEOUT_NS);
                    self.update_metrics()?;
                }
            }
        }
        if let Some(limit) = self.late_records_wait {
            self.await_late_records(limit).await?;
        }
        // Whatever ended the session, what is left must be written within
        // the drain deadline; an output that blocks past it is given up.
        shutdown::deadline_in(shutdown::DRAIN);
        let (unflushed, offline) = self.flush_stages_at_end();
        self.drain_past_flush(ring.get_mut()).await;
        self.take_left_in_stages(&unflushed, &offline);
        self.release_all();
        self.expire(0);
        bpf_log.flush();
        self.update_metrics()
    }

    /// The records staged on the CPUs into the ring, before a drain. A
    /// stage that a program is filling waits for the next flush. A failure
    /// to run the flush at all is said once: what it leaves staged goes out
    /// with a later flush, or is taken from the map at the end.
    fn flush_stages(&mut self) {
        self.waiting.flush_begun();
        self.flush_end = match self.probes.flush_stages(false, STAGE_PATIENCE) {
            Ok(busy) if busy.is_empty() => Some(self.ring_positions.producer()),
            Ok(_) => None,
            Err(e) => {
                self.say_flush_failed(&e);
                None
            }
        };
    }

    /// The last drain: until the reader got past what the last flush put
    /// in the ring, within [`STAGE_PATIENCE_AT_END`] (a record that a
    /// program is still writing stops the reader; it is committed within
    /// microseconds unless its program was interrupted). What is left
    /// then is said.
    async fn drain_past_flush(&mut self, ring: &mut RingBuf<MapData>) {
        let end = self.ring_positions.producer();
        let give_up = std::time::Instant::now() + STAGE_PATIENCE_AT_END;
        loop {
            self.drain(ring);
            if self.ring_positions.read_past(end) {
                return;
            }
            if std::time::Instant::now() >= give_up {
                eprintln!(
                    "tracer: a record still being written into the ring after {} ms at the \
                     end: it and what came after it are not written",
                    STAGE_PATIENCE_AT_END.as_millis()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn say_flush_failed(&mut self, e: &anyhow::Error) {
        if !self.stage_flush_failed {
            self.stage_flush_failed = true;
            eprintln!(
                "tracer: cannot put the records staged on each CPU into the ring: {e:#}; \
                 up to {} a CPU wait for the next try, or are taken from the map at the end",
                tracer_common::STAGE_LEN - 1
            );
        }
    }

    /// The last flush, of every online CPU's stage: returns the CPUs whose
    /// stages it may have left records in, for [`Self::take_left_in_stages`]:
    /// those a program kept filling for [`STAGE_PATIENCE_AT_END`], the
    /// offline ones (nothing runs there to flush them), or every one when
    /// the flush could not be run; and the offline ones apart.
    fn flush_stages_at_end(&mut self) -> (Vec<u32>, Vec<u32>) {
        self.waiting.flush_begun();
        // Per-CPU map values are indexed by possible CPU, 0 to nr_cpus.
        let possible: Vec<u32> = (0..aya::util::nr_cpus().unwrap_or(0) as u32).collect();
        let online = aya::util::online_cpus().unwrap_or_default();
        let offline: Vec<u32> = possible
            .iter()
            .copied()
            .filter(|c| !online.contains(c))
            .collect();
        let unflushed = match self.probes.flush_stages(true, STAGE_PATIENCE_AT_END) {
            Ok(mut left) => {
                if !left.is_empty() {
                    eprintln!(
                        "tracer: a program kept filling the stage of records of CPU {left:?} \
                         for {} ms at the end: what it had staged before is taken from the \
                         map, the record it was writing is not",
                        STAGE_PATIENCE_AT_END.as_millis(),
                    );
                }
                left.extend(&offline);
                left
            }
            Err(e) => {
                self.say_flush_failed(&e);
                possible
            }
        };
        (unflushed, offline)
    }

    /// At the end, after the last drain: what the last flush left in the
    /// stages of `cpus` is read from the map and goes to the outputs
    /// (`offline` CPUs are named: their records waited there since they
    /// went offline).
    fn take_left_in_stages(&mut self, cpus: &[u32], offline: &[u32]) {
        if cpus.is_empty() {
            return;
        }
        let left = match self.probes.left_in_stages(cpus) {
            Ok(left) => left,
            Err(e) => {
                eprintln!(
                    "tracer: cannot read the records left staged on CPU {cpus:?} at the end: \
                     {e:#}; up to {} a CPU not written",
                    tracer_common::STAGE_LEN - 1
                );
                return;
            }
        };
        let clock = Clock::now();
        for (cpu, item) in left {
            if offline.contains(&cpu) {
                eprintln!(
                    "tracer: CPU {cpu} is offline: {} record(s) staged there taken from the map",
                    crate::decode::records(&item).count()
                );
            }
            for bytes in crate::decode::records(&item) {
                self.take(decode(bytes), &clock);
            }
        }
        self.outputs.flush();
    }

    fn update_metrics(&mut self) -> Result<()> {
        if let Some(m) = &mut self.metrics {
            m.update(&self.probes.counters()?, &self.outputs);
        }
        Ok(())
    }

    /// The counts of the whole session, the programs' and the loader's.
    fn summary(&self) -> Result<Summary> {
        let counters = self.probes.counters()?;
        Ok(Summary {
            written: self.totals.written,
            ring_full: counters.ring_full,
            track_full: counters.track_full + self.totals.unfreed,
            events_lost: counters.events_lost,
            stamps_lost: counters.stamps_lost,
            unstamped: self.totals.unstamped,
            late: self.totals.late,
            unknown: self.totals.unknown,
            // `run` follows with two copies of each and counts what both
            // missed itself (track_full).
            exit_runs_skipped: if self.follows {
                0
            } else {
                self.probes.exit_runs_skipped()
            },
            event_runs_skipped: self.probes.event_runs_skipped()
                + if self.follows {
                    self.probes.thread_figures_skipped_at_exit_tp()
                } else {
                    0
                },
            output_lost: self.output_lost(),
        })
    }

    /// What each failed output could not write, by its name.
    fn output_lost(&self) -> Vec<(String, u64)> {
        self.outputs
            .failures()
            .into_iter()
            .filter(|f| !f.closed)
            .map(|f| (f.name, f.lost))
            .collect()
    }

    /// `tracer run`, at the end: waits, at most `limit`, for the frees of
    /// the followed groups whose exit the kernel hid from both exit
    /// programs and that are reaped already (the command's own included,
    /// which the session has just reaped), so that `track_free` writes
    /// their records before the last drain. Those still not freed are
    /// counted as lost.
    async fn await_late_records(&mut self, limit: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let waiting = self.probes.tracked_awaiting_free()?;
            if waiting == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                self.totals.unfreed = waiting as u64;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the session: the summary to the outputs that keep one and to
    /// standard error, a line for every output that failed. Returns whether
    /// every output took everything it was given.
    pub fn finish(&mut self) -> Result<bool> {
        if let Some(t) = &self.table {
            notes::detail(format_args!(
                "lineage table: {} processes at the end, {} at most; {} records at most \
                 waited for their process's fork event",
                t.len(),
                t.peak(),
                self.waiting.peak()
            ));
        }
        self.outputs.deliver();
        let summary = self.summary()?;
        self.outputs.finish(&summary);
        // An output that failed while taking the summary counts it.
        let summary = Summary {
            output_lost: self.output_lost(),
            ..summary
        };
        // -q keeps the summary only when something was lost.
        if notes::level() >= notes::Level::Normal
            || summary.lost() > 0
            || summary.events_lost > 0
            || !summary.output_lost.is_empty()
        {
            eprintln!("{}", summary_line(&summary));
        }
        let mut ok = true;
        for f in self.outputs.failures() {
            if f.closed {
                continue;
            }
            ok = false;
            eprintln!(
                "tracer: output {} failed, {} lines or records not written: {}",
                f.name, f.lost, f.error
            );
        }
        if self.probes.check_clone_args {
            let c = self.probes.counters()?;
            eprintln!(
                "tracer: clone args check: {} fork events agree with kernel_clone's arguments, \
                 {} differ, {} had no kernel_clone call",
                c.clone_agree, c.clone_differ, c.clone_unseen
            );
        }
        Ok(ok)
    }

    /// After a flush of the stages was drained: what waited for a fork
    /// since before the flush goes on without it, and the table forgets
    /// the dead it no longer needs.
    fn flushed(&mut self) {
        // A flush that left a stage unflushed, or a drain that stopped at a
        // record still being written before the flush's records, proves
        // nothing: what waits goes on waiting (and a fork it waits for
        // may still come).
        let complete = self
            .flush_end
            .take()
            .is_some_and(|end| self.ring_positions.read_past(end));
        // Bounded: a stage found busy at every flush (a storm of exits on
        // one CPU) must not hold the rest back for the whole session.
        let due = complete || self.incomplete_flushes >= MAX_INCOMPLETE_FLUSHES;
        self.incomplete_flushes = if due { 0 } else { self.incomplete_flushes + 1 };
        if due && !self.waiting.is_empty() {
            let clock = Clock::now();
            for rec in self.waiting.take_due() {
                self.apply(&rec, &clock);
            }
            self.outputs.flush();
        }
        if let Some(t) = &mut self.table {
            t.sweep();
        }
    }

    /// At the end, after the last drain: whatever still waits.
    fn release_all(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let clock = Clock::now();
        // Each round takes at least one; applying a fork takes what its
        // process did.
        while !self.waiting.is_empty() {
            for rec in self.waiting.take_all() {
                self.apply(&rec, &clock);
            }
        }
        self.outputs.flush();
    }

    /// A record, once the process it is about is in the table (see
    /// `order`): held back until then.
    fn record(&mut self, rec: &Record, clock: &Clock) {
        if let (Some(table), Some(pid)) = (&self.table, Waiting::subject(rec)) {
            if !table.knows(pid) || self.waiting.waits_for(pid) {
                self.waiting.hold(pid, rec.clone());
                return;
            }
        }
        self.apply(rec, clock);
    }

    fn apply(&mut self, rec: &Record, clock: &Clock) {
        match rec {
            Record::Exit(exit) if AwaitingStamps::awaits(exit) => match self.awaiting.hold(*exit) {
                Some(Ready::Stamped(exit)) => self.exit(&exit, clock),
                Some(Ready::Unstamped(exit)) => {
                    self.totals.unstamped += 1;
                    self.exit(&exit, clock);
                }
                None => {}
            },
            Record::Exit(exit) => self.exit(exit, clock),
            Record::MmapStamp(stamp) => {
                if let Some(exit) = self.awaiting.stamp(stamp) {
                    self.exit(&exit, clock);
                }
            }
            Record::Fork(fork) => {
                if let Some(t) = &mut self.table {
                    t.fork(fork);
                }
                self.outputs.fork(fork, clock);
                // What the new process did before this came, in order.
                for rec in self.waiting.take_for(fork.child_pid) {
                    self.record(&rec, clock);
                }
            }
            Record::ThreadExit(t) => self.outputs.thread_exit(t, clock),
            Record::Kill(kill) => self.causes.kill(kill),
            Record::Oom(oom) => self.causes.oom(oom),
            Record::Cgroup(event) => {
                if let Some(c) = &mut self.cgroups {
                    c.event(event);
                }
                self.watch_containers(event);
            }
            Record::Exec(exec) => {
                if let Some(t) = &mut self.table {
                    t.exec(exec);
                }
                self.outputs.exec(exec, clock);
            }
        }
    }

    /// `--container`: a container's cgroup made since the start joins the
    /// filter. (An exit in it before the loader read this event, within a
    /// millisecond or so, is not recorded.)
    fn watch_containers(&mut self, event: &CgroupEvent) {
        if self.filters.containers.is_empty() || event.event != tracer_common::CGROUP_MKDIR {
            return;
        }
        let v1 = event.hierarchy != 0;
        let wanted = crate::container::container_of(&event.path)
            .is_some_and(|c| self.filters.wants_container(&c.id));
        if wanted {
            if let Err(e) = self.probes.add_filter_container(event.id, v1) {
                eprintln!("tracer: --container: {e:#}: its exits are not recorded");
            }
        }
        // Decided: from now on the kernel says pass or fail by itself.
        if let Err(e) = self.probes.forget_pending(event.id, v1) {
            eprintln!("tracer: --container: {e:#}");
        }
    }

    /// An exit the kernel sent undecided (its cgroup was new, see
    /// `flags::CONTAINER_UNDECIDED`): whether it is a wanted container's.
    fn wanted_container(&self, exit: &ExitRecord) -> bool {
        let Some(table) = &self.cgroups else {
            return false;
        };
        let named = |c: Option<&crate::cgroups::CgroupInfo>| {
            c.and_then(|c| c.container.as_ref())
                .is_some_and(|c| self.filters.wants_container(&c.id))
        };
        named(table.get(exit.cgroup_id)) || named(table.get_v1(exit.cgroup_v1_id))
    }

    fn exit(&mut self, exit: &ExitRecord, clock: &Clock) {
        if exit.flags & tracer_common::flags::CONTAINER_UNDECIDED != 0
            && !self.wanted_container(exit)
        {
            // Filtered out, late: not wanted, not lost.
            if let Some(t) = &mut self.table {
                t.exit(exit.pid);
            }
            return;
        }
        let cause = self.causes.take(exit.pid, Some(exit.tid), exit.exit_code);
        let decoded = Exit::from_record(exit, clock)
            .with_lineage(self.table.as_ref())
            .with_cause(&cause)
            .with_cgroups(
                self.cgroups.as_ref().and_then(|c| c.get(exit.cgroup_id)),
                self.cgroups
                    .as_ref()
                    .and_then(|c| c.get_v1(exit.cgroup_v1_id)),
            );
        self.outputs.exit(&decoded);
        if let Some(m) = &mut self.metrics {
            m.exit(&decoded, &self.outputs);
        }
        let late = decoded.probed.is_some_and(|p| p.late);
        if let Some(t) = &mut self.table {
            t.exit(exit.pid);
        }
        self.totals.written += 1;
        self.totals.late += u64::from(late);
    }

    /// Writes the records that awaited their stamp `timeout_ns` or more
    /// (all of them with 0, at the end).
    fn expire(&mut self, timeout_ns: u64) {
        if self.awaiting.is_empty() {
            return;
        }
        let clock = Clock::now();
        for exit in self.awaiting.expire(shutdown::monotonic_ns(), timeout_ns) {
            self.totals.unstamped += 1;
            self.exit(&exit, &clock);
        }
        self.outputs.flush();
    }

    /// A decoded record to the outputs, or counted unknown; whether it
    /// was one.
    fn take(&mut self, rec: Option<Record>, clock: &Clock) -> bool {
        match rec {
            Some(rec) => {
                self.record(&rec, clock);
                true
            }
            None => {
                self.totals.unknown += 1;
                false
            }
        }
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        // One clock reading per batch: the realtime/monotonic offset only
        // moves when the wall clock is stepped.
        let clock = Clock::now();
        let mut any = false;
        while let Some(item) = ring.next() {
            if crate::decode::records(&item).nth(1).is_none() {
                // One record, the usual case but for staged ones (exits,
                // forks): the ring gets its space back before the outputs
                // write it.
                let rec = decode(&item);
                drop(item);
                any |= self.take(rec, &clock);
                continue;
            }
            for bytes in crate::decode::records(&item) {
                any |= self.take(decode(bytes), &clock);
            }
        }
        if any {
            self.outputs.flush();
        }
    }
}

/// The one line on standard error that says what was written and what was
/// lost, by reason.
fn summary_line(s: &Summary) -> String {
    let mut line = format!("tracer: {} records written, {} lost", s.written, s.lost());
    if s.ring_full > 0 {
        line += &format!(" ({} with the ring full: raise --ring-size)", s.ring_full);
    }
    if s.track_full > 0 {
        line += &format!(
            " ({} groups of the command's tree not recorded: the tracking map was \
             full, or a group both exit programs missed was not freed before the end)",
            s.track_full
        );
    }
    if s.events_lost > 0 {
        line += &format!(
            "; {} fork, exec or thread events lost with the ring full",
            s.events_lost
        );
    }
    if s.unstamped > 0 {
        line += &format!(
            "; {} timed before their address space was freed",
            s.unstamped
        );
        if s.stamps_lost > 0 {
            line += &format!(
                " ({} of their stamps lost with the ring full)",
                s.stamps_lost
            );
        }
    }
    if s.late > 0 {
        line += &format!(
            "; {} written late, when their leader was freed: the kernel skipped both exit \
             programs (\"late\": true; see README, \"What lost counts\")",
            s.late
        );
    }
    if s.unknown > 0 {
        line += &format!(", {} unknown ring items skipped", s.unknown);
    }
    if s.exit_runs_skipped > 0 {
        line += &format!(
            "; up to {} more not recorded: the kernel skipped the exit programs that often \
             (its recursion guard; see README, \"What lost counts\")",
            s.exit_runs_skipped
        );
    }
    if s.event_runs_skipped > 0 {
        line += &format!(
            "; the kernel skipped the event programs {} times: up to that many fork, exec, \
             kill, cgroup or thread events not sent, or threads' taskstats figures missing \
             from their group's",
            s.event_runs_skipped
        );
    }
    line
}
