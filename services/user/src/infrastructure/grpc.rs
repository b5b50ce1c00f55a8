//! The gRPC face of the User service: wire types in, users out (never a
//! password hash), and the one mapping of errors to statuses.

use tonic::{Code, Request, Response, Status};

use platform::grpc::{invalid_argument, status_with_detail, timestamp, violation};
use proto::common::v1::Role as PbRole;
use proto::user::v1 as pb;
use proto::user::v1::user_service_server::UserService;

use crate::application::{INVALID_CREDENTIALS, PasswordHashing, UserError, UserRepository, Users};
use crate::domain::{Caller, Role, User};

pub struct UserGrpc<S, H> {
    users: Users<S, H>,
}

impl<S: UserRepository, H: PasswordHashing> UserGrpc<S, H> {
    pub fn new(users: Users<S, H>) -> Self {
        UserGrpc { users }
    }
}

/// Maps an error to its status: bad input INVALID_ARGUMENT, a taken username
/// or email ALREADY_EXISTS naming the field, a failed login UNAUTHENTICATED
/// (one message for every cause), a database outage UNAVAILABLE.
pub fn to_status(error: UserError) -> Status {
    match error {
        UserError::Invalid(invalid) => invalid_argument(
            invalid
                .0
                .into_iter()
                .map(|e| violation(e.field, e.description))
                .collect(),
        ),
        UserError::AlreadyExists(ref fields) => status_with_detail(
            Code::AlreadyExists,
            error.to_string(),
            "ALREADY_EXISTS",
            fields
                .iter()
                .map(|f| violation(f.name(), "is already taken"))
                .collect(),
        ),
        UserError::InvalidCredentials => Status::unauthenticated(INVALID_CREDENTIALS),
        UserError::NotFound(id) => status_with_detail(
            Code::NotFound,
            format!("user {id} not found"),
            "USER_NOT_FOUND",
            vec![],
        ),
        UserError::Hashing(e) => {
            tracing::error!(error = %e, "password hashing failed");
            Status::internal("internal error")
        }
        UserError::Busy => Status::resource_exhausted("too many registrations at once, try again"),
        UserError::Database(e) => platform::db::status_from_db(&e),
    }
}

fn role_to_proto(role: Role) -> PbRole {
    match role {
        Role::Customer => PbRole::Customer,
        Role::Admin => PbRole::Admin,
    }
}

pub fn to_proto(user: User) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        username: user.username,
        email: user.email,
        role: role_to_proto(user.role) as i32,
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
    }
}

/// The caller the gateway vouched for. Any role but admin counts as a
/// customer: the least privilege.
fn caller_from_proto(caller: Option<proto::common::v1::Caller>) -> Result<Caller, Status> {
    let caller =
        caller.ok_or_else(|| invalid_argument(vec![violation("caller", "is required")]))?;
    let user_id = platform::grpc::parse_uuid("caller.user_id", &caller.user_id)?;
    let role = if caller.role == PbRole::Admin as i32 {
        Role::Admin
    } else {
        Role::Customer
    };
    Ok(Caller { user_id, role })
}

#[tonic::async_trait]
impl<S: UserRepository, H: PasswordHashing> UserService for UserGrpc<S, H> {
    #[tracing::instrument(skip_all)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        let user = self
            .users
            .register(&r.username, &r.email, &r.password)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(to_proto(user)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = request.into_inner();
        let user = self
            .users
            .authenticate(&r.username, &r.password)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::AuthenticateResponse {
            user: Some(to_proto(user)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let r = request.into_inner();
        let caller = caller_from_proto(r.caller)?;
        let user_id = platform::grpc::parse_uuid("user_id", &r.user_id)?;
        let user = self
            .users
            .get_user(caller, user_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(to_proto(user)),
        }))
    }
}
