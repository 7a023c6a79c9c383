//! `tracer tree`: the process tree of a JSON recording.

use std::{
    io::{BufReader, IsTerminal as _, Write as _},
    path::Path,
};

use anyhow::{Context as _, Result};

use crate::{output::text::shown, tree::Tree};

pub fn tree(file: Option<&Path>) -> Result<i32> {
    let tree = match file.filter(|f| *f != Path::new("-")) {
        Some(path) => {
            let name = shown(path);
            let f = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
            Tree::from_json(BufReader::new(f), &name)?
        }
        None => Tree::from_json(std::io::stdin().lock(), "standard input")?,
    };
    let stdout = std::io::stdout();
    let color = crate::notes::color(stdout.is_terminal());
    let mut out = std::io::BufWriter::new(stdout.lock());
    match tree.render(&mut out, color).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(0),
    }
}
