//! Reading `template.yaml` (AWS SAM / CloudFormation) — the one description of the
//! deployment that `lambdaml local`, `lambdaml stack` and the security tests share.
//!
//! A [`Template`] is the parsed file; a [`Stack`] is the template resolved for one stack
//! name, region, account and parameter set: intrinsic functions (`!Ref`, `!Sub`, `!GetAtt`,
//! `!If`, `!Equals`, `!Not`, `!And`, `!Or`, `!Join`, `!Select`, `!Split`, and their `Fn::`
//! long forms) are evaluated, the way CloudFormation would, against physical names the
//! caller supplies (an emulator's queue URLs, say). From a stack come the queues, the
//! bucket and its notifications, the functions with their environment and schedules, the
//! SQS event source mappings and the HTTP API routes.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use serde_norway::Value as Yaml;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    /// `Parameters`, by name.
    pub parameters: BTreeMap<String, Parameter>,
    conditions: BTreeMap<String, Yaml>,
    /// `Resources`, by logical id.
    pub resources: BTreeMap<String, Resource>,
    globals_function: Yaml,
}

/// One template parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// `Default`, as a string.
    pub default: Option<String>,
    /// `AllowedValues`.
    pub allowed: Vec<String>,
    /// `Type`.
    pub kind: String,
    /// `MinValue` / `MaxValue` of a Number.
    pub range: (Option<f64>, Option<f64>),
}

/// One resource, unresolved.
#[derive(Debug, Clone)]
pub struct Resource {
    /// `Type`.
    pub kind: String,
    /// `Properties` (YAML with intrinsic-function tags).
    pub properties: Yaml,
    /// `Metadata`.
    pub metadata: Yaml,
    /// `Condition`: a stack whose condition is false does not have the resource.
    pub condition: Option<String>,
}

impl Template {
    /// Parses the template text.
    pub fn parse(text: &str) -> Result<Self> {
        let doc: Yaml = serde_norway::from_str(text).context("template.yaml is not valid YAML")?;
        let map = doc
            .as_mapping()
            .ok_or_else(|| anyhow!("template.yaml: the document is not a mapping"))?;
        let section = |name: &str| map.get(name).cloned().unwrap_or(Yaml::Null);
        let mut parameters = BTreeMap::new();
        if let Some(params) = section("Parameters").as_mapping() {
            for (name, def) in params {
                let name = yaml_str(name)?;
                let scalar = |v: &Yaml| match v {
                    Yaml::String(s) => Some(s.clone()),
                    Yaml::Number(n) => Some(n.to_string()),
                    Yaml::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                parameters.insert(
                    name,
                    Parameter {
                        default: def.get("Default").and_then(scalar),
                        allowed: def
                            .get("AllowedValues")
                            .and_then(Yaml::as_sequence)
                            .map(|s| s.iter().filter_map(scalar).collect())
                            .unwrap_or_default(),
                        kind: def
                            .get("Type")
                            .and_then(scalar)
                            .unwrap_or_else(|| "String".to_string()),
                        range: (
                            def.get("MinValue")
                                .and_then(scalar)
                                .and_then(|v| v.parse().ok()),
                            def.get("MaxValue")
                                .and_then(scalar)
                                .and_then(|v| v.parse().ok()),
                        ),
                    },
                );
            }
        }
        let mut conditions = BTreeMap::new();
        if let Some(conds) = section("Conditions").as_mapping() {
            for (name, expr) in conds {
                conditions.insert(yaml_str(name)?, expr.clone());
            }
        }
        let mut resources = BTreeMap::new();
        let res = section("Resources");
        let res = res
            .as_mapping()
            .ok_or_else(|| anyhow!("template.yaml has no Resources"))?;
        for (id, def) in res {
            let id = yaml_str(id)?;
            let kind = def
                .get("Type")
                .and_then(Yaml::as_str)
                .ok_or_else(|| anyhow!("resource {id} has no Type"))?
                .to_string();
            resources.insert(
                id,
                Resource {
                    kind,
                    properties: def.get("Properties").cloned().unwrap_or(Yaml::Null),
                    metadata: def.get("Metadata").cloned().unwrap_or(Yaml::Null),
                    condition: def
                        .get("Condition")
                        .and_then(Yaml::as_str)
                        .map(str::to_string),
                },
            );
        }
        let globals_function = section("Globals")
            .get("Function")
            .cloned()
            .unwrap_or(Yaml::Null);
        Ok(Template {
            parameters,
            conditions,
            resources,
            globals_function,
        })
    }

    /// Reads and parses a template file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the template {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The logical ids of resources of one type.
    pub fn of_kind(&self, kind: &str) -> Vec<&str> {
        self.resources
            .iter()
            .filter(|(_, r)| r.kind == kind)
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

pub(crate) fn yaml_str(v: &Yaml) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("expected a string, got {v:?}"))
}

/// Where and as what a stack is deployed.
#[derive(Debug, Clone)]
pub struct StackContext {
    /// `AWS::StackName`.
    pub name: String,
    /// `AWS::Region`.
    pub region: String,
    /// `AWS::AccountId`.
    pub account: String,
    /// Parameter values that replace the defaults.
    pub overrides: BTreeMap<String, String>,
}

impl StackContext {
    /// A stack named `name` in the region of the environment (`AWS_REGION`, else
    /// `us-east-1`) and the emulators' account, 123456789012.
    pub fn new(name: &str) -> Self {
        StackContext {
            name: name.to_string(),
            region: std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".to_string()),
            account: "123456789012".to_string(),
            overrides: BTreeMap::new(),
        }
    }
}

/// What `!Ref` and `!GetAtt` give for a resource once it exists.
#[derive(Debug, Clone, Default)]
pub struct Physical {
    /// `!Ref`.
    pub reference: String,
    /// `!GetAtt` attributes (`Arn`, …).
    pub attributes: BTreeMap<String, String>,
}

/// A template resolved for one stack. See the module docs.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The template.
    pub template: Template,
    /// The context.
    pub context: StackContext,
    parameters: BTreeMap<String, String>,
    conditions: BTreeMap<String, bool>,
    physical: BTreeMap<String, Physical>,
}

/// `AWS::NoValue` resolves to nothing: the property it stands in is dropped.
type Resolved = Option<Value>;

impl Stack {
    /// Resolves parameters (overrides, else defaults; checked against `AllowedValues`) and
    /// conditions. Resources get default physical names; [`Stack::set_physical`] replaces
    /// them with the real ones.
    pub fn new(template: Template, context: StackContext) -> Result<Self> {
        let mut parameters = BTreeMap::new();
        for (name, value) in &context.overrides {
            if !template.parameters.contains_key(name) {
                bail!(
                    "unknown parameter {name:?}; the template's parameters are {}",
                    template
                        .parameters
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let _ = value;
        }
        for (name, def) in &template.parameters {
            let value = context
                .overrides
                .get(name)
                .cloned()
                .or_else(|| def.default.clone())
                .ok_or_else(|| anyhow!("parameter {name} has no default and no value"))?;
            if !def.allowed.is_empty() && !def.allowed.contains(&value) {
                bail!(
                    "parameter {name}={value:?} is not one of {}",
                    def.allowed.join(", ")
                );
            }
            if def.kind == "Number" {
                let n: f64 = value
                    .parse()
                    .map_err(|_| anyhow!("parameter {name}={value:?} is not a number"))?;
                if def.range.0.is_some_and(|min| n < min) || def.range.1.is_some_and(|max| n > max)
                {
                    bail!(
                        "parameter {name}={value} is outside {}..={}",
                        def.range.0.map(|v| v.to_string()).unwrap_or_default(),
                        def.range.1.map(|v| v.to_string()).unwrap_or_default()
                    );
                }
            }
            parameters.insert(name.clone(), value);
        }
        let mut stack = Stack {
            template,
            context,
            parameters,
            conditions: BTreeMap::new(),
            physical: BTreeMap::new(),
        };
        let names: Vec<String> = stack.template.conditions.keys().cloned().collect();
        for name in names {
            let expr = stack.template.conditions[&name].clone();
            let value = stack.condition_value(&expr)?;
            stack.conditions.insert(name, value);
        }
        // As CloudFormation: a resource whose condition is false is not created.
        let mut dropped = Vec::new();
        for (id, r) in &stack.template.resources {
            if let Some(c) = &r.condition {
                let holds = *stack
                    .conditions
                    .get(c)
                    .ok_or_else(|| anyhow!("resource {id}: unknown condition {c:?}"))?;
                if !holds {
                    dropped.push(id.clone());
                }
            }
        }
        for id in dropped {
            stack.template.resources.remove(&id);
        }
        let defaults: Vec<(String, String)> = stack
            .template
            .resources
            .iter()
            .map(|(id, r)| (id.clone(), r.kind.clone()))
            .collect();
        for (id, kind) in defaults {
            let physical = stack.default_physical(&id, &kind);
            stack.physical.insert(id, physical);
        }
        Ok(stack)
    }

    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:aws:{service}:{}:{}:{resource}",
            self.context.region, self.context.account
        )
    }

    /// Physical values before anything is created: names from the `QueueName` /
    /// `BucketName` properties where set (they may only use parameters and pseudo
    /// parameters), `<stack>-<logical id>` otherwise.
    fn default_physical(&self, id: &str, kind: &str) -> Physical {
        let props = &self.template.resources[id].properties;
        let named = |prop: &str| {
            props
                .get(prop)
                .and_then(|v| self.resolve(v).ok().flatten())
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let fallback = format!("{}-{id}", self.context.name);
        match kind {
            "AWS::SQS::Queue" => {
                let name = named("QueueName").unwrap_or(fallback);
                let arn = self.arn("sqs", &name);
                Physical {
                    reference: format!(
                        "https://sqs.{}.amazonaws.com/{}/{name}",
                        self.context.region, self.context.account
                    ),
                    attributes: BTreeMap::from([
                        ("Arn".to_string(), arn),
                        ("QueueName".to_string(), name),
                    ]),
                }
            }
            "AWS::S3::Bucket" => {
                let name = named("BucketName").unwrap_or_else(|| fallback.to_lowercase());
                Physical {
                    attributes: BTreeMap::from([(
                        "Arn".to_string(),
                        format!("arn:aws:s3:::{name}"),
                    )]),
                    reference: name,
                }
            }
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => Physical {
                attributes: BTreeMap::from([(
                    "Arn".to_string(),
                    self.arn("lambda", &format!("function:{fallback}")),
                )]),
                reference: fallback,
            },
            "AWS::Logs::LogGroup" => Physical {
                attributes: BTreeMap::from([(
                    "Arn".to_string(),
                    self.arn("logs", &format!("log-group:{fallback}")),
                )]),
                reference: fallback,
            },
            _ => Physical {
                reference: id.to_string(),
                attributes: BTreeMap::from([("Arn".to_string(), self.arn("local", id))]),
            },
        }
    }

    /// Records what a resource is once it exists (an emulator's queue URL, say).
    pub fn set_physical(&mut self, id: &str, physical: Physical) {
        self.physical.insert(id.to_string(), physical);
    }

    /// A resource's physical values.
    pub fn physical(&self, id: &str) -> Option<&Physical> {
        self.physical.get(id)
    }

    /// A parameter's value.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// A resource's `Properties`, resolved.
    pub fn properties(&self, id: &str) -> Result<Value> {
        let resource = self
            .template
            .resources
            .get(id)
            .ok_or_else(|| anyhow!("no resource {id}"))?;
        Ok(self
            .resolve(&resource.properties)
            .with_context(|| format!("resolving {id}"))?
            .unwrap_or(Value::Null))
    }
}

mod intrinsics;
mod resources;

pub use resources::{
    BucketDef, EventSourceDef, FunctionDef, NotificationDef, QueueDef, RouteDef, ScheduleDef,
    scalar_string,
};

#[cfg(test)]
mod tests;
