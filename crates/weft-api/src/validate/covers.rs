//! Whether one request match covers another: every request the second matches, the first matches
//! too. A later match that an earlier one covers is never used (IST0130, IST0131).
//!
//! Conservative: `false` whenever coverage cannot be shown from the conditions alone (a regex
//! against anything but the same regex, a `withoutHeaders` against anything but the same one).
//! Istio's own check (pkg/config/validation, `coveredValidation`) compares URI prefixes only and
//! assumes GET for a match without a method; this one is a plain implication over every condition
//! Weft matches on, so it also sees an exact URI under a prefix, and never calls a match covered
//! by one that admits fewer methods.

use crate::route::{HeaderMatch, PathMatch, QueryMatch, RequestMatch, StringMatch};

/// Every request `narrow` matches, `broad` matches.
pub(super) fn covers(broad: &RequestMatch, narrow: &RequestMatch) -> bool {
    optional(&broad.path, &narrow.path, path_covers)
        && optional(&broad.method, &narrow.method, string_covers)
        && optional(&broad.authority, &narrow.authority, string_covers)
        && broad.port.is_none_or(|p| narrow.port == Some(p))
        && broad
            .headers
            .iter()
            .all(|h| narrow.headers.iter().any(|n| header_covers(h, n)))
        && broad
            .query
            .iter()
            .all(|q| narrow.query.iter().any(|n| query_covers(q, n)))
        && broad
            .source_labels
            .iter()
            .all(|(k, v)| narrow.source_labels.get(k) == Some(v))
        && broad
            .source_namespace
            .as_ref()
            .is_none_or(|ns| narrow.source_namespace.as_ref() == Some(ns))
}

/// No condition in `broad` holds for every request; one in `broad` only if `narrow` has one it
/// covers.
fn optional<T>(broad: &Option<T>, narrow: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
    match (broad, narrow) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(b), Some(n)) => f(b, n),
    }
}

fn string_covers(broad: &StringMatch, narrow: &StringMatch) -> bool {
    match (broad, narrow) {
        (StringMatch::Exact(b), StringMatch::Exact(n)) => b == n,
        (StringMatch::Prefix(b), StringMatch::Exact(n) | StringMatch::Prefix(n)) => n.starts_with(b.as_str()),
        (StringMatch::Regex(b), StringMatch::Regex(n)) => b == n,
        _ => false,
    }
}

fn path_covers(broad: &PathMatch, narrow: &PathMatch) -> bool {
    // (value, case-insensitive, kind) of the narrow side; a regex is covered only by itself.
    let (value, narrow_ic) = match narrow {
        PathMatch::Exact { value, ignore_case } | PathMatch::Prefix { value, ignore_case } => {
            (value.as_str(), *ignore_case)
        }
        PathMatch::SegmentPrefix { value } => (value.as_str(), false),
        PathMatch::Regex { .. } => return broad == narrow,
    };
    let narrow_is_exact = matches!(narrow, PathMatch::Exact { .. });
    match broad {
        PathMatch::Exact {
            value: b,
            ignore_case,
        } => {
            narrow_is_exact
                && if *ignore_case {
                    b.eq_ignore_ascii_case(value)
                } else {
                    !narrow_ic && b == value
                }
        }
        PathMatch::Prefix {
            value: b,
            ignore_case,
        } => {
            if *ignore_case {
                value.to_ascii_lowercase().starts_with(&b.to_ascii_lowercase())
            } else {
                !narrow_ic && value.starts_with(b.as_str())
            }
        }
        // Whole segments: `/v2` covers `/v2` and `/v2/…`, not `/v2x`.
        PathMatch::SegmentPrefix { value: b } => {
            let b = b.trim_end_matches('/');
            !narrow_ic && (b.is_empty() || value == b || value.starts_with(&format!("{b}/")))
        }
        PathMatch::Regex { .. } => false,
    }
}

fn header_covers(broad: &HeaderMatch, narrow: &HeaderMatch) -> bool {
    if broad.name != narrow.name || broad.invert != narrow.invert {
        return false;
    }
    if broad.invert {
        return broad == narrow;
    }
    // Presence (no value) is covered by any condition on the same header.
    optional(&broad.value, &narrow.value, string_covers)
}

fn query_covers(broad: &QueryMatch, narrow: &QueryMatch) -> bool {
    broad.name == narrow.name && optional(&broad.value, &narrow.value, string_covers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> RequestMatch {
        RequestMatch {
            path: Some(PathMatch::Prefix {
                value: p.into(),
                ignore_case: false,
            }),
            ..RequestMatch::default()
        }
    }

    fn with_method(mut m: RequestMatch, method: &str) -> RequestMatch {
        m.method = Some(StringMatch::Exact(method.into()));
        m
    }

    #[test]
    fn a_shorter_prefix_covers_a_longer_one_and_not_the_other_way() {
        assert!(covers(&prefix("/api/v1/product"), &prefix("/api/v1/products")));
        assert!(!covers(&prefix("/api/v1/products"), &prefix("/api/v1/product")));
        assert!(
            covers(&RequestMatch::default(), &prefix("/x")),
            "no condition covers all"
        );
        assert!(!covers(&prefix("/x"), &RequestMatch::default()));
    }

    #[test]
    fn a_method_narrows_and_its_absence_does_not() {
        let any = prefix("/a");
        let get = with_method(prefix("/a"), "GET");
        assert!(covers(&any, &get));
        assert!(!covers(&get, &any), "GET does not cover every method");
        assert!(!covers(&get, &with_method(prefix("/a"), "POST")));
    }

    #[test]
    fn headers_must_each_be_implied() {
        let mut broad = prefix("/");
        broad.headers.push(HeaderMatch {
            name: "end-user".into(),
            value: Some(StringMatch::Prefix("ja".into())),
            invert: false,
        });
        let mut narrow = prefix("/x");
        assert!(!covers(&broad, &narrow), "narrow lacks the header condition");
        narrow.headers.push(HeaderMatch {
            name: "end-user".into(),
            value: Some(StringMatch::Exact("jason".into())),
            invert: false,
        });
        assert!(covers(&broad, &narrow));
        narrow.headers[0].invert = true;
        assert!(!covers(&broad, &narrow));
    }

    #[test]
    fn regexes_and_segments() {
        let re = RequestMatch {
            path: Some(PathMatch::Regex {
                value: "/a.*".into(),
                ignore_case: false,
            }),
            ..RequestMatch::default()
        };
        assert!(covers(&re, &re.clone()));
        assert!(!covers(&re, &prefix("/a")), "a regex is not analysed");
        let seg = RequestMatch {
            path: Some(PathMatch::SegmentPrefix { value: "/v2".into() }),
            ..RequestMatch::default()
        };
        let exact = |v: &str| RequestMatch {
            path: Some(PathMatch::Exact {
                value: v.into(),
                ignore_case: false,
            }),
            ..RequestMatch::default()
        };
        assert!(covers(&seg, &exact("/v2/x")));
        assert!(!covers(&seg, &exact("/v2x")));
        assert!(covers(&prefix("/"), &exact("/")));
    }
}
