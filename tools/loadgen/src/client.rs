//! The HTTP client: keep-alive HTTP/1.1 connections to one origin, each
//! carrying one request at a time, on hyper's connection API.
//!
//! Why not a general-purpose client: the open loop at half the gateway's
//! maximum sends tens of thousands of requests per second from the same two
//! cores the stack runs on, so the client's own cost is part of the figure.
//! With reqwest, loadgen spent 28 µs of CPU per `GET /products/{id}` while the
//! gateway spent 10 (BENCHMARKS.md); this client parses the base URL once and
//! keeps a plain stack of idle connections.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection could not be opened.
    Connect,
    /// The connection broke.
    Io,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Io => "io",
        }
    }
}

/// One request's extras beyond method and path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extras<'a> {
    pub bearer: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// Sent as `application/json`.
    pub json: Option<&'a [u8]>,
}

/// How long a connection may sit idle and still be reused. Servers close
/// keep-alive connections idle for a few seconds (actix-web after 5), and a
/// request written just as the server closes is lost on the way: neither
/// answered nor safely sent again. Past this, a fresh connection is cheaper
/// than that race.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// Connections to one `http://host:port[/prefix]` origin.
pub struct Client {
    /// `host:port`, what is dialled.
    addr: String,
    host: HeaderValue,
    /// Put before every path (`/api` for `http://host/api`), often empty.
    prefix: String,
    timeout: Duration,
    max_idle: Duration,
    /// Each with the moment it was put back; the most recent on top.
    idle: Mutex<Vec<(Instant, SendRequest<Full<Bytes>>)>>,
}

impl Client {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Client> {
        let Some(rest) = base_url.strip_prefix("http://") else {
            bail!("{base_url:?}: only http:// URLs are supported");
        };
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("{base_url:?}: no host");
        }
        let addr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Client {
            addr,
            host: HeaderValue::from_str(authority).context("host")?,
            prefix: prefix.to_owned(),
            timeout,
            max_idle: MAX_IDLE,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request and reads its whole answer, within the timeout.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        extras: Extras<'_>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, self.host.clone());
        if let Some(token) = extras.bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = extras.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match extras.json {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::copy_from_slice(json))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .expect("loadgen builds its paths from ids and fixed words");
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let (mut connection, reused) = match self.take_idle().await {
            Some(idle) => (idle, true),
            None => (self.connect().await?, false),
        };
        let response = match connection.try_send_request(request).await {
            Ok(response) => response,
            // The server closed an idle connection before the request went
            // out (keep-alive timeout): it never saw it, so a fresh
            // connection may carry it.
            Err(mut e) if reused => match e.take_message() {
                Some(request) => {
                    connection = self.connect().await?;
                    connection
                        .send_request(request)
                        .await
                        .map_err(|_| Failure::Io)?
                }
                None => return Err(Failure::Io),
            },
            Err(_) => return Err(Failure::Io),
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Io)?
            .to_bytes();
        if !connection.is_closed() {
            self.idle
                .lock()
                .expect("idle connections")
                .push((Instant::now(), connection));
        }
        Ok((status, body))
    }

    /// An idle connection still open, ready for a request and not idle for
    /// too long, if any; the ones below it in the stack are older still and
    /// are dropped when it is.
    async fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut connection = {
                let mut idle = self.idle.lock().expect("idle connections");
                let (since, connection) = idle.pop()?;
                if since.elapsed() > self.max_idle {
                    idle.clear();
                    return None;
                }
                connection
            };
            if connection.ready().await.is_ok() {
                return Some(connection);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Requests are small and written whole: nothing to gain from Nagle.
        stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on a free port that counts the connections it accepts and
    /// hands each to `serve`; its base URL and the count.
    async fn counting_server<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (base, accepted)
    }

    /// Answers the connection's first request with its path, then closes it
    /// without saying so (as a keep-alive timeout does).
    async fn answer_once(mut stream: TcpStream) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let first_line = String::from_utf8_lossy(&request);
        let path = first_line.split(' ').nth(1).unwrap_or_default().to_owned();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
            path.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
    }

    /// Answers every (small) request on the connection, keeping it open.
    async fn answer_all(mut stream: TcpStream) {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await
            && n > 0
        {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    }

    #[test]
    fn base_urls_name_an_http_origin_and_a_prefix() {
        let client = Client::new("http://gateway:8080/", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (client.addr.as_str(), client.prefix.as_str()),
            ("gateway:8080", "")
        );
        let client = Client::new("http://gateway/shop/api/", Duration::from_secs(1)).unwrap();
        assert_eq!(
            (client.addr.as_str(), client.prefix.as_str()),
            ("gateway:80", "/shop/api")
        );
        assert_eq!(client.host, "gateway");
        let client = Client::new("http://[::1]:8080", Duration::from_secs(1)).unwrap();
        assert_eq!(client.addr, "[::1]:8080");
        assert!(Client::new("https://gateway", Duration::from_secs(1)).is_err());
        assert!(Client::new("http:///products", Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let (base, accepted) = counting_server(answer_once).await;
        let client = Client::new(&format!("{base}/api"), Duration::from_secs(5)).unwrap();
        for i in 0..3 {
            let (status, body) = client
                .send(Method::GET, &format!("/products/{i}"), Extras::default())
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("/api/products/{i}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_not_reused() {
        let (base, accepted) = counting_server(answer_all).await;
        let mut client = Client::new(&base, Duration::from_secs(5)).unwrap();
        client.max_idle = Duration::from_millis(100);
        let get = || client.send(Method::GET, "/", Extras::default());
        get().await.unwrap();
        get().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused while fresh");
        tokio::time::sleep(Duration::from_millis(200)).await;
        get().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "not reused when stale");
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_a_refusal_a_connect_failure() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Client::new(
            &format!("http://{}", silent.local_addr().unwrap()),
            Duration::from_millis(200),
        )
        .unwrap();
        let answer = client.send(Method::GET, "/", Extras::default()).await;
        assert_eq!(answer.unwrap_err(), Failure::Timeout);

        let port = silent.local_addr().unwrap().port();
        drop(silent);
        let client =
            Client::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let answer = client.send(Method::GET, "/", Extras::default()).await;
        assert_eq!(answer.unwrap_err(), Failure::Connect);
    }
}
