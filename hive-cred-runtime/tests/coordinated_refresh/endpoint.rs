//! The strict OAuth2 token endpoint of the multi-process tests: a thin adapter over the
//! workspace's mock token server (`hive_cred_oauth::testkit::MockTokenServer`), which
//! behaves as providers with RFC 9700 refresh-token rotation and reuse detection do:
//!
//! - every successful refresh rotates the refresh token (the old one becomes "used");
//! - a used refresh token coming back revokes the whole token family: that request and
//!   every later one get `invalid_grant`;
//! - it counts arrivals (requests received) and commits (refreshes granted);
//! - it can delay each request *before* processing it: a client that dies during the
//!   delay closes its connection, hyper drops the handler, and nothing is committed
//!   (the request was never processed, as with a server that had not yet read it).

use std::time::Duration;

use hive_cred_core::ExposeSecret;
use hive_cred_oauth::testkit::{MockConfig, MockTokenServer};

use super::fingerprint;

/// What the endpoint has seen, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Requests received (including ones whose client died during the delay).
    pub arrivals: u64,
    /// Refreshes granted (token requests that rotated the family).
    pub commits: u64,
    /// `invalid_grant` answers.
    pub invalid_grants: u64,
    /// Whether reuse detection revoked the family.
    pub revoked: bool,
}

/// The running endpoint. Dropping it stops the server.
pub struct StrictEndpoint {
    mock: MockTokenServer,
}

impl StrictEndpoint {
    /// Starts on 127.0.0.1:0. Access tokens live `expires_in` seconds.
    pub async fn start(expires_in: u64) -> StrictEndpoint {
        let mock =
            MockTokenServer::start(MockConfig::new().with_expires_in(Some(expires_in))).await;
        StrictEndpoint { mock }
    }

    /// The token URL.
    pub fn token_url(&self) -> String {
        self.mock.token_url()
    }

    /// The refresh token the family currently accepts (to seed the credential with).
    pub fn current_refresh_token(&self) -> String {
        // EXPOSE: the parent seeds the stored credential with it.
        self.mock
            .current_refresh_token()
            .expose_secret()
            .to_string()
    }

    /// Fingerprint of the refresh token the family currently accepts.
    pub fn current_refresh_fingerprint(&self) -> String {
        // EXPOSE: hashed into a fingerprint, never printed.
        fingerprint(self.mock.current_refresh_token().expose_secret())
    }

    /// Fingerprint of the latest access token issued (the only valid one), if any.
    pub fn latest_access_fingerprint(&self) -> Option<String> {
        self.mock
            .latest_access_token()
            // EXPOSE: hashed into a fingerprint, never printed.
            .map(|t| fingerprint(t.expose_secret()))
    }

    /// Delays every later request by `delay` before processing it.
    pub fn set_delay(&self, delay: Duration) {
        self.mock.set_delay(delay);
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for_arrivals(&self, n: u64) {
        self.mock.wait_for_arrivals(n).await;
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let c = self.mock.counts();
        Counts {
            arrivals: c.arrivals,
            commits: c.grants,
            invalid_grants: c.invalid_grants,
            revoked: c.revoked,
        }
    }
}
