//! The accept loop and the per-connection request loop: one thread per
//! connection, keep-alive, and the ways a stand-in may end a connection.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::http::{read_head, BodyReader, ConnectionHeader, HeadError, Request, Response};

/// What a service does with a request.
pub enum Reply {
    /// Answer; the connection is kept if both sides allow it.
    Send(Response),
    /// Write these bytes and close: a response cut short.
    Partial(&'static [u8]),
    /// Never answer; hold the connection until the peer closes it.
    Hang,
    /// Close the connection without answering.
    Close,
}

pub trait Service: Send + Sync + 'static {
    /// Called with the request head; the service reads as much of the body as
    /// it needs (a body left unread makes the connection close after the
    /// reply, since the next request would start mid-body).
    fn handle(&self, req: &Request, body: &mut BodyReader<'_>) -> Reply;
}

/// The reply to a body that could not be read: 400 for a framing error,
/// silence for a peer that went away.
pub fn body_error(e: &io::Error) -> Reply {
    if e.kind() == io::ErrorKind::InvalidData {
        Reply::Send(Response::detail(400, &format!("bad request body: {e}")).closing())
    } else {
        Reply::Close
    }
}

/// Serves connections forever, each on its own thread.
pub fn serve<S: Service>(listener: TcpListener, service: Arc<S>) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let service = Arc::clone(&service);
                // A failed spawn (out of threads) drops just this connection.
                let _ = thread::Builder::new()
                    .name("conn".into())
                    .spawn(move || connection(stream, &*service));
            }
            // Out of file descriptors and the like: back off, then go on.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Bytes of a request the peer is still sending that we read and drop after
/// a closing answer: closing with unread data makes the kernel send a reset,
/// which can destroy the answer before the client reads it.
const LINGER_BYTES: u64 = 8 * 1024 * 1024;

fn close_gracefully(out: &TcpStream, input: &mut BufReader<TcpStream>) {
    let _ = out.shutdown(Shutdown::Write);
    let _ = input
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)));
    let _ = io::copy(&mut input.by_ref().take(LINGER_BYTES), &mut io::sink());
}

fn connection<S: Service>(stream: TcpStream, service: &S) {
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut input = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let req = match read_head(&mut input) {
            Ok(Some(req)) => req,
            Ok(None) | Err(HeadError::Gone) => return,
            Err(HeadError::Bad(why)) => {
                let _ =
                    Response::detail(400, why).write_to(&mut out, false, ConnectionHeader::Close);
                return close_gracefully(&out, &mut input);
            }
            Err(HeadError::TooLarge) => {
                let _ = Response::detail(431, "request head larger than 64 KiB").write_to(
                    &mut out,
                    false,
                    ConnectionHeader::Close,
                );
                return close_gracefully(&out, &mut input);
            }
        };
        let (reply, body_done) = {
            let continue_to: Option<&mut dyn Write> = if req.expects_continue() {
                Some(&mut out)
            } else {
                None
            };
            let mut body = BodyReader::new(&mut input, req.framing, continue_to);
            let reply = service.handle(&req, &mut body);
            (reply, body.is_done())
        };
        match reply {
            Reply::Send(resp) => {
                let keep = req.keep_alive() && !resp.close && body_done;
                let connection = match (keep, req.http10) {
                    (false, _) => ConnectionHeader::Close,
                    (true, true) => ConnectionHeader::KeepAlive,
                    (true, false) => ConnectionHeader::Absent,
                };
                let written = resp.write_to(&mut out, req.method == "HEAD", connection);
                if written.is_err() {
                    return;
                }
                if !keep {
                    return close_gracefully(&out, &mut input);
                }
            }
            Reply::Partial(bytes) => {
                let _ = out.write_all(bytes);
                return close_gracefully(&out, &mut input);
            }
            Reply::Hang => {
                // Returns when the peer closes (or the socket fails).
                let _ = io::copy(&mut input, &mut io::sink());
                return;
            }
            Reply::Close => {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
