//! People's names: what a new name may be, and how a stored one is printed.
//!
//! Names are printed on terminals (`people list`, decisions' summaries), where a control
//! character acts instead of showing: ESC starts sequences that recolour the terminal or set its
//! title, BEL rings, NUL cuts the line short for C readers. So a new name may hold none, nor the
//! invisible characters that reorder or break a line (bidirectional overrides and isolates, the
//! line and paragraph separators); a name stored before this rule is printed with them escaped.

use super::refused::Refused;
use std::borrow::Cow;

/// The longest name, in characters: room for any real name with its titles, while a list of
/// every person (`GET /api/people`, `people list`) stays small.
pub const MAX_NAME_CHARS: usize = 200;

/// The characters a name may not hold (see the module's documentation).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'        // line and paragraph separators
            | '\u{202A}'..='\u{202E}'      // bidirectional embeddings and overrides
            | '\u{2066}'..='\u{2069}') // bidirectional isolates
}

/// A name as given, checked and trimmed of surrounding white space: not empty, at most
/// [`MAX_NAME_CHARS`] characters, no character a terminal would act on, and not a number (names
/// are given where ids are, so one that reads as an id would be ambiguous).
pub fn clean(name: &str) -> Result<String, Refused> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Refused::Invalid("a person's name cannot be empty".into()));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Refused::Invalid(format!(
            "a name is at most {MAX_NAME_CHARS} characters; this one has {chars}"
        )));
    }
    let mut bad: Vec<char> = Vec::new();
    for c in name.chars().filter(|&c| unprintable(c)) {
        if !bad.contains(&c) {
            bad.push(c);
        }
    }
    if !bad.is_empty() {
        let listed: Vec<String> = bad.iter().map(|&c| format!("U+{:04X}", c as u32)).collect();
        return Err(Refused::Invalid(format!(
            "a name cannot hold control characters (terminals act on them); this one has {}",
            listed.join(", ")
        )));
    }
    if name.parse::<i64>().is_ok() {
        return Err(Refused::Invalid(format!(
            "{name:?} reads as a person id: choose a name that is not a number"
        )));
    }
    Ok(name.to_string())
}

/// A stored name as a terminal may show it: each character [`clean`] refuses written as a Rust
/// escape (`\u{1b}`), everything else as it is. Names stored before the rule may hold them.
pub fn printable(name: &str) -> Cow<'_, str> {
    if !name.chars().any(unprintable) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(
        name.chars()
            .map(|c| {
                if unprintable(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(name: &str) -> String {
        clean(name).unwrap_err().to_string()
    }

    #[test]
    fn names_are_trimmed_and_refused_with_the_reason() {
        assert_eq!(clean("  Anna Maria \t").unwrap(), "Anna Maria");
        assert_eq!(clean("José Ñúñez 李小龍").unwrap(), "José Ñúñez 李小龍");
        assert!(refusal(" \n ").contains("cannot be empty"));
        assert!(refusal("42").contains("reads as a person id"));
        let escape = refusal("\u{1b}]0;owned\u{7}Eve");
        assert!(
            escape.contains("U+001B") && escape.contains("U+0007"),
            "{escape}"
        );
        assert!(refusal("Eve\0").contains("U+0000"));
        assert!(refusal("Eve\u{202E}evE").contains("U+202E"));
        assert!(
            refusal("Eve\u{9b}31m").contains("U+009B"),
            "C1 controls too"
        );
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        assert!(refusal(&long).contains("at most 200 characters; this one has 201"));
        // The limit counts characters, not bytes.
        assert!(clean(&"é".repeat(MAX_NAME_CHARS)).is_ok());
    }

    #[test]
    fn a_stored_name_is_printed_with_its_controls_escaped() {
        assert!(matches!(printable("Anna"), Cow::Borrowed("Anna")));
        assert_eq!(
            printable("\u{1b}[31mEve\u{7}\0"),
            "\\u{1b}[31mEve\\u{7}\\u{0}"
        );
        assert_eq!(printable("Zoë\u{2066}"), "Zoë\\u{2066}");
    }
}
