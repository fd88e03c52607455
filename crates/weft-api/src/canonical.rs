//! The canonical request head: the one form of a request's path and authority that
//! authorization, routing, metrics and the upstream request all read (shared/ARCHITECTURE.md,
//! "The request inside a proxy: canonical once").
//!
//! Paths are normalized as Istio's `meshConfig.pathNormalization` does it in Envoy, with its
//! option names:
//! - `NONE`: the path as sent (it must still be origin-form and free of NUL).
//! - `BASE` (the default): RFC 3986 — percent-encoded unreserved characters decoded (`%61` is
//!   `a`, `%2e` is `.`), other percent-encodings kept with upper-case hex, `\` read as `/` (as
//!   Envoy's URL canonicalizer does), then `.` and `..` segments removed.
//! - `MERGE_SLASHES`: `BASE`, then runs of `/` merged into one.
//! - `DECODE_AND_MERGE_SLASHES`: `%2F` and `%5C` decoded to `/` and `\` first, then
//!   `MERGE_SLASHES`.
//!
//! A path that cannot be normalized is refused rather than guessed at (the proxy answers 400,
//! flag `DPE`): a `..` that would climb above the root, invalid percent-encoding, NUL (raw or
//! `%00`), a request target that is not origin-form, and a `.;` or `..;` segment (which some
//! servers read as a dot segment once the parameter is dropped, so it would reach a path the
//! policy never saw).
//!
//! Authorities are lower-cased, lose one trailing dot, and split into host and numeric port
//! by [`parse_authority`], the one host/port splitter of the mesh.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Istio's `meshConfig.pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// No normalization: the path is checked and forwarded as sent.
    None,
    /// RFC 3986 normalization (the default).
    #[default]
    Base,
    /// `BASE`, then duplicate slashes merged.
    MergeSlashes,
    /// `%2F`/`%5C` decoded, then `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

/// Why a request head has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("the request target is not a path starting with '/'")]
    NotOriginForm,
    #[error("invalid percent-encoding in the path")]
    BadPercentEncoding,
    #[error("NUL in the path")]
    Nul,
    #[error("the path climbs above the root with '..'")]
    EscapesRoot,
    #[error("a '.;' or '..;' path segment")]
    DotSegmentWithParameter,
    #[error("empty host")]
    EmptyHost,
    #[error("invalid character in the host")]
    BadHost,
    #[error("invalid port")]
    BadPort,
}

/// Normalizes a request path (without its query) as `mode` says. Borrows when nothing changes,
/// which is the common case: most paths have no `%`, `\`, dot segment or double slash.
pub fn normalize_path(path: &str, mode: PathNormalization) -> Result<Cow<'_, str>, CanonicalError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(CanonicalError::NotOriginForm);
    }
    if bytes.contains(&0) {
        return Err(CanonicalError::Nul);
    }
    if mode == PathNormalization::None {
        return Ok(Cow::Borrowed(path));
    }
    let merge = matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    );
    if is_canonical(bytes, merge) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(bytes, mode == PathNormalization::DecodeAndMergeSlashes)?;
    let out = remove_dot_segments(&decoded, merge)?;
    // Every byte pushed is ASCII or copied whole from the UTF-8 input (decoding only yields
    // unreserved ASCII, `/` or `\`), so this never fails; the error arm keeps that honest.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| CanonicalError::BadPercentEncoding)
}

/// Whether a path needs no work: no percent sign, no backslash, no dot segment, and (when
/// merging) no double slash.
fn is_canonical(bytes: &[u8], merge: bool) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' if merge && prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // `/.` starts a dot segment when followed by `/`, `;`, end, or `./`, `.;`, `.` end.
                let rest = &bytes[i + 1..];
                let seg_end = |r: &[u8]| matches!(r.first(), None | Some(b'/') | Some(b';'));
                if seg_end(rest) || (rest.first() == Some(&b'.') && seg_end(&rest[1..])) {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Percent-decodes unreserved characters (and `/`, `\` when `slashes`), upper-cases the hex of
/// the rest, and reads `\` as `/`.
fn decode(bytes: &[u8], slashes: bool) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(CanonicalError::BadPercentEncoding);
            };
            let c = h << 4 | l;
            match c {
                0 => return Err(CanonicalError::Nul),
                c if is_unreserved(c) => out.push(c),
                b'/' | b'\\' if slashes => out.push(b'/'),
                _ => {
                    out.push(b'%');
                    out.push(HEX[usize::from(h)]);
                    out.push(HEX[usize::from(l)]);
                }
            }
            i += 3;
        } else {
            out.push(if b == b'\\' { b'/' } else { b });
            i += 1;
        }
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 on a path that starts with `/`, refusing to climb above the root; with
/// `merge`, empty segments (double slashes) are dropped too.
fn remove_dot_segments(path: &[u8], merge: bool) -> Result<Vec<u8>, CanonicalError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    // The path starts with '/', so the first piece is empty; every other piece is a segment.
    let mut pieces = path.split(|&b| b == b'/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(seg) = pieces.next() {
        let last = pieces.peek().is_none();
        let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
        match seg {
            b"." => trailing_slash = last,
            b".." => {
                if segments.pop().is_none() {
                    return Err(CanonicalError::EscapesRoot);
                }
                trailing_slash = last;
            }
            _ if name == b"." || name == b".." => return Err(CanonicalError::DotSegmentWithParameter),
            b"" if merge && !last => {}
            b"" if last => trailing_slash = true,
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// A request's authority in canonical form: the host lower-case without a trailing dot
/// (an IPv6 literal keeps its brackets) and the port as a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: Cow<'a, str>,
    pub port: Option<u16>,
}

impl Authority<'_> {
    /// `host` or `host:port`, as it goes in a `Host` header.
    pub fn to_header_value(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// The host without the brackets of an IPv6 literal (for lookups and IP parsing).
    pub fn bare_host(&self) -> &str {
        let h: &str = &self.host;
        h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h)
    }
}

/// Splits and canonicalizes a `Host` header or `:authority`: `[v6]:port`, `name:port`, `name`.
/// Userinfo, an empty host, characters outside a host name, and a port that is not a number
/// of at most five digits below 65536 are refused. An empty port (`name:`) counts as none.
pub fn parse_authority(authority: &str) -> Result<Authority<'_>, CanonicalError> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(CanonicalError::BadHost)?;
        let (host, rest) = authority.split_at(end + 1);
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(CanonicalError::BadHost);
        }
        match rest {
            "" => (host, None),
            r => (host, Some(r.strip_prefix(':').ok_or(CanonicalError::BadPort)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| CanonicalError::BadPort)?)
        }
        Some(_) => return Err(CanonicalError::BadPort),
    };
    if host.starts_with('[') {
        return Ok(Authority {
            host: lower(host),
            port,
        });
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(CanonicalError::EmptyHost);
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if !host.bytes().all(ok) || host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err(CanonicalError::BadHost);
    }
    Ok(Authority {
        host: lower(host),
        port,
    })
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests;
