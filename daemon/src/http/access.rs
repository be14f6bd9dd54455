//! Users, tokens, namespaces and "who am I".

use actix_web::{delete, get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::body::JsonBody;
use super::errors::ApiError;
use super::AppState;
use crate::auth::{IssuedToken, TokenInfo};
use crate::store::access::{NamespaceRow, UserRow};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// DNS-1123 label; also the name of the user's namespace.
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Serialize, ToSchema)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub namespace: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    /// The user's first token, shown only now.
    pub token: NewToken,
}

/// Must match the `maximum` of `CreateToken::expires_in_seconds`.
const MAX_TOKEN_LIFETIME_SECONDS: u64 = 315_360_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Seconds from now until the token stops working; absent: never.
    #[schema(minimum = 1, maximum = 315_360_000)]
    #[serde(default, deserialize_with = "whole_seconds")]
    pub expires_in_seconds: Option<u64>,
}

/// JSON Schema counts `3600.0` as an integer and clients (JavaScript, Python's json with
/// floats) send it; serde's `u64` would refuse it.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    });
    whole
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number of seconds")))
}

#[derive(Serialize, ToSchema)]
pub struct Token {
    pub name: String,
    pub user: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: Token,
    /// The secret; it cannot be shown again.
    pub token: String,
}

#[derive(Serialize, ToSchema)]
pub struct Namespace {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub admin: bool,
    pub token: String,
    pub namespaces: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<User>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<Token>,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceList {
    pub items: Vec<Namespace>,
}

fn user(row: UserRow) -> User {
    User {
        namespace: row.name.clone(),
        name: row.name,
        admin: row.admin,
        created_at: row.created_at,
    }
}

fn token(info: TokenInfo) -> Token {
    Token {
        name: info.name,
        user: info.user,
        created_at: info.created_at,
        expires_at: info.expires_at,
    }
}

fn new_token(issued: IssuedToken) -> NewToken {
    NewToken {
        info: token(issued.info),
        token: issued.token,
    }
}

/// Create a user, their namespace and a first token (admin only).
#[utoipa::path(tag = "access", request_body = CreateUser, responses((status = 201, body = CreatedUser)), security(("bearer" = [])))]
#[post("/hearth/v1/users")]
async fn create_user(
    caller: Caller,
    state: web::Data<AppState>,
    body: JsonBody<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let (row, issued) = state
        .auth
        .create_user(&caller.0, &body.0.name, body.0.admin)
        .await?;
    Ok(HttpResponse::Created().json(CreatedUser {
        user: user(row),
        token: new_token(issued),
    }))
}

/// List users (admin only).
#[utoipa::path(tag = "access", responses((status = 200, body = UserList)), security(("bearer" = [])))]
#[get("/hearth/v1/users")]
async fn list_users(caller: Caller, state: web::Data<AppState>) -> Result<web::Json<UserList>, ApiError> {
    let rows = state.auth.list_users(&caller.0).await?;
    Ok(web::Json(UserList {
        items: rows.into_iter().map(user).collect(),
    }))
}

/// Delete a user and their tokens (admin only); their namespace's resources stay.
#[utoipa::path(tag = "access", params(("name" = String, Path, pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")), responses((status = 204)), security(("bearer" = [])))]
#[delete("/hearth/v1/users/{name}")]
async fn delete_user(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.auth.delete_user(&caller.0, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller: user, admin or not, the token used and the namespaces visible.
#[utoipa::path(tag = "access", responses((status = 200, body = WhoAmI)), security(("bearer" = [])))]
#[get("/hearth/v1/whoami")]
async fn whoami(caller: Caller, state: web::Data<AppState>) -> Result<web::Json<WhoAmI>, ApiError> {
    let namespaces = state.auth.namespaces(&caller.0).await?;
    Ok(web::Json(WhoAmI {
        user: caller.0.user,
        admin: caller.0.admin,
        token: caller.0.token_name,
        namespaces: namespaces.into_iter().map(|n| n.name).collect(),
    }))
}

/// Issue a named token for the caller, optionally expiring.
#[utoipa::path(tag = "access", request_body = CreateToken, responses((status = 201, body = NewToken)), security(("bearer" = [])))]
#[post("/hearth/v1/tokens")]
async fn create_token(
    caller: Caller,
    state: web::Data<AppState>,
    body: JsonBody<CreateToken>,
) -> Result<HttpResponse, ApiError> {
    let expires_at: Option<DateTime<Utc>> = match body.0.expires_in_seconds {
        None => None,
        Some(0) => return Err(ApiError::invalid("expires_in_seconds", "must be at least 1")),
        // Ten years: the bound the schema publishes, so no schema-valid value overflows.
        Some(secs) if secs > MAX_TOKEN_LIFETIME_SECONDS => {
            return Err(ApiError::invalid(
                "expires_in_seconds",
                format!("must be at most {MAX_TOKEN_LIFETIME_SECONDS}"),
            ))
        }
        Some(secs) => {
            let secs = i64::try_from(secs).ok().and_then(chrono::Duration::try_seconds);
            let expiry = secs.and_then(|d| Utc::now().checked_add_signed(d));
            Some(expiry.ok_or_else(|| ApiError::invalid("expires_in_seconds", "is too large"))?)
        }
    };
    let issued = state.auth.issue(&caller.0, &body.0.name, expires_at).await?;
    Ok(HttpResponse::Created().json(new_token(issued)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TokenListQuery {
    /// Every user's tokens, not only the caller's (admins only: 403 for others).
    #[serde(default)]
    all_users: bool,
}

/// The caller's tokens, or every user's with `all_users=true` (admins only).
///
/// Names, owners and dates; never the secrets.
#[utoipa::path(tag = "access", params(TokenListQuery), responses((status = 200, body = TokenList)), security(("bearer" = [])))]
#[get("/hearth/v1/tokens")]
async fn list_tokens(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<TokenListQuery>,
) -> Result<web::Json<TokenList>, ApiError> {
    let tokens = state.auth.list_tokens(&caller.0, query.all_users).await?;
    Ok(web::Json(TokenList {
        items: tokens.into_iter().map(token).collect(),
    }))
}

/// Revoke one of the caller's tokens.
#[utoipa::path(tag = "access", params(("name" = String, Path, pattern = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")), responses((status = 204)), security(("bearer" = [])))]
#[delete("/hearth/v1/tokens/{name}")]
async fn delete_token(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.auth.revoke(&caller.0, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Namespaces the caller may use: their own, or all for an admin.
#[utoipa::path(tag = "access", responses((status = 200, body = NamespaceList)), security(("bearer" = [])))]
#[get("/hearth/v1/namespaces")]
async fn list_namespaces(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<NamespaceList>, ApiError> {
    let rows: Vec<NamespaceRow> = state.auth.namespaces(&caller.0).await?;
    Ok(web::Json(NamespaceList {
        items: rows
            .into_iter()
            .map(|n| Namespace {
                name: n.name,
                owner: n.owner,
                created_at: n.created_at,
            })
            .collect(),
    }))
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(create_user)
        .service(list_users)
        .service(delete_user)
        .service(whoami)
        .service(create_token)
        .service(list_tokens)
        .service(delete_token)
        .service(list_namespaces);
}
