//! # jq-config
//!
//! Configuration for jq binaries: defaults, then a YAML file (`--config`,
//! FR-043), then `JQ_*` environment variables (FR-044), then validation.
//!
//! Environment names are derived from the configuration's own key tree:
//! every leaf `a.b_c` is overridable by `JQ_A_B_C`. Because the names come
//! from the known keys, keys that contain underscores map without ambiguity,
//! and values are read as the leaf's type (numbers, booleans, strings;
//! comma-separated for lists).
//!
//! Secrets (passwords, tokens) are read from the environment only (FR-045):
//! one found in the file is ignored with a warning naming the variable to
//! use instead.
//!
//! # Layout
//! - [`load`]: the generic loader; [`Loaded`] carries warnings to log.
//! - [`server`]: `jq-server`'s configuration and its validation.
//! - [`worker`]: `jq-worker`'s configuration.

pub mod server;
pub mod worker;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

pub use server::ServerConfig;

/// Semver and git commit of this build, shared by the three binaries
/// (NFR-017). `build.rs` takes the commit from git, or from
/// `JQ_GIT_COMMIT` where there is no `.git` (nix, Docker).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("JQ_GIT_COMMIT"), ")");
pub use worker::WorkerConfig;

/// A configuration type the loader can fill.
pub trait Config: Serialize + DeserializeOwned + Default {
    /// Dotted paths of secret leaves (env-only, redacted in summaries).
    const SECRETS: &'static [&'static str];
    /// Every rule a valid configuration must meet, as readable problems.
    fn problems(&self) -> Vec<String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("config file {path}: {message}")]
    Shape { path: String, message: String },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: String,
        value: String,
        message: String,
    },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A loaded configuration and what the caller should log about it.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub config: T,
    pub warnings: Vec<String>,
}

/// Env variable name of a dotted path: `db.password` -> `JQ_DB_PASSWORD`.
pub fn env_name(path: &str) -> String {
    format!("JQ_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Load `T`: defaults, then `file` (if any), then `env`, then validate.
/// `env` is passed in (normally `std::env::vars()`) so tests need not touch
/// the process environment.
pub fn load<T: Config>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded<T>, ConfigError> {
    let mut warnings = vec![];
    let defaults = serde_yaml_ng::to_value(T::default()).expect("defaults serialize");
    let mut merged = defaults.clone();

    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Yaml {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        if doc.is_null() {
            doc = Value::Mapping(Mapping::new());
        }
        if !doc.is_mapping() {
            return Err(ConfigError::Shape {
                path: shown,
                message: "the top level must be a mapping of sections".into(),
            });
        }
        for secret in T::SECRETS {
            if take_leaf(&mut doc, secret).is_some_and(|v| !is_empty(&v)) {
                warnings.push(format!(
                    "{secret} is set in {shown}; secrets are read from the environment only, so it is ignored \
                     (set {} instead)",
                    env_name(secret)
                ));
            }
        }
        merge(&mut merged, doc);
    }

    let leaves = leaf_paths(&defaults);
    let sections: Vec<String> = leaves
        .keys()
        .filter_map(|p| p.split('.').next())
        .map(|s| s.to_ascii_uppercase())
        .collect();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix("JQ_") else {
            continue;
        };
        match leaves.iter().find(|(p, _)| env_name(p) == var) {
            Some((path, kind)) => {
                let v = parse_env(kind, &value).map_err(|message| ConfigError::Env {
                    var: var.clone(),
                    value: if T::SECRETS.contains(&path.as_str()) {
                        "***".into()
                    } else {
                        value.clone()
                    },
                    message,
                })?;
                set_leaf(&mut merged, path, v);
            }
            None => {
                // A likely typo of a real key; other JQ_ variables belong to
                // other tools and are left alone.
                if sections.iter().any(|s| rest.starts_with(&format!("{s}_"))) {
                    warnings.push(format!(
                        "environment variable {var} matches no configuration key; ignored"
                    ));
                }
            }
        }
    }

    let config: T = serde_yaml_ng::from_value(merged).map_err(|e| ConfigError::Shape {
        path: file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into()),
        message: e.to_string(),
    })?;
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Loaded { config, warnings })
}

/// The configuration as YAML with secrets replaced by `***` (set) or `""`.
pub fn redacted<T: Config>(config: &T) -> String {
    let mut v = serde_yaml_ng::to_value(config).expect("config serializes");
    for secret in T::SECRETS {
        if let Some(old) = take_leaf(&mut v, secret) {
            let shown = if is_empty(&old) {
                Value::String(String::new())
            } else {
                Value::String("***".into())
            };
            set_leaf(&mut v, secret, shown);
        }
    }
    serde_yaml_ng::to_string(&v).expect("yaml")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    List,
}

fn leaf_paths(v: &Value) -> BTreeMap<String, Kind> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, Kind>) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m {
                    let key = k.as_str().unwrap_or_default();
                    let path = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(child, &path, out);
                }
            }
            Value::Bool(_) => {
                out.insert(prefix.into(), Kind::Bool);
            }
            Value::Number(n) if n.is_f64() => {
                out.insert(prefix.into(), Kind::Float);
            }
            Value::Number(_) => {
                out.insert(prefix.into(), Kind::Int);
            }
            Value::Sequence(_) => {
                out.insert(prefix.into(), Kind::List);
            }
            _ => {
                out.insert(prefix.into(), Kind::Str);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, "", &mut out);
    out
}

fn parse_env(kind: &Kind, raw: &str) -> Result<Value, String> {
    let s = raw.trim();
    Ok(match kind {
        Kind::Str => Value::String(raw.to_string()),
        Kind::Bool => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => return Err("expected true or false".into()),
        },
        Kind::Int => Value::Number(
            s.parse::<i64>()
                .map_err(|_| "expected a whole number".to_string())?
                .into(),
        ),
        Kind::Float => Value::Number(
            s.parse::<f64>()
                .map_err(|_| "expected a number".to_string())?
                .into(),
        ),
        Kind::List => Value::Sequence(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.to_string()))
                .collect(),
        ),
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn take_leaf(v: &mut Value, path: &str) -> Option<Value> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let m = v.as_mapping_mut()?;
    match rest {
        None => m.remove(head),
        Some(r) => take_leaf(m.get_mut(head)?, r),
    }
}

fn set_leaf(v: &mut Value, path: &str, new: Value) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    let m = v.as_mapping_mut().expect("mapping");
    match rest {
        None => {
            m.insert(Value::String(head.into()), new);
        }
        Some(r) => {
            let child = m.entry(Value::String(head.into())).or_insert(Value::Null);
            set_leaf(child, r, new);
        }
    }
}

/// Deep-merge `over` into `base` (mappings merge, anything else replaces).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
