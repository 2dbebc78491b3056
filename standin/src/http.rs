//! Just enough HTTP/1.1 for the stand-ins: request heads, `Content-Length`
//! and chunked request bodies read as a stream, and responses with a
//! `content-length`.

use std::borrow::Cow;
use std::io::{self, BufRead, Read, Write};

/// Bound on a request head (request line and headers) and, separately, on a
/// chunked body's trailers.
pub const MAX_HEAD: usize = 64 * 1024;

/// Bound on one chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The request target exactly as received (path and query).
    pub target: String,
    pub http10: bool,
    /// Names keep their case and the headers their order, as received.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
}

impl Request {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first header of that name (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the client wants the connection kept after the response:
    /// HTTP/1.1 unless it says `close`, HTTP/1.0 only if it says `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.http10 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// curl sends `Expect: 100-continue` with large bodies and waits a second
    /// for the go-ahead; answering it keeps big uploads fast.
    pub fn expects_continue(&self) -> bool {
        !self.http10
            && self
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// The first header of that name (names are case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug)]
pub enum HeadError {
    /// Malformed request: answer 400 and close.
    Bad(&'static str),
    /// Head larger than [`MAX_HEAD`]: answer 431 and close.
    TooLarge,
    /// The peer went away mid-head (or the socket failed): nothing to answer.
    Gone,
}

enum LineError {
    TooLong,
    Io(io::Error),
}

/// Appends one line (through its `\n`) to `line`, never letting `line` grow
/// past `max` bytes. `Ok(false)` means end of stream before the `\n`.
fn read_line(r: &mut dyn BufRead, line: &mut Vec<u8>, max: usize) -> Result<bool, LineError> {
    loop {
        if line.len() >= max {
            return Err(LineError::TooLong);
        }
        let room = max - line.len();
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Io(e)),
        };
        if avail.is_empty() {
            return Ok(false);
        }
        let window = &avail[..avail.len().min(room)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&window[..=i]);
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = window.len();
                line.extend_from_slice(window);
                r.consume(n);
            }
        }
    }
}

/// A line without its `\n` or `\r\n` (a bare `\n` is accepted, as RFC 9112
/// allows).
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Reads the next request head. `Ok(None)`: the peer closed the connection
/// cleanly between requests.
pub fn read_head(r: &mut dyn BufRead) -> Result<Option<Request>, HeadError> {
    let mut budget = MAX_HEAD;
    let mut line = Vec::new();
    let mut next = |line: &mut Vec<u8>| -> Result<bool, HeadError> {
        line.clear();
        let complete = match read_line(r, line, budget) {
            Ok(c) => c,
            Err(LineError::TooLong) => return Err(HeadError::TooLarge),
            Err(LineError::Io(_)) => return Err(HeadError::Gone),
        };
        budget -= line.len();
        Ok(complete)
    };

    // Empty lines before a request line are to be ignored (RFC 9112 2.2).
    loop {
        if !next(&mut line)? {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Gone)
            };
        }
        if !trim_eol(&line).is_empty() {
            break;
        }
    }
    let request_line = std::str::from_utf8(trim_eol(&line))
        .map_err(|_| HeadError::Bad("request line is not UTF-8"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad("malformed request line"));
    };
    if !is_token(method.as_bytes()) {
        return Err(HeadError::Bad("malformed method"));
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HeadError::Bad("malformed request target"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(HeadError::Bad("unsupported HTTP version")),
    };
    let (method, target) = (method.to_string(), target.to_string());

    let mut headers = Vec::new();
    loop {
        if !next(&mut line)? {
            return Err(HeadError::Gone);
        }
        let l = trim_eol(&line);
        if l.is_empty() {
            break;
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return Err(HeadError::Bad("obsolete header line folding"));
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or(HeadError::Bad("header line without a colon"))?;
        let (name, value) = (&l[..colon], &l[colon + 1..]);
        if !is_token(name) {
            return Err(HeadError::Bad("malformed header name"));
        }
        let value = value.trim_ascii();
        if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(HeadError::Bad("control character in a header value"));
        }
        headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    let framing = framing(&headers)?;
    Ok(Some(Request {
        method,
        target,
        http10,
        headers,
        framing,
    }))
}

/// The body's framing per RFC 9112 6.3; anything ambiguous is refused, since
/// two readings of one message are how requests get smuggled.
fn framing(headers: &[(String, String)]) -> Result<Framing, HeadError> {
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
    };
    let codings: Vec<&str> = values("transfer-encoding").collect();
    let mut length: Option<u64> = None;
    for v in values("content-length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HeadError::Bad("malformed Content-Length"));
        }
        let n: u64 = v
            .parse()
            .map_err(|_| HeadError::Bad("Content-Length too large"))?;
        if length.is_some_and(|l| l != n) {
            return Err(HeadError::Bad("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    if codings.is_empty() {
        return Ok(Framing::Length(length.unwrap_or(0)));
    }
    if length.is_some() {
        return Err(HeadError::Bad("both Transfer-Encoding and Content-Length"));
    }
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        _ => Err(HeadError::Bad("unsupported Transfer-Encoding")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer bytes still allowed.
    Trailers(usize),
    Done,
}

/// A request body as a stream. Framing errors are `InvalidData`; a peer that
/// stops mid-body is `UnexpectedEof`.
pub struct BodyReader<'a> {
    src: &'a mut dyn BufRead,
    /// Where to send `100 Continue` before the first body byte is read, when
    /// the client asked for it.
    continue_to: Option<&'a mut dyn Write>,
    state: BodyState,
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl<'a> BodyReader<'a> {
    pub fn new(
        src: &'a mut dyn BufRead,
        framing: Framing,
        continue_to: Option<&'a mut dyn Write>,
    ) -> Self {
        let state = match framing {
            Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::ChunkSize,
        };
        BodyReader {
            src,
            continue_to,
            state,
        }
    }

    /// The declared length, when the body has one and is not read yet.
    pub fn declared_len(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// Whether the whole body has been consumed, so the next request on the
    /// connection starts where the reader stands.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    fn send_continue(&mut self) -> io::Result<()> {
        if let Some(w) = self.continue_to.take() {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            w.flush()?;
        }
        Ok(())
    }

    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        match read_line(self.src, &mut line, max) {
            Ok(true) => Ok(line),
            Ok(false) => Err(io::ErrorKind::UnexpectedEof.into()),
            Err(LineError::TooLong) => Err(invalid("chunk line too long")),
            Err(LineError::Io(e)) => Err(e),
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let line = trim_eol(line);
    // Chunk extensions follow a ';' and are ignored.
    let size = line.split(|&b| b == b';').next().unwrap_or(b"");
    let size = size.trim_ascii_end();
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("malformed chunk size"));
    }
    let text = std::str::from_utf8(size).map_err(|_| invalid("malformed chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("malformed chunk size"))
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                BodyState::Done => return Ok(0),
                BodyState::Length(left) | BodyState::ChunkData(left) => {
                    self.send_continue()?;
                    let want = left.min(buf.len() as u64) as usize;
                    let got = self.src.read(&mut buf[..want])?;
                    if got == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let left = left - got as u64;
                    self.state = match (self.state, left) {
                        (BodyState::Length(_), 0) => BodyState::Done,
                        (BodyState::Length(_), _) => BodyState::Length(left),
                        (_, 0) => BodyState::ChunkEnd,
                        _ => BodyState::ChunkData(left),
                    };
                    return Ok(got);
                }
                BodyState::ChunkSize => {
                    self.send_continue()?;
                    let line = self.line(MAX_CHUNK_LINE)?;
                    self.state = match parse_chunk_size(&line)? {
                        0 => BodyState::Trailers(MAX_HEAD),
                        n => BodyState::ChunkData(n),
                    };
                }
                BodyState::ChunkEnd => {
                    let line = self.line(MAX_CHUNK_LINE)?;
                    if !trim_eol(&line).is_empty() {
                        return Err(invalid("chunk data longer than its size"));
                    }
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers(budget) => {
                    // Trailers carry nothing the stand-ins need: skip them.
                    let line = self.line(budget)?;
                    self.state = if trim_eol(&line).is_empty() {
                        BodyState::Done
                    } else {
                        BodyState::Trailers(budget - line.len())
                    };
                }
            }
        }
    }
}

/// What the `connection` response header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// Nothing: HTTP/1.1 keeps the connection by default.
    Absent,
    KeepAlive,
    Close,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Cow<'static, [u8]>,
    /// Close the connection after this response whatever the client asked.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Cow<'static, [u8]>>) -> Self {
        Response {
            status,
            headers: vec![("content-type", content_type.to_string())],
            body: body.into(),
            close: false,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string().into_bytes())
    }

    /// FastAPI's error shape, `{"detail": "..."}`.
    pub fn detail(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "detail": message }))
    }

    /// No body and no content type.
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Cow::Borrowed(b""),
            close: false,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Writes the response; `head_only` for HEAD requests, which get the
    /// headers of the full response but no body.
    pub fn write_to(
        &self,
        w: &mut dyn Write,
        head_only: bool,
        connection: ConnectionHeader,
    ) -> io::Result<()> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        for (name, value) in &self.headers {
            // A value taken from a keys file must not be able to end the head.
            let value: String = value.chars().filter(|c| !c.is_control()).collect();
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        match connection {
            ConnectionHeader::Absent => {}
            ConnectionHeader::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
            ConnectionHeader::Close => out.extend_from_slice(b"connection: close\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        if head_only {
            w.write_all(&out)?;
        } else if self.body.len() <= 16 * 1024 {
            // One write for small answers: one packet on a NODELAY socket.
            out.extend_from_slice(&self.body);
            w.write_all(&out)?;
        } else {
            w.write_all(&out)?;
            w.write_all(&self.body)?;
        }
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn head(raw: &[u8]) -> Result<Option<Request>, HeadError> {
        read_head(&mut Cursor::new(raw))
    }

    fn bad(raw: &[u8]) -> &'static str {
        match head(raw) {
            Err(HeadError::Bad(why)) => why,
            other => panic!("expected Bad, got {other:?}"),
        }
    }

    /// Reads one request and its whole body from `src`.
    fn request_and_body(src: &mut dyn BufRead) -> (Request, io::Result<Vec<u8>>) {
        let req = read_head(src).expect("head").expect("a request");
        let mut body = Vec::new();
        let res = BodyReader::new(src, req.framing, None)
            .read_to_end(&mut body)
            .map(|_| body);
        (req, res)
    }

    #[test]
    fn parses_request_line_and_headers_in_order() {
        let req =
            head(b"GET /a/b?x=1&y HTTP/1.1\r\nHost: h\r\nX-Thing:  v 1 \r\nx-thing: v2\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/a/b?x=1&y");
        assert_eq!(req.path(), "/a/b");
        assert!(!req.http10);
        assert_eq!(
            req.headers,
            vec![
                ("Host".to_string(), "h".to_string()),
                ("X-Thing".to_string(), "v 1".to_string()),
                ("x-thing".to_string(), "v2".to_string()),
            ]
        );
        assert_eq!(req.header("X-THING"), Some("v 1"));
        assert_eq!(req.framing, Framing::Length(0));
    }

    #[test]
    fn accepts_bare_lf_and_leading_empty_lines() {
        let req = head(b"\r\n\nPOST / HTTP/1.0\nContent-Length: 3\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "POST");
        assert!(req.http10);
        assert_eq!(req.framing, Framing::Length(3));
    }

    #[test]
    fn clean_eof_between_requests_is_none() {
        assert!(matches!(head(b""), Ok(None)));
        assert!(matches!(
            head(b"GET / HTTP/1.1\r\nHost"),
            Err(HeadError::Gone)
        ));
        assert!(matches!(head(b"GET / HTTP/1.1\r\n"), Err(HeadError::Gone)));
    }

    #[test]
    fn content_length_body() {
        let mut src = Cursor::new(&b"POST /v HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET"[..]);
        let (_, body) = request_and_body(&mut src);
        assert_eq!(body.unwrap(), b"hello");
        assert_eq!(src.position(), 44, "stops at the end of the body");
    }

    #[test]
    fn repeated_equal_content_lengths_are_one() {
        let req = head(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.framing, Framing::Length(2));
    }

    #[test]
    fn truncated_content_length_body_is_eof() {
        let mut src = Cursor::new(&b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"[..]);
        let (_, body) = request_and_body(&mut src);
        assert_eq!(body.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n\
            5;name=value\r\nhello\r\n19 \r\n, and a few more bytes !!\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let mut src = Cursor::new(&raw[..]);
        let (req, body) = request_and_body(&mut src);
        assert_eq!(req.framing, Framing::Chunked);
        assert_eq!(body.unwrap(), b"hello, and a few more bytes !!");
        let mut rest = String::new();
        src.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn chunked_body_read_in_tiny_pieces() {
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut src = Cursor::new(&raw[..]);
        let req = read_head(&mut src).unwrap().unwrap();
        let mut body = BodyReader::new(&mut src, req.framing, None);
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while body.read(&mut byte).unwrap() == 1 {
            got.push(byte[0]);
        }
        assert!(body.is_done());
        assert_eq!(got, b"abcde");
    }

    #[test]
    fn bad_chunked_bodies_are_invalid_data() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        ] {
            let (_, body) = request_and_body(&mut Cursor::new(raw));
            assert_eq!(body.unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
        let raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        let (_, body) = request_and_body(&mut Cursor::new(&raw[..]));
        assert_eq!(body.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &[u8]| head(raw).unwrap().unwrap().keep_alive();
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn pipelined_requests_are_read_one_after_the_other() {
        let raw = b"POST /1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET /2 HTTP/1.1\r\n\r\n";
        let mut src = Cursor::new(&raw[..]);
        let (first, body) = request_and_body(&mut src);
        assert_eq!(
            (first.target.as_str(), body.unwrap()),
            ("/1", b"ab".to_vec())
        );
        let second = read_head(&mut src).unwrap().unwrap();
        assert_eq!(second.target, "/2");
        assert!(read_head(&mut src).unwrap().is_none());
    }

    #[test]
    fn expect_continue_is_sent_before_the_first_body_read() {
        let raw = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
        let mut src = Cursor::new(&raw[..]);
        let req = read_head(&mut src).unwrap().unwrap();
        assert!(req.expects_continue());
        let mut sent = Vec::new();
        let mut body = Vec::new();
        BodyReader::new(&mut src, req.framing, Some(&mut sent))
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(sent, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(body, b"ok");
    }

    #[test]
    fn bad_input_is_refused() {
        bad(b"GET /\r\n\r\n");
        bad(b"GET  / HTTP/1.1\r\n\r\n");
        bad(b"GET / HTTP/2.0\r\n\r\n");
        bad(b"G(T / HTTP/1.1\r\n\r\n");
        bad(b"GET / HTTP/1.1 extra\r\n\r\n");
        bad(b"\xff / HTTP/1.1\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nNo colon\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nBad name: x\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\n: x\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n");
        bad(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n");
    }

    #[test]
    fn head_size_is_bounded() {
        let mut raw = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        raw.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(head(&raw), Err(HeadError::TooLarge)));
        // Many small headers count together.
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..MAX_HEAD / 8 {
            raw.extend_from_slice(b"A: 1234\r\n");
        }
        assert!(matches!(head(&raw), Err(HeadError::TooLarge)));
        // An endless line without a newline also stops at the bound.
        let raw = vec![b'G'; 10 * MAX_HEAD];
        assert!(matches!(head(&raw), Err(HeadError::TooLarge)));
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        Response::detail(401, "no")
            .with_header("x-evil", "a\r\nb".to_string())
            .write_to(&mut out, false, ConnectionHeader::Close)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nx-evil: ab\r\n\
             content-length: 15\r\nconnection: close\r\n\r\n{\"detail\":\"no\"}"
        );
        let mut out = Vec::new();
        Response::json(200, &serde_json::json!([1]))
            .write_to(&mut out, true, ConnectionHeader::Absent)
            .unwrap();
        assert!(out.ends_with(b"content-length: 3\r\n\r\n"));
    }
}
