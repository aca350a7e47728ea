//! Draws a dashboard's layout as an SVG picture: one rectangle per panel at
//! its grid position (24 columns, 30 px grid rows, as Grafana lays them
//! out), labelled with its title and type. For documentation and for
//! reviewing a generated dashboard without a Grafana at hand.
//!
//! It reads dashboard JSON loosely (only titles, types and grid
//! positions), so it also draws dashboards exported from Grafana, bare or
//! wrapped in `{"dashboard": ...}` as the HTTP API returns them.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::grafana::GRID_COLUMNS;

/// Pixels per grid column.
const COLUMN: f64 = 40.0;
/// Pixels per grid row (Grafana's cell height).
const ROW: f64 = 30.0;
/// Space between panels.
const GAP: f64 = 4.0;
const MARGIN: f64 = 16.0;
/// Room for the dashboard title above the grid.
const HEADER: f64 = 44.0;
/// Average width of a character of the 12 px label font, for truncation.
const CHAR_WIDTH: f64 = 6.6;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("not a Grafana dashboard: {0}")]
    NotADashboard(String),
    #[error("panels[{index}] ({title:?}) has no gridPos with integer x, y, w, h")]
    NoGridPos { index: usize, title: String },
}

#[derive(Deserialize)]
struct DashboardView {
    #[serde(default)]
    title: String,
    #[serde(default)]
    panels: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PanelView {
    #[serde(default)]
    title: String,
    #[serde(rename = "type", default)]
    kind: String,
    grid_pos: Option<GridView>,
}

#[derive(Deserialize)]
struct GridView {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// Escapes text for XML content and attribute values, dropping characters
/// XML 1.0 does not allow at all.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Fill and stroke colours per panel type.
fn colors(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "row" => ("#e5e7eb", "#6b7280"),
        "timeseries" => ("#dbeafe", "#2563eb"),
        "stat" => ("#dcfce7", "#16a34a"),
        "state-timeline" => ("#fef3c7", "#d97706"),
        "text" => ("#f3f4f6", "#9ca3af"),
        _ => ("#fce7f3", "#db2777"),
    }
}

/// The SVG picture of a dashboard given as JSON.
pub fn render(dashboard: &Value) -> Result<String, LayoutError> {
    // The HTTP API wraps the dashboard: {"dashboard": {...}, "meta": {...}}.
    let dashboard = match dashboard.get("dashboard") {
        Some(inner) if inner.get("panels").is_some() => inner,
        _ => dashboard,
    };
    let view = DashboardView::deserialize(dashboard)
        .map_err(|e| LayoutError::NotADashboard(e.to_string()))?;
    let mut panels = Vec::with_capacity(view.panels.len());
    for (index, value) in view.panels.iter().enumerate() {
        let panel = PanelView::deserialize(value)
            .map_err(|e| LayoutError::NotADashboard(format!("panels[{index}]: {e}")))?;
        let Some(grid) = &panel.grid_pos else {
            return Err(LayoutError::NoGridPos {
                index,
                title: panel.title,
            });
        };
        let (x, y, w, h) = (grid.x, grid.y, grid.w, grid.h);
        panels.push((panel.title, panel.kind, x, y, w, h));
    }

    let rows = panels.iter().map(|p| p.3 + p.5).max().unwrap_or(0);
    let width = 2.0 * MARGIN + f64::from(GRID_COLUMNS) * COLUMN;
    let height = HEADER + f64::from(rows) * ROW + MARGIN;
    let mut svg = String::new();
    // `write!` to a String cannot fail; its Result is ignored throughout.
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect class="background" x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{MARGIN}" y="28" font-size="18" font-weight="bold" fill="#111827">{}</text>"##,
        xml_escape(&fit(&view.title, 120))
    );
    for (title, kind, x, y, w, h) in &panels {
        let (fill, stroke) = colors(kind);
        let px = MARGIN + f64::from(*x) * COLUMN + GAP / 2.0;
        let py = HEADER + f64::from(*y) * ROW + GAP / 2.0;
        let pw = (f64::from(*w) * COLUMN - GAP).max(1.0);
        let ph = (f64::from(*h) * ROW - GAP).max(1.0);
        let max_chars = ((pw - 12.0) / CHAR_WIDTH).max(1.0) as usize;
        let _ = writeln!(svg, "<g>");
        let _ = writeln!(
            svg,
            "<title>{} ({})</title>",
            xml_escape(title),
            xml_escape(kind)
        );
        let _ = writeln!(
            svg,
            r#"<rect class="panel panel-{}" x="{px}" y="{py}" width="{pw}" height="{ph}" rx="3" fill="{fill}" stroke="{stroke}"/>"#,
            xml_escape(kind)
        );
        let bold = if kind == "row" {
            r#" font-weight="bold""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" font-size="12"{bold} fill="#111827">{}</text>"##,
            px + 6.0,
            py + 17.0,
            xml_escape(&fit(title, max_chars))
        );
        if kind != "row" && ph > 40.0 {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" font-size="10" fill="#6b7280">{}</text>"##,
                px + 6.0,
                py + ph - 7.0,
                xml_escape(&fit(kind, max_chars))
            );
        }
        let _ = writeln!(svg, "</g>");
    }
    let _ = writeln!(svg, "</svg>");
    Ok(svg)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A small XML well-formedness check: balanced, properly nested tags,
    /// quoted attributes without raw `<` or `&`, valid entity references.
    /// Returns the number of elements per tag name.
    pub(crate) fn check_xml(text: &str) -> std::collections::BTreeMap<String, usize> {
        fn check_entities(text: &str) {
            let mut rest = text;
            while let Some(at) = rest.find('&') {
                let after = &rest[at + 1..];
                let end = after
                    .find(';')
                    .unwrap_or_else(|| panic!("bare & in {text:?}"));
                let name = &after[..end];
                let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                    || name
                        .strip_prefix('#')
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
                assert!(ok, "bad entity &{name}; in {text:?}");
                rest = &after[end + 1..];
            }
        }
        let mut counts = std::collections::BTreeMap::new();
        let mut stack: Vec<String> = Vec::new();
        let mut rest = text
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .expect("XML declaration");
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let content = &rest[..open];
            assert!(!content.contains('>'), "raw > in content {content:?}");
            check_entities(content);
            if stack.is_empty() {
                assert!(
                    content.trim().is_empty(),
                    "text outside the root: {content:?}"
                );
            }
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = &tag[..name_end];
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'),
                "bad tag name {name:?}"
            );
            // Attributes: name="value" pairs.
            let mut attrs = tag[name_end..].trim();
            let mut seen = std::collections::BTreeSet::new();
            while !attrs.is_empty() {
                let eq = attrs
                    .find("=\"")
                    .unwrap_or_else(|| panic!("bad attribute in <{tag}>"));
                let attr = &attrs[..eq];
                assert!(
                    attr.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                    "bad attribute name {attr:?}"
                );
                assert!(seen.insert(attr), "duplicate attribute {attr}");
                let value_end = attrs[eq + 2..].find('"').expect("unclosed attribute") + eq + 2;
                let value = &attrs[eq + 2..value_end];
                assert!(!value.contains('<'), "raw < in attribute {value:?}");
                check_entities(value);
                attrs = attrs[value_end + 1..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            *counts.entry(name.to_owned()).or_insert(0) += 1;
            if !self_closing {
                stack.push(name.to_owned());
            }
        }
        assert!(stack.is_empty(), "unclosed elements {stack:?}");
        assert!(rest.trim().is_empty(), "trailing text {rest:?}");
        assert_eq!(roots, 1, "one root element");
        counts
    }

    fn dashboard() -> Value {
        json!({
            "title": "Tom & Jerry's <dashboard>",
            "panels": [
                {"type": "row", "title": "row \"one\"", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
                {"type": "timeseries", "title": "a < b & c", "gridPos": {"x": 0, "y": 1, "w": 12, "h": 8}},
                {"type": "stat", "title": "x".repeat(300), "gridPos": {"x": 12, "y": 1, "w": 4, "h": 8}},
                {"type": "weird\"type", "title": "ctl\u{1}char", "gridPos": {"x": 16, "y": 1, "w": 8, "h": 3}},
            ]
        })
    }

    /// (x, y, width, height) of every panel rect, in order.
    fn rects(svg: &str) -> Vec<[f64; 4]> {
        svg.lines()
            .filter(|l| l.starts_with(r#"<rect class="panel"#))
            .map(|line| {
                let attr = |name: &str| -> f64 {
                    let start =
                        line.find(&format!(" {name}=\"")).expect("attribute") + name.len() + 3;
                    let end = line[start..].find('"').expect("end") + start;
                    line[start..end].parse().expect("number")
                };
                [attr("x"), attr("y"), attr("width"), attr("height")]
            })
            .collect()
    }

    #[test]
    fn one_rect_per_panel_at_its_grid_position() {
        let svg = render(&dashboard()).expect("renders");
        let counts = check_xml(&svg);
        assert_eq!(counts["svg"], 1);
        // One per panel, plus the background.
        assert_eq!(counts["rect"], 5, "{svg}");
        assert_eq!(counts["title"], 4);
        let rects = rects(&svg);
        assert_eq!(rects.len(), 4);
        for (rect, (x, y, w, h)) in
            rects
                .iter()
                .zip([(0, 0, 24, 1), (0, 1, 12, 8), (12, 1, 4, 8), (16, 1, 8, 3)])
        {
            let expected = [
                MARGIN + f64::from(x) * COLUMN + GAP / 2.0,
                HEADER + f64::from(y) * ROW + GAP / 2.0,
                f64::from(w) * COLUMN - GAP,
                f64::from(h) * ROW - GAP,
            ];
            assert_eq!(rect, &expected);
        }
    }

    #[test]
    fn titles_are_escaped_and_fitted() {
        let svg = render(&dashboard()).expect("renders");
        assert!(svg.contains("Tom &amp; Jerry&apos;s &lt;dashboard&gt;"));
        assert!(svg.contains("a &lt; b &amp; c"));
        assert!(svg.contains("row &quot;one&quot;"));
        assert!(svg.contains("panel-weird&quot;type"));
        assert!(svg.contains("ctlchar"));
        assert!(svg.contains('…'), "long titles are cut");
        // The full title stays in the tooltip; the label is cut.
        let labels: Vec<&str> = svg.lines().filter(|l| l.starts_with("<text")).collect();
        assert!(
            labels.iter().all(|l| !l.contains(&"x".repeat(100))),
            "{labels:#?}"
        );
        assert!(svg.contains(&format!("<title>{} (stat)</title>", "x".repeat(300))));
    }

    #[test]
    fn api_wrapped_dashboards_render_and_bad_input_is_refused() {
        let wrapped = json!({"dashboard": dashboard(), "meta": {}});
        assert_eq!(
            render(&wrapped).expect("renders"),
            render(&dashboard()).expect("renders")
        );
        let error =
            render(&json!({"panels": [{"title": "t", "type": "stat"}]})).expect_err("no gridPos");
        assert_eq!(
            error.to_string(),
            "panels[0] (\"t\") has no gridPos with integer x, y, w, h"
        );
        assert!(render(&json!({"panels": 3})).is_err());
        assert!(render(&json!([1, 2])).is_err());
    }

    #[test]
    fn well_formedness_checker_catches_defects() {
        let bad = [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a><b></a></b>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>x & y</a>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a t=\"<\"/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a t='x'/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/><b/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>",
        ];
        for text in bad {
            let result = std::panic::catch_unwind(|| check_xml(text));
            assert!(result.is_err(), "accepted {text}");
        }
    }
}
