//! Reading the deserializers' errors (the config crate's and serde's) into a
//! [`ConfigError`] that names the full key and, for an enum setting, lists
//! its values.

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// Turns a deserialization error at `path` into an error naming the full key.
/// `allowed` lists the values of the enum at `path`, for errors that do not.
pub(super) fn translate(
    path: &str,
    error: config::ConfigError,
    allowed: impl FnOnce() -> Option<Vec<String>>,
) -> ConfigError {
    let message = match &error {
        config::ConfigError::Message(m) => m.clone(),
        config::ConfigError::At { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent == name || parent.ends_with(&format!(".{name}")) {
            parent.to_owned()
        } else if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed = tail
            .trim_start_matches(',')
            .trim()
            .replace("expected one of", "allowed keys are")
            .replace("expected", "allowed:");
        return ConfigError::UnknownKey {
            key: join(name),
            allowed: if allowed.is_empty() {
                "no keys are allowed here".to_owned()
            } else {
                allowed
            },
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return ConfigError::missing(join(name), "this key is required");
    }
    match EnumError::parse(&message) {
        Some(EnumError::UnknownVariant { value, expected }) => {
            ConfigError::invalid(parent, not_one_of(Some(&value), &variant_names(&expected)))
        }
        Some(EnumError::NoVariant { value }) => {
            let reason = match allowed() {
                Some(names) => not_one_of(value.as_deref(), &names),
                None => match value {
                    Some(value) => format!("`{value}` is not an allowed value"),
                    None => "must be a string naming one of the allowed values".to_owned(),
                },
            };
            ConfigError::invalid(parent, reason)
        }
        None => ConfigError::invalid(parent, message),
    }
}

/// A value that names no variant of an enum setting, as the deserializers say it.
#[derive(Debug, PartialEq)]
enum EnumError {
    /// serde's own message, which lists the variants: ``unknown variant `x`,
    /// expected one of `a`, `b` ``.
    UnknownVariant { value: String, expected: String },
    /// The config crate's messages, which do not: `enum Ordering does not
    /// have variant constructor x`, or, for a value that is no string, `value
    /// of enum Ordering should be represented by …`.
    NoVariant { value: Option<String> },
}

impl EnumError {
    fn parse(message: &str) -> Option<Self> {
        if let Some(rest) = message.strip_prefix("unknown variant `") {
            let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
            return Some(Self::UnknownVariant {
                value: value.to_owned(),
                expected: tail.to_owned(),
            });
        }
        if let Some((_, value)) = message
            .strip_prefix("enum ")
            .and_then(|m| m.split_once(" does not have variant constructor "))
        {
            return Some(Self::NoVariant {
                value: Some(value.to_owned()),
            });
        }
        message
            .starts_with("value of enum ")
            .then_some(Self::NoVariant { value: None })
    }
}

/// The names quoted in serde's list of variants: `` expected one of `a`, `b` ``.
fn variant_names(expected: &str) -> Vec<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// "`x` is not one of: a, b", or "must be one of: a, b" without the value.
fn not_one_of(value: Option<&str>, names: &[String]) -> String {
    match value {
        Some(value) => format!("`{value}` is not one of: {}", names.join(", ")),
        None => format!("must be one of: {}", names.join(", ")),
    }
}

/// The values allowed for the enum setting at dotted `path` of `T`. The
/// config crate's enum errors do not list them, so `T` is read once more
/// from that key alone, holding a value that names no variant, through
/// serde_json, whose error lists them. `None` if that error is a different
/// one (a setting on the way that has no default, say).
pub(super) fn enum_values<T: DeserializeOwned>(path: &str) -> Option<Vec<String>> {
    if path.is_empty() || path.contains('[') {
        return None;
    }
    let mut value = serde_json::Value::String(String::new());
    for segment in path.rsplit('.') {
        value = serde_json::Value::Object([(segment.to_owned(), value)].into_iter().collect());
    }
    let error = serde_path_to_error::deserialize::<_, T>(value).err()?;
    if error.path().to_string() != path {
        return None;
    }
    match EnumError::parse(&error.into_inner().to_string())? {
        EnumError::UnknownVariant { expected, .. } => Some(variant_names(&expected)),
        EnumError::NoVariant { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::examples::{App, loader};

    #[test]
    fn unknown_key_is_named_with_the_allowed_ones() {
        let err = loader()
            .set("worker.max_inflight", 3)
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.max_inflight");
        let text = err.to_string();
        assert!(text.contains("max_in_flight"), "{text}");

        let err = loader()
            .env([("PYTHIA_WROKER__NAME", "x")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "wroker");
    }

    #[test]
    fn an_enum_key_names_itself_and_lists_its_values() {
        let err = loader()
            .env([("PYTHIA_WORKER__ORDERING", "fast")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.ordering", "{err}");
        assert_eq!(
            err.to_string(),
            "invalid value for `worker.ordering`: `fast` is not one of: partition, key, none"
        );
        assert!(!err.to_string().contains("Ordering"), "no Rust type names");

        // A value that is no string at all.
        let err = loader()
            .env([("PYTHIA_WORKER__ORDERING", "1")])
            .load::<App>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `worker.ordering`: must be one of: partition, key, none"
        );

        // Enums that check their own values keep their message.
        let err = loader()
            .set("worker.dead_letter.on_failure", "ignore")
            .load::<App>()
            .unwrap_err();
        assert_eq!(err.key(), "worker.dead_letter.on_failure", "{err}");
        assert!(err.to_string().contains("stop") && err.to_string().contains("skip"));
    }

    #[test]
    fn enum_errors_are_read_from_either_deserializer() {
        assert_eq!(
            EnumError::parse("unknown variant `x`, expected one of `a`, `b`, `c`"),
            Some(EnumError::UnknownVariant {
                value: "x".into(),
                expected: ", expected one of `a`, `b`, `c`".into()
            })
        );
        assert_eq!(variant_names(", expected `a` or `b`"), ["a", "b"]);
        assert_eq!(
            EnumError::parse("enum Ordering does not have variant constructor x"),
            Some(EnumError::NoVariant {
                value: Some("x".into())
            })
        );
        assert_eq!(
            EnumError::parse(
                "value of enum Ordering should be represented by either string or table with exactly one key"
            ),
            Some(EnumError::NoVariant { value: None })
        );
        assert_eq!(EnumError::parse("invalid type: string"), None);
        assert_eq!(
            enum_values::<App>("worker.ordering"),
            Some(vec!["partition".into(), "key".into(), "none".into()])
        );
        assert_eq!(enum_values::<App>("worker.max_in_flight"), None);
    }
}
