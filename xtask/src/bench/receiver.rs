//! A local OTLP/HTTP receiver for the `tracer record --otlp` runs: it
//! answers `200 OK` to every `POST /v1/logs` and throws the body away, so
//! that what the bench measures is the tracer's side of the export
//! (building, encoding, gzipping, sending), not a collector's.
//!
//! One thread accepts; each connection gets a thread that reads a request
//! head, its `Content-Length` bytes of body, and answers; kept alive as
//! long as the tracer keeps it. It counts the requests and body bytes.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use anyhow::{Context as _, Result};

#[derive(Default)]
pub(super) struct Counts {
    pub(super) requests: AtomicU64,
    pub(super) body_bytes: AtomicU64,
}

pub(super) struct Receiver {
    pub(super) url: String,
    pub(super) counts: Arc<Counts>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1 for the rest of the bench.
    pub(super) fn start() -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding the local OTLP receiver")?;
        let url = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let c = Arc::clone(&c);
                    let _ = thread::Builder::new()
                        .name("otlp-conn".into())
                        .spawn(move || serve(conn, &c));
                }
            })?;
        Ok(Self { url, counts })
    }

    /// (requests, body bytes) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.counts.requests.load(Ordering::Relaxed),
            self.counts.body_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Requests on one connection until it closes or says something that is
/// not an OTLP logs POST.
fn serve(mut conn: TcpStream, counts: &Counts) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let head_end = loop {
            if let Some(i) = find_head_end(&buf) {
                break i;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(len) = request_length(&buf[..head_end]) else {
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        };
        // The body: what is already in `buf`, then read and discarded.
        let in_buf = (buf.len() - head_end).min(len);
        let mut left = len - in_buf;
        buf.drain(..head_end + in_buf);
        while left > 0 {
            match conn.read(&mut chunk[..left.min(1 << 16)]) {
                Ok(0) | Err(_) => return,
                Ok(n) => left -= n,
            }
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.body_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// Where the head ends (after its blank line).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The body length of a `POST /v1/logs` head; None for anything else.
fn request_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    if !lines.next()?.starts_with("POST /v1/logs ") {
        return None;
    }
    lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_posts_and_counts_them() {
        let r = Receiver::start().unwrap();
        let mut conn = TcpStream::connect(r.url.trim_start_matches("http://")).unwrap();
        for body in [&b"abc"[..], &[7u8; 200_000][..]] {
            conn.write_all(
                format!(
                    "POST /v1/logs HTTP/1.1\r\nHost: x\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .unwrap();
            conn.write_all(body).unwrap();
            let mut answer = [0u8; 38];
            conn.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        assert_eq!(r.counts(), (2, 200_003));
        assert_eq!(request_length(b"GET / HTTP/1.1\r\n\r\n"), None);
    }
}
