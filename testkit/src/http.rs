//! HTTP/1.1 on raw sockets, so that nothing normalises what a test sends or sees: a client that
//! writes header lines exactly as given ([`raw_get`], [`raw_request`]), and an upstream for Envoy that records
//! every request and echoes its header lines exactly as they arrived ([`Upstream`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Serves `app` on a loopback port until the returned sender is used or dropped. Replies go
/// out at once, as any tuned HTTP server's do (no Nagle delay).
pub async fn serve(app: axum::Router) -> (SocketAddr, oneshot::Sender<()>) {
    use axum::serve::ListenerExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = listener.tap_io(|io| {
        let _ = io.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

/// Spellings of the admin paths a client may try to slip past a proxy's routes (with the
/// headers sent along): none may reach the app without a session, whichever proxy.
pub const PATH_SPELLINGS: &[(&str, &[(&str, &str)])] = &[
    ("/admin", &[]),
    ("//admin", &[]),
    ("/ADMIN", &[]),
    ("/Admin/", &[]),
    ("/admin%2F..", &[]),
    ("/admin%2f..", &[]),
    ("/public/../admin", &[]),
    ("/public/%2E%2E/admin", &[]),
    ("/%61dmin", &[]),
    ("/admin;x=1", &[]),
    ("/admin?x=/healthz", &[]),
    ("/admin#/public", &[]),
    ("/api/admin/..%2F", &[]),
    ("/API/Admin/users", &[]),
    ("/./admin", &[]),
    ("/admin/", &[("Host", "evil.example")]),
    ("/admin", &[("Host", "")]),
];

/// The request headers session-authz sets for the app (their default names).
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-user",
    "x-auth-roles",
    "x-auth-email",
    "x-auth-assertion",
];

/// A forged `x-auth-assertion`: shaped like a JWT (`{"alg":"none"}`, `{"sub":"root"}`), signed by
/// no one.
pub const FORGED_ASSERTION: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.Zm9yZ2Vk";

/// Every header a client could forge to change what is checked or whom the app believes.
pub const FORGED: [(&str, &str); 9] = [
    ("x-auth-user", "root"),
    ("x-auth-roles", "superuser"),
    ("x-auth-email", "root@evil.example"),
    ("x-auth-assertion", FORGED_ASSERTION),
    ("X-Forwarded-Method", "GET"),
    ("X-Forwarded-Uri", "/"),
    ("X-Original-Method", "GET"),
    ("X-Original-URI", "/"),
    ("X-Forwarded-Host", "evil.example"),
];

/// What CGI, WSGI (wsgiref, gunicorn < 22), PHP and nginx's `$http_` variables make of a header
/// name: upper case, and every character but a letter or a digit read as `_`. `X_Auth_User`,
/// `x.auth-user` and `X-AUTH-USER` are all `X_AUTH_USER`: one header to such an app.
pub fn cgi_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The characters RFC 9110 allows in a header name besides letters, digits and `-`: each one
/// in place of a `-` makes another header to a proxy but the same one to a CGI-style app.
pub const ALIAS_SEPARATORS: &str = "_.!#$%&'*+^`|~";

/// Other spellings of a `-`-separated header name a client may send to slip a forged copy past
/// a proxy that manages only the exact one: letter case; `_` for some or all of the `-`; and
/// each of [`ALIAS_SEPARATORS`] for all of them. With `underscores`, the spellings holding a
/// `_` are included (Envoy refuses those outright, with 400).
pub fn alias_spellings(name: &str, underscores: bool) -> Vec<String> {
    let parts: Vec<&str> = name.split('-').collect();
    let title = |part: &str| {
        let mut chars = part.chars();
        chars.next().map_or_else(String::new, |first| {
            first.to_ascii_uppercase().to_string() + chars.as_str()
        })
    };
    let mut out = vec![name.to_ascii_uppercase()];
    // `_` in some places: the first, the last, and a mix of case with it.
    let last = parts.len() - 1;
    out.push(format!("{}_{}", parts[..last].join("-"), parts[last]));
    out.push(format!("{}_{}", parts[0], parts[1..].join("-")).to_ascii_uppercase());
    out.push(parts.iter().map(|p| title(p)).collect::<Vec<_>>().join("_"));
    for separator in ALIAS_SEPARATORS.chars() {
        out.push(parts.join(&separator.to_string()));
    }
    out.retain(|spelling| underscores || !spelling.contains('_'));
    out
}

/// Every [`alias_spelling`](alias_spellings) of each identity header, with a forged value.
pub fn forged_identity_aliases(underscores: bool) -> Vec<(String, &'static str)> {
    IDENTITY_HEADERS
        .iter()
        .zip(["root", "superuser", "root@evil.example", FORGED_ASSERTION])
        .flat_map(|(name, value)| {
            alias_spellings(name, underscores)
                .into_iter()
                .map(move |spelling| (spelling, value))
        })
        .collect()
}

/// `headers` followed by each of `aliases` (from [`forged_identity_aliases`]), for [`raw_get`].
pub fn with_aliases<'a>(
    headers: &[(&'a str, &'a str)],
    aliases: &'a [(String, &'static str)],
) -> Vec<(&'a str, &'a str)> {
    let mut all = headers.to_vec();
    all.extend(aliases.iter().map(|(name, value)| (name.as_str(), *value)));
    all
}

/// A response read off a raw HTTP/1.1 connection (a chunked body already joined).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the response header `name` (in any case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The header lines an [`Upstream`] received (its echo): (name as received, value).
    pub fn upstream_headers(&self) -> Vec<(String, String)> {
        let echo: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not the upstream's echo: {}", self.body));
        echo["headers"]
            .as_array()
            .unwrap_or_else(|| panic!("not the upstream's echo: {}", self.body))
            .iter()
            .map(|pair| {
                let text = |v: &Value| v.as_str().unwrap().to_owned();
                (text(&pair[0]), text(&pair[1]))
            })
            .collect()
    }

    /// The values of every header the upstream received whose name is `name` to a CGI-style
    /// app ([`cgi_name`]): in any letter case, with any alias separator.
    pub fn upstream_saw_as_cgi(&self, name: &str) -> Vec<String> {
        let wanted = cgi_name(name);
        self.upstream_headers()
            .into_iter()
            .filter(|(k, _)| cgi_name(k) == wanted)
            .map(|(_, v)| v)
            .collect()
    }

    /// What a CGI-style app reads for each of [`IDENTITY_HEADERS`]: every value of every
    /// spelling of it the upstream received.
    pub fn identity_as_cgi(&self) -> Vec<Vec<String>> {
        IDENTITY_HEADERS
            .iter()
            .map(|name| self.upstream_saw_as_cgi(name))
            .collect()
    }

    /// The values of `name` (in any case) the upstream received.
    pub fn upstream_saw(&self, name: &str) -> Vec<String> {
        self.upstream_headers()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }
}

/// A connection to `addr` that has sent `bytes` and nothing more (a half-sent request, a
/// protocol preface), for the test to go on with.
pub async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Sends `GET {target}` with exactly these header lines (no normalisation of the target; a
/// `Host` and `Connection: close` unless given) and reads the whole response.
pub async fn raw_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> RawResponse {
    try_raw_get(addr, target, headers)
        .await
        .unwrap_or_else(|err| panic!("GET {target} from {addr}: {err}"))
}

/// [`raw_get`] with another method; no body (HTTP/1.1 reads none without a length).
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    try_raw_request(addr, method, target, headers, "")
        .await
        .unwrap_or_else(|err| panic!("{method} {target} from {addr}: {err}"))
}

/// [`raw_request`] with a body (and its `Content-Length`).
pub async fn raw_request_with_body(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    try_raw_request(addr, method, target, headers, body)
        .await
        .unwrap_or_else(|err| panic!("{method} {target} from {addr}: {err}"))
}

/// [`raw_get`], with what went wrong (no connection, no answer within 15 s, not HTTP) as an
/// error instead of a panic: for load generators that count transport errors.
pub async fn try_raw_get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<RawResponse, String> {
    try_raw_request(addr, "GET", target, headers, "").await
}

async fn try_raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<RawResponse, String> {
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str("Host: dashboard.local\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        request.push_str("Connection: close\r\n");
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);

    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("send: {err}"))?;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut bytes))
        .await
        .map_err(|_| "no response within 15 s".to_owned())?
        .map_err(|err| format!("read: {err}"))?;
    parse_response(&bytes)
}

fn parse_response(bytes: &[u8]) -> Result<RawResponse, String> {
    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut parsed_headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => {
            return Err(format!(
                "bad response: {other:?}: {}",
                String::from_utf8_lossy(bytes)
            ))
        }
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let body = String::from_utf8_lossy(&bytes[head_len..]).into_owned();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    Ok(RawResponse {
        status: response.code.ok_or("no status")?,
        // A response to HEAD says chunked but carries nothing.
        body: if chunked && !body.is_empty() {
            dechunk(&body).ok_or_else(|| format!("bad chunked body: {body:?}"))?
        } else {
            body
        },
        headers,
    })
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// An app for Envoy to route to: answers every request 200 with its target and its header lines
/// exactly as they arrived (names neither folded nor lowercased) as JSON
/// `{"path": …, "headers": [[name, value], …]}`, and records the targets. One request per
/// connection (it answers `connection: close`); request bodies are not read.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let hits = hits.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(Self::answer(stream, hits.clone()));
                }
            }
        });
        Self { addr, hits, accept }
    }

    /// The request targets (path and query) received so far, in order.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    async fn answer(mut stream: TcpStream, hits: Arc<Mutex<Vec<String>>>) {
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let head = head.split("\r\n\r\n").next().unwrap_or_default();
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let path = lines
            .next()
            .unwrap_or_default()
            .split(' ')
            .nth(1)
            .unwrap_or_default();
        hits.lock().unwrap().push(path.to_owned());
        let headers: Vec<(&str, &str)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name, value.trim()))
            .collect();
        let body = json!({ "path": path, "headers": headers }).to_string();
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let _ = stream.shutdown().await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A TCP relay in front of `to` that counts the connections it is asked to open: how a test
/// sees whether a proxy keeps its connections to the door alive. Each connection is piped to a
/// connection of its own to `to`; dropping the relay stops accepting.
pub struct CountingRelay {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    pub async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = inbound.set_nodelay(true);
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(to).await {
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            accepted,
            accept,
        }
    }

    /// The connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_one_name_to_a_cgi_app() {
        let all = alias_spellings("x-auth-user", true);
        assert!(all.len() > ALIAS_SEPARATORS.len(), "{all:?}");
        for spelling in &all {
            assert_ne!(spelling, "x-auth-user");
            assert_eq!(cgi_name(spelling), "X_AUTH_USER", "{spelling}");
        }
        for expected in [
            "X-AUTH-USER",
            "x-auth_user",
            "X_AUTH-USER",
            "X_Auth_User",
            "x.auth.user",
        ] {
            assert!(all.iter().any(|s| s == expected), "{expected}: {all:?}");
        }
        assert!(alias_spellings("x-auth-user", false)
            .iter()
            .all(|s| !s.contains('_')));
        assert_ne!(cgi_name("x-auth-users"), "X_AUTH_USER");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let response = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "abcde"));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
