//! Names of the GitLab request headers read in more than one place (the access log copies
//! them, authentication checks them against the token's claims). Constants, so a lookup does
//! not parse a name string each time.

use actix_web::http::header::HeaderName;

pub const X_GITLAB_REALM: HeaderName = HeaderName::from_static("x-gitlab-realm");
pub const X_GITLAB_INSTANCE_ID: HeaderName = HeaderName::from_static("x-gitlab-instance-id");
pub const X_GITLAB_GLOBAL_USER_ID: HeaderName = HeaderName::from_static("x-gitlab-global-user-id");
pub const X_GITLAB_DUO_SEAT_COUNT: HeaderName = HeaderName::from_static("x-gitlab-duo-seat-count");
