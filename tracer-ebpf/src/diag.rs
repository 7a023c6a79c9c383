//! Diagnostics (`--bpf-log`): why a program gave up on a record, an event
//! or a field, through aya-log.
//!
//! Every call is behind aya-log's load-time level, `AYA_LOG_LEVEL`, a
//! read-only global in `.rodata` like `CONFIG`, which the loader sets
//! (0 with `--bpf-log off`, the default). The verifier knows it as a
//! constant and drops the calls of a level that is off before verifying
//! them. So each call sits where the program has already given up (in
//! the branch that counts a loss or takes a failed read's 0): with the
//! switch off, a record that goes out runs exactly the instructions it ran
//! without logging, and what is left of a call in its branch is a load of
//! the level (3 instructions).
//!
//! `warn`: a record or an event is lost (it is counted too). `debug`: one
//! goes out without a field the program could not read, or a duplicate is
//! dropped.

/// A lost record or event. aya-log's macros take a context they do not use:
/// these take none, so that any function can say why.
macro_rules! log_warn {
    ($($arg:tt)+) => {
        aya_log_ebpf::warn!(&(), $($arg)+)
    };
}

/// A record or event without a field, or a dropped duplicate.
macro_rules! log_debug {
    ($($arg:tt)+) => {
        aya_log_ebpf::debug!(&(), $($arg)+)
    };
}

/// A kernel read that failed (the helper's error code), for the field it fills:
/// that field is written as 0.
#[inline(always)]
pub(crate) fn read_failed(what: &str, addr: u64, err: i32) {
    log_debug!(
        "{}: kernel read at {:x} failed ({}); written as 0",
        what,
        addr,
        err
    );
}
