//! The route-table text format of `shared/data`: one route a line, `PREFIX<TAB>ORIGIN-AS`.
//!
//! Blank lines and lines starting with `#` are skipped. Any other line that is not a
//! prefix of the expected family followed by whitespace and a decimal AS number is an
//! error naming the line, so a truncated or wrong-family file is never half-loaded.

use crate::prefix::{Address, Prefix, PrefixError};

/// Why a table text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableTextError {
    #[error("line {line}: {source}")]
    Prefix { line: usize, source: PrefixError },
    #[error("line {line}: expected PREFIX<TAB>ORIGIN-AS, got {text:?}")]
    Shape { line: usize, text: String },
    #[error("line {line}: origin AS {text:?} is not a number from 0 to 4294967295")]
    OriginAs { line: usize, text: String },
}

/// Parses one line; `Ok(None)` for a blank or comment line. `line` is its 1-based number.
pub fn parse_line<A: Address>(
    line: usize,
    text: &str,
) -> Result<Option<(Prefix<A>, u32)>, TableTextError> {
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let mut fields = t.split_whitespace();
    let (Some(prefix), Some(asn), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(TableTextError::Shape {
            line,
            text: shorten(text),
        });
    };
    let prefix = prefix
        .parse()
        .map_err(|source| TableTextError::Prefix { line, source })?;
    if !asn.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TableTextError::OriginAs {
            line,
            text: shorten(asn),
        });
    }
    let asn = asn.parse().map_err(|_| TableTextError::OriginAs {
        line,
        text: shorten(asn),
    })?;
    Ok(Some((prefix, asn)))
}

/// Parses a whole table.
pub fn parse_table<A: Address>(text: &str) -> Result<Vec<(Prefix<A>, u32)>, TableTextError> {
    let mut routes = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(r) = parse_line(i + 1, l)? {
            routes.push(r);
        }
    }
    Ok(routes)
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Prefix4, Prefix6};

    #[test]
    fn parses_the_shared_format() {
        let t = "# comment\n1.0.0.0/24\t15169\n\n1.0.4.0/22\t56203\n";
        let r = parse_table::<u32>(t).unwrap();
        assert_eq!(
            r,
            vec![
                ("1.0.0.0/24".parse::<Prefix4>().unwrap(), 15169),
                ("1.0.4.0/22".parse().unwrap(), 56203)
            ]
        );
        let r = parse_table::<u128>("2001:200::/32\t2500\n").unwrap();
        assert_eq!(r, vec![("2001:200::/32".parse::<Prefix6>().unwrap(), 2500)]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_table::<u32>("1.0.0.0/24\t1\n1.0.0.0/24\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: expected PREFIX<TAB>ORIGIN-AS, got \"1.0.0.0/24\""
        );
        let e = parse_table::<u32>("1.0.0.0/24\t-1\n").unwrap_err();
        assert!(matches!(e, TableTextError::OriginAs { line: 1, .. }), "{e}");
        let e = parse_table::<u32>("2001::/32\t1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("line 1: \"2001::/32\" is not an IPv4 prefix"),
            "{e}"
        );
        assert!(parse_table::<u32>("1.0.0.0/24\t99999999999\n").is_err());
        assert!(parse_table::<u32>("1.0.0.0/24\t1\textra\n").is_err());
    }
}
