//! The API description: every route is declared once, as an [`Op`] beside its handler,
//! and both the router and the OpenAPI 3.1 document at `/openapi.json` are built from
//! that one list, so they cannot drift apart.

use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};

use crate::app::{Shared, WRITTEN_LSN_HEADER};

/// One documented operation.
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub ok: u16,
    /// Statuses besides the ones every route can answer (400 for a malformed
    /// `x-cortex-written-lsn`, 500, 503, 504).
    pub errors: &'static [u16],
    pub query: &'static [(&'static str, &'static str)],
    pub body: Option<Value>,
    pub admin: bool,
}

pub fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    ok: u16,
    errors: &'static [u16],
) -> Op {
    Op {
        method,
        path,
        summary,
        ok,
        errors,
        query: &[],
        body: None,
        admin: false,
    }
}

impl Op {
    /// Query parameters, name and description.
    pub fn query(mut self, params: &'static [(&'static str, &'static str)]) -> Self {
        self.query = params;
        self
    }

    /// A JSON body with these properties (`name: type`), `required` among them.
    pub fn body(mut self, props: &[(&str, &str)], required: &[&str]) -> Self {
        let properties: Map<String, Value> = props
            .iter()
            .map(|(name, ty)| ((*name).to_owned(), schema_of(ty)))
            .collect();
        self.body = Some(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
            "required": required,
        }));
        self
    }

    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }
}

fn schema_of(ty: &str) -> Value {
    match ty {
        "integer[]" => json!({ "type": "array", "items": { "type": "integer" } }),
        "object" => json!({ "type": "object" }),
        other => json!({ "type": other }),
    }
}

/// The router of `ops`.
pub fn router(ops: Vec<(Op, MethodRouter<Shared>)>) -> axum::Router<Shared> {
    ops.into_iter()
        .fold(axum::Router::new(), |r, (op, handler)| {
            r.route(op.path, handler)
        })
}

fn describe(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No content",
        400 => {
            "Bad request: malformed query, path, cursor, filter, priority or x-cortex-written-lsn"
        }
        401 => "No admin token",
        403 => "Wrong admin token",
        404 => "Unknown id",
        409 => "Conflict with an existing record",
        413 => "Body over the limit",
        415 => "Body not sent as application/json",
        422 => "Body malformed for its type, or invalid",
        500 => "Internal error",
        503 => "Overloaded (Retry-After), or a backend is unavailable",
        504 => "No answer within the request timeout",
        _ => "See the error code",
    }
}

/// The OpenAPI 3.1 document of `ops`.
pub fn document(ops: &[&Op]) -> Value {
    let mut paths = Map::new();
    for op in ops {
        let mut responses = Map::new();
        let mut ok = if op.ok == 204 {
            json!({ "description": describe(op.ok) })
        } else {
            json!({ "description": describe(op.ok), "content": { "application/json": { "schema": { "type": "object" } } } })
        };
        if op.method != "get" {
            ok["headers"] = json!({ WRITTEN_LSN_HEADER: {
                "description": "With read replicas: the primary's WAL position after this request; send it back to read your writes",
                "schema": { "type": "string", "pattern": "^[0-9]+$" }
            } });
        }
        responses.insert(op.ok.to_string(), ok);
        let mut errors: Vec<u16> = op.errors.to_vec();
        if op.body.is_some() {
            errors.extend([400, 413, 415, 422]);
        }
        if op.admin {
            errors.extend([401, 403]);
        }
        // 400 everywhere: a malformed x-cortex-written-lsn header.
        errors.extend([400, 500, 503, 504]);
        errors.sort_unstable();
        errors.dedup();
        for status in errors {
            responses.insert(
                status.to_string(),
                json!({
                    "description": describe(status),
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }),
            );
        }
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if op.path.starts_with("/admin/tasks") {
                    json!({ "type": "string" })
                } else {
                    json!({ "type": "integer" })
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        parameters.extend(op.query.iter().map(|(name, description)| {
            json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } })
        }));
        parameters.push(json!({
            "name": WRITTEN_LSN_HEADER,
            "in": "header",
            "required": false,
            "description": "With read replicas: the position a write answered; replica reads then include that write",
            "schema": { "type": "string", "pattern": "^[0-9]+$" }
        }));
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, op.path),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(schema) = &op.body {
            operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        if op.admin {
            operation["security"] = json!([{ "admin": [] }]);
        }
        let item = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        item[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Cortex example service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Users, workspaces, conversations and messages, with caching, batching, background tasks, metrics and admin routes.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
                    } }
                }
            },
            "securitySchemes": { "admin": { "type": "http", "scheme": "bearer", "description": "CORTEX_ADMIN_TOKEN" } }
        }
    })
}
