//! `vigil:plugin/config`: read-only, typed access to the plugin's own ini
//! sections. The sections are parsed once at load and shared by every run.

use vigil_wit::HostCalls;
use vigil_wit::vigil::plugin::config::{Entry, Host, Value};
use wasmtime::component::{HasData, Linker};

/// A value as the host inferred it from the ini text.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl ConfigValue {
    /// Infers the type of a written value; returns the raw text (quotes
    /// removed) and the value. Double-quoted text is always text.
    pub fn infer(written: &str) -> (String, ConfigValue) {
        let written = written.trim();
        if written.len() >= 2 && written.starts_with('"') && written.ends_with('"') {
            let inner = written[1..written.len() - 1].to_owned();
            return (inner.clone(), ConfigValue::Text(inner));
        }
        let value = match written.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => ConfigValue::Boolean(true),
            "false" | "no" | "off" => ConfigValue::Boolean(false),
            _ => {
                if let Ok(i) = written.parse::<i64>() {
                    ConfigValue::Integer(i)
                } else if let Some(x) = parse_float(written) {
                    ConfigValue::Float(x)
                } else {
                    ConfigValue::Text(written.to_owned())
                }
            }
        };
        (written.to_owned(), value)
    }
}

/// Decimal floats only: Rust's parser also takes `inf` and `NaN`, which in
/// an ini file are far more likely to be words.
fn parse_float(text: &str) -> Option<f64> {
    let decimal = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    decimal
        .then(|| text.parse::<f64>().ok())
        .flatten()
        .filter(|x| x.is_finite())
}

#[derive(Debug, Clone, PartialEq)]
pub struct SectionEntry {
    pub key: String,
    pub raw: String,
    pub value: ConfigValue,
}

/// The sections a plugin can read, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSections {
    sections: Vec<(String, Vec<SectionEntry>)>,
}

impl PluginSections {
    pub fn new(sections: Vec<(String, Vec<SectionEntry>)>) -> Self {
        PluginSections { sections }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(name, _)| name.as_str())
    }

    pub fn section(&self, name: &str) -> &[SectionEntry] {
        self.sections
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, entries)| entries.as_slice())
            .unwrap_or(&[])
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&SectionEntry> {
        let key = key.to_lowercase();
        self.section(section).iter().find(|e| e.key == key)
    }
}

fn to_wit(entry: &SectionEntry) -> Entry {
    Entry {
        key: entry.key.clone(),
        raw: entry.raw.clone(),
        value: match &entry.value {
            ConfigValue::Text(s) => Value::Text(s.clone()),
            ConfigValue::Integer(i) => Value::Integer(*i),
            ConfigValue::Float(x) => Value::Float(*x),
            ConfigValue::Boolean(b) => Value::Boolean(*b),
        },
    }
}

/// What the `config` import sees of a run: the plugin's own sections.
pub struct Config<'a> {
    pub calls: &'a mut HostCalls,
    pub sections: &'a PluginSections,
}

/// `HasData` for the `config` import.
pub struct ConfigCapability;

impl HasData for ConfigCapability {
    type Data<'a> = Config<'a>;
}

/// Adds the `config` import; `view` picks the run's parts out of `T`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> Config<'_>,
) -> wasmtime::Result<()> {
    vigil_wit::vigil::plugin::config::add_to_linker::<T, ConfigCapability>(linker, view)
}

impl Host for Config<'_> {
    fn sections(&mut self) -> wasmtime::Result<Vec<String>> {
        self.calls.charge()?;
        Ok(self.sections.names().map(str::to_owned).collect())
    }

    fn section(&mut self, name: String) -> wasmtime::Result<Vec<Entry>> {
        self.calls.charge()?;
        Ok(self.sections.section(&name).iter().map(to_wit).collect())
    }

    fn get(&mut self, section: String, key: String) -> wasmtime::Result<Option<Entry>> {
        self.calls.charge()?;
        Ok(self.sections.get(&section, &key).map(to_wit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_types_like_an_operator_reads_them() {
        assert_eq!(ConfigValue::infer("60").1, ConfigValue::Integer(60));
        assert_eq!(ConfigValue::infer("-3").1, ConfigValue::Integer(-3));
        assert_eq!(ConfigValue::infer("0.5").1, ConfigValue::Float(0.5));
        assert_eq!(ConfigValue::infer("Yes").1, ConfigValue::Boolean(true));
        assert_eq!(ConfigValue::infer("off").1, ConfigValue::Boolean(false));
        assert_eq!(ConfigValue::infer("inf").1, ConfigValue::Text("inf".into()));
        assert_eq!(ConfigValue::infer("NaN").1, ConfigValue::Text("NaN".into()));
        assert_eq!(
            ConfigValue::infer("self:interface").1,
            ConfigValue::Text("self:interface".into())
        );
        let (raw, value) = ConfigValue::infer("\"42\"");
        assert_eq!(
            (raw.as_str(), value),
            ("42", ConfigValue::Text("42".into()))
        );
    }

    #[test]
    fn lookups_ignore_case_of_sections_and_keys() {
        let sections = PluginSections::new(vec![(
            "snmp".into(),
            vec![SectionEntry {
                key: "timeout".into(),
                raw: "5".into(),
                value: ConfigValue::Integer(5),
            }],
        )]);
        assert_eq!(
            sections.get("SNMP", "Timeout").map(|e| &e.value),
            Some(&ConfigValue::Integer(5))
        );
        assert!(sections.get("snmp", "retries").is_none());
        assert!(sections.section("absent").is_empty());
    }
}
