//! Where and how OTLP export goes: `--otlp URL`, else the standard
//! `OTEL_*` variables, with the meanings the OpenTelemetry specification
//! gives them ("OpenTelemetry Protocol Exporter" and "Environment Variable
//! Specification"). An empty variable is unset, as the specification says.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Everything the OTLP output needs to know before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The full URL records are POSTed to (`.../v1/logs`).
    pub endpoint: Endpoint,
    /// What gave the endpoint: `--otlp` or the variable's name.
    pub source: &'static str,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: how a request's body is encoded.
    pub protocol: Protocol,
    pub gzip: bool,
    /// How long one export request may take.
    pub timeout: Duration,
    /// `service.name` and the other resource attributes, in order.
    pub resource: Vec<(String, String)>,
    /// `process.command_args` is sent (`--otlp-argv`).
    pub argv: bool,
    /// Records held while the collector is slow or away; beyond it the
    /// oldest are dropped and counted.
    pub queue: usize,
    /// Records per request.
    pub batch: usize,
    /// The longest a record waits for its batch to fill.
    pub delay: Duration,
}

/// The OTLP/HTTP encodings (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, the default: binary protobuf.
    Protobuf,
    /// `http/json`: the same messages in OTLP's JSON mapping.
    Json,
}

impl Protocol {
    /// As `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Protobuf => "http/protobuf",
            Protocol::Json => "http/json",
        }
    }

    /// The `Content-Type` of a request, and of the collector's answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
}

/// An `http://host[:port]/path` URL, taken apart for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// `host:port` to connect to (brackets kept around an IPv6 address).
    pub addr: String,
    /// The `Host` header: as in the URL.
    pub host: String,
    pub path: String,
}

/// The defaults of the OpenTelemetry batch log record processor
/// (`OTEL_BLRP_*`).
const DEFAULT_QUEUE: usize = 2048;
const DEFAULT_BATCH: usize = 512;
const DEFAULT_DELAY_MS: u64 = 1000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

impl Config {
    /// The export asked for, or `None` when neither `--otlp` nor an
    /// endpoint variable is given. `env` reads a variable (the process's
    /// environment, or a test's).
    pub fn resolve(
        flag: Option<&str>,
        argv: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        // The logs-specific variable, else the generic one.
        let either = |logs: &str, generic: &str| var(logs).or_else(|| var(generic));
        let (url, source) = if let Some(url) = flag {
            (with_logs_path(url), "--otlp")
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") {
            // The signal-specific endpoint is used as it is.
            (url.trim().to_string(), "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            (with_logs_path(&url), "OTEL_EXPORTER_OTLP_ENDPOINT")
        } else {
            if argv {
                bail!("--otlp-argv needs --otlp URL (or OTEL_EXPORTER_OTLP_ENDPOINT)");
            }
            return Ok(None);
        };
        let endpoint = Endpoint::parse(&url).with_context(|| format!("{source} {url:?}"))?;
        let protocol = either(
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        let protocol = match protocol.as_deref().map(str::trim) {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some("grpc") => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: this build sends \
                 http/protobuf or http/json (a collector's OTLP/HTTP port, usually 4318)"
            ),
            Some(other) => {
                bail!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use \
                     http/protobuf or http/json"
                )
            }
        };
        let mut headers = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        ] {
            if let Some(v) = var(name) {
                // The logs-specific ones win over the generic ones.
                for (k, v) in parse_pairs(&v).context(name)? {
                    check_header(&k, &v).context(name)?;
                    headers.retain(|(old, _): &(String, String)| !old.eq_ignore_ascii_case(&k));
                    headers.push((k, v));
                }
            }
        }
        let gzip = match either(
            "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        )
        .as_deref()
        .map(str::trim)
        {
            None | Some("gzip") => true,
            Some("none") => false,
            Some(other) => bail!("OTEL_EXPORTER_OTLP_COMPRESSION={other:?}: use gzip or none"),
        };
        let number = |name: &str, default: u64| -> Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number")),
            }
        };
        let timeout_ms = match var("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT") {
            Some(_) => number("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", DEFAULT_TIMEOUT_MS)?,
            None => number("OTEL_EXPORTER_OTLP_TIMEOUT", DEFAULT_TIMEOUT_MS)?,
        };
        let queue = number("OTEL_BLRP_MAX_QUEUE_SIZE", DEFAULT_QUEUE as u64)?;
        let batch = number("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH as u64)?;
        let delay_ms = number("OTEL_BLRP_SCHEDULE_DELAY", DEFAULT_DELAY_MS)?;
        if queue == 0 || queue > 1 << 24 {
            bail!("OTEL_BLRP_MAX_QUEUE_SIZE={queue}: give 1 to 16777216");
        }
        // As the specification says: a batch larger than the queue is the
        // queue.
        let batch = batch.clamp(1, queue) as usize;

        let mut resource = Vec::new();
        if let Some(v) = var("OTEL_RESOURCE_ATTRIBUTES") {
            resource = parse_pairs(&v).context("OTEL_RESOURCE_ATTRIBUTES")?;
        }
        // OTEL_SERVICE_NAME wins over a service.name in the attributes.
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            set(&mut resource, "service.name", name.trim().to_string());
        }
        if !resource.iter().any(|(k, _)| k == "service.name") {
            resource.push(("service.name".into(), "tracer".into()));
        }
        if !resource.iter().any(|(k, _)| k == "host.name") {
            resource.push(("host.name".into(), host_name()));
        }
        set(
            &mut resource,
            "service.version",
            env!("CARGO_PKG_VERSION").to_string(),
        );
        Ok(Some(Self {
            endpoint,
            source,
            headers,
            protocol,
            gzip,
            timeout: Duration::from_millis(timeout_ms.max(1)),
            resource,
            argv,
            queue: queue as usize,
            batch,
            delay: Duration::from_millis(delay_ms),
        }))
    }

    /// From the process's environment.
    pub fn from_env(flag: Option<&str>, argv: bool) -> Result<Option<Self>> {
        Self::resolve(flag, argv, &|name| std::env::var(name).ok())
    }
}

fn set(pairs: &mut Vec<(String, String)>, key: &str, value: String) {
    pairs.retain(|(k, _)| k != key);
    pairs.push((key.to_string(), value));
}

/// A base URL (`--otlp`, `OTEL_EXPORTER_OTLP_ENDPOINT`) with the logs
/// path appended, as the specification says for the generic endpoint.
fn with_logs_path(base: &str) -> String {
    let base = base.trim();
    if base.ends_with('/') {
        format!("{base}v1/logs")
    } else {
        format!("{base}/v1/logs")
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            bail!(
                "https is not supported: this build has no TLS; send to a collector on this \
                 host or network over http:// (OTLP/HTTP, port 4318)"
            );
        } else {
            bail!("not an http:// URL");
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("no host");
        }
        if authority.contains('@') {
            bail!("user information in the URL is not supported: give credentials in OTEL_EXPORTER_OTLP_HEADERS");
        }
        if path.contains('#') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            bail!("the path holds a fragment, a space or a control character");
        }
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        if let Some(port) = has_port.then(|| &authority[authority.rfind(':').unwrap() + 1..]) {
            if port.parse::<u16>().is_err() {
                bail!("{port:?} is not a port");
            }
        }
        let addr = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            url: url.to_string(),
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// `k1=v1,k2=v2`, as W3C baggage without properties: spaces around keys
/// and values are dropped, values are percent-decoded.
pub fn parse_pairs(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in s.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            bail!("{item:?} is not key=value");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("{item:?} has no key");
        }
        out.push((
            percent_decode(k).with_context(|| format!("key {k:?}"))?,
            percent_decode(v.trim()).with_context(|| format!("value of {k:?}"))?,
        ));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                bail!("a % not followed by two hex digits");
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("not UTF-8 once decoded"))
}

/// A header that would break the request (a CR, an LF) or is ours to set
/// is refused before anything starts.
fn check_header(name: &str, value: &str) -> Result<()> {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if name.is_empty() || !name.bytes().all(token) {
        bail!("{name:?} is not a header name");
    }
    if value.bytes().any(|c| c < b' ' && c != b'\t' || c == 0x7f) {
        bail!("the value of header {name:?} holds a control character");
    }
    const OURS: &[&str] = &[
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
    ];
    if OURS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        bail!("header {name:?} is set by the exporter");
    }
    Ok(())
}

/// This machine's name, as `uname -n` gives it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<Config>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(flag, false, &|n| vars.get(n).cloned())
    }

    fn url(flag: Option<&str>, vars: &[(&str, &str)]) -> String {
        resolve(flag, vars).unwrap().unwrap().endpoint.url
    }

    #[test]
    fn nothing_asked_nothing_sent() {
        assert_eq!(resolve(None, &[]).unwrap(), None);
        // Empty is unset.
        assert_eq!(
            resolve(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(),
            None
        );
        assert!(Config::resolve(None, true, &|_| None).is_err());
    }

    #[test]
    fn endpoint_precedence() {
        let generic = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let logs = (
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "http://logs:9999/custom",
        );
        // The generic endpoint gets the signal's path appended.
        assert_eq!(url(None, &[generic]), "http://collector:4318/v1/logs");
        assert_eq!(
            url(
                None,
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")]
            ),
            "http://c:4318/base/v1/logs"
        );
        // The signal-specific one is used as it is, and wins.
        assert_eq!(url(None, &[generic, logs]), "http://logs:9999/custom");
        // The flag wins over both, and is a base URL.
        assert_eq!(
            url(Some("http://127.0.0.1:4318"), &[generic, logs]),
            "http://127.0.0.1:4318/v1/logs"
        );
        let c = resolve(Some("http://127.0.0.1:4318/"), &[])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint.addr, "127.0.0.1:4318");
        assert_eq!(c.endpoint.path, "/v1/logs");
        assert_eq!(c.source, "--otlp");
        let c = resolve(None, &[logs]).unwrap().unwrap();
        assert_eq!(c.endpoint.path, "/custom");
        assert_eq!(c.source, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT");
    }

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://[::1]:4318/v1/logs").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.host.as_str()),
            ("[::1]:4318", "[::1]:4318")
        );
        let e = Endpoint::parse("http://[::1]/x").unwrap();
        assert_eq!(e.addr, "[::1]:80");
        let e = Endpoint::parse("http://h").unwrap();
        assert_eq!((e.addr.as_str(), e.path.as_str()), ("h:80", "/"));
        for bad in [
            "https://h/",
            "ftp://h/",
            "http:///x",
            "http://u:p@h/",
            "http://h:99999/",
            "http://h:x/",
            "http://h/a b",
            "http://h/a\r\nX: y",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_are_percent_decoded_and_logs_ones_win() {
        let c = resolve(
            Some("http://h:1"),
            &[
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    " api-key = a%20b%2Cc%3D , x-b=1,,",
                ),
                ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "X-B=2"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.headers,
            [
                ("api-key".to_string(), "a b,c=".to_string()),
                ("X-B".to_string(), "2".to_string())
            ]
        );
        for bad in [
            "novalue",
            "=v",
            "k=%zz",
            "k=%0d%0aX: y",
            "bad key=v",
            "Host=x",
            "k=%ff",
        ] {
            assert!(
                resolve(Some("http://h:1"), &[("OTEL_EXPORTER_OTLP_HEADERS", bad)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn resource_and_service_name() {
        let c = resolve(
            Some("http://h:1"),
            &[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment.name=prod%2Feu,host.name=box",
            )],
        )
        .unwrap()
        .unwrap();
        let get = |c: &Config, k: &str| {
            c.resource
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(&c, "service.name").as_deref(), Some("from-attrs"));
        assert_eq!(
            get(&c, "deployment.environment.name").as_deref(),
            Some("prod/eu")
        );
        assert_eq!(get(&c, "host.name").as_deref(), Some("box"));
        assert_eq!(
            get(&c, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let c = resolve(
            Some("http://h:1"),
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
                ("OTEL_SERVICE_NAME", "agent"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(get(&c, "service.name").as_deref(), Some("agent"));
        assert_eq!(
            c.resource
                .iter()
                .filter(|(k, _)| k == "service.name")
                .count(),
            1
        );
        let c = resolve(Some("http://h:1"), &[]).unwrap().unwrap();
        assert_eq!(get(&c, "service.name").as_deref(), Some("tracer"));
        assert_eq!(get(&c, "host.name"), Some(host_name()));
    }

    #[test]
    fn protocol_compression_and_batching() {
        let flag = Some("http://h:1");
        let c = resolve(flag, &[]).unwrap().unwrap();
        assert!(c.gzip);
        assert_eq!((c.queue, c.batch), (2048, 512));
        assert_eq!(c.delay, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.protocol, Protocol::Protobuf);
        let with = |k: &str, v: &str| resolve(flag, &[(k, v)]).map(|c| c.unwrap().protocol);
        assert_eq!(
            with("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").unwrap(),
            Protocol::Protobuf
        );
        assert_eq!(
            with("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json").unwrap(),
            Protocol::Json
        );
        assert_eq!(
            with("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json").unwrap(),
            Protocol::Json
        );
        assert!(resolve(flag, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_err());
        assert!(resolve(
            flag,
            &[("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "carrier-pigeon")]
        )
        .is_err());
        let c = resolve(
            flag,
            &[
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
                ("OTEL_BLRP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "1000"),
                ("OTEL_BLRP_SCHEDULE_DELAY", "50"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap()
        .unwrap();
        assert!(!c.gzip);
        assert_eq!((c.queue, c.batch), (100, 100));
        assert_eq!(c.delay, Duration::from_millis(50));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert!(resolve(flag, &[("OTEL_BLRP_MAX_QUEUE_SIZE", "0")]).is_err());
        assert!(resolve(flag, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).is_err());
    }
}
