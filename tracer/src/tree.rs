//! `tracer tree`: the process tree of a recording, one line per process.
//!
//! Built from fork, exec and exit events, either read back from a JSON
//! recording or collected live (`tracer run --tree`). Processes hang under
//! their creator; threads are folded into a count on their process.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, Write},
};

use anyhow::{Context as _, Result};
use tracer_common::{ExecRecord, ForkRecord};

use crate::{
    event::{Clock, ExitView},
    lineage::{clone_flag_names, Kind, CLONE_NEW_ANY},
    output::{
        text::{escaped, until_nul},
        Secs, Sink,
    },
};

#[derive(Clone, Debug, Default)]
struct Node {
    /// As recorded: not necessarily UTF-8, nor free of control characters.
    comm: Vec<u8>,
    creator: Option<u32>,
    kind: Option<Kind>,
    flags: u64,
    threads: u32,
    /// status text, elapsed ns, cpu ns, failed
    exit: Option<(String, u64, u64, bool)>,
}

/// The tree being built; pids are unique within one recording.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<u32, Node>,
}

impl Tree {
    pub fn fork(&mut self, parent: u32, child: u32, flags: u64, comm: &[u8]) {
        let kind = Kind::of(flags);
        if kind == Kind::Thread {
            self.nodes.entry(child).or_default().threads += 1;
            return;
        }
        let node = self.nodes.entry(child).or_default();
        node.creator = Some(parent);
        node.kind = Some(kind);
        node.flags = flags;
        if node.comm.is_empty() {
            node.comm = comm.to_owned();
        }
    }

    pub fn exec(&mut self, pid: u32, comm: &[u8]) {
        self.nodes.entry(pid).or_default().comm = comm.to_owned();
    }

    pub fn exit(
        &mut self,
        pid: u32,
        comm: &[u8],
        status: String,
        failed: bool,
        elapsed_ns: u64,
        cpu_ns: u64,
    ) {
        let node = self.nodes.entry(pid).or_default();
        node.comm = comm.to_owned();
        node.exit = Some((status, elapsed_ns, cpu_ns, failed));
    }

    /// Reads a JSON-lines recording (`--json`); other lines are errors that
    /// name the line. `name` names the input in them (escaped here).
    pub fn from_json(input: impl BufRead, name: &str) -> Result<Self> {
        let name = escaped(name.as_bytes());
        let mut tree = Self::default();
        for (i, line) in input.lines().enumerate() {
            let line = line.with_context(|| format!("{name}: cannot read line {}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{name}:{}: not a JSON line of a recording", i + 1))?;
            let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
            let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
            let pid = |k: &str| num(k).map(|n| n as u32);
            match text("event") {
                "fork" => {
                    if let (Some(p), Some(c), Some(f)) =
                        (pid("parent_pid"), pid("child_pid"), num("clone_flags_raw"))
                    {
                        tree.fork(p, c, f, text("comm").as_bytes());
                    }
                }
                "exec" => {
                    if let Some(p) = pid("pid") {
                        tree.exec(p, text("comm").as_bytes());
                    }
                }
                "exit" => {
                    let Some(p) = pid("pid") else { continue };
                    let secs = |k: &str| {
                        v.get(k)
                            .and_then(serde_json::Value::as_f64)
                            .map_or(0, |s| (s * 1e9).round() as u64)
                    };
                    let cpu = match v.get("cpu_runtime_s") {
                        Some(_) => secs("cpu_runtime_s"),
                        None => secs("utime_s") + secs("stime_s"),
                    };
                    let (status, failed) =
                        match (v.get("signal").and_then(|s| s.as_str()), num("exit_status")) {
                            (Some(sig), _)
                                if v.get("core_dumped") == Some(&serde_json::Value::Bool(true)) =>
                            {
                                (format!("{sig} (core dumped)"), true)
                            }
                            (Some(sig), _) => (sig.to_owned(), true),
                            (None, Some(code)) => (format!("exit {code}"), code != 0),
                            (None, None) => ("?".to_owned(), false),
                        };
                    let comm = text("comm").as_bytes();
                    tree.exit(p, comm, status, failed, secs("elapsed_s"), cpu);
                }
                other => anyhow::bail!(
                    "{name}:{}: unknown event \"{}\"",
                    i + 1,
                    escaped(other.as_bytes())
                ),
            }
        }
        Ok(tree)
    }

    pub fn render(&self, w: &mut dyn Write, color: bool) -> io::Result<()> {
        let paint = Paint(color);
        let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (&pid, node) in &self.nodes {
            match node.creator.filter(|c| self.nodes.contains_key(c)) {
                Some(c) => children.entry(c).or_default().push(pid),
                None => roots.push(pid),
            }
        }
        for root in roots {
            self.render_node(w, &paint, &children, root, "", None)?;
        }
        Ok(())
    }

    fn render_node(
        &self,
        w: &mut dyn Write,
        paint: &Paint,
        children: &BTreeMap<u32, Vec<u32>>,
        pid: u32,
        prefix: &str,
        last: Option<bool>,
    ) -> io::Result<()> {
        let node = &self.nodes[&pid];
        let branch = match last {
            None => "",
            Some(true) => "└─ ",
            Some(false) => "├─ ",
        };
        write!(
            w,
            "{prefix}{branch}{} {}",
            pid,
            paint.bold(&escaped(&node.comm))
        )?;
        if let Some(kind) = node.kind {
            write!(w, " [{}", kind.name())?;
            let ns: Vec<_> = clone_flag_names(node.flags & CLONE_NEW_ANY)
                .map(|n| n.trim_start_matches("CLONE_"))
                .collect();
            if !ns.is_empty() {
                write!(w, " {}", paint.yellow(&ns.join(",")))?;
            }
            write!(w, "]")?;
        }
        match &node.exit {
            Some((status, elapsed, cpu, failed)) => {
                // From a recording, the status is the line's text too.
                let status = escaped(status.as_bytes());
                let status = if *failed {
                    paint.red(&status)
                } else {
                    paint.green(&status)
                };
                write!(
                    w,
                    " {status} {:.3}s elapsed {:.3}s cpu",
                    Secs(*elapsed),
                    Secs(*cpu)
                )?;
            }
            None => write!(w, " (still running at the end)")?,
        }
        if node.threads > 0 {
            let s = if node.threads == 1 { "" } else { "s" };
            write!(w, " +{} thread{s}", node.threads)?;
        }
        writeln!(w)?;
        let kids = children.get(&pid).map(Vec::as_slice).unwrap_or_default();
        let next_prefix = match last {
            None => prefix.to_owned(),
            Some(true) => format!("{prefix}   "),
            Some(false) => format!("{prefix}│  "),
        };
        for (i, &kid) in kids.iter().enumerate() {
            self.render_node(
                w,
                paint,
                children,
                kid,
                &next_prefix,
                Some(i + 1 == kids.len()),
            )?;
        }
        Ok(())
    }
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn green(&self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
}

/// `tracer run --tree`: collects the tree and prints it when the run ends.
pub struct TreeOutput {
    tree: Tree,
    out: Box<dyn Write>,
    color: bool,
}

impl TreeOutput {
    pub fn new(out: Box<dyn Write>, color: bool) -> Self {
        Self {
            tree: Tree::default(),
            out,
            color,
        }
    }
}

impl Sink for TreeOutput {
    fn exit(&mut self, ev: &ExitView<'_>) -> io::Result<()> {
        let status = ev.status();
        let failed = !matches!(status, crate::exit_status::ExitStatus::Exited(0));
        self.tree.exit(
            ev.acct.ac_pid,
            until_nul(&ev.acct.ac_comm),
            status.to_string(),
            failed,
            ev.elapsed_ns(),
            ev.cpu_ns(),
        );
        Ok(())
    }

    fn fork(&mut self, rec: &ForkRecord, _clock: &Clock) -> io::Result<()> {
        self.tree.fork(
            rec.parent_pid,
            rec.child_pid,
            rec.clone_flags,
            until_nul(&rec.comm),
        );
        Ok(())
    }

    fn exec(&mut self, rec: &ExecRecord, _clock: &Clock) -> io::Result<()> {
        self.tree.exec(rec.pid, until_nul(&rec.comm));
        Ok(())
    }

    fn wants_lineage(&self) -> bool {
        true
    }

    fn finish(&mut self) -> io::Result<()> {
        self.tree.render(&mut self.out, self.color)?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn name(&self) -> String {
        "the tree".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDING: &str = include_str!("../../tests/fixtures/tree/recording.ndjson");
    const EXPECTED: &str = include_str!("../../tests/fixtures/tree/expected.txt");

    fn render(color: bool) -> String {
        let tree = Tree::from_json(RECORDING.as_bytes(), "recording").unwrap();
        let mut out = Vec::new();
        tree.render(&mut out, color).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Golden output for a recording of tests/clone_workload.c.
    #[test]
    fn renders_the_recorded_workload() {
        assert_eq!(render(false), EXPECTED);
    }

    #[test]
    fn colour_only_adds_escapes() {
        let coloured = render(true);
        assert!(coloured.contains("\x1b[31m") && coloured.contains("\x1b[32m"));
        let plain = coloured
            .split("\x1b[")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.split_once('m').map_or(part, |p| p.1)
                }
            })
            .collect::<String>();
        assert_eq!(plain, EXPECTED);
    }

    #[test]
    fn a_bad_line_names_itself() {
        let err = Tree::from_json("{\"event\":\"exit\"}\nnot json\n".as_bytes(), "rec.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rec.json:2"), "{err}");
    }
}
