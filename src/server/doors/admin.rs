//! The admin API, `/admin/v1/...`, for operators: bearer tokens from `server.admin_tokens` (never a
//! tenant's). Today: a tenant's protection rules and blocks, and lifting a block early.
//!
//! - `GET /admin/v1/tenants/<tenant>/protection`: the rules and every live block;
//! - `DELETE /admin/v1/tenants/<tenant>/protection/<rule>/<key>`: lifts that block (`204`, or `404` when the
//!   key is not blocked); the key is `CN` or a prefix such as `+861380` (or `%2B861380`).

use crate::config::{Config, ProtectionKey};
use crate::error::GatewayError;
use crate::server::{respond, Gateway};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

const PREFIX: &str = "/admin/v1/";

/// The one admin authentication check: `Authorization: Bearer <one of server.admin_tokens>`. Tokens are
/// kept as digests and compared in constant time; a tenant token is never an admin token (`compile` refuses
/// the same value in both).
pub(crate) fn authorize(config: &Config, headers: &HeaderMap) -> Result<(), GatewayError> {
    let token = super::bearer_token(headers)?;
    if config.is_admin_token(token) {
        Ok(())
    } else {
        Err(GatewayError::Unauthorized)
    }
}

pub(in crate::server) enum AdminRoute {
    Protection { tenant: String },
    Block { tenant: String, rule: String, key: String },
}

/// `%2B` and the like, for the key segment; None for malformed escapes.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(in crate::server) fn route_of(path: &str) -> Option<AdminRoute> {
    let rest = path.strip_prefix(PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        ["tenants", tenant, "protection"] => Some(AdminRoute::Protection { tenant: tenant.to_owned() }),
        ["tenants", tenant, "protection", rule, key] => Some(AdminRoute::Block {
            tenant: tenant.to_owned(),
            rule: rule.to_owned(),
            key: percent_decode(key).unwrap_or_default(),
        }),
        _ => None,
    }
}

pub(in crate::server) async fn serve<B>(
    gateway: &Gateway,
    route: AdminRoute,
    req: Request<B>,
    id: &str,
) -> Response<Full<Bytes>> {
    let (route_name, result) = match &route {
        AdminRoute::Protection { tenant } => ("admin_protection", protection(gateway, tenant, &req, id).await),
        AdminRoute::Block { tenant, rule, key } => ("admin_lift", lift(gateway, tenant, rule, key, &req, id).await),
    };
    let tenant = match &route {
        AdminRoute::Protection { tenant } | AdminRoute::Block { tenant, .. } => tenant.as_str(),
    };
    let outcome = match &result {
        Ok(response) => response.status().as_u16().to_string(),
        Err(e) => e.code().to_owned(),
    };
    // The tenant segment is caller-chosen text: logged only when it names a configured tenant.
    let tenant = gateway.config().tenant(tenant).map(|t| t.name.clone());
    let response = result.unwrap_or_else(|e| respond::error(&e, id, None));
    let status = response.status().as_u16();
    tracing::info!(request_id = %id, route = route_name, status, tenant = tenant.as_deref(), outcome = %outcome, "admin request");
    response
}

async fn protection<B>(
    gateway: &Gateway,
    tenant: &str,
    req: &Request<B>,
    id: &str,
) -> Result<Response<Full<Bytes>>, GatewayError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let config = gateway.config();
    authorize(&config, req.headers())?;
    let tenant = config.tenant(tenant).ok_or(GatewayError::NotFound)?;
    let services = gateway.services();
    let (blocks, lifted) = services.feedback.blocks(tenant, &services.limiter).await;
    let rules: Vec<_> = tenant
        .protection
        .iter()
        .map(|r| {
            let key = match r.key {
                ProtectionKey::Country => json!("country"),
                ProtectionKey::PhonePrefix(n) => json!({ "phone_prefix": n }),
            };
            json!({"name": r.name, "key": key, "window_seconds": r.window.as_secs(), "min_sends": r.min_sends,
                   "min_conversion": r.min_conversion, "max_excess": r.max_excess, "block_seconds": r.block_for.as_secs(),
                   "max_block_seconds": r.max_block_for.as_secs(), "shadow": r.shadow})
        })
        .collect();
    let body = json!({"tenant": &*tenant.name, "rules": rules, "blocks": blocks, "lifted": lifted});
    Ok(respond::json(StatusCode::OK, id, body.to_string()))
}

async fn lift<B>(
    gateway: &Gateway,
    tenant: &str,
    rule: &str,
    key: &str,
    req: &Request<B>,
    id: &str,
) -> Result<Response<Full<Bytes>>, GatewayError> {
    if req.method() != Method::DELETE {
        return Err(GatewayError::MethodNotAllowed { allow: "DELETE" });
    }
    let config = gateway.config();
    authorize(&config, req.headers())?;
    let tenant = config.tenant(tenant).ok_or(GatewayError::NotFound)?;
    let services = gateway.services();
    if services.feedback.lift(tenant, rule, key, &services.limiter).await? {
        Ok(respond::empty(StatusCode::NO_CONTENT, id))
    } else {
        Err(GatewayError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route_of("/admin/v1/tenants/acme/protection"), Some(AdminRoute::Protection { .. })));
        let Some(AdminRoute::Block { key, rule, .. }) = route_of("/admin/v1/tenants/acme/protection/p6/%2B861380")
        else {
            panic!("a block route")
        };
        assert_eq!((rule.as_str(), key.as_str()), ("p6", "+861380"));
        assert!(route_of("/admin/v1/tenants/acme").is_none());
        assert!(route_of("/admin/v2/tenants/acme/protection").is_none());
        assert_eq!(percent_decode("%zz"), None);
    }
}
