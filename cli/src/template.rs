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
use serde_json::{Map, Value};
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

fn yaml_str(v: &Yaml) -> Result<String> {
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

    fn condition_value(&self, expr: &Yaml) -> Result<bool> {
        match self.resolve(expr)? {
            Some(Value::Bool(b)) => Ok(b),
            other => bail!("a condition evaluated to {other:?}, not a boolean"),
        }
    }

    fn condition(&self, name: &str) -> Result<bool> {
        match self.conditions.get(name) {
            Some(v) => Ok(*v),
            None => match self.template.conditions.get(name) {
                Some(expr) => self.condition_value(expr),
                None => bail!("unknown condition {name:?}"),
            },
        }
    }

    fn reference(&self, name: &str) -> Result<Resolved> {
        let value = match name {
            "AWS::NoValue" => return Ok(None),
            "AWS::StackName" => self.context.name.clone(),
            "AWS::Region" => self.context.region.clone(),
            "AWS::AccountId" => self.context.account.clone(),
            "AWS::Partition" => "aws".to_string(),
            "AWS::URLSuffix" => "amazonaws.com".to_string(),
            "AWS::StackId" => self.arn(
                "cloudformation",
                &format!("stack/{}/local", self.context.name),
            ),
            _ => {
                if let Some(v) = self.parameters.get(name) {
                    v.clone()
                } else if let Some(p) = self.physical.get(name) {
                    p.reference.clone()
                } else {
                    bail!("!Ref {name}: no such parameter or resource")
                }
            }
        };
        Ok(Some(Value::String(value)))
    }

    fn get_att(&self, id: &str, attribute: &str) -> Result<String> {
        self.physical
            .get(id)
            .and_then(|p| p.attributes.get(attribute))
            .cloned()
            .ok_or_else(|| anyhow!("!GetAtt {id}.{attribute}: unknown resource or attribute"))
    }

    fn sub(&self, text: &str, vars: &Map<String, Value>) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("!Sub {text:?}: unclosed ${{"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar_string(v));
            } else if let Some((id, attr)) = name.split_once('.') {
                out.push_str(&self.get_att(id, attr)?);
            } else {
                match self.reference(name)? {
                    Some(v) => out.push_str(&scalar_string(&v)),
                    None => bail!("!Sub {text:?}: AWS::NoValue cannot be substituted"),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn intrinsic(&self, name: &str, arg: &Yaml) -> Result<Resolved> {
        let args = |n: usize| -> Result<Vec<Yaml>> {
            match arg.as_sequence() {
                Some(s) if s.len() == n => Ok(s.clone()),
                _ => bail!("{name} takes a list of {n}"),
            }
        };
        match name {
            "Ref" => self.reference(&yaml_str(arg)?),
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Yaml::String(s) => (s.clone(), Map::new()),
                    Yaml::Sequence(s) if s.len() == 2 => {
                        let vars = match self.resolve(&s[1])? {
                            Some(Value::Object(m)) => m,
                            _ => bail!("Fn::Sub's second item must be a mapping"),
                        };
                        (yaml_str(&s[0])?, vars)
                    }
                    _ => bail!("Fn::Sub takes a string or [string, mapping]"),
                };
                Ok(Some(Value::String(self.sub(&text, &vars)?)))
            }
            "Fn::GetAtt" => {
                let (id, attr) = match arg {
                    Yaml::String(s) => s
                        .split_once('.')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| anyhow!("!GetAtt {s:?} needs Resource.Attribute"))?,
                    Yaml::Sequence(s) if s.len() == 2 => (yaml_str(&s[0])?, yaml_str(&s[1])?),
                    _ => bail!("Fn::GetAtt takes Resource.Attribute"),
                };
                Ok(Some(Value::String(self.get_att(&id, &attr)?)))
            }
            "Fn::If" => {
                let a = args(3)?;
                let branch = if self.condition(&yaml_str(&a[0])?)? {
                    &a[1]
                } else {
                    &a[2]
                };
                self.resolve(branch)
            }
            "Fn::Equals" => {
                let a = args(2)?;
                let (x, y) = (self.resolve(&a[0])?, self.resolve(&a[1])?);
                Ok(Some(Value::Bool(
                    x.as_ref().map(scalar_string) == y.as_ref().map(scalar_string),
                )))
            }
            "Fn::Not" => {
                let a = args(1)?;
                Ok(Some(Value::Bool(!self.condition_value(&a[0])?)))
            }
            "Fn::And" | "Fn::Or" => {
                let items = arg
                    .as_sequence()
                    .ok_or_else(|| anyhow!("{name} takes a list"))?;
                let mut values = Vec::new();
                for item in items {
                    values.push(self.condition_value(item)?);
                }
                Ok(Some(Value::Bool(if name == "Fn::And" {
                    values.iter().all(|v| *v)
                } else {
                    values.iter().any(|v| *v)
                })))
            }
            "Condition" => Ok(Some(Value::Bool(self.condition(&yaml_str(arg)?)?))),
            "Fn::Join" => {
                let a = args(2)?;
                let sep = yaml_str(&a[0])?;
                let items = match self.resolve(&a[1])? {
                    Some(Value::Array(items)) => items,
                    _ => bail!("Fn::Join's second item must be a list"),
                };
                Ok(Some(Value::String(
                    items
                        .iter()
                        .map(scalar_string)
                        .collect::<Vec<_>>()
                        .join(&sep),
                )))
            }
            "Fn::Select" => {
                let a = args(2)?;
                let index: usize = scalar_string(&self.resolve(&a[0])?.unwrap_or(Value::Null))
                    .parse()
                    .context("Fn::Select's index")?;
                match self.resolve(&a[1])? {
                    Some(Value::Array(items)) => Ok(items.get(index).cloned()),
                    _ => bail!("Fn::Select's second item must be a list"),
                }
            }
            "Fn::Split" => {
                let a = args(2)?;
                let sep = yaml_str(&a[0])?;
                let text = scalar_string(&self.resolve(&a[1])?.unwrap_or(Value::Null));
                Ok(Some(Value::Array(
                    text.split(sep.as_str())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                )))
            }
            other => bail!("intrinsic function {other} is not supported"),
        }
    }

    /// Resolves a YAML value with intrinsic functions into JSON.
    pub fn resolve(&self, value: &Yaml) -> Result<Resolved> {
        Ok(Some(match value {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Number(n) => serde_json::to_value(n)?,
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(v) = self.resolve(item)? {
                        out.push(v);
                    }
                }
                Value::Array(out)
            }
            Yaml::Mapping(map) => {
                if map.len() == 1
                    && let Some((Yaml::String(key), arg)) = map.iter().next()
                    && (key == "Ref" || key == "Condition" || key.starts_with("Fn::"))
                {
                    return self.intrinsic(key, arg);
                }
                let mut out = Map::new();
                for (k, v) in map {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => scalar_string(&self.resolve(other)?.unwrap_or(Value::Null)),
                    };
                    if let Some(v) = self.resolve(v)? {
                        out.insert(key, v);
                    }
                }
                Value::Object(out)
            }
            Yaml::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let tag = tag.trim_start_matches('!');
                let name = match tag {
                    "Ref" | "Condition" => tag.to_string(),
                    other => format!("Fn::{other}"),
                };
                return self.intrinsic(&name, &tagged.value);
            }
        }))
    }

    // ------------------------------------------------------------ what the stack declares

    /// The SQS queues.
    pub fn queues(&self) -> Result<Vec<QueueDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::SQS::Queue") {
            let props = self.properties(id)?;
            let name = self.physical[id].attributes["QueueName"].clone();
            let redrive = match props.get("RedrivePolicy") {
                Some(policy) => {
                    let policy = match policy {
                        Value::String(s) => serde_json::from_str(s)?,
                        other => other.clone(),
                    };
                    let arn = policy
                        .get("deadLetterTargetArn")
                        .map(scalar_string)
                        .ok_or_else(|| {
                            anyhow!("{id}: RedrivePolicy without deadLetterTargetArn")
                        })?;
                    let dlq = self.by_attribute("Arn", &arn).ok_or_else(|| {
                        anyhow!("{id}: dead-letter queue {arn} is not in the template")
                    })?;
                    let max: u32 = policy
                        .get("maxReceiveCount")
                        .map(scalar_string)
                        .unwrap_or_default()
                        .parse()
                        .with_context(|| format!("{id}: maxReceiveCount"))?;
                    Some((dlq, max))
                }
                None => None,
            };
            let number = |key: &str| {
                props
                    .get(key)
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok())
            };
            out.push(QueueDef {
                id: id.to_string(),
                name,
                visibility_timeout: number("VisibilityTimeout").unwrap_or(30),
                retention: number("MessageRetentionPeriod").unwrap_or(345_600),
                redrive,
                fifo: props.get("FifoQueue").map(scalar_string).as_deref() == Some("true"),
            });
        }
        Ok(out)
    }

    /// The logical id of the resource whose attribute `name` is `value`.
    pub fn by_attribute(&self, name: &str, value: &str) -> Option<String> {
        self.physical
            .iter()
            .find(|(_, p)| p.attributes.get(name).map(String::as_str) == Some(value))
            .map(|(id, _)| id.clone())
    }

    /// The logical id of the resource whose `!Ref` is `value`.
    pub fn by_reference(&self, value: &str) -> Option<String> {
        self.physical
            .iter()
            .find(|(_, p)| p.reference == value)
            .map(|(id, _)| id.clone())
    }

    /// The S3 buckets and the queue notifications they send.
    pub fn buckets(&self) -> Result<Vec<BucketDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::S3::Bucket") {
            let props = self.properties(id)?;
            let mut notifications = Vec::new();
            for n in props
                .pointer("/NotificationConfiguration/QueueConfigurations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let arn = n.get("Queue").map(scalar_string).unwrap_or_default();
                let queue = self.by_attribute("Arn", &arn).ok_or_else(|| {
                    anyhow!("{id}: notification queue {arn} is not in the template")
                })?;
                let mut prefix = String::new();
                let mut suffix = String::new();
                for rule in n
                    .pointer("/Filter/S3Key/Rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let value = rule.get("Value").map(scalar_string).unwrap_or_default();
                    match rule
                        .get("Name")
                        .map(scalar_string)
                        .unwrap_or_default()
                        .to_lowercase()
                        .as_str()
                    {
                        "prefix" => prefix = value,
                        "suffix" => suffix = value,
                        _ => {}
                    }
                }
                notifications.push(NotificationDef {
                    event: n.get("Event").map(scalar_string).unwrap_or_default(),
                    queue,
                    prefix,
                    suffix,
                });
            }
            out.push(BucketDef {
                id: id.to_string(),
                name: self.physical[id].reference.clone(),
                notifications,
            });
        }
        Ok(out)
    }

    /// The functions, with their merged environment and schedules.
    pub fn functions(&self) -> Result<Vec<FunctionDef>> {
        let globals = self
            .resolve(&self.template.globals_function)?
            .unwrap_or(Value::Null);
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::Serverless::Function") {
            let props = self.properties(id)?;
            let metadata = self
                .resolve(&self.template.resources[id].metadata)?
                .unwrap_or(Value::Null);
            let binary = metadata
                .pointer("/BuildProperties/Binary")
                .map(scalar_string)
                .ok_or_else(|| anyhow!("{id}: no Metadata.BuildProperties.Binary"))?;
            let mut environment = BTreeMap::new();
            for source in [&globals, &props] {
                if let Some(vars) = source
                    .pointer("/Environment/Variables")
                    .and_then(Value::as_object)
                {
                    for (k, v) in vars {
                        environment.insert(k.clone(), scalar_string(v));
                    }
                }
            }
            let setting = |key: &str, default: u64| {
                props
                    .get(key)
                    .or_else(|| globals.get(key))
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(default)
            };
            let mut schedules = Vec::new();
            if let Some(events) = props.get("Events").and_then(Value::as_object) {
                for (name, event) in events {
                    let kind = event.get("Type").map(scalar_string).unwrap_or_default();
                    if kind == "Schedule" || kind == "ScheduleV2" {
                        let p = event.get("Properties").cloned().unwrap_or(Value::Null);
                        let expression = p
                            .get("Schedule")
                            .or_else(|| p.get("ScheduleExpression"))
                            .map(scalar_string)
                            .ok_or_else(|| anyhow!("{id}.Events.{name}: no Schedule"))?;
                        let enabled = match (p.get("State"), p.get("Enabled")) {
                            (Some(state), _) => scalar_string(state) == "ENABLED",
                            (None, Some(e)) => scalar_string(e) == "true",
                            (None, None) => true,
                        };
                        schedules.push(ScheduleDef {
                            name: name.clone(),
                            expression,
                            enabled,
                        });
                    }
                }
            }
            out.push(FunctionDef {
                id: id.to_string(),
                binary,
                environment,
                memory_mb: setting("MemorySize", 128),
                timeout_secs: setting("Timeout", 3),
                schedules,
            });
        }
        Ok(out)
    }

    /// The SQS event source mappings.
    pub fn event_sources(&self) -> Result<Vec<EventSourceDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::Lambda::EventSourceMapping") {
            let props = self.properties(id)?;
            let function_ref = props
                .get("FunctionName")
                .map(scalar_string)
                .unwrap_or_default();
            let function = self
                .by_reference(&function_ref)
                .or_else(|| self.by_attribute("Arn", &function_ref))
                .ok_or_else(|| anyhow!("{id}: function {function_ref} is not in the template"))?;
            let arn = props
                .get("EventSourceArn")
                .map(scalar_string)
                .unwrap_or_default();
            let queue = self.by_attribute("Arn", &arn).ok_or_else(|| {
                anyhow!("{id}: event source {arn} is not a queue of the template")
            })?;
            out.push(EventSourceDef {
                id: id.to_string(),
                function,
                queue,
                batch_size: props
                    .get("BatchSize")
                    .map(scalar_string)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(10),
                report_batch_item_failures: props
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|t| t == "ReportBatchItemFailures")),
                enabled: props.get("Enabled").map(scalar_string).as_deref() != Some("false"),
            });
        }
        Ok(out)
    }

    /// The HTTP API routes and the function each reaches.
    pub fn routes(&self) -> Result<Vec<RouteDef>> {
        let mut out = Vec::new();
        for id in self.template.of_kind("AWS::ApiGatewayV2::Route") {
            let props = self.properties(id)?;
            let key = props.get("RouteKey").map(scalar_string).unwrap_or_default();
            let (method, path) = key
                .split_once(' ')
                .map(|(m, p)| (m.to_string(), p.to_string()))
                .unwrap_or(("ANY".to_string(), key.clone()));
            let target = props.get("Target").map(scalar_string).unwrap_or_default();
            let integration = target.strip_prefix("integrations/").unwrap_or(&target);
            let integration = self
                .by_reference(integration)
                .ok_or_else(|| anyhow!("{id}: integration {integration} is not in the template"))?;
            let uri = self
                .properties(&integration)?
                .get("IntegrationUri")
                .map(scalar_string)
                .unwrap_or_default();
            let function = self.by_attribute("Arn", &uri).ok_or_else(|| {
                anyhow!("{integration}: IntegrationUri {uri} is not a function of the template")
            })?;
            out.push(RouteDef {
                id: id.to_string(),
                method,
                path,
                authorization: props
                    .get("AuthorizationType")
                    .map(scalar_string)
                    .unwrap_or_else(|| "NONE".to_string()),
                function,
            });
        }
        Ok(out)
    }
}

/// A JSON scalar as CloudFormation turns it into a string.
pub fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An SQS queue of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Logical id.
    pub id: String,
    /// Queue name.
    pub name: String,
    /// `VisibilityTimeout`, seconds.
    pub visibility_timeout: u32,
    /// `MessageRetentionPeriod`, seconds.
    pub retention: u32,
    /// The dead-letter queue's logical id and maxReceiveCount.
    pub redrive: Option<(String, u32)>,
    /// A FIFO queue.
    pub fifo: bool,
}

/// A bucket and its notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketDef {
    /// Logical id.
    pub id: String,
    /// Bucket name.
    pub name: String,
    /// Queue notifications.
    pub notifications: Vec<NotificationDef>,
}

/// One S3 → SQS notification.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationDef {
    /// `s3:ObjectCreated:*`, …
    pub event: String,
    /// The queue's logical id.
    pub queue: String,
    /// Key prefix filter.
    pub prefix: String,
    /// Key suffix filter.
    pub suffix: String,
}

/// A function of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    /// Logical id.
    pub id: String,
    /// The binary (`Metadata.BuildProperties.Binary`): which lambdaml function it is.
    pub binary: String,
    /// Globals' variables, then the function's.
    pub environment: BTreeMap<String, String>,
    /// `MemorySize`.
    pub memory_mb: u64,
    /// `Timeout`, seconds.
    pub timeout_secs: u64,
    /// Schedule events.
    pub schedules: Vec<ScheduleDef>,
}

/// A schedule event.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef {
    /// The event's name.
    pub name: String,
    /// `rate(...)` or `cron(...)`.
    pub expression: String,
    /// Whether it fires.
    pub enabled: bool,
}

/// An SQS event source mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSourceDef {
    /// Logical id.
    pub id: String,
    /// The function's logical id.
    pub function: String,
    /// The queue's logical id.
    pub queue: String,
    /// `BatchSize`.
    pub batch_size: usize,
    /// `FunctionResponseTypes` has `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `Enabled`.
    pub enabled: bool,
}

/// An HTTP API route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDef {
    /// Logical id.
    pub id: String,
    /// `POST`, `GET`, `ANY`, …
    pub method: String,
    /// `/v2/models/{model}/infer`, `/v2/{proxy+}`, …
    pub path: String,
    /// `AWS_IAM`, `NONE`, `JWT`, `CUSTOM`.
    pub authorization: String,
    /// The function's logical id.
    pub function: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEMPLATE: &str = include_str!("../../template.yaml");

    fn stack(overrides: &[(&str, &str)]) -> Stack {
        let mut ctx = StackContext::new("lml");
        ctx.region = "eu-west-1".to_string();
        for (k, v) in overrides {
            ctx.overrides.insert(k.to_string(), v.to_string());
        }
        Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap()
    }

    #[test]
    fn the_template_resolves_to_the_pipeline() {
        let s = stack(&[]);
        let queues = s.queues().unwrap();
        let ingest = queues.iter().find(|q| q.id == "IngestQueue").unwrap();
        assert_eq!(ingest.name, "lml-ingest");
        assert_eq!(
            ingest.redrive,
            Some(("IngestDeadLetterQueue".to_string(), 5))
        );
        let buckets = s.buckets().unwrap();
        assert_eq!(buckets[0].name, "lml-123456789012-eu-west-1");
        assert_eq!(buckets[0].notifications[0].queue, "IngestQueue");
        assert_eq!(buckets[0].notifications[0].prefix, "raw/");
        let functions = s.functions().unwrap();
        let binaries: Vec<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
        for b in [
            "ingest",
            "preprocess",
            "train",
            "evaluate",
            "deploy",
            "score",
            "monitor",
        ] {
            assert!(binaries.contains(&b), "{binaries:?}");
        }
        let train = functions.iter().find(|f| f.binary == "train").unwrap();
        assert_eq!((train.memory_mb, train.timeout_secs), (10240, 900));
        assert_eq!(
            train.environment["LAMBDAML_STORE"],
            "s3://lml-123456789012-eu-west-1"
        );
        assert_eq!(train.environment["LAMBDAML_QUEUES"], "sqs://lml-");
        let score = functions.iter().find(|f| f.binary == "score").unwrap();
        assert!(
            !score.environment.contains_key("LAMBDAML_MODEL"),
            "NoValue drops it"
        );
        let monitor = functions.iter().find(|f| f.binary == "monitor").unwrap();
        assert_eq!(monitor.schedules[0].expression, "rate(1 hour)");
        let sources = s.event_sources().unwrap();
        assert_eq!(sources.len(), 5);
        assert!(sources.iter().all(|e| e.report_batch_item_failures));
        let routes = s.routes().unwrap();
        assert!(routes.iter().all(|r| r.authorization == "AWS_IAM"));
        assert!(
            routes
                .iter()
                .any(|r| r.method == "POST" && r.path == "/v2/models/{model}/feedback")
        );
        assert!(routes.iter().all(|r| r.function == "ScoreFunction"));
    }

    #[test]
    fn parameters_switch_what_they_say() {
        let s = stack(&[
            ("ScoreAuth", "NONE"),
            ("MaxReceiveCount", "2"),
            ("ScoreModel", "weather-rain"),
        ]);
        assert!(
            s.routes()
                .unwrap()
                .iter()
                .all(|r| r.authorization == "NONE")
        );
        let q = s.queues().unwrap();
        assert!(
            q.iter()
                .filter_map(|q| q.redrive.as_ref())
                .all(|(_, n)| *n == 2)
        );
        let f = s.functions().unwrap();
        let score = f.iter().find(|f| f.binary == "score").unwrap();
        assert_eq!(score.environment["LAMBDAML_MODEL"], "weather-rain");
        let mut ctx = StackContext::new("lml");
        ctx.overrides.insert("ScoreAuth".into(), "OPEN".into());
        let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
        assert!(err.to_string().contains("ScoreAuth"), "{err}");
        let mut ctx = StackContext::new("lml");
        ctx.overrides.insert("MaxReceiveCount".into(), "0".into());
        let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
        assert!(
            err.to_string()
                .contains("MaxReceiveCount=0 is outside 1..=1000"),
            "{err}"
        );
        let mut ctx = StackContext::new("lml");
        ctx.overrides.insert("ScoreAuht".into(), "NONE".into());
        let err = Stack::new(Template::parse(TEMPLATE).unwrap(), ctx).unwrap_err();
        assert!(
            err.to_string().contains("unknown parameter \"ScoreAuht\""),
            "{err}"
        );
    }

    #[test]
    fn intrinsics_resolve_like_cloudformation() {
        let t = Template::parse(
            "Parameters:\n  P: {Type: String, Default: a}\nConditions:\n  IsA: !Equals [!Ref P, a]\nResources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Join ['-', [!Ref 'AWS::StackName', !Select [1, !Split [',', 'x,y']]]]\n      Tags:\n        - {Key: k, Value: !If [IsA, !Sub '${!Literal}-${Q.Arn}', other]}\n        - !If [IsA, !Ref 'AWS::NoValue', {Key: gone}]\n      Long: {\"Fn::Sub\": [\"${X}!\", {X: !Ref P}]}\n",
        )
        .unwrap();
        let mut ctx = StackContext::new("st");
        ctx.region = "us-east-1".to_string();
        let s = Stack::new(t, ctx).unwrap();
        let p = s.properties("Q").unwrap();
        assert_eq!(p["QueueName"], "st-y");
        assert_eq!(
            p["Tags"],
            serde_json::json!([{"Key": "k", "Value": "${Literal}-arn:aws:sqs:us-east-1:123456789012:st-y"}])
        );
        assert_eq!(p["Long"], "a!");
        let bad =
            Template::parse("Resources:\n  Q:\n    Type: X\n    Properties:\n      A: !Ref Nope\n")
                .unwrap();
        let s = Stack::new(bad, StackContext::new("st")).unwrap();
        let err = s.properties("Q").unwrap_err();
        assert!(format!("{err:#}").contains("!Ref Nope"), "{err:#}");
    }
}
