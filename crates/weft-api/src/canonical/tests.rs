use super::*;
use PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes};

fn norm(path: &str, mode: PathNormalization) -> Result<String, CanonicalError> {
    normalize_path(path, mode).map(Cow::into_owned)
}

#[test]
fn base_closes_the_dot_and_encoding_bypasses() {
    // Each of these reached an app behind a DENY on `/admin*` before normalization.
    for raw in [
        "/./admin",
        "/x/../admin",
        "/%61dmin",
        "/%2e/admin",
        "/%2E/admin",
        "/x/%2e%2e/admin",
        "/x/.%2e/admin",
        "/admin/.",
    ] {
        let got = norm(raw, Base).expect(raw);
        assert!(got.starts_with("/admin"), "{raw} -> {got}");
    }
    assert_eq!(
        norm("/public/../admin/secret.txt", Base).as_deref(),
        Ok("/admin/secret.txt")
    );
    // A backslash is a slash, as Envoy reads it: `/\admin` is `//admin`, which only merging
    // closes (Istio documents the same).
    assert_eq!(norm("/\\admin", Base).as_deref(), Ok("//admin"));
    assert_eq!(norm("/\\admin", MergeSlashes).as_deref(), Ok("/admin"));
    assert_eq!(norm("//admin", Base).as_deref(), Ok("//admin"));
    assert_eq!(norm("//admin//x/", MergeSlashes).as_deref(), Ok("/admin/x/"));
}

#[test]
fn base_keeps_reserved_encodings_and_upper_cases_their_hex() {
    assert_eq!(norm("/a%2fb", Base).as_deref(), Ok("/a%2Fb"));
    assert_eq!(norm("/a%5cb", Base).as_deref(), Ok("/a%5Cb"));
    assert_eq!(norm("/a%20b", Base).as_deref(), Ok("/a%20b"));
    assert_eq!(norm("/caf%C3%A9", Base).as_deref(), Ok("/caf%C3%A9"));
    assert_eq!(norm("/%7Euser", Base).as_deref(), Ok("/~user"));
}

#[test]
fn decode_and_merge_slashes_decodes_encoded_slashes() {
    assert_eq!(norm("/a%2Fb", DecodeAndMergeSlashes).as_deref(), Ok("/a/b"));
    assert_eq!(norm("/a%5Cb", DecodeAndMergeSlashes).as_deref(), Ok("/a/b"));
    assert_eq!(
        norm("/%2F%2Fadmin", DecodeAndMergeSlashes).as_deref(),
        Ok("/admin")
    );
    assert_eq!(
        norm("/x%2F..%2Fadmin", DecodeAndMergeSlashes).as_deref(),
        Ok("/admin")
    );
    // Without decoding, an encoded slash is part of a segment name, not a separator.
    assert_eq!(
        norm("/x%2F..%2Fadmin", MergeSlashes).as_deref(),
        Ok("/x%2F..%2Fadmin")
    );
}

#[test]
fn paths_that_cannot_be_normalized_are_refused() {
    use CanonicalError::*;
    for (raw, want) in [
        ("/../admin", EscapesRoot),
        ("/a/../../admin", EscapesRoot),
        ("/%2e%2e/admin", EscapesRoot),
        ("/a%zz", BadPercentEncoding),
        ("/a%4", BadPercentEncoding),
        ("/a%", BadPercentEncoding),
        ("/a%00b", Nul),
        ("/a\0b", Nul),
        ("admin", NotOriginForm),
        ("", NotOriginForm),
        ("http://x/admin", NotOriginForm),
        ("/public/..;/admin", DotSegmentWithParameter),
        ("/public/.;x/admin", DotSegmentWithParameter),
    ] {
        assert_eq!(norm(raw, Base), Err(want.clone()), "{raw}");
    }
    // NONE still refuses what is no path at all.
    assert_eq!(norm("/a\0", PathNormalization::None), Err(Nul));
    assert_eq!(norm("x", PathNormalization::None), Err(NotOriginForm));
}

#[test]
fn none_leaves_the_path_alone() {
    assert_eq!(
        norm("/x/../admin", PathNormalization::None).as_deref(),
        Ok("/x/../admin")
    );
    assert_eq!(
        norm("/%61dmin", PathNormalization::None).as_deref(),
        Ok("/%61dmin")
    );
}

#[test]
fn ordinary_paths_are_borrowed_unchanged() {
    for raw in [
        "/",
        "/productpage",
        "/api/v1/books/1",
        "/.well-known/x",
        "/a.b/c..d",
        "/a;b=c",
    ] {
        let got = normalize_path(raw, MergeSlashes).expect(raw);
        assert!(matches!(got, Cow::Borrowed(_)), "{raw} was copied");
        assert_eq!(got, raw);
    }
}

#[test]
fn normalization_is_idempotent_and_leaves_no_dot_segments() {
    let inputs = [
        "/a/./b/../c",
        "/%2e%2E/x",
        "/x/%2e%2e/",
        "/a//b/.",
        "/\\\\a",
        "/a/b/..",
        "/a/%2F/../b",
        "/a/...",
        "/a/..b/",
        "/%41%42%2f",
    ];
    for mode in [Base, MergeSlashes, DecodeAndMergeSlashes] {
        for raw in inputs {
            let Ok(once) = norm(raw, mode) else { continue };
            assert_eq!(
                norm(&once, mode).as_deref(),
                Ok(once.as_str()),
                "{raw} in {mode:?}"
            );
            assert!(!once.contains("/./") && !once.contains("/../") && !once.ends_with("/.."));
            if mode != Base {
                assert!(!once.contains("//"), "{raw} in {mode:?} -> {once}");
            }
        }
    }
}

#[test]
fn authorities_are_lower_cased_without_trailing_dot_and_numeric_ports() {
    let a = |s| parse_authority(s).map(|a| (a.host.into_owned(), a.port));
    assert_eq!(
        a("Reviews.Default:9080"),
        Ok(("reviews.default".into(), Some(9080)))
    );
    assert_eq!(a("reviews."), Ok(("reviews".into(), None)));
    assert_eq!(a("reviews.:09080"), Ok(("reviews".into(), Some(9080))));
    assert_eq!(a("reviews:"), Ok(("reviews".into(), None)));
    assert_eq!(a("[::1]:80"), Ok(("[::1]".into(), Some(80))));
    assert_eq!(a("[FE80::1]"), Ok(("[fe80::1]".into(), None)));
    assert_eq!(a("10.0.0.1:8080"), Ok(("10.0.0.1".into(), Some(8080))));
    assert_eq!(
        parse_authority("[::1]:80").map(|x| x.bare_host().to_string()),
        Ok("::1".into())
    );
    assert_eq!(
        parse_authority("Reviews:9080").map(|x| x.to_header_value()),
        Ok("reviews:9080".into())
    );
}

#[test]
fn malformed_authorities_are_refused() {
    use CanonicalError::*;
    for (raw, want) in [
        ("", EmptyHost),
        (".", EmptyHost),
        (":80", EmptyHost),
        ("user@host", BadHost),
        ("a b", BadHost),
        ("x..", BadHost),
        ("a..b", BadHost),
        ("host:80:80", BadHost),
        ("host:99999", BadPort),
        ("host:123456", BadPort),
        ("host:8o", BadPort),
        ("host:-1", BadPort),
        ("[::1", BadHost),
        ("[::1]x", BadPort),
        ("[zz]", BadHost),
    ] {
        assert_eq!(parse_authority(raw).map(|_| ()), Err(want), "{raw}");
    }
}
