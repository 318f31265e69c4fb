//! Request heads and chunked framing as the gate checks them, before hyper sees a byte.
//!
//! The rules are hyper's (it parses with the same `httparse` and `http` types) made stricter where
//! HTTP leaves room for request smuggling: exactly one `Content-Length` of plain digits, at most one
//! `Transfer-Encoding`, which must be `chunked`, and never both. A head that passes here is one
//! hyper accepts, so hyper's own empty-bodied 400 never reaches a client.

use super::ProtocolError;

/// Largest request head (request line and header fields), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Most empty lines tolerated before a request line (RFC 9112 §2.2 says to ignore at least one).
const MAX_LEADING_EMPTY_LINES: usize = 8;
/// Longest chunk-size line (size, extensions), and the most trailer bytes, of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// How the body of an accepted request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (0 when absent).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Outcome of looking at the bytes of a head received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadStatus {
    /// More bytes are needed.
    Partial,
    /// A complete, acceptable head of `len` bytes whose body is framed as given.
    Complete {
        /// Bytes of the head, including its final empty line.
        len: usize,
        /// The body's framing.
        framing: Framing,
    },
}

fn bad(status: u16, error: impl Into<String>, hint: &'static str) -> ProtocolError {
    ProtocolError {
        status,
        error: error.into(),
        hint,
    }
}

/// Drops the empty lines a client may send before a request line; refuses too many of them.
///
/// # Errors
/// 400 when more than a few empty lines precede the request line.
pub fn strip_leading_empty_lines(buf: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let mut at = 0;
    let mut lines = 0;
    loop {
        if buf[at..].starts_with(b"\r\n") {
            at += 2;
        } else if buf[at..].starts_with(b"\n") {
            at += 1;
        } else {
            break;
        }
        lines += 1;
    }
    if lines > MAX_LEADING_EMPTY_LINES {
        return Err(bad(
            400,
            "too many empty lines before the request line",
            "send one request line, e.g. `GET /health HTTP/1.1`",
        ));
    }
    buf.drain(..at);
    Ok(())
}

/// Whether the bytes hold a line end (worth parsing) — a request line or a blank line completes
/// something, nothing else does. `from` is where the new bytes start.
pub fn worth_parsing(buf: &[u8], from: usize, first_line_seen: bool) -> bool {
    let start = from.saturating_sub(3);
    let tail = &buf[start..];
    if !first_line_seen && tail.contains(&b'\n') {
        return true;
    }
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Checks the head at the start of `buf`.
///
/// # Errors
/// 400 for a malformed request line, header field or body framing, 431 for a head larger than
/// [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] fields, 414 for an over-long target.
pub fn parse_head(buf: &[u8]) -> Result<HeadStatus, ProtocolError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(too_large());
        }
        Ok(httparse::Status::Partial) => return Ok(HeadStatus::Partial),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(bad(
                431,
                format!("more than {MAX_HEADERS} header fields"),
                "send fewer header fields",
            ))
        }
        Err(e) => {
            let what = match e {
                httparse::Error::Token if req.method.is_none() => "the method",
                httparse::Error::Token => "the request target",
                httparse::Error::Version => "the HTTP version",
                httparse::Error::NewLine => "a line ending",
                _ => "a header field",
            };
            return Err(bad(
                400,
                format!("malformed request head: {what} is invalid ({e})"),
                "send an HTTP/1.1 request: `METHOD /path HTTP/1.1`, then `Name: value` lines",
            ));
        }
    };
    if len > MAX_HEAD_BYTES {
        return Err(too_large());
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad(
            400,
            "incomplete request line",
            "send `METHOD /path HTTP/1.1`",
        ));
    };
    // hyper converts these with the `http` crate; anything it would refuse is refused here.
    http::Method::from_bytes(method.as_bytes()).map_err(|_| {
        bad(
            400,
            "malformed request head: invalid method",
            "use GET or POST",
        )
    })?;
    if path.len() > MAX_HEAD_BYTES / 2 {
        return Err(bad(
            414,
            "request target is too long",
            "shorten the query string",
        ));
    }
    http::Uri::try_from(path).map_err(|e| {
        bad(
            400,
            format!("malformed request target ({e})"),
            "percent-encode the path and query",
        )
    })?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            bad(
                400,
                "malformed header field name",
                "header names are tokens",
            )
        })?;
        http::HeaderValue::from_bytes(h.value).map_err(|_| {
            bad(
                400,
                "malformed header field value",
                "remove control characters",
            )
        })?;
        if h.name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(bad(
                    400,
                    "more than one Content-Length header",
                    "send exactly one Content-Length",
                ));
            }
            length = Some(parse_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked {
                return Err(bad(
                    400,
                    "more than one Transfer-Encoding header",
                    "send `Transfer-Encoding: chunked` once",
                ));
            }
            if version == 0 {
                return Err(bad(
                    400,
                    "Transfer-Encoding is not allowed in HTTP/1.0",
                    "use HTTP/1.1 or Content-Length",
                ));
            }
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(bad(
                    400,
                    "unsupported Transfer-Encoding; only `chunked` is accepted",
                    "send `Transfer-Encoding: chunked` or a Content-Length",
                ));
            }
            chunked = true;
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(bad(
                400,
                "both Content-Length and Transfer-Encoding are set",
                "send one of them",
            ))
        }
        (true, None) => Framing::Chunked,
        (false, n) => Framing::Length(n.unwrap_or(0)),
    };
    Ok(HeadStatus::Complete { len, framing })
}

fn too_large() -> ProtocolError {
    bad(
        431,
        format!("request head is larger than {MAX_HEAD_BYTES} bytes"),
        "send fewer or shorter header fields",
    )
}

fn parse_length(value: &[u8]) -> Result<u64, ProtocolError> {
    let v = value.trim_ascii();
    let invalid = || {
        bad(
            400,
            format!(
                "invalid Content-Length {:?}",
                String::from_utf8_lossy(&v[..v.len().min(40)])
            ),
            "Content-Length is the body size in bytes: plain decimal digits",
        )
    };
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)
}

/// Incremental decoder of chunked framing (RFC 9112 §7.1): it only finds where the body ends and
/// refuses malformed framing; the bytes themselves pass on to hyper unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunked {
    /// In a chunk-size line: the size so far, digits seen, whether extensions started, line bytes.
    Size {
        /// Value of the hex digits so far.
        size: u64,
        /// Hex digits seen.
        digits: u8,
        /// Past the digits (whitespace or `;` extensions).
        rest: bool,
        /// Bytes of this line so far.
        line: usize,
    },
    /// Saw the CR of a chunk-size line.
    SizeLf(u64),
    /// Inside chunk data: bytes left.
    Data(u64),
    /// Expect the CR after chunk data.
    DataCr,
    /// Expect the LF after chunk data.
    DataLf,
    /// In the trailer section: bytes of the current line, total trailer bytes, CR seen.
    Trailer {
        /// Bytes of the current trailer line.
        line: usize,
        /// Trailer bytes so far.
        total: usize,
        /// The previous byte was CR.
        cr: bool,
    },
    /// The body is complete.
    Done,
}

impl Chunked {
    /// The state at the start of a chunked body.
    pub fn new() -> Chunked {
        Chunked::Size {
            size: 0,
            digits: 0,
            rest: false,
            line: 0,
        }
    }

    /// Consumes bytes of the body from `buf`; returns how many belong to it (all of `buf` unless
    /// the body ended inside it).
    ///
    /// # Errors
    /// A message saying what is malformed.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self {
                Chunked::Done => return Ok(i),
                Chunked::Data(left) => {
                    let take = (*left).min((buf.len() - i) as u64) as usize;
                    i += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Chunked::DataCr;
                    }
                    continue;
                }
                Chunked::Size {
                    size,
                    digits,
                    rest,
                    line,
                } => {
                    *line += 1;
                    if *line > MAX_CHUNK_LINE {
                        return Err("chunk-size line is too long");
                    }
                    match b {
                        b'\r' if *digits > 0 => *self = Chunked::SizeLf(*size),
                        _ if *rest => {
                            if b != b'\t' && (b < 0x20 || b == 0x7f) {
                                return Err("control character in a chunk extension");
                            }
                        }
                        b';' | b' ' | b'\t' if *digits > 0 => *rest = true,
                        _ => {
                            let d = (b as char)
                                .to_digit(16)
                                .ok_or("chunk size is not hexadecimal")?;
                            if *digits >= 15 {
                                return Err("chunk size is too large");
                            }
                            *size = *size * 16 + u64::from(d);
                            *digits += 1;
                        }
                    }
                }
                Chunked::SizeLf(size) => {
                    if b != b'\n' {
                        return Err("chunk-size line does not end in CRLF");
                    }
                    *self = if *size == 0 {
                        Chunked::Trailer {
                            line: 0,
                            total: 0,
                            cr: false,
                        }
                    } else {
                        Chunked::Data(*size)
                    };
                }
                Chunked::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data is longer than its size");
                    }
                    *self = Chunked::DataLf;
                }
                Chunked::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data does not end in CRLF");
                    }
                    *self = Chunked::new();
                }
                Chunked::Trailer { line, total, cr } => {
                    *total += 1;
                    if *total > MAX_TRAILER_BYTES {
                        return Err("trailer section is too large");
                    }
                    if *cr {
                        if b != b'\n' {
                            return Err("trailer line does not end in CRLF");
                        }
                        if *line == 0 {
                            *self = Chunked::Done;
                            i += 1;
                            return Ok(i);
                        }
                        *line = 0;
                        *cr = false;
                    } else if b == b'\r' {
                        *cr = true;
                    } else if b == b'\n' {
                        return Err("trailer line does not end in CRLF");
                    } else {
                        *line += 1;
                    }
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &str) -> Result<HeadStatus, u16> {
        parse_head(head.as_bytes()).map_err(|e| e.status)
    }

    fn complete(framing: Framing, head: &str) -> Result<HeadStatus, u16> {
        Ok(HeadStatus::Complete {
            len: head.len(),
            framing,
        })
    }

    #[test]
    fn heads() {
        let ok = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(status(ok), complete(Framing::Length(0), ok));
        let post = "POST /a HTTP/1.1\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(status(post), complete(Framing::Length(12), post));
        let ch = "POST /a HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n";
        assert_eq!(status(ch), complete(Framing::Chunked, ch));
        assert_eq!(
            status("GET /health HTTP/1.1\r\nHost"),
            Ok(HeadStatus::Partial)
        );
        for (bad, code) in [
            ("GARBAGE\r\n\r\n", 400),
            ("GET /\x01 HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ] {
            assert_eq!(status(bad), Err(code), "{bad:?}");
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status(&many), Err(431));
        let big = format!("GET / HTTP/1.1\r\na: {}", "b".repeat(MAX_HEAD_BYTES));
        assert_eq!(status(&big), Err(431));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD_BYTES / 2));
        assert_eq!(status(&long), Err(414));
    }

    #[test]
    fn leading_empty_lines() {
        let mut b = b"\r\n\nGET".to_vec();
        strip_leading_empty_lines(&mut b).expect("two are fine");
        assert_eq!(b, b"GET");
        let mut b = b"\r\n".repeat(9);
        assert_eq!(
            strip_leading_empty_lines(&mut b).map_err(|e| e.status),
            Err(400)
        );
    }

    fn feed_all(body: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut c = Chunked::new();
        // Byte by byte and whole must agree.
        let mut one = Chunked::new();
        let mut n1 = 0;
        for b in body {
            if one == Chunked::Done {
                break;
            }
            n1 += one.feed(std::slice::from_ref(b))?;
        }
        let n = c.feed(body)?;
        assert_eq!((n, &c), (n1, &one), "split feeding differs on {body:?}");
        Ok((n, c == Chunked::Done))
    }

    #[test]
    fn chunked_framing() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET";
        assert_eq!(feed_all(body), Ok((body.len() - 3, true)));
        let ext = b"5;name=v\r\nhello\r\nA \r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(feed_all(ext), Ok((ext.len(), true)));
        assert_eq!(feed_all(b"5\r\nhel"), Ok((6, false)));
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello",
            b"5\r\nhello!",
            b"5\r\nhello\rx",
            b"fffffffffffffffff\r\n",
            b"0\r\nx\n",
            b"0\r\n\n",
            b"1;a\x01\r\n",
        ] {
            assert!(feed_all(bad).is_err(), "{bad:?}");
        }
    }
}
