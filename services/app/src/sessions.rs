//! Login state and the shopping cart, kept where `SESSION_STORE` says.
//!
//! This is the lesson "where does a session live?", with three answers:
//!
//! * `memory`: a map inside this process ([`tower_sessions::MemoryStore`]).
//!   Fast and simple, but a user whose next request lands on another server,
//!   or whose server restarts, is logged out. That is why "sticky sessions"
//!   exist, and why they are fragile.
//! * `redis`: the same session id cookie, but the data lives in Redis
//!   ([`tower_sessions_redis_store::RedisStore`]), so every server sees it.
//!   The price: one more network hop per request, and Redis becomes a
//!   dependency whose failure logs everybody out (503).
//! * `jwt`: nothing stored on the server. The whole session (user and cart)
//!   travels in the cookie as a JSON Web Token signed with HS256 and
//!   `SESSION_SECRET`. Any server holding the secret can check it. The price:
//!   a cookie can't be revoked before it expires, and it grows with the cart.
//!
//! In every mode the cookie is called `lab_session`, and is `HttpOnly`
//! (scripts in the page can't read it), `SameSite=Lax` (other sites can't
//! make the browser send it on a cross-site POST) and `Path=/`. The session
//! id cookies of `memory` and `redis` are also signed (HMAC), so a client
//! can't even try ids of its own making. A tampered, forged, expired or
//! unknown cookie simply means "not logged in".
//!
//! Handlers see one interface, [`SessionCtx`], whatever the mode.

use std::{sync::Arc, time::SystemTime};

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderValue},
    response::{IntoResponseParts, ResponseParts},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use tower_sessions::{
    cookie::{time, Cookie, Key, SameSite},
    Expiry, MemoryStore, Session, SessionManagerLayer,
};
use tower_sessions_redis_store::{fred::clients::Client, RedisStore};

use crate::{config::Sessions, error::AppError, AppState};

/// The cookie's name, the same in every mode.
pub const COOKIE_NAME: &str = "lab_session";
/// How long a session lives: since the last change for `memory` and
/// `redis`, since login (or the last cart change) for `jwt`.
pub const SESSION_LIFETIME_SECS: i64 = 24 * 3600;
pub use lab_contract::app::MAX_CART_LINES;
/// At most this many units of one product in a cart.
pub const MAX_LINE_QUANTITY: i64 = 1_000;

/// The key under which `memory` and `redis` sessions keep their data.
const DATA_KEY: &str = "data";

/// One line of the cart (product 1..=1000, quantity 1..=[`MAX_LINE_QUANTITY`]),
/// as `GET /me` shows it.
pub use lab_contract::app::CartLine;

/// What a session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// Who logged in.
    pub user: String,
    /// Their cart.
    pub cart: Vec<CartLine>,
}

/// The claims inside a `jwt` session cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user.
    sub: String,
    /// The cart: in `jwt` mode the cookie *is* the session store.
    cart: Vec<CartLine>,
    /// Issued at (seconds since the epoch).
    iat: u64,
    /// Expiry (seconds since the epoch), required and checked.
    exp: u64,
}

/// The keys of `jwt` mode.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    fn new(secret: &[u8]) -> Self {
        // One pinned algorithm: the token's own header never chooses how it
        // is checked, so `alg: none` or an RS256/HS256 confusion can't work.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        // A little slack for clocks that differ between servers, no more.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    fn issue(&self, data: &SessionData) -> Result<String, AppError> {
        let now = unix_now();
        let claims = Claims {
            sub: data.user.clone(),
            cart: data.cart.clone(),
            iat: now,
            exp: now + SESSION_LIFETIME_SECS as u64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("signing a JWT: {e}")))
    }

    fn verify(&self, token: &str) -> Option<SessionData> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Some(SessionData {
                user: data.claims.sub,
                cart: data.claims.cart,
            }),
            Err(err) => {
                // Expired, forged, `alg: none`, garbage: all "not logged in".
                tracing::debug!(%err, "rejected a session token");
                None
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The configured session store, shared by every request.
#[derive(Debug, Clone)]
pub enum SessionBackend {
    /// `memory`: in this process.
    Memory {
        /// The map of sessions.
        store: MemoryStore,
        /// Signs the session id cookie.
        key: Key,
    },
    /// `redis`: in Redis.
    Redis {
        /// The store, on the shared Redis client.
        store: RedisStore<Client>,
        /// Signs the session id cookie.
        key: Key,
    },
    /// `jwt`: in the cookie.
    Jwt(Arc<JwtKeys>),
}

impl SessionBackend {
    /// Builds the backend for `kind`. `secret` is required for `redis` and
    /// `jwt` (the config checks that); `memory` makes up a key when absent,
    /// since its sessions never leave this process anyway.
    pub fn new(
        kind: Sessions,
        secret: Option<&[u8]>,
        redis: Option<&Client>,
    ) -> Result<Self, AppError> {
        let cookie_key = || match secret {
            // Key wants 64 bytes; derive them so any secret of 32 bytes or
            // more works, and so the cookie key differs from the JWT key.
            Some(secret) => {
                let mut hasher = Sha512::new();
                hasher.update(b"scaling-lab session cookie\0");
                hasher.update(secret);
                Key::from(hasher.finalize().as_slice())
            }
            None => {
                let mut bytes = [0u8; 64];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
                Key::from(&bytes)
            }
        };
        match kind {
            Sessions::Memory => Ok(Self::Memory {
                store: MemoryStore::default(),
                key: cookie_key(),
            }),
            Sessions::Redis => {
                let client = redis.ok_or_else(|| {
                    AppError::Internal("SESSION_STORE=redis without a Redis client".into())
                })?;
                Ok(Self::Redis {
                    store: RedisStore::new(client.clone()),
                    key: cookie_key(),
                })
            }
            Sessions::Jwt => {
                let secret = secret.ok_or_else(|| {
                    AppError::Internal("SESSION_STORE=jwt without SESSION_SECRET".into())
                })?;
                Ok(Self::Jwt(Arc::new(JwtKeys::new(secret))))
            }
        }
    }

    /// Adds the session middleware (memory and redis) to `router`; `jwt`
    /// needs none, it reads and writes its cookie itself.
    pub fn install(&self, router: axum::Router) -> axum::Router {
        fn configure<S: tower_sessions::SessionStore + Clone>(
            store: S,
            key: &Key,
        ) -> SessionManagerLayer<S, tower_sessions::service::SignedCookie> {
            SessionManagerLayer::new(store)
                .with_name(COOKIE_NAME)
                .with_http_only(true)
                .with_same_site(SameSite::Lax)
                .with_path("/")
                // The lab serves plain HTTP on 127.0.0.1; a Secure cookie
                // would never be sent back.
                .with_secure(false)
                .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
                    SESSION_LIFETIME_SECS,
                )))
                .with_signed(key.clone())
        }
        match self {
            Self::Memory { store, key } => router.layer(configure(store.clone(), key)),
            Self::Redis { store, key } => router.layer(configure(store.clone(), key)),
            Self::Jwt(_) => router,
        }
    }
}

/// The session of one request, whatever the store. Extract it in a handler.
pub enum SessionCtx {
    /// `memory` or `redis`, through tower-sessions.
    Stored {
        /// The request's session handle (loads lazily).
        session: Session,
        /// The dependency to name when the store fails.
        dependency: &'static str,
    },
    /// `jwt`: what the cookie said, if it checked out.
    Jwt {
        /// The keys.
        keys: Arc<JwtKeys>,
        /// The verified session, if any.
        current: Option<SessionData>,
    },
}

impl FromRequestParts<AppState> for SessionCtx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match state.sessions() {
            SessionBackend::Memory { .. } | SessionBackend::Redis { .. } => {
                let session = parts.extensions.get::<Session>().cloned().ok_or_else(|| {
                    AppError::Internal("session layer missing on this route".into())
                })?;
                let dependency = match state.sessions() {
                    SessionBackend::Redis { .. } => crate::redis::NAME,
                    _ => "session store",
                };
                Ok(Self::Stored {
                    session,
                    dependency,
                })
            }
            SessionBackend::Jwt(keys) => {
                let current = session_cookie(parts).and_then(|token| keys.verify(&token));
                Ok(Self::Jwt {
                    keys: keys.clone(),
                    current,
                })
            }
        }
    }
}

/// The value of the `lab_session` cookie, from any `Cookie` header.
fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE_NAME)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` a handler must send (only `jwt` needs it: tower-sessions
/// sets its own cookie in the middleware).
#[derive(Debug, Default)]
pub struct CookieUpdate(Option<HeaderValue>);

impl IntoResponseParts for CookieUpdate {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        if let Some(value) = self.0 {
            res.headers_mut().append(header::SET_COOKIE, value);
        }
        Ok(res)
    }
}

fn jwt_cookie(token: String) -> Result<CookieUpdate, AppError> {
    let cookie = Cookie::build((COOKIE_NAME, token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(time::Duration::seconds(SESSION_LIFETIME_SECS))
        .build();
    let value = HeaderValue::from_str(&cookie.to_string())
        .map_err(|e| AppError::Internal(format!("cookie header: {e}")))?;
    Ok(CookieUpdate(Some(value)))
}

impl SessionCtx {
    fn store_error(dependency: &str, err: tower_sessions::session::Error) -> AppError {
        match err {
            tower_sessions::session::Error::Store(e) => {
                AppError::unavailable(dependency, crate::db::short(&e))
            }
            tower_sessions::session::Error::SerdeJson(e) => {
                AppError::Internal(format!("session data: {e}"))
            }
        }
    }

    /// The logged-in user's session, or `None`.
    pub async fn current(&self) -> Result<Option<SessionData>, AppError> {
        match self {
            Self::Stored {
                session,
                dependency,
            } => match session.get::<SessionData>(DATA_KEY).await {
                Ok(data) => Ok(data),
                // Data we can't decode (an older format, say) is no session.
                Err(tower_sessions::session::Error::SerdeJson(err)) => {
                    tracing::warn!(%err, "undecodable session data; treating as logged out");
                    Ok(None)
                }
                Err(err) => Err(Self::store_error(dependency, err)),
            },
            Self::Jwt { current, .. } => Ok(current.clone()),
        }
    }

    /// Starts a new session for `user` with an empty cart.
    pub async fn login(&self, user: String) -> Result<CookieUpdate, AppError> {
        let data = SessionData { user, cart: vec![] };
        match self {
            Self::Stored {
                session,
                dependency,
            } => {
                // A new id at login, so an id planted in the browser before
                // login ("session fixation") never becomes a logged-in one.
                if session.id().is_some() {
                    session
                        .cycle_id()
                        .await
                        .map_err(|e| Self::store_error(dependency, e))?;
                }
                self.store(data).await
            }
            Self::Jwt { .. } => self.store(data).await,
        }
    }

    /// Saves `data` as the session's new content.
    pub async fn store(&self, data: SessionData) -> Result<CookieUpdate, AppError> {
        match self {
            Self::Stored {
                session,
                dependency,
            } => {
                session
                    .insert(DATA_KEY, &data)
                    .await
                    .map_err(|e| Self::store_error(dependency, e))?;
                // Saved here, not only by the middleware after the handler:
                // if the store is down the middleware could only answer a
                // bare 500, while here we can answer 503 naming Redis. (The
                // middleware then saves once more; that is the cost.)
                session
                    .save()
                    .await
                    .map_err(|e| Self::store_error(dependency, e))?;
                Ok(CookieUpdate::default())
            }
            Self::Jwt { keys, .. } => jwt_cookie(keys.issue(&data)?),
        }
    }

    /// Ends the session (idempotent: logging out twice is fine).
    pub async fn logout(&self) -> Result<CookieUpdate, AppError> {
        match self {
            Self::Stored {
                session,
                dependency,
            } => {
                if session.id().is_some() {
                    session
                        .flush()
                        .await
                        .map_err(|e| Self::store_error(dependency, e))?;
                }
                Ok(CookieUpdate::default())
            }
            Self::Jwt { .. } => {
                // A JWT can't be revoked: we can only ask the browser to
                // forget it. A copy kept elsewhere stays valid until `exp`.
                let mut cookie = Cookie::build((COOKIE_NAME, ""))
                    .http_only(true)
                    .same_site(SameSite::Lax)
                    .path("/")
                    .build();
                cookie.make_removal();
                let value = HeaderValue::from_str(&cookie.to_string())
                    .map_err(|e| AppError::Internal(format!("cookie header: {e}")))?;
                Ok(CookieUpdate(Some(value)))
            }
        }
    }
}

/// Adds `quantity` of `product_id` to a cart, merging with an existing line.
pub fn add_to_cart(
    cart: &mut Vec<CartLine>,
    product_id: i64,
    quantity: i64,
) -> Result<(), AppError> {
    if let Some(line) = cart.iter_mut().find(|l| l.product_id == product_id) {
        let total = line.quantity + quantity;
        if total > MAX_LINE_QUANTITY {
            return Err(AppError::Conflict(format!(
                "a cart holds at most {MAX_LINE_QUANTITY} of one product (would be {total})"
            )));
        }
        line.quantity = total;
    } else {
        if cart.len() >= MAX_CART_LINES {
            return Err(AppError::Conflict(format!(
                "the cart is full ({MAX_CART_LINES} different products at most)"
            )));
        }
        cart.push(CartLine {
            product_id,
            quantity,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cart_lines_merge_and_are_bounded() {
        let mut cart = vec![];
        add_to_cart(&mut cart, 3, 1).unwrap();
        add_to_cart(&mut cart, 3, 2).unwrap();
        add_to_cart(&mut cart, 4, 1).unwrap();
        assert_eq!(
            cart,
            [
                CartLine {
                    product_id: 3,
                    quantity: 3
                },
                CartLine {
                    product_id: 4,
                    quantity: 1
                }
            ]
        );
        assert!(add_to_cart(&mut cart, 3, MAX_LINE_QUANTITY).is_err());
        for id in 5..(5 + MAX_CART_LINES as i64 - 2) {
            add_to_cart(&mut cart, id, 1).unwrap();
        }
        assert_eq!(cart.len(), MAX_CART_LINES);
        assert!(add_to_cart(&mut cart, 999, 1).is_err());
    }

    #[test]
    fn jwt_round_trip_and_refusals() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let data = SessionData {
            user: "alice".into(),
            cart: vec![CartLine {
                product_id: 1,
                quantity: 2,
            }],
        };
        let token = keys.issue(&data).unwrap();
        assert_eq!(keys.verify(&token), Some(data));

        // Signed with another secret.
        let other = JwtKeys::new(b"another secret that is long enough!!");
        let forged = other
            .issue(&SessionData {
                user: "mallory".into(),
                cart: vec![],
            })
            .unwrap();
        assert_eq!(keys.verify(&forged), None);

        // A flipped byte in the signature.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.verify(&String::from_utf8(tampered).unwrap()), None);
        assert_eq!(keys.verify("not a token"), None);
    }
}
