//! `vigil plugins new NAME --kind KIND`: writes a plugin crate that builds
//! and loads as it is.
//!
//! What is generated, in `DIR/NAME/` (`--dir`, default the current
//! directory; an existing `NAME/` is refused, never overwritten):
//!
//! * `Cargo.toml`: a `cdylib` (+ `rlib`, for `cargo test`) depending on the
//!   SDK by path, release profile tuned for small components, and an empty
//!   `[workspace]` so the crate builds wherever it is put;
//! * `src/lib.rs`: the kind's trait implemented with the SDK and exported
//!   with `export!`, the logic kept in a function free of host calls, and
//!   unit tests of it (`cargo test` runs them natively). Polling reads
//!   sysUpTime and ifOperStatus over SNMP; enrichment walks ifDescr;
//!   discovery reads devices from its ini section; analysis reports
//!   endpoint moves;
//! * `NAME.vigil-plugin`: the plugin file, `Module` pointing at
//!   `target/wasm32-wasip2/release/<crate>.wasm`, so `vigil plugins check`
//!   and `vigil plugins test` work from the crate directory right after
//!   `cargo build --release --target wasm32-wasip2`;
//! * `.gitignore`.
//!
//! The SDK is found at `--sdk PATH` (or `$VIGIL_SDK`), else at the `sdk/`
//! of the source tree this vigil was built from, when it still exists; the
//! path is written absolute. The templates are compiled into the binary
//! (`templates/`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");
const GITIGNORE: &str = include_str!("templates/gitignore.in");
const POLLING: &str = include_str!("templates/polling.rs");
const ENRICHMENT: &str = include_str!("templates/enrichment.rs");
const DISCOVERY: &str = include_str!("templates/discovery.rs");
const ANALYSIS: &str = include_str!("templates/analysis.rs");
const ENDPOINTS: &str = include_str!("templates/endpoints.rs");

/// The SDK of the source tree this binary was built from.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");
/// Longest plugin name accepted.
const MAX_NAME: usize = 64;

/// Which kind of plugin to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplateKind {
    Discovery,
    Enrichment,
    Polling,
    Analysis,
    Endpoints,
}

impl TemplateKind {
    fn name(self) -> &'static str {
        match self {
            TemplateKind::Discovery => "discovery",
            TemplateKind::Enrichment => "enrichment",
            TemplateKind::Polling => "polling",
            TemplateKind::Analysis => "analysis",
            TemplateKind::Endpoints => "endpoints",
        }
    }
}

/// `vigil plugins new` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: the crate's and (with `-` as `_`) the plugin's.
    /// Lower-case letters, digits, `-` and `_`, starting with a letter.
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: TemplateKind,
    /// Where to create the `NAME/` directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The vigil SDK crate (`sdk/` of vigil's source). Default: the one
    /// this vigil was built from.
    #[arg(long, env = "VIGIL_SDK")]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "plugin name {0:?}: use 1 to {MAX_NAME} lower-case letters, digits, `-` and `_`, starting with a letter"
    )]
    InvalidName(String),
    #[error("plugin name {0:?} is reserved in Rust; pick another")]
    ReservedName(String),
    #[error("{0} already exists; `plugins new` never overwrites anything")]
    Exists(PathBuf),
    #[error(
        "the vigil SDK is not at {0}: pass --sdk PATH (or set VIGIL_SDK) to the `sdk/` directory of vigil's source"
    )]
    NoSdk(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Crate names Cargo or Rust would refuse, or that shadow the standard
/// library.
const RESERVED: &[&str] = &[
    "alloc",
    "core",
    "std",
    "proc_macro",
    "test",
    "self",
    "super",
    "crate",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "static",
    "struct",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "async",
    "await",
    "dyn",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
    "vigil_sdk",
];

/// Checks a plugin name; returns the plugin (and Rust library) name,
/// `-` replaced by `_`.
pub fn plugin_name(name: &str) -> Result<String, TemplateError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(TemplateError::InvalidName(name.to_owned()));
    }
    let underscored = name.replace('-', "_");
    if RESERVED.contains(&underscored.as_str()) {
        return Err(TemplateError::ReservedName(name.to_owned()));
    }
    Ok(underscored)
}

fn sdk_path(given: Option<&Path>) -> Result<PathBuf, TemplateError> {
    let path = given.map_or_else(|| PathBuf::from(BUILT_FROM_SDK), Path::to_path_buf);
    let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
    if !manifest.contains("name = \"vigil-sdk\"") {
        return Err(TemplateError::NoSdk(path));
    }
    std::fs::canonicalize(&path).map_err(|source| TemplateError::Io { path, source })
}

fn plugin_file(kind: TemplateKind, plugin: &str, library: &str) -> String {
    let mut text = format!(
        "# `{plugin}`, generated by `vigil plugins new`. Every key is explained in\n\
         # vigil's README, section \"Plugin files\".\n\
         [Core]\n\
         Name = {plugin}\n\
         Kind = {kind}\n\
         # Where `cargo build --release --target wasm32-wasip2` writes it; next to\n\
         # this file (`{library}.wasm`) once both are copied into a plugin directory.\n\
         Module = target/wasm32-wasip2/release/{library}.wasm\n\
         \n\
         [Documentation]\n\
         Author = Your name\n\
         Version = 0.1.0\n\
         Description = A {kind} plugin\n\
         \n\
         [main]\n\
         execute_frequency = 60\n",
        kind = kind.name()
    );
    match kind {
        TemplateKind::Polling | TemplateKind::Enrichment => {
            text.push_str(
                "resource_filter = resource_class = \"network\"\n\
                 \n\
                 # SNMP to the endpoint of the resource being run for (the site must\n\
                 # allow it: `[capabilities] allowed = [\"snmp\"]`).\n\
                 [capabilities]\n\
                 snmp = yes\n",
            );
            if kind == TemplateKind::Enrichment {
                text.push_str(&format!("\n[{plugin}]\nttl = 900\n"));
            }
        }
        TemplateKind::Discovery => {
            text.push_str(&format!(
                "\n# This plugin's own section, read with `config::text`.\n[{plugin}]\ndevices = lab-switch=127.0.0.1:1161\n"
            ));
        }
        TemplateKind::Analysis => {}
        TemplateKind::Endpoints => {
            text.push_str(&format!(
                "\n# This plugin's own section, read with `config::text`.\n[{plugin}]\nneighbours = 10.0.0.5 00:11:22:33:44:55 eth1\n"
            ));
        }
    }
    text.push_str("\n[sandbox]\ndeadline = 10s\nmemory = 32MiB\n");
    text
}

fn write(path: &Path, contents: &str) -> Result<(), TemplateError> {
    use std::io::Write;
    let io = |source| TemplateError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

/// Writes the crate; returns its directory.
pub fn generate(args: &NewArgs) -> Result<PathBuf, TemplateError> {
    let plugin = plugin_name(&args.name)?;
    let sdk = sdk_path(args.sdk.as_deref())?;
    let root = args.dir.join(&args.name);
    if root.symlink_metadata().is_ok() {
        return Err(TemplateError::Exists(root));
    }
    std::fs::create_dir_all(&args.dir).map_err(|source| TemplateError::Io {
        path: args.dir.clone(),
        source,
    })?;
    // `create_dir`, not `_all`: fails if something appeared meanwhile.
    std::fs::create_dir(&root).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => TemplateError::Exists(root.clone()),
        _ => TemplateError::Io {
            path: root.clone(),
            source,
        },
    })?;
    let src = root.join("src");
    std::fs::create_dir(&src).map_err(|source| TemplateError::Io {
        path: src.clone(),
        source,
    })?;
    let sdk_text = toml::Value::String(sdk.display().to_string()).to_string();
    let fill = |template: &str| {
        template
            .replace("{{name}}", &args.name)
            .replace("{{plugin_name}}", &plugin)
            .replace("{{sdk}}", &sdk_text)
    };
    let source = match args.kind {
        TemplateKind::Polling => POLLING,
        TemplateKind::Enrichment => ENRICHMENT,
        TemplateKind::Discovery => DISCOVERY,
        TemplateKind::Analysis => ANALYSIS,
        TemplateKind::Endpoints => ENDPOINTS,
    };
    write(&root.join("Cargo.toml"), &fill(CARGO_TOML))?;
    write(&root.join(".gitignore"), GITIGNORE)?;
    write(&src.join("lib.rs"), &fill(source))?;
    write(
        &root.join(format!("{plugin}.vigil-plugin")),
        &plugin_file(args.kind, &plugin, &plugin),
    )?;
    Ok(root)
}

/// `vigil plugins new`: writes the crate and says what to do next.
pub fn run(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let root = generate(args)?;
    let plugin = plugin_name(&args.name)?;
    println!(
        "wrote a {} plugin crate in {}",
        args.kind.name(),
        root.display()
    );
    println!("next:");
    println!("  cd {}", root.display());
    println!("  cargo test                                        # the logic, natively");
    println!("  cargo build --release --target wasm32-wasip2      # the component");
    if matches!(args.kind, TemplateKind::Polling | TemplateKind::Enrichment) {
        println!(
            "  vigil plugins test {plugin}.vigil-plugin --snmprec DEVICE.snmprec   # against a recording"
        );
        println!(
            "  vigil --site SITE.toml plugins check {plugin}.vigil-plugin   # a site that allows snmp"
        );
    } else {
        println!("  vigil plugins check {plugin}.vigil-plugin");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(plugin_name("uptime-poller").expect("ok"), "uptime_poller");
        for bad in ["", "Upper", "1st", "-x", "a b", "a.b", "é", &"a".repeat(65)] {
            assert!(
                matches!(plugin_name(bad), Err(TemplateError::InvalidName(_))),
                "{bad:?}"
            );
        }
        for reserved in ["std", "fn", "vigil-sdk", "test"] {
            assert!(
                matches!(plugin_name(reserved), Err(TemplateError::ReservedName(_))),
                "{reserved:?}"
            );
        }
    }

    #[test]
    fn existing_directories_are_refused_and_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("taken")).expect("mkdir");
        std::fs::write(dir.path().join("taken/keep"), "mine").expect("write");
        let args = NewArgs {
            name: "taken".into(),
            kind: TemplateKind::Polling,
            dir: dir.path().to_owned(),
            sdk: None,
        };
        assert!(matches!(generate(&args), Err(TemplateError::Exists(_))));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("taken/keep")).expect("read"),
            "mine"
        );
        let no_sdk = NewArgs {
            name: "fresh".into(),
            sdk: Some(dir.path().to_owned()),
            ..args
        };
        assert!(matches!(generate(&no_sdk), Err(TemplateError::NoSdk(_))));
        assert!(!dir.path().join("fresh").exists(), "nothing written");
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().expect("tempdir");
        for kind in [
            TemplateKind::Discovery,
            TemplateKind::Enrichment,
            TemplateKind::Polling,
            TemplateKind::Analysis,
            TemplateKind::Endpoints,
        ] {
            let args = NewArgs {
                name: format!("p-{}", kind.name()),
                kind,
                dir: dir.path().to_owned(),
                sdk: None,
            };
            let root = generate(&args).expect("generated");
            for file in [
                "Cargo.toml",
                "src/lib.rs",
                &format!("p_{}.vigil-plugin", kind.name()),
            ] {
                let text = std::fs::read_to_string(root.join(file)).expect("read");
                assert!(!text.contains("{{"), "{file}: {text}");
            }
            let ini = std::fs::read_to_string(root.join(format!("p_{}.vigil-plugin", kind.name())))
                .expect("ini");
            assert!(ini.contains(&format!("Kind = {}", kind.name())));
            assert!(ini.contains(&format!("release/p_{}.wasm", kind.name())));
        }
    }
}
