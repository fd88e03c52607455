//! `path` and `authority`: the canonical request head every decision reads (weft-api
//! `canonical`): a request's path normalized as Istio's `pathNormalization` says, its
//! `Host`/`:authority` split and lower-cased.

use weft_api::canonical::{normalize_path, parse_authority, PathNormalization};

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

/// `data`: a request path (without its query), normalized in every mode.
pub fn path(data: &[u8]) {
    let path = String::from_utf8_lossy(data);
    for mode in MODES {
        let Ok(out) = normalize_path(&path, mode) else {
            continue;
        };
        assert!(
            out.starts_with('/'),
            "{mode:?}: {path:?} -> {out:?} is not origin-form"
        );
        assert!(!out.contains('\0'), "{mode:?}: {path:?} -> {out:?} has a NUL");
        match normalize_path(&out, mode) {
            Ok(again) => assert_eq!(again, out, "{mode:?}: {path:?} -> {out:?} is not a fixed point"),
            Err(e) => panic!("{mode:?}: {path:?} -> {out:?}, which is then refused: {e}"),
        }
        if mode == PathNormalization::None {
            assert_eq!(out, path, "NONE forwards the path as sent");
            continue;
        }
        // What authorization and routing match on has no way around them left in it.
        let segments: Vec<&str> = out.split('/').skip(1).collect();
        assert!(
            !segments.iter().any(|s| *s == "." || *s == ".."),
            "{mode:?}: {path:?} -> {out:?} keeps a dot segment"
        );
        let upper = out.to_ascii_uppercase();
        assert!(
            !upper.contains("%2E"),
            "{mode:?}: {path:?} -> {out:?} keeps an encoded dot"
        );
        assert!(
            !out.contains('\\'),
            "{mode:?}: {path:?} -> {out:?} keeps a backslash"
        );
        if mode != PathNormalization::Base {
            assert!(
                !out.contains("//"),
                "{mode:?}: {path:?} -> {out:?} keeps a double slash"
            );
        }
        if mode == PathNormalization::DecodeAndMergeSlashes {
            assert!(
                !upper.contains("%2F") && !upper.contains("%5C"),
                "{mode:?}: {path:?} -> {out:?} keeps an encoded slash"
            );
        }
    }
}

/// `data`: a `Host` header or `:authority`.
pub fn authority(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(parsed) = parse_authority(&text) else {
        return;
    };
    let host: &str = &parsed.host;
    assert!(!host.is_empty(), "{text:?}: an empty host");
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase()),
        "{text:?}: host {host:?} is not lower-case"
    );
    assert!(
        !host.ends_with('.'),
        "{text:?}: host {host:?} keeps a trailing dot"
    );
    assert!(!parsed.bare_host().is_empty(), "{text:?}: an empty bare host");
    // The canonical form, written out as a Host header, reads back as itself.
    let header = parsed.to_header_value();
    match parse_authority(&header) {
        Ok(again) => assert_eq!(again, parsed, "{text:?} -> {header:?} reads back differently"),
        Err(e) => panic!("{text:?} -> {header:?}, which is then refused: {e}"),
    }
}
