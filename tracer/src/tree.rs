//! `tracer tree`: the process tree of a recording, one line per process.
//!
//! Built from fork, exec and exit events, either read back from a JSON
//! recording or collected live (`tracer run --tree`). Processes hang under
//! their creator; threads are folded into a count on their process.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, BufRead, Write},
};

use anyhow::{Context as _, Result};
use tracer_common::ForkRecord;

use crate::{
    decode::{Clock, Exec},
    lineage::{clone_flag_names, Kind, CLONE_NEW_ANY},
    model::Exit,
    output::{
        text::{escaped, until_nul},
        Output, Secs,
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
    /// Peak RSS, KiB, when the exit had it.
    peak_rss_kb: Option<u64>,
}

/// The tree being built; pids are unique within one recording.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<u32, Node>,
}

impl Tree {
    pub fn fork(&mut self, parent: u32, child: u32, flags: u64, comm: &[u8]) {
        self.fork_seen(Some(parent), child, Some(flags), comm);
    }

    /// A fork event, perhaps without its parent or flags (a recording
    /// someone edited): the child is still shown, with what is known.
    fn fork_seen(&mut self, parent: Option<u32>, child: u32, flags: Option<u64>, comm: &[u8]) {
        let kind = flags.map(Kind::of);
        let node = self.nodes.entry(child).or_default();
        if kind == Some(Kind::Thread) {
            node.threads = node.threads.saturating_add(1);
            return;
        }
        if parent.is_some() {
            node.creator = parent;
        }
        if kind.is_some() {
            node.kind = kind;
            node.flags = flags.unwrap_or(0);
        }
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

    /// The peak RSS of `pid`'s exit, shown after its times.
    pub fn peak_rss(&mut self, pid: u32, kb: Option<u64>) {
        self.nodes.entry(pid).or_default().peak_rss_kb = kb;
    }

    /// Reads a JSON-lines recording (`--json`); other lines are errors that
    /// name the line. `name` names the input in them (escaped here). A
    /// line with a pid always puts it in the tree, whatever else it lacks;
    /// a pid that is not a number from 0 to 2^32-1 is an error.
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
            let pid = |k: &str| -> Result<Option<u32>> {
                match v.get(k) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(n) => match n.as_u64().map(u32::try_from) {
                        Some(Ok(p)) => Ok(Some(p)),
                        _ => anyhow::bail!(
                            "{name}:{}: {k} is {}, not a pid",
                            i + 1,
                            escaped(n.to_string().as_bytes())
                        ),
                    },
                }
            };
            match text("event") {
                "fork" => {
                    let parent = pid("parent_pid")?;
                    if let Some(c) = pid("child_pid")? {
                        let comm = text("comm").as_bytes();
                        tree.fork_seen(parent, c, num("clone_flags_raw"), comm);
                    }
                }
                "exec" => {
                    if let Some(p) = pid("pid")? {
                        tree.exec(p, text("comm").as_bytes());
                    }
                }
                "exit" => {
                    let Some(p) = pid("pid")? else { continue };
                    // Saturating (`as`) and added saturating: any number goes.
                    let secs = |k: &str| {
                        v.get(k)
                            .and_then(serde_json::Value::as_f64)
                            .map_or(0, |s| (s * 1e9).round() as u64)
                    };
                    let cpu = match v.get("cpu_runtime_s") {
                        Some(_) => secs("cpu_runtime_s"),
                        None => secs("utime_s").saturating_add(secs("stime_s")),
                    };
                    let (status, failed) =
                        match (v.get("signal").and_then(|s| s.as_str()), num("exit_status")) {
                            (Some(sig), _) => {
                                let mut text = sig.to_owned();
                                let oom = v.pointer("/oom_kill/cgroup").and_then(|c| c.as_str());
                                let killer = v
                                    .pointer("/killed_by/pid")
                                    .and_then(serde_json::Value::as_u64)
                                    .filter(|&k| Some(k) != v.get("pid").and_then(|p| p.as_u64()));
                                if let Some(cgroup) = oom {
                                    text += &format!(" (OOM, {})", escaped(cgroup.as_bytes()));
                                } else if let Some(k) = killer {
                                    let comm = v
                                        .pointer("/killed_by/comm")
                                        .and_then(|c| c.as_str())
                                        .unwrap_or("?");
                                    text += &format!(" by {}[{k}]", escaped(comm.as_bytes()));
                                }
                                if v.get("core_dumped") == Some(&serde_json::Value::Bool(true)) {
                                    text += " (core dumped)";
                                }
                                (text, true)
                            }
                            (None, Some(code)) => (format!("exit {code}"), code != 0),
                            (None, None) => ("?".to_owned(), false),
                        };
                    let status = match v.get("container_id").and_then(|c| c.as_str()) {
                        Some(id) => {
                            format!("{status} [{}]", escaped(&id.as_bytes()[..12.min(id.len())]))
                        }
                        None => status,
                    };
                    let comm = text("comm").as_bytes();
                    tree.exit(p, comm, status, failed, secs("elapsed_s"), cpu);
                    let kb = |key| v.get(key).and_then(|k| k.as_u64());
                    tree.peak_rss(p, kb("hiwater_rss_kb").or_else(|| kb("maxrss_kb")));
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

    /// Writes the tree: every process exactly once. Processes whose creator
    /// is not in the recording are roots; processes in a creation cycle
    /// (only a crafted recording has one) follow, each cycle entered at
    /// its lowest pid and marked. Iterative, so any depth renders; past
    /// [`MAX_INDENT`] levels the indentation stops growing and the line
    /// starts with how many levels are not drawn.
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
        let mut shown = HashSet::with_capacity(self.nodes.len());
        for root in roots {
            self.render_from(w, &paint, &children, root, &mut shown)?;
        }
        // What is left hangs, through its creators, from a cycle.
        for &pid in self.nodes.keys() {
            if !shown.contains(&pid) {
                let entry = self.cycle_entry(pid);
                self.render_from(w, &paint, &children, entry, &mut shown)?;
            }
        }
        Ok(())
    }

    fn creator(&self, pid: u32) -> Option<u32> {
        self.nodes
            .get(&pid)?
            .creator
            .filter(|c| self.nodes.contains_key(c))
    }

    /// The lowest pid of the cycle that `pid`'s creators lead to.
    fn cycle_entry(&self, pid: u32) -> u32 {
        let mut seen = HashSet::new();
        let mut at = pid;
        while seen.insert(at) {
            match self.creator(at) {
                Some(c) => at = c,
                None => return at,
            }
        }
        // `at` is on the cycle: go round it once.
        let mut lowest = at;
        let mut next = self.creator(at);
        while let Some(c) = next.filter(|&c| c != at) {
            lowest = lowest.min(c);
            next = self.creator(c);
        }
        lowest
    }

    /// `start` and everything under it not shown yet, depth first, with an
    /// explicit stack.
    fn render_from(
        &self,
        w: &mut dyn Write,
        paint: &Paint,
        children: &BTreeMap<u32, Vec<u32>>,
        start: u32,
        shown: &mut HashSet<u32>,
    ) -> io::Result<()> {
        shown.insert(start);
        // (pid, depth, last among its siblings)
        let mut stack = vec![(start, 0, true)];
        // For each depth on the current path: is that node its parent's last?
        let mut lasts: Vec<bool> = Vec::new();
        while let Some((pid, depth, last)) = stack.pop() {
            lasts.truncate(depth);
            lasts.push(last);
            self.render_line(w, paint, pid, &lasts, pid == start)?;
            let kids: Vec<u32> = children
                .get(&pid)
                .into_iter()
                .flatten()
                .copied()
                .filter(|&k| shown.insert(k))
                .collect();
            for (i, &kid) in kids.iter().enumerate().rev() {
                stack.push((kid, depth + 1, i + 1 == kids.len()));
            }
        }
        Ok(())
    }

    /// One process; `lasts[d]` says whether its ancestor at depth `d` (and,
    /// last, itself) is the last of its siblings.
    fn render_line(
        &self,
        w: &mut dyn Write,
        paint: &Paint,
        pid: u32,
        lasts: &[bool],
        entered: bool,
    ) -> io::Result<()> {
        let node = &self.nodes[&pid];
        let depth = lasts.len() - 1;
        let hidden = depth.saturating_sub(MAX_INDENT);
        if hidden > 0 {
            write!(w, "(+{hidden} levels) ")?;
        }
        for &last in lasts.iter().take(depth).skip(hidden + 1) {
            w.write_all(if last { "   " } else { "│  " }.as_bytes())?;
        }
        if depth > 0 {
            w.write_all(if lasts[depth] { "└─ " } else { "├─ " }.as_bytes())?;
        }
        write!(w, "{} {}", pid, paint.bold(&escaped(&node.comm)))?;
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
                if let Some(kb) = node.peak_rss_kb {
                    write!(w, " {} peak RSS", crate::output::Size(kb * 1024))?;
                }
            }
            None => write!(w, " (still running at the end)")?,
        }
        if node.threads > 0 {
            let s = if node.threads == 1 { "" } else { "s" };
            write!(w, " +{} thread{s}", node.threads)?;
        }
        // Entered from above, a process's creator is above it too; a
        // cycle's entry has its creator below it.
        match self.creator(pid).filter(|_| entered) {
            Some(c) if c == pid => write!(w, " (creation cycle: created by itself)")?,
            Some(c) => write!(w, " (creation cycle: created by {c}, below it)")?,
            None => {}
        }
        writeln!(w)
    }
}

/// Levels of indentation drawn; deeper lines say how many they leave out.
/// Drawing them all would make the output grow with the square of the
/// depth (a 20,000-deep chain of execs would print 600 MB).
pub const MAX_INDENT: usize = 100;

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

impl Output for TreeOutput {
    fn exit(&mut self, ev: &Exit<'_>) -> io::Result<()> {
        let status = ev.status();
        let failed = !matches!(status, crate::exit_status::ExitStatus::Exited(0));
        self.tree.exit(
            ev.pid,
            ev.comm_bytes(),
            match ev.short_container_id() {
                Some(id) => format!("{} [{id}]", ev.described()),
                None => ev.described().to_string(),
            },
            failed,
            ev.elapsed_ns,
            ev.cpu_ns(),
        );
        self.tree.peak_rss(ev.pid, ev.peak_rss_kb());
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

    fn exec(&mut self, rec: &Exec, _clock: &Clock) -> io::Result<()> {
        self.tree.exec(rec.pid, until_nul(&rec.comm));
        Ok(())
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
    fn partial_fork_lines_still_show_the_child() {
        let rec = concat!(
            "{\"event\":\"fork\",\"child_pid\":7,\"comm\":\"a\"}\n",
            "{\"event\":\"fork\",\"parent_pid\":7,\"child_pid\":8,\"comm\":\"b\"}\n",
        );
        let tree = Tree::from_json(rec.as_bytes(), "rec").unwrap();
        let mut out = Vec::new();
        tree.render(&mut out, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7 a (still running at the end)\n└─ 8 b (still running at the end)\n"
        );
        for bad in ["-1", "4294967296", "1.5", "\"12\""] {
            let line = format!("{{\"event\":\"exec\",\"pid\":{bad}}}\n");
            let err = Tree::from_json(line.as_bytes(), "rec").unwrap_err();
            assert!(err.to_string().starts_with("rec:1: pid is "), "{err}");
        }
    }

    #[test]
    fn the_killer_and_the_oom_are_on_the_victims_line() {
        let rec = concat!(
            "{\"event\":\"fork\",\"parent_pid\":7,\"child_pid\":8,\"comm\":\"sh\"}\n",
            "{\"event\":\"fork\",\"parent_pid\":7,\"child_pid\":9,\"comm\":\"sh\"}\n",
            "{\"event\":\"exit\",\"pid\":8,\"comm\":\"sleep\",\"signal\":\"SIGKILL\",",
            "\"killed_by\":{\"pid\":7,\"comm\":\"sh\\u001b\"},\"oom_kill\":null}\n",
            "{\"event\":\"exit\",\"pid\":9,\"comm\":\"hog\",\"signal\":\"SIGKILL\",",
            "\"killed_by\":{\"pid\":9,\"comm\":\"hog\"},\"oom_kill\":{\"cgroup\":\"/x\"}}\n",
        );
        let tree = Tree::from_json(rec.as_bytes(), "rec").unwrap();
        let mut out = Vec::new();
        tree.render(&mut out, false).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("8 sleep SIGKILL by sh\\x1b[7]"), "{out}");
        assert!(out.contains("9 hog SIGKILL (OOM, /x)"), "{out}");
    }

    #[test]
    fn a_bad_line_names_itself() {
        let err = Tree::from_json("{\"event\":\"exit\"}\nnot json\n".as_bytes(), "rec.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rec.json:2"), "{err}");
    }
}
