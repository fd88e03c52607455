//! The part of CEL that Istio's access-log `filter.expression` is written in, in practice:
//! comparisons of a few request and response attributes, joined by `&&`, `||`, `!` and
//! parentheses. Parsed once (when a config is applied, and by `weft analyze`), evaluated per
//! request without allocating.
//!
//! Attributes (Envoy's names):
//! - `response.code`: the HTTP status the client got (0 for a TCP connection);
//! - `response.flags`: compared with `0` (no flag: `response.flags == 0`, any flag: `!= 0`) or
//!   with a flag code as a string (`response.flags == "UH"`); Envoy's other bit values are not
//!   modelled, so any other number is refused;
//! - `response.grpc_status`: the gRPC status, a number (false when the request is not gRPC);
//! - `request.method`: `"GET"`...;
//! - `connection.mtls`: `true` when this hop was mutual TLS (alone, or compared with a bool);
//! - `xds.cluster_name`: the upstream cluster (`outbound|9080||reviews.default.svc.cluster.local`,
//!   Istio's `PassthroughCluster` for traffic sent on outside the mesh, `BlackHoleCluster` for
//!   traffic refused under `REGISTRY_ONLY`), compared by `==` or `!=`.

use std::fmt;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Expr,
}

/// What a filter reads of one request or connection.
#[derive(Debug, Clone, Copy)]
pub struct FilterInput<'a> {
    pub code: u16,
    /// The response flag's code (`"UH"`), or `"-"` for none.
    pub flags: &'a str,
    pub grpc_status: Option<u32>,
    pub method: &'a str,
    pub mtls: bool,
    /// The upstream cluster's name; empty when there was none.
    pub cluster: &'a str,
}

/// Why an expression cannot be used, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter expression {expression:?}: {message} (at character {at})")]
pub struct FilterError {
    pub expression: String,
    pub message: String,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Compare),
}

#[derive(Debug, Clone, PartialEq)]
enum Compare {
    Code(Op, i64),
    /// `true`: the request has a flag (compared with 0); the op is `==` or `!=` only.
    AnyFlag(bool),
    Flag {
        equal: bool,
        code: String,
    },
    Grpc(Op, i64),
    Method {
        equal: bool,
        method: String,
    },
    Mtls(bool),
    Cluster {
        equal: bool,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Bool(bool),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

// === impl Filter ===

impl Filter {
    pub fn parse(expression: &str) -> Result<Self, FilterError> {
        let err = |message: String, at: usize| FilterError {
            expression: expression.to_string(),
            message,
            at,
        };
        let tokens = tokenize(expression).map_err(|(m, at)| err(m, at))?;
        let mut p = Parser {
            tokens,
            pos: 0,
            end: expression.len(),
        };
        let root = p.or().map_err(|(m, at)| err(m, at))?;
        if let Some((_, at)) = p.tokens.get(p.pos) {
            return Err(err("unexpected text after the expression".into(), *at));
        }
        Ok(Filter { root })
    }

    pub fn matches(&self, input: &FilterInput<'_>) -> bool {
        self.root.eval(input)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        })
    }
}

impl Op {
    fn apply(self, a: i64, b: i64) -> bool {
        match self {
            Op::Eq => a == b,
            Op::Ne => a != b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }

    /// `==` -> true, `!=` -> false; None for an ordering.
    fn equality(self) -> Option<bool> {
        match self {
            Op::Eq => Some(true),
            Op::Ne => Some(false),
            _ => None,
        }
    }
}

impl Expr {
    fn eval(&self, i: &FilterInput<'_>) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(i) || b.eval(i),
            Expr::And(a, b) => a.eval(i) && b.eval(i),
            Expr::Not(a) => !a.eval(i),
            Expr::Compare(c) => match c {
                Compare::Code(op, v) => op.apply(i64::from(i.code), *v),
                Compare::AnyFlag(any) => (i.flags != "-" && !i.flags.is_empty()) == *any,
                Compare::Flag { equal, code } => (i.flags == code) == *equal,
                Compare::Grpc(op, v) => i.grpc_status.is_some_and(|g| op.apply(i64::from(g), *v)),
                Compare::Method { equal, method } => i.method.eq_ignore_ascii_case(method) == *equal,
                Compare::Mtls(want) => i.mtls == *want,
                Compare::Cluster { equal, name } => (i.cluster == name) == *equal,
            },
        }
    }
}

// === parsing ===

struct Parser {
    tokens: Vec<(Token, usize)>,
    pos: usize,
    /// Where the text ends: the position of "it ends too soon".
    end: usize,
}

type ParseResult<T> = Result<T, (String, usize)>;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(_, at)| *at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }

    fn or(&mut self) -> ParseResult<Expr> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> ParseResult<Expr> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> ParseResult<Expr> {
        match self.peek() {
            Some(Token::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err(("a ( without its )".into(), self.at())),
                }
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> ParseResult<Expr> {
        let at = self.at();
        let attr = match self.next() {
            Some(Token::Ident(name)) => name,
            Some(t) => return Err((format!("expected an attribute, found {t:?}"), at)),
            None => return Err(("the expression ends too soon".into(), at)),
        };
        let (op, value) = match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.pos += 1;
                let vat = self.at();
                match self.next() {
                    Some(v @ (Token::Int(_) | Token::Str(_) | Token::Bool(_))) => (op, v),
                    _ => return Err((format!("{attr} {op} needs a number, string or bool"), vat)),
                }
            }
            // A bare boolean attribute.
            _ if attr == "connection.mtls" => return Ok(Expr::Compare(Compare::Mtls(true))),
            _ => return Err((format!("{attr} must be compared (==, !=, <, <=, >, >=)"), at)),
        };
        let shown = match &value {
            Token::Int(n) => n.to_string(),
            Token::Str(s) => format!("{s:?}"),
            Token::Bool(b) => b.to_string(),
            _ => String::new(),
        };
        let bad = |why: &str| Err((format!("{attr} {op} {shown}: {why}"), at));
        let compare = match (attr.as_str(), value) {
            ("response.code", Token::Int(v)) => Compare::Code(op, v),
            ("response.grpc_status", Token::Int(v)) => Compare::Grpc(op, v),
            ("response.flags", Token::Int(0)) => match op {
                Op::Eq => Compare::AnyFlag(false),
                Op::Ne | Op::Gt => Compare::AnyFlag(true),
                _ => return bad("response.flags compares with 0 by ==, != or >"),
            },
            ("response.flags", Token::Str(code)) => match op.equality() {
                Some(equal) => Compare::Flag { equal, code },
                None => return bad("a flag code compares by == or != only"),
            },
            ("response.flags", Token::Int(_)) => {
                return bad("compare response.flags with 0 or with a flag code such as \"UH\"")
            }
            ("request.method", Token::Str(method)) => match op.equality() {
                Some(equal) => Compare::Method { equal, method },
                None => return bad("a method compares by == or != only"),
            },
            ("xds.cluster_name", Token::Str(name)) => match op.equality() {
                Some(equal) => Compare::Cluster { equal, name },
                None => return bad("a cluster name compares by == or != only"),
            },
            ("connection.mtls", Token::Bool(b)) => match op.equality() {
                Some(equal) => Compare::Mtls(b == equal),
                None => return bad("a bool compares by == or != only"),
            },
            (
                "response.code" | "response.grpc_status" | "response.flags" | "request.method" | "connection.mtls"
                | "xds.cluster_name",
                _,
            ) => {
                return bad("the value has the wrong type")
            }
            _ => {
                return Err((
                    format!("unknown attribute {attr} (known: response.code, response.flags, response.grpc_status, request.method, connection.mtls, xds.cluster_name)"),
                    at,
                ))
            }
        };
        Ok(Expr::Compare(compare))
    }
}

fn tokenize(s: &str) -> ParseResult<Vec<(Token, usize)>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = bytes.get(i..i + 2);
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Token::Open,
            b')' => Token::Close,
            _ if two == Some(b"&&") => Token::And,
            _ if two == Some(b"||") => Token::Or,
            _ if two == Some(b"==") => Token::Op(Op::Eq),
            _ if two == Some(b"!=") => Token::Op(Op::Ne),
            _ if two == Some(b"<=") => Token::Op(Op::Le),
            _ if two == Some(b">=") => Token::Op(Op::Ge),
            b'<' => Token::Op(Op::Lt),
            b'>' => Token::Op(Op::Gt),
            b'!' => Token::Not,
            b'"' | b'\'' => {
                let end = s[i + 1..]
                    .find(c as char)
                    .ok_or_else(|| ("a string without its closing quote".to_string(), start))?;
                let text = s[i + 1..i + 1 + end].to_string();
                i += end + 2;
                out.push((Token::Str(text), start));
                continue;
            }
            b'0'..=b'9' => {
                let len = s[i..].bytes().take_while(u8::is_ascii_digit).count();
                // CEL's unsigned suffix (`0u`) is accepted.
                let n: i64 = s[i..i + len]
                    .parse()
                    .map_err(|_| ("a number too large".to_string(), start))?;
                i += len;
                if bytes.get(i) == Some(&b'u') {
                    i += 1;
                }
                out.push((Token::Int(n), start));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let len = s[i..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
                    .count();
                let word = &s[i..i + len];
                i += len;
                let t = match word {
                    "true" => Token::Bool(true),
                    "false" => Token::Bool(false),
                    _ => Token::Ident(word.to_string()),
                };
                out.push((t, start));
                continue;
            }
            _ => return Err((format!("unexpected character {:?}", c as char), start)),
        };
        i += match token {
            Token::And | Token::Or | Token::Op(Op::Eq | Op::Ne | Op::Le | Op::Ge) => 2,
            _ => 1,
        };
        out.push((token, start));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(code: u16, flags: &str) -> FilterInput<'_> {
        FilterInput {
            code,
            flags,
            grpc_status: None,
            method: "GET",
            mtls: true,
            cluster: "outbound|9080||reviews.default.svc.cluster.local",
        }
    }

    fn eval(expr: &str, i: FilterInput<'_>) -> bool {
        Filter::parse(expr).expect(expr).matches(&i)
    }

    #[test]
    fn istio_docs_expressions() {
        assert!(eval("response.code >= 400", input(503, "UH")));
        assert!(!eval("response.code >= 400", input(200, "-")));
        assert!(eval(
            "response.code >= 400 || response.flags != 0",
            input(200, "PT")
        ));
        assert!(!eval(
            "response.code >= 400 || response.flags != 0",
            input(200, "-")
        ));
        assert!(eval(
            "response.code == 503 && response.flags == \"UH\"",
            input(503, "UH")
        ));
        assert!(!eval(
            "response.code == 503 && response.flags == 'UH'",
            input(503, "UF")
        ));
        assert!(eval("!(response.code < 500)", input(500, "-")));
        assert!(eval("response.flags == 0u", input(200, "-")));
        assert!(eval(
            "request.method == \"get\" && connection.mtls",
            input(200, "-")
        ));
        assert!(!eval("connection.mtls == false", input(200, "-")));
        let grpc = FilterInput {
            grpc_status: Some(14),
            ..input(200, "-")
        };
        assert!(eval("response.grpc_status != 0", grpc));
        assert!(!eval("response.grpc_status != 0", input(200, "-")));
        // Istio's docs: errors, and whatever leaves or is refused at the mesh's edge.
        let edge = "response.code >= 400 || xds.cluster_name == 'BlackHoleCluster' || xds.cluster_name == 'PassthroughCluster'";
        assert!(!eval(edge, input(200, "-")));
        let out = FilterInput {
            cluster: "PassthroughCluster",
            ..input(200, "PT")
        };
        assert!(eval(edge, out));
    }

    #[test]
    fn precedence_is_and_before_or() {
        // false || (true && false) = false; (false || true) && false would also be false, so
        // check a case where they differ: true || (false && false) = true.
        assert!(eval(
            "response.code == 200 || response.code == 1 && response.code == 2",
            input(200, "-")
        ));
    }

    #[test]
    fn what_cannot_be_understood_is_refused_with_where() {
        for (bad, at) in [
            ("response.size > 10", 0),
            ("response.code >=", 16),
            ("response.flags == 4", 0),
            ("response.code == \"200\"", 0),
            ("(response.code == 200", 21),
            ("response.code == 200 extra", 21),
            ("response.code = 200", 14),
            ("request.method < 'GET'", 0),
        ] {
            let e = Filter::parse(bad).expect_err(bad);
            assert_eq!(e.at, at, "{bad}: {e}");
        }
    }
}
