//! A unary gRPC call as a plain HTTP callout (Envoy's dynamic modules have
//! no gRPC callout): the request's headers and 5-byte frame, and what the
//! reply says, as the gRPC status and message the wasm host would hand the
//! core.
//!
//! What Envoy 1.40 hands back (`HttpCalloutCallback::onSuccess` in
//! `source/extensions/filters/http/dynamic_modules/filter.cc`): the reply's
//! headers and its body, never its trailers. So a normal reply's
//! `grpc-status` (a trailer) is not seen; the call counts as OK only when
//! everything that is seen says so: `:status` 200, `content-type`
//! `application/grpc`, no `grpc-status` in the headers other than 0, and a
//! body of exactly one uncompressed frame whose length matches. A
//! trailers-only reply (the service's error: UNAVAILABLE when Redis is
//! down) has its `grpc-status` in the headers and no body. Anything else is
//! a failed call, and the route's `failure_mode` decides.

use crate::envoy::CalloutReply;

/// gRPC status codes.
pub const OK: u32 = 0;
const UNKNOWN: u32 = 2;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// The frame header: a compressed flag and a big-endian length.
const FRAME_HEADER: usize = 5;

/// What a callout's reply headers say of gRPC, read for every callout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcHeaders {
    /// `content-type` is `application/grpc` or `application/grpc+…`.
    pub is_grpc: bool,
    /// `grpc-status` in the headers (a trailers-only reply), as sent.
    pub status: Option<Vec<u8>>,
}

impl GrpcHeaders {
    /// From the reply's headers, as Envoy hands them (names lower case).
    pub fn read<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> GrpcHeaders {
        let mut out = GrpcHeaders::default();
        for (name, value) in headers {
            match name {
                b"content-type" => out.is_grpc = is_grpc_content_type(value),
                b"grpc-status" => out.status = Some(value.to_vec()),
                _ => {}
            }
        }
        out
    }
}

fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value
            .get(..GRPC.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(GRPC))
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// A unary call's request headers.
pub type Request<'a> = [(&'a str, &'a str); 5];

/// The HTTP/2 request of a unary call: its headers (`path` and `authority`
/// borrowed from the caller) and its framed body; None if the message does
/// not fit a frame.
pub fn request<'a>(
    path: &'a str,
    authority: &'a str,
    message: &[u8],
) -> Option<(Request<'a>, Vec<u8>)> {
    let len = u32::try_from(message.len()).ok()?;
    let mut body = Vec::with_capacity(FRAME_HEADER + message.len());
    body.push(0);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(message);
    let headers = [
        (":method", "POST"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    Some((headers, body))
}

/// The gRPC status and message of a reply, as the wasm host reports them
/// (`on_grpc_call_response(token, status, size)`): the message only with OK.
pub fn reply(reply: CalloutReply, grpc: &GrpcHeaders) -> (u32, Vec<u8>) {
    let status = match reply.status {
        None => return (UNAVAILABLE, Vec::new()),
        Some(200) => None,
        // As gRPC maps a bad HTTP status: the service is not there now.
        Some(429 | 502 | 503 | 504) => Some(UNAVAILABLE),
        Some(_) => Some(UNKNOWN),
    };
    if let Some(s) = status {
        return (s, Vec::new());
    }
    if let Some(s) = &grpc.status {
        let code = std::str::from_utf8(s)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(UNKNOWN);
        if code != OK {
            return (code, Vec::new());
        }
    }
    if !grpc.is_grpc {
        return (UNKNOWN, Vec::new());
    }
    match unframe(reply.body) {
        Some(message) => (OK, message),
        None => (INTERNAL, Vec::new()),
    }
}

/// The message of a body that is exactly one uncompressed frame.
fn unframe(mut body: Vec<u8>) -> Option<Vec<u8>> {
    let header = body.get(..FRAME_HEADER)?;
    let (&flag, len) = header.split_first()?;
    let len = u32::from_be_bytes(len.try_into().ok()?);
    if flag != 0 || usize::try_from(len).ok()? != body.len() - FRAME_HEADER {
        return None;
    }
    body.drain(..FRAME_HEADER);
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<u16>, body: &[u8], grpc: &GrpcHeaders) -> (u32, Vec<u8>) {
        reply(
            CalloutReply {
                status,
                body: body.to_vec(),
            },
            grpc,
        )
    }

    fn grpc(status: Option<&str>) -> GrpcHeaders {
        GrpcHeaders {
            is_grpc: true,
            status: status.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_request_is_a_framed_http2_post() {
        let (headers, body) = request("/svc/M", "rl", b"abc").unwrap();
        assert_eq!(body, b"\x00\x00\x00\x00\x03abc");
        assert!(headers.contains(&(":path", "/svc/M")));
        assert!(headers.contains(&(":authority", "rl")));
        assert!(headers.contains(&("content-type", "application/grpc")));
        assert!(headers.contains(&("te", "trailers")));
        assert!(headers.contains(&(":method", "POST")));
        let (_, empty) = request("/a/b", "c", b"").unwrap();
        assert_eq!(empty, [0; 5]);
    }

    #[test]
    fn a_well_formed_reply_is_ok_with_its_message() {
        let body = request("/", "", b"hello").unwrap().1;
        assert_eq!(
            answer(Some(200), &body, &grpc(None)),
            (OK, b"hello".to_vec())
        );
        assert_eq!(
            answer(Some(200), &body, &grpc(Some("0"))),
            (OK, b"hello".to_vec())
        );
    }

    #[test]
    fn anything_doubtful_is_a_failed_call() {
        let body = request("/", "", b"hello").unwrap().1;
        // Trailers-only: the status is in the headers.
        assert_eq!(answer(Some(200), b"", &grpc(Some("14"))), (14, Vec::new()));
        assert_eq!(answer(Some(200), &body, &grpc(Some("x"))).0, UNKNOWN);
        assert_eq!(answer(None, &body, &grpc(None)).0, UNAVAILABLE);
        assert_eq!(answer(Some(503), &body, &grpc(None)).0, UNAVAILABLE);
        assert_eq!(answer(Some(404), &body, &grpc(None)).0, UNKNOWN);
        assert_eq!(answer(Some(200), &body, &GrpcHeaders::default()).0, UNKNOWN);
        let mut compressed = body.clone();
        compressed[0] = 1;
        assert_eq!(answer(Some(200), &compressed, &grpc(None)).0, INTERNAL);
        let mut short = body.clone();
        short.pop();
        assert_eq!(answer(Some(200), &short, &grpc(None)).0, INTERNAL);
        let mut long = body.clone();
        long.push(0);
        assert_eq!(answer(Some(200), &long, &grpc(None)).0, INTERNAL);
        // A trailers-only OK has no message: OK with nothing to read.
        assert_eq!(answer(Some(200), b"", &grpc(Some("0"))).0, INTERNAL);
        for n in 0..5 {
            assert_eq!(answer(Some(200), &body[..n], &grpc(None)).0, INTERNAL);
        }
    }

    #[test]
    fn reply_headers_are_read() {
        let read = |pairs: &[(&[u8], &[u8])]| GrpcHeaders::read(pairs.iter().copied());
        assert_eq!(
            read(&[
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-status", b"14")
            ]),
            grpc(Some("14"))
        );
        assert!(read(&[(b"content-type", b"application/grpc+proto")]).is_grpc);
        assert!(!read(&[(b"content-type", b"application/grpcx")]).is_grpc);
        assert!(!read(&[(b"content-type", b"text/html")]).is_grpc);
        assert!(!read(&[]).is_grpc);
    }
}
