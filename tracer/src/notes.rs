//! What the tracer says on standard error besides errors: `-q` keeps only
//! warnings and the summary line when something was lost, `-v` adds the
//! reasons behind each choice (why attach points were refused). By default
//! a session says one line when it starts and one when it ends.
//!
//! Colour: only on a terminal, and never when `NO_COLOR` is set to
//! anything but the empty string (<https://no-color.org>).

use std::sync::atomic::{AtomicU8, Ordering};

/// How much is said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet = 0,
    Normal = 1,
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Normal as u8);

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Level::Quiet,
        1 => Level::Normal,
        _ => Level::Verbose,
    }
}

/// A note (`tracer: ...`) said unless `-q`.
pub fn note(text: std::fmt::Arguments<'_>) {
    if level() >= Level::Normal {
        eprintln!("tracer: {text}");
    }
}

/// A detail said only with `-v`.
pub fn detail(text: std::fmt::Arguments<'_>) {
    if level() >= Level::Verbose {
        eprintln!("tracer: {text}");
    }
}

/// Whether to colour what goes to a stream that `is_terminal` or not.
pub fn color(is_terminal: bool) -> bool {
    is_terminal && !no_color(std::env::var_os("NO_COLOR").as_deref())
}

fn no_color(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_is_any_non_empty_value() {
        assert!(!no_color(None));
        assert!(!no_color(Some("".as_ref())));
        assert!(no_color(Some("1".as_ref())));
        assert!(no_color(Some("0".as_ref())));
    }
}
