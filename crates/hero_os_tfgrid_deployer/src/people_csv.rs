//! `people.csv` for `user create --from-file`: a header line naming the columns (`username`,
//! optional `display_name` / `display name`, optional `email`), then one person per line.
//!
//! Parsed with the `csv` crate (quoted fields, commas inside quotes, CRLF, a UTF-8 BOM) rather
//! than by splitting lines, so "de Vries, Jan" stays one field. Each line is checked here as far
//! as it can be without the server — the username by the same function the server uses, and
//! duplicates within the file — so a bad line is reported with its line number before anything
//! is created. What only the server or Forge can judge (an email taken on Forge) is reported
//! with the same line number by the caller.

use std::collections::HashMap;

use hero_os_tfgrid_deployer_sdk::username;

/// Largest file read: a class or an event, not a directory export.
pub const MAX_BYTES: usize = 1 << 20;

/// A person on a good line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// 1-based line of the file where the record starts.
    pub line: u64,
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
}

/// A line refused, and why (phrased for the operator).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadLine {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub reason: String,
}

/// Good lines and bad lines, both in file order.
#[derive(Debug, Default)]
pub struct Parsed {
    pub people: Vec<Person>,
    pub bad: Vec<BadLine>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Username,
    DisplayName,
    Email,
}

fn column(name: &str) -> Option<Column> {
    let norm: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect();
    match norm.as_str() {
        "username" => Some(Column::Username),
        "display_name" => Some(Column::DisplayName),
        "email" => Some(Column::Email),
        _ => None,
    }
}

/// Line numbers of record starts, counted from the bytes themselves because the reader's own
/// line counter drifts on CRLF and skipped blank lines. Records come in file order, so counting
/// goes forward only (linear in the file, not per record).
struct Lines<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            bytes,
            at: 0,
            line: 1,
        }
    }

    /// The line of the first byte of the record starting at `offset` (line ends the reader
    /// skipped before the record are stepped over).
    fn of(&mut self, offset: u64) -> u64 {
        let b = self.bytes;
        let mut target = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
        while target < b.len() && matches!(b[target], b'\r' | b'\n') {
            target += 1;
        }
        while self.at < target {
            // LF ends a line; so does a lone CR (old Mac files); CRLF counts once, by its LF.
            let ends = match b[self.at] {
                b'\n' => true,
                b'\r' => b.get(self.at + 1) != Some(&b'\n'),
                _ => false,
            };
            if ends {
                self.line += 1;
            }
            self.at += 1;
        }
        self.line
    }
}

/// Parses the whole file. `Err` is a problem with the file itself (too large, no header, an
/// unknown column): nothing in it is used.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "the file has more than {MAX_BYTES} bytes, the most one file may hold (split it)"
        ));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = reader
        .byte_headers()
        .map_err(|e| format!("line 1: cannot read the header: {e}"))?
        .clone();
    let mut columns = Vec::new();
    for field in header.iter() {
        let name =
            std::str::from_utf8(field).map_err(|_| "line 1: the header is not UTF-8".to_owned())?;
        let col = column(name).ok_or_else(|| {
            format!(
                "line 1: unknown column {name:?} (the header names username, display_name, email)"
            )
        })?;
        if columns.contains(&col) {
            return Err(format!("line 1: column {name:?} appears twice"));
        }
        columns.push(col);
    }
    if !columns.contains(&Column::Username) {
        return Err(
            "line 1: the header must name the columns, with at least `username` (e.g. `username,display_name,email`)"
                .into(),
        );
    }

    let mut parsed = Parsed::default();
    let mut lines = Lines::new(bytes);
    let mut seen_names: HashMap<String, u64> = HashMap::new();
    let mut seen_emails: HashMap<String, u64> = HashMap::new();
    for record in reader.byte_records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| lines.of(p.byte())).unwrap_or(0);
                parsed.bad.push(BadLine {
                    line,
                    username: None,
                    reason: format!("cannot be read: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map(|p| lines.of(p.byte())).unwrap_or(0);
        // A line of empty fields (e.g. `,,` from a spreadsheet) is blank, not a person.
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        let mut bad = |username: Option<String>, reason: String| {
            parsed.bad.push(BadLine {
                line,
                username,
                reason,
            })
        };
        if record.len() != columns.len() {
            bad(
                None,
                format!(
                    "has {} field(s), the header names {}",
                    record.len(),
                    columns.len()
                ),
            );
            continue;
        }
        let mut person = Person {
            line,
            username: String::new(),
            display_name: None,
            email: None,
        };
        let mut not_utf8 = false;
        for (col, field) in columns.iter().zip(record.iter()) {
            let Ok(text) = std::str::from_utf8(field) else {
                not_utf8 = true;
                break;
            };
            let value = (!text.is_empty()).then(|| text.to_owned());
            match col {
                Column::Username => person.username = text.to_owned(),
                Column::DisplayName => person.display_name = value,
                Column::Email => person.email = value,
            }
        }
        if not_utf8 {
            bad(None, "is not UTF-8".into());
            continue;
        }
        let name = person.username.clone();
        if let Err(e) = username::validate(&name) {
            bad((!name.is_empty()).then_some(name), format!("{e}"));
            continue;
        }
        if let Some(first) = seen_names.get(&name) {
            bad(
                Some(name),
                format!("username already on line {first} of this file"),
            );
            continue;
        }
        if let Some(email) = &person.email {
            let key = email.to_lowercase();
            if let Some(first) = seen_emails.get(&key) {
                bad(
                    Some(name),
                    format!("email {email} already on line {first} of this file"),
                );
                continue;
            }
            seen_emails.insert(key, line);
        }
        seen_names.insert(name, line);
        parsed.people.push(person);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn bad_of(text: &str) -> Vec<(u64, String)> {
        parse(text.as_bytes())
            .unwrap()
            .bad
            .into_iter()
            .map(|b| (b.line, b.reason))
            .collect()
    }

    #[test]
    fn good_lines_in_every_equivalent_form() {
        for text in [
            "username,display_name,email\nalice,Alice A,alice@example.org\n",
            "\u{feff}username,display_name,email\r\nalice,Alice A,alice@example.org\r\n",
            "Username, Display Name ,EMAIL\n alice , Alice A , alice@example.org \n",
            "username,display-name,email\n\"alice\",\"Alice A\",alice@example.org",
            "email,username,display_name\nalice@example.org,alice,Alice A\n",
        ] {
            let p = parse(text.as_bytes()).unwrap();
            assert!(p.bad.is_empty(), "{text:?}: {:?}", p.bad);
            assert_eq!(
                p.people,
                vec![Person {
                    line: 2,
                    username: "alice".into(),
                    display_name: Some("Alice A".into()),
                    email: Some("alice@example.org".into()),
                }],
                "{text:?}"
            );
        }
    }

    #[test]
    fn quoted_commas_empty_optionals_and_blank_lines() {
        let p =
            parse(b"username,display_name,email\n\njan-de-vries,\"de Vries, Jan\",\nbob,,\n,,\n")
                .unwrap();
        assert!(p.bad.is_empty(), "{:?}", p.bad);
        assert_eq!(p.people[0].line, 3);
        assert_eq!(p.people[0].display_name.as_deref(), Some("de Vries, Jan"));
        assert_eq!(p.people[0].email, None);
        assert_eq!(p.people[1].username, "bob");
        assert_eq!(p.people[1].line, 4);
        // Line numbers count CRLF once, a lone CR as a line end, and skipped blank lines.
        for (text, want) in [
            ("username\r\na\r\n\r\nb\r\n", [2, 4]),
            ("username\ra\r\rb\r", [2, 4]),
            ("username\n\n\na\nb", [4, 5]),
        ] {
            let lines: Vec<u64> = parse(text.as_bytes())
                .unwrap()
                .people
                .iter()
                .map(|p| p.line)
                .collect();
            assert_eq!(lines, want, "{text:?}");
        }
        let only_names = parse(b"username\ncarol\n").unwrap();
        assert_eq!(only_names.people[0].username, "carol");
    }

    #[test]
    fn each_bad_line_has_its_number_and_reason() {
        let text = "username,display_name,email\n\
                    alice,A,a@x.org\n\
                    Bob,B,b@x.org\n\
                    ,nobody,n@x.org\n\
                    alice,again,other@x.org\n\
                    carol,C,A@X.org\n\
                    dave,D\n\
                    -eve,E,e@x.org\n\
                    admin,Admin,adm@x.org\n\
                    frank,F,f@x.org,extra\n\
                    grace,\"multi\nline\",g@x.org\n\
                    heidi,H,h@x.org\n";
        let p = parse(text.as_bytes()).unwrap();
        let names: Vec<&str> = p.people.iter().map(|p| p.username.as_str()).collect();
        assert_eq!(names, ["alice", "grace", "heidi"]);
        // A quoted field over two lines: the record starts on line 11, the next one is line 13.
        assert_eq!(p.people[1].line, 11);
        assert_eq!(p.people[2].line, 13);
        let bad = bad_of(text);
        let lines: Vec<u64> = bad.iter().map(|b| b.0).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10], "{bad:?}");
        let reason = |line: u64| &bad.iter().find(|b| b.0 == line).unwrap().1;
        assert!(reason(3).contains("lowercase"), "{}", reason(3));
        assert!(reason(4).contains("empty"), "{}", reason(4));
        assert!(reason(5).contains("already on line 2"), "{}", reason(5));
        assert!(
            reason(6).contains("email A@X.org already on line 2"),
            "{}",
            reason(6)
        );
        assert!(reason(7).contains("has 2 field(s)"), "{}", reason(7));
        assert!(!reason(8).is_empty());
        assert!(reason(9).contains("reserved"), "{}", reason(9));
        assert!(reason(10).contains("has 4 field(s)"), "{}", reason(10));
    }

    #[test]
    fn not_utf8_is_a_bad_line_not_a_panic() {
        let mut text = b"username,display_name\nalice,ok\nbob,".to_vec();
        text.extend_from_slice(&[0xff, 0xfe]);
        text.extend_from_slice(b"\ncarol,ok\n");
        let p = parse(&text).unwrap();
        assert_eq!(p.people.len(), 2);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.bad[0].line, 3);
        assert!(p.bad[0].reason.contains("UTF-8"));
    }

    #[test]
    fn file_level_problems_refuse_the_whole_file() {
        for (text, want) in [
            ("", "at least `username`"),
            ("alice,Alice,a@x.org\n", "unknown column \"alice\""),
            ("name,email\nalice,a@x\n", "unknown column \"name\""),
            ("username,username\na,b\n", "appears twice"),
            ("display_name,email\nA,a@x.org\n", "at least `username`"),
        ] {
            let e = parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("line 1:"), "{e}");
        }
        let huge = vec![b'a'; MAX_BYTES + 1];
        assert!(parse(&huge)
            .unwrap_err()
            .contains(&format!("more than {MAX_BYTES} bytes")));
    }
}
