//! The OpenRPC 1.3 document of the service, generated from the Rust types.
//!
//! Params are by name: each field of a method's params struct becomes one content descriptor.
//! `rpc.discover` is served but, as the OpenRPC spec reserves it, not listed as a method.

use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::{Schema, SchemaObject};
use serde_json::{json, Map, Value};

use crate::methods::{describe_all, MethodDescription};
use crate::ErrorKind;

/// The OpenRPC version we emit.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// The whole document for the given service version.
pub fn document(service_version: &str) -> Value {
    let mut gen = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "#/components/schemas/".into();
            s.option_add_null_type = true;
            s.option_nullable = false;
        })
        .into_generator();
    let methods: Vec<Value> = describe_all()
        .iter()
        .map(|m| method_object(&mut gen, m))
        .collect();
    let schemas: Map<String, Value> = gen
        .take_definitions()
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or(Value::Null)))
        .collect();
    let errors: Map<String, Value> = ErrorKind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str().to_owned(),
                json!({ "code": k.code(), "message": k.as_str() }),
            )
        })
        .collect();
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "hero_os_tfgrid_deployer",
            "version": service_version,
            "description": "Hands out personal Hero OS demo VMs on the ThreeFold Grid, gated by Forge single sign-on. \
                Application errors carry a stable `data.kind`; see components.errors.",
        },
        "methods": methods,
        "components": { "schemas": schemas, "errors": errors },
    })
}

fn method_object(gen: &mut SchemaGenerator, m: &MethodDescription) -> Value {
    let params_schema = (m.params)(gen);
    let params = content_descriptors(gen, &params_schema);
    let result_schema = (m.result)(gen);
    let errors: Vec<Value> = m
        .errors
        .iter()
        .map(|k| json!({ "code": k.code(), "message": k.as_str() }))
        .collect();
    let mut obj = json!({
        "name": m.name,
        "summary": m.summary,
        "paramStructure": "by-name",
        "params": params,
        "result": { "name": snake(m.result_name), "schema": result_schema },
    });
    if !errors.is_empty() {
        obj["errors"] = Value::Array(errors);
    }
    obj
}

/// Expands a params struct (usually a `$ref`) into one content descriptor per field.
fn content_descriptors(gen: &SchemaGenerator, schema: &Schema) -> Vec<Value> {
    let Some(object) = resolve(gen, schema) else {
        return Vec::new();
    };
    let Some(validation) = object.object.as_ref() else {
        return Vec::new();
    };
    validation
        .properties
        .iter()
        .map(|(name, prop)| {
            let mut descriptor = json!({
                "name": name,
                "required": validation.required.contains(name),
                "schema": serde_json::to_value(prop).unwrap_or(Value::Null),
            });
            if let Schema::Object(o) = prop {
                if let Some(desc) = o.metadata.as_ref().and_then(|m| m.description.clone()) {
                    descriptor["description"] = Value::String(desc);
                }
            }
            descriptor
        })
        .collect()
}

fn resolve<'a>(gen: &'a SchemaGenerator, schema: &'a Schema) -> Option<&'a SchemaObject> {
    match schema {
        Schema::Object(o) => match o.reference.as_deref() {
            Some(r) => {
                let name = r.rsplit('/').next()?;
                match gen.definitions().get(name)? {
                    Schema::Object(def) => Some(def),
                    Schema::Bool(_) => None,
                }
            }
            None => Some(o),
        },
        Schema::Bool(_) => None,
    }
}

fn snake(type_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in type_name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::ALL_METHOD_NAMES;

    #[test]
    fn every_method_is_documented_with_its_params() {
        let doc = document("0.0.0");
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ALL_METHOD_NAMES);
        let create = &doc["methods"][0];
        assert_eq!(create["name"], "deployer.create_user");
        let params: Vec<&str> = create["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            params,
            ["username", "display_name", "email", "discard_if_refused"]
        );
        assert_eq!(create["params"][0]["required"], true);
        assert_eq!(create["params"][1]["required"], false);
        assert_eq!(create["params"][3]["required"], false);
        let result_ref = create["result"]["schema"]["$ref"].as_str().unwrap();
        let name = result_ref.rsplit('/').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object());
    }
}
