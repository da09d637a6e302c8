//! Escalation of low-confidence answers to an OpenAI-compatible chat completions endpoint
//! (`POST {url}` with `{"model", "messages", "max_tokens", "temperature"}`; the answer is
//! `choices[0].message.content`), over a small blocking HTTP client (ureq) with connect and read
//! timeouts.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::chat::Message;
use crate::error::{InferError, Result};

/// Largest response body read (bytes).
const MAX_RESPONSE_BYTES: u64 = 8 << 20;

/// Where and how to escalate.
#[derive(Debug, Clone)]
pub struct FallbackConfig {
    /// Full endpoint URL, e.g. `http://127.0.0.1:8080/v1/chat/completions`.
    pub url: String,
    /// `model` field of the request (servers that serve one model ignore it).
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for the response (headers and body).
    pub read_timeout: Duration,
}

/// An answer from the fallback endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackAnswer {
    pub text: String,
    /// `model` reported by the endpoint, if any.
    pub model: Option<String>,
    pub elapsed_ms: f64,
}

pub struct FallbackClient {
    cfg: FallbackConfig,
    agent: ureq::Agent,
}

impl FallbackClient {
    pub fn new(cfg: FallbackConfig) -> FallbackClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_send_request(Some(cfg.read_timeout))
            .timeout_send_body(Some(cfg.read_timeout))
            .timeout_recv_response(Some(cfg.read_timeout))
            .timeout_recv_body(Some(cfg.read_timeout))
            .http_status_as_error(false)
            .build()
            .into();
        FallbackClient { cfg, agent }
    }

    fn err(&self, msg: impl Into<String>) -> InferError {
        InferError::Fallback {
            url: self.cfg.url.clone(),
            msg: msg.into(),
        }
    }

    /// Ask the endpoint for a completion of `messages`.
    pub fn ask(
        &self,
        messages: &[Message],
        max_tokens: usize,
        temperature: f32,
    ) -> Result<FallbackAnswer> {
        if !(self.cfg.url.starts_with("http://") || self.cfg.url.starts_with("https://")) {
            return Err(self.err(
                "the endpoint must be an http:// or https:// URL\n  hint: an OpenAI-compatible chat endpoint, e.g. llama-server's http://127.0.0.1:8080/v1/chat/completions",
            ));
        }
        let start = Instant::now();
        let body = json!({
            "model": self.cfg.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": false,
        });
        let mut req = self
            .agent
            .post(&self.cfg.url)
            .header("Accept", "application/json");
        if let Some(k) = &self.cfg.api_key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send_json(&body).map_err(|e| self.err(describe(&e)))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| self.err(format!("reading the response: {}", describe(&e))))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(self.err(format!("HTTP {}: {detail}", status.as_u16())));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| self.err(format!("the response is not JSON: {e}")))?;
        let content = v
            .pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .ok_or_else(|| {
                self.err("the response has no `choices[0].message.content`\n  hint: the URL must be an OpenAI-compatible `/v1/chat/completions` endpoint")
            })?;
        Ok(FallbackAnswer {
            text: content.to_owned(),
            model: v.get("model").and_then(|m| m.as_str()).map(str::to_owned),
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the server running?)".into()
        }
        ureq::Error::HostNotFound => "host not found".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn cfg(url: String) -> FallbackConfig {
        FallbackConfig {
            url,
            model: "test-model".into(),
            api_key: Some("k123".into()),
            connect_timeout: Duration::from_millis(500),
            read_timeout: Duration::from_millis(1500),
        }
    }

    /// Serve one request with `status` and `body`; send the request (head, body) back.
    fn serve_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, mpsc::Receiver<(String, String)>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/chat/completions", l.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut b = vec![0u8; len];
            r.read_exact(&mut b).unwrap();
            let mut s = s;
            write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            tx.send((head, String::from_utf8(b).unwrap())).unwrap();
        });
        (url, rx)
    }

    #[test]
    fn posts_openai_request_and_reads_answer() {
        let (url, rx) = serve_once(
            "200 OK",
            r#"{"model":"big","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."}}]}"#,
        );
        let c = FallbackClient::new(cfg(url));
        let a = c
            .ask(&[Message::new("user", "Capital of France?")], 32, 0.0)
            .unwrap();
        assert_eq!(a.text, "Paris.");
        assert_eq!(a.model.as_deref(), Some("big"));
        let (head, body) = rx.recv().unwrap();
        assert!(
            head.starts_with("POST /v1/chat/completions HTTP/1.1"),
            "{head}"
        );
        assert!(head
            .to_ascii_lowercase()
            .contains("authorization: bearer k123"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["model"], "test-model");
        assert_eq!(v["max_tokens"], 32);
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["messages"][0]["content"], "Capital of France?");
    }

    #[test]
    fn http_errors_and_bad_bodies_are_reported() {
        let (url, _rx) = serve_once(
            "500 Internal Server Error",
            r#"{"error":{"message":"overloaded"}}"#,
        );
        let e = FallbackClient::new(cfg(url)).ask(&[], 8, 0.0).unwrap_err();
        assert!(e.to_string().contains("HTTP 500: overloaded"), "{e}");
        let (url, _rx) = serve_once("200 OK", r#"{"nope":1}"#);
        let e = FallbackClient::new(cfg(url)).ask(&[], 8, 0.0).unwrap_err();
        assert!(e.to_string().contains("choices[0].message.content"), "{e}");
    }

    /// A local port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn closed_port_is_a_clear_error() {
        let port = closed_port();
        let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
        let e = FallbackClient::new(cfg(url.clone()))
            .ask(&[], 8, 0.0)
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("fallback `{url}`")), "{msg}");
        assert!(msg.contains("refused"), "{msg}");
    }

    #[test]
    fn other_schemes_are_refused_clearly() {
        let e = FallbackClient::new(cfg("ftp://api.example.invalid/v1/chat/completions".into()))
            .ask(&[], 8, 0.0)
            .unwrap_err();
        assert!(e.to_string().contains("http:// or https://"), "{e}");
    }

    #[test]
    fn https_goes_through_tls() {
        // a closed port: refused, as for http
        let url = format!("https://127.0.0.1:{}/v1/chat/completions", closed_port());
        let e = FallbackClient::new(cfg(url)).ask(&[], 8, 0.0).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        // a server that answers in plain HTTP: the TLS handshake fails at once, clearly, and
        // the plain answer is never taken for a completion
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/v1/chat/completions", l.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut hello = [0u8; 512];
            let n = s.read(&mut hello).unwrap();
            let body = r#"{"choices":[{"message":{"content":"plain"}}]}"#;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes());
            // what the client sent first: a TLS handshake record (0x16), not an HTTP request
            (n, hello[0])
        });
        let t = Instant::now();
        let e = FallbackClient::new(cfg(url.clone()))
            .ask(&[], 8, 0.0)
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("fallback `{url}`")), "{msg}");
        assert!(!msg.contains("timed out"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(2));
        let (n, first) = server.join().unwrap();
        assert!(
            n > 0 && first == 0x16,
            "the client spoke TLS: {n} bytes, first {first:#x}"
        );
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/chat/completions", l.local_addr().unwrap());
        let _keep = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_secs(5));
            drop(s);
        });
        let mut c = cfg(url);
        c.read_timeout = Duration::from_millis(300);
        let t = Instant::now();
        let e = FallbackClient::new(c).ask(&[], 8, 0.0).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
