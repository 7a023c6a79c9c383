//! The smallest HTTP/1.1 client OTLP/HTTP needs: one POST at a time on a
//! kept-alive connection, every wait bounded by a deadline. It runs on the
//! sender thread only.

use std::{
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use super::config::Endpoint;

/// What the collector answered.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    /// `Retry-After` in seconds, when it gave one.
    pub(super) retry_after: Option<Duration>,
    pub(super) body: Vec<u8>,
}

pub(super) struct Client {
    endpoint: Endpoint,
    /// The request head up to the body's length, the same for every request.
    head: Vec<u8>,
    conn: Option<TcpStream>,
}

/// A response larger than this is not read (the connection is dropped).
const MAX_BODY: usize = 1 << 20;
/// How long one blocking read or write may wait before the deadline is
/// looked at again.
const SLICE: Duration = Duration::from_millis(100);

impl Client {
    pub(super) fn new(
        endpoint: Endpoint,
        headers: &[(String, String)],
        content_type: &str,
        gzip: bool,
    ) -> Self {
        let mut head = Vec::new();
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(endpoint.path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        head.extend_from_slice(endpoint.host.as_bytes());
        head.extend_from_slice(b"\r\nUser-Agent: tracer/");
        head.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        head.extend_from_slice(b"\r\nContent-Type: ");
        head.extend_from_slice(content_type.as_bytes());
        head.extend_from_slice(b"\r\n");
        if gzip {
            head.extend_from_slice(b"Content-Encoding: gzip\r\n");
        }
        for (k, v) in headers {
            head.extend_from_slice(k.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Length: ");
        Self {
            endpoint,
            head,
            conn: None,
        }
    }

    /// POSTs `body`; gives up at `deadline` or when `abandon` says so.
    pub(super) fn post(
        &mut self,
        body: &[u8],
        deadline: Instant,
        abandon: &dyn Fn() -> bool,
    ) -> io::Result<Response> {
        // A kept-alive connection the collector closed while idle fails at
        // once: try again on a new one.
        if self.conn.is_some() {
            match self.exchange(body, deadline, abandon) {
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(e),
                Err(_) => {}
            }
        }
        self.exchange(body, deadline, abandon)
    }

    fn exchange(
        &mut self,
        body: &[u8],
        deadline: Instant,
        abandon: &dyn Fn() -> bool,
    ) -> io::Result<Response> {
        let result = self.exchange_once(body, deadline, abandon);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange_once(
        &mut self,
        body: &[u8],
        deadline: Instant,
        abandon: &dyn Fn() -> bool,
    ) -> io::Result<Response> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => connect(&self.endpoint.addr, deadline)?,
        };
        let mut head = Vec::with_capacity(self.head.len() + 16);
        head.extend_from_slice(&self.head);
        head.extend_from_slice(body.len().to_string().as_bytes());
        head.extend_from_slice(b"\r\n\r\n");
        let wait = Wait { deadline, abandon };
        for part in [&head[..], body] {
            let mut done = 0;
            while done < part.len() {
                wait.check()?;
                match conn.write(&part[done..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => done += n,
                    Err(e) if slice_over(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let (response, keep) = read_response(&mut conn, &wait)?;
        if keep {
            self.conn = Some(conn);
        }
        Ok(response)
    }
}

fn connect(addr: &str, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(SLICE))?;
                s.set_write_timeout(Some(SLICE))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

struct Wait<'a> {
    deadline: Instant,
    abandon: &'a dyn Fn() -> bool,
}

impl Wait<'_> {
    fn check(&self) -> io::Result<()> {
        if Instant::now() >= self.deadline || (self.abandon)() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        Ok(())
    }
}

/// A read or write that waited one [`SLICE`] without progress.
fn slice_over(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads one response; says whether the connection can carry another.
fn read_response(conn: &mut TcpStream, wait: &Wait<'_>) -> io::Result<(Response, bool)> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(bad("response head over 64 KiB"));
        }
        if fill(conn, &mut buf, wait)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("response head not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| bad("not an HTTP/1.x response"))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep = version == "HTTP/1.1";
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| bad("bad Content-Length"))?,
                )
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            // Seconds; an HTTP date is not honoured (the backoff is used).
            "retry-after" => retry_after = value.parse().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    let mut rest = buf.split_off(head_end);
    let body = if chunked {
        read_chunked(conn, rest, wait)?
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(bad("response body over 1 MiB"));
        }
        while rest.len() < n {
            if fill(conn, &mut rest, wait)? == 0 {
                return Err(bad("connection closed inside the response"));
            }
        }
        rest.truncate(n);
        rest
    } else {
        // Until the collector closes the connection.
        keep = false;
        while rest.len() <= MAX_BODY && fill(conn, &mut rest, wait)? > 0 {}
        rest
    };
    Ok((
        Response {
            status,
            retry_after,
            body,
        },
        keep,
    ))
}

fn read_chunked(conn: &mut TcpStream, mut buf: Vec<u8>, wait: &Wait<'_>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf, b"\r\n") {
                break i;
            }
            if buf.len() > 1024 || fill(conn, &mut buf, wait)? == 0 {
                return Err(bad("bad chunk"));
            }
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).unwrap_or("");
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if size > MAX_BODY || body.len() + size > MAX_BODY {
            return Err(bad("response body over 1 MiB"));
        }
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, if any, up to the empty line.
            while find(&buf, b"\r\n").is_none() {
                if fill(conn, &mut buf, wait)? == 0 {
                    break;
                }
            }
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if fill(conn, &mut buf, wait)? == 0 {
                return Err(bad("connection closed inside a chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Reads what is there into `buf`; 0 at the end of the stream.
fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>, wait: &Wait<'_>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        wait.check()?;
        match conn.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if slice_over(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}
