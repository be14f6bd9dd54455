//! Users, their namespaces and their API tokens (stored as SHA-256 hashes only).

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_rfc3339, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub name: String,
    pub admin: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub id: String,
    pub user_name: String,
    pub name: String,
    pub hash: Vec<u8>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceRow {
    pub name: String,
    pub owner: Option<String>,
    pub created_at: String,
}

/// Creates a user and the namespace of the same name, in one transaction.
pub fn create_user(conn: &mut Connection, name: &str, admin: bool) -> Result<UserRow, StoreError> {
    let tx = conn.transaction()?;
    let now = now_rfc3339();
    let inserted = tx.execute(
        "INSERT INTO users (name, admin, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        params![name, admin, now],
    )?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "User".into(),
            namespace: String::new(),
            name: name.into(),
        });
    }
    let owner: Option<String> = tx
        .query_row(
            "SELECT owner FROM namespaces WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    if let Some(owner) = owner {
        return Err(StoreError::Conflict(format!(
            "namespace {name} already belongs to user {owner}"
        )));
    }
    tx.execute(
        "INSERT INTO namespaces (name, owner, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner",
        params![name, name, now],
    )?;
    tx.commit()?;
    Ok(UserRow {
        name: name.into(),
        admin,
        created_at: now,
    })
}

pub fn get_user(conn: &Connection, name: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT name, admin, created_at FROM users WHERE name = ?1",
            params![name],
            |r| {
                Ok(UserRow {
                    name: r.get(0)?,
                    admin: r.get(1)?,
                    created_at: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub fn list_users(conn: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name, admin, created_at FROM users ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(UserRow {
            name: r.get(0)?,
            admin: r.get(1)?,
            created_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes a user and their tokens; the namespace and its resources stay, unowned,
/// for an admin to inspect.
pub fn delete_user(conn: &Connection, name: &str) -> Result<(), StoreError> {
    let deleted = conn.execute("DELETE FROM users WHERE name = ?1", params![name])?;
    if deleted == 0 {
        return Err(StoreError::NotFound {
            kind: "User".into(),
            namespace: String::new(),
            name: name.into(),
        });
    }
    Ok(())
}

/// Registers a namespace that an admin used without a user owning it.
#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
pub fn ensure_namespace(conn: &Connection, name: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO namespaces (name, owner, created_at) VALUES (?1, NULL, ?2) ON CONFLICT (name) DO NOTHING",
        params![name, now_rfc3339()],
    )?;
    Ok(())
}

pub fn list_namespaces(conn: &Connection) -> Result<Vec<NamespaceRow>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name, owner, created_at FROM namespaces ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(NamespaceRow {
            name: r.get(0)?,
            owner: r.get(1)?,
            created_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn insert_token(conn: &Connection, row: &TokenRow) -> Result<(), StoreError> {
    let inserted = conn.execute(
        "INSERT INTO tokens (id, user_name, name, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (user_name, name) DO NOTHING",
        params![row.id, row.user_name, row.name, row.hash, row.created_at, row.expires_at],
    )?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "Token".into(),
            namespace: row.user_name.clone(),
            name: row.name.clone(),
        });
    }
    Ok(())
}

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        user_name: r.get(1)?,
        name: r.get(2)?,
        hash: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

pub fn list_tokens(conn: &Connection, user: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, user_name, name, hash, created_at, expires_at FROM tokens
         WHERE (?1 IS NULL OR user_name = ?1) ORDER BY user_name, created_at, name",
    )?;
    let rows = stmt.query_map(params![user], token_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete_token(conn: &Connection, user: &str, name: &str) -> Result<TokenRow, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, user_name, name, hash, created_at, expires_at FROM tokens WHERE user_name = ?1 AND name = ?2",
            params![user, name],
            token_from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound { kind: "Token".into(), namespace: user.into(), name: name.into() })?;
    conn.execute("DELETE FROM tokens WHERE id = ?1", params![row.id])?;
    Ok(row)
}
