//! Who is calling, and what they may touch. Tokens are random 256-bit secrets shown
//! once; only their SHA-256 is stored. A cache of hashes keeps the request path off the
//! database; every change to tokens or users rebuilds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use rusqlite::Connection;

use crate::store::access::{self, NamespaceRow, TokenRow, UserRow};
use crate::store::{now_rfc3339, Store, StoreError};

pub const ADMIN_USER: &str = "admin";
pub const TOKEN_PREFIX: &str = "hth_";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken,
    #[error("the token expired at {0}")]
    ExpiredToken(String),
    #[error("namespace {namespace} belongs to another user")]
    ForbiddenNamespace { namespace: String },
    #[error("this needs an admin token")]
    AdminOnly,
    #[error("the {0} user cannot be deleted")]
    CannotDeleteAdmin(&'static str),
    #[error("{field}: {message}")]
    InvalidName { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored time in `crate::store::rfc3339`'s format (expiries stored before it was
/// the only one had nanoseconds and `+00:00`).
fn same_format(stored: String) -> String {
    match DateTime::parse_from_rfc3339(&stored) {
        Ok(at) => crate::store::rfc3339(at.with_timezone(&Utc)),
        Err(_) => stored,
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub admin: bool,
    pub token_name: String,
}

impl Principal {
    pub fn can_access(&self, namespace: &str) -> bool {
        self.admin || self.user == namespace
    }

    #[allow(
        dead_code,
        reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
    )]
    pub fn authorize_namespace(&self, namespace: &str) -> Result<(), AuthError> {
        validate_dns_label("namespace", namespace)?;
        if self.can_access(namespace) {
            Ok(())
        } else {
            Err(AuthError::ForbiddenNamespace {
                namespace: namespace.to_string(),
            })
        }
    }

    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.admin {
            Ok(())
        } else {
            Err(AuthError::AdminOnly)
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    hash: [u8; 32],
    user: String,
    admin: bool,
    token_name: String,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct Auth {
    store: Store,
    cache: Arc<TokenCache>,
}

/// A token as listed: never the secret.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub user: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

pub struct IssuedToken {
    pub info: TokenInfo,
    /// The secret, shown exactly once.
    pub token: String,
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Kubernetes' DNS-1123 label rule, which user, namespace and resource names follow:
/// it also keeps names safe as path components.
pub fn validate_dns_label(field: &'static str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidName {
            field,
            message: format!(
                "{name:?} is not a valid name: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"
            ),
        })
    }
}

impl Auth {
    pub fn new(store: Store) -> Result<Auth, AuthError> {
        let auth = Auth {
            store,
            cache: Arc::new(RwLock::new(HashMap::new())),
        };
        auth.reload_blocking()?;
        Ok(auth)
    }

    fn reload_blocking(&self) -> Result<(), AuthError> {
        let cache = Arc::clone(&self.cache);
        self.store.call_blocking(move |conn| refresh(conn, &cache))?;
        Ok(())
    }

    /// Rebuilds the cache from the store. The read and the install happen in one store
    /// call, under the store's connection lock, so installs happen in the order of the
    /// reads: a reload that read before a revocation can never install after it.
    #[cfg(test)]
    async fn reload(&self) -> Result<(), AuthError> {
        let cache = Arc::clone(&self.cache);
        self.store.call(move |conn| refresh(conn, &cache)).await?;
        Ok(())
    }

    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal, AuthError> {
        let presented = presented.ok_or(AuthError::MissingToken)?;
        self.authenticate_hash(&hash_token(presented))
    }

    /// As [`Auth::authenticate`], from the token's SHA-256 (what a browser session keeps
    /// instead of the token: `crate::http::session`).
    pub fn authenticate_hash(&self, hash: &[u8; 32]) -> Result<Principal, AuthError> {
        let hash = *hash;
        // The map is only ever replaced whole (in `refresh`), so a poisoned lock still
        // guards a complete map: recover it rather than refuse every request.
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(&hash).ok_or(AuthError::InvalidToken)?;
        if !bool::from(entry.hash.ct_eq(&hash)) {
            return Err(AuthError::InvalidToken);
        }
        if let Some(expiry) = entry.expires_at {
            if expiry <= Utc::now() {
                return Err(AuthError::ExpiredToken(expiry.to_rfc3339()));
            }
        }
        Ok(Principal {
            user: entry.user.clone(),
            admin: entry.admin,
            token_name: entry.token_name.clone(),
        })
    }

    /// First start: create the admin user. Whenever `admin.token` is missing or no
    /// longer valid, issue a fresh admin token and write it there (mode 0600).
    pub fn bootstrap(&self, data_dir: &Path) -> Result<PathBuf, AuthError> {
        let path = data_dir.join("admin.token");
        self.store.call_blocking(|conn| {
            if access::get_user(conn, ADMIN_USER)?.is_none() {
                access::create_user(conn, ADMIN_USER, true)?;
            }
            Ok(())
        })?;
        if let Ok(existing) = std::fs::read_to_string(&path) {
            self.reload_blocking()?;
            if self.authenticate(Some(existing.trim())).is_ok() {
                return Ok(path);
            }
        }
        let token = new_secret();
        let row = TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_name: ADMIN_USER.into(),
            name: format!("bootstrap-{}", Utc::now().format("%Y%m%d%H%M%S%3f")),
            hash: hash_token(&token).to_vec(),
            created_at: now_rfc3339(),
            expires_at: None,
        };
        self.store
            .call_blocking(|conn| access::insert_token(conn, &row))?;
        write_private_file(&path, &format!("{token}\n"))
            .map_err(|e| StoreError::Worker(format!("writing {}: {e}", path.display())))?;
        self.reload_blocking()?;
        Ok(path)
    }

    pub async fn create_user(
        &self,
        caller: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(UserRow, IssuedToken), AuthError> {
        caller.require_admin()?;
        validate_dns_label("name", name)?;
        let owned = name.to_string();
        let user = self
            .store
            .call(move |conn| access::create_user(conn, &owned, admin))
            .await?;
        let principal = Principal {
            user: user.name.clone(),
            admin,
            token_name: String::new(),
        };
        let issued = self.issue(&principal, "initial", None).await?;
        Ok((user, issued))
    }

    pub async fn list_users(&self, caller: &Principal) -> Result<Vec<UserRow>, AuthError> {
        caller.require_admin()?;
        Ok(self.store.call(|conn| access::list_users(conn)).await?)
    }

    pub async fn delete_user(&self, caller: &Principal, name: &str) -> Result<(), AuthError> {
        caller.require_admin()?;
        validate_dns_label("name", name)?;
        if name == ADMIN_USER {
            return Err(AuthError::CannotDeleteAdmin(ADMIN_USER));
        }
        let owned = name.to_string();
        let cache = Arc::clone(&self.cache);
        self.store
            .call(move |conn| {
                access::delete_user(conn, &owned)?;
                refresh(conn, &cache)
            })
            .await?;
        Ok(())
    }

    /// Issues a named token for the caller's own user.
    pub async fn issue(
        &self,
        caller: &Principal,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedToken, AuthError> {
        validate_dns_label("name", name)?;
        let token = new_secret();
        let row = TokenRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_name: caller.user.clone(),
            name: name.to_string(),
            hash: hash_token(&token).to_vec(),
            created_at: now_rfc3339(),
            expires_at: expires_at.map(crate::store::rfc3339),
        };
        let info = TokenInfo {
            user: row.user_name.clone(),
            name: row.name.clone(),
            created_at: row.created_at.clone(),
            expires_at: row.expires_at.clone(),
        };
        let cache = Arc::clone(&self.cache);
        self.store
            .call(move |conn| {
                access::insert_token(conn, &row)?;
                refresh(conn, &cache)
            })
            .await?;
        Ok(IssuedToken { info, token })
    }

    /// The caller's tokens, or with `all_users` every user's (admins only).
    pub async fn list_tokens(
        &self,
        caller: &Principal,
        all_users: bool,
    ) -> Result<Vec<TokenInfo>, AuthError> {
        let user = if all_users {
            caller.require_admin()?;
            None
        } else {
            Some(caller.user.clone())
        };
        let rows = self
            .store
            .call(move |conn| access::list_tokens(conn, user.as_deref()))
            .await?;
        Ok(rows
            .into_iter()
            .map(|t| TokenInfo {
                user: t.user_name,
                name: t.name,
                created_at: same_format(t.created_at),
                expires_at: t.expires_at.map(same_format),
            })
            .collect())
    }

    pub async fn revoke(&self, caller: &Principal, name: &str) -> Result<(), AuthError> {
        validate_dns_label("name", name)?;
        let (user, owned) = (caller.user.clone(), name.to_string());
        // Delete and rebuild in one store call: the token stops working before this
        // returns, and no concurrent reload can bring it back (see `reload`).
        let cache = Arc::clone(&self.cache);
        self.store
            .call(move |conn| {
                access::delete_token(conn, &user, &owned)?;
                refresh(conn, &cache)
            })
            .await?;
        Ok(())
    }

    pub async fn namespaces(&self, caller: &Principal) -> Result<Vec<NamespaceRow>, AuthError> {
        let all = self.store.call(|conn| access::list_namespaces(conn)).await?;
        Ok(all.into_iter().filter(|ns| caller.can_access(&ns.name)).collect())
    }
}

type TokenCache = RwLock<HashMap<[u8; 32], CachedToken>>;

/// Reads users and tokens and replaces the cache with them, on the caller's connection.
fn refresh(conn: &mut Connection, cache: &TokenCache) -> Result<(), StoreError> {
    let users = access::list_users(conn)?;
    let tokens = access::list_tokens(conn, None)?;
    install(cache, users, tokens);
    Ok(())
}

fn install(cache: &TokenCache, users: Vec<UserRow>, tokens: Vec<TokenRow>) {
    let admins: HashMap<String, bool> = users.into_iter().map(|u| (u.name, u.admin)).collect();
    let mut map = HashMap::new();
    for t in tokens {
        let Ok(hash) = <[u8; 32]>::try_from(t.hash.as_slice()) else {
            continue;
        };
        let expires_at = t
            .expires_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        map.insert(
            hash,
            CachedToken {
                hash,
                admin: admins.get(&t.user_name).copied().unwrap_or(false),
                user: t.user_name,
                token_name: t.name,
                expires_at,
            },
        );
    }
    // Replacing the whole map is correct whatever a panicking holder left behind; skipping
    // the write on a poisoned lock would keep revoked tokens valid.
    *cache.write().unwrap_or_else(PoisonError::into_inner) = map;
}

/// Writes `text` to `path` at mode 0600, whole or not at all (a temporary file renamed
/// over it): secrets, keys, kubeconfigs.
pub fn write_private_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn bootstrap_writes_a_private_admin_token_once() {
        let (dir, store) = test_store();
        let auth = Auth::new(store).unwrap();
        let path = auth.bootstrap(dir.path()).unwrap();
        let token = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let who = auth.authenticate(Some(token.trim())).unwrap();
        assert!(who.admin);
        auth.bootstrap(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            token,
            "a valid token is kept"
        );
        assert!(matches!(
            auth.authenticate(Some("hth_nope")),
            Err(AuthError::InvalidToken)
        ));
        assert!(matches!(auth.authenticate(None), Err(AuthError::MissingToken)));
    }

    #[tokio::test]
    async fn every_users_tokens_are_for_admins_and_times_have_one_format() {
        let (dir, store) = test_store();
        let auth = Auth::new(store).unwrap();
        auth.bootstrap(dir.path()).unwrap();
        let admin = Principal {
            user: ADMIN_USER.into(),
            admin: true,
            token_name: "t".into(),
        };
        let (_, alice_token) = auth.create_user(&admin, "alice", false).await.unwrap();
        let alice = auth.authenticate(Some(&alice_token.token)).unwrap();
        let soon = Utc::now() + chrono::Duration::hours(1);
        auth.issue(&admin, "ci", Some(soon)).await.unwrap();

        let own = auth.list_tokens(&admin, false).await.unwrap();
        assert!(own.iter().all(|t| t.user == ADMIN_USER));
        let all = auth.list_tokens(&admin, true).await.unwrap();
        assert!(all.iter().any(|t| t.user == "alice") && all.iter().any(|t| t.name == "ci"));
        assert!(matches!(
            auth.list_tokens(&alice, true).await,
            Err(AuthError::AdminOnly)
        ));
        assert!(auth
            .list_tokens(&alice, false)
            .await
            .unwrap()
            .iter()
            .all(|t| t.user == "alice"));

        let ci = own.iter().find(|t| t.name == "ci").unwrap();
        let expires = ci.expires_at.as_deref().unwrap();
        assert_eq!(expires, crate::store::rfc3339(soon));
        assert_eq!(
            expires.len(),
            ci.created_at.len(),
            "{expires} vs {}",
            ci.created_at
        );
        // An expiry stored in the older format (nanoseconds, +00:00) is answered in the one.
        assert_eq!(
            same_format("2026-12-02T13:20:00.123456789+00:00".into()),
            "2026-12-02T13:20:00.123Z"
        );
    }

    #[tokio::test]
    async fn users_see_only_their_namespace_and_tokens_expire() {
        let (dir, store) = test_store();
        let auth = Auth::new(store).unwrap();
        auth.bootstrap(dir.path()).unwrap();
        let admin = Principal {
            user: ADMIN_USER.into(),
            admin: true,
            token_name: "t".into(),
        };
        let (_, alice_token) = auth.create_user(&admin, "alice", false).await.unwrap();
        let alice = auth.authenticate(Some(&alice_token.token)).unwrap();
        assert!(alice.authorize_namespace("alice").is_ok());
        assert!(matches!(
            alice.authorize_namespace("bob"),
            Err(AuthError::ForbiddenNamespace { .. })
        ));
        assert!(matches!(
            auth.create_user(&alice, "eve", false).await,
            Err(AuthError::AdminOnly)
        ));
        let names: Vec<_> = auth
            .namespaces(&alice)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, vec!["alice"]);
        let past = Utc::now() - chrono::Duration::seconds(1);
        let expired = auth.issue(&alice, "old", Some(past)).await.unwrap();
        assert!(matches!(
            auth.authenticate(Some(&expired.token)),
            Err(AuthError::ExpiredToken(_))
        ));
        auth.revoke(&alice, "initial").await.unwrap();
        assert!(auth.authenticate(Some(&alice_token.token)).is_err());
    }

    /// Reloads racing a revocation: the token stops working the moment `revoke`
    /// returns, and no reload that read the old table can install it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_concurrent_reload_never_undoes_a_revocation() {
        let (dir, store) = test_store();
        let auth = Auth::new(store).unwrap();
        auth.bootstrap(dir.path()).unwrap();
        let admin = Principal {
            user: ADMIN_USER.into(),
            admin: true,
            token_name: "t".into(),
        };
        let (_, _) = auth.create_user(&admin, "alice", false).await.unwrap();
        let alice = Principal {
            user: "alice".into(),
            admin: false,
            token_name: "initial".into(),
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reloaders: Vec<_> = (0..8)
            .map(|_| {
                let (auth, stop) = (auth.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        auth.reload().await.unwrap();
                    }
                })
            })
            .collect();
        let mut revoked = Vec::new();
        for i in 0..300 {
            let name = format!("t{i}");
            let issued = auth.issue(&alice, &name, None).await.unwrap();
            assert!(auth.authenticate(Some(&issued.token)).is_ok());
            auth.revoke(&alice, &name).await.unwrap();
            assert!(
                auth.authenticate(Some(&issued.token)).is_err(),
                "token {name} still valid right after revoke"
            );
            revoked.push(issued.token);
            for _ in 0..3 {
                tokio::task::yield_now().await;
                for token in &revoked {
                    assert!(
                        auth.authenticate(Some(token)).is_err(),
                        "a reload brought a revoked token back"
                    );
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in reloaders {
            r.await.unwrap();
        }
        for token in &revoked {
            assert!(auth.authenticate(Some(token)).is_err());
        }
    }
}
