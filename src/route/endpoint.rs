//! Portcullis's own endpoints under the reserved prefix (`/.portcullis/` by default), parsed
//! once per request into a closed set: the dispatch is one `match`, and the few facts the
//! pipeline needs about an endpoint (is it rate-limited before sign-in, may it be reached
//! from outside an app's allowlist) are written here, next to the names.

/// One of Portcullis's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `login`: the sign-in page (GET) and the local sign-in form (POST).
    Login,
    /// `logout`: the sign-out page (GET) and sign-out (POST).
    Logout,
    /// `signed-out`: the page after sign-out.
    SignedOut,
    /// `whoami`: the session as JSON.
    Whoami,
    /// `jwks.json`: the assertion's public keys, for backends.
    Jwks,
    /// `oidc/callback`: the OIDC redirect URI.
    OidcCallback,
    /// `oidc/backchannel-logout`: the OP's logout tokens.
    OidcBackchannelLogout,
    /// `saml/acs`: the SAML assertion consumer service.
    SamlAcs,
    /// `saml/metadata`: the SP metadata.
    SamlMetadata,
    /// `saml/slo`: SAML single logout (both bindings).
    SamlSlo,
    /// `admin/…`: the security console (`admin.console`); its pages are below it.
    Console,
    /// Anything else under the prefix (404).
    Unknown,
}

impl Endpoint {
    const ALL: [Endpoint; 10] = [
        Endpoint::Login,
        Endpoint::Logout,
        Endpoint::SignedOut,
        Endpoint::Whoami,
        Endpoint::Jwks,
        Endpoint::OidcCallback,
        Endpoint::OidcBackchannelLogout,
        Endpoint::SamlAcs,
        Endpoint::SamlMetadata,
        Endpoint::SamlSlo,
    ];

    /// The endpoint for the path below the reserved prefix.
    pub fn parse(name: &str) -> Endpoint {
        if name == "admin" || name.starts_with("admin/") {
            return Endpoint::Console;
        }
        Endpoint::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .unwrap_or(Endpoint::Unknown)
    }

    /// The path below the reserved prefix.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Login => "login",
            Endpoint::Logout => "logout",
            Endpoint::SignedOut => "signed-out",
            Endpoint::Whoami => "whoami",
            Endpoint::Jwks => "jwks.json",
            Endpoint::OidcCallback => "oidc/callback",
            Endpoint::OidcBackchannelLogout => "oidc/backchannel-logout",
            Endpoint::SamlAcs => "saml/acs",
            Endpoint::SamlMetadata => "saml/metadata",
            Endpoint::SamlSlo => "saml/slo",
            Endpoint::Console => "admin/",
            Endpoint::Unknown => "",
        }
    }

    /// Requests without a session to it count against the per-address pre-authentication
    /// limit (a flood of callbacks cannot exhaust the CPU); the JWKS is public and cheap.
    pub fn limited_before_sign_in(self) -> bool {
        self != Endpoint::Jwks
    }

    /// Reachable from outside an app's enforced allowlist: the JWKS (public keys for
    /// backends), the OP's back-channel logout (authenticated by its signature, sent from
    /// the OP's own addresses) and the SAML SP metadata (read by the IdP).
    pub fn open_to_outsiders(self) -> bool {
        matches!(
            self,
            Endpoint::Jwks | Endpoint::OidcBackchannelLogout | Endpoint::SamlMetadata
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn names_parse_back_to_their_endpoint() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::parse(endpoint.name()), endpoint);
        }
        assert_eq!(Endpoint::parse(""), Endpoint::Unknown);
        assert_eq!(Endpoint::parse("login/"), Endpoint::Unknown);
        assert_eq!(Endpoint::parse("LOGIN"), Endpoint::Unknown);
        for console in ["admin", "admin/", "admin/sessions", "admin/user"] {
            assert_eq!(Endpoint::parse(console), Endpoint::Console);
        }
        assert_eq!(Endpoint::parse("administrator"), Endpoint::Unknown);
        assert!(Endpoint::Console.limited_before_sign_in());
        assert!(!Endpoint::Console.open_to_outsiders());
    }

    #[test]
    fn only_public_endpoints_are_open_or_unlimited() {
        let open: Vec<_> = Endpoint::ALL
            .into_iter()
            .filter(|e| e.open_to_outsiders())
            .collect();
        assert_eq!(
            open,
            [
                Endpoint::Jwks,
                Endpoint::OidcBackchannelLogout,
                Endpoint::SamlMetadata
            ]
        );
        assert!(!Endpoint::Jwks.limited_before_sign_in());
        assert!(Endpoint::Login.limited_before_sign_in());
        assert!(Endpoint::Unknown.limited_before_sign_in());
    }
}
