//! A tiny scripted HTTP/1.1 server for the client's tests (plain tokio, `Connection: close`).
//!
//! It records every request with its arrival time and the number of requests being served at
//! once, and answers with whatever the test's handler returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use url::Url;

/// A request the server received.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) raw_query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) at: Instant,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A decoded query parameter.
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.raw_query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub(crate) fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    /// Send only this many body bytes, then close (Content-Length still says the full length).
    cut_at: Option<usize>,
}

impl Reply {
    pub(crate) fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
            cut_at: None,
        }
    }

    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            headers: vec![("Content-Type".into(), "application/json".into())],
            ..Self::text(status, &body.to_string())
        }
    }

    pub(crate) fn raw_json(status: u16, body: &str) -> Self {
        Self {
            headers: vec![("Content-Type".into(), "application/json".into())],
            ..Self::text(status, body)
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            headers: Vec::new(),
            ..Self::text(status, "")
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(crate) fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub(crate) fn cut_at(mut self, bytes: usize) -> Self {
        self.cut_at = Some(bytes);
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

/// The running server; stops when dropped.
pub(crate) struct TestServer {
    pub(crate) url: Url,
    log: Arc<Mutex<Vec<Req>>>,
    max_concurrent: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(handler: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let current = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let task = {
            let (log, max_concurrent) = (log.clone(), max_concurrent.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (log, current, max_concurrent, handler) = (
                        log.clone(),
                        current.clone(),
                        max_concurrent.clone(),
                        handler.clone(),
                    );
                    tokio::spawn(async move {
                        let _ = serve(stream, log, current, max_concurrent, handler).await;
                    });
                }
            })
        };
        Self {
            url: Url::parse(&format!("http://{addr}")).expect("url"),
            log,
            max_concurrent,
            task,
        }
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    /// Requests to `path` so far.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    /// Requests to anything but `/auth`.
    pub(crate) fn api_requests(&self) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path != "/auth")
            .collect()
    }

    /// The most requests ever served at once.
    pub(crate) fn max_concurrent(&self) -> usize {
        self.max_concurrent.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: TcpStream,
    log: Arc<Mutex<Vec<Req>>>,
    current: Arc<AtomicUsize>,
    max_concurrent: Arc<AtomicUsize>,
    handler: Handler,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let req = read_request(&mut reader).await?;
    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
    max_concurrent.fetch_max(now, Ordering::SeqCst);
    log.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    // Done before writing: the client cannot see the answer (and free its slot) earlier.
    current.fetch_sub(1, Ordering::SeqCst);
    write_reply(reader.into_inner(), &reply).await
}

/// Reads the request line, the headers and a `Content-Length` body.
async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Req> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    Ok(Req {
        method,
        path,
        raw_query,
        headers,
        body,
        at: Instant::now(),
    })
}

/// Writes `reply` (its body cut at `cut_at`, if set) and closes the connection.
async fn write_reply(mut stream: TcpStream, reply: &Reply) -> std::io::Result<()> {
    let reason = reqwest::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Whatever");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nConnection: close\r\n",
        reply.status
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if reply.status != 204 {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let body = match reply.cut_at {
        Some(n) => &reply.body[..n.min(reply.body.len())],
        None => &reply.body[..],
    };
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}
