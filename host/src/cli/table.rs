//! Plain-text tables for the read commands: every column as wide as its
//! widest cell (so a 60-character resource id or an IPv6 endpoint such as
//! `[2001:db8::1]:161` never runs into the next column, and nothing is
//! truncated), two spaces between columns, the last column unpadded.
//!
//! Cells are text plugins chose (ids, endpoints, dimension values), so
//! control characters are shown escaped (`\n`, `\u{1b}`): a resource id
//! with a newline or an escape sequence cannot break a row or the
//! operator's terminal.

use std::fmt::Write as _;

/// A table being filled row by row, then printed at once.
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

/// `text` with control characters escaped.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the columns at these indexes (numbers).
    pub fn right_align(mut self, columns: &[usize]) -> Table {
        for &column in columns {
            if let Some(right) = self.right.get_mut(column) {
                *right = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.iter().map(|c| clean(c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header, each ending
    /// in a newline.
    pub fn render(&self) -> String {
        let width = |c: &String| c.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(width).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let last = self.headers.len().saturating_sub(1);
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - width(cell);
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else if i == last {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_longest_cell_and_nothing_is_cut() {
        let long_id = "x".repeat(60);
        let mut table = Table::new(&["ID", "ENDPOINT", "RUNS", "PLUGIN"]).right_align(&[2]);
        table.row(vec![
            long_id.clone(),
            "[2001:db8::1]:161".into(),
            "7".into(),
            "beat".into(),
        ]);
        table.row(vec![
            "sw1".into(),
            "10.0.0.1".into(),
            "12345".into(),
            "".into(),
        ]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                // RUNS is right-aligned over its widest cell, 12345.
                format!("ID{}  ENDPOINT            RUNS  PLUGIN", " ".repeat(58)),
                format!("{long_id}  [2001:db8::1]:161      7  beat"),
                format!("sw1{}  10.0.0.1           12345", " ".repeat(57)),
            ]
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut table = Table::new(&["ID", "X"]);
        table.row(vec!["evil\nid\u{1b}[31m".into(), "y".into()]);
        let text = table.render();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("evil\\nid\\u{1b}[31m  y"), "{text}");
    }
}
