//! Bearer-token auth. A server bound beyond loopback requires a token: generated on first
//! start, printed once, stored only as its SHA-256. Every API call must then carry it as
//! `Authorization: Bearer <token>` (or HTTP basic auth with the token as password, the form
//! the mlflow client sends with MLFLOW_TRACKING_PASSWORD). `/healthz` stays open.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::AppState;

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compare in constant time.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_token(req: &Request) -> Option<String> {
    let h = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = h.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    if let Some(b) = h.strip_prefix("Basic ") {
        let decoded = base64_decode(b.trim())?;
        let s = String::from_utf8(decoded).ok()?;
        return s.split_once(':').map(|(_, p)| p.to_string());
    }
    None
}

/// Minimal standard base64 decoding (for HTTP basic auth).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// Middleware: 401 unless the request carries the token (when one is configured).
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &state.token_sha256 else {
        return next.run(req).await;
    };
    match presented_token(&req) {
        Some(t) if ct_eq(hash_token(&t).as_bytes(), expected.as_bytes()) => next.run(req).await,
        presented => {
            let message = if presented.is_some() {
                "invalid API token"
            } else {
                "missing API token: send Authorization: Bearer <token>"
            };
            let body = json!({"error_code": "UNAUTHENTICATED", "error": message, "message": message});
            // A browser asks for the token as a password (any user name) and sends it as
            // basic auth, which `presented_token` accepts.
            let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Basic realm=\"capstan\", charset=\"UTF-8\"")];
            (StatusCode::UNAUTHORIZED, challenge, Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_basic_auth() {
        assert_eq!(base64_decode("dXNlcjpzZWNyZXQ=").unwrap(), b"user:secret");
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
