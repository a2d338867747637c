//! The one way every crate reads its environment: a value is trimmed, an empty value means
//! unset, and a value that is set but does not parse is always an error naming the variable —
//! never a silent fall-back to the default.

use std::str::FromStr;
use std::time::Duration;

/// `v` trimmed, or `None` when that leaves nothing: the rule for every setting, from the
/// environment or a flag.
pub fn non_empty(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty()).then_some(v)
}

/// A variable that is set but unusable, or required and missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable is set to something that does not parse.
    #[error("environment variable {name}='{value}' is not {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its (trimmed) value.
        value: String,
        /// What it should be, e.g. "a whole number of seconds".
        expected: &'static str,
    },
}

/// Reads variables through `lookup` (the process environment in [`Env::process`], a map in
/// tests).
pub struct Env<F = fn(&str) -> Option<String>> {
    lookup: F,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            lookup: |name| std::env::var(name).ok(),
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Variables from `lookup` (tests).
    pub fn from_fn(lookup: F) -> Self {
        Self { lookup }
    }

    /// The trimmed value of `name`; `None` when unset or empty.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name).and_then(|v| non_empty(&v).map(str::to_owned))
    }

    /// The value of `name`, which must be set.
    ///
    /// # Errors
    /// [`EnvError::Missing`] when unset or empty.
    pub fn required(&self, name: &'static str) -> Result<String, EnvError> {
        self.text(name).ok_or(EnvError::Missing(name))
    }

    /// `name` parsed as `T`, or `default` when unset or empty.
    ///
    /// # Errors
    /// [`EnvError::Invalid`] with `expected` when set to something `T` does not parse.
    pub fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
        expected: &'static str,
    ) -> Result<T, EnvError> {
        match self.text(name) {
            None => Ok(default),
            Some(value) => value.parse().map_err(|_| EnvError::Invalid {
                name,
                value,
                expected,
            }),
        }
    }

    /// `name` as a whole number of seconds, or `default`.
    ///
    /// # Errors
    /// [`EnvError::Invalid`] for anything but a non-negative integer.
    pub fn seconds(&self, name: &'static str, default: Duration) -> Result<Duration, EnvError> {
        self.parsed(name, default.as_secs(), "a whole number of seconds")
            .map(Duration::from_secs)
    }

    /// `name` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`), or `default`.
    ///
    /// # Errors
    /// [`EnvError::Invalid`] for any other value.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, EnvError> {
        match self.text(name) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(EnvError::Invalid {
                    name,
                    value: v,
                    expected: "a boolean (true/false)",
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_fn(move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn empty_means_unset_and_values_are_trimmed() {
        let e = env(&[("EMPTY", "  "), ("PADDED", " x ")]);
        assert_eq!(e.text("EMPTY"), None);
        assert_eq!(e.text("UNSET"), None);
        assert_eq!(e.text("PADDED").as_deref(), Some("x"));
        assert_eq!(e.required("EMPTY"), Err(EnvError::Missing("EMPTY")));
        assert_eq!(
            e.seconds("EMPTY", Duration::from_secs(9)),
            Ok(Duration::from_secs(9))
        );
    }

    #[test]
    fn a_garbage_value_is_an_error_never_the_default() {
        let e = env(&[("LEASE_SECONDS", "ninety"), ("N", " 42 "), ("B", "maybe")]);
        let err = e
            .seconds("LEASE_SECONDS", Duration::from_secs(90))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable LEASE_SECONDS='ninety' is not a whole number of seconds"
        );
        assert_eq!(e.parsed("N", 0u32, "a number"), Ok(42));
        assert!(e.flag("B", false).is_err());
        assert_eq!(e.flag("UNSET", true), Ok(true));
    }
}
