//! Users, roles and the rules of registration and access: values that
//! validate themselves on construction. No I/O here.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use platform::limits::{MAX_EMAIL_CHARS, PASSWORD_CHARS, USERNAME_CHARS};

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub description: String,
}

/// A request that breaks the rules, with every bad field named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.description)).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<FieldError>);

impl Invalid {
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        Invalid(vec![FieldError {
            field: field.into(),
            description: description.into(),
        }])
    }
}

pub use platform::model::{Caller, Role};

/// 3 to 32 of `A-Z a-z 0-9 _ . -`; unique without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, String> {
        let chars = raw.chars().count();
        if !USERNAME_CHARS.contains(&chars) {
            return Err(format!(
                "must be {} to {} characters, got {chars}",
                USERNAME_CHARS.start(),
                USERNAME_CHARS.end()
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(format!(
                "may contain only letters, digits, '_', '.' and '-', not {bad:?}"
            ));
        }
        Ok(Username(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address of a sane shape (`local@domain.tld`), at most 254
/// characters; unique without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, String> {
        let text = raw.trim();
        let invalid = || format!("{text:?} is not an email address such as name@example.com");
        if text.is_empty() {
            return Err("is required".into());
        }
        if text.chars().count() > MAX_EMAIL_CHARS {
            return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
        }
        let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Email(text.to_owned()))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of 8 to 128 characters. Never printed.
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: &str) -> Result<Password, String> {
        let chars = raw.chars().count();
        if !PASSWORD_CHARS.contains(&chars) {
            return Err(format!(
                "must be {} to {} characters, got {chars}",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            ));
        }
        Ok(Password(SecretString::from(raw.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A valid registration. Its role is always customer: registration can
/// never choose one.
#[derive(Debug)]
pub struct Registration {
    pub username: Username,
    pub email: Email,
    pub password: Password,
}

impl Registration {
    pub fn parse(username: &str, email: &str, password: &str) -> Result<Self, Invalid> {
        let mut errors = Vec::new();
        let mut take = |field: &str, result: Result<(), String>| {
            if let Err(description) = result {
                errors.push(FieldError {
                    field: field.to_owned(),
                    description,
                });
            }
        };
        let u = Username::parse(username);
        let e = Email::parse(email);
        let p = Password::parse(password);
        take("username", u.as_ref().map(|_| ()).map_err(Clone::clone));
        take("email", e.as_ref().map(|_| ()).map_err(Clone::clone));
        take("password", p.as_ref().map(|_| ()).map_err(Clone::clone));
        match (u, e, p) {
            (Ok(username), Ok(email), Ok(password)) => Ok(Registration {
                username,
                email,
                password,
            }),
            _ => Err(Invalid(errors)),
        }
    }
}

/// A user as others may see it: no password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user with their password hash, for verification only. The hash is a
/// secret: it never prints and never leaves the service.
pub struct Account {
    pub user: User,
    pub password_hash: SecretString,
}

/// Which unique field a new user collides with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Username,
    Email,
}

impl UniqueField {
    pub fn name(self) -> &'static str {
        match self {
            UniqueField::Username => "username",
            UniqueField::Email => "email",
        }
    }
}

/// A customer sees only their own profile; an admin any.
pub fn may_read(caller: &Caller, user_id: Uuid) -> bool {
    caller.is_or_admin(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["bob", "a.b-c_d", &"x".repeat(32), "Alice99"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", &"x".repeat(33), "bob smith", "bob@x", "bøb", ""] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "first.last+tag@example.com", " x@y.org "] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "a@b",
            "@b.com",
            "a@.com",
            "a@b..com",
            "a b@c.com",
            "a@b.com@c.com",
            ".a@b.com",
            "a@-b.com",
            &long,
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_bounded_and_never_printed() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse(&"p".repeat(129)).is_err());
        let p = Password::parse("correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
        let r = Registration::parse("bob", "bob@example.com", "correct horse").unwrap();
        assert!(!format!("{r:?}").contains("horse"));
    }

    #[test]
    fn registration_names_every_bad_field() {
        let err = Registration::parse("x", "nope", "short").unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["username", "email", "password"]);
    }

    #[test]
    fn access() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let customer = Caller {
            user_id: me,
            role: Role::Customer,
        };
        assert!(may_read(&customer, me));
        assert!(!may_read(&customer, other));
        let admin = Caller {
            user_id: me,
            role: Role::Admin,
        };
        assert!(may_read(&admin, other));
    }
}
