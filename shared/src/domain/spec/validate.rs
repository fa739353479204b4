//! Checking a spec once, before any work starts: every range, every combination that
//! cannot work, each error naming the first offending key.

use super::*;

impl ModelSpec {
    /// Checks every range; the error names the first offending key.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.check_dataset()?;
        self.check_split_and_preprocess()?;
        self.check_train()?;
        self.check_promotion()?;
        self.check_monitor_and_retrain()
    }

    /// `[model]`, `[dataset]` and its columns, `[features]`.
    fn check_dataset(&self) -> Result<(), SpecError> {
        if !is_valid_name(&self.model.name) {
            return Err(invalid(
                "model.name",
                "must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
            ));
        }
        if !is_valid_name(&self.dataset.name) {
            return Err(invalid(
                "dataset.name",
                "must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit",
            ));
        }
        if self.dataset.label.trim().is_empty() {
            return Err(invalid("dataset.label", "must name the label column"));
        }
        if self.dataset.delimiter.len() != 1 || !self.dataset.delimiter.is_ascii() {
            return Err(invalid(
                "dataset.delimiter",
                "must be exactly one ASCII character",
            ));
        }
        for (name, col) in &self.dataset.columns {
            let key = format!("dataset.columns.{name}");
            if let (Some(lo), Some(hi)) = (col.min, col.max)
                && lo > hi
            {
                return Err(invalid(&format!("{key}.min"), "is greater than max"));
            }
            let numeric = matches!(col.kind, DeclaredType::Integer | DeclaredType::Float);
            if !numeric && (col.min.is_some() || col.max.is_some()) {
                return Err(invalid(
                    &key,
                    "min/max apply to integer and float columns only",
                ));
            }
            if col.values.is_some() && col.kind != DeclaredType::Categorical {
                return Err(invalid(
                    &format!("{key}.values"),
                    "applies to categorical columns only",
                ));
            }
            if col.values.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(&format!("{key}.values"), "must not be empty"));
            }
        }
        if let Some(label) = self.dataset.columns.get(&self.dataset.label) {
            let ok = match self.task.kind {
                TaskKind::Regression => {
                    matches!(label.kind, DeclaredType::Integer | DeclaredType::Float)
                }
                _ => true,
            };
            if !ok {
                return Err(invalid(
                    &format!("dataset.columns.{}.type", self.dataset.label),
                    "a regression label must be integer or float",
                ));
            }
        }
        if self.features.include.contains(&self.dataset.label) {
            return Err(invalid(
                "features.include",
                "must not contain the label column",
            ));
        }
        Ok(())
    }

    /// `[split]` and `[preprocess]`.
    fn check_split_and_preprocess(&self) -> Result<(), SpecError> {
        if !(self.split.holdout > 0.0 && self.split.holdout < 1.0) {
            return Err(invalid(
                "split.holdout",
                format!(
                    "must be between 0 and 1 (exclusive), got {}",
                    self.split.holdout
                ),
            ));
        }
        if self.split.seed > u64::from(u32::MAX) {
            return Err(invalid(
                "split.seed",
                "must be below 2^32 (numpy's RandomState seeds)",
            ));
        }
        if self.split.order_by.is_some() && self.split.method != SplitMethod::Time {
            return Err(invalid(
                "split.order_by",
                "applies to method = \"time\" only",
            ));
        }
        if self.preprocess.max_categories == 0 {
            return Err(invalid("preprocess.max_categories", "must be at least 1"));
        }
        Ok(())
    }

    /// `[train]`: a family that fits the task, and every hyper-parameter in range.
    fn check_train(&self) -> Result<(), SpecError> {
        let t = &self.train;
        match (self.task.kind, t.family) {
            (TaskKind::Binary, Family::Logistic | Family::Mlp)
            | (TaskKind::Multiclass, Family::Softmax | Family::Mlp)
            | (TaskKind::Regression, Family::Linear | Family::Mlp) => {}
            (task, family) => {
                return Err(invalid(
                    "train.family",
                    format!("{family:?} does not fit a {task:?} task (binary: logistic or mlp; multiclass: softmax or mlp; regression: linear or mlp)").to_lowercase(),
                ));
            }
        }
        if t.epochs == 0 {
            return Err(invalid("train.epochs", "must be at least 1"));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err(invalid(
                "train.learning_rate",
                format!("must be a positive number, got {}", t.learning_rate),
            ));
        }
        if !(t.l2.is_finite() && t.l2 >= 0.0) {
            return Err(invalid("train.l2", format!("must be >= 0, got {}", t.l2)));
        }
        if t.batch_size == 0 {
            return Err(invalid("train.batch_size", "must be at least 1"));
        }
        if t.hidden.is_empty() {
            return Err(invalid("train.hidden", "must list at least one layer size"));
        }
        if t.hidden.contains(&0) {
            return Err(invalid("train.hidden", "layer sizes must be at least 1"));
        }
        if !(0.0..1.0).contains(&t.dropout) {
            return Err(invalid(
                "train.dropout",
                format!("must be in [0, 1), got {}", t.dropout),
            ));
        }
        if t.patience == 0 {
            return Err(invalid("train.patience", "must be at least 1"));
        }
        if !(0.0..=0.5).contains(&t.validation_fraction) {
            return Err(invalid(
                "train.validation_fraction",
                format!("must be in [0, 0.5], got {}", t.validation_fraction),
            ));
        }
        if !(t.tolerance.is_finite() && t.tolerance > 0.0) {
            return Err(invalid("train.tolerance", "must be a positive number"));
        }
        Ok(())
    }

    /// A metric name that exists and fits the task.
    fn check_metric(&self, key: &str, metric: &str) -> Result<(), SpecError> {
        const METRICS: [&str; 9] = [
            "roc_auc",
            "accuracy",
            "f1_macro",
            "log_loss",
            "brier",
            "precision_macro",
            "recall_macro",
            "rmse",
            "r2",
        ];
        if !METRICS.contains(&metric) && metric != "mae" {
            return Err(invalid(
                key,
                format!(
                    "unknown metric {:?}; one of {}, mae",
                    metric,
                    METRICS.join(", ")
                ),
            ));
        }
        let regression_metric = matches!(metric, "rmse" | "r2" | "mae");
        if regression_metric != (self.task.kind == TaskKind::Regression) {
            return Err(invalid(
                key,
                format!("{:?} does not fit a {:?} task", metric, self.task.kind).to_lowercase(),
            ));
        }
        Ok(())
    }

    /// `[promotion]`: a metric that exists and fits the task.
    fn check_promotion(&self) -> Result<(), SpecError> {
        let p = &self.promotion;
        self.check_metric("promotion.metric", &p.metric)?;
        if !(p.min_improvement.is_finite() && p.min_improvement >= 0.0) {
            return Err(invalid("promotion.min_improvement", "must be >= 0"));
        }
        if !(p.margin.is_finite() && p.margin >= 0.0) {
            return Err(invalid("promotion.margin", "must be >= 0"));
        }
        if let Some(drop) = p.max_recall_drop
            && !(0.0..=1.0).contains(&drop)
        {
            return Err(invalid("promotion.max_recall_drop", "must be in [0, 1]"));
        }
        Ok(())
    }

    /// `[monitor]` and `[retrain]`.
    fn check_monitor_and_retrain(&self) -> Result<(), SpecError> {
        let m = &self.monitor;
        if !(m.schedule.starts_with("rate(") || m.schedule.starts_with("cron(")) {
            return Err(invalid(
                "monitor.schedule",
                "must be an EventBridge expression: rate(...) or cron(...)",
            ));
        }
        if !(m.drift_share > 0.0 && m.drift_share <= 1.0) {
            return Err(invalid("monitor.drift_share", "must be in (0, 1]"));
        }
        if m.min_samples == 0 {
            return Err(invalid("monitor.min_samples", "must be at least 1"));
        }
        if m.late_labels > 12 {
            return Err(invalid(
                "monitor.late_labels",
                "must be at most 12 (each re-judged window's captures are read again)",
            ));
        }
        if !(m.performance_drop > 0.0 && m.performance_drop <= 1.0) {
            return Err(invalid("monitor.performance_drop", "must be in (0, 1]"));
        }
        if m.trigger == super::Trigger::Ddm && self.task.kind == TaskKind::Regression {
            return Err(invalid(
                "monitor.trigger",
                "ddm watches a classifier's 0/1 errors; for a regression model use \"adwin\" (absolute errors) or \"threshold\"",
            ));
        }
        for (name, f) in &m.features {
            if !(f.threshold.is_finite() && f.threshold > 0.0) {
                return Err(invalid(
                    &format!("monitor.features.{name}.threshold"),
                    "must be a positive number",
                ));
            }
        }
        let r = &self.retrain;
        if parse_duration_secs(&r.cooldown).is_none() {
            return Err(invalid(
                "retrain.cooldown",
                format!(
                    "{:?} is not a duration like \"30m\", \"24h\" or \"7d\"",
                    r.cooldown
                ),
            ));
        }
        if r.max_per_day == 0 {
            return Err(invalid("retrain.max_per_day", "must be at least 1"));
        }
        if r.window_rows == 0 {
            return Err(invalid("retrain.window_rows", "must be at least 1"));
        }
        self.check_rollout()
    }

    /// `[rollout]`.
    fn check_rollout(&self) -> Result<(), SpecError> {
        let r = &self.rollout;
        if !(r.shadow_share > 0.0 && r.shadow_share <= 1.0) {
            return Err(invalid("rollout.shadow_share", "must be in (0, 1]"));
        }
        if r.steps.is_empty()
            || r.steps.iter().any(|s| !(*s > 0.0 && *s <= 1.0))
            || r.steps.windows(2).any(|w| w[0] >= w[1])
            || r.steps[0] >= 1.0
        {
            return Err(invalid(
                "rollout.steps",
                format!(
                    "must be increasing weights in (0, 1], the first below 1 (e.g. [0.05, 0.25, 0.5, 1.0]); got {:?}",
                    r.steps
                ),
            ));
        }
        if r.min_rows == 0 {
            return Err(invalid("rollout.min_rows", "must be at least 1"));
        }
        if r.min_labelled == 0 {
            return Err(invalid("rollout.min_labelled", "must be at least 1"));
        }
        if let Some(metric) = &r.metric {
            self.check_metric("rollout.metric", metric)?;
        }
        if !(r.margin.is_finite() && r.margin >= 0.0) {
            return Err(invalid("rollout.margin", "must be >= 0"));
        }
        if !(r.confidence > 0.5 && r.confidence < 1.0) {
            return Err(invalid("rollout.confidence", "must be in (0.5, 1)"));
        }
        if !(0.0..=1.0).contains(&r.max_error_rate) {
            return Err(invalid("rollout.max_error_rate", "must be in [0, 1]"));
        }
        if !(r.max_latency_ratio.is_finite() && r.max_latency_ratio >= 1.0) {
            return Err(invalid("rollout.max_latency_ratio", "must be >= 1"));
        }
        Ok(())
    }
}
