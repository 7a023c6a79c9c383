//! Loading and attaching the eBPF programs, and the maps they share with us.

use std::fmt;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint},
    Ebpf, EbpfLoader,
};
use tracer_common::{counter, tracked, Config, Tracked, ABSENT};

use crate::{
    bpf_log::{self, BpfLog},
    btf::{AttachTargets, KernelBtf, KernelLayout},
    filters::Filters,
    preemption::Preemption,
};

/// The eBPF object, built by `cargo xtask build-ebpf` and committed, so that
/// building the tool needs only stable Rust.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../ebpf/tracer.bpf.o");

/// Where the exit record is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// fentry, else kprobe, else the tracepoint: the first that loads.
    Auto,
    /// fentry on `acct_process`, the kernel's own accounting hook.
    Fentry,
    /// kprobe on `acct_process`.
    Kprobe,
    /// tp_btf `sched_process_exit`: needs only BTF; works everywhere.
    Tracepoint,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Fentry => "fentry/acct_process",
            Self::Kprobe => "kprobe/acct_process",
            Self::Tracepoint => "tp_btf/sched_process_exit",
        })
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub attach: AttachMode,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_bytes: u32,
    /// Bytes of argv an exec event carries at most.
    pub argv_bytes: u32,
    /// Only thread groups created by tracked ones (`tracer run`).
    pub follow_tracked: bool,
    /// Fork and exec events too (an output wants lineage).
    pub lineage: bool,
    /// A record for each thread that dies before its group.
    pub threads: bool,
    /// Hook `kernel_clone` too and compare every fork event with its
    /// arguments (a cross-check for the tests; needs `lineage`).
    pub check_clone_args: bool,
    /// Kill and OOM events too (an output shows why a process died).
    pub causes: bool,
    /// taskstats' figures on every exit (an output shows them).
    pub taskstats: bool,
    /// Cgroup events and the pids of each process's own pid namespace (an
    /// output shows which container a process died in).
    pub containers: bool,
    /// The exits wanted.
    pub filters: Filters,
    /// `tracer run` in a pid namespace of its own: that namespace's device
    /// and inode, and the tracer's pid in it.
    pub self_ns: Option<(u64, u64, u32)>,
    /// The programs' diagnostics (`--bpf-log`).
    pub bpf_log: BpfLog,
}

/// 2 MiB: room for about 10,000 exit records (192 bytes, 200 with the
/// ring's header). A ring costs twice its size in resident memory from
/// the start, as the kernel maps its data pages twice, all at mmap time:
/// the former default of 8 MiB was 16 MiB of the loader's RSS.
///
/// What it must absorb is the records that arrive while the reader does
/// not run: up to a quarter of the ring before the wakeup, plus the
/// stall. Measured here (2 cores, kernel 6.18), `tracer run --acct-file F
/// -- fork_churn 30000` (about 5,200 exits a second) with the tracer
/// stopped for 0.5 s a third of the way in:
///   256K: 928 lost (1 run);  512K: 0 lost in 3 runs of 4, 726 in one;
///   1M: 0 lost in 4 of 4 runs;  2M: 0 lost in 8 of 8 runs;
///   with `--json` too (fork events as well): 1M and 2M, 0 lost (2 runs each).
/// 1M would pass with a quarter to spare; 2M leaves about 1 MiB, room for
/// a second of such a stall, for about 4 MiB of RSS. vfork_churn (about
/// 18,000 exits a second) stopped the same way lost 1,393 of 90,001 in one
/// run of two at 2M and none at 4M: a faster-dying workload with a
/// stalled reader needs `--ring-size`.
pub const DEFAULT_RING_BYTES: u32 = 2 << 20;

/// Rings from this size on let records sample the fill level
/// (`Config::wakeup_check_mask`).
const SAMPLED_WAKEUP_MIN_RING: u32 = 256 << 10;

/// The kernel functions the programs attach to with fentry: BTF types the
/// loader looks up by name. Each is there only when a program may attach
/// to it: taskstats_exit when an output shows taskstats' figures,
/// kernel_clone for `--check-clone-args`.
fn attach_funcs(opts: &ProbeOptions) -> Vec<&'static str> {
    let mut funcs = vec!["acct_process"];
    if opts.taskstats {
        funcs.push("taskstats_exit");
    }
    if opts.check_clone_args {
        funcs.push("kernel_clone");
    }
    funcs
}

/// The tracepoints the programs attach to with tp_btf (their
/// `btf_trace_*` typedefs).
const ATTACH_TRACEPOINTS: [&str; 10] = [
    "cgroup_mkdir",
    "cgroup_rmdir",
    "sched_process_exit",
    "exit_mmap",
    "task_newtask",
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_free",
    "signal_generate",
    "mark_victim",
];

/// Loaded and attached programs; detached when dropped.
pub struct Probes {
    ebpf: Ebpf,
    /// The exit hook in use.
    pub exit_hook: AttachMode,
    /// Why the modes tried before `exit_hook` did not load (auto mode).
    pub fallbacks: Vec<(AttachMode, String)>,
    /// `kernel_clone` is hooked for `--check-clone-args`.
    pub check_clone_args: bool,
    /// The programs' log ring (`--bpf-log`); the session takes it.
    pub logger: Option<bpf_log::Logger>,
    /// Whether the kernel can preempt a program, so that the exit
    /// programs are attached twice, and why we think so.
    pub preemption: Preemption,
}

impl Probes {
    pub fn load(opts: &ProbeOptions) -> Result<Self> {
        map_large_blocks();
        preflight()?;
        check_ring_size(opts.ring_bytes)?;
        let (layout, targets) = {
            let kernel = KernelBtf::from_running_kernel()?;
            let layout = KernelLayout::from_btf(&kernel)?;
            (
                layout,
                kernel.attach_targets(&attach_funcs(opts), &ATTACH_TRACEPOINTS),
            )
        };
        // aya gets a stand-in for the kernel's BTF for each program load
        // (`AttachTargets::stand_in`), built once the kernel's BTF is freed
        // and dropped after the load, so no two of them add up.
        let preemption = Preemption::of_running_kernel();
        let twice = preemption.preempts_programs;
        let defer = layout.exit_mmap_stamp
            && matches!(opts.attach, AttachMode::Auto | AttachMode::Tracepoint);
        let config = Config {
            exit_tp_has_group_dead: layout.exit_tp_has_group_dead.into(),
            follow_tracked: opts.follow_tracked.into(),
            defer_to_exit_mmap: defer.into(),
            lineage: opts.lineage.into(),
            pacct_std: layout.pacct_std.into(),
            ioac_std: layout.ioac_std.into(),
            check_clone_args: opts.check_clone_args.into(),
            // One record in 32 looks at the fill level. With a quarter of
            // the ring as the mark, the others overshoot it by about 32
            // records (20 KiB at most), which only a small ring minds.
            wakeup_check_mask: if opts.ring_bytes >= SAMPLED_WAKEUP_MIN_RING {
                31
            } else {
                0
            },
            // A quarter full wakes the reader; below that its timer drains.
            wakeup_bytes: u64::from(opts.ring_bytes / 4),
            oom_victim_task: layout.oom_victim_task.into(),
            argv_bytes: opts.argv_bytes,
            ns_ids: opts.containers.into(),
            filters: opts.filters.bits(),
            self_ns_dev: opts.self_ns.map_or(0, |s| s.0),
            self_ns_ino: opts.self_ns.map_or(0, |s| s.1),
            self_ns_tgid: opts.self_ns.map_or(0, |s| s.2),
            v1_hierarchy: if opts.containers {
                crate::cgroups::memory_v1_hierarchy()
            } else {
                0
            },
            delayacct: delay_accounting_on().into(),
            rss_loadable: layout.rss_loadable.into(),
            xacct_at_taskstats_exit: layout.has_taskstats_exit.into(),
            threads: opts.threads.into(),
            xacct: opts.taskstats.into(),
            twice: twice.into(),
            filter_single: opts.filters.single_bits(),
            filter_pid: opts.filters.pids.first().copied().unwrap_or(0),
            filter_uid: opts.filters.uids.first().copied().unwrap_or(0),
            _pad: 0,
            page_size: page_size(),
        };
        // The object has no BTF relocations (Rust eBPF gets no CO-RE), so
        // the loader needs no kernel BTF; `targets` is for the program loads.
        let log_level = opts.bpf_log.level();
        let mut ebpf = loader_without_kernel_btf()
            .btf(None)
            .override_global("OFFSETS", &layout.offsets, true)
            .override_global("CONFIG", &config, true)
            .override_global(bpf_log::LEVEL_GLOBAL, &log_level, true)
            .map_max_entries("EVENTS", opts.ring_bytes)
            .map_max_entries(bpf_log::RING, opts.bpf_log.ring_bytes())
            .load(EBPF_OBJECT)
            .map_err(|e| explain_bpf_error(anyhow!(e)))
            .context("cannot load the eBPF object")?;
        let logger = bpf_log::Logger::start(&mut ebpf, opts.bpf_log)?;
        // Before any exit program: the exit records they stage reach the
        // ring only through it.
        program::<RawTracePoint>(&mut ebpf, "flush_stage")?
            .load()
            .context(
                "cannot load flush_stage, which puts the records staged on each CPU into the ring",
            )?;

        let order = match opts.attach {
            AttachMode::Auto => vec![
                AttachMode::Fentry,
                AttachMode::Kprobe,
                AttachMode::Tracepoint,
            ],
            one => vec![one],
        };
        let mut fallbacks = Vec::new();
        let mut exit_hook = None;
        for mode in order {
            if mode == AttachMode::Tracepoint && defer {
                // Before the exit hook, so no record waits without it.
                attach_tp_btf(
                    &mut ebpf,
                    &targets,
                    &copies("exit_mmap_stamp", twice),
                    "exit_mmap",
                )
                .context("cannot hook tp_btf/exit_mmap")?;
            }
            match attach_exit(&mut ebpf, &targets, mode, opts, &layout, twice) {
                Ok(()) => {
                    exit_hook = Some(mode);
                    break;
                }
                Err(e) => fallbacks.push((mode, format!("{e:#}"))),
            }
        }
        let Some(exit_hook) = exit_hook else {
            let (mode, why) = fallbacks.pop().expect("at least one mode was tried");
            if opts.attach == AttachMode::Auto {
                bail!("no exit hook could be attached; the last one tried, {mode}: {why}");
            }
            bail!(
                "--attach {}: {mode} cannot be used on this kernel: {why}; \
                 try --attach auto",
                attach_flag(mode)
            );
        };
        // With fentry and kprobe at `taskstats_exit`, that program sends
        // the thread exits (it knows which thread ends the group).
        let at_taskstats_exit = layout.has_taskstats_exit
            && matches!(exit_hook, AttachMode::Fentry | AttachMode::Kprobe);
        if opts.threads && !at_taskstats_exit {
            attach_tp_btf(
                &mut ebpf,
                &targets,
                &copies("thread_exit_tp", twice),
                "sched_process_exit",
            )
            .context("--threads: cannot hook tp_btf/sched_process_exit")?;
        }
        if opts.check_clone_args {
            // Before the fork events, so that none comes without it.
            attach_clone_check(&mut ebpf, &targets, &layout)?;
        }
        if opts.lineage {
            for (name, tracepoint) in [
                ("fork_event", "task_newtask"),
                ("exec_event", "sched_process_exec"),
            ] {
                attach_tp_btf(&mut ebpf, &targets, &[name], tracepoint)
                    .with_context(|| format!("cannot hook tp_btf/{tracepoint}"))?;
            }
        }
        if opts.causes {
            // A signal sent before these are attached leaves its exit
            // without a sender, like one sent before the tracer started.
            for (name, tracepoint) in [
                ("kill_event", "signal_generate"),
                ("oom_event", "mark_victim"),
            ] {
                attach_tp_btf(&mut ebpf, &targets, &[name], tracepoint)
                    .with_context(|| format!("cannot hook tp_btf/{tracepoint}"))?;
            }
        }
        if opts.containers {
            // Before the loader reads the cgroup mount: a cgroup made in
            // between is in both.
            for (name, tracepoint) in [
                ("cgroup_made", "cgroup_mkdir"),
                ("cgroup_removed", "cgroup_rmdir"),
            ] {
                attach_tp_btf(&mut ebpf, &targets, &[name], tracepoint)
                    .with_context(|| format!("cannot hook tp_btf/{tracepoint}"))?;
            }
        }
        if opts.follow_tracked {
            // Two follow programs (see `follow_fork` in tracer-ebpf), then
            // the count of groups that died unreported.
            for (name, tracepoint) in [
                ("follow_fork", "sched_process_fork"),
                ("follow_newtask", "task_newtask"),
                ("track_free", "sched_process_free"),
            ] {
                attach_tp_btf(&mut ebpf, &targets, &[name], tracepoint).with_context(|| {
                    format!("cannot hook the fork tracker (tp_btf/{tracepoint})")
                })?;
            }
        }
        drop(targets);
        release_freed_heap();
        Ok(Self {
            ebpf,
            exit_hook,
            fallbacks,
            check_clone_args: opts.check_clone_args,
            logger,
            preemption,
        })
    }

    /// The ring the exit records arrive in; can be taken once.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("ring buffer already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Fills the filter maps (before any output opens: the programs check
    /// them from their first run, an empty map passing nothing).
    pub fn set_filters(&mut self, filters: &Filters) -> Result<()> {
        fn fill<K: aya::Pod + Copy>(ebpf: &mut Ebpf, map: &str, keys: &[K]) -> Result<()> {
            if keys.is_empty() {
                return Ok(());
            }
            let mut m: HashMap<_, K, u8> =
                HashMap::try_from(ebpf.map_mut(map).with_context(|| format!("no {map} map"))?)?;
            for &k in keys {
                m.insert(k, 1, 0)
                    .with_context(|| format!("cannot fill {map}"))?;
            }
            Ok(())
        }
        let comms: Vec<[u8; 16]> = filters
            .comms
            .iter()
            .map(|c| {
                let mut k = [0u8; 16];
                k[..c.len().min(15)].copy_from_slice(&c.as_bytes()[..c.len().min(15)]);
                k
            })
            .collect();
        fill(&mut self.ebpf, "FILTER_PIDS", &filters.pids)?;
        fill(&mut self.ebpf, "FILTER_UIDS", &filters.uids)?;
        fill(&mut self.ebpf, "FILTER_COMMS", &comms)?;
        Ok(())
    }

    /// Exits in cgroup `id`, or below it, pass `--cgroup`.
    pub fn add_filter_cgroup(&mut self, id: u64) -> Result<()> {
        self.add_to("FILTER_CGROUPS", id, "--cgroup")
    }

    /// Exits in container cgroup `id` (v2, or the memory controller's v1
    /// hierarchy with `v1`), or below it, pass `--container`.
    pub fn add_filter_container(&mut self, id: u64, v1: bool) -> Result<()> {
        let map = if v1 {
            "FILTER_CONTAINERS_V1"
        } else {
            "FILTER_CONTAINERS"
        };
        self.add_to(map, id, "--container")
    }

    /// The loader has decided on cgroup `id` (see `PENDING_CGROUPS` in
    /// tracer-ebpf): its exits are no longer sent undecided.
    pub fn forget_pending(&mut self, id: u64, v1: bool) -> Result<()> {
        let map = if v1 {
            "PENDING_CGROUPS_V1"
        } else {
            "PENDING_CGROUPS"
        };
        let mut m: HashMap<_, u64, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(map)
                .with_context(|| format!("no {map} map"))?,
        )?;
        match m.remove(&id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot update {map}")),
        }
    }

    fn add_to(&mut self, map: &str, id: u64, option: &str) -> Result<()> {
        let mut m: HashMap<_, u64, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(map)
                .with_context(|| format!("no {map} map"))?,
        )?;
        m.insert(id, 1, 0)
            .with_context(|| format!("cannot add a cgroup to the {option} filter"))
    }

    /// From a pid namespace of its own, `tracer run` cannot name itself to
    /// the programs by pid: while armed, the follow programs recognise the
    /// tracer's forks by its namespace pid and track it.
    pub fn find_self(&mut self, armed: bool) -> Result<()> {
        let mut m: aya::maps::Array<_, u32> = aya::maps::Array::try_from(
            self.ebpf
                .map_mut("SELF_IN_NS")
                .context("no SELF_IN_NS map")?,
        )?;
        m.set(0, u32::from(armed), 0)
            .context("cannot arm the search for the tracer's own pid")
    }

    /// The tracer's pid as the kernel knows it, once a follow program saw
    /// it fork while armed.
    pub fn self_pid(&self) -> Result<Option<u32>> {
        let m: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(self.ebpf.map("SELF_IN_NS").context("no SELF_IN_NS map")?)?;
        Ok(Some(m.get(&1, 0)?).filter(|&p| p != 0))
    }

    /// Puts the records staged on the CPUs into the ring (see `STAGE` in
    /// the eBPF crate): `flush_stage` run on each online CPU, or (`all`
    /// false) on those whose stage holds something, as the map reads now,
    /// which spares the others an interrupt. A CPU whose stage a program
    /// was filling is tried again for up to `patience`; returns those
    /// still busy then (a later flush takes their records). Busy is what
    /// `flush_stage` says, or what the map says once it returned: CI saw a
    /// 6.1 VM's stage keep its records and its `busy` word through a
    /// flush that said it was done, its fork event then coming a drain
    /// after the exec it explains.
    pub fn flush_stages(&self, all: bool, patience: std::time::Duration) -> Result<Vec<u32>> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let mut cpus =
            aya::util::online_cpus().map_err(|(path, e)| anyhow!("cannot read {path}: {e}"))?;
        if !all {
            let staged = self.stages()?;
            cpus.retain(|&cpu| {
                staged
                    .get(cpu as usize)
                    .is_none_or(|s| s.len != 0 || s.busy != 0)
            });
        }
        if cpus.is_empty() {
            return Ok(cpus);
        }
        let prog: &RawTracePoint = self
            .ebpf
            .program("flush_stage")
            .context("no flush_stage program")?
            .try_into()?;
        let fd = prog.fd()?.as_fd().as_raw_fd();
        let give_up = std::time::Instant::now() + patience;
        loop {
            let mut busy = Vec::new();
            for &cpu in &cpus {
                if run_on_cpu(fd, cpu).with_context(|| format!("flush_stage on CPU {cpu}"))? != 0 {
                    busy.push(cpu);
                }
            }
            let staged = self.stages()?;
            for &cpu in &cpus {
                if !busy.contains(&cpu) && staged.get(cpu as usize).is_some_and(|s| s.busy != 0) {
                    busy.push(cpu);
                }
            }
            if busy.is_empty() || std::time::Instant::now() >= give_up {
                return Ok(busy);
            }
            cpus = busy;
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// The records left in the stages of `cpus` (any possible CPU, an
    /// offline one included), read from the map: for each CPU, the bytes
    /// of its filled slots, as a full stage reaches the ring (one item for
    /// `decode::records`): at the end, for the CPUs that `flush_stages`
    /// could not empty. A slot a program is filling is past `len`, and not
    /// read.
    pub fn left_in_stages(&self, cpus: &[u32]) -> Result<Vec<(u32, Vec<u8>)>> {
        use tracer_common::{ExitRecord, STAGE_LEN};
        let staged = self.stages()?;
        let mut left = Vec::new();
        for &cpu in cpus {
            let Some(stage) = staged.get(cpu as usize) else {
                continue;
            };
            let n = (stage.len as usize).min(STAGE_LEN);
            if n == 0 {
                continue;
            }
            // SAFETY: Pod records, their padding explicit: every byte of
            // the first `n` is initialised.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    stage.records.as_ptr().cast::<u8>(),
                    n * size_of::<ExitRecord>(),
                )
            };
            left.push((cpu, bytes.to_vec()));
        }
        Ok(left)
    }

    /// Every CPU's stage as the map holds it now, indexed by possible CPU
    /// (as online_cpus() numbers them).
    fn stages(&self) -> Result<aya::maps::PerCpuValues<tracer_common::Stage>> {
        let stages: PerCpuArray<_, tracer_common::Stage> =
            PerCpuArray::try_from(self.ebpf.map("STAGE").context("no STAGE map")?)?;
        Ok(stages.get(&0, 0)?)
    }

    /// Follows this thread group (and, from now on, every group it creates).
    pub fn track(&mut self, pid: u32) -> Result<()> {
        let mut map: HashMap<_, u32, Tracked> =
            HashMap::try_from(self.ebpf.map_mut("TRACKED").context("no TRACKED map")?)?;
        // Start time 0: any group with this pid, which is ours while the
        // session lasts.
        let entry = Tracked {
            start_ns: 0,
            state: tracked::FOLLOWED,
            _pad: 0,
        };
        map.insert(pid, entry, 0)
            .context("cannot track the command's pid")?;
        Ok(())
    }

    pub fn untrack(&mut self, pid: u32) -> Result<()> {
        let mut map: HashMap<_, u32, Tracked> =
            HashMap::try_from(self.ebpf.map_mut("TRACKED").context("no TRACKED map")?)?;
        match map.remove(&pid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("cannot untrack"),
        }
    }

    /// Followed groups that died unreported (the kernel skipped both exit
    /// programs) and are gone from /proc, reaped, but not yet freed:
    /// `track_free` writes their records, late, an RCU grace period after
    /// the reap.
    pub fn tracked_awaiting_free(&self) -> Result<usize> {
        self.count_tracked(|t, in_proc| t.state == tracked::FOLLOWED && !in_proc)
    }

    /// Thread groups still tracked and running. A dead group stays in the
    /// map when the `exit_mmap` stamp its record awaited came from another
    /// task; /proc tells those apart.
    pub fn tracked_alive(&self) -> Result<usize> {
        self.count_tracked(|_, in_proc| in_proc)
    }

    /// The `TRACKED` entries `keep` says yes to, given the entry and
    /// whether /proc shows its pid.
    fn count_tracked(&self, keep: impl Fn(&Tracked, bool) -> bool) -> Result<usize> {
        let map: HashMap<_, u32, Tracked> =
            HashMap::try_from(self.ebpf.map("TRACKED").context("no TRACKED map")?)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .filter(|(pid, t)| keep(t, std::path::Path::new(&format!("/proc/{pid}")).exists()))
            .count())
    }

    /// How often the kernel turned away one of the programs that make exit
    /// records (their `recursion_misses`): a tracing program preempted on
    /// a CPU makes the kernel skip the next run of that program there
    /// (tp_btf and fentry run preemptible on 7.x). These are attached
    /// twice but for the kprobe, and a record is missed only when both
    /// copies skip it: `tracer run` counts such losses itself; for
    /// `record` the fewer of a pair's skips is an upper bound (on tp_btf
    /// a skip may also be a thread that was not its group's last). 0 on
    /// kernels older than 5.12, which do not count.
    pub fn exit_runs_skipped(&self) -> u64 {
        self.runs_skipped(&["exit_kprobe"])
            + self.pairs_skipped(&["exit_fentry", "exit_tp_btf", "exit_mmap_stamp"])
    }

    /// The same for the programs that send events and take the threads'
    /// taskstats figures: each skip may be a fork, exec, kill, OOM,
    /// cgroup or thread event not sent, or a thread's figures missing
    /// from its group's sums. A per-thread program attached twice loses
    /// a thread only when both copies skip it: a pair counts the fewer
    /// of its two copies' skips.
    pub fn event_runs_skipped(&self) -> u64 {
        let names = [
            "fork_event",
            "exec_event",
            "kill_event",
            "oom_event",
            "cgroup_made",
            "cgroup_removed",
            "xacct_kprobe",
        ];
        let pairs = [
            "thread_exit_tp",
            "xacct_fentry",
            "xacct_thread",
            "xacct_thread_all",
        ];
        self.runs_skipped(&names) + self.pairs_skipped(&pairs)
    }

    /// Under `tracer run`, which counts the groups its exit programs
    /// missed itself: the tracepoint exit pair's skips, each of which may
    /// also be a thread that was not its group's last, its taskstats
    /// figures missing from the group's sums (that pair takes them).
    pub fn thread_figures_skipped_at_exit_tp(&self) -> u64 {
        self.pairs_skipped(&["exit_tp_btf"])
    }

    /// For programs attached twice (`NAME` and `NAME_again`), the fewer
    /// of the two copies' skips, summed: a task is missed only when both
    /// skip it.
    fn pairs_skipped(&self, names: &[&str]) -> u64 {
        names
            .iter()
            .filter_map(|name| {
                let first = self.misses(name)?;
                Some(match self.misses(&format!("{name}_again")) {
                    Some(again) => first.min(again),
                    None => first,
                })
            })
            .sum()
    }

    /// `recursion_misses` summed over the loaded programs named.
    fn runs_skipped(&self, names: &[&str]) -> u64 {
        names.iter().filter_map(|name| self.misses(name)).sum()
    }

    /// `recursion_misses` of program `name`; `None` when it is not loaded.
    fn misses(&self, name: &str) -> Option<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = self.ebpf.program(name)?.fd().ok()?;
        Some(recursion_misses(fd.as_fd().as_raw_fd()))
    }

    /// The programs' counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("no COUNTERS map")?)?;
        let sum = |i: u32| -> Result<u64> { Ok(map.get(&i, 0)?.iter().sum()) };
        Ok(Counters {
            ring_full: sum(counter::RING_FULL)?,
            track_full: sum(counter::TRACK_FULL)?,
            clone_agree: sum(counter::CLONE_AGREE)?,
            clone_differ: sum(counter::CLONE_DIFFER)?,
            clone_unseen: sum(counter::CLONE_UNSEEN)?,
            events_lost: sum(counter::EVENTS_LOST)?,
            stamps_lost: sum(counter::STAMPS_LOST)?,
        })
    }
}

/// See `tracer_common::counter`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub ring_full: u64,
    pub track_full: u64,
    pub clone_agree: u64,
    pub clone_differ: u64,
    pub clone_unseen: u64,
    pub events_lost: u64,
    pub stamps_lost: u64,
}

fn attach_flag(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Auto => "auto",
        AttachMode::Fentry => "fentry",
        AttachMode::Kprobe => "kprobe",
        AttachMode::Tracepoint => "tracepoint",
    }
}

/// `BPF_PROG_TEST_RUN` of a raw tracepoint program on `cpu` (through an
/// interrupt there, or at once on this one); its return value. aya has no
/// call for it.
fn run_on_cpu(prog_fd: std::os::fd::RawFd, cpu: u32) -> Result<u32> {
    /// `union bpf_attr`'s `test` member, as far as `cpu`.
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_F_TEST_RUN_ON_CPU: u32 = 1;
    let mut attr = TestRun {
        prog_fd: prog_fd as u32,
        flags: BPF_F_TEST_RUN_ON_CPU,
        cpu,
        ..TestRun::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size given, and
    // lives across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            size_of::<TestRun>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(attr.retval)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .with_context(|| format!("the eBPF object has no program {name}"))?;
    Ok(prog.try_into()?)
}

/// Attaches the exit program of `mode`, and a second copy of it where the
/// kernel may skip one (fentry and tp_btf run preemptible on some
/// kernels, and a per-program guard then turns tasks away; kprobes run
/// with preemption off and share one guard, so a copy would not help):
/// the first copy that runs reports the group.
///
/// With [`MISS_EXITS`] in the environment the exit programs are loaded
/// but not attached (tests only).
fn attach_exit(
    ebpf: &mut Ebpf,
    targets: &AttachTargets,
    mode: AttachMode,
    opts: &ProbeOptions,
    layout: &KernelLayout,
    twice: bool,
) -> Result<()> {
    // Each thread's taskstats figures: the tracepoint exit program takes
    // them itself, for every thread as it dies. With fentry and kprobe on
    // `acct_process` (which sees only the last thread), a program of their
    // own, attached first so that no record goes out without them: at
    // `taskstats_exit`, where taskstats takes them; else at
    // `sched_process_exit`, every thread but the last before 6.16 (the exit
    // program reads the last itself), every thread from 6.16 on.
    // Where the kernel can preempt a program, each of these programs but
    // the kprobe is attached twice: a thread skipped by the first copy's
    // guard is taken by the second (see the eBPF crate's `once`).
    // The fentry exit programs are loaded first, and attached last: a
    // kernel without fentry says so before the largest stand-in is built
    // for taskstats_exit (whose id is about twice acct_process's).
    let exit_fentry = copies("exit_fentry", twice);
    if mode == AttachMode::Fentry {
        load_fentry(ebpf, targets, &exit_fentry, "acct_process")?;
    }
    match (opts.taskstats, mode, layout.has_taskstats_exit) {
        (false, ..) | (true, AttachMode::Tracepoint, _) => {}
        (true, AttachMode::Fentry, true) => {
            attach_fentry(
                ebpf,
                targets,
                &copies("xacct_fentry", twice),
                "taskstats_exit",
            )?;
        }
        (true, AttachMode::Kprobe, true) => attach_kprobe(ebpf, "xacct_kprobe", "taskstats_exit")?,
        (true, AttachMode::Fentry | AttachMode::Kprobe, false) if layout.exit_tp_has_group_dead => {
            attach_tp_btf(
                ebpf,
                targets,
                &copies("xacct_thread_all", twice),
                "sched_process_exit",
            )?;
        }
        _ => {
            attach_tp_btf(
                ebpf,
                targets,
                &copies("xacct_thread", twice),
                "sched_process_exit",
            )?;
        }
    }
    if std::env::var_os(MISS_EXITS).is_some() {
        // Tests only: every group as if the kernel had skipped both exit
        // programs, so that `tracer run` records each at its leader's free.
        return Ok(());
    }
    match mode {
        AttachMode::Fentry => exit_fentry.iter().try_for_each(|name| {
            program::<FEntry>(ebpf, name)?.attach()?;
            Ok(())
        }),
        AttachMode::Kprobe => attach_kprobe(ebpf, "exit_kprobe", "acct_process"),
        AttachMode::Tracepoint => attach_tp_btf(
            ebpf,
            targets,
            &copies("exit_tp_btf", twice),
            "sched_process_exit",
        ),
        AttachMode::Auto => unreachable!("auto is resolved by the caller"),
    }
}

/// Set (to anything), the exit programs are not attached: tests use it to
/// check the records `tracer run` writes late, when the kernel skipped
/// both exit programs (`track_free`), against the kernel's own.
pub const MISS_EXITS: &str = "TRACER_TEST_MISS_EXITS";

/// Program `name`, and its second copy `name_again` (as
/// [`Probes::pairs_skipped`] names it) where the kernel can preempt a
/// program (see `preemption`).
fn copies(name: &str, twice: bool) -> Vec<String> {
    let mut names = vec![name.to_owned()];
    if twice {
        names.push(format!("{name}_again"));
    }
    names
}

/// Loads programs `names`, in order, and attaches each to the BTF
/// tracepoint `tracepoint`; their stand-in BTF is dropped on return.
fn attach_tp_btf(
    ebpf: &mut Ebpf,
    targets: &AttachTargets,
    names: &[impl AsRef<str>],
    tracepoint: &str,
) -> Result<()> {
    let btf = targets.stand_in(&format!("btf_trace_{tracepoint}"))?;
    for name in names {
        let prog: &mut BtfTracePoint = program(ebpf, name.as_ref())?;
        prog.load(tracepoint, &btf)
            .map_err(|e| explain_bpf_error(anyhow!(e)))?;
        prog.attach()?;
    }
    Ok(())
}

/// Loads programs `names` for the entry of `function`, without attaching
/// them; their stand-in BTF is dropped on return.
fn load_fentry(
    ebpf: &mut Ebpf,
    targets: &AttachTargets,
    names: &[impl AsRef<str>],
    function: &str,
) -> Result<()> {
    let btf = targets.stand_in(function)?;
    for name in names {
        let prog: &mut FEntry = program(ebpf, name.as_ref())?;
        prog.load(function, &btf)
            .map_err(|e| explain_bpf_error(anyhow!(e)))?;
    }
    Ok(())
}

/// Loads programs `names` and attaches each at the entry of `function`.
fn attach_fentry(
    ebpf: &mut Ebpf,
    targets: &AttachTargets,
    names: &[impl AsRef<str>],
    function: &str,
) -> Result<()> {
    load_fentry(ebpf, targets, names, function)?;
    for name in names {
        program::<FEntry>(ebpf, name.as_ref())?.attach()?;
    }
    Ok(())
}

/// Loads program `name` and attaches it as a kprobe on `function`.
fn attach_kprobe(ebpf: &mut Ebpf, name: &str, function: &str) -> Result<()> {
    if !std::path::Path::new("/sys/kernel/debug/kprobes").exists() && !kprobes_configured() {
        bail!("the kernel is built without kprobes (CONFIG_KPROBES)");
    }
    let prog: &mut KProbe = program(ebpf, name)?;
    prog.load().map_err(|e| explain_bpf_error(anyhow!(e)))?;
    prog.attach(function, 0)?;
    Ok(())
}

/// `kernel_clone` by fentry, else by kprobe, for `--check-clone-args`.
fn attach_clone_check(
    ebpf: &mut Ebpf,
    targets: &AttachTargets,
    layout: &KernelLayout,
) -> Result<()> {
    if layout.offsets.clone_args_flags == ABSENT || layout.offsets.clone_args_exit_signal == ABSENT
    {
        bail!("--check-clone-args: this kernel's BTF has no struct kernel_clone_args");
    }
    let Err(fentry_error) = attach_fentry(ebpf, targets, &["clone_args_fentry"], "kernel_clone")
    else {
        return Ok(());
    };
    attach_kprobe(ebpf, "clone_args_kprobe", "kernel_clone").map_err(|kprobe_error| {
        anyhow!(
            "--check-clone-args: kernel_clone cannot be traced here \
             (fentry: {fentry_error:#}; kprobe: {kprobe_error:#})"
        )
    })
}

/// Whether the kernel config says kprobes exist; unknown counts as yes, and
/// the attach itself gives the final answer.
fn kprobes_configured() -> bool {
    crate::preemption::kernel_config()
        .is_none_or(|text| text.lines().any(|l| l == "CONFIG_KPROBES=y"))
}

/// `EbpfLoader::new()` in aya 0.14 parses all of the kernel's BTF (18 MiB
/// of peak RSS, 13 MiB held) before `.btf()` can say it is not wanted.
/// With no file descriptor to spare for that one call, its read fails at
/// once and the loader starts without it; the limit is put back before
/// returning. Only this thread runs at this point, so nothing else can
/// be refused a descriptor meanwhile.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    struct Restore(libc::rlimit);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: a valid resource and an rlimit we own.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
        }
    }
    // The lowest free descriptor: the next open() would get it.
    // SAFETY: a NUL-terminated path; the descriptor is closed right away.
    let lowest_free = unsafe {
        let fd = libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::close(fd);
        }
        fd
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and an rlimit we own.
    if lowest_free < 0 || unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
        return EbpfLoader::new();
    }
    let none_free = libc::rlimit {
        rlim_cur: lowest_free as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: a valid resource and an rlimit we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &none_free) } != 0 {
        return EbpfLoader::new();
    }
    let _restore = Restore(old);
    EbpfLoader::new()
}

/// Has malloc give blocks from 128 KiB on their own mappings from now on
/// (glibc's default threshold, which it otherwise raises to the largest
/// such block freed: 5.4 MiB after the kernel's BTF). aya grows the type
/// list of a stand-in BTF by doubling, and in the heap each step copies
/// it and leaves the old one there: taskstats_exit's stand-in (8 MiB)
/// then took 14 MiB at its peak, where with a mapping of its own it grows
/// in place (mremap) and goes back to the kernel when dropped. Setting
/// the threshold also keeps the heap's trim threshold at its default,
/// instead of twice the largest block freed.
fn map_large_blocks() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Gives the pages of the BTF buffers, freed by now, back to the kernel:
/// glibc keeps freed memory at the top of the heap for reuse, up to a trim
/// threshold that grows with the largest block freed (5 MiB here).
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory malloc holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn check_ring_size(bytes: u32) -> Result<()> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
    if !bytes.is_power_of_two() || bytes < page {
        bail!(
            "ring size {bytes} bytes: must be a power of two and at least one page ({page} bytes)"
        );
    }
    Ok(())
}

/// The checks that give one clear line instead of a verifier dump.
fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "tracer needs root to load eBPF programs (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN); \
             run it with sudo"
        );
    }
    Ok(())
}

fn explain_bpf_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") {
        // The verifier log is empty for a policy refusal: say what it means.
        anyhow!(
            "the kernel refused the program (EPERM): BPF is restricted here \
             (kernel.unprivileged_bpf_disabled, lockdown, or a BPF LSM policy)"
        )
    } else {
        e
    }
}

/// `bpf_prog_info.recursion_misses` of the program behind `fd` (aya 0.14
/// does not expose it): BPF_OBJ_GET_INFO_BY_FD into a buffer as long as
/// the kernel's struct, which fills what it has.
fn recursion_misses(fd: i32) -> u64 {
    /// include/uapi/linux/bpf.h: `__u64 recursion_misses` in
    /// `struct bpf_prog_info` (since 5.12).
    const RECURSION_MISSES_AT: usize = 208;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C, align(8))]
    struct Info([u8; 256]);
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info([0; 256]);
    let mut attr = Attr {
        bpf_fd: fd as u32,
        info_len: info.0.len() as u32,
        info: info.0.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`, which
    // outlives the call, and reads `attr`, which is ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<Attr>(),
        )
    };
    if rc != 0 || (attr.info_len as usize) < RECURSION_MISSES_AT + 8 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&info.0[RECURSION_MISSES_AT..RECURSION_MISSES_AT + 8]);
    u64::from_ne_bytes(bytes)
}

/// Whether the kernel keeps delay accounting (`kernel.task_delayacct`),
/// read once at start: records carry delays only then (as taskstats).
fn delay_accounting_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/task_delayacct").is_ok_and(|s| s.trim() == "1")
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}
