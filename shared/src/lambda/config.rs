//! Function configuration from the environment, read and checked once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `LAMBDAML_STORE` | object store URL (`s3://bucket/prefix`, `file://…`) | required |
//! | `LAMBDAML_QUEUES` | stage queues URL (`sqs://name-prefix`, `file://…`) | required |
//! | `LAMBDAML_MAX_RECEIVES` | deliveries of a message before it is parked in the dead-letter queue (the queues' maxReceiveCount) | `5` |

/// A missing or malformed variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not set.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// Set but unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// What every function reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    /// `LAMBDAML_STORE`.
    pub store: String,
    /// `LAMBDAML_QUEUES`.
    pub queues: String,
    /// `LAMBDAML_MAX_RECEIVES`.
    pub max_receives: u32,
}

impl FunctionConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| -> Result<String, ConfigError> {
            match get(name) {
                Some(v) if !v.trim().is_empty() => Ok(v),
                _ => Err(ConfigError::Missing(name)),
            }
        };
        let max_receives = match get("LAMBDAML_MAX_RECEIVES") {
            None => 5,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Invalid {
                    name: "LAMBDAML_MAX_RECEIVES",
                    reason: format!("{v:?} is not a positive integer"),
                })?,
        };
        Ok(FunctionConfig {
            store: required("LAMBDAML_STORE")?,
            queues: required("LAMBDAML_QUEUES")?,
            max_receives,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn errors_name_the_variable() {
        let env: HashMap<&str, &str> = HashMap::from([("LAMBDAML_STORE", "s3://b")]);
        let err = FunctionConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(err.to_string().contains("LAMBDAML_QUEUES"), "{err}");
        let env: HashMap<&str, &str> = HashMap::from([
            ("LAMBDAML_STORE", "s3://b"),
            ("LAMBDAML_QUEUES", "sqs://p-"),
            ("LAMBDAML_MAX_RECEIVES", "zero"),
        ]);
        let err = FunctionConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert!(err.to_string().contains("LAMBDAML_MAX_RECEIVES"), "{err}");
    }
}
