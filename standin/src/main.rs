//! `hokusai-standin`: the key-service stand-in and the echo upstream used by
//! the integration tests, the end-to-end tests, the local stack and the
//! benchmarks. See docs/standin.md.

mod echo;
mod keys;
mod ratelimit;
mod server;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// Test servers: a stand-in for Hokusai's key-validation service and an echo upstream.
#[derive(Parser)]
#[command(name = "hokusai-standin", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The key-validation service (docs/standin.md).
    Keys {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long)]
        listen: String,
        /// The keys file.
        #[arg(long)]
        keys: String,
    },
    /// The upstream that answers what it received.
    Echo {
        #[arg(long)]
        listen: String,
    },
    /// A rate limit service counting in Redis as envoyproxy/ratelimit does.
    Ratelimit {
        #[arg(long)]
        listen: String,
        /// The Redis URL, e.g. redis://127.0.0.1:6379/.
        #[arg(long)]
        redis: String,
        /// The one domain it has a configuration for.
        #[arg(long, default_value = "hokusai-mlflow")]
        domain: String,
    },
}

/// Binds and announces the address; the test harnesses wait for this line to
/// learn the port the OS picked.
async fn bind(addr: &str) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "LISTENING {local}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    Ok(listener)
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Keys { listen, keys } => {
            let bytes = std::fs::read(&keys).map_err(|e| format!("cannot read {keys}: {e}"))?;
            let set = keys::KeySet::parse(&bytes).map_err(|e| format!("{keys}: {e}"))?;
            let listener = bind(&listen).await?;
            server::serve(listener, Arc::new(keys::Keys::new(set))).await;
        }
        Command::Echo { listen } => {
            let listener = bind(&listen).await?;
            server::serve(listener, Arc::new(echo::Echo::default())).await;
        }
        Command::Ratelimit {
            listen,
            redis,
            domain,
        } => {
            let limiter = ratelimit::Limiter::new(domain, &redis)?;
            let listener = bind(&listen).await?;
            ratelimit::serve(listener, limiter).await?;
        }
    }
    Ok(())
}

/// SIGINT or SIGTERM. Installing the handler also undoes an inherited
/// "ignore SIGINT" (what a shell without job control gives `cmd &`), so a
/// script's `kill -INT` ends the stand-in too.
async fn stop_signal() -> Result<(), String> {
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::select! {
        r = run(cli.command) => r,
        r = stop_signal() => r,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "hokusai-standin: {e}");
            ExitCode::from(2)
        }
    }
}

/// Both servers over real sockets, in-process. Every read has a timeout, so
/// a broken server fails a test instead of hanging it.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};
    use std::io::{self, BufRead, BufReader, Read};
    use std::net::{SocketAddr, TcpStream};
    use std::thread;
    use std::time::{Duration, Instant};

    const KEYS: &str = r#"{"keys": [
      {"key": "hk_test_rw", "user_id": "u_1", "key_id": "k_1", "service_id": "platform",
       "scopes": ["mlflow:read", "mlflow:write"]}
    ]}"#;

    fn start<S: server::Service>(service: S) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                server::serve(listener, Arc::new(service)).await
            })
        });
        addr
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn start_keys() -> SocketAddr {
        start(keys::Keys::new(
            keys::KeySet::parse(KEYS.as_bytes()).unwrap(),
        ))
    }

    struct Client {
        stream: TcpStream,
        reader: BufReader<TcpStream>,
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            header(&self.headers, name)
        }
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Client {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            Client { stream, reader }
        }

        fn send(&mut self, raw: &[u8]) {
            self.stream.write_all(raw).unwrap();
        }

        fn read_reply(&mut self) -> Reply {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                assert_eq!(
                    self.reader.read(&mut byte).unwrap(),
                    1,
                    "connection ended mid-head"
                );
                head.extend_from_slice(&byte);
            }
            let head = String::from_utf8(head).unwrap();
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap()[9..12].parse().unwrap();
            let headers: Vec<(String, String)> = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l.split_once(": ").unwrap();
                    (n.to_string(), v.to_string())
                })
                .collect();
            let len: usize = header(&headers, "content-length").unwrap().parse().unwrap();
            let mut body = vec![0u8; len];
            self.reader.read_exact(&mut body).unwrap();
            Reply {
                status,
                headers,
                body,
            }
        }

        fn request(&mut self, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
            let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
            for h in headers {
                raw.push_str(&format!("{h}\r\n"));
            }
            raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
            self.send(raw.as_bytes());
            self.read_reply()
        }

        /// Everything until the server closes the connection.
        fn rest(&mut self) -> Vec<u8> {
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest).unwrap();
            rest
        }
    }

    fn admin(addr: SocketAddr, path: &str, body: Value) -> Value {
        let reply = Client::connect(addr).request("POST", path, &[], &body.to_string());
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    fn stats(addr: SocketAddr) -> Value {
        Client::connect(addr)
            .request("GET", "/__admin/stats", &[], "")
            .json()
    }

    const VALIDATE: &str = "/api/v1/keys/validate";
    const PLATFORM: &str = r#"{"service_id": "platform", "client_ip": "203.0.113.7"}"#;

    #[test]
    fn validate_over_a_kept_connection_and_counts() {
        let addr = start_keys();
        let mut c = Client::connect(addr);
        let ok = c.request(
            "POST",
            VALIDATE,
            &["Authorization: Bearer hk_test_rw"],
            PLATFORM,
        );
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("content-type"), Some("application/json"));
        assert_eq!(ok.json()["user_id"], "u_1");
        assert!(!String::from_utf8_lossy(&ok.body).contains("hk_test_rw"));

        // Same connection, chunked body this time.
        c.send(
            b"POST /api/v1/keys/validate HTTP/1.1\r\nAuthorization: Bearer hk_nope\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ser\r\n15\r\nvice_id\": \"platform\"}\r\n0\r\n\r\n",
        );
        let unknown = c.read_reply();
        assert_eq!(unknown.status, 401);
        assert_eq!(
            unknown.json(),
            json!({"detail": "Invalid or expired API key"})
        );

        let s = stats(addr);
        assert_eq!(s["validate_calls"], 2);
        assert_eq!(s["ext_authz_calls"], 0);
        assert_eq!(s["by_key_id"], json!({"k_1": 1, "<unknown>": 1}));
        assert_eq!(s["last"]["body"], r#"{"service_id": "platform"}"#);
        // Names lower-cased, as Envoy sends them anyway.
        assert_eq!(
            s["last"]["headers"][0],
            json!(["authorization", "Bearer hk_nope"])
        );

        admin(addr, "/__admin/reset", json!({}));
        assert_eq!(
            stats(addr),
            json!({"validate_calls": 0, "ext_authz_calls": 0, "by_key_id": {}, "last": null})
        );
    }

    #[test]
    fn ext_authz_and_key_replacement() {
        let addr = start_keys();
        let mut c = Client::connect(addr);
        let ok = c.request(
            "GET",
            "/ext_authz/api/mlflow/x?y=1",
            &["X-API-Key: hk_test_rw"],
            "",
        );
        assert_eq!(ok.status, 200);
        assert_eq!(ok.header("x-hokusai-user-id"), Some("u_1"));
        assert_eq!(ok.header("x-hokusai-api-key-id"), Some("k_1"));
        let no = c.request(
            "POST",
            "/ext_authz/x",
            &["Authorization: Bearer hk_nope"],
            "",
        );
        assert_eq!(no.status, 401);
        assert_eq!(stats(addr)["ext_authz_calls"], 2);

        let replaced = admin(
            addr,
            "/__admin/keys",
            json!({"keys": [{"key": "hk_new", "key_id": "k_9"}]}),
        );
        assert_eq!(replaced, json!({"keys": 1}));
        let old = c.request(
            "POST",
            VALIDATE,
            &["Authorization: Bearer hk_test_rw"],
            PLATFORM,
        );
        assert_eq!(old.status, 401);
        let new = c.request(
            "POST",
            VALIDATE,
            &["Authorization: Bearer hk_new"],
            PLATFORM,
        );
        assert_eq!(new.status, 200);
        assert_eq!(new.json(), json!({"key_id": "k_9"}));
    }

    #[test]
    fn modes_and_a_hang_that_blocks_no_one_else() {
        let addr = start_keys();
        let auth = ["Authorization: Bearer hk_test_rw"];

        admin(addr, "/__admin/mode", json!({"mode": "hang"}));
        let mut hung = Client::connect(addr);
        hung.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        hung.send(format!("POST {VALIDATE} HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes());
        let mut byte = [0u8];
        let err = hung.reader.read(&mut byte).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        // Meanwhile another connection is served, and the hung call counted.
        assert_eq!(stats(addr)["validate_calls"], 1);

        admin(addr, "/__admin/mode", json!({"mode": "close"}));
        let mut c = Client::connect(addr);
        c.send(format!("POST {VALIDATE} HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes());
        assert!(c.rest().is_empty());

        admin(addr, "/__admin/mode", json!({"mode": "reset"}));
        let mut c = Client::connect(addr);
        c.send(format!("POST {VALIDATE} HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes());
        let rest = String::from_utf8(c.rest()).unwrap();
        let (head, body) = rest.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("content-length: 100"), "{head}");
        assert!(
            body.len() < 100,
            "the reply breaks off before its promised length"
        );

        let simple = [
            (
                "error",
                500,
                "application/json",
                br#"{"detail":"Internal Server Error"}"#.to_vec(),
            ),
            ("garbage", 200, "text/plain", b"not json".to_vec()),
            ("array", 200, "application/json", b"[1,2,3]".to_vec()),
        ];
        for (mode, status, content_type, body) in simple {
            admin(addr, "/__admin/mode", json!({"mode": mode}));
            let r = Client::connect(addr).request("POST", VALIDATE, &auth, PLATFORM);
            assert_eq!(
                (r.status, r.header("content-type"), &r.body),
                (status, Some(content_type), &body)
            );
        }

        admin(addr, "/__admin/mode", json!({"mode": "wrong_types"}));
        let r = Client::connect(addr).request("POST", VALIDATE, &auth, PLATFORM);
        assert_eq!(r.json()["user_id"], 7);
        assert_eq!(r.json()["rate_limit_per_hour"], "many");

        admin(addr, "/__admin/mode", json!({"mode": "huge"}));
        let r = Client::connect(addr).request("POST", VALIDATE, &auth, PLATFORM);
        assert_eq!(r.body.len(), 8 * 1024 * 1024);
        assert!(r.json().is_object());

        admin(
            addr,
            "/__admin/mode",
            json!({"mode": "normal", "delay_ms": 200}),
        );
        let started = Instant::now();
        let r = Client::connect(addr).request("POST", VALIDATE, &auth, PLATFORM);
        assert_eq!(r.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(200));

        let bad = Client::connect(addr).request("POST", "/__admin/mode", &[], r#"{"mode": "x"}"#);
        assert_eq!(bad.status, 400);
        drop(hung);
    }

    #[test]
    fn bad_requests_get_400_and_a_close() {
        let addr = start_keys();
        let mut c = Client::connect(addr);
        c.send(b"NOT HTTP\r\n\r\n");
        let r = c.read_reply();
        assert_eq!(r.status, 400);
        assert!(c.rest().is_empty(), "closed after the 400");

        let mut c = Client::connect(addr);
        c.send(b"POST /api/v1/keys/validate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n");
        assert_eq!(c.read_reply().status, 400);
        assert!(c.rest().is_empty());

        let mut c = Client::connect(addr);
        c.send(b"POST /api/v1/keys/validate HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
        let r = c.read_reply();
        assert_eq!((r.status, r.header("connection")), (413, Some("close")));

        let mut c = Client::connect(addr);
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 70 * 1024));
        c.send(&big);
        assert_eq!(c.read_reply().status, 431);

        let mut c = Client::connect(addr);
        assert_eq!(c.request("GET", VALIDATE, &[], "").status, 405);
        assert_eq!(c.request("GET", "/nowhere", &[], "").status, 404);
        let close = c.request("GET", "/nowhere", &["Connection: close"], "");
        assert_eq!(close.header("connection"), Some("close"));
        assert!(c.rest().is_empty());
    }

    #[test]
    fn echo_tells_what_it_received() {
        let addr = start(echo::Echo::default());
        let mut c = Client::connect(addr);
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut raw = b"PUT /up?a=1&b HTTP/1.1\r\nX-One: 1\r\nx-one: 2\r\nExpect: 100-continue\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for chunk in body.chunks(100_000) {
            raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            raw.extend_from_slice(chunk);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        c.send(&raw[..raw.len() / 2]);
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        line.clear();
        c.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "\r\n");
        c.send(&raw[raw.len() / 2..]);
        let r = c.read_reply();
        assert_eq!(r.status, 200);
        let seen = r.json();
        assert_eq!(seen["method"], "PUT");
        assert_eq!(seen["path"], "/up?a=1&b");
        assert_eq!(seen["headers"][0], json!(["x-one", "1"]));
        assert_eq!(seen["headers"][1], json!(["x-one", "2"]));
        assert_eq!(seen["body_len"], body.len());
        let sha: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(seen["body_sha256"], sha);

        let kept = c.request("GET", "/__admin/requests", &[], "").json();
        assert_eq!(kept, json!([seen]));
        c.request("POST", "/__admin/reset", &[], "");
        assert_eq!(
            c.request("GET", "/__admin/requests", &[], "").json(),
            json!([])
        );
    }

    #[test]
    fn cli_arguments() {
        let parse = |s: &str| {
            Cli::try_parse_from(std::iter::once("hokusai-standin").chain(s.split_whitespace()))
        };
        assert!(matches!(
            parse("keys --listen 127.0.0.1:0 --keys k.json").map(|c| c.command),
            Ok(Command::Keys { listen, keys }) if listen == "127.0.0.1:0" && keys == "k.json"
        ));
        assert!(matches!(
            parse("echo --listen=127.0.0.1:0").map(|c| c.command),
            Ok(Command::Echo { listen }) if listen == "127.0.0.1:0"
        ));
        assert!(parse("keys --listen 127.0.0.1:0").is_err());
        assert!(parse("echo --listen").is_err());
        assert!(parse("echo --listen a --keys b").is_err());
        assert!(parse("proxy --listen a").is_err());
        assert!(parse("").is_err());
    }
}
