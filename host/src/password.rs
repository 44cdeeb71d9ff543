//! Password hashes of the form `auth/flat_file` checks (Argon2id, PHC string).

use anyhow::{Result, anyhow};
use password_hash::{PasswordHasher, SaltString, rand_core::OsRng};

/// An Argon2id hash of `password` with a fresh salt, as a PHC string
/// (`$argon2id$v=19$...`).
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow!("hashing failed: {e}"))
}
