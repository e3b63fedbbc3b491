//! The `threefoldtech/grid` provider's schema, and a walk of a generated `main.tf.json` against it.
//!
//! Used twice, so a provider that renames or drops an attribute fails loudly before anything is
//! created on the grid:
//! * **at run time**, after `tofu init`: [`ProviderSchema::from_tofu_json`] reads
//!   `tofu providers schema -json` of the provider actually installed, and the backend refuses to
//!   apply a config [`check_config`] finds fault with, naming the attribute;
//! * **in tests**: [`ProviderSchema::from_extraction`] reads the vendored schema extracted from the
//!   provider's Go source (`tests/fixtures/tfgrid/`), which also carries the validators (regexes,
//!   ranges, CIDR sizes) that `tofu providers schema -json` does not export.
//!
//! [`grid_client_rules`] adds what neither schema says but the grid client enforces at apply time
//! (`tfgrid-sdk-go` `grid-client/workloads/*.go`): 36-character names, seed and key lengths, the
//! TFChain name-contract rule.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use crate::grid_names::{gateway_label_problem, MAX_GRID_NAME_LEN};

/// The provider's source address.
pub const PROVIDER_SOURCE: &str = "threefoldtech/grid";

/// A value type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrType {
    /// `string`.
    String,
    /// `number`; `integer` when the provider's Go type is `TypeInt` (known from the extraction only).
    Number {
        /// Whole numbers only.
        integer: bool,
    },
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<AttrType>),
    /// `set(T)`.
    Set(Box<AttrType>),
    /// `map(T)`.
    Map(Box<AttrType>),
}

/// A validator of the provider (SDKv2 `validation.*`), from the extraction.
#[derive(Debug, Clone, PartialEq)]
pub enum Validator {
    /// `StringMatch(regexp)`.
    StringMatch(String),
    /// `IntBetween(min, max)`.
    IntBetween(i64, i64),
    /// `StringInSlice(values)`.
    StringInSlice(Vec<String>),
    /// `IsCIDRNetwork(min, max)`: a network address (host bits zero) with a prefix in range.
    CidrNetwork(u8, u8),
    /// `IsIPAddress`.
    IpAddress,
    /// `IsURLWithScheme(schemes)`.
    UrlWithScheme(Vec<String>),
    /// `StringIsNotEmpty`.
    NotEmpty,
}

/// One attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// Its type.
    pub ty: AttrType,
    /// Must be in the config (unless [`Attribute::env_default`] is set in the child's env).
    pub required: bool,
    /// May be in the config.
    pub optional: bool,
    /// Set by the provider; a computed attribute that is not optional must not be in the config.
    pub computed: bool,
    /// The environment variable that fills it when absent (SDKv2 `EnvDefaultFunc`); with a
    /// fallback value the attribute can never be missing.
    pub env_default: Option<(String, Option<Value>)>,
    /// Validators on the value (extraction only).
    pub validators: Vec<Validator>,
    /// Validators on each element of a list/map (extraction only).
    pub elem_validators: Vec<Validator>,
}

/// How a nested block repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// A JSON array of objects.
    List,
    /// A JSON array of objects, unordered.
    Set,
    /// One JSON object.
    Single,
}

/// A nested block type.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedBlock {
    /// Nesting mode.
    pub nesting: Nesting,
    /// Minimum number of blocks (0 = optional).
    pub min_items: u64,
    /// Maximum number of blocks (0 = unbounded).
    pub max_items: u64,
    /// The block's own schema.
    pub block: Block,
}

/// A block: attributes and nested block types.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    /// Attributes by name.
    pub attributes: BTreeMap<String, Attribute>,
    /// Nested block types by name.
    pub blocks: BTreeMap<String, NestedBlock>,
}

/// The provider block, every resource and data source.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderSchema {
    /// Where it came from (for messages).
    pub origin: String,
    /// The `provider "grid"` block.
    pub provider: Block,
    /// Resource types.
    pub resources: BTreeMap<String, Block>,
    /// Data source types.
    pub data_sources: BTreeMap<String, Block>,
}

/// A schema document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider schema ({origin}) unreadable at {path}: {problem}")]
pub struct SchemaError {
    /// Document.
    pub origin: String,
    /// JSON path.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// One thing the config gets wrong, at a path such as `resource.grid_deployment.vm.vms[0].mounts[0].name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where.
    pub path: String,
    /// What.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

fn v(path: impl Into<String>, problem: impl Into<String>) -> Violation {
    Violation {
        path: path.into(),
        problem: problem.into(),
    }
}

impl ProviderSchema {
    /// Read `tofu providers schema -json` output and take the `threefoldtech/grid` provider
    /// (any registry host). Unknown keys are ignored (newer OpenTofu versions add some).
    pub fn from_tofu_json(doc: &Value) -> Result<Self, SchemaError> {
        let origin = "tofu providers schema -json".to_string();
        let err = |path: &str, problem: &str| SchemaError {
            origin: origin.clone(),
            path: path.into(),
            problem: problem.into(),
        };
        let all = doc
            .get("provider_schemas")
            .and_then(Value::as_object)
            .ok_or_else(|| err("provider_schemas", "missing or not an object"))?;
        let (addr, p) = all
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/{PROVIDER_SOURCE}")) || *k == PROVIDER_SOURCE)
            .ok_or_else(|| {
                err(
                    "provider_schemas",
                    &format!(
                        "no {PROVIDER_SOURCE} provider installed (found: {})",
                        all.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
        let base = format!("provider_schemas.{addr}");
        let block_of = |v: &Value, path: &str| -> Result<Block, SchemaError> {
            let b = v
                .get("block")
                .ok_or_else(|| err(path, "missing \"block\""))?;
            tofu_block(b, &format!("{path}.block"), &origin)
        };
        let provider = block_of(
            p.get("provider")
                .ok_or_else(|| err(&base, "missing \"provider\""))?,
            &format!("{base}.provider"),
        )?;
        let mut resources = BTreeMap::new();
        for (name, r) in p
            .get("resource_schemas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            resources.insert(
                name.clone(),
                block_of(r, &format!("{base}.resource_schemas.{name}"))?,
            );
        }
        let mut data_sources = BTreeMap::new();
        for (name, r) in p
            .get("data_source_schemas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            data_sources.insert(
                name.clone(),
                block_of(r, &format!("{base}.data_source_schemas.{name}"))?,
            );
        }
        Ok(Self {
            origin: format!("{origin} ({addr})"),
            provider,
            resources,
            data_sources,
        })
    }

    /// Read the schema extracted from the provider's Go source (the format of
    /// `tests/fixtures/tfgrid/terraform-provider-grid.schema.json`: `provider`, `resources`,
    /// `data_sources`, each attribute with `type`, `required`/`optional`/`computed`, `default_env`,
    /// `validator`, `elem`, `block` + `nesting`).
    pub fn from_extraction(doc: &Value, origin: &str) -> Result<Self, SchemaError> {
        let err = |path: &str, problem: &str| SchemaError {
            origin: origin.into(),
            path: path.into(),
            problem: problem.into(),
        };
        let provider = extraction_block(
            doc.get("provider")
                .ok_or_else(|| err("provider", "missing"))?,
            "provider",
            origin,
        )?;
        let mut resources = BTreeMap::new();
        for (name, r) in doc
            .get("resources")
            .and_then(Value::as_object)
            .ok_or_else(|| err("resources", "missing"))?
        {
            let path = format!("resources.{name}.attributes");
            let attrs = r.get("attributes").ok_or_else(|| err(&path, "missing"))?;
            let mut b = extraction_block(attrs, &path, origin)?;
            add_sdk_implicit(&mut b, r.get("timeouts").is_some());
            resources.insert(name.clone(), b);
        }
        let mut data_sources = BTreeMap::new();
        for (name, r) in doc
            .get("data_sources")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let path = format!("data_sources.{name}.attributes");
            let attrs = r.get("attributes").ok_or_else(|| err(&path, "missing"))?;
            let mut b = extraction_block(attrs, &path, origin)?;
            add_sdk_implicit(&mut b, false);
            data_sources.insert(name.clone(), b);
        }
        Ok(Self {
            origin: origin.into(),
            provider,
            resources,
            data_sources,
        })
    }

    /// The schema as `tofu providers schema -json` prints it (for the stand-in `tofu` in tests),
    /// when the provider runs with the variables `env` set. Follows terraform-plugin-sdk v2's
    /// `coreConfigSchemaAttribute`: a Required attribute with a `DefaultFunc` is optional to
    /// OpenTofu only when that function yields a value at schema time (its env var is set, or it
    /// has a fallback); only `true` flags are written; validators are dropped.
    pub fn to_tofu_json(&self, address: &str, env: EnvNames<'_>) -> Value {
        let mut resources = serde_json::Map::new();
        for (k, b) in &self.resources {
            resources.insert(
                k.clone(),
                serde_json::json!({"version": 0, "block": block_json(b, env)}),
            );
        }
        let mut data = serde_json::Map::new();
        for (k, b) in &self.data_sources {
            data.insert(
                k.clone(),
                serde_json::json!({"version": 0, "block": block_json(b, env)}),
            );
        }
        serde_json::json!({
            "format_version": "1.0",
            "provider_schemas": {
                address: {
                    "provider": {"version": 0, "block": block_json(&self.provider, env)},
                    "resource_schemas": resources,
                    "data_source_schemas": data,
                }
            }
        })
    }
}

/// terraform-plugin-sdk v2 adds `id` (optional + computed) to every resource and data source, and
/// a `timeouts` block to resources that declare timeouts.
fn add_sdk_implicit(b: &mut Block, timeouts: bool) {
    b.attributes.entry("id".into()).or_insert(Attribute {
        ty: AttrType::String,
        required: false,
        optional: true,
        computed: true,
        env_default: None,
        validators: Vec::new(),
        elem_validators: Vec::new(),
    });
    if timeouts {
        let mut t = Block::default();
        for k in ["create", "update", "delete", "read"] {
            t.attributes.insert(
                k.into(),
                Attribute {
                    ty: AttrType::String,
                    required: false,
                    optional: true,
                    computed: false,
                    env_default: None,
                    validators: Vec::new(),
                    elem_validators: Vec::new(),
                },
            );
        }
        b.blocks.insert(
            "timeouts".into(),
            NestedBlock {
                nesting: Nesting::Single,
                min_items: 0,
                max_items: 0,
                block: t,
            },
        );
    }
}

fn type_json(t: &AttrType) -> Value {
    match t {
        AttrType::String => "string".into(),
        AttrType::Number { .. } => "number".into(),
        AttrType::Bool => "bool".into(),
        AttrType::List(e) => serde_json::json!(["list", type_json(e)]),
        AttrType::Set(e) => serde_json::json!(["set", type_json(e)]),
        AttrType::Map(e) => serde_json::json!(["map", type_json(e)]),
    }
}

fn block_json(b: &Block, env: EnvNames<'_>) -> Value {
    let mut attrs = serde_json::Map::new();
    for (k, a) in &b.attributes {
        let mut o = serde_json::Map::new();
        o.insert("type".into(), type_json(&a.ty));
        let defaulted = a
            .env_default
            .as_ref()
            .is_some_and(|(var, fallback)| fallback.is_some() || env.contains(&var.as_str()));
        let core_optional = a.optional || (a.required && defaulted);
        let core_required = a.required && !defaulted;
        if core_required {
            o.insert("required".into(), true.into());
        }
        if core_optional {
            o.insert("optional".into(), true.into());
        }
        if a.computed {
            o.insert("computed".into(), true.into());
        }
        attrs.insert(k.clone(), Value::Object(o));
    }
    let mut blocks = serde_json::Map::new();
    for (k, nb) in &b.blocks {
        let mut o = serde_json::Map::new();
        o.insert(
            "nesting_mode".into(),
            match nb.nesting {
                Nesting::List => "list",
                Nesting::Set => "set",
                Nesting::Single => "single",
            }
            .into(),
        );
        o.insert("block".into(), block_json(&nb.block, env));
        if nb.min_items > 0 {
            o.insert("min_items".into(), nb.min_items.into());
        }
        if nb.max_items > 0 {
            o.insert("max_items".into(), nb.max_items.into());
        }
        blocks.insert(k.clone(), Value::Object(o));
    }
    let mut out = serde_json::Map::new();
    out.insert("attributes".into(), Value::Object(attrs));
    if !blocks.is_empty() {
        out.insert("block_types".into(), Value::Object(blocks));
    }
    Value::Object(out)
}

fn tofu_type(v: &Value, path: &str, origin: &str) -> Result<AttrType, SchemaError> {
    let bad = || SchemaError {
        origin: origin.into(),
        path: path.into(),
        problem: format!("unknown type {v}"),
    };
    match v {
        Value::String(s) => match s.as_str() {
            "string" => Ok(AttrType::String),
            "number" => Ok(AttrType::Number { integer: false }),
            "bool" => Ok(AttrType::Bool),
            _ => Err(bad()),
        },
        Value::Array(a) if a.len() == 2 => {
            let inner = Box::new(tofu_type(&a[1], path, origin)?);
            match a[0].as_str() {
                Some("list") => Ok(AttrType::List(inner)),
                Some("set") => Ok(AttrType::Set(inner)),
                Some("map") => Ok(AttrType::Map(inner)),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn tofu_block(b: &Value, path: &str, origin: &str) -> Result<Block, SchemaError> {
    let mut out = Block::default();
    for (k, a) in b
        .get("attributes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let p = format!("{path}.attributes.{k}");
        let ty = tofu_type(
            a.get("type").ok_or_else(|| SchemaError {
                origin: origin.into(),
                path: p.clone(),
                problem: "attribute without a type (nested attribute types are not used by this provider)".into(),
            })?,
            &p,
            origin,
        )?;
        out.attributes.insert(
            k.clone(),
            Attribute {
                ty,
                required: flag(a, "required"),
                optional: flag(a, "optional"),
                computed: flag(a, "computed"),
                env_default: None,
                validators: Vec::new(),
                elem_validators: Vec::new(),
            },
        );
    }
    for (k, nb) in b
        .get("block_types")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let p = format!("{path}.block_types.{k}");
        let nesting = match nb.get("nesting_mode").and_then(Value::as_str) {
            Some("list") => Nesting::List,
            Some("set") => Nesting::Set,
            Some("single") | Some("group") => Nesting::Single,
            other => {
                return Err(SchemaError {
                    origin: origin.into(),
                    path: p,
                    problem: format!("unknown nesting_mode {other:?}"),
                })
            }
        };
        let inner = nb.get("block").ok_or_else(|| SchemaError {
            origin: origin.into(),
            path: p.clone(),
            problem: "missing block".into(),
        })?;
        out.blocks.insert(
            k.clone(),
            NestedBlock {
                nesting,
                min_items: nb.get("min_items").and_then(Value::as_u64).unwrap_or(0),
                max_items: nb.get("max_items").and_then(Value::as_u64).unwrap_or(0),
                block: tofu_block(inner, &format!("{p}.block"), origin)?,
            },
        );
    }
    Ok(out)
}

fn extraction_validator(v: &Value, path: &str, origin: &str) -> Result<Validator, SchemaError> {
    let bad = |problem: String| SchemaError {
        origin: origin.into(),
        path: path.into(),
        problem,
    };
    let strings = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let int = |k: &str| v.get(k).and_then(Value::as_i64);
    match v.get("kind").and_then(Value::as_str) {
        Some("StringMatch") => Ok(Validator::StringMatch(
            v.get("regex")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("StringMatch without regex".into()))?
                .to_string(),
        )),
        Some("IntBetween") => match (int("min"), int("max")) {
            (Some(a), Some(b)) => Ok(Validator::IntBetween(a, b)),
            _ => Err(bad("IntBetween without min/max".into())),
        },
        Some("StringInSlice") => Ok(Validator::StringInSlice(strings("values"))),
        Some("IsCIDRNetwork") => match (int("min_bits"), int("max_bits")) {
            (Some(a), Some(b)) => Ok(Validator::CidrNetwork(
                u8::try_from(a).map_err(|e| bad(e.to_string()))?,
                u8::try_from(b).map_err(|e| bad(e.to_string()))?,
            )),
            _ => Err(bad("IsCIDRNetwork without bits".into())),
        },
        Some("IsIPAddress") => Ok(Validator::IpAddress),
        Some("IsURLWithScheme") => Ok(Validator::UrlWithScheme(strings("schemes"))),
        Some("StringIsNotEmpty") => Ok(Validator::NotEmpty),
        other => Err(bad(format!("unknown validator kind {other:?}"))),
    }
}

fn extraction_type(t: &str, path: &str, origin: &str) -> Result<AttrType, SchemaError> {
    match t {
        "string" => Ok(AttrType::String),
        "int" => Ok(AttrType::Number { integer: true }),
        "float" => Ok(AttrType::Number { integer: false }),
        "bool" => Ok(AttrType::Bool),
        other => Err(SchemaError {
            origin: origin.into(),
            path: path.into(),
            problem: format!("unknown type {other:?}"),
        }),
    }
}

fn extraction_block(attrs: &Value, path: &str, origin: &str) -> Result<Block, SchemaError> {
    let mut out = Block::default();
    let obj = attrs.as_object().ok_or_else(|| SchemaError {
        origin: origin.into(),
        path: path.into(),
        problem: "not an object".into(),
    })?;
    for (k, a) in obj {
        let p = format!("{path}.{k}");
        let bad = |problem: &str| SchemaError {
            origin: origin.into(),
            path: p.clone(),
            problem: problem.into(),
        };
        let t = a
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no type"))?;
        if let Some(inner) = a.get("block") {
            let nesting = match a.get("nesting").and_then(Value::as_str) {
                Some("block_list") | None => Nesting::List,
                Some("block_set") => Nesting::Set,
                Some(_) => return Err(bad("unknown nesting")),
            };
            let required = flag(a, "required");
            out.blocks.insert(
                k.clone(),
                NestedBlock {
                    nesting,
                    min_items: a
                        .get("min_items")
                        .and_then(Value::as_u64)
                        .unwrap_or(u64::from(required)),
                    max_items: a.get("max_items").and_then(Value::as_u64).unwrap_or(0),
                    block: extraction_block(inner, &format!("{p}.block"), origin)?,
                },
            );
            continue;
        }
        let mut elem_validators = Vec::new();
        let ty = match t {
            "list" | "set" | "map" => {
                let e = a
                    .get("elem")
                    .ok_or_else(|| bad("collection without elem"))?;
                let et = e
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("elem without type"))?;
                if let Some(ev) = e.get("validator") {
                    elem_validators.push(extraction_validator(ev, &p, origin)?);
                }
                let inner = Box::new(extraction_type(et, &p, origin)?);
                match t {
                    "list" => AttrType::List(inner),
                    "set" => AttrType::Set(inner),
                    _ => AttrType::Map(inner),
                }
            }
            other => extraction_type(other, &p, origin)?,
        };
        let mut validators = Vec::new();
        if let Some(val) = a.get("validator") {
            validators.push(extraction_validator(val, &p, origin)?);
        }
        let env_default = a.get("default_env").and_then(|d| {
            let env = d.get("env")?.as_str()?.to_string();
            let fallback = d.get("fallback").filter(|f| !f.is_null()).cloned();
            Some((env, fallback))
        });
        out.attributes.insert(
            k.clone(),
            Attribute {
                ty,
                required: flag(a, "required"),
                optional: flag(a, "optional"),
                computed: flag(a, "computed"),
                env_default,
                validators,
                elem_validators,
            },
        );
    }
    Ok(out)
}

/// The environment variables the `tofu` child gets, by name (values are not needed to decide
/// whether an env-default attribute is filled).
pub type EnvNames<'a> = &'a [&'a str];

/// Walk `cfg` (a `main.tf.json` value) against `schema`. Returns every violation found, empty when
/// the provider accepts the config as far as its schema can tell. `env` names the variables the
/// child process gets, for attributes the provider fills from the environment.
pub fn check_config(schema: &ProviderSchema, cfg: &Value, env: EnvNames<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(top) = cfg.as_object() else {
        return vec![v("", "the config is not a JSON object")];
    };
    for key in top.keys() {
        if !["terraform", "provider", "resource", "data", "output"].contains(&key.as_str()) {
            out.push(v(key.clone(), "unexpected top-level key"));
        }
    }
    // terraform.required_providers.grid: the source, and an exact pin.
    let req = &cfg["terraform"]["required_providers"]["grid"];
    if req["source"].as_str() != Some(PROVIDER_SOURCE) {
        out.push(v(
            "terraform.required_providers.grid.source",
            format!("must be {PROVIDER_SOURCE:?}"),
        ));
    }
    match req["version"].as_str() {
        Some(s) if crate::provider_pin::ProviderVersion::from_constraint(s).is_ok() => {}
        Some(s) => out.push(v(
            "terraform.required_providers.grid.version",
            format!("{s:?} is not an exact pin (\"= X.Y.Z[-suffix]\")"),
        )),
        None => out.push(v(
            "terraform.required_providers.grid.version",
            "missing: the provider version must be pinned",
        )),
    }
    match cfg.get("provider").and_then(|p| p.get("grid")) {
        Some(p) => check_block(&schema.provider, p, "provider.grid", env, &mut out),
        None => out.push(v("provider.grid", "missing provider block")),
    }
    for (section, types) in [
        ("resource", &schema.resources),
        ("data", &schema.data_sources),
    ] {
        for (ty, instances) in cfg
            .get(section)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let path = format!("{section}.{ty}");
            let Some(block) = types.get(ty) else {
                out.push(v(path, format!("{} has no such type", schema.origin)));
                continue;
            };
            let Some(instances) = instances.as_object() else {
                out.push(v(path, "not an object of instances"));
                continue;
            };
            for (name, body) in instances {
                check_block(block, body, &format!("{path}.{name}"), &[], &mut out);
            }
        }
    }
    for (name, o) in cfg
        .get("output")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if o.get("value").is_none() {
            out.push(v(format!("output.{name}"), "no value"));
        }
    }
    check_references(schema, cfg, cfg, "", &mut out);
    out
}

fn check_block(
    block: &Block,
    body: &Value,
    path: &str,
    env: EnvNames<'_>,
    out: &mut Vec<Violation>,
) {
    let Some(obj) = body.as_object() else {
        out.push(v(path, "must be an object"));
        return;
    };
    for (k, val) in obj {
        let p = format!("{path}.{k}");
        if let Some(a) = block.attributes.get(k) {
            if a.computed && !a.optional && !a.required {
                out.push(v(p, "is computed by the provider and must not be set"));
                continue;
            }
            check_value(&a.ty, &a.validators, &a.elem_validators, val, &p, out);
        } else if let Some(nb) = block.blocks.get(k) {
            let items: Vec<&Value> = match (nb.nesting, val) {
                (Nesting::Single, Value::Object(_)) => vec![val],
                (Nesting::Single, Value::Array(a)) if a.len() <= 1 => a.iter().collect(),
                (Nesting::List | Nesting::Set, Value::Array(a)) => a.iter().collect(),
                _ => {
                    out.push(v(p, "is a nested block: must be a list of objects"));
                    continue;
                }
            };
            let n = items.len() as u64;
            if n < nb.min_items {
                out.push(v(
                    &p,
                    format!("needs at least {} block(s), has {n}", nb.min_items),
                ));
            }
            if nb.max_items > 0 && n > nb.max_items {
                out.push(v(
                    &p,
                    format!("allows at most {} block(s), has {n}", nb.max_items),
                ));
            }
            for (i, item) in items.into_iter().enumerate() {
                check_block(&nb.block, item, &format!("{p}[{i}]"), &[], out);
            }
        } else {
            out.push(v(
                p,
                "unknown attribute: the provider's schema has no such attribute or block",
            ));
        }
    }
    for (k, a) in &block.attributes {
        if a.required && !obj.contains_key(k) {
            let filled = a
                .env_default
                .as_ref()
                .is_some_and(|(var, fallback)| fallback.is_some() || env.contains(&var.as_str()));
            if !filled {
                let how = match &a.env_default {
                    Some((var, _)) => format!(" (nor is env {var} given to tofu)"),
                    None => String::new(),
                };
                out.push(v(
                    format!("{path}.{k}"),
                    format!("required attribute missing{how}"),
                ));
            }
        }
    }
    for (k, nb) in &block.blocks {
        if nb.min_items > 0 && !obj.contains_key(k) {
            out.push(v(
                format!("{path}.{k}"),
                format!("required block missing (at least {})", nb.min_items),
            ));
        }
    }
}

/// A string with `${…}` is an expression: its type is known only at plan time, so only its
/// references are checked (by [`check_references`]).
fn is_template(val: &Value) -> bool {
    val.as_str().is_some_and(|s| s.contains("${"))
}

fn check_value(
    ty: &AttrType,
    validators: &[Validator],
    elem_validators: &[Validator],
    val: &Value,
    path: &str,
    out: &mut Vec<Violation>,
) {
    if is_template(val) {
        return;
    }
    let ok = match ty {
        AttrType::String => val.is_string(),
        AttrType::Number { integer: true } => val.is_i64() || val.is_u64(),
        AttrType::Number { integer: false } => val.is_number(),
        AttrType::Bool => val.is_boolean(),
        AttrType::List(e) | AttrType::Set(e) => match val.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(e, elem_validators, &[], item, &format!("{path}[{i}]"), out);
                }
                true
            }
            None => false,
        },
        AttrType::Map(e) => match val.as_object() {
            Some(m) => {
                for (k, item) in m {
                    check_value(
                        e,
                        elem_validators,
                        &[],
                        item,
                        &format!("{path}[{k:?}]"),
                        out,
                    );
                }
                true
            }
            None => false,
        },
    };
    if !ok {
        out.push(v(path, format!("expected {}, got {val}", type_name(ty))));
        return;
    }
    for validator in validators {
        if let Some(problem) = validate(validator, val) {
            out.push(v(path, problem));
        }
    }
}

fn type_name(t: &AttrType) -> String {
    match t {
        AttrType::String => "a string".into(),
        AttrType::Number { integer: true } => "an integer".into(),
        AttrType::Number { integer: false } => "a number".into(),
        AttrType::Bool => "a bool".into(),
        AttrType::List(e) => format!("a list of {}", type_name(e)),
        AttrType::Set(e) => format!("a set of {}", type_name(e)),
        AttrType::Map(e) => format!("a map of {}", type_name(e)),
    }
}

fn validate(validator: &Validator, val: &Value) -> Option<String> {
    match validator {
        Validator::StringMatch(re) => {
            let s = val.as_str()?;
            match regex_match(re, s) {
                Ok(true) => None,
                Ok(false) => Some(format!("{s:?} does not match {re}")),
                Err(e) => Some(format!("cannot check regex {re}: {e}")),
            }
        }
        Validator::IntBetween(lo, hi) => {
            let n = val.as_i64().or_else(|| val.as_u64().map(|_| i64::MAX))?;
            (!(*lo..=*hi).contains(&n)).then(|| format!("{n} is outside {lo}..={hi}"))
        }
        Validator::StringInSlice(vals) => {
            let s = val.as_str()?;
            (!vals.iter().any(|x| x == s)).then(|| format!("{s:?} is not one of {vals:?}"))
        }
        Validator::CidrNetwork(lo, hi) => {
            let s = val.as_str()?;
            cidr_problem(s, *lo, *hi)
        }
        Validator::IpAddress => {
            let s = val.as_str()?;
            s.parse::<IpAddr>()
                .is_err()
                .then(|| format!("{s:?} is not an IP address"))
        }
        Validator::UrlWithScheme(schemes) => {
            let s = val.as_str()?;
            let ok = s.split_once("://").is_some_and(|(scheme, rest)| {
                schemes.iter().any(|x| x == scheme) && !rest.is_empty()
            });
            (!ok).then(|| format!("{s:?} is not a URL with scheme {schemes:?}"))
        }
        Validator::NotEmpty => {
            let s = val.as_str()?;
            s.is_empty().then(|| "must not be empty".to_string())
        }
    }
}

/// Go's `validation.IsCIDRNetwork`: parses, is the canonical network address (no host bits), and
/// the prefix length is within `lo..=hi`.
fn cidr_problem(s: &str, lo: u8, hi: u8) -> Option<String> {
    let Some((addr, bits)) = s.split_once('/') else {
        return Some(format!("{s:?} is not a CIDR"));
    };
    let (Ok(ip), Ok(bits)) = (addr.parse::<IpAddr>(), bits.parse::<u8>()) else {
        return Some(format!("{s:?} is not a CIDR"));
    };
    let width = if ip.is_ipv4() { 32 } else { 128 };
    if bits > width {
        return Some(format!("{s:?}: prefix /{bits} is longer than the address"));
    }
    let host_bits_zero = match ip {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            bits == 32 || n & (u32::MAX >> bits) == 0
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            bits == 128 || n & (u128::MAX >> bits) == 0
        }
    };
    if !host_bits_zero {
        return Some(format!("{s:?} is not a network address (host bits set)"));
    }
    (!(lo..=hi).contains(&bits)).then(|| format!("{s:?}: prefix /{bits} outside /{lo}..=/{hi}"))
}

/// A tiny anchored regex matcher for the patterns the provider uses (`^[a-zA-Z0-9_]+$`,
/// `^[A-Za-z0-9:.]+/[A-Za-z0-9]+/[A-Za-z0-9]+$`): character classes with ranges, literals, `\`
/// escapes, and the `+ * ?` quantifiers. Anything else is an error, never a silent pass.
pub fn regex_match(re: &str, s: &str) -> Result<bool, String> {
    #[derive(Debug)]
    enum Atom {
        Class(Vec<(char, char)>),
        Lit(char),
    }
    let mut chars = re.chars().peekable();
    let anchored_start = chars.peek() == Some(&'^');
    if anchored_start {
        chars.next();
    }
    let mut atoms: Vec<(Atom, char)> = Vec::new();
    let mut anchored_end = false;
    while let Some(c) = chars.next() {
        let atom = match c {
            '$' if chars.peek().is_none() => {
                anchored_end = true;
                break;
            }
            '[' => {
                let mut ranges = Vec::new();
                loop {
                    let a = match chars.next() {
                        Some(']') => break,
                        Some('\\') => chars.next().ok_or("dangling escape")?,
                        Some('^') if ranges.is_empty() => {
                            return Err("negated classes unsupported".into())
                        }
                        Some(x) => x,
                        None => return Err("unclosed class".into()),
                    };
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        match chars.next() {
                            Some(']') => {
                                ranges.push((a, a));
                                ranges.push(('-', '-'));
                                break;
                            }
                            Some(b) => ranges.push((a, b)),
                            None => return Err("unclosed class".into()),
                        }
                    } else {
                        ranges.push((a, a));
                    }
                }
                Atom::Class(ranges)
            }
            '\\' => Atom::Lit(chars.next().ok_or("dangling escape")?),
            '.' | '(' | ')' | '|' | '{' | '}' | '+' | '*' | '?' => {
                return Err(format!("unsupported regex syntax {c:?}"))
            }
            x => Atom::Lit(x),
        };
        let q = match chars.peek() {
            Some('+') | Some('*') | Some('?') => chars.next().unwrap_or('1'),
            _ => '1',
        };
        atoms.push((atom, q));
    }
    if !anchored_start || !anchored_end {
        return Err("only fully anchored patterns (^…$) are supported".into());
    }
    fn hit(a: &Atom, c: char) -> bool {
        match a {
            Atom::Lit(l) => *l == c,
            Atom::Class(r) => r.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)),
        }
    }
    fn go(atoms: &[(Atom, char)], s: &[char]) -> bool {
        let Some(((atom, q), rest)) = atoms.split_first() else {
            return s.is_empty();
        };
        let (min, max) = match q {
            '+' => (1, usize::MAX),
            '*' => (0, usize::MAX),
            '?' => (0, 1),
            _ => (1, 1),
        };
        let mut n = 0;
        while n < max && n < s.len() && hit(atom, s[n]) {
            n += 1;
        }
        (min..=n).rev().any(|k| go(rest, &s[k..]))
    }
    let s: Vec<char> = s.chars().collect();
    Ok(go(&atoms, &s))
}

/// One `${…}` reference split into its traversal: `grid_deployment.vm.vms[0].ip` →
/// `["grid_deployment", "vm", "vms", "[0]", "ip"]`.
fn traversal(expr: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    for seg in expr.trim().split('.') {
        let (name, mut idx) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        parts.push(name.to_string());
        while let Some(rest) = idx.strip_prefix('[') {
            let end = rest.find(']')?;
            parts.push(format!("[{}]", &rest[..end]));
            idx = &rest[end + 1..];
        }
        if !idx.is_empty() {
            return None;
        }
    }
    Some(parts)
}

fn check_references(
    schema: &ProviderSchema,
    root: &Value,
    val: &Value,
    path: &str,
    out: &mut Vec<Violation>,
) {
    match val {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else {
                    out.push(v(path, format!("unterminated ${{ in {s:?}")));
                    return;
                };
                if let Some(problem) = reference_problem(schema, root, &after[..end]) {
                    out.push(v(path, problem));
                }
                rest = &after[end + 1..];
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_references(schema, root, x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                check_references(schema, root, x, &p, out);
            }
        }
        _ => {}
    }
}

/// Does `expr` name a real attribute of a resource (or data source) in this config?
fn reference_problem(schema: &ProviderSchema, root: &Value, expr: &str) -> Option<String> {
    let Some(parts) = traversal(expr) else {
        return Some(format!("${{{expr}}} is not a plain reference"));
    };
    let (section, types, parts) = if parts.first().map(String::as_str) == Some("data") {
        ("data", &schema.data_sources, &parts[1..])
    } else {
        ("resource", &schema.resources, &parts[..])
    };
    let [ty, name, path @ ..] = parts else {
        return Some(format!(
            "${{{expr}}} does not name <type>.<name>.<attribute>"
        ));
    };
    let Some(block) = types.get(ty) else {
        return Some(format!(
            "${{{expr}}}: {section} type {ty} is not in the provider's schema"
        ));
    };
    let Some(mut node) = root
        .get(section)
        .and_then(|s| s.get(ty))
        .and_then(|t| t.get(name))
    else {
        return Some(format!(
            "${{{expr}}}: {section}.{ty}.{name} is not in this config"
        ));
    };
    let mut block = block;
    let mut i = 0;
    while i < path.len() {
        let seg = &path[i];
        if let Some(a) = block.attributes.get(seg) {
            // An attribute: what follows may only index into it.
            let rest_ok = path[i + 1..].iter().all(|p| p.starts_with('['));
            return (!rest_ok).then(|| {
                format!(
                    "${{{expr}}}: {seg} is an attribute ({}), not a block",
                    type_name(&a.ty)
                )
            });
        }
        let Some(nb) = block.blocks.get(seg) else {
            return Some(format!(
                "${{{expr}}}: {ty} has no attribute or block {seg:?} here"
            ));
        };
        node = node.get(seg.as_str()).unwrap_or(&Value::Null);
        if nb.nesting != Nesting::Single {
            let Some(idx) = path
                .get(i + 1)
                .and_then(|p| p.strip_prefix('['))
                .and_then(|p| p.strip_suffix(']'))
            else {
                return Some(format!("${{{expr}}}: block list {seg} needs an index"));
            };
            let Ok(n) = idx.parse::<usize>() else {
                return Some(format!("${{{expr}}}: index {idx:?} is not a number"));
            };
            match node.as_array().and_then(|a| a.get(n)) {
                Some(x) => node = x,
                None => {
                    return Some(format!(
                        "${{{expr}}}: {seg}[{n}] does not exist in this config"
                    ))
                }
            }
            i += 1;
        }
        block = &nb.block;
        i += 1;
    }
    Some(format!("${{{expr}}} names a block, not an attribute"))
}

/// Rules the grid client (tfgrid-sdk-go `grid-client/workloads/*.go` at `10e7b390`) and TFChain
/// enforce at apply time, which no schema states. The walk of the schema does not catch these; a
/// config breaking them fails mid-apply, after contracts were created.
pub fn grid_client_rules(cfg: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    let res = &cfg["resource"];
    let name_rule = |path: String, val: &Value, out: &mut Vec<Violation>| {
        if let Some(s) = val.as_str() {
            if is_template(val) {
                return;
            }
            let n = s.chars().count();
            if n == 0 || n > MAX_GRID_NAME_LEN {
                out.push(v(path, format!("{s:?} is {n} characters; the grid client allows 1..={MAX_GRID_NAME_LEN} (validateName)")));
            }
        }
    };
    for (name, net) in res["grid_network"].as_object().into_iter().flatten() {
        let p = format!("resource.grid_network.{name}");
        name_rule(format!("{p}.name"), &net["name"], &mut out);
        let nodes: Vec<String> = net["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n.to_string())
            .collect();
        for (node, key) in net["mycelium_keys"].as_object().into_iter().flatten() {
            if !nodes.contains(node) {
                out.push(v(
                    format!("{p}.mycelium_keys[{node:?}]"),
                    "a key for a node that is not in `nodes`",
                ));
            }
            if !is_hex_of(key, 32) {
                out.push(v(
                    format!("{p}.mycelium_keys[{node:?}]"),
                    "must be hex of 32 bytes",
                ));
            }
        }
    }
    for (name, d) in res["grid_deployment"].as_object().into_iter().flatten() {
        let p = format!("resource.grid_deployment.{name}");
        name_rule(format!("{p}.name"), &d["name"], &mut out);
        let disks: Vec<&str> = d["disks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["name"].as_str())
            .collect();
        for (i, disk) in d["disks"].as_array().into_iter().flatten().enumerate() {
            name_rule(format!("{p}.disks[{i}].name"), &disk["name"], &mut out);
        }
        for (i, vm) in d["vms"].as_array().into_iter().flatten().enumerate() {
            let vp = format!("{p}.vms[{i}]");
            name_rule(format!("{vp}.name"), &vm["name"], &mut out);
            let cpu = vm["cpu"].as_u64().unwrap_or(1);
            if !(1..=32).contains(&cpu) {
                out.push(v(format!("{vp}.cpu"), format!("{cpu} outside 1..=32")));
            }
            let mem = vm["memory"].as_u64().unwrap_or(0);
            if mem < 250 {
                out.push(v(format!("{vp}.memory"), format!("{mem} MB < 250 MB")));
            }
            // workloads/vm.go: MinRootSize is 500 MB when cpu * memory_GB / 8 == 0, else 2 GB.
            let min_root = if cpu * (mem / 1024) / 8 == 0 {
                500
            } else {
                2048
            };
            if let Some(root) = vm["rootfs_size"].as_u64() {
                if root != 0 && root < min_root {
                    out.push(v(
                        format!("{vp}.rootfs_size"),
                        format!("{root} MB < the grid client's minimum {min_root} MB"),
                    ));
                }
            }
            if let Some(seed) = vm.get("mycelium_ip_seed") {
                if !is_hex_of(seed, 6) {
                    out.push(v(
                        format!("{vp}.mycelium_ip_seed"),
                        "must be hex of 6 bytes",
                    ));
                }
            }
            for (j, m) in vm["mounts"].as_array().into_iter().flatten().enumerate() {
                name_rule(format!("{vp}.mounts[{j}].name"), &m["name"], &mut out);
                if let Some(n) = m["name"].as_str() {
                    if !disks.contains(&n) {
                        out.push(v(
                            format!("{vp}.mounts[{j}].name"),
                            format!("mounts {n:?}, which is not a disk of this deployment"),
                        ));
                    }
                }
            }
        }
    }
    for (name, gw) in res["grid_name_proxy"].as_object().into_iter().flatten() {
        let p = format!("resource.grid_name_proxy.{name}.name");
        name_rule(p.clone(), &gw["name"], &mut out);
        if let Some(label) = gw["name"].as_str() {
            // TFChain: 3..64 of a-z 0-9 - _; and it is the DNS label of the public URL.
            if let Some(problem) = gateway_label_problem(label) {
                out.push(v(p, problem));
            }
        }
    }
    out
}

fn is_hex_of(v: &Value, bytes: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == bytes * 2 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mini_regex() {
        let name = "^[a-zA-Z0-9_]+$";
        for (s, ok) in [
            ("abc_1", true),
            ("", false),
            ("a-b", false),
            ("A", true),
            ("a b", false),
        ] {
            assert_eq!(regex_match(name, s), Ok(ok), "{s}");
        }
        let gpu = "^[A-Za-z0-9:.]+/[A-Za-z0-9]+/[A-Za-z0-9]+$";
        assert_eq!(regex_match(gpu, "0000:0e:00.0/1002/744c"), Ok(true));
        assert_eq!(regex_match(gpu, "0000:0e:00.0/1002"), Ok(false));
        assert!(regex_match("a.*", "a").is_err());
        assert!(regex_match("[a-z]+", "a").is_err());
    }

    #[test]
    fn cidr_rules_match_go() {
        assert_eq!(cidr_problem("10.20.0.0/16", 16, 16), None);
        assert!(cidr_problem("10.20.1.0/16", 16, 16).is_some());
        assert!(cidr_problem("10.20.0.0/24", 16, 16).is_some());
        assert!(cidr_problem("10.20.0.0", 16, 16).is_some());
        assert!(cidr_problem("10.20.0.0/33", 16, 16).is_some());
    }

    #[test]
    fn reads_the_tofu_format() {
        let doc = serde_json::json!({"format_version": "1.0", "provider_schemas": {
            "registry.opentofu.org/threefoldtech/grid": {
                "provider": {"version": 0, "block": {"attributes": {
                    "mnemonic": {"type": "string", "optional": true, "sensitive": true}}}},
                "resource_schemas": {"grid_network": {"version": 0, "block": {
                    "attributes": {"nodes": {"type": ["list", "number"], "required": true}},
                    "block_types": {"x": {"nesting_mode": "list", "block": {"attributes": {}}, "max_items": 1}}}}}}}});
        let s = ProviderSchema::from_tofu_json(&doc).unwrap();
        assert_eq!(
            s.resources["grid_network"].attributes["nodes"].ty,
            AttrType::List(Box::new(AttrType::Number { integer: false }))
        );
        assert_eq!(s.resources["grid_network"].blocks["x"].max_items, 1);
        assert!(s.provider.attributes["mnemonic"].optional);
        let none = serde_json::json!({"format_version": "1.0", "provider_schemas": {"registry.opentofu.org/hashicorp/null": {}}});
        let e = ProviderSchema::from_tofu_json(&none).unwrap_err();
        assert!(e.to_string().contains("hashicorp/null"), "{e}");
    }
}
