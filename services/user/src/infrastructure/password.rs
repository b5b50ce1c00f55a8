//! Password hashing with bcrypt, off the async threads.
//!
//! bcrypt reads at most 72 bytes; a password may have 128 characters (up to
//! 512 bytes). So the hashed secret is the hex SHA-256 of the password (64
//! ASCII bytes): every character counts, and no NUL byte reaches bcrypt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::application::{HashError, PasswordHashing};

#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// Verified against when the user does not exist, so that an unknown
    /// user costs as much time as a wrong password.
    dummy_hash: Arc<String>,
    /// bcrypt verifications run, known user or not (tests prove with it that
    /// an unknown user costs a verification too).
    verifications: Arc<AtomicU64>,
    /// bcrypt hashes made so far (tests prove with it that a taken name costs
    /// a hash too).
    hashes: Arc<AtomicU64>,
    /// Registrations hashing at once: a flood of them is refused at once
    /// (RESOURCE_EXHAUSTED) instead of queueing CPU work until every call,
    /// logins included, times out.
    registrations: Arc<Semaphore>,
    /// Logins verifying at once; they wait their turn, apart from the
    /// registrations, so a registration flood never starves a login.
    logins: Arc<Semaphore>,
}

/// The default bound of concurrent hashes of each kind: one per core, at
/// least two.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

fn prehash(password: &str) -> String {
    let digest = Sha256::digest(password.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
) -> Result<T, HashError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HashError(e.to_string()))?
        .map_err(|e| HashError(e.to_string()))
}

impl PasswordHasher {
    /// `cost` is bcrypt's work factor (the caller enforces the minimum);
    /// at most `concurrency` registrations and as many logins hash at once.
    pub async fn new(cost: u32, concurrency: usize) -> Result<Self, HashError> {
        let dummy =
            blocking(move || bcrypt::hash(prehash("no such user, no such password"), cost)).await?;
        Ok(PasswordHasher {
            cost,
            dummy_hash: Arc::new(dummy),
            verifications: Arc::new(AtomicU64::new(0)),
            hashes: Arc::new(AtomicU64::new(0)),
            registrations: Arc::new(Semaphore::new(concurrency.max(1))),
            logins: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// How many verifications ran so far.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// How many hashes were made so far.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }
}

impl PasswordHashing for PasswordHasher {
    /// A registration's turn to hash, if one is free right now.
    fn registration_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.registrations.clone().try_acquire_owned().ok()
    }

    async fn hash(&self, password: &str) -> Result<SecretString, HashError> {
        self.hashes.fetch_add(1, Ordering::Relaxed);
        let secret = prehash(password);
        let cost = self.cost;
        let hash = blocking(move || bcrypt::hash(secret, cost)).await?;
        Ok(SecretString::from(hash))
    }

    /// Whether `password` matches `hash`; with no hash (no such user) it
    /// verifies against the dummy hash all the same and answers false.
    async fn verify(&self, password: &str, hash: Option<&SecretString>) -> bool {
        let _turn = self.logins.acquire().await;
        let secret = prehash(password);
        let (target, known) = match hash {
            Some(h) => (h.expose_secret().to_owned(), true),
            None => (self.dummy_hash.as_str().to_owned(), false),
        };
        let outcome = blocking(move || bcrypt::verify(secret, &target)).await;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(matches) => known && matches,
            Err(e) => {
                tracing::error!(error = %e, "password verification failed");
                false
            }
        }
    }
}
