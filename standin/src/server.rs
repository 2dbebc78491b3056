//! The HTTP/1.1 server both stand-ins run on (hyper on tokio): the accept
//! loop, the ways a stand-in may answer or not answer, and the small
//! response and request helpers they share.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, io::Error>;

/// What a service does with a request.
pub enum Reply {
    /// Answer; the connection is kept unless either side says `close`.
    Send(Response<Body>),
    /// A 200 head promising a body that breaks off: the connection is cut
    /// mid-reply.
    Broken,
    /// Never answer; hold the connection until the peer closes it.
    Hang,
    /// Close the connection without answering.
    Close,
}

pub trait Service: Send + Sync + 'static {
    fn handle(self: Arc<Self>, req: Request<Incoming>) -> impl Future<Output = Reply> + Send;
}

/// Request heads larger than this are refused (431), as before.
const MAX_HEAD: usize = 64 * 1024;

/// Serves connections until the process ends, each on its own task.
pub async fn serve<S: Service>(listener: TcpListener, service: Arc<S>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, then go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let answer = service_fn(move |req| answer(Arc::clone(&service), req));
            let _ = http1::Builder::new()
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}

/// The stand-in's reply as hyper takes it; an error closes the connection
/// without an answer.
async fn answer<S: Service>(
    service: Arc<S>,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    match service.handle(req).await {
        Reply::Send(resp) => Ok(resp),
        Reply::Broken => Ok(broken()),
        Reply::Hang => std::future::pending().await,
        Reply::Close => Err(io::Error::other("closed without an answer")),
    }
}

/// 200 with `content-length: 100`, 20 bytes, then the connection breaks
/// (after a pause, so that what was written reaches the peer first).
fn broken() -> Response<Body> {
    let start = stream::iter([Ok(Frame::data(Bytes::from_static(
        b"{\"user_id\": \"u_brok",
    )))]);
    let cut = stream::once(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(io::Error::other("the reply breaks off here"))
    });
    let frames = start.chain(cut);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("100"));
    resp
}

// --- responses ---------------------------------------------------------------

pub fn respond(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let body = Full::new(body.into()).map_err(|e: Infallible| match e {});
    let mut resp = Response::new(BodyExt::boxed(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn json(status: u16, v: &Value) -> Response<Body> {
    respond(status, "application/json", v.to_string())
}

/// FastAPI's error shape: `{"detail": "..."}`.
pub fn detail(status: u16, message: &str) -> Response<Body> {
    json(status, &json!({ "detail": message }))
}

/// The response, and the connection closed after it.
pub fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}

// --- requests ------------------------------------------------------------------

/// Header names (lower-cased, as HTTP/2 and Envoy send them) and values in
/// the order received, names grouped.
pub fn header_list(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect()
}

/// The request target as received: path and query.
pub fn target(req: &Request<Incoming>) -> String {
    req.uri().path_and_query().map_or_else(
        || req.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    )
}

/// The whole body, at most `limit` bytes; otherwise the reply to send.
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Reply> {
    let too_large = || Reply::Send(closing(detail(413, "request body too large")));
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Refused before reading, so no `100 Continue` goes out for it.
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(body_error(&e.to_string())),
    }
}

/// The reply to a body that could not be read.
pub fn body_error(why: &str) -> Reply {
    Reply::Send(closing(detail(400, &format!("bad request body: {why}"))))
}
