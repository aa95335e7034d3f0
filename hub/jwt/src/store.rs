//! The full resolver's directory (`resolver: { type: full, dir: DIR }`): one file per account,
//! `DIR/<account public key>.jwt` holding the raw JWT, as nats-server 2.9's `DirJWTStore`
//! writes it unsharded. Only std::fs, no async.
//!
//! * [`DirStore::save`] verifies the JWT against the operator, then replaces the stored one
//!   only if the new JWT's `iat` is later; the write is atomic (a temporary file in the
//!   directory, fsync, rename, fsync of the directory), files 0600, the directory 0700.
//! * [`DirStore::load`] reads and re-verifies an account's JWT; [`DirStore::list`] lists
//!   the stored account keys.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nkeys::KeyPairType;

use crate::chain::verify_account;
use crate::claims::{AccountClaims, OperatorClaims};
use crate::error::StoreError;
use crate::token::{is_public_key, printable, MAX_JWT_LEN};

/// The extension of stored JWTs (nats-server's `fileExtension`).
const EXT: &str = ".jwt";

/// What [`DirStore::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// No JWT was stored for the account.
    Created,
    /// An older JWT was replaced.
    Replaced,
}

/// A directory of account JWTs trusted by one operator.
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    operator: OperatorClaims,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl DirStore {
    /// Opens (creating it, mode 0700, if missing) the directory for `operator`'s accounts.
    pub fn open(dir: impl Into<PathBuf>, operator: OperatorClaims) -> Result<DirStore, StoreError> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        Ok(DirStore { dir, operator })
    }

    /// The file of an account (refusing anything that is not an account public key, so no
    /// input names a path).
    pub fn path_of(&self, account: &str) -> Result<PathBuf, StoreError> {
        if !is_public_key(account, KeyPairType::Account) {
            return Err(StoreError::BadKey(printable(account)));
        }
        Ok(self.dir.join(format!("{account}{EXT}")))
    }

    /// Reads an account's stored JWT, verified at `now`; `None` if none is stored.
    pub fn load(&self, account: &str, now: i64) -> Result<Option<AccountClaims>, StoreError> {
        let Some(jwt) = self.read(account)? else {
            return Ok(None);
        };
        let claims = verify_account(&jwt, &self.operator, now)?;
        if claims.sub != account {
            return Err(StoreError::BadKey(printable(&claims.sub)));
        }
        Ok(Some(claims))
    }

    /// The raw stored JWT of an account (unverified; at most [`MAX_JWT_LEN`] bytes).
    pub fn read(&self, account: &str) -> Result<Option<String>, StoreError> {
        let path = self.path_of(account)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut text = String::new();
        file.take(MAX_JWT_LEN as u64 + 1)
            .read_to_string(&mut text)
            .map_err(io_err(&path))?;
        Ok(Some(text.trim().to_string()))
    }

    /// Verifies `jwt` against the operator at `now` and stores it, unless the stored JWT of
    /// the account was issued at the same time or later.
    pub fn save(&self, jwt: &str, now: i64) -> Result<Saved, StoreError> {
        let jwt = jwt.trim();
        let claims = verify_account(jwt, &self.operator, now)?;
        let path = self.path_of(&claims.sub)?;
        let mut saved = Saved::Created;
        if let Some(old) = self.read(&claims.sub)? {
            // A stored JWT that no longer verifies (expired, foreign) is replaced.
            if let Ok(old) = verify_account(&old, &self.operator, now) {
                if old.iat >= claims.iat {
                    return Err(StoreError::NotNewer {
                        account: claims.sub,
                        stored_iat: old.iat,
                        iat: claims.iat,
                    });
                }
            }
            saved = Saved::Replaced;
        }
        self.write_atomic(&path, jwt.as_bytes())?;
        Ok(saved)
    }

    /// The account keys with a stored JWT.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(EXT)) else {
                continue;
            };
            if is_public_key(key, KeyPairType::Account) {
                out.push(key.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = path.with_extension("jwt.tmp");
        // A leftover temporary file could carry other permissions: start afresh.
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, path).map_err(io_err(path))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}
