//! Identity providers: how a person proves who they are. Each turns a successful login into
//! an [`Identity`](crate::identity::Identity).

pub mod local;
pub mod oidc;
pub mod saml;
