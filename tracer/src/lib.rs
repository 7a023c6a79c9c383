//! tracer: process-exit records equal to the kernel's BSD accounting, from
//! eBPF.
//!
//! The data path, one module a step:
//! probes (`probes`, the eBPF object, offsets from `btf`) → ring buffer of
//! `tracer_common::ExitRecord` → `session` drains it → `event` decodes (and
//! `stamps` gives a record taken before `exit_mm()` its exit time) →
//! `acct` encodes acct_v3 exactly as the kernel → `output` (table, JSON
//! lines, acct file). Fork and exec events feed `lineage`, the process
//! table that places each exit in its ancestry. `dump` reads acct files
//! back; `exit_status` names how a process ended.

pub mod acct;
pub mod btf;
pub mod cli;
pub mod dump;
pub mod event;
pub mod exit_status;
pub mod lineage;
pub mod modes;
pub mod output;
pub mod probes;
pub mod session;
pub mod shutdown;
pub mod stamps;
pub mod tree;
