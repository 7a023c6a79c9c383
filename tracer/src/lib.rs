//! tracer: process-exit records equal to the kernel's BSD accounting, from
//! eBPF.
//!
//! The data path, one module a step, in the order an exit takes it:
//! `probes` (the eBPF object, with struct offsets from `btf`) → the ring
//! buffer, drained by the `session` → `decode` (ring bytes into records;
//! `order` holds back what a process did until its fork came, as records
//! staged on different CPUs arrive out of order; `stamps` gives a record
//! taken before `exit_mm()` its exit time) →
//! `model` (the one `Exit` every output renders) → `output` (table, JSON
//! lines, acct file, tree). Fork and exec events feed `lineage`, the
//! process table that places each exit in its ancestry; kill and OOM
//! events feed `causes`, which says why each one died; cgroup events feed
//! `cgroups`, which names the cgroup and container of each. `acct` is the acct
//! v3 format, written by the acct-file output and read back by `dump`;
//! `exit_status` names how a process ended. `modes` holds the commands,
//! `cli` their options, `shutdown` how a session ends, `notes` what is
//! said on stderr, `metrics` what `--metrics` serves, `bpf_log` what the
//! programs say about themselves (`--bpf-log`).

pub mod acct;
pub mod bpf_log;
pub mod btf;
pub mod causes;
pub mod cgroups;
pub mod cli;
pub mod container;
pub mod decode;
pub mod dump;
pub mod exit_status;
pub mod filters;
pub mod lineage;
pub mod metrics;
pub mod model;
pub mod modes;
pub mod notes;
pub mod order;
pub mod output;
pub mod preemption;
pub mod probes;
pub mod ring_positions;
pub mod session;
pub mod shutdown;
pub mod stamps;
pub mod tree;
