//! JWT issuing and verification (HS256), and the extractor that turns a
//! verified bearer token into the caller every Order and User call carries.

use std::fmt;
use std::future::{Ready, ready};
use std::time::Duration;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use platform::ConfigError;
use platform::config::AppEnv;
use platform::model;
use platform::settings::Env;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::Problem;

/// Shortest secret accepted: HS256 wants at least its 256 bits.
const MIN_SECRET_BYTES: usize = 32;

/// [`crate::config::JWT_SECRET`], [`crate::config::JWT_ISSUER`] and
/// [`crate::config::JWT_TTL_SECONDS`].
#[derive(Clone)]
pub struct JwtSettings {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub ttl: Duration,
}

impl fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl JwtSettings {
    /// `JWT_SECRET` is required outside development; in development an unset
    /// secret becomes a random one for this process (tokens die with it).
    pub fn from_env(env: &Env, app_env: AppEnv) -> Result<Self, ConfigError> {
        use crate::config::{JWT_ISSUER, JWT_SECRET, JWT_TTL_SECONDS};
        let secret = match env.get(&JWT_SECRET) {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError::invalid(
                    "JWT_SECRET",
                    "[redacted]",
                    format!("must be at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
            Some(secret) => secret.into_bytes(),
            None if app_env.is_development() => {
                tracing::warn!(
                    "JWT_SECRET is not set: using a random secret for this process (APP_ENV=development)"
                );
                random_secret()
            }
            None => {
                return Err(ConfigError::Missing {
                    name: "JWT_SECRET".into(),
                    hint: format!(
                        " (at least {MIN_SECRET_BYTES} random bytes; required unless APP_ENV=development)"
                    ),
                });
            }
        };
        let ttl_seconds: u64 = env.at_least(&JWT_TTL_SECONDS, 1)?;
        Ok(JwtSettings {
            secret,
            issuer: env.string(&JWT_ISSUER),
            ttl: Duration::from_secs(ttl_seconds),
        })
    }
}

fn random_secret() -> Vec<u8> {
    let mut secret = Vec::with_capacity(32);
    secret.extend_from_slice(Uuid::new_v4().as_bytes());
    secret.extend_from_slice(Uuid::new_v4().as_bytes());
    secret
}

/// The role a token grants, as written in its `role` claim.
pub use platform::model::Role;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(settings: &JwtSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Clocks of one gateway fleet agree closely; a long leeway would keep
        // expired tokens alive.
        validation.leeway = 5;
        JwtKeys {
            encoding: EncodingKey::from_secret(&settings.secret),
            decoding: DecodingKey::from_secret(&settings.secret),
            validation,
            issuer: settings.issuer.clone(),
            ttl: settings.ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user_id` with `role`, valid for the configured TTL.
    pub fn issue(&self, user_id: Uuid, role: Role) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iss: self.issuer.clone(),
            iat: now,
            exp: now.saturating_add(self.ttl.as_secs()),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The caller a token names, if it is genuine, current and ours.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::Invalid)?;
        Ok(Caller(model::Caller {
            user_id,
            role: data.claims.role,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token is not valid")]
    Invalid,
}

/// The verified caller of a request (an extractor: `Authorization: Bearer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub model::Caller);

impl std::ops::Deref for Caller {
    type Target = model::Caller;

    fn deref(&self) -> &model::Caller {
        &self.0
    }
}

impl Caller {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden("this operation needs the admin role"))
        }
    }
}

/// Reads `Authorization: Bearer <token>`; 401 when absent or not valid.
impl FromRequest for Caller {
    type Error = Problem;
    type Future = Ready<Result<Caller, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller_of(req))
    }
}

fn caller_of(req: &HttpRequest) -> Result<Caller, Problem> {
    let keys = req
        .app_data::<web::Data<JwtKeys>>()
        .expect("JwtKeys registered as app data");
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthorized("this operation needs a bearer token", None))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            Problem::unauthorized(
                "the Authorization header must be `Bearer <token>`",
                Some("invalid_request"),
            )
        })?;
    keys.verify(token)
        .map_err(|e| Problem::unauthorized(e.to_string(), Some("invalid_token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str) -> JwtSettings {
        JwtSettings {
            secret: secret.as_bytes().to_vec(),
            issuer: "test-issuer".into(),
            ttl: Duration::from_secs(600),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_token_verifies_to_the_same_caller() {
        let keys = JwtKeys::new(&settings(SECRET));
        let id = Uuid::new_v4();
        let token = keys.issue(id, Role::Admin).unwrap();
        assert_eq!(
            keys.verify(&token).unwrap(),
            Caller(model::Caller {
                user_id: id,
                role: Role::Admin
            })
        );
    }

    #[test]
    fn a_huge_ttl_does_not_overflow_the_expiry() {
        // JWT_TTL_SECONDS takes any u64: `now + ttl` must not overflow (a
        // panic in debug builds, an expiry in the past in release ones).
        let mut huge = settings(SECRET);
        huge.ttl = Duration::from_secs(u64::MAX);
        let keys = JwtKeys::new(&huge);
        let token = keys.issue(Uuid::new_v4(), Role::Customer).unwrap();
        assert!(keys.verify(&token).is_ok());
    }

    #[test]
    fn token_from_another_secret_is_invalid() {
        let ours = JwtKeys::new(&settings(SECRET));
        let theirs = JwtKeys::new(&settings("another-secret-another-secret-xx"));
        let token = theirs.issue(Uuid::new_v4(), Role::Admin).unwrap();
        assert_eq!(ours.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_token_is_rejected_as_expired() {
        let keys = JwtKeys::new(&settings(SECRET));
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: Uuid::new_v4().to_string(),
            role: Role::Customer,
            iss: "test-issuer".into(),
            iat: now - 3600,
            exp: now - 60,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn wrong_issuer_tampered_or_garbage_tokens_are_invalid() {
        let keys = JwtKeys::new(&settings(SECRET));
        let mut other = settings(SECRET);
        other.issuer = "someone-else".into();
        let foreign = JwtKeys::new(&other)
            .issue(Uuid::new_v4(), Role::Customer)
            .unwrap();
        assert_eq!(keys.verify(&foreign), Err(TokenError::Invalid));

        let token = keys.issue(Uuid::new_v4(), Role::Customer).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Claims re-encoded with role admin, signature kept: must not verify.
        let forged_claims = r#"{"sub":"00000000-0000-0000-0000-000000000001","role":"admin","iss":"test-issuer","iat":1,"exp":99999999999}"#;
        parts[1] = base64_url(forged_claims.as_bytes());
        assert_eq!(keys.verify(&parts.join(".")), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not-a-jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = JwtKeys::new(&settings(SECRET));
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = base64_url(
            br#"{"sub":"00000000-0000-0000-0000-000000000001","role":"admin","iss":"test-issuer","iat":1,"exp":99999999999}"#,
        );
        assert_eq!(
            keys.verify(&format!("{header}.{claims}.")),
            Err(TokenError::Invalid)
        );
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..(chunk.len() + 1) {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
