//! Repositories, as far as `GET`/`POST /user/repos` need them: a row per repository (no git data;
//! `auto_init` only marks the repository non-empty, as Forgejo's initial commit would).

use rusqlite::{params, Row};

use crate::db::{now_unix, Db};
use crate::error::DbError;

/// A repository row.
#[derive(Debug, Clone)]
pub struct RepoRow {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub description: String,
    pub private: bool,
    pub template: bool,
    pub empty: bool,
    pub default_branch: String,
    pub object_format: String,
    pub created_unix: i64,
}

/// What `POST /user/repos` inserts (checked before, see `api::repos`).
#[derive(Debug, Clone)]
pub struct NewRepo {
    pub name: String,
    pub description: String,
    pub private: bool,
    pub template: bool,
    pub auto_init: bool,
    pub default_branch: String,
    pub object_format: String,
}

/// Forgejo's `SearchOrderBy` values accepted by `order_by` on `/user/repos`, as SQL.
pub fn order_sql(order_by: &str) -> Option<&'static str> {
    Some(match order_by {
        // Forgejo's default for this route is alphabetical.
        "" | "name" | "alphabetically" => "lower_name ASC",
        "reversealphabetically" => "lower_name DESC",
        "id" | "oldest" => "created_unix ASC, id ASC",
        "newest" | "recentupdate" => "created_unix DESC, id DESC",
        "leastupdate" => "created_unix ASC, id ASC",
        // No sizes, stars or forks here: every repository ties, so these fall back to id order.
        "size" | "reversesize" | "gitsize" | "reversegitsize" | "lfssize" | "reverselfssize"
        | "moststars" | "feweststars" | "mostforks" | "fewestforks" => "id ASC",
        _ => return None,
    })
}

const REPO_COLS: &str = "id, owner_id, name, description, private, template, is_empty, default_branch, object_format, created_unix";

fn repo_from_row(r: &Row<'_>) -> rusqlite::Result<RepoRow> {
    Ok(RepoRow {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        private: r.get(4)?,
        template: r.get(5)?,
        empty: r.get(6)?,
        default_branch: r.get(7)?,
        object_format: r.get(8)?,
        created_unix: r.get(9)?,
    })
}

impl Db {
    /// Inserts a repository; a name the owner already has (case-insensitive) is `RepoExists`.
    pub fn create_repo(&self, owner_id: i64, r: &NewRepo) -> Result<RepoRow, DbError> {
        let c = self.lock()?;
        let taken: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM repos WHERE owner_id = ?1 AND lower_name = ?2)",
            params![owner_id, r.name.to_lowercase()],
            |row| row.get(0),
        )?;
        if taken {
            return Err(DbError::RepoExists(r.name.clone()));
        }
        c.execute(
            "INSERT INTO repos (owner_id, name, lower_name, description, private, template, is_empty, \
             default_branch, object_format, created_unix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                owner_id,
                r.name,
                r.name.to_lowercase(),
                r.description,
                r.private,
                r.template,
                !r.auto_init,
                r.default_branch,
                r.object_format,
                now_unix()
            ],
        )?;
        let id = c.last_insert_rowid();
        let sql = format!("SELECT {REPO_COLS} FROM repos WHERE id = ?1");
        Ok(c.query_row(&sql, [id], repo_from_row)?)
    }

    /// One page of an owner's repositories in `order` (from [`order_sql`]) and the total count.
    pub fn repos_of(
        &self,
        owner_id: i64,
        order: &'static str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<RepoRow>, i64), DbError> {
        let c = self.lock()?;
        let total: i64 = c.query_row(
            "SELECT COUNT(*) FROM repos WHERE owner_id = ?1",
            [owner_id],
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT {REPO_COLS} FROM repos WHERE owner_id = ?1 ORDER BY {order} LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt
            .query_map(params![owner_id, limit, offset], repo_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }
}
