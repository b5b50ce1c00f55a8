//! Generated code for the platform's contracts, one module per package.

pub mod common {
    pub mod v1 {
        tonic::include_proto!("ecommerce.common.v1");
    }
}
pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("ecommerce.inventory.v1");
    }
}
pub mod order {
    pub mod v1 {
        tonic::include_proto!("ecommerce.order.v1");
    }
}
pub mod user {
    pub mod v1 {
        tonic::include_proto!("ecommerce.user.v1");
    }
}
pub mod producer {
    pub mod v1 {
        tonic::include_proto!("ecommerce.producer.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("ecommerce.events.v1");
    }
}

pub use prost;
pub use prost_types;
