//! Users in PostgreSQL.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter, Set, SqlErr, Statement,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::entities::user;
use super::migration::{EMAIL_INDEX, USERNAME_INDEX};
use crate::application::{InsertError, NewUser, UserRepository};
use crate::domain::{Account, Email, Role, UniqueField, User, Username};

fn to_user(model: &user::Model) -> Result<User, DbErr> {
    let role = Role::parse(&model.role)
        .ok_or_else(|| DbErr::Type(format!("users.role of {} is {:?}", model.id, model.role)))?;
    Ok(User {
        id: model.id,
        username: model.username.clone(),
        email: model.email.clone(),
        role,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn to_account(model: user::Model) -> Result<Account, DbErr> {
    let user = to_user(&model)?;
    Ok(Account {
        user,
        password_hash: SecretString::from(model.password_hash),
    })
}

/// Which unique index a violation hit, from the constraint name PostgreSQL
/// reports.
fn duplicate_field(err: &DbErr) -> Option<UniqueField> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            let text = err.to_string();
            if text.contains(USERNAME_INDEX) {
                Some(UniqueField::Username)
            } else if text.contains(EMAIL_INDEX) {
                Some(UniqueField::Email)
            } else {
                None
            }
        }
        _ => None,
    }
}

fn lower_eq(column: user::Column, value: &str) -> sea_orm::sea_query::SimpleExpr {
    Expr::expr(Func::lower(Expr::col(column))).eq(Func::lower(Expr::val(value)))
}

#[derive(Clone)]
pub struct UserStore {
    db: DatabaseConnection,
}

impl UserStore {
    pub fn new(db: DatabaseConnection) -> Self {
        UserStore { db }
    }
}

impl UserRepository for UserStore {
    /// Inserts a user; a collision with an existing username or email (also
    /// one that committed a moment ago) is `Duplicate`, named by the index.
    async fn insert(&self, new: NewUser<'_>) -> Result<User, InsertError> {
        let now = Utc::now();
        let model = user::ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set(new.username.as_str().to_owned()),
            email: Set(new.email.as_str().to_owned()),
            password_hash: Set(new.password_hash.expose_secret().to_owned()),
            role: Set(new.role.as_str().to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        match model.insert(&self.db).await {
            Ok(model) => Ok(to_user(&model)?),
            Err(e) => match duplicate_field(&e) {
                Some(field) => Err(InsertError::Duplicate(field)),
                None => Err(InsertError::Database(e)),
            },
        }
    }

    /// Inserts unless any unique field is taken; whether it inserted.
    async fn insert_if_absent(&self, new: NewUser<'_>) -> Result<bool, DbErr> {
        let result = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO users (id, username, email, password_hash, role) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [
                    Uuid::now_v7().into(),
                    new.username.as_str().into(),
                    new.email.as_str().into(),
                    new.password_hash.expose_secret().into(),
                    new.role.as_str().into(),
                ],
            ))
            .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The fields of `username` / `email` that some user already has.
    async fn taken_fields(
        &self,
        username: &Username,
        email: &Email,
    ) -> Result<Vec<UniqueField>, DbErr> {
        let mut taken = Vec::new();
        if self.find_by_username(username.as_str()).await?.is_some() {
            taken.push(UniqueField::Username);
        }
        let by_email = user::Entity::find()
            .filter(lower_eq(user::Column::Email, email.as_str()))
            .one(&self.db)
            .await?;
        if by_email.is_some() {
            taken.push(UniqueField::Email);
        }
        Ok(taken)
    }

    async fn find_by_username(&self, username: &str) -> Result<Option<User>, DbErr> {
        user::Entity::find()
            .filter(lower_eq(user::Column::Username, username))
            .one(&self.db)
            .await?
            .map(|m| to_user(&m))
            .transpose()
    }

    /// The account whose username or email is `login`, case-insensitively.
    /// Usernames cannot contain '@', so the two never clash.
    async fn find_account(&self, login: &str) -> Result<Option<Account>, DbErr> {
        let column = if login.contains('@') {
            user::Column::Email
        } else {
            user::Column::Username
        };
        user::Entity::find()
            .filter(lower_eq(column, login))
            .one(&self.db)
            .await?
            .map(to_account)
            .transpose()
    }

    async fn find_by_id(&self, id: Uuid) -> Result<Option<User>, DbErr> {
        user::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(|m| to_user(&m))
            .transpose()
    }
}
