//! The intrinsic functions and conditions, evaluated as CloudFormation evaluates them.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};
use serde_norway::Value as Yaml;

use super::{Resolved, Stack, scalar_string, yaml_str};

impl Stack {
    pub(super) fn condition_value(&self, expr: &Yaml) -> Result<bool> {
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
}
