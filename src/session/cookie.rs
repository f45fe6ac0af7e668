//! Reading `Cookie` headers and writing `Set-Cookie` values for Portcullis's own cookies.

/// The cookies of one request, borrowed from its `Cookie` header values.
pub struct CookieJar<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> CookieJar<'a> {
    /// Parses every `Cookie` header value (HTTP/2 may send several). Only cookies whose name
    /// starts with `prefix` are kept, so the jar stays small whatever the app's cookies.
    pub fn parse(values: impl Iterator<Item = &'a str>, prefix: &str) -> Self {
        let pairs = values
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let name = name.trim();
                name.starts_with(prefix).then_some((name, value.trim()))
            })
            .collect();
        CookieJar { pairs }
    }

    /// The value of cookie `name` (the first, if a client sent duplicates).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The value of chunk `index` of cookie `name` (`<name>.<index>`).
    pub fn get_chunk(&self, name: &str, index: usize) -> Option<&'a str> {
        self.pairs.iter().find_map(|(n, v)| {
            let rest = n.strip_prefix(name)?.strip_prefix('.')?;
            (rest.parse::<usize>().ok()? == index).then_some(*v)
        })
    }

    /// Cookies whose name starts with `prefix`: (name, value).
    pub fn with_prefix<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 's {
        self.pairs
            .iter()
            .filter(move |(n, _)| n.starts_with(prefix))
            .copied()
    }

    /// Names of the chunk cookies present (`<name>.1`, `<name>.2`, …).
    pub fn chunk_indexes(&self, name: &str) -> Vec<usize> {
        self.pairs
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(name)?.strip_prefix('.')?.parse().ok())
            .collect()
    }
}

/// `Set-Cookie` values for a session written as `values` (first, chunks…), living
/// `max_age` seconds; chunks the browser holds beyond the new count are cleared.
pub fn cookie_values(
    name: &str,
    values: &[String],
    max_age: u64,
    present_chunks: &[usize],
) -> Vec<String> {
    let mut out = Vec::with_capacity(values.len() + present_chunks.len());
    for (i, value) in values.iter().enumerate() {
        let cookie_name = if i == 0 {
            name.to_string()
        } else {
            format!("{name}.{i}")
        };
        out.push(attributes(&cookie_name, value, max_age));
    }
    for index in present_chunks.iter().filter(|i| **i >= values.len()) {
        out.push(attributes(&format!("{name}.{index}"), "", 0));
    }
    out
}

/// `Set-Cookie` values that delete the session cookie and every chunk present.
pub fn clear_cookies(name: &str, present_chunks: &[usize]) -> Vec<String> {
    let mut out = vec![attributes(name, "", 0)];
    out.extend(
        present_chunks
            .iter()
            .map(|i| attributes(&format!("{name}.{i}"), "", 0)),
    );
    out
}

/// `__Host-` cookies must be `Secure`, `Path=/` and carry no `Domain` (RFC 6265bis §4.1.3.2);
/// every Portcullis cookie follows those rules, plus `HttpOnly` and `SameSite=Lax`.
fn attributes(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}
