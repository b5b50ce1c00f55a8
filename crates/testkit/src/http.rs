//! Plain HTTP/1.1 GETs of a service's own endpoints (`/metrics`, `/healthz`,
//! `/readyz`), without an HTTP client crate.

/// `GET path` over plain HTTP/1.1 on `addr` (host:port); the body.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    Ok(http_get_with_status(addr, path).await?.1)
}

/// `GET path` over plain HTTP/1.1 on `addr` (host:port); the status and
/// the body.
pub async fn http_get_with_status(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum of the samples of a metric whose line starts with `prefix`
/// (name and, optionally, the start of its labels); 0 when absent.
pub fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
