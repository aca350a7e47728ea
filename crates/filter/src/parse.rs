//! The lexer and recursive-descent parser. Tokens are read on demand, so the
//! first error in reading order is the one reported.
//!
//! ```text
//! filter    := or
//! or        := and ("OR" and)*
//! and       := unary ("AND" unary)*
//! unary     := "NOT" unary | "(" or ")" | condition
//! condition := operand ("=" | "!=" | "eq" | "ne" | ["NOT"] "LIKE") STRING
//!            | operand ["NOT"] "IN" "(" STRING ("," STRING)* ")"
//! ```

use super::eval::{Expr, LikePattern, Operand};
use super::{Field, FilterError, MAX_FILTER_LEN, MAX_NESTING};

const METADATA_PREFIX: &str = "resource_metadata.";

/// A place in the source: 1-based line, and 1-based column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

fn error(pos: Pos, message: impl Into<String>) -> FilterError {
    FilterError {
        column: pos.column,
        line: pos.line,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A field name or a keyword, told apart by the parser.
    Word,
    Str(String),
    LParen,
    RParen,
    Comma,
    Equals,
    NotEquals,
    End,
}

#[derive(Debug, Clone)]
struct Token<'a> {
    tok: Tok,
    /// The token as written.
    text: &'a str,
    pos: Pos,
}

impl Token<'_> {
    fn keyword(&self) -> Option<Keyword> {
        if self.tok != Tok::Word {
            return None;
        }
        Keyword::ALL
            .into_iter()
            .find(|(word, _)| self.text.eq_ignore_ascii_case(word))
            .map(|(_, kw)| kw)
    }

    /// The token as an error message names it.
    fn describe(&self) -> String {
        if self.tok == Tok::End {
            return "the end of the filter".to_owned();
        }
        let shown = shorten(self.text);
        match self.tok {
            Tok::Str(_) => format!("the string {shown}"),
            _ => format!("`{shown}`"),
        }
    }
}

/// `text`, cut short for quoting in a message: hostile input can make one
/// token most of 64 KiB.
fn shorten(text: &str) -> String {
    let mut shown: String = text.chars().take(40).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    Like,
    In,
    Eq,
    Ne,
}

impl Keyword {
    const ALL: [(&'static str, Keyword); 7] = [
        ("and", Keyword::And),
        ("or", Keyword::Or),
        ("not", Keyword::Not),
        ("like", Keyword::Like),
        ("in", Keyword::In),
        ("eq", Keyword::Eq),
        ("ne", Keyword::Ne),
    ];
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    offset: usize,
    pos: Pos,
    /// Just past the last token: where "end of the filter" errors point,
    /// rather than at trailing whitespace or an empty last line.
    end: Pos,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Lexer<'a> {
        let start = Pos { line: 1, column: 1 };
        Lexer {
            src,
            offset: 0,
            pos: start,
            end: start,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.offset..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn next_token(&mut self) -> Result<Token<'a>, FilterError> {
        while self.peek_char().is_some_and(char::is_whitespace) {
            self.bump();
        }
        let start = self.offset;
        let pos = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Token {
                tok: Tok::End,
                text: "",
                pos: self.end,
            });
        };
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => Tok::Equals,
            '!' if self.peek_char() == Some('=') => {
                self.bump();
                Tok::NotEquals
            }
            '!' => return Err(error(pos, "unexpected `!`: did you mean `!=`?")),
            '"' => self.string(pos)?,
            '\'' => {
                return Err(error(
                    pos,
                    "strings are written in double quotes (\"...\"), not single quotes",
                ));
            }
            // Words take any letters so a misspelt field is reported whole.
            c if c.is_alphabetic() || c == '_' => {
                while self
                    .peek_char()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                {
                    self.bump();
                }
                Tok::Word
            }
            c => return Err(error(pos, format!("unexpected character `{c}`"))),
        };
        self.end = self.pos;
        Ok(Token {
            tok,
            text: &self.src[start..self.offset],
            pos,
        })
    }

    /// The rest of a string whose opening quote, at `open`, was just read.
    fn string(&mut self, open: Pos) -> Result<Tok, FilterError> {
        let unterminated = || error(open, "unterminated string");
        // Panoptes' strings could not span lines either; refusing them keeps a
        // missing quote from swallowing the rest of the filter.
        let multiline = || {
            error(
                open,
                "unterminated string: a string cannot span lines (write `\\n` for a newline)",
            )
        };
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err(unterminated()),
                Some('"') => return Ok(Tok::Str(value)),
                Some('\n') => return Err(multiline()),
                Some('\\') => match self.bump() {
                    None => return Err(unterminated()),
                    Some('\n') => return Err(multiline()),
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    // `\"`, `\\`, and any other escaped character stand for themselves.
                    Some(c) => value.push(c),
                },
                Some(c) => value.push(c),
            }
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token<'a>>,
    /// Open parentheses and prefix `NOT`s around the current point.
    depth: usize,
}

/// Parses a whole filter.
pub(crate) fn parse(text: &str) -> Result<Expr, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(error(
            Pos { line: 1, column: 1 },
            format!(
                "filter is too long: {} bytes (at most {MAX_FILTER_LEN})",
                text.len()
            ),
        ));
    }
    let mut parser = Parser {
        lexer: Lexer::new(text),
        peeked: None,
        depth: 0,
    };
    let first = parser.peek()?;
    if first.tok == Tok::End {
        return Err(error(
            first.pos,
            "empty filter: write a condition such as `resource_class = \"network\"`",
        ));
    }
    let expr = parser.or()?;
    let next = parser.next()?;
    match next.tok {
        Tok::End => Ok(expr),
        Tok::RParen => Err(error(next.pos, "unexpected `)` with no matching `(`")),
        _ => Err(error(
            next.pos,
            format!(
                "unexpected {} after a complete condition: expected `AND`, `OR` or the end of the filter",
                next.describe()
            ),
        )),
    }
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<&Token<'a>, FilterError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn next(&mut self) -> Result<Token<'a>, FilterError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    /// Consumes the next token if it is `keyword`.
    fn eat(&mut self, keyword: Keyword) -> Result<bool, FilterError> {
        if self.peek()?.keyword() == Some(keyword) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let first = self.and()?;
        if !self.eat(Keyword::Or)? {
            return Ok(first);
        }
        let mut items = vec![first, self.and()?];
        while self.eat(Keyword::Or)? {
            items.push(self.and()?);
        }
        Ok(Expr::Or(items))
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let first = self.unary()?;
        if !self.eat(Keyword::And)? {
            return Ok(first);
        }
        let mut items = vec![first, self.unary()?];
        while self.eat(Keyword::And)? {
            items.push(self.unary()?);
        }
        Ok(Expr::And(items))
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let token = self.next()?;
        match (&token.tok, token.keyword()) {
            (Tok::Word, Some(Keyword::Not)) => {
                self.enter(token.pos)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            (Tok::LParen, _) => {
                self.enter(token.pos)?;
                if self.peek()?.tok == Tok::RParen {
                    return Err(error(token.pos, "empty parentheses"));
                }
                let inner = self.or()?;
                let close = self.next()?;
                if close.tok != Tok::RParen {
                    return Err(error(
                        close.pos,
                        format!(
                            "expected `)` to close the `(` at line {}, column {}, found {}",
                            token.pos.line,
                            token.pos.column,
                            close.describe()
                        ),
                    ));
                }
                self.depth -= 1;
                Ok(inner)
            }
            (Tok::Word, Some(_)) => Err(error(
                token.pos,
                format!(
                    "unexpected `{}`: expected a condition (a field, `NOT` or `(`)",
                    token.text
                ),
            )),
            (Tok::Word, None) => self.condition(&token),
            _ => Err(error(
                token.pos,
                format!(
                    "expected a condition (a field, `NOT` or `(`), found {}",
                    token.describe()
                ),
            )),
        }
    }

    fn enter(&mut self, pos: Pos) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(error(
                pos,
                format!("nested too deeply: at most {MAX_NESTING} levels of `(` and `NOT`"),
            ));
        }
        Ok(())
    }

    /// A comparison, from its field onwards.
    fn condition(&mut self, field: &Token<'a>) -> Result<Expr, FilterError> {
        let operand = operand(field)?;
        let op = self.next()?;
        let compare = |negated: bool, value: String| Expr::Equals {
            operand: operand.clone(),
            negated,
            value,
        };
        match (&op.tok, op.keyword()) {
            (Tok::Equals, _) | (Tok::Word, Some(Keyword::Eq)) => {
                Ok(compare(false, self.string_after(&op)?))
            }
            (Tok::NotEquals, _) | (Tok::Word, Some(Keyword::Ne)) => {
                Ok(compare(true, self.string_after(&op)?))
            }
            (Tok::Word, Some(Keyword::Like)) => self.like(operand, false, &op),
            (Tok::Word, Some(Keyword::In)) => self.list(operand, false, &op),
            (Tok::Word, Some(Keyword::Not)) => {
                let next = self.next()?;
                match next.keyword() {
                    Some(Keyword::Like) => self.like(operand, true, &next),
                    Some(Keyword::In) => self.list(operand, true, &next),
                    _ => Err(error(
                        next.pos,
                        format!(
                            "expected `LIKE` or `IN` after `{}`, found {}",
                            op.text,
                            next.describe()
                        ),
                    )),
                }
            }
            _ => Err(error(
                op.pos,
                format!(
                    "expected an operator after `{}` (`=`, `!=`, `eq`, `ne`, `LIKE`, `NOT LIKE`, `IN` or `NOT IN`), found {}",
                    field.text,
                    op.describe()
                ),
            )),
        }
    }

    fn like(&mut self, operand: Operand, negated: bool, op: &Token) -> Result<Expr, FilterError> {
        let pattern = LikePattern::new(self.string_after(op)?);
        Ok(Expr::Like {
            operand,
            negated,
            pattern,
        })
    }

    /// The string that must follow operator `op`.
    fn string_after(&mut self, op: &Token) -> Result<String, FilterError> {
        let token = self.next()?;
        match token.tok {
            Tok::Str(value) => Ok(value),
            Tok::Word if token.keyword().is_none() => Err(error(
                token.pos,
                format!(
                    "expected a string after `{}`, found {} (values are written in double quotes)",
                    op.text,
                    token.describe()
                ),
            )),
            _ => Err(error(
                token.pos,
                format!(
                    "expected a string after `{}`, found {}",
                    op.text,
                    token.describe()
                ),
            )),
        }
    }

    /// `("a", "b", ...)` after `IN` (the token `op`).
    fn list(&mut self, operand: Operand, negated: bool, op: &Token) -> Result<Expr, FilterError> {
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(error(
                open.pos,
                format!(
                    "expected `(` after `{}`, found {}",
                    op.text,
                    open.describe()
                ),
            ));
        }
        let mut items = Vec::new();
        loop {
            let item = self.next()?;
            match item.tok {
                Tok::Str(value) => items.push(value),
                Tok::RParen if items.is_empty() => {
                    return Err(error(open.pos, "empty IN list: give at least one string"));
                }
                Tok::RParen => return Err(error(item.pos, "trailing `,` in the IN list")),
                _ => {
                    return Err(error(
                        item.pos,
                        format!(
                            "expected a string in the IN list, found {}",
                            item.describe()
                        ),
                    ));
                }
            }
            let after = self.next()?;
            match after.tok {
                Tok::Comma => {}
                Tok::RParen => break,
                _ => {
                    return Err(error(
                        after.pos,
                        format!(
                            "expected `,` or `)` in the IN list, found {}",
                            after.describe()
                        ),
                    ));
                }
            }
        }
        Ok(Expr::In {
            operand,
            negated,
            items,
        })
    }
}

/// The field or metadata key a word names.
fn operand(token: &Token) -> Result<Operand, FilterError> {
    let name = token.text;
    if let Some(field) = Field::from_name(name) {
        return Ok(Operand::Field(field));
    }
    let prefixed = name
        .get(..METADATA_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(METADATA_PREFIX));
    if let Some(key) = prefixed.then(|| &name[METADATA_PREFIX.len()..]) {
        let key_pos = Pos {
            line: token.pos.line,
            column: token.pos.column + METADATA_PREFIX.len(),
        };
        if key.is_empty() {
            return Err(error(
                key_pos,
                "expected a metadata key after `resource_metadata.`",
            ));
        }
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(error(
                key_pos,
                format!(
                    "invalid metadata key `{}`: keys are ASCII letters, digits and `_`, not starting with a digit",
                    shorten(key)
                ),
            ));
        }
        // Panoptes lower-cases the key (pyparsing's `downcaseTokens`).
        return Ok(Operand::Metadata(key.to_ascii_lowercase()));
    }
    if name.eq_ignore_ascii_case("resource_metadata") {
        return Err(error(
            token.pos,
            "`resource_metadata` needs a key, as in `resource_metadata.os_version`",
        ));
    }
    let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    Err(error(
        token.pos,
        format!(
            "unknown field `{}` (known: {}, resource_metadata.<key>)",
            shorten(name),
            known.join(", ")
        ),
    ))
}
