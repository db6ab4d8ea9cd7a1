//! The request a door asks about, as the core sees it, and the one way its headers are read.
//! Pure: a leaf every other module may import.

use std::collections::HashMap;

/// The request a door asks about: what the core decides on.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The host the client addressed (Envoy's `:authority`; the forward-auth door takes
    /// `X-Forwarded-Host`): the CSRF check compares `origin` with it.
    pub host: &'a str,
    pub headers: Headers<'a>,
    /// The route's settings from the proxy (Envoy's per-route `context_extensions`); `None`
    /// when the proxy sends none.
    pub extensions: Option<&'a HashMap<String, String>>,
}

/// Every request header as `(name, value bytes)`, in the order received: names in any letter
/// case, repeats kept. Looked up by name in any letter case.
#[derive(Clone, Copy, Debug, Default)]
pub struct Headers<'a>(&'a [(&'a str, &'a [u8])]);

/// A header that must come once came more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("header {0} sent more than once")]
pub struct Repeated(pub &'static str);

impl<'a> Headers<'a> {
    pub fn new(pairs: &'a [(&'a str, &'a [u8])]) -> Self {
        Self(pairs)
    }

    /// Every header, in the order received.
    pub fn pairs(&self) -> &'a [(&'a str, &'a [u8])] {
        self.0
    }

    /// Every value of `name`, in the order received.
    pub fn all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.0
            .iter()
            .filter(move |(candidate, _)| same_name(candidate, name))
            .map(|(_, value)| *value)
    }

    /// The one value of `name`, if sent; sent more than once is an error, never a pick.
    pub fn one(&self, name: &'static str) -> Result<Option<&'a [u8]>, Repeated> {
        let mut values = self.all(name);
        let first = values.next();
        match values.next() {
            Some(_) => Err(Repeated(name)),
            None => Ok(first),
        }
    }
}

/// Header names compared as HTTP does, in any letter case; an exact match, which every
/// lower-case name the proxies send is, is tried first, since it is a plain comparison.
fn same_name(candidate: &str, name: &str) -> bool {
    candidate == name || candidate.eq_ignore_ascii_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_repeats_are_kept() {
        let pairs: [(&str, &[u8]); 4] = [
            ("Origin", b"https://a.example"),
            ("accept", b"text/html"),
            ("ACCEPT", b"*/*"),
            ("x-other", b"1"),
        ];
        let headers = Headers::new(&pairs);
        assert_eq!(
            headers.all("accept").collect::<Vec<_>>(),
            [&b"text/html"[..], b"*/*"]
        );
        assert_eq!(headers.one("origin"), Ok(Some(&b"https://a.example"[..])));
        assert_eq!(headers.one("ORIGIN"), Ok(Some(&b"https://a.example"[..])));
        assert_eq!(headers.one("accept"), Err(Repeated("accept")));
        assert_eq!(headers.one("cookie"), Ok(None));
        assert_eq!(headers.all("cookie").count(), 0);
        assert_eq!(headers.pairs().len(), 4);
    }
}
