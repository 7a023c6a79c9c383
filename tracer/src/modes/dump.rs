//! `tracer dump`: acct v3 files (the kernel's or ours) as the table or JSON
//! lines, streamed.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::{
    dump,
    output::{JsonLines, Outputs, Table, Target},
};

pub fn dump(files: &[PathBuf], json: bool) -> Result<i32> {
    let files = dump::open(files)?;
    let mut outputs = Outputs::default();
    if json {
        outputs.push(Box::new(JsonLines::new(
            Target::Stdout,
            Target::Stdout.open()?,
        )));
    } else {
        outputs.push(Box::new(
            Table::new(Target::Stdout, Target::Stdout.open()?).dated(),
        ));
    }
    // Streamed: what was read before a bad record is printed, then the
    // error. A failed standard output ends the reading at once.
    let result = files.each(|rec| {
        outputs.exit(&rec.to_exit());
        if outputs.live() == 0 {
            bail!("standard output failed");
        }
        Ok(())
    });
    outputs.flush();
    // A reader that went away (`| head`) is a clean end.
    if let Some(f) = outputs.failures().into_iter().next() {
        if f.closed {
            return Ok(0);
        }
        bail!("{}", f.error);
    }
    result.map(|()| 0)
}
