//! Cache keys by what a stage reads: each stage's key is its inputs' content plus only the
//! spec sections it reads, so a change to `[monitor]`, `[retrain]` or `[rollout]` never
//! re-runs preprocess or train, and a change to `[train]` re-runs train alone.
//!
//! | stage      | spec sections in its key                                   |
//! |------------|------------------------------------------------------------|
//! | preprocess | model name, dataset, task, features, split, preprocess     |
//! | train      | those (through the preprocess run) + train                 |
//! | evaluate   | the version (its metrics); `[promotion]` and `[rollout]` travel with the request, so a change to them trains nothing and decides the versions trained from then on |
//!
//! A section is hashed as the spec parsed it (defaults filled in), as JSON: comments,
//! whitespace and key order do not change a key; a default written out does not either.

use serde::Serialize;

use super::ModelSpec;

fn hash_of(parts: &impl Serialize) -> String {
    // Plain data with string keys: serialization cannot fail.
    let json = serde_json::to_vec(parts).unwrap_or_default();
    crate::sha256_hex(&json)
}

impl ModelSpec {
    /// What preprocess reads (see the module docs), hashed.
    pub fn preprocess_key(&self) -> String {
        hash_of(&(
            "preprocess/1",
            &self.model.name,
            &self.dataset,
            &self.task,
            &self.features,
            &self.split,
            &self.preprocess,
        ))
    }

    /// What train reads beyond its preprocess run: `[train]`, hashed.
    pub fn train_key(&self) -> String {
        hash_of(&("train/1", &self.train))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SPEC: &str = include_str!("../../../../examples/specs/breast_cancer.toml");

    #[test]
    fn only_the_sections_a_stage_reads_change_its_key() {
        let base = ModelSpec::parse(SPEC).unwrap();
        let same = ModelSpec::parse(&format!("# a comment\n{SPEC}\n")).unwrap();
        assert_eq!(base.preprocess_key(), same.preprocess_key());
        assert_eq!(base.train_key(), same.train_key());

        let mut monitor = base.clone();
        monitor.monitor.drift_share = 0.9;
        monitor.retrain.max_per_day += 1;
        assert_eq!(base.preprocess_key(), monitor.preprocess_key());
        assert_eq!(base.train_key(), monitor.train_key());

        let mut train = base.clone();
        train.train.seed += 1;
        assert_eq!(base.preprocess_key(), train.preprocess_key());
        assert_ne!(base.train_key(), train.train_key());

        let mut split = base.clone();
        split.split.holdout = 0.3;
        assert_ne!(base.preprocess_key(), split.preprocess_key());
    }
}
