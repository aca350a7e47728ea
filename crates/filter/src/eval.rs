//! The compiled form of a filter, its evaluation under SQL's three-valued
//! logic, SQLite's `LIKE`, and the canonical rendering.

use std::fmt;

use super::{Field, FilterSubject};

/// SQL truth values: a comparison with a missing metadata key (SQL `NULL`)
/// is `Unknown`, and `Unknown` propagates as in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    False,
    Unknown,
    True,
}

impl Truth {
    fn from_bool(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }

    fn not(self) -> Truth {
        match self {
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
            Truth::True => Truth::False,
        }
    }
}

/// What a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operand {
    Field(Field),
    Metadata(String),
}

impl Operand {
    fn value<'s>(&self, subject: &'s impl FilterSubject) -> Option<&'s str> {
        match self {
            Operand::Field(f) => Some(subject.field(*f)),
            Operand::Metadata(key) => subject.metadata(key),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Field(field) => f.write_str(field.name()),
            Operand::Metadata(key) => write!(f, "resource_metadata.{key}"),
        }
    }
}

/// A parsed expression. `And`/`Or` hold every operand of a chain (at least
/// two) rather than nesting pairs, so a long chain costs no recursion depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `=` (`negated: false`) or `!=`.
    Equals {
        operand: Operand,
        negated: bool,
        value: String,
    },
    Like {
        operand: Operand,
        negated: bool,
        pattern: LikePattern,
    },
    In {
        operand: Operand,
        negated: bool,
        items: Vec<String>,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    pub(crate) fn eval(&self, subject: &impl FilterSubject) -> Truth {
        // A comparison with NULL is UNKNOWN, negated or not.
        let compare = |operand: &Operand, negated: bool, test: &dyn Fn(&str) -> bool| match operand
            .value(subject)
        {
            None => Truth::Unknown,
            Some(v) => Truth::from_bool(test(v) != negated),
        };
        match self {
            Expr::Equals {
                operand,
                negated,
                value,
            } => compare(operand, *negated, &|v| v == value),
            Expr::Like {
                operand,
                negated,
                pattern,
            } => compare(operand, *negated, &|v| pattern.matches(v)),
            Expr::In {
                operand,
                negated,
                items,
            } => compare(operand, *negated, &|v| items.iter().any(|i| i == v)),
            Expr::Not(inner) => inner.eval(subject).not(),
            // FALSE wins an AND and TRUE wins an OR outright; otherwise any
            // UNKNOWN leaves the result UNKNOWN.
            Expr::And(items) => {
                let mut result = Truth::True;
                for item in items {
                    match item.eval(subject) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => result = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                result
            }
            Expr::Or(items) => {
                let mut result = Truth::False;
                for item in items {
                    match item.eval(subject) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => result = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                result
            }
        }
    }

    /// Binding strength, for rendering only the parentheses needed.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(_) => 0,
            Expr::And(_) => 1,
            _ => 2,
        }
    }

    fn fmt_chain(f: &mut fmt::Formatter<'_>, items: &[Expr], chain: &Expr) -> fmt::Result {
        let keyword = if matches!(chain, Expr::Or(_)) {
            "OR"
        } else {
            "AND"
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                write!(f, " {keyword} ")?;
            }
            // An operand binding no tighter than the chain was grouped
            // explicitly (`a AND (b AND c)`); keeping its parentheses makes
            // the rendering parse back to the same structure.
            if item.precedence() <= chain.precedence() {
                write!(f, "({item})")?;
            } else {
                write!(f, "{item}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Equals {
                operand,
                negated,
                value,
            } => {
                let op = if *negated { "!=" } else { "=" };
                write!(f, "{operand} {op} {}", Quoted(value))
            }
            Expr::Like {
                operand,
                negated,
                pattern,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{operand} {not}LIKE {}", Quoted(pattern.source()))
            }
            Expr::In {
                operand,
                negated,
                items,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{operand} {not}IN (")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Quoted(item))?;
                }
                f.write_str(")")
            }
            Expr::Not(inner) => {
                if inner.precedence() < 2 {
                    write!(f, "NOT ({inner})")
                } else {
                    write!(f, "NOT {inner}")
                }
            }
            Expr::And(items) => Expr::fmt_chain(f, items, self),
            Expr::Or(items) => Expr::fmt_chain(f, items, self),
        }
    }
}

/// A string rendered as a filter literal.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// A compiled `LIKE` pattern with SQLite's semantics: `%` matches any run of
/// characters, `_` exactly one, ASCII letters match either case, nothing is
/// an escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    AnyRun,
    AnyOne,
    /// Stored ASCII-lower-cased; compared against the lower-cased subject.
    Char(char),
}

impl LikePattern {
    pub(crate) fn new(source: String) -> LikePattern {
        let mut parts: Vec<Part> = Vec::with_capacity(source.len());
        for c in source.chars() {
            let part = match c {
                '%' => Part::AnyRun,
                '_' => Part::AnyOne,
                c => Part::Char(c.to_ascii_lowercase()),
            };
            // `%%` is `%`; collapsing keeps backtracking cheap.
            if !(part == Part::AnyRun && parts.last() == Some(&Part::AnyRun)) {
                parts.push(part);
            }
        }
        LikePattern { source, parts }
    }

    /// The classic greedy wildcard match: on a mismatch, only the most recent
    /// `%` is retried one character further, since any earlier `%` could not
    /// do better. That bounds the work by pattern length × text length, with
    /// no exponential backtracking.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let parts = &self.parts;
        let mut p = 0; // index into parts
        let mut t = 0; // byte offset into text
        // After the last `%` seen: the part after it and where its run ends.
        let mut retry: Option<(usize, usize)> = None;
        loop {
            let Some(c) = text[t..].chars().next() else {
                // Text used up: only `%`s may remain.
                return parts[p..].iter().all(|&part| part == Part::AnyRun);
            };
            match parts.get(p) {
                Some(Part::AnyRun) => {
                    p += 1;
                    retry = Some((p, t));
                    continue;
                }
                Some(Part::AnyOne) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                Some(Part::Char(want)) if *want == c.to_ascii_lowercase() => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                _ => {}
            }
            // Mismatch (or pattern used up with text left): let the last `%`
            // swallow one more character and retry from just after it.
            let Some((after, run_end)) = retry else {
                return false;
            };
            let Some(swallowed) = text[run_end..].chars().next() else {
                return false;
            };
            let run_end = run_end + swallowed.len_utf8();
            retry = Some((after, run_end));
            p = after;
            t = run_end;
        }
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }
}
