//! The lean upstream exchange: a bodiless request (GET, HEAD, a bodiless DELETE — nearly every click) is written
//! and its response read **inside the client connection's task**, on a pooled connection this module owns.
//!
//! Why not hyper's client for these: its connection-level client drives each connection from its own task, so
//! every request crosses an mpsc channel to that task, its response head a oneshot back, and its body a third
//! channel — three hand-offs and wake-ups per request, about a third of the proxy's user CPU under load
//! (BENCHMARKS.md, "hero_proxy"). Here the request head is one write, the response head is parsed with `httparse`
//! (the parser hyper uses) straight from the socket buffer, and a response body already in that buffer is handed
//! over without touching the socket again.
//!
//! What stays on hyper's client ([`crate::upstream`]): requests with a body (streaming uploads, hyper frames them)
//! and WebSocket upgrades (a 101 hands the socket over). The client side of every connection is always hyper's
//! server, so whatever a backend answers here only ever reaches a browser re-framed by hyper.
//!
//! Response framing follows RFC 9112 §6.3, in [`framing`]; anything ambiguous (two different `Content-Length`s,
//! `Transfer-Encoding` with `Content-Length`) is either refused or read to the end of the connection, which is then
//! never reused. A connection goes back to the pool only when nothing is left over in its buffer, and comes out
//! only when the kernel has nothing pending on it either ([`Stream::is_quiet`]), and a HEAD's connection is never
//! reused. That catches extra bytes a backend sent with a response or before the next request; bytes it sends
//! later still (after the check) would make one response bleed into the next, which no check can prevent — so
//! pooled connections are never shared between people ([`crate::pool::PoolKey`]).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::pool::{Pool, PoolKey, Pooled};

/// Error type of a lean response body (a broken or malformed upstream body).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The longest response head accepted, here and on hyper's client (`upstream.rs`, whose own default is about 400
/// KiB): a head this long is a broken or hostile backend.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// At most this many response headers (hyper's default).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line or trailer section accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// How much is read from the socket at once while streaming a body.
const READ_CHUNK: usize = 64 * 1024;

/// A plain byte stream to an upstream.
pub enum Stream {
    /// `http://host:port`.
    Tcp(TcpStream),
    /// `unix:/path`.
    Unix(UnixStream),
}

impl Stream {
    /// True when the socket has nothing to read and is still open, as an idle keep-alive connection must be.
    ///
    /// Why a real `recv(MSG_PEEK | MSG_DONTWAIT)` and not tokio's readiness flag: the flag is only set when the
    /// reactor runs, and a connection is often checked out again before it does (the next request of the same
    /// client connection, in the same task). Bytes a backend sent after a response was complete — an unsolicited
    /// second response, a body it sent after a HEAD/204/304 head, the rest of a body longer than its
    /// Content-Length — would then be parsed as the *next* request's response. The kernel knows; ask it. One
    /// syscall per reuse, and a connection that looks anything but quiet is simply not reused.
    fn is_quiet(&self) -> bool {
        let sock = match self {
            Stream::Tcp(s) => socket2::SockRef::from(s),
            Stream::Unix(s) => socket2::SockRef::from(s),
        };
        let mut one = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // tokio's sockets are non-blocking, so this never waits: WouldBlock is "open and nothing pending";
        // Ok(0) is the backend's close, Ok(n) bytes nobody asked for, any other error a broken socket.
        matches!(sock.peek(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, b),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A connection and what has been read from it but not yet consumed.
pub struct Conn {
    io: Stream,
    buf: BytesMut,
}

impl Conn {
    /// A fresh connection over `io`.
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Reads more into the buffer; `Ok(0)` is the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// A lean connection may carry another request when nothing is left over in its buffer and nothing is pending on
/// it in the kernel (see [`Stream::is_quiet`]: one `MSG_PEEK`, asked only of the connection about to be reused).
impl Pooled for Conn {
    fn usable(&self) -> bool {
        self.buf.is_empty() && self.io.is_quiet()
    }
}

thread_local! {
    /// This thread's idle lean connections (see [`crate::pool`]).
    static POOL: RefCell<Pool<Conn>> = RefCell::new(Pool::default());
}

/// An idle connection for `key` that is still usable; stale and closed ones are dropped on the way.
pub fn checkout(key: &PoolKey) -> Option<Conn> {
    POOL.with(|p| p.borrow_mut().take(key))
}

/// Drops this thread's idle connections that are past the idle limit or no longer quiet (see [`Pool::sweep`]).
pub fn sweep_idle() {
    POOL.with(|p| p.borrow_mut().sweep())
}

/// How many idle connections this thread holds for `key`.
#[cfg(test)]
fn idle_count(key: &PoolKey) -> usize {
    POOL.with(|p| p.borrow().len(key))
}

fn checkin(key: &PoolKey, conn: Conn) {
    POOL.with(|p| p.borrow_mut().put(key, conn))
}

/// Why an exchange failed, and whether the request may be sent again on a fresh connection.
#[derive(Debug)]
pub enum ExchangeError {
    /// A pooled connection turned out closed before any of the response arrived. For an idempotent method
    /// (RFC 9110 §9.2.2) the request is sent once more on a fresh connection; otherwise it is not, since the
    /// backend may have acted on it.
    Stale(io::Error),
    /// The upstream broke the exchange or answered something that is not HTTP/1.1.
    Failed(String),
}

/// Writes the request head (the request has no body) and reads the response head. `key` is the pool the
/// connection goes back to once its response body has been read to the end.
pub async fn exchange(
    mut conn: Conn,
    pooled: bool,
    key: PoolKey,
    method: &Method,
    head: &[u8],
) -> Result<Response<LeanBody>, ExchangeError> {
    let stale = |e: io::Error| {
        if pooled {
            ExchangeError::Stale(e)
        } else {
            ExchangeError::Failed(e.to_string())
        }
    };
    conn.io.write_all(head).await.map_err(stale)?;
    loop {
        let parsed = match parse_head(&mut conn.buf) {
            Ok(p) => p,
            Err(e) => return Err(ExchangeError::Failed(e)),
        };
        let Some((status, http10, headers)) = parsed else {
            if conn.buf.len() > MAX_HEAD {
                return Err(ExchangeError::Failed("response head too large".into()));
            }
            match conn.fill().await {
                Ok(0) if conn.buf.is_empty() => {
                    return Err(stale(io::Error::from(io::ErrorKind::UnexpectedEof)))
                }
                Ok(0) => {
                    return Err(ExchangeError::Failed(
                        "connection closed inside the response head".into(),
                    ))
                }
                Ok(_) => continue,
                Err(e) if conn.buf.is_empty() => return Err(stale(e)),
                Err(e) => return Err(ExchangeError::Failed(e.to_string())),
            }
        };
        // 1xx other than 101 are interim answers (100 Continue, 103 Early Hints): skipped, as hyper's client does.
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        // The framing headers themselves are made right for the client by `headers::sanitize_response`, for
        // this path and hyper's alike (a Content-Length beside Transfer-Encoding dropped, a list made one value).
        let framing = framing(method, status, http10, &headers).map_err(ExchangeError::Failed)?;
        let mut resp = Response::new(LeanBody::new(conn, framing, key));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
}

/// Parses one response head from the front of `buf`, consuming it: `None` while incomplete.
/// A parsed response head: status, whether it was HTTP/1.0, headers.
type Head = (StatusCode, bool, HeaderMap);

fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut raw);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    // The bound holds however the head arrived: in one read, a head longer than it was accepted whole.
    if n > MAX_HEAD {
        return Err("response head too large".into());
    }
    let status = StatusCode::from_u16(r.code.unwrap_or(0)).map_err(|_| "invalid status code")?;
    let http10 = r.version == Some(0);
    // Offsets into the head, so the values can share its bytes instead of each being copied.
    let base = buf.as_ptr() as usize;
    let mut spans: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "invalid header name")?;
        // An empty value's slice need not point into the buffer.
        let start = if h.value.is_empty() {
            0
        } else {
            h.value.as_ptr() as usize - base
        };
        spans.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(n).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, s, e) in spans {
        let v =
            HeaderValue::from_maybe_shared(head.slice(s..e)).map_err(|_| "invalid header value")?;
        headers.append(name, v);
    }
    Ok(Some((status, http10, headers)))
}

/// How a response body is delimited (RFC 9112 §6.3), and whether the connection can carry another exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` as the final coding.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// The framing of a response and whether its connection may be reused afterwards.
fn framing(
    method: &Method,
    status: StatusCode,
    http10: bool,
    h: &HeaderMap,
) -> Result<(Framing, bool), String> {
    let closes = http10
        || h.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        });
    let reuse = !closes;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Never asked for on this path (upgrades go through hyper): the handler refuses it; the socket is dropped.
        return Ok((Framing::Empty, false));
    }
    if method == Method::HEAD {
        // A body after a HEAD response is the classic backend framing bug, and the bytes can arrive after any
        // check: HEAD is rare, so its connection is simply not reused (see also `pool::PoolKey`).
        return Ok((Framing::Empty, false));
    }
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, reuse));
    }
    if h.contains_key(TRANSFER_ENCODING) {
        // The final coding decides (RFC 9112 §6.3); a value that is not text makes it unknown: read to the end.
        let values = h.get_all(TRANSFER_ENCODING);
        let last = match values
            .iter()
            .map(|v| v.to_str())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => v
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .rfind(|t| !t.is_empty())
                .map(str::to_ascii_lowercase),
            Err(_) => None,
        };
        // Both framings at once is the classic smuggling shape: decode by Transfer-Encoding, never reuse.
        let reuse = reuse && !h.contains_key(CONTENT_LENGTH);
        return Ok(match last.as_deref() {
            Some("chunked") => (Framing::Chunked, reuse),
            _ => (Framing::UntilClose, false),
        });
    }
    let mut length: Option<u64> = None;
    for v in h.get_all(CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| "invalid Content-Length")?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid Content-Length".into());
            }
            let n: u64 = part.parse().map_err(|_| "invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values".into());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, reuse),
        Some(n) => (Framing::Length(n), reuse),
        None => (Framing::UntilClose, false),
    })
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (trailers are dropped).
    Trailers(usize),
}

enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// A response body read from a lean connection; the connection returns to the pool when the body has been read
/// to its end (and is closed if the body is dropped before).
pub struct LeanBody {
    conn: Option<Conn>,
    state: State,
    reuse: bool,
    key: PoolKey,
}

impl LeanBody {
    fn new(conn: Conn, (framing, reuse): (Framing, bool), key: PoolKey) -> LeanBody {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
        };
        let mut b = LeanBody {
            conn: Some(conn),
            state,
            reuse,
            key,
        };
        if matches!(b.state, State::Done) {
            b.finish();
        }
        b
    }

    /// The body is complete: the connection goes back to the pool if nothing is left over on it.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(c) = self.conn.take() {
            if self.reuse && c.buf.is_empty() {
                checkin(&self.key, c);
            }
        }
    }

    fn fail(&mut self, msg: &str) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            msg.to_owned(),
        )
        .into())))
    }
}

/// Finds the end of a CRLF-terminated line at the start of `buf`.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Parses a chunk-size line (`1*HEXDIG [ chunk-ext ]`, RFC 9112 §7.1); extensions are ignored.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || {
        let r = rest.iter().skip_while(|b| **b == b' ' || **b == b'\t');
        matches!(r.clone().next(), Some(b';'))
    };
    if digits == 0 || digits > 16 || !rest_ok {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

impl Body for LeanBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) if !conn.buf.is_empty() => {
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let data = conn.buf.split_to(n).freeze();
                    this.state = State::Length(left - n as u64);
                    if left == n as u64 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(Chunk::Data(left)) if !conn.buf.is_empty() => {
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let data = conn.buf.split_to(n).freeze();
                    this.state = State::Chunked(if left == n as u64 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - n as u64)
                    });
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(Chunk::Size) => {
                    if let Some(end) = line_end(&conn.buf) {
                        let Some(size) = chunk_size(&conn.buf[..end]) else {
                            return this.fail("malformed chunk size in the upstream's body");
                        };
                        conn.buf.advance(end + 2);
                        this.state = State::Chunked(if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    if conn.buf.len() > MAX_CHUNK_LINE {
                        return this.fail("chunk size line too long in the upstream's body");
                    }
                }
                State::Chunked(Chunk::DataEnd) if conn.buf.len() >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        return this.fail("chunk data not followed by CRLF in the upstream's body");
                    }
                    conn.buf.advance(2);
                    this.state = State::Chunked(Chunk::Size);
                    continue;
                }
                State::Chunked(Chunk::Trailers(seen)) => {
                    if let Some(end) = line_end(&conn.buf) {
                        conn.buf.advance(end + 2);
                        if end == 0 {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        if seen + end > MAX_TRAILERS {
                            return this.fail("trailers too large in the upstream's body");
                        }
                        this.state = State::Chunked(Chunk::Trailers(seen + end + 2));
                        continue;
                    }
                    if conn.buf.len() > MAX_CHUNK_LINE {
                        return this.fail("trailer line too long in the upstream's body");
                    }
                }
                _ => {}
            }
            // Nothing decodable in the buffer: read more.
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(0)) => {
                    if matches!(this.state, State::UntilClose) {
                        this.state = State::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    return this.fail("upstream closed the connection inside the body");
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// Writes a bodiless request's head: request line (origin-form target) and headers, as hyper's client would.
pub fn encode_head(method: &Method, target: &str, headers: &HeaderMap, out: &mut Vec<u8>) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn framing_follows_rfc9112_section_6_3() {
        let get = Method::GET;
        // (method, status, HTTP/1.0, headers, framing and reuse or refusal)
        type Case<'a> = (
            &'a Method,
            u16,
            bool,
            &'a [(&'a str, &'a str)],
            Result<(Framing, bool), ()>,
        );
        let cases: &[Case] = &[
            (
                &get,
                200,
                false,
                &[("content-length", "5")],
                Ok((Framing::Length(5), true)),
            ),
            (
                &get,
                200,
                false,
                &[("content-length", "5, 5")],
                Ok((Framing::Length(5), true)),
            ),
            (
                &get,
                200,
                false,
                &[("content-length", "5"), ("content-length", "5")],
                Ok((Framing::Length(5), true)),
            ),
            (
                &get,
                200,
                false,
                &[("content-length", "5"), ("content-length", "6")],
                Err(()),
            ),
            (&get, 200, false, &[("content-length", "+5")], Err(())),
            (&get, 200, false, &[("content-length", "0x5")], Err(())),
            (&get, 200, false, &[("content-length", "")], Err(())),
            (
                &get,
                200,
                false,
                &[("content-length", "99999999999999999999999")],
                Err(()),
            ),
            (
                &get,
                200,
                false,
                &[("content-length", "0")],
                Ok((Framing::Empty, true)),
            ),
            (
                &get,
                200,
                false,
                &[("transfer-encoding", "chunked")],
                Ok((Framing::Chunked, true)),
            ),
            (
                &get,
                200,
                false,
                &[("transfer-encoding", "gzip, Chunked")],
                Ok((Framing::Chunked, true)),
            ),
            (
                &get,
                200,
                false,
                &[("transfer-encoding", "chunked, gzip")],
                Ok((Framing::UntilClose, false)),
            ),
            (
                &get,
                200,
                false,
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                Ok((Framing::Chunked, false)),
            ),
            (&get, 200, false, &[], Ok((Framing::UntilClose, false))),
            (
                &get,
                200,
                true,
                &[("content-length", "5")],
                Ok((Framing::Length(5), false)),
            ),
            (
                &get,
                200,
                false,
                &[("content-length", "5"), ("connection", "keep-alive, Close")],
                Ok((Framing::Length(5), false)),
            ),
            (
                &get,
                204,
                false,
                &[("content-length", "5")],
                Ok((Framing::Empty, true)),
            ),
            (
                &get,
                304,
                false,
                &[("transfer-encoding", "chunked")],
                Ok((Framing::Empty, true)),
            ),
            // HEAD: no body, and never reused (a late body is the classic backend bug).
            (
                &Method::HEAD,
                200,
                false,
                &[("content-length", "5")],
                Ok((Framing::Empty, false)),
            ),
            (&get, 101, false, &[], Ok((Framing::Empty, false))),
        ];
        for (m, st, h10, hs, want) in cases {
            let got = framing(m, StatusCode::from_u16(*st).unwrap(), *h10, &hm(hs));
            assert_eq!(got.map_err(|_| ()), *want, "{m} {st} http1.0={h10} {hs:?}");
        }
    }

    #[test]
    fn chunk_size_lines() {
        for (line, want) in [
            ("5", Some(5)),
            ("1aF", Some(0x1af)),
            ("0", Some(0)),
            ("5;name=value", Some(5)),
            ("5 ; ext", Some(5)),
            ("", None),
            (";5", None),
            ("5x", None),
            ("-5", None),
            ("+5", None),
            ("11111111111111111", None),
            ("5 6", None),
        ] {
            assert_eq!(chunk_size(line.as_bytes()), want, "{line:?}");
        }
    }

    #[test]
    fn heads_are_parsed_and_bounded() {
        let mut b =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nokREST"[..]);
        let (st, h10, h) = parse_head(&mut b).unwrap().unwrap();
        assert_eq!((st, h10), (StatusCode::OK, false));
        assert_eq!(h.get("x-a").unwrap(), "1");
        assert_eq!(&b[..], b"okREST");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-le"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"\x00\x01",
        ] {
            assert!(parse_head(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse_head(&mut BytesMut::from(&many[..])).is_err());
        // A complete head longer than MAX_HEAD, all in the buffer at once (one read), is refused too.
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..70 {
            long.extend_from_slice(format!("x-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
        }
        long.extend_from_slice(b"\r\n");
        assert!(long.len() > MAX_HEAD);
        assert_eq!(
            parse_head(&mut BytesMut::from(&long[..])).unwrap_err(),
            "response head too large"
        );
    }

    /// The decoder's state survives every read boundary: the body arrives one byte per read.
    #[tokio::test(flavor = "current_thread")]
    async fn bodies_decode_the_same_whatever_the_read_boundaries() {
        use http_body_util::BodyExt as _;
        let cases: [(&[u8], Framing, &[u8], bool); 4] = [
            (
                b"5;e=1\r\nhello\r\n3\r\n, w\r\n0\r\nT: 1\r\nU: 2\r\n\r\n",
                Framing::Chunked,
                b"hello, w",
                true,
            ),
            (
                b"A\r\n0123456789\r\n0\r\n\r\n",
                Framing::Chunked,
                b"0123456789",
                true,
            ),
            (b"abcdefgh", Framing::Length(8), b"abcdefgh", true),
            (b"to the end", Framing::UntilClose, b"to the end", false),
        ];
        for (i, (wire, framing, want, pooled)) in cases.into_iter().enumerate() {
            let (a, mut b) = UnixStream::pair().unwrap();
            let key = PoolKey {
                upstream: format!("test-{i}").into(),
                user: None,
            };
            let body = LeanBody::new(Conn::new(Stream::Unix(a)), (framing, true), key.clone());
            let writer = tokio::spawn(async move {
                for byte in wire {
                    b.write_all(&[*byte]).await.unwrap();
                    tokio::task::yield_now().await;
                }
                // Kept open for the framed bodies (their end is in the bytes); closed for the close-delimited one.
                if framing == Framing::UntilClose {
                    drop(b);
                    None
                } else {
                    Some(b)
                }
            });
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], want, "case {i}");
            let _keep = writer.await.unwrap();
            assert_eq!(
                checkout(&key).is_some(),
                pooled,
                "case {i}: pooled afterwards"
            );
        }
    }

    /// Bytes a backend sends once a response is complete must never become the next request's response. Each
    /// case: the response is read to its end (its connection goes back to the pool), then the backend writes more
    /// — synchronously, with no reactor turn before the next checkout, which is when the readiness flag alone
    /// missed it — and the connection must not come out of the pool again. The quiet control case must.
    #[tokio::test(flavor = "current_thread")]
    async fn bytes_sent_after_a_complete_response_are_never_reused() {
        use http_body_util::BodyExt as _;
        use std::io::Write as _;
        /// (method, the complete response, what the backend sends afterwards: None = nothing, Some(b"") = close)
        type Case = (Method, &'static [u8], Option<&'static [u8]>);
        let cases: [Case; 7] = [
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                None,
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!"),
            ),
            (
                Method::HEAD,
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Some(b"EVIL!"),
            ),
            (
                Method::GET,
                b"HTTP/1.1 204 No Content\r\n\r\n",
                Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nEVIL!"),
            ),
            (
                Method::GET,
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                Some(b"EVIL!"),
            ),
            // A Content-Length shorter than what the backend sends, the rest in a later segment.
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Some(b"xyzHTTP/1.1 200 OK\r\n\r\n"),
            ),
            (
                Method::GET,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Some(b""),
            ),
        ];
        for (i, (method, first, after)) in cases.into_iter().enumerate() {
            let (a, b) = UnixStream::pair().unwrap();
            let mut backend = b.into_std().unwrap();
            backend.set_nonblocking(false).unwrap();
            backend.write_all(first).unwrap();
            let key = PoolKey {
                upstream: format!("late-{i}").into(),
                user: None,
            };
            let mut head = Vec::new();
            encode_head(&method, "/a", &HeaderMap::new(), &mut head);
            let conn = Conn::new(Stream::Unix(a));
            let resp = exchange(conn, false, key.clone(), &method, &head)
                .await
                .unwrap();
            resp.into_body().collect().await.unwrap();
            match after {
                None => {}
                Some(b"") => backend.shutdown(std::net::Shutdown::Write).unwrap(),
                // A connection that was not pooled at all (after a HEAD) is closed already: the write may fail.
                Some(bytes) => {
                    let _ = backend.write_all(bytes);
                }
            }
            assert_eq!(
                checkout(&key).is_some(),
                after.is_none(),
                "case {i}: reused after {:?}",
                after.map(String::from_utf8_lossy)
            );
        }
    }

    /// The same check on TCP: a quiet keep-alive connection is reused, one the backend closed is not.
    #[tokio::test(flavor = "current_thread")]
    async fn tcp_connections_are_reused_only_while_quiet() {
        use http_body_util::BodyExt as _;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for (i, close) in [false, true].into_iter().enumerate() {
            let client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = l.accept().await.unwrap();
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            let key = PoolKey {
                upstream: format!("tcp-{i}").into(),
                user: None,
            };
            let mut head = Vec::new();
            encode_head(&Method::GET, "/a", &HeaderMap::new(), &mut head);
            let resp = exchange(
                Conn::new(Stream::Tcp(client)),
                false,
                key.clone(),
                &Method::GET,
                &head,
            )
            .await
            .unwrap();
            resp.into_body().collect().await.unwrap();
            if close {
                drop(server);
                // Loopback delivers the FIN at once in practice; should it lag, give it a bounded number of turns.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let Some(c) = checkout(&key) else { break };
                    assert!(
                        Instant::now() < deadline,
                        "a closed connection is still reused"
                    );
                    checkin(&key, c);
                    tokio::task::yield_now().await;
                }
            } else {
                assert!(checkout(&key).is_some(), "a quiet connection is reused");
                drop(server);
            }
        }
    }

    /// The periodic sweep frees what checkout would only find on the next visit: connections the backend closed,
    /// and ones idle past the limit — closing their sockets (the backend sees the end of the connection).
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_sweep_closes_dead_and_long_idle_connections() {
        use tokio::io::AsyncReadExt as _;
        let (quiet, mut quiet_peer) = UnixStream::pair().unwrap();
        let (closed, closed_peer) = UnixStream::pair().unwrap();
        let key = |u: &str| PoolKey {
            upstream: u.into(),
            user: Some(1),
        };
        let (a, b) = (key("sweep-quiet"), key("sweep-closed"));
        checkin(&a, Conn::new(Stream::Unix(quiet)));
        checkin(&b, Conn::new(Stream::Unix(closed)));
        drop(closed_peer);
        sweep_idle();
        assert_eq!((idle_count(&a), idle_count(&b)), (1, 0));
        tokio::time::advance(crate::pool::IDLE).await;
        sweep_idle();
        assert_eq!(idle_count(&a), 0, "idle past the limit");
        let mut byte = [0u8; 1];
        assert_eq!(
            quiet_peer.read(&mut byte).await.unwrap(),
            0,
            "its socket is closed"
        );
    }
}
