//! The HTTP/1.1 client of the hot path: one keep-alive connection per user, the
//! request written as bytes serialized once per scenario, the answer parsed in place
//! in one reused buffer and its body counted, never kept.
//!
//! Why not hyper's HTTP/1 client: a load tester spends most of its own CPU on the
//! client side of each request, and hyper's connection hands every request and answer
//! through channels between the caller and the connection (a queue, a oneshot, a body
//! channel) and allocates a header map, a request and a response each time. Here a
//! request is one `write` of ready bytes and one `read`, with no allocation.
//!
//! What is understood of an answer: the status line (`HTTP/1.0` or `HTTP/1.1`), 1xx
//! interim answers (skipped), and the framing of the body: none (`HEAD`, 204, 304),
//! `transfer-encoding: chunked` (chunk extensions and trailers skipped), another
//! transfer coding or no length (read to the end of the connection), or
//! `content-length`. `connection: close`, HTTP/1.0 without `keep-alive`, a body read
//! to the end, or bytes after the answer end the connection after this request.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The read buffer of a new connection. Answer heads are usually a few hundred bytes.
const INITIAL_BUFFER: usize = 16 * 1024;
/// The largest answer head accepted (hyper's default limit is about 400 KiB).
const MAX_HEAD: usize = 256 * 1024;

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// A reused connection failed before any byte of an answer arrived: the server
    /// most likely closed it while idle (its keep-alive timeout). Safe to send again
    /// on a new connection.
    Stale,
    /// The answer was malformed or the connection failed during the exchange.
    Http,
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read and not yet consumed.
    filled: usize,
    /// Answers completed on this connection; 0 while it is fresh.
    answered: u64,
    /// The last answer left the connection usable for another request.
    reusable: bool,
}

/// What a parsed answer head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    /// `HTTP/1.0`: the connection closes unless the server says `keep-alive`.
    http10: bool,
    content_length: Option<u64>,
    /// `transfer-encoding` present; `chunked` whether its last coding is chunked.
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

/// How the body of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection over an established stream (TCP or TLS).
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            buf: vec![0; INITIAL_BUFFER],
            filled: 0,
            answered: 0,
            reusable: true,
        }
    }

    /// Whether another request may be sent on this connection.
    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Send `request` (a whole serialized request, body included) and read the whole
    /// answer. `head`: the request was `HEAD`, so the answer has no body whatever its
    /// headers say. Returns the status and the body size (after chunk decoding).
    ///
    /// Cancel safety: dropping the future mid-way leaves the connection in an
    /// unknown state; the caller must drop the connection then.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        head: bool,
    ) -> Result<(u16, u64), Error> {
        // A fresh connection's failure is the request's own; a reused one may just
        // have been closed by the server while idle.
        let before_answer = if self.answered == 0 {
            Error::Http
        } else {
            Error::Stale
        };
        self.reusable = false;
        if self.io.write_all(request).await.is_err() || self.io.flush().await.is_err() {
            return Err(before_answer);
        }
        loop {
            let head_len = self.read_head(before_answer).await?;
            let h = parse_head(&self.buf[..head_len]).ok_or(Error::Http)?;
            self.consume(head_len);
            match h.status {
                // We never ask to switch protocols.
                101 => return Err(Error::Http),
                // Interim answers (100 Continue, 103 Early Hints): the real one follows.
                100..=199 => continue,
                _ => {}
            }
            let framing = if head || h.status == 204 || h.status == 304 {
                Framing::Length(0)
            } else if h.transfer_encoding {
                if h.chunked {
                    Framing::Chunked
                } else {
                    Framing::UntilClose
                }
            } else {
                h.content_length
                    .map_or(Framing::UntilClose, Framing::Length)
            };
            let bytes = match framing {
                Framing::Length(n) => self.read_length(n).await?,
                Framing::Chunked => self.read_chunked().await?,
                Framing::UntilClose => self.read_to_end().await?,
            };
            self.answered += 1;
            // Bytes beyond the answer (never sent by a well-behaved server, since
            // requests are not pipelined) would be taken for the next answer.
            self.reusable = framing != Framing::UntilClose
                && !h.close
                && (!h.http10 || h.keep_alive)
                && self.filled == 0;
            return Ok((h.status, bytes));
        }
    }

    /// Read until `buf` holds a whole answer head; returns its length (through the
    /// empty line). `eof_first`: the error when the connection ends before any byte.
    async fn read_head(&mut self, eof_first: Error) -> Result<usize, Error> {
        let mut searched = 0;
        loop {
            if let Some(end) = head_end(&self.buf[..self.filled], searched) {
                return Ok(end);
            }
            // The terminator may straddle this read and the next.
            searched = self.filled.saturating_sub(3);
            if self.filled == self.buf.len() {
                if self.buf.len() >= MAX_HEAD {
                    return Err(Error::Http);
                }
                self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
            }
            match self.io.read(&mut self.buf[self.filled..]).await {
                Ok(0) if self.filled == 0 => return Err(eof_first),
                Ok(0) => return Err(Error::Http),
                Ok(n) => self.filled += n,
                Err(_) if self.filled == 0 => return Err(eof_first),
                Err(_) => return Err(Error::Http),
            }
        }
    }

    /// Drop the first `n` bytes of the buffer.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// A body of `n` bytes, part of which may already be in the buffer.
    async fn read_length(&mut self, n: u64) -> Result<u64, Error> {
        let have = self.filled as u64;
        if have >= n {
            // `n` fits in the buffer here, so in a usize.
            self.consume(n as usize);
            return Ok(n);
        }
        let mut left = n - have;
        self.filled = 0;
        while left > 0 {
            let read = self.io.read(&mut self.buf).await.map_err(|_| Error::Http)?;
            if read == 0 {
                return Err(Error::Http);
            }
            let read = read as u64;
            if read > left {
                // The rest is not part of this answer.
                self.filled = (read - left) as usize;
                let start = left as usize;
                self.buf.copy_within(start..start + self.filled, 0);
                left = 0;
            } else {
                left -= read;
            }
        }
        Ok(n)
    }

    /// A body delimited by the end of the connection.
    async fn read_to_end(&mut self) -> Result<u64, Error> {
        let mut bytes = self.filled as u64;
        self.filled = 0;
        loop {
            match self.io.read(&mut self.buf).await {
                Ok(0) => return Ok(bytes),
                Ok(n) => bytes += n as u64,
                Err(_) => return Err(Error::Http),
            }
        }
    }

    /// A chunked body: the sum of the chunk sizes.
    async fn read_chunked(&mut self) -> Result<u64, Error> {
        let mut decoder = Chunked::default();
        loop {
            match decoder.feed(&self.buf[..self.filled])? {
                Some(used) => {
                    self.consume(used);
                    return Ok(decoder.data);
                }
                None => self.filled = 0,
            }
            let read = self.io.read(&mut self.buf).await.map_err(|_| Error::Http)?;
            if read == 0 {
                return Err(Error::Http);
            }
            self.filled = read;
        }
    }
}

/// The end of the head (just past the empty line that ends it) in `buf`, looking for
/// line ends from `from` on. Lines end with CRLF or a bare LF, as most parsers accept.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + p;
        // An empty line: "\n\n" or "\n\r\n".
        if lf >= 1 && buf[lf - 1] == b'\n' {
            return Some(lf + 1);
        }
        if lf >= 2 && buf[lf - 1] == b'\r' && buf[lf - 2] == b'\n' {
            return Some(lf + 1);
        }
        i = lf + 1;
    }
    None
}

/// Parse an answer head (status line, header lines, empty line). `None`: malformed.
fn parse_head(head: &[u8]) -> Option<Head> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next()?;
    // "HTTP/1.x SSS[ reason]"
    let rest = status_line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let http10 = match minor {
        b'0' => true,
        b'1' => false,
        _ => return None,
    };
    let rest = rest.strip_prefix(b" ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(rest.get(3), None | Some(b' ')) {
        return None;
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if status < 100 {
        return None;
    }
    let mut h = Head {
        status,
        http10,
        content_length: None,
        transfer_encoding: false,
        chunked: false,
        close: false,
        keep_alive: false,
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        // Obsolete line folding is refused, as RFC 9112 allows and httparse does.
        if line[0] == b' ' || line[0] == b'\t' {
            return None;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = &line[..colon];
        let value = || line[colon + 1..].trim_ascii();
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return None;
        }
        // The length first: most headers are none of the three, and that settles it.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_length(value())?;
                // Several values must agree (RFC 9112, 6.3).
                if h.content_length.is_some_and(|m| m != n) {
                    return None;
                }
                h.content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                h.transfer_encoding = true;
                // Only the last coding says whether the body is chunked.
                h.chunked = value()
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    h.close |= token.eq_ignore_ascii_case(b"close");
                    h.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
        }
    }
    Some(h)
}

/// A `content-length` value: decimal digits only, no overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Where a chunked body's decoder is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    #[default]
    Size,
    /// After the size: extensions up to the line end.
    SizeRest,
    /// Chunk data still to come.
    Data,
    /// The CRLF after the data: expecting CR or LF.
    DataEnd,
    /// After the CR of that CRLF.
    DataEndLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// After a CR at the start of a line: the final LF.
    FinalLf,
}

/// An incremental chunked-body decoder that only counts the data.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    /// The size being read, then the data left of the current chunk.
    size: u64,
    digits: u32,
    /// Data bytes so far.
    data: u64,
}

impl Chunked {
    /// Feed the next bytes of the body. `Some(n)`: the body ended after `n` of them;
    /// `None`: all were used and more are needed.
    fn feed(&mut self, mut input: &[u8]) -> Result<Option<usize>, Error> {
        let total = input.len();
        while let Some((&b, rest)) = input.split_first() {
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // At most 16 hex digits fit in a u64.
                        if self.digits == 16 {
                            return Err(Error::Http);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size << 4 | u64::from(d);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => return Err(Error::Http),
                    b'\n' => self.size_done(),
                    b';' | b' ' | b'\t' | b'\r' => self.state = ChunkState::SizeRest,
                    _ => return Err(Error::Http),
                },
                ChunkState::SizeRest => {
                    if b == b'\n' {
                        self.size_done();
                    }
                }
                ChunkState::Data => {
                    // Take as much of the chunk as is here, at once.
                    let take = self.size.min(input.len() as u64) as usize;
                    self.size -= take as u64;
                    self.data += take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    input = &input[take..];
                    continue;
                }
                ChunkState::DataEnd => match b {
                    b'\r' => self.state = ChunkState::DataEndLf,
                    b'\n' => self.next_chunk(),
                    _ => return Err(Error::Http),
                },
                ChunkState::DataEndLf => match b {
                    b'\n' => self.next_chunk(),
                    _ => return Err(Error::Http),
                },
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::FinalLf,
                    b'\n' => return Ok(Some(total - rest.len())),
                    _ => self.state = ChunkState::Trailer,
                },
                ChunkState::Trailer => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::FinalLf => match b {
                    b'\n' => return Ok(Some(total - rest.len())),
                    _ => return Err(Error::Http),
                },
            }
            input = rest;
        }
        Ok(None)
    }

    /// The size line ended: data follows, or (size 0) the trailers.
    fn size_done(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }

    fn next_chunk(&mut self) {
        self.state = ChunkState::Size;
        self.size = 0;
        self.digits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    /// Run one exchange against a peer that answers `answer` (written in `pieces`
    /// cut points, to exercise partial reads) and then keeps the connection open or
    /// closes it.
    async fn exchange(
        answer: &[u8],
        head: bool,
        cuts: &[usize],
        close: bool,
    ) -> (Result<(u16, u64), Error>, bool) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let answer = answer.to_vec();
        let cuts = cuts.to_vec();
        let peer = tokio::spawn(async move {
            let mut req = vec![0; GET.len()];
            server.read_exact(&mut req).await.unwrap();
            assert_eq!(req, GET);
            let mut at = 0;
            for c in cuts.into_iter().chain([answer.len()]) {
                server.write_all(&answer[at..c]).await.unwrap();
                server.flush().await.unwrap();
                tokio::task::yield_now().await;
                at = c;
            }
            if !close {
                // Hold the connection until the client is done.
                let _ = server.read(&mut [0; 1]).await;
            }
        });
        let mut conn = Conn::new(client);
        let r = conn.exchange(GET, head).await;
        let reusable = conn.is_reusable();
        drop(conn);
        peer.await.unwrap();
        (r, reusable)
    }

    #[tokio::test]
    async fn content_length_chunked_and_close_delimited_bodies() {
        // (answer, HEAD request, cut points, peer closes, result, reusable after)
        type Case<'a> = (
            &'a [u8],
            bool,
            &'a [usize],
            bool,
            Result<(u16, u64), Error>,
            bool,
        );
        let cases: &[Case<'_>] = &[
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false, &[3, 20, 40], false, Ok((200, 5)), true),
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, &[], false, Ok((404, 0)), true),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n",
                false,
                &[10, 45, 50, 51, 70, 80],
                false,
                Ok((200, 21)),
                true,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", false, &[25], false, Ok((201, 2)), true),
            (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", false, &[], true, Ok((200, 2)), false),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", false, &[], true, Ok((200, 2)), false),
            (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nok", false, &[], false, Ok((200, 2)), true),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", false, &[22], true, Ok((200, 13)), false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", true, &[], false, Ok((200, 0)), true),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, &[], false, Ok((204, 0)), true),
            (b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", false, &[], false, Ok((200, 1)), true),
            // Extra bytes after the answer: the answer counts, the connection does not.
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nxy", false, &[], false, Ok((200, 1)), false),
            // Malformed answers and early ends.
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", false, &[], true, Err(Error::Http), false),
            (b"HTTP/2 200\r\n\r\n", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 20 OK\r\n\r\n", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false, &[], true, Err(Error::Http), false),
            (b"HTTP/1.1 200", false, &[], true, Err(Error::Http), false),
            // A fresh connection closed before any answer is the request's failure.
            (b"", false, &[], true, Err(Error::Http), false),
        ];
        for (answer, head, cuts, close, expected, reusable) in cases {
            let got = exchange(answer, *head, cuts, *close).await;
            assert_eq!(
                got,
                (*expected, *reusable),
                "answer {:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn a_reused_connection_closed_before_answering_is_stale() {
        let (client, mut server) = tokio::io::duplex(1024);
        let peer = tokio::spawn(async move {
            let mut req = vec![0; GET.len()];
            server.read_exact(&mut req).await.unwrap();
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            // The idle timeout: the second request is read, never answered.
            server.read_exact(&mut req).await.unwrap();
        });
        let mut conn = Conn::new(client);
        assert_eq!(conn.exchange(GET, false).await, Ok((200, 0)));
        assert!(conn.is_reusable());
        assert_eq!(conn.exchange(GET, false).await, Err(Error::Stale));
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_larger_than_the_buffer_is_counted() {
        let size = INITIAL_BUFFER * 3 + 7;
        let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes();
        answer.resize(answer.len() + size, b'x');
        let (r, reusable) = exchange(&answer, false, &[100, 20_000], false).await;
        assert_eq!((r, reusable), (Ok((200, size as u64)), true));
    }

    #[test]
    fn head_end_finds_the_empty_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody", 0), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody", 0), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nx: y\r\n", 0), None);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n", 20), Some(25));
    }

    #[test]
    fn an_oversized_chunk_size_is_refused() {
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"11112222333344445\r\n"), Err(Error::Http));
    }
}
